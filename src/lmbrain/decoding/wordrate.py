"""When words occur: the decoder's word-rate model and the word times it implies (Tang et al. 2023).

- :class:`WordRateModel`: ridge from the responses at future delays (the response lags the stimulus)
  to the Lanczos-downsampled word count; voxels chosen by their training correlation with that count,
  or given (e.g. from ROIs).
- :func:`word_times`: predicted word times, spread evenly within each TR.
"""

from __future__ import annotations

import numpy as np

from .errors import DecodingError

DEFAULT_ALPHAS = np.logspace(0, 5, 11)


class WordRateModel:
    """Predicts how many words each TR holds from the responses that follow it.

    Parameters
    ----------
    delays : sequence of int, default (-4, -3, -2, -1)
        TRs of the responses used; negative = after the stimulus TR (the default reads the responses
        1-4 TRs later). Must all be negative.
    n_voxels : int or None, default 1000
        The voxels whose future response correlates best with the word count on the training stories
        are used; None = all.
    alphas : array-like of shape (n_alphas,) or None
        Ridge penalties, chosen by cross-validation over whole stories; None = ``logspace(0, 5, 11)``.
    device : str, default "cpu"
        Torch device of the ridge.
    cv_folds : int or None
        None = leave-one-story-out; else that many contiguous sets of stories.

    Attributes
    ----------
    voxels_ : ndarray of shape (n_used,), int64
        Indices of the voxels used.
    ridge_ : fitted ridge with ``coef_`` of shape (n_delays * n_used, 1) and ``predict``.
    mean_rate_ : float
        Training words per TR (the ridge fits the centred count).
    """

    def __init__(self, delays=(-4, -3, -2, -1), n_voxels: int | None = 1000, alphas=None, device: str = "cpu",
                 cv_folds: int | None = None):
        self.delays = delays
        self.n_voxels = n_voxels
        self.alphas = alphas
        self.device = device
        self.cv_folds = cv_folds

    def _delays(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.delays)

    def _design(self, Y):
        from ..stimulus import make_delayed, zscore

        return make_delayed(zscore(np.asarray(Y)[:, self.voxels_].astype(np.float64)), self._delays())

    def fit(self, responses: list, rates: list, voxels=None) -> "WordRateModel":
        """Select the voxels and fit the ridge.

        Voxels are ranked one story at a time (no copy of all the responses is made): a voxel's score is
        the sum over delays of its z-scored response ``d`` TRs after each TR times the standardised word
        count of that TR.

        Parameters
        ----------
        responses : list of ndarray of shape (n_trs_i, n_voxels)
            One per training story (at least two).
        rates : list of ndarray of shape (n_trs_i,)
            Word count per TR (:func:`lmbrain.stimulus.word_rate`).
        voxels : array-like of int or None
            Fixed voxel indices (e.g. from ROIs); None = selected by ``n_voxels``.

        Returns
        -------
        self
        """
        from ..ridge import RidgeCV, story_folds
        from ..stimulus import make_delayed, zscore

        delays = self._delays()
        if any(d >= 0 for d in delays):
            raise DecodingError(f"word-rate delays must be negative (responses after the words), got {list(delays)}")
        alphas = DEFAULT_ALPHAS if self.alphas is None else np.asarray(self.alphas, dtype=np.float64)
        if len(responses) != len(rates) or len(responses) < 2:
            raise DecodingError("the word-rate model needs responses and rates for at least two training stories")
        for i, (y, r) in enumerate(zip(responses, rates)):
            if np.shape(y)[0] != np.size(r):
                raise DecodingError(f"story {i}: {np.shape(y)[0]} TRs of responses but {np.size(r)} of word rate")
        n_vox = np.shape(responses[0])[1]
        target = np.concatenate([np.ravel(r) for r in rates]).astype(np.float64)
        if voxels is None:
            tz = (target - target.mean()) / (target.std() or 1.0)
            score = np.zeros(n_vox)
            off = 0
            for y in responses:
                z = zscore(np.asarray(y, dtype=np.float32))
                t = tz[off: off + z.shape[0], None]
                off += z.shape[0]
                for d in delays:  # response |d| TRs later against the count now
                    score += (z.T @ make_delayed(t, (-d,)).astype(np.float32))[:, 0]
            order = np.argsort(-score, kind="stable")
            voxels = np.sort(order[: self.n_voxels] if self.n_voxels else order)
        self.voxels_ = np.asarray(voxels, dtype=np.int64)
        X = np.concatenate([self._design(y) for y in responses])
        self.mean_rate_ = float(target.mean())  # the ridge has no intercept: fit the centred count
        groups = np.concatenate([np.full(np.shape(y)[0], i) for i, y in enumerate(responses)])
        self.ridge_ = RidgeCV(alphas=alphas, cv=story_folds(self.cv_folds, len(responses)), device=self.device,
                              progress=False).fit(X, (target - self.mean_rate_)[:, None], groups=groups)
        return self

    def predict(self, responses) -> np.ndarray:
        """Word count per TR of one story.

        Parameters
        ----------
        responses : ndarray of shape (n_trs, n_voxels)

        Returns
        -------
        ndarray of shape (n_trs,), never negative
        """
        if not hasattr(self, "ridge_"):
            raise DecodingError("fit the word-rate model before predicting")
        return np.clip(self.ridge_.predict(self._design(responses))[:, 0] + self.mean_rate_, 0, None)


class FittedRidge:
    """A ridge read back from a file: ``coef_`` ``(n_features, n_targets)`` and ``predict``."""

    def __init__(self, coef):
        self.coef_ = coef

    def predict(self, X):
        return np.asarray(X, dtype=np.float64) @ self.coef_


def word_times(rate, tr_times, tr: float | None = None) -> np.ndarray:
    """Word times from a word count per TR.

    The rounded cumulative count says how many words fall in each TR; they are spread evenly within
    ``[t - TR/2, t + TR/2)`` of the TR centred at ``t`` (word ``k`` of ``c`` at ``t - TR/2 + TR (k + 1/2) / c``).

    Parameters
    ----------
    rate : array-like of shape (n_trs,)
        Words per TR (negative values count as 0).
    tr_times : ndarray of shape (n_trs,)
        TR centres (s).
    tr : float or None
        TR length (s); None = the mean spacing of ``tr_times``.

    Returns
    -------
    ndarray of shape (n_words,)
    """
    rate = np.clip(np.asarray(rate, dtype=np.float64), 0, None)
    tr_times = np.asarray(tr_times, dtype=np.float64)
    if rate.shape != tr_times.shape:
        raise DecodingError(f"rate {rate.shape} and tr_times {tr_times.shape} differ in shape")
    tr = float(tr if tr is not None else np.mean(np.diff(tr_times)))
    counts = np.diff(np.concatenate([[0], np.round(np.cumsum(rate))])).astype(int)
    times = [t - tr / 2 + tr * (np.arange(c) + 0.5) / c for t, c in zip(tr_times, counts) if c > 0]
    return np.concatenate(times) if times else np.zeros(0)
