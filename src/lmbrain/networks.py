"""The word-level networks lmbrain trains (and the demo's planted topic reader).

Every network is a :class:`WordModel` (a ``torch.nn.Module``) built from its model spec, the flat
dict of its type's settings (:mod:`lmbrain.modelspec`; ``ModelSpec.as_dict()`` of a resolved
config), and run by :meth:`WordModel.run` over a batch of token windows ``(B, T)``, returning a
:class:`RunOutput`. Layer numbering follows HuggingFace's ``output_hidden_states``: layer 0 is the
input embedding, layer ``l`` the output of block ``l``.

``attention``
    The one-layer dot-product self-attention next-word model of the CS 461 lecture: word embeddings
    give queries, keys and values; each word attends over the last ``window`` words (itself
    included); the attention output (plus the word's own embedding, a residual) is projected to
    next-word logits. No position information: the simplest baseline.
``rnn`` / ``lstm``
    Stacked Elman (tanh) or LSTM layers over word embeddings, tied-free linear decoder.
``mtlstm``
    The multi-timescale LSTM of Jain et al. (2020), see :class:`MTLSTMLM`.
``transformer``
    A causal GPT-style transformer: token + learned position embeddings, pre-layer-norm blocks with
    multi-head self-attention and a GELU MLP, final layer norm, decoder tied to the token embedding.
``planted``
    The demo generator's own topic reader (:class:`PlantedLM`): a positive control whose features
    contain exactly what the demo's voxels read, so the TRW pipeline's recovery can be checked.

Nothing here reads a configuration or a file: :func:`build_model` takes the spec dict, checkpoints
are :mod:`lmbrain.checkpoints`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .modelspec import TRAINED_TYPES, ModelError


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

    def __init__(self, spec: dict, vocab_size: int):
        super().__init__()
        self.spec = dict(spec)
        self.vocab_size = int(vocab_size)

    @property
    def n_layers(self) -> int:
        return int(self.spec.get("n_layers", 1))

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

    def __init__(self, spec, vocab_size):
        super().__init__(spec, vocab_size)
        d = spec["embedding_dim"]
        self.window = int(spec["window"])
        self.embed = nn.Embedding(vocab_size, d)
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.out = nn.Linear(d, vocab_size)
        self.drop = nn.Dropout(spec["dropout"])

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

    def __init__(self, spec, vocab_size):
        super().__init__(spec, vocab_size)
        d, h, n = spec["embedding_dim"], spec["hidden_dim"], spec["n_layers"]
        self.embed = nn.Embedding(vocab_size, d)
        cell = nn.RNN if self.kind == "rnn" else nn.LSTM
        self.rnns = nn.ModuleList(
            [cell(d if i == 0 else h, h, batch_first=True) for i in range(n)]
        )
        self.drop = nn.Dropout(spec["dropout"])
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


def mtlstm_layout(n_layers: int) -> list[str]:
    """The role of each layer of a multi-timescale LSTM: ``short``, ``invgamma`` or ``free``.

    One layer: ``[invgamma]``; two: ``[short, invgamma]``; three or more: ``short`` on all but the
    last two, then ``invgamma``, then ``free`` -- the layout of Jain et al. (2020), whose three-layer
    model has T = 3/4 on layer 1, inverse-gamma timescales on layer 2 and an unconstrained layer 3.
    """
    n_layers = int(n_layers)
    if n_layers < 1:
        raise ModelError(f"a multi-timescale LSTM needs at least one layer, not {n_layers}")
    if n_layers <= 2:
        return ["short"] * (n_layers - 1) + ["invgamma"]
    return ["short"] * (n_layers - 2) + ["invgamma", "free"]


def mtlstm_timescales(n_units: int, inverse_gamma: bool, a: float = 0.56, scale: float = 1.0,
                      short=(3.0, 4.0)) -> np.ndarray:
    """Unit timescales (words) of one constrained multi-timescale LSTM layer, as in Jain et al. (2020).

    ``inverse_gamma``: ``T = invgamma.isf(linspace(0, 1, n_units + 1), a, scale)[1:]`` (decreasing;
    the last unit's T is 0, a unit that forgets every word). Otherwise the units are split evenly
    over the ``short`` timescales in order (``(3, 4)``: the first ``n_units // 2`` units T = 3, the
    rest T = 4).
    """
    if inverse_gamma:
        from scipy.stats import invgamma

        return invgamma.isf(np.linspace(0, 1, n_units + 1), a=a, scale=scale)[1:].astype(np.float64)
    short = [float(t) for t in short]
    if not short:
        raise ModelError("short_timescales must list at least one timescale")
    edges = [(i * n_units) // len(short) for i in range(len(short) + 1)]
    return np.concatenate([np.full(hi - lo, t) for t, lo, hi in zip(short, edges[:-1], edges[1:])])


class MTLSTMLM(RecurrentLM):
    """The multi-timescale LSTM of Jain et al. (2020): stacked LSTM layers with frozen unit timescales.

    A unit with timescale ``T`` (words) gets its forget-gate bias fixed at ``b = -ln(e^(1/T) - 1)``
    (forget gate ``e^(-1/T)``) and its input-gate bias at ``-b``; these biases never train (their
    gradients are zeroed and :meth:`after_step` re-fixes them after every optimiser step). The layers
    (:func:`mtlstm_layout`):

    - 1 layer: inverse-gamma timescales (``invgamma_a``, ``invgamma_scale``);
    - 2 layers: layer 1 split over ``short_timescales`` (half T = 3, half T = 4), layer 2 inverse-gamma;
    - 3 or more layers (the reference layout of Jain et al. 2020): ``short_timescales`` on layers
      ``1..n-2``, inverse-gamma on layer ``n-1``, and the last layer **unconstrained** (an ordinary
      LSTM layer whose gate biases train, between the timescale layers and the decoder).

    The layout is stored in the model's spec (``spec["layout"]``, so in its checkpoint); a spec that
    already has one (a checkpoint) keeps it. The unit timescales of each layer are saved with the features (``timescales/layer_<l>``, NaN for
    the unconstrained layer, whose units have no fixed timescale). With three or more layers, the
    voxel-timescale analysis belongs on the inverse-gamma layer ``n-1`` (Jain et al. encode layer 2 of
    3): list it in the model's ``layers`` (e.g. ``layers: [2]``) so it is the layer encoded.
    """

    kind = "mtlstm"

    def __init__(self, spec, vocab_size):
        super().__init__(spec, vocab_size)
        h = spec["hidden_dim"]
        self.layout = list(spec.get("layout") or mtlstm_layout(spec["n_layers"]))
        if len(self.layout) != len(self.rnns) or not set(self.layout) <= {"short", "invgamma", "free"}:
            raise ModelError(f"mtlstm layout {self.layout} does not give one of short, invgamma, free to each of "
                             f"its {len(self.rnns)} layers")
        self.spec["layout"] = list(self.layout)  # saved with the checkpoint (config.json)
        self.timescales: list[np.ndarray | None] = []  # per layer; None for an unconstrained layer
        for i, (role, rnn) in enumerate(zip(self.layout, self.rnns)):
            if role == "free":
                self.timescales.append(None)
                continue
            t = mtlstm_timescales(h, role == "invgamma", spec["invgamma_a"], spec["invgamma_scale"],
                                  tuple(spec["short_timescales"]))
            self.timescales.append(t)
            b = -torch.log(torch.expm1(1.0 / torch.as_tensor(t, dtype=torch.float64)))  # sigmoid(b) = exp(-1/T)
            self.register_buffer(f"forget_bias_{i}", b.float(), persistent=False)
            for p in (rnn.bias_ih_l0, rnn.bias_hh_l0):
                p.register_hook(self._zero_gate_grad)
        self.after_step()

    def _zero_gate_grad(self, grad):
        h = self.spec["hidden_dim"]
        grad = grad.clone()
        grad[: 2 * h] = 0  # input and forget gates (PyTorch gate order: i, f, g, o)
        return grad

    @torch.no_grad()
    def after_step(self):
        h = self.spec["hidden_dim"]
        for i, rnn in enumerate(self.rnns):
            if self.timescales[i] is None:
                continue
            b = getattr(self, f"forget_bias_{i}")
            rnn.bias_ih_l0[:h] = -b
            rnn.bias_ih_l0[h: 2 * h] = b
            rnn.bias_hh_l0[: 2 * h] = 0

    def extra_arrays(self) -> dict:
        h = self.spec["hidden_dim"]
        return {f"timescales/layer_{i + 1}": (np.full(h, np.nan) if t is None else np.asarray(t, dtype=np.float64))
                for i, t in enumerate(self.timescales)}


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

    def __init__(self, spec, vocab_size):
        super().__init__(spec, vocab_size)
        d = spec["embedding_dim"]
        self.max_positions = int(spec["max_positions"])
        self.embed = nn.Embedding(vocab_size, d)
        self.pos = nn.Embedding(self.max_positions, d)
        self.blocks = nn.ModuleList(
            [Block(d, spec["n_heads"], spec["mlp_ratio"], spec["dropout"]) for _ in range(spec["n_layers"])]
        )
        self.ln_f = nn.LayerNorm(d)
        self.drop = nn.Dropout(spec["dropout"])
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
    words (no generation, no training): :func:`lmbrain.stages.models.pretrained_model` builds it from
    the demo's topic model (:func:`lmbrain.topics.topic_model`).
    """

    kind = "planted"

    def __init__(self, spec, vocab_size):
        super().__init__(spec, vocab_size)
        self.temperature = float(spec["temperature"])
        self.embed = nn.Embedding(vocab_size, int(spec["n_topics"]))

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


def build_model(spec: dict, vocab_size: int, seed: int = 0) -> WordModel:
    """A freshly initialised word-level model (initialisation is seeded: same seed, same weights)."""
    if spec["type"] not in MODEL_CLASSES:
        raise ModelError(f"cannot build a model of type {spec['type']!r} (trained types: {', '.join(TRAINED_TYPES)})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODEL_CLASSES[spec["type"]](spec, vocab_size)


