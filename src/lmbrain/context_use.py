"""How much context a language model's features use: the context-use curve and the model's ceiling.

A context sweep can only reveal windows that the features themselves resolve: if a model's features
at context 8 equal those at context 256, no voxel can show a window longer than 8 words through
that model. For features ``F_k`` (words x units) of the same words at context lengths ``k``:

- :func:`context_use_curve`: ``u(k) = mean over units of (1 - corr_words(F_k[:, j], F_K[:, j]))``
  with ``K`` the longest context: how far the features at ``k`` are from those at the longest
  context (0 = identical up to scale). Units constant at either k are left out.
- :func:`context_ceiling`: the longest context the model resolves, the smallest ``k`` from which on
  every longer context's features stay within ``tolerance`` of the longest context's
  (``u(k') <= tolerance`` for every ``k' >= k``). A voxel whose window estimate reaches the ceiling
  has a window of *at least* that many words as far as this model can tell (``at_ceiling``), not a
  window of that many words.

The tolerance is a statement about the features, never about any voxel: ``1 - r <= 0.01`` means the
context beyond ``k`` changes each unit by at most about 2% of its variance (``1 - r^2``), less than a
linear read-out of noisy responses can use. It is fixed before looking at any data (no ground truth).
"""

from __future__ import annotations

import numpy as np

from . import LmbrainError

DEFAULT_TOLERANCE = 0.01


class ContextUseError(LmbrainError, ValueError):
    pass


def unit_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - corr`` over rows (words) of every column (unit) of ``a`` and ``b`` (n, d); NaN for a column
    constant in either."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ContextUseError(f"features must be two (words, units) arrays of one shape, got {a.shape} and {b.shape}")
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    den = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    scale = np.maximum(np.abs(a).max(axis=0), np.abs(b).max(axis=0))
    ok = den > (1e-12 * scale) ** 2 * a.shape[0]
    r = np.divide((a * b).sum(axis=0), den, out=np.full(a.shape[1], np.nan), where=ok)
    return 1.0 - np.clip(r, -1.0, 1.0)


def context_use_curve(features: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(ks, u)``: the mean over units of ``1 - corr`` between the features at each k and at the longest k.

    ``features``: ``{k: (n_words, n_units)}`` of the same words (e.g. one or more stories stacked).
    Units that are constant at some k are left out of every k (so all points average the same units).
    """
    if len(features) < 2:
        raise ContextUseError("a context-use curve needs features at two or more context lengths")
    ks = np.array(sorted(int(k) for k in features))
    longest = np.asarray(features[int(ks[-1])])
    d = np.stack([unit_distance(features[int(k)], longest) for k in ks])  # (n_k, units)
    keep = np.all(np.isfinite(d), axis=0)
    if not keep.any():
        raise ContextUseError("every unit is constant at some context length")
    return ks, d[:, keep].mean(axis=1)


def context_ceiling(ks, u, tolerance: float = DEFAULT_TOLERANCE) -> int:
    """The smallest k with ``u(k') <= tolerance`` for every ``k' >= k`` (module docstring); the longest
    k when only the longest context itself is within tolerance."""
    ks = np.asarray(ks)
    u = np.asarray(u, dtype=np.float64)
    if ks.shape != u.shape or ks.ndim != 1 or ks.size < 1:
        raise ContextUseError(f"ks and u must be 1-D arrays of one length, got {ks.shape} and {u.shape}")
    if not tolerance >= 0:
        raise ContextUseError(f"tolerance must be >= 0, got {tolerance}")
    within = np.nan_to_num(u, nan=np.inf) <= tolerance
    # suffix of consecutive k's within tolerance (the longest k is within by definition: u = 0)
    i = ks.size - 1
    while i > 0 and within[i - 1]:
        i -= 1
    return int(ks[i])


def feature_context_use(files_by_story: dict, kind: str = "hidden", layers=None,
                        tolerance: float = DEFAULT_TOLERANCE):
    """Context-use curves of a model's stored features, one per layer: a table with ``layer``, ``k``,
    ``distance`` (:func:`context_use_curve` over the given stories' words stacked) and ``ceiling``
    (:func:`context_ceiling`, repeated on the layer's rows).

    ``files_by_story``: ``{story: {k: feature file (k<k>.h5)}}``; ``kind``: a feature kind of
    :func:`lmbrain.features.read_features` (``hidden``, ``pooled``, ``heads``, ...); ``layers``: the
    layers to measure (None = every layer the files hold for that kind).
    """
    import pandas as pd

    from .featurefile import feature_info, read_features

    stories = list(files_by_story)
    if not stories:
        raise ContextUseError("no feature files to measure context use on")
    first = files_by_story[stories[0]]
    ks = sorted(int(k) for k in first)
    if layers is None:
        attrs = feature_info(first[ks[0]])["attrs"]
        layers = list(attrs.get("layers" if kind in ("hidden", "pooled") else "attention_layers", []))
    rows = []
    for layer in layers:
        feats = {}
        for k in ks:
            parts = [read_features(files_by_story[s][k], layer=int(layer), kind=kind) for s in stories]
            feats[k] = np.concatenate([p.reshape(p.shape[0], -1) for p in parts])
        try:
            kk, u = context_use_curve(feats)
        except ContextUseError:  # every unit constant (e.g. a degenerate layer): nothing to measure
            continue
        ceiling = context_ceiling(kk, u, tolerance)
        rows += [{"layer": int(layer), "k": int(k), "distance": float(d), "ceiling": ceiling} for k, d in zip(kk, u)]
    return pd.DataFrame(rows, columns=["layer", "k", "distance", "ceiling"])
