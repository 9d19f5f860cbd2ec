"""Decoding stimulus text from fMRI (Tang et al. 2023): the pieces that do not need a language model.

- :func:`noise_precision`: the decoder's noise model. Leave-one-story-out residual covariances over the
  selected voxels, each normalised by its mean diagonal, averaged, and shrunk towards the identity:
  ``P = inv((1 - s) S + s I)`` with ``s = 2/3`` (Tang et al.: ``inv(S/3 + 2I/3)``).
- :func:`gaussian_loglik`: a candidate's log-likelihood ``-1/2 sum_t r_t' P r_t`` over the TRs its words
  affect, for a batch of candidates at once.
- :class:`WordRateModel`: when words occur. Ridge from the responses at future delays (the response
  lags the stimulus) to the Lanczos-downsampled word count; voxels chosen by their training
  correlation with that count, or given (e.g. from ROIs).
- :func:`word_times`: predicted word times, spread evenly within each TR.

The beam search and the evaluation are not built yet (issue 6).
"""

from __future__ import annotations

import numpy as np

from . import LmbrainError


class DecodingError(LmbrainError, ValueError):
    """Inputs the decoder cannot use (the message says which and why)."""


def noise_precision(residuals, shrinkage: float = 2 / 3) -> np.ndarray:
    """Precision matrix of the decoder's Gaussian noise model over the selected voxels.

    residuals: one ``(n_trs, n_voxels)`` array per held-out story (observed minus predicted response
    of the model fitted without that story). Each story's covariance ``R'R / n`` is divided by its
    mean diagonal; the average ``S`` is shrunk: ``P = inv((1 - shrinkage) S + shrinkage I)``.
    Returns ``(n_voxels, n_voxels)`` float64.
    """
    if not 0 <= shrinkage <= 1:
        raise DecodingError(f"shrinkage must be in [0, 1], got {shrinkage}")
    covs = []
    for i, r in enumerate(residuals):
        r = np.asarray(r, dtype=np.float64)
        if r.ndim != 2 or r.shape[0] < 2:
            raise DecodingError(f"residuals of story {i} must be (TRs >= 2, voxels), got shape {r.shape}")
        if covs and r.shape[1] != covs[0].shape[0]:
            raise DecodingError(f"residuals of story {i} have {r.shape[1]} voxels, story 0 has {covs[0].shape[0]}")
        if not np.all(np.isfinite(r)):
            raise DecodingError(f"residuals of story {i} contain NaN or infinite values")
        c = r.T @ r / r.shape[0]
        scale = np.mean(np.diag(c))
        if scale <= 0:
            raise DecodingError(f"residuals of story {i} are all zero")
        covs.append(c / scale)
    if not covs:
        raise DecodingError("noise_precision needs the residuals of at least one story")
    s = np.mean(covs, axis=0)
    shrunk = (1 - shrinkage) * s + shrinkage * np.eye(s.shape[0])
    return np.linalg.inv(shrunk)


def gaussian_loglik(predicted, observed, precision) -> np.ndarray:
    """Log-likelihood (up to a constant) of each candidate's predicted responses.

    predicted: ``(n_candidates, n_trs, n_voxels)`` (or ``(n_trs, n_voxels)`` for one); observed:
    ``(n_trs, n_voxels)``; precision ``(n_voxels, n_voxels)``. Returns ``-1/2 sum_t r_t' P r_t`` with
    ``r = observed - predicted``: ``(n_candidates,)`` (a float for one candidate).
    """
    pred = np.asarray(predicted, dtype=np.float64)
    single = pred.ndim == 2
    pred = pred[None] if single else pred
    obs = np.asarray(observed, dtype=np.float64)
    if pred.shape[1:] != obs.shape or precision.shape != (obs.shape[1], obs.shape[1]):
        raise DecodingError(f"predicted {pred.shape[1:]}, observed {obs.shape} and precision {precision.shape} "
                            "do not match (TRs, voxels)")
    r = obs[None] - pred
    out = -0.5 * np.einsum("btv,vw,btw->b", r, precision, r)
    return float(out[0]) if single else out


