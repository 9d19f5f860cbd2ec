"""Scoring statistics for encoding models: correlation, noise ceiling, block-permutation p-values, FDR.

- :func:`noise_ceiling` follows Schoppe et al. 2016 (Front. Comput. Neurosci. 10:10): from N repeated
  presentations ``r_1..r_N`` of a test story, the signal power is
  ``SP = (Var(sum_n r_n) - sum_n Var(r_n)) / (N (N - 1))``; the largest correlation any model can
  reach with the *mean* response is ``CC_max = sqrt(SP / Var(mean_n r_n))``, and a model's
  ``CC_norm = CC_abs / CC_max``.
- :func:`block_permutation_pvalues` shuffles the test time series in contiguous blocks (default
  10 TRs, which keeps the autocorrelation inside blocks) and compares the observed correlation
  with the null, ``p = (1 + #{null >= observed}) / (1 + n_permutations)``.
- :func:`fdr_bh` is the Benjamini-Hochberg step-up procedure (q-values).
"""

from __future__ import annotations

import numpy as np

from . import LmbrainError


def columnwise_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns of ``a`` and ``b`` (n, v) -> (v,); 0 where either is constant."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise LmbrainError(f"shapes differ: {a.shape} vs {b.shape}")
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    den = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    num = (a * b).sum(axis=0)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def noise_ceiling(repeats: np.ndarray) -> np.ndarray:
    """``CC_max`` per voxel from repeats (n_repeats, n_trs, n_voxels) (Schoppe et al. 2016); NaN where SP <= 0."""
    r = np.asarray(repeats, dtype=np.float64)
    if r.ndim != 3 or r.shape[0] < 2:
        raise LmbrainError(f"repeats must be (n_repeats >= 2, TRs, voxels), got shape {r.shape}")
    n = r.shape[0]
    var_sum = r.sum(axis=0).var(axis=0)
    sum_var = r.var(axis=1).sum(axis=0)
    sp = (var_sum - sum_var) / (n * (n - 1))
    var_mean = r.mean(axis=0).var(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cc_max = np.sqrt(sp / var_mean)
    return np.where((sp > 0) & (var_mean > 0), np.minimum(cc_max, 1.0), np.nan)


def block_permutation_pvalues(pred: np.ndarray, y: np.ndarray, n_permutations: int = 1000, block: int = 10,
                              seed: int = 0, chunk: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """One-sided p-values of the test correlation under a block-permutation null.

    Blocks of ``block`` consecutive TRs of ``y`` are permuted (a shorter last block stays a block).
    Returns ``(observed_r, p)``, each (n_voxels,).
    """
    pred = np.asarray(pred, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[0]
    if pred.shape != y.shape:
        raise LmbrainError(f"predictions {pred.shape} and responses {y.shape} differ in shape")
    if n < 2 * block:
        raise LmbrainError(f"{n} TRs is too short for blocks of {block} TRs")
    obs = columnwise_corr(pred, y)
    pz = pred - pred.mean(axis=0)
    pz /= np.where(pz.std(axis=0) > 0, pz.std(axis=0), 1)
    yz = y - y.mean(axis=0)
    yz /= np.where(yz.std(axis=0) > 0, yz.std(axis=0), 1)
    blocks = [np.arange(s, min(s + block, n)) for s in range(0, n, block)]
    rng = np.random.default_rng(seed)
    exceed = np.zeros(y.shape[1])
    v_chunk = max(1, int(2e7 // (chunk * n)))  # bounds the (perms, TRs, voxels) work array to ~160 MB
    for start in range(0, n_permutations, chunk):
        m = min(chunk, n_permutations - start)
        perms = np.stack([np.concatenate([blocks[i] for i in rng.permutation(len(blocks))]) for _ in range(m)])
        for v0 in range(0, y.shape[1], v_chunk):
            sl = slice(v0, v0 + v_chunk)
            null = np.einsum("tv,mtv->mv", pz[:, sl], yz[:, sl][perms]) / n
            exceed[sl] += (null >= obs[None, sl]).sum(axis=0)
    return obs, (1 + exceed) / (1 + n_permutations)


def fdr_bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values for p-values (any shape; NaN stays NaN)."""
    p = np.asarray(p, dtype=np.float64)
    flat = p.ravel()
    ok = ~np.isnan(flat)
    q = np.full_like(flat, np.nan)
    pv = flat[ok]
    m = pv.size
    if m:
        order = np.argsort(pv)
        ranked = pv[order] * m / np.arange(1, m + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        out = np.empty(m)
        out[order] = np.minimum(ranked, 1.0)
        q[ok] = out
    return q.reshape(p.shape)
