"""When words occur: the decoder's word-rate model and the word times it implies (Tang et al. 2023).

- :class:`WordRateModel`: ridge from the responses at future delays (the response lags the stimulus)
  to the Lanczos-downsampled word count; voxels chosen by their training correlation with that count,
  or given (e.g. from ROIs). :meth:`WordRateModel.average` combines models fitted on different voxel
  sets into one that predicts their mean rate.
- :func:`word_times`: predicted word times, spread evenly within each TR.

Two choices differ from the Huth lab's released code and are switches here (defaults: lmbrain's):

- ``word_times(rounding=...)``: lmbrain rounds the cumulative predicted count (``"cumulative"``: the
  number of words over the story is the rounded sum of the rates); the reference rounds each TR's
  rate (``"per_tr"``: a steady 0.4 words per TR gives no word at all).
- ``WordRateModel(delays_across_stories=...)``: lmbrain delays each training story's responses with
  zero padding (``False``); the reference stacks all training stories and then delays, so the negative
  delays of a story's last TRs read the first responses of the next story (``True``).
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
    voxels : array-like of int or None
        A fixed voxel set (e.g. an ROI's voxels: auditory cortex, or the speech areas); None = selected
        by ``n_voxels``.
    delays_across_stories : bool, default False
        False: each training story is delayed on its own (zero padding at its end). True: the training
        stories are stacked and then delayed, as the reference code does (a story's last rows read the
        next story's first responses). Prediction always delays the one story given.
    score : str, default "r2"
        Cross-validation score that picks the alpha (``score`` of :class:`lmbrain.ridge.RidgeCV`).

    Attributes
    ----------
    voxels_ : ndarray of shape (n_used,), int64
        Indices of the voxels used.
    ridge_ : fitted ridge with ``coef_`` of shape (n_delays * n_used, 1) and ``predict``.
    mean_rate_ : float
        Training words per TR (the ridge fits the centred count).
    """

    def __init__(self, delays=(-4, -3, -2, -1), n_voxels: int | None = 1000, alphas=None, device: str = "cpu",
                 cv_folds: int | None = None, voxels=None, delays_across_stories: bool = False, score: str = "r2"):
        self.delays = delays
        self.n_voxels = n_voxels
        self.alphas = alphas
        self.device = device
        self.cv_folds = cv_folds
        self.voxels = voxels
        self.delays_across_stories = delays_across_stories
        self.score = score

    def _delays(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.delays)

    def _zscored(self, Y):
        from ..stimulus import zscore

        return zscore(np.asarray(Y)[:, self.voxels_].astype(np.float64))

    def _design(self, Y):
        from ..stimulus import make_delayed

        return make_delayed(self._zscored(Y), self._delays())

    def fit(self, responses: list, rates: list) -> "WordRateModel":
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
        voxels = self.voxels
        if voxels is not None:
            voxels = np.asarray(voxels, dtype=np.int64).ravel()
            if voxels.size == 0:
                raise DecodingError("the word-rate model's voxel set is empty")
            if voxels.min() < 0 or voxels.max() >= n_vox:
                raise DecodingError(f"word-rate voxels must be indices in [0, {n_vox}), got {voxels.min()}.."
                                    f"{voxels.max()}")
        else:
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
        if self.delays_across_stories:  # the reference: stack, then delay across story boundaries
            X = make_delayed(np.concatenate([self._zscored(y) for y in responses]), delays)
        else:
            X = np.concatenate([self._design(y) for y in responses])
        self.mean_rate_ = float(target.mean())  # the ridge has no intercept: fit the centred count
        groups = np.concatenate([np.full(np.shape(y)[0], i) for i, y in enumerate(responses)])
        self.ridge_ = RidgeCV(alphas=alphas, cv=story_folds(self.cv_folds, len(responses)), score=self.score,
                              device=self.device, progress=False).fit(X, (target - self.mean_rate_)[:, None], groups=groups)
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
        return np.clip(self.predict_linear(responses), 0, None)

    def predict_linear(self, responses) -> np.ndarray:
        """The linear prediction before clipping at zero (``(n_trs,)``; :meth:`average` means these)."""
        if not hasattr(self, "ridge_"):
            raise DecodingError("fit the word-rate model before predicting")
        return self.ridge_.predict(self._design(responses))[:, 0] + self.mean_rate_

    @classmethod
    def average(cls, models) -> "WordRateModel":
        """One word-rate model predicting the mean of fitted models' rates (e.g. one per ROI).

        The models' linear predictions (before clipping at zero) are averaged, then clipped: the result
        is itself a linear model over the concatenated voxel sets (a voxel in several sets appears
        several times), so it saves to the decoder file like any word-rate model. The models must share
        their delays.

        Parameters
        ----------
        models : sequence of fitted WordRateModel

        Returns
        -------
        WordRateModel
            Fitted: ``voxels_`` of shape (sum of n_used,), ``ridge_.coef_`` of shape
            (n_delays * sum of n_used, 1), ``mean_rate_`` the mean of the models' means.
        """
        models = list(models)
        if not models or any(not hasattr(m, "ridge_") for m in models):
            raise DecodingError("average needs at least one fitted word-rate model")
        delays = models[0]._delays()
        if any(m._delays() != delays for m in models):
            raise DecodingError(f"word-rate models to average must share their delays, got "
                                f"{[list(m._delays()) for m in models]}")
        n = len(models)
        blocks = []  # per delay: every model's weights of that delay, in model order
        for k in range(len(delays)):
            for m in models:
                coef = np.asarray(m.ridge_.coef_, dtype=np.float64).reshape(len(delays), len(m.voxels_), -1)
                blocks.append(coef[k] / n)
        out = cls(delays=delays, n_voxels=None, voxels=np.concatenate([m.voxels_ for m in models]))
        out.voxels_ = np.concatenate([np.asarray(m.voxels_, dtype=np.int64) for m in models])
        out.mean_rate_ = float(np.mean([m.mean_rate_ for m in models]))
        out.ridge_ = FittedRidge(np.concatenate(blocks))
        return out


