"""Encoding models: language-model features -> every voxel, one ridge penalty per voxel.

For one subject, model and feature (a feature type at one layer, e.g. ``hidden-L2``) and each
context length k:

1. word-level features (``results/features/<model>/<story>/k<k>.h5``) are Lanczos-downsampled to the
   story's TR times (a sum over words), z-scored per story and FIR-delayed (default 1-4 TRs)
   (:func:`lmbrain.stimulus.tr_design`);
2. :class:`lmbrain.ridge.RidgeCV` fits the training stories, choosing each voxel's penalty by
   cross-validation over whole stories, never shuffled TRs (leave-one-story-out, or ``encoding.cv_folds``
   contiguous sets of stories);
3. the fitted model predicts the held-out test stories; each voxel gets its test correlation, a
   one-sided p-value from a block permutation of the test time series (blocks of ``block`` TRs keep
   the autocorrelation), Benjamini-Hochberg q-values across voxels, and the correlation normalised by
   the noise ceiling (Schoppe et al. 2016 ``CC_max`` from the repeated presentations of the test story).

With low-level nuisance bands (``encoding.nuisance``: word rate, phoneme rate, silence; each
z-scored per story and FIR-delayed like the feature, :func:`nuisance_design`) the model is banded
(:class:`lmbrain.ridge.BandedRidgeCV`, one penalty per band and voxel, candidates
:func:`banded_candidates`): ``voxels.tsv`` then also holds each band's effective penalty
(``alpha_<band>``) and test split R2 (``r2_<band>``, himalaya's ``r2_score_split``: the bands' shares
of the test R2, summing to it; the language-model band is ``lm``), the weights file holds the
language-model band's coefficients as ``coef`` and the nuisance bands' as ``coef_nuisance``, and
``r2_lm.nii.gz``/``.png`` map the language-model band's share.

Outputs per k (``<out>/k<k>/``): ``voxels.tsv`` (columns ``voxel``, ``alpha``, ``cv_score``,
``test_r``, ``noise_ceiling``, ``test_r_normalised``, ``p``, ``q``, ``significant``), ``weights.h5``
(coefficients ``(n_delays * d, n_voxels)`` in float16 by default, alphas, delays), ``predictions.h5``
(test-set predictions, float16, with the story of each block of TRs), ``test_r.nii.gz``
in the subject's space, and ``test_r.png``/``.pdf`` (a flatmap on the subject's pycortex surface when
the dataset names one, else orthogonal slices).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import LmbrainError

log = logging.getLogger(__name__)

FEATURE_KINDS = ("hidden", "pooled", "heads", "entropy", "distance")
#: feature kinds read from every layer (the others are per-head attention features, layers >= 1)
STATE_KINDS = ("hidden", "pooled")
_FEATURE_RE = re.compile(r"^(hidden|pooled|heads|entropy|distance)-(L\d+|last)$")


class EncodingError(LmbrainError, ValueError):
    """Inputs of the encoding stage that cannot be used."""


def parse_feature(name: str) -> tuple[str, int | None]:
    """``"hidden-L2"`` -> ``("hidden", 2)``; ``"heads-last"`` -> ``("heads", None)`` (the highest saved layer)."""
    m = _FEATURE_RE.match(name)
    if not m:
        raise EncodingError(f"feature {name!r}: expected <kind>-L<layer> or <kind>-last with kind in "
                            f"{', '.join(FEATURE_KINDS)}")
    return m.group(1), (None if m.group(2) == "last" else int(m.group(2)[1:]))


def encoding_features(model_type: str, layers, kinds=("hidden",), mode: str = "last",
                      attention_features: bool = True) -> list[str]:
    """The feature folders fitted for a model: feature ``kinds`` x the model's layers chosen by ``mode``.

    Parameters
    ----------
    model_type : str
        The model's type (attention kinds apply only to types with attention).
    layers : sequence of int or None
        The layers the model saves (resolved, 0 = embeddings); None when unknown before loading
        (a HuggingFace model without explicit ``layers``).
    kinds : sequence of str
        Feature kinds among ``hidden``, ``heads``, ``entropy``, ``distance``.
    mode : {"last", "all"}
        ``last``: the highest saved layer (``<kind>-last`` when unknown); ``all``: every saved layer.
    attention_features : bool
        Whether the model saves attention features.

    Returns
    -------
    list of str
        Names such as ``hidden-L2`` or ``heads-last``; attention kinds never on layer 0.
    """
    from .modelspec import ATTENTION_TYPES

    has_attention = model_type in ATTENTION_TYPES and attention_features
    saved = None if layers is None else sorted(int(x) for x in layers)
    if mode == "last":
        chosen = [max(saved)] if saved else ["last"]
    elif mode == "all":
        if saved is None:
            raise EncodingError("encoding.layers: all needs the HuggingFace model's 'layers' listed in its config")
        chosen = saved
    else:
        raise EncodingError(f"encoding.layers must be 'last' or 'all', not {mode!r}")
    out = []
    for kind in kinds:
        if kind not in FEATURE_KINDS:
            raise EncodingError(f"unknown feature kind {kind!r} (use {', '.join(FEATURE_KINDS)})")
        for layer in chosen:
            if kind not in STATE_KINDS and (not has_attention or layer == 0):
                continue
            out.append(f"{kind}-" + ("last" if layer == "last" else f"L{layer}"))
    return out


# ------------------------------------------------------------------------------------------
def story_tr_features(path: str | os.PathLike, kind: str, layer: int | None, tr_times: np.ndarray) -> np.ndarray:
    """One story's word features of ``kind`` at ``layer`` downsampled to ``tr_times``: ``(n_trs, d)`` float64."""
    from .featurefile import feature_info, read_features
    from .stimulus import downsample

    if layer is None:
        info = feature_info(path)
        layers = list(info["attrs"].get("attention_layers" if kind not in STATE_KINDS else "layers", []))
        if not layers:
            raise EncodingError(f"{path}: no {kind} features saved")
        layer = int(max(layers))
    values = read_features(path, layer=layer, kind=kind)
    values = values.reshape(values.shape[0], -1)
    times = read_features(path, kind="time")
    if not np.all(np.isfinite(values)):
        raise EncodingError(f"{path}: {kind} features of layer {layer} contain NaN or infinite values")
    return downsample(values, times, tr_times)


