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

    Each null correlation is a sum over the permuted blocks of the product of a block of ``y`` with the
    stretch of ``pred`` it lands on. Those block products are computed once per voxel (two alignments:
    before and after the short block), so a permutation costs a sum of ``n / block`` numbers per voxel
    instead of a pass over every TR: the same null values, about ``block`` times less work.
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
    full, short = divmod(n, block)  # full blocks, and the length of the short last one (0: none)
    n_blocks = full + (short > 0)
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(n_blocks) for _ in range(n_permutations)])  # block order per permutation
    # where each permuted block lands: before the short block its TRs start at block * position (row
    # ``position`` of the aligned products), after it ``block - short`` TRs earlier (row ``full + position - 1``)
    q = np.argmax(perms == full, axis=1) if short else np.full(n_permutations, n_blocks)
    pos = np.arange(n_blocks)[None, :]
    rows = np.where(pos < q[:, None], pos, full + pos - 1)
    keep = perms != full  # the short block's product is added separately
    rows = rows[keep].reshape(n_permutations, full)
    ids = perms[keep].reshape(n_permutations, full)
    exceed = np.zeros(y.shape[1])
    v_chunk = max(1, int(2e7 // (chunk * full)))  # bounds the (perms, blocks, voxels) gather to ~160 MB
    for v0 in range(0, y.shape[1], v_chunk):
        sl = slice(v0, v0 + v_chunk)
        yb = yz[: full * block, sl].reshape(full, block, -1)
        aligned = [pz[: full * block, sl].reshape(full, block, -1)]
        if short:
            aligned.append(pz[short: short + full * block, sl].reshape(full, block, -1))
        prod = np.concatenate([np.einsum("ijv,bjv->ibv", a, yb) for a in aligned])  # (rows, blocks, voxels)
        if short:  # the short block starting at TR block * q, for each possible q
            ys = yz[full * block:, sl]
            tail = np.stack([(pz[block * k: block * k + short, sl] * ys).sum(axis=0) for k in range(n_blocks)])
        for m0 in range(0, n_permutations, chunk):
            m = slice(m0, min(m0 + chunk, n_permutations))
            null = prod[rows[m], ids[m]].sum(axis=1)
            if short:
                null += tail[q[m]]
            exceed[sl] += (null / n >= obs[None, sl] - 1e-12).sum(axis=0)  # a tie (e.g. no move) counts
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
