"""Temporal receptive windows from a context sweep: how much preceding context drives each voxel.

Input: each voxel's encoding performance at context lengths ``ks`` (words): the cross-validated
score curve (used for every choice, so nothing peeks at the test story) and the test correlation
curve. Per voxel:

- ``k_best``: the context length with the highest CV score;
- ``gain``: CV score at ``k_best`` minus CV score at the shortest context (0 when context never helps);
- ``trw_words``: the robust estimate, the smallest k whose CV gain over the shortest context reaches
  ``fraction`` (default 0.9) of the voxel's maximum gain (the shortest k when there is no gain);
- ``com_words``: the log-k centre of mass of the curve's positive increments,
  ``exp(sum_j max(s_j - s_{j-1}, 0) log k_j / sum_j max(s_j - s_{j-1}, 0))`` (the shortest k when
  the curve never rises);
- ``trw_peak``: where the CV curve peaks in log k, between grid points: the vertex of the parabola
  through the best k and its two neighbours in ``log k`` (the best k itself at either end of the
  grid, or when the three points do not make a peak; the shortest k when there is no gain);
- ``trw_centroid``: the centre of mass in ``log k`` of the above-average part of the CV curve
  (:func:`centroid_window`): a whole-curve location that one noisy point moves only a little, the
  primary estimate for language-model features (README, TRW recovery);
- ``test_gain``: the same gain on the test correlation (reported, never used to choose).

:func:`window_seconds` gives the time (s) that windows of k words span in the stories, and
:func:`words_to_seconds` converts a window in words to seconds through it (``trw_seconds``).

:func:`bootstrap_trw` gives an interval for ``trw_words`` computed on the test-correlation curve by
resampling blocks of test TRs (the stored test predictions of every k and the test responses).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import LmbrainError


class TRWError(LmbrainError, ValueError):
    """Curves that cannot give a temporal receptive window."""


def _check(ks, curves, name):
    ks = np.asarray(ks, dtype=np.float64)
    c = np.asarray(curves, dtype=np.float64)
    if ks.ndim != 1 or ks.size < 2 or np.any(np.diff(ks) <= 0) or ks[0] < 1:
        raise TRWError(f"context lengths must be at least two increasing values >= 1, got {ks.tolist()}")
    if c.ndim != 2 or c.shape[0] != ks.size:
        raise TRWError(f"{name} must be (n_context_lengths={ks.size}, n_voxels), got shape {c.shape}")
    return ks, c


def robust_window(ks, curves, fraction: float = 0.9) -> np.ndarray:
    """Smallest k whose gain over the shortest context reaches ``fraction`` of the maximum gain: (V,)."""
    ks, c = _check(ks, curves, "curves")
    if not 0 < fraction <= 1:
        raise TRWError(f"fraction must be in (0, 1], got {fraction}")
    c = np.nan_to_num(c, nan=-np.inf)
    gain = c - c[0]
    best = gain.max(axis=0)
    reached = gain >= fraction * best[None, :] - 1e-12
    first = np.argmax(reached, axis=0)
    return np.where(best > 0, ks[first], ks[0])


def peak_window(ks, curves) -> np.ndarray:
    """Sub-grid peak of each curve in ``log k``: ``(V,)`` in words (module docstring).

    With the best grid point ``i`` (argmax; NaN counts as -inf) strictly inside the grid, the parabola
    through ``(log k_j, s_j)`` for ``j = i-1, i, i+1`` has its vertex at
    ``x* = x_i - 1/2 [(x_i - x_{i-1})^2 (s_i - s_{i+1}) - (x_i - x_{i+1})^2 (s_i - s_{i-1})] /
    [(x_i - x_{i-1}) (s_i - s_{i+1}) - (x_i - x_{i+1}) (s_i - s_{i-1})]``; it lies between the
    neighbours whenever ``s_i`` is at least both of them. Curves whose best point is the shortest k with
    no gain over it give the shortest k, as :func:`robust_window`.
    """
    ks, c = _check(ks, curves, "curves")
    c = np.nan_to_num(c, nan=-np.inf)
    x = np.log(ks)
    i = c.argmax(axis=0)
    v = np.arange(c.shape[1])
    out = x[i].copy()
    inner = (i > 0) & (i < ks.size - 1)
    if inner.any():
        ii, vv = i[inner], v[inner]
        x0, x1, x2 = x[ii - 1], x[ii], x[ii + 1]
        s0, s1, s2 = c[ii - 1, vv], c[ii, vv], c[ii + 1, vv]
        with np.errstate(invalid="ignore", divide="ignore"):
            num = (x1 - x0) ** 2 * (s1 - s2) - (x1 - x2) ** 2 * (s1 - s0)
            den = (x1 - x0) * (s1 - s2) - (x1 - x2) * (s1 - s0)
            vertex = x1 - 0.5 * num / den
        ok = np.isfinite(vertex) & (den != 0)
        out[inner] = np.where(ok, np.clip(vertex, x0, x2), x1)
    return np.exp(out)


def centroid_window(ks, curves) -> np.ndarray:
    """Centre of mass in ``log k`` of the above-average part of each curve: ``(V,)`` in words.

    ``exp(sum_j w_j log k_j / sum_j w_j)`` with ``w_j = max(s_j - mean(s), 0)``: every point above the
    curve's own mean votes for its k with its excess, so the estimate sits where the curve is high as a
    whole, and one noisy point moves it by its share of the excess only (the argmax jumps to it). A
    constant curve gives the shortest k. NaN scores are left out (of the mean and of the votes).
    """
    ks, c = _check(ks, curves, "curves")
    ok = ~np.isnan(c)
    n = ok.sum(axis=0)
    mean = np.where(n > 0, np.where(ok, c, 0.0).sum(axis=0) / np.maximum(n, 1), 0.0)
    w = np.where(ok, np.clip(c - mean[None, :], 0, None), 0.0)
    total = w.sum(axis=0)
    logk = np.log(ks)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        com = np.exp((w * logk).sum(axis=0) / total)
    return np.where(total > 0, com, ks[0])


def window_seconds(stories_words, ks) -> np.ndarray:
    """Median time (s) from the first word's onset to the last word's offset of every full window of k
    words in the stories (``stories_words``: word tables with ``onset`` and ``offset``): ``(n_k,)``.

    A k longer than every story gets the longest story's span (the whole story)."""
    ks = np.asarray(ks, dtype=np.int64)
    spans = []
    for k in ks:
        vals = []
        for w in stories_words:
            on, off = np.asarray(w["onset"], dtype=np.float64), np.asarray(w["offset"], dtype=np.float64)
            if len(on) >= k:
                vals.append(off[k - 1:] - on[: len(on) - k + 1])
        if vals:
            spans.append(float(np.median(np.concatenate(vals))))
        else:
            spans.append(max(float(np.max(w["offset"]) - np.min(w["onset"])) for w in stories_words))
    out = np.asarray(spans)
    if out.size > 1 and np.any(np.diff(out) < 0):  # medians of nested windows rise; keep it monotone
        out = np.maximum.accumulate(out)
    return out


