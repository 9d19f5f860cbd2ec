"""The decoder's Gaussian noise model (Tang et al. 2023).

- :func:`noise_precision`: leave-one-story-out residual covariances over the selected voxels, each
  normalised by its mean diagonal, averaged, and shrunk towards the identity:
  ``P = inv((1 - s) S + s I)`` with ``s = 2/3`` (Tang et al.: ``inv(S/3 + 2I/3)``).
- :func:`gaussian_loglik`: a candidate's log-likelihood ``-1/2 sum_t r_t' P r_t`` over the TRs its words
  affect, for a batch of candidates at once.
"""

from __future__ import annotations

import numpy as np

from .errors import DecodingError


def noise_precision(residuals, shrinkage: float = 2 / 3) -> np.ndarray:
    """Precision matrix of the decoder's Gaussian noise model over the selected voxels.

    Each story's covariance ``R'R / n`` is divided by its mean diagonal; the average ``S`` over stories is
    shrunk: ``P = inv((1 - shrinkage) S + shrinkage I)``. The covariances are summed as they come (one
    voxels x voxels matrix at a time, whatever the number of stories).

    Parameters
    ----------
    residuals : iterable of ndarray of shape (n_trs_i, n_voxels)
        One array per held-out story: observed minus predicted response of the model fitted without
        that story.
    shrinkage : float in [0, 1], default 2/3
        Weight of the identity.

    Returns
    -------
    ndarray of shape (n_voxels, n_voxels), float64
    """
    if not 0 <= shrinkage <= 1:
        raise DecodingError(f"shrinkage must be in [0, 1], got {shrinkage}")
    # a running sum: one voxels x voxels matrix at a time (a list of per-story covariances of 10,000
    # voxels would hold 0.8 GB per story)
    total, n_voxels, n_stories = None, None, 0
    for i, r in enumerate(residuals):
        r = np.asarray(r, dtype=np.float64)
        if r.ndim != 2 or r.shape[0] < 2:
            raise DecodingError(f"residuals of story {i} must be (TRs >= 2, voxels), got shape {r.shape}")
        if n_voxels is not None and r.shape[1] != n_voxels:
            raise DecodingError(f"residuals of story {i} have {r.shape[1]} voxels, story 0 has {n_voxels}")
        if not np.all(np.isfinite(r)):
            raise DecodingError(f"residuals of story {i} contain NaN or infinite values")
        scale = float(np.einsum("ij,ij->", r, r)) / (r.shape[0] * r.shape[1])  # mean diagonal of R'R / n
        if scale <= 0:
            raise DecodingError(f"residuals of story {i} are all zero")
        c = r.T @ r
        c *= 1.0 / (r.shape[0] * scale)
        if total is None:
            total, n_voxels = c, r.shape[1]
        else:
            total += c
        del c
        n_stories += 1
    if total is None:
        raise DecodingError("noise_precision needs the residuals of at least one story")
    shrunk = total
    shrunk *= (1 - shrinkage) / n_stories
    shrunk[np.diag_indices_from(shrunk)] += shrinkage
    return np.linalg.inv(shrunk)


def gaussian_loglik(predicted, observed, precision) -> np.ndarray:
    """Log-likelihood (up to a constant) of each candidate's predicted responses: ``-1/2 sum_t r_t' P r_t``
    with ``r = observed - predicted``.

    Parameters
    ----------
    predicted : ndarray of shape (n_candidates, n_trs, n_voxels) or (n_trs, n_voxels)
    observed : ndarray of shape (n_trs, n_voxels)
    precision : ndarray of shape (n_voxels, n_voxels) or None
        None = the identity.

    Returns
    -------
    ndarray of shape (n_candidates,), or a float for one candidate
    """
    pred = np.asarray(predicted, dtype=np.float64)
    single = pred.ndim == 2
    pred = pred[None] if single else pred
    obs = np.asarray(observed, dtype=np.float64)
    if pred.shape[1:] != obs.shape or (precision is not None and precision.shape != (obs.shape[1], obs.shape[1])):
        raise DecodingError(f"predicted {pred.shape[1:]}, observed {obs.shape} and precision "
                            f"{None if precision is None else precision.shape} do not match (TRs, voxels)")
    r = obs[None] - pred
    rp = r if precision is None else r @ precision  # one BLAS product (a 3-operand einsum is a loop)
    out = -0.5 * np.einsum("btv,btv->b", rp, r)
    return float(out[0]) if single else out