def design(files: dict, kind: str, layer, tr_times: dict, delays) -> dict[str, np.ndarray]:
    """``{story: (n_trs, d * len(delays)) float32}``: downsampled, z-scored per story, FIR-delayed.

    ``files``: ``{story: feature file (k<k>.h5) of that story}``; ``tr_times``: ``{story: TR times}``.
    """
    from .stimulus import tr_design

    out = {}
    for story, path in files.items():
        path = Path(path)
        if not path.exists():
            raise EncodingError(f"{path}: feature file missing (run extract_features for this model and story)")
        out[story] = tr_design(story_tr_features(path, kind, layer, tr_times[story]), delays=tuple(delays))
    return out


NUISANCE = ("word_rate", "phoneme_rate", "silence")


def nuisance_design(names, words: pd.DataFrame, phones: pd.DataFrame | None, tr_times: np.ndarray,
                    delays) -> list[np.ndarray]:
    """One story's low-level nuisance bands: for each name of ``names`` (:data:`NUISANCE`) an array
    ``(n_trs, len(delays))`` float32: the regressor (:func:`lmbrain.stimulus.word_rate`,
    :func:`~lmbrain.stimulus.phoneme_rate` from ``phones``, :func:`~lmbrain.stimulus.silence`), z-scored
    per story and FIR-delayed exactly as the language-model features are (:func:`lmbrain.stimulus.tr_design`).
    """
    from . import stimulus

    out = []
    for name in names:
        if name == "word_rate":
            x = stimulus.word_rate(words, tr_times)
        elif name == "phoneme_rate":
            if phones is None:
                raise EncodingError("phoneme_rate needs the story's phones (a TextGrid phone tier)")
            x = stimulus.phoneme_rate(phones, tr_times)
        elif name == "silence":
            x = stimulus.silence(words, tr_times)
        else:
            raise EncodingError(f"unknown nuisance regressor {name!r}; known: {', '.join(NUISANCE)}")
        out.append(stimulus.tr_design(x, delays=tuple(delays)))
    return out


def banded_candidates(n_candidates: int, n_bands: int, seed: int) -> np.ndarray:
    """Band-weight candidates ``(max(n_candidates, n_bands + 1), n_bands)``: every band alone (the corners
    of the simplex, so the feature-only model is always a candidate), the centre, then himalaya's
    Dirichlet samples (:func:`lmbrain.ridge.gamma_candidates` from ``seed``) up to ``n_candidates``."""
    from .ridge import gamma_candidates

    fixed = np.vstack([np.eye(n_bands), np.full((1, n_bands), 1.0 / n_bands)])
    extra = int(n_candidates) - len(fixed)
    if extra <= 0:
        return fixed
    samples = gamma_candidates(extra + 1, n_bands, random_state=int(seed))[1:]  # row 0 is the centre again
    return np.vstack([fixed, samples])


def read_voxels(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise EncodingError(f"{path}: not found (run the encoding_model rule)")
    return pd.read_csv(path, sep="\t")