def words_to_seconds(windows, ks, seconds) -> np.ndarray:
    """Windows in words to seconds by linear interpolation of ``log seconds`` against ``log k`` over the
    grid (:func:`window_seconds`); windows outside the grid take the end values."""
    ks = np.asarray(ks, dtype=np.float64)
    sec = np.asarray(seconds, dtype=np.float64)
    if ks.shape != sec.shape or np.any(sec <= 0):
        raise TRWError("seconds must be positive, one per context length")
    w = np.asarray(windows, dtype=np.float64)
    return np.exp(np.interp(np.log(np.clip(w, ks[0], ks[-1])), np.log(ks), np.log(sec)))


def centre_of_mass(ks, curves) -> np.ndarray:
    """Log-k centre of mass of the positive increments of each curve: (V,) in words."""
    ks, c = _check(ks, curves, "curves")
    inc = np.clip(np.diff(np.nan_to_num(c), axis=0), 0, None)  # (K-1, V), increment arriving at ks[1:]
    total = inc.sum(axis=0)
    logk = np.log(ks[1:])[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        com = np.exp((inc * logk).sum(axis=0) / total)
    return np.where(total > 0, com, ks[0])


def context_sweep(ks, cv, test_r, fraction: float = 0.9) -> pd.DataFrame:
    """Per-voxel TRW estimates from CV and test curves ``(n_k, n_voxels)``; see the module docstring."""
    ks, cv = _check(ks, cv, "cv")
    _, test_r = _check(ks, test_r, "test_r")
    if cv.shape != test_r.shape:
        raise TRWError(f"cv {cv.shape} and test_r {test_r.shape} differ in shape")
    safe = np.nan_to_num(cv, nan=-np.inf)
    ib = safe.argmax(axis=0)
    v = np.arange(cv.shape[1])
    return pd.DataFrame({
        "voxel": v,
        "k_best": ks[ib].astype(int),
        "gain": np.clip(cv[ib, v] - cv[0], 0, None),
        "trw_words": robust_window(ks, cv, fraction).astype(int),
        "trw_peak": np.where(cv[ib, v] - cv[0] > 0, peak_window(ks, cv), ks[0]),
        "trw_centroid": centroid_window(ks, cv),
        "com_words": centre_of_mass(ks, cv),
        "cv_best": cv[ib, v],
        "test_r_best": test_r[ib, v],
        "test_gain": test_r[ib, v] - test_r[0],
    })


def bootstrap_trw(ks, predictions, y, n_boot: int = 200, block: int = 10, fraction: float = 0.9,
                  seed: int = 0, interval=(2.5, 97.5)) -> tuple[np.ndarray, np.ndarray]:
    """Interval of the test-curve TRW estimate over block-resampled test TRs.

    predictions: ``(n_k, n_trs, n_voxels)`` test predictions at each k; y: ``(n_trs, n_voxels)``.
    Blocks of ``block`` consecutive TRs are drawn with replacement; each resample recomputes every
    voxel's correlation curve and its :func:`robust_window`. Returns ``(low, high)`` in words.
    """
    ks = np.asarray(ks, dtype=np.float64)
    P = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if P.ndim != 3 or P.shape[0] != ks.size or P.shape[1:] != y.shape:
        raise TRWError(f"predictions must be (n_k={ks.size}, TRs, voxels) matching y {y.shape}, got {P.shape}")
    # A resample is a multiset of blocks, so its sums are count-weighted sums of per-block sums: the
    # correlations of every resample come from five block-sum arrays and one matrix product, never
    # from a copy of the resampled time series. Centring first keeps the moment formulas exact enough.
    n = y.shape[0]
    P = P - P.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=0)
    starts = np.arange(0, n, block)
    lengths = np.diff(np.append(starts, n)).astype(np.float64)
    sums = {"p": np.add.reduceat(P, starts, axis=1), "pp": np.add.reduceat(P * P, starts, axis=1),
            "py": np.add.reduceat(P * y[None], starts, axis=1)}  # (n_k, blocks, voxels)
    sy, syy = np.add.reduceat(y, starts, axis=0), np.add.reduceat(y * y, starts, axis=0)  # (blocks, voxels)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.choice(starts, size=len(starts), replace=True) // block,
                                   minlength=len(starts)) for _ in range(n_boot)]).astype(np.float64)
    est = np.empty((n_boot, y.shape[1]))
    for b0 in range(0, n_boot, 16):
        c = counts[b0: b0 + 16]
        N = (c @ lengths)[:, None, None]
        sp, spp, spy = (np.tensordot(c, sums[k], axes=([1], [1])) for k in ("p", "pp", "py"))  # (boots, n_k, voxels)
        ty, tyy = (c @ sy)[:, None], (c @ syy)[:, None]
        cov = spy - sp * ty / N
        den = np.sqrt(np.clip(spp - sp * sp / N, 0, None) * np.clip(tyy - ty * ty / N, 0, None))
        r = np.divide(cov, den, out=np.zeros_like(den), where=den > 0)
        for i in range(len(c)):
            est[b0 + i] = robust_window(ks, r[i], fraction)
    lo, hi = np.percentile(est, interval, axis=0)
    return lo, hi


