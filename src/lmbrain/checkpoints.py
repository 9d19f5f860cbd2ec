"""Model checkpoints: safetensors weights + JSON config and vocabulary (never pickle).

A word-level model's folder holds ``model.safetensors``, ``vocab.json`` and ``config.json``
(``{"format": "lmbrain-word-model", "type": ..., "config": <the model's spec>, ...}``); a
HuggingFace model's folder holds only a ``config.json`` pointer
(``{"format": "lmbrain-huggingface", "config": <spec with a local path>}``,
:func:`lmbrain.huggingface.huggingface_pointer`). :func:`load_model` reads either.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .io import atomic_path, write_text
from .modelspec import ModelError
from .models import LanguageModel, WordLanguageModel
from .networks import MODEL_CLASSES, WordModel
from .vocab import Vocabulary


def save_model(model: WordModel, vocab: Vocabulary, folder: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``model.safetensors``, ``vocab.json`` and, last, ``config.json`` (each atomically) into ``folder``.

    ``config.json`` holds the format, the type, the vocabulary size, the model's spec (under
    ``"config"``) and ``extra``; it is written last, so a folder with a ``config.json`` is complete.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    write_text(folder / "vocab.json", json.dumps(vocab.words, ensure_ascii=False))
    meta = {"format": "lmbrain-word-model", "version": 1, "type": model.kind, "vocab_size": len(vocab),
            "config": model.spec, **(extra or {})}
    write_text(folder / "config.json", json.dumps(meta, indent=2, sort_keys=True))
    return folder


def _read_json(path: Path, what: str):
    if not path.exists():
        raise ModelError(f"{path}: {what} is missing (train the model first: snakemake results/models/<model>/...)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None


def load_model(folder: str | os.PathLike, device="cpu", name: str | None = None) -> LanguageModel:
    """Load what :func:`save_model` (or the ``train_model`` rule) wrote; HuggingFace pointers load the LM."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = _read_json(folder / "config.json", "the model's config.json")
    name = name or folder.name
    if meta.get("format") == "lmbrain-huggingface":
        from .huggingface import load_huggingface

        return load_huggingface(meta["config"], name=name, device=device)
    if meta.get("format") != "lmbrain-word-model":
        raise ModelError(f"{folder / 'config.json'}: not an lmbrain model config")
    vocab = Vocabulary(_read_json(folder / "vocab.json", "the vocabulary"))
    spec = dict(meta["config"])
    if meta["type"] == "mtlstm" and "layout" not in spec:
        # saved before the layout was recorded: every layer but the last had the short timescales
        spec["layout"] = ["short"] * (int(spec["n_layers"]) - 1) + ["invgamma"]
    if meta["type"] not in MODEL_CLASSES:
        raise ModelError(f"{folder / 'config.json'}: unknown model type {meta['type']!r}")
    model = MODEL_CLASSES[meta["type"]](spec, len(vocab))
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise ModelError(f"{weights}: model weights are missing")
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"{weights}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.after_step()
    return WordLanguageModel(model, vocab, name=name, device=device)
