"""Model configuration: the keys and defaults of each model type, checked with clear messages.

Kept free of torch so that reading and validating a config stays fast (the workflow does it at
every start). See :mod:`lmbrain.models` for what each type is.
"""

from __future__ import annotations

import os

import numpy as np

from . import LmbrainError

TRAINED_TYPES = ("attention", "rnn", "lstm", "mtlstm", "transformer")
MODEL_TYPES = TRAINED_TYPES + ("huggingface", "planted")
ATTENTION_TYPES = ("attention", "transformer", "huggingface")


class ModelError(LmbrainError, ValueError):
    """A model configuration or checkpoint that cannot be used (the message says what to change)."""


# ------------------------------------------------------------------------------------------
# Configuration: defaults per type, checked with messages that name the model and the key.
_COMMON = {
    "type": None,
    "layers": None,  # layers whose hidden states become features (None = every layer)
    "attention_features": True,  # transformers: per-head outputs and attention statistics
    "context_lengths": None,  # None = features.context_lengths
    # each word's state is read from at most this many words of the window (None = the whole window);
    # pooled features still average the whole window, so long windows cost passes of this length only
    "state_context": None,
    # feature kinds fitted for this model (None = encoding.features), e.g. [hidden] for the planted control
    "encoding_features": None,
}
_TRAIN = {
    "min_count": 2,
    "max_vocab": 20000,
    "embedding_dim": 128,
    "dropout": 0.1,
    "epochs": 4,
    "batch_size": 32,
    "seq_len": 32,  # training sequence length (the BPTT length for recurrent models)
    "lr": 0.003,
    "weight_decay": 0.01,
    "clip": 1.0,
    "max_train_words": None,  # cap on corpus words per epoch (None = all)
}
DEFAULTS = {
    "attention": {**_COMMON, **_TRAIN, "window": 16, "lr": 0.01},
    "rnn": {**_COMMON, **_TRAIN, "hidden_dim": 256, "n_layers": 2, "lr": 0.005},
    "lstm": {**_COMMON, **_TRAIN, "hidden_dim": 256, "n_layers": 2, "lr": 0.01},
    "mtlstm": {**_COMMON, **_TRAIN, "hidden_dim": 256, "n_layers": 2, "lr": 0.01, "invgamma_a": 0.56, "invgamma_scale": 1.0,
               "short_timescales": [3.0, 4.0]},
    "transformer": {**_COMMON, **_TRAIN, "n_layers": 4, "n_heads": 4, "mlp_ratio": 4, "max_positions": 512},
    # the demo generator's own topic reader (a positive control: features that contain the planted windows)
    "planted": {**_COMMON},
    "huggingface": {**_COMMON, "path": None, "gguf_file": None, "trust_remote_code": False, "dtype": "float32",
                    "prepend_bos": True},
}