class FittedRidge:
    """A ridge read back from a file: ``coef_`` ``(n_features, n_targets)`` and ``predict``."""

    def __init__(self, coef):
        self.coef_ = coef

    def predict(self, X):
        return np.asarray(X, dtype=np.float64) @ self.coef_


ROUNDING = ("cumulative", "per_tr")


def word_counts(rate, rounding: str = "cumulative") -> np.ndarray:
    """Whole words per TR from a (non-negative) word rate per TR.

    ``"cumulative"`` (lmbrain): the differences of the rounded cumulative count, so the story's total is
    the rounded total rate; ``"per_tr"`` (the reference code): each TR's rate rounded on its own (numpy's
    round: halves to even). Returns an int array of the rate's shape.
    """
    rate = np.clip(np.asarray(rate, dtype=np.float64), 0, None)
    if rounding == "cumulative":
        return np.diff(np.concatenate([[0], np.round(np.cumsum(rate))])).astype(int)
    if rounding == "per_tr":
        return np.round(rate).astype(int)
    raise DecodingError(f"word-count rounding must be one of {list(ROUNDING)}, got {rounding!r}")


def word_times(rate, tr_times, tr: float | None = None, rounding: str = "cumulative") -> np.ndarray:
    """Word times from a word count per TR.

    The count of each TR (:func:`word_counts`: the rounded cumulative count, or each TR's rounded rate)
    says how many words fall in it; they are spread evenly within ``[t - TR/2, t + TR/2)`` of the TR
    centred at ``t`` (word ``k`` of ``c`` at ``t - TR/2 + TR (k + 1/2) / c``).

    Parameters
    ----------
    rate : array-like of shape (n_trs,)
        Words per TR (negative values count as 0).
    tr_times : ndarray of shape (n_trs,)
        TR centres (s).
    tr : float or None
        TR length (s); None = the mean spacing of ``tr_times``.
    rounding : {"cumulative", "per_tr"}, default "cumulative"
        See :func:`word_counts`.

    Returns
    -------
    ndarray of shape (n_words,)
    """
    rate = np.clip(np.asarray(rate, dtype=np.float64), 0, None)
    tr_times = np.asarray(tr_times, dtype=np.float64)
    if rate.shape != tr_times.shape:
        raise DecodingError(f"rate {rate.shape} and tr_times {tr_times.shape} differ in shape")
    tr = float(tr if tr is not None else np.mean(np.diff(tr_times)))
    counts = word_counts(rate, rounding)
    times = [t - tr / 2 + tr * (np.arange(c) + 0.5) / c for t, c in zip(tr_times, counts) if c > 0]
    return np.concatenate(times) if times else np.zeros(0)