class WordRateModel:
    """Predicts how many words each TR holds from the responses that follow it.

    Parameters: ``delays`` (TRs of the responses used, negative = after the stimulus TR: the default
    ``(-4, -3, -2, -1)`` reads the responses 1-4 TRs later), ``n_voxels`` (the voxels whose future
    response correlates best with the word count on the training stories; None = all), ``alphas``
    (ridge penalties, chosen by leave-one-story-out cross-validation). Fitted attributes:
    ``voxels_`` (indices), ``ridge_``, ``mean_rate_`` (training words per TR).
    """

    def __init__(self, delays=(-4, -3, -2, -1), n_voxels: int | None = 1000, alphas=None, device: str = "cpu"):
        if any(d >= 0 for d in delays):
            raise DecodingError(f"word-rate delays must be negative (responses after the words), got {list(delays)}")
        self.delays = tuple(int(d) for d in delays)
        self.n_voxels = n_voxels
        self.alphas = np.logspace(0, 5, 11) if alphas is None else np.asarray(alphas, dtype=np.float64)
        self.device = device

    def _design(self, Y):
        from .stimulus import make_delayed, zscore

        return make_delayed(zscore(np.asarray(Y, dtype=np.float64))[:, self.voxels_], self.delays)

    def fit(self, responses: list, rates: list, voxels=None) -> "WordRateModel":
        """responses: per training story ``(n_trs, n_voxels)``; rates: per story ``(n_trs,)`` word counts
        (:func:`lmbrain.stimulus.word_rate`); ``voxels``: fixed voxel indices (e.g. from ROIs)."""
        from .ridge import RidgeCV
        from .stats import columnwise_corr
        from .stimulus import make_delayed, zscore

        if len(responses) != len(rates) or len(responses) < 2:
            raise DecodingError("the word-rate model needs responses and rates for at least two training stories")
        for i, (y, r) in enumerate(zip(responses, rates)):
            if np.shape(y)[0] != np.size(r):
                raise DecodingError(f"story {i}: {np.shape(y)[0]} TRs of responses but {np.size(r)} of word rate")
        n_vox = np.shape(responses[0])[1]
        if voxels is None:
            # voxels whose responses 1-4 TRs later track the word count best (training stories only)
            score = np.zeros(n_vox)
            for d in self.delays:
                yd = np.concatenate([make_delayed(zscore(np.asarray(y, dtype=np.float64)), (d,)) for y in responses])
                rd = np.concatenate([np.ravel(r) for r in rates])
                score += columnwise_corr(yd, np.repeat(rd[:, None], n_vox, axis=1))
            order = np.argsort(-score, kind="stable")
            voxels = np.sort(order[: self.n_voxels] if self.n_voxels else order)
        self.voxels_ = np.asarray(voxels, dtype=np.int64)
        X = np.concatenate([self._design(y) for y in responses])
        target = np.concatenate([np.ravel(r) for r in rates])[:, None]
        self.mean_rate_ = float(target.mean())  # the ridge has no intercept: fit the centred count
        groups = np.concatenate([np.full(np.shape(y)[0], i) for i, y in enumerate(responses)])
        self.ridge_ = RidgeCV(alphas=self.alphas, device=self.device, progress=False).fit(X, target - self.mean_rate_, groups=groups)
        return self

    def predict(self, responses) -> np.ndarray:
        """Word count per TR ``(n_trs,)`` (never negative) for one story's responses ``(n_trs, n_voxels)``."""
        if not hasattr(self, "ridge_"):
            raise DecodingError("fit the word-rate model before predicting")
        return np.clip(self.ridge_.predict(self._design(responses))[:, 0] + self.mean_rate_, 0, None)


def word_times(rate, tr_times, tr: float | None = None) -> np.ndarray:
    """Word times from a word count per TR: the rounded cumulative count says how many words fall in
    each TR, spread evenly within ``[t - TR/2, t + TR/2)`` of the TR centred at ``t``."""
    rate = np.clip(np.asarray(rate, dtype=np.float64), 0, None)
    tr_times = np.asarray(tr_times, dtype=np.float64)
    if rate.shape != tr_times.shape:
        raise DecodingError(f"rate {rate.shape} and tr_times {tr_times.shape} differ in shape")
    tr = float(tr if tr is not None else np.mean(np.diff(tr_times)))
    counts = np.diff(np.concatenate([[0], np.round(np.cumsum(rate))])).astype(int)
    times = [t - tr / 2 + tr * (np.arange(c) + 0.5) / c for t, c in zip(tr_times, counts) if c > 0]
    return np.concatenate(times) if times else np.zeros(0)