def model_spec(name: str, spec: dict) -> dict:
    """A model's config with defaults filled in, checked: unknown type or key, bad values -> ModelError."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ModelError(f"model '{name}': needs a 'type' (one of {', '.join(MODEL_TYPES)})")
    kind = spec["type"]
    if kind not in DEFAULTS:
        raise ModelError(f"model '{name}': unknown type '{kind}' (use one of {', '.join(MODEL_TYPES)})")
    unknown = sorted(set(spec) - set(DEFAULTS[kind]))
    if unknown:
        raise ModelError(
            f"model '{name}' (type {kind}): unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(DEFAULTS[kind]))}"
        )
    out = {**DEFAULTS[kind], **spec}
    sc = out["state_context"]
    if sc is not None and not (isinstance(sc, (int, np.integer)) and not isinstance(sc, bool) and sc >= 1):
        raise ModelError(f"model '{name}': state_context must be a positive number of words or null, not {sc!r}")
    ef = out["encoding_features"]
    if ef is not None and (not isinstance(ef, (list, tuple)) or not ef
                           or not all(k in ("hidden", "pooled", "heads", "entropy", "distance") for k in ef)):
        raise ModelError(f"model '{name}': encoding_features must be a non-empty list of feature kinds (hidden, pooled, "
                         f"heads, entropy, distance) or null, not {ef!r}")
    ks = out["context_lengths"]
    if ks is not None:
        check_context_lengths(ks, f"model '{name}'")
    if kind == "huggingface":
        if not out["path"]:
            raise ModelError(f"model '{name}' (type huggingface): set 'path' to a local model folder or a "
                             "model id already in the HuggingFace cache (lmbrain never downloads)")
        path = str(out["path"])
        if path.startswith(("/", "./", "../", "~")) and not os.path.exists(os.path.expanduser(path)):
            raise ModelError(f"model '{name}' (type huggingface): local path {path} does not exist")
        if out["dtype"] not in ("float32", "float16", "bfloat16"):
            raise ModelError(f"model '{name}': dtype must be float32, float16 or bfloat16, not {out['dtype']!r}")
    elif kind == "planted":
        if out["layers"] is not None:
            resolve_layers(out["layers"], 1, f"model '{name}'")
    else:
        _check_trained(name, kind, out)
    if not isinstance(out["attention_features"], bool):
        raise ModelError(f"model '{name}': attention_features must be true or false, not {out['attention_features']!r}")
    return out


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and np.isfinite(x)


def _check_trained(name: str, kind: str, out: dict) -> None:
    """The hyperparameters of a trained type: each bad value stops with the model and key named."""
    def fail(key, what):
        raise ModelError(f"model '{name}': {key} must be {what}, not {out[key]!r}")

    ints = ["embedding_dim", "epochs", "batch_size", "seq_len", "min_count"]
    ints += [k for k in ("hidden_dim", "n_layers", "n_heads", "window", "max_positions") if k in out]
    for key in ints:
        if not _is_int(out[key]) or out[key] < 1:
            fail(key, "a positive integer")
    if not (_is_num(out["lr"]) and out["lr"] > 0):
        fail("lr", "a positive number (the learning rate, e.g. 0.003)")
    if not (_is_num(out["dropout"]) and 0 <= out["dropout"] < 1):
        fail("dropout", "a number in [0, 1)")
    if not (_is_num(out["weight_decay"]) and out["weight_decay"] >= 0):
        fail("weight_decay", "a number >= 0")
    if out["clip"] is not None and not (_is_num(out["clip"]) and out["clip"] > 0):
        fail("clip", "a positive number (gradient norm) or null")
    if out["max_vocab"] is not None and not (_is_int(out["max_vocab"]) and out["max_vocab"] >= 2):
        fail("max_vocab", "an integer >= 2 (the unknown word plus at least one word) or null")
    if out["max_train_words"] is not None and not (_is_int(out["max_train_words"]) and out["max_train_words"] >= 1):
        fail("max_train_words", "a positive integer or null (all of the corpus)")
    if "mlp_ratio" in out and not (_is_num(out["mlp_ratio"]) and out["mlp_ratio"] > 0):
        fail("mlp_ratio", "a positive number")
    if kind == "mtlstm":
        for key in ("invgamma_a", "invgamma_scale"):
            if not (_is_num(out[key]) and out[key] > 0):
                fail(key, "a positive number")
        short = out["short_timescales"]
        if not isinstance(short, (list, tuple)) or not short or not all(_is_num(t) and t > 0 for t in short):
            fail("short_timescales", "a non-empty list of positive timescales (words)")
    if out["layers"] is not None:
        resolve_layers(out["layers"], n_layers_of(out), f"model '{name}'")
    if kind == "transformer":
        if out["embedding_dim"] % out["n_heads"]:
            raise ModelError(f"model '{name}': embedding_dim {out['embedding_dim']} is not divisible by "
                             f"n_heads {out['n_heads']}")
        ks = out["context_lengths"]
        if ks is not None and max(ks) > out["max_positions"]:
            raise ModelError(f"model '{name}': max_positions {out['max_positions']} is shorter than its longest "
                             f"context length {max(ks)}; raise max_positions")


def n_layers_of(spec: dict) -> int | None:
    """A configured model's number of layers (None for HuggingFace models: known only once loaded)."""
    if spec["type"] == "huggingface":
        return None
    return 1 if spec["type"] in ("attention", "planted") else int(spec["n_layers"])


def check_models(config: dict, active_only: bool = False) -> dict:
    """Every defined model's spec with defaults filled (``{name: spec}``); ModelError names the model.

    ``active_only``: just the models the workflow runs (``use_models``, or all when it is null; the
    demo's ``planted`` control only when the demo is built).
    """
    models = config.get("models") or {}
    out = {name: model_spec(name, spec) for name, spec in models.items()}
    check_context_lengths(config.get("features", {}).get("context_lengths", [1]))
    use = config.get("use_models")
    if use is not None:
        missing = [m for m in use if m not in out]
        if missing:
            raise ModelError(f"use_models names {', '.join(missing)}, not defined under models "
                             f"(defined: {', '.join(out) or 'none'})")
        if active_only:
            out = {m: out[m] for m in use}
    if not (config.get("demo") or {}).get("build", False):
        planted = [m for m, spec in out.items() if spec["type"] == "planted"]
        if planted and use is not None and active_only:
            raise ModelError(f"use_models names {', '.join(planted)} (type planted), which reads the topics "
                             "planted in lmbrain's demo data: it runs only with demo.build: true")
        if active_only:  # the demo's positive control has nothing to read on other data
            out = {m: s for m, s in out.items() if s["type"] != "planted"}
    return out


def check_context_lengths(ks, where: str = "features.context_lengths") -> list[int]:
    if not isinstance(ks, (list, tuple)) or not ks:
        raise ModelError(f"{where}: context_lengths must be a non-empty list of integers")
    for k in ks:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ModelError(f"{where}: context length {k!r} is not an integer >= 1 (a word's context "
                             "includes the word itself, so the shortest is 1)")
    if len(set(ks)) != len(ks):
        raise ModelError(f"{where}: context lengths {list(ks)} repeat a value")
    return sorted(int(k) for k in ks)


def resolve_layers(layers, n_layers: int, name: str = "model") -> list[int]:
    """Configured layers (None = all, negatives count from the end) -> sorted list in 0..n_layers."""
    if layers is None:
        return list(range(n_layers + 1))
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for layer in layers:
        if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool):
            raise ModelError(f"{name}: layer {layer!r} is not an integer")
        li = int(layer) + (n_layers + 1 if layer < 0 else 0)
        if not 0 <= li <= n_layers:
            raise ModelError(f"{name}: layer {layer} is out of range: this model has layers 0..{n_layers} "
                             f"(0 = embeddings, {n_layers} = last block; negatives count from the end)")
        out.append(li)
    return sorted(set(out))