def mtlstm_timescales(coef: np.ndarray, timescales: np.ndarray, n_delays: int, n_null: int = 1000,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Voxel timescales from multi-timescale LSTM encoding weights (Jain et al. 2020).

    coef: ``(n_delays * n_units, n_voxels)`` ridge weights (delay blocks stacked); timescales:
    ``(n_units,)`` unit timescales in words. A voxel's timescale is ``exp`` of the mean of ``log T``
    weighted by its absolute weights summed over delays (units with T = 0 or infinite T, the ends of
    the inverse-gamma recipe, are left out). The null shuffles the timescale labels across units; returns ``(timescale_words, p)`` with a two-sided p-value of the log timescale
    against that null.
    """
    coef = np.asarray(coef, dtype=np.float64)
    t = np.asarray(timescales, dtype=np.float64)
    n_units = t.size
    if coef.shape[0] != n_delays * n_units:
        raise TRWError(f"weights have {coef.shape[0]} rows, expected {n_delays} delays x {n_units} units")
    w = np.abs(coef.reshape(n_delays, n_units, -1)).sum(axis=0)  # (units, voxels)
    # the recipe's last quantile, invgamma.isf(1) = 0, is a unit that forgets every word: no log timescale
    ok = np.isfinite(t) & (t > 0)
    w, logt = w[ok], np.log(t[ok])
    total = w.sum(axis=0)
    total = np.where(total > 0, total, 1.0)
    obs = (w * logt[:, None]).sum(axis=0) / total
    rng = np.random.default_rng(seed)
    null = np.stack([(w * rng.permutation(logt)[:, None]).sum(axis=0) / total for _ in range(n_null)])
    centre = null.mean(axis=0)
    extreme = (np.abs(null - centre) >= np.abs(obs - centre)[None] - 1e-12).sum(axis=0)
    return np.exp(obs), (1 + extreme) / (1 + n_null)
