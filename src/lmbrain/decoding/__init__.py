"""Decoding stimulus text from fMRI (Tang et al. 2023): the science, without settings or files.

- :mod:`~lmbrain.decoding.noise`: :func:`noise_precision` (the decoder's noise model) and
  :func:`gaussian_loglik` (a candidate's log-likelihood).
- :mod:`~lmbrain.decoding.wordrate`: :class:`WordRateModel` (when words occur, from the responses that
  follow), :func:`word_counts` and :func:`word_times`.
- :mod:`~lmbrain.decoding.proposer`: :class:`WordLMProposer` (the language model's proposals and
  features), :class:`RepetitionFilter` (repeated bigrams and content-word stems), :func:`generate_null`
  (the LM-only null), :func:`decoder_layer`.
- :mod:`~lmbrain.decoding.beam`: :class:`LinearEncoder` (predicted responses as a baseline plus one
  term per word) and :func:`beam_decode`.
- :mod:`~lmbrain.decoding.decoder`: :class:`Decoder` (fit, save, load, decode), :func:`ridge_fixed`,
  :func:`word_features`.

The workflow's ``decoder`` and ``decode`` rules are :mod:`lmbrain.stages.decoding`; the scoring lives in
:mod:`lmbrain.evaluation`.
"""

from .beam import LinearEncoder, beam_decode
from .decoder import Decoder, ridge_fixed, word_features
from .errors import DecodingError
from .noise import gaussian_loglik, noise_precision
from .proposer import RepetitionFilter, WordLMProposer, decoder_layer, generate_null
from .wordrate import WordRateModel, word_counts, word_times

__all__ = ["Decoder", "DecodingError", "LinearEncoder", "RepetitionFilter", "WordLMProposer", "WordRateModel",
           "beam_decode", "decoder_layer", "gaussian_loglik", "generate_null", "noise_precision", "ridge_fixed",
           "word_counts", "word_features", "word_times"]
