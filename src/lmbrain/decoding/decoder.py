"""The fitted decoder: encoding model over selected voxels, noise model and word-rate model in one object.

:class:`Decoder` follows scikit-learn's conventions: ``__init__`` stores the parameters, :meth:`Decoder.fit`
checks them and learns the fitted attributes (names ending in ``_``), :meth:`Decoder.save` /
:meth:`Decoder.load` write and read ``decoder.npz``, :meth:`Decoder.decode` runs the beam search on a
story's responses. :func:`ridge_fixed` (ridge at a given penalty per target) and :func:`word_features`
(every word's decoder feature) are the pieces it is built from.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .beam import LinearEncoder, beam_decode
from .errors import DecodingError
from .noise import noise_precision
from .wordrate import FittedRidge, WordRateModel, word_times

log = logging.getLogger("lmbrain.decoding")


def ridge_fixed(X, Y, alphas) -> np.ndarray:
    """Ridge weights with a given penalty per target (float64, via one SVD).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    Y : ndarray of shape (n_samples, n_targets)
    alphas : ndarray of shape (n_targets,)
        Penalty of each target (sklearn's convention: added to the squared singular values).

    Returns
    -------
    ndarray of shape (n_features, n_targets)
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    alphas = np.asarray(alphas, dtype=np.float64)
    U, S, Vt = np.linalg.svd(X, full_matrices=False)
    UtY = U.T @ Y
    coef = np.empty((X.shape[1], Y.shape[1]))
    for a in np.unique(alphas):
        cols = alphas == a
        coef[:, cols] = Vt.T @ ((S / (S ** 2 + a))[:, None] * UtY[:, cols])
    return coef


def word_features(proposer, words) -> np.ndarray:
    """Every word's decoder feature (the proposer's layer at its fixed context).

    Parameters
    ----------
    proposer : object with ``features(windows) -> ndarray (n_windows, d)``
    words : sequence of str, length n_words

    Returns
    -------
    ndarray of shape (n_words, d)
    """
    words = [str(w) for w in words]
    return np.concatenate([proposer.features([words[: j + 1] for j in range(s, min(s + 256, len(words)))])
                           for s in range(0, len(words), 256)])


_ARRAYS = ("coef", "voxels", "cv_score", "mean", "std", "delays", "precision")


class Decoder:
    """Decodes word sequences from responses (Tang et al. 2023).

    Fitting (:meth:`fit`) learns, on the training stories:

    - an encoding model on the proposer's features (its fixed short context): TR features z-scored with
      statistics pooled over the training stories (a decoded story has no statistics of its own),
      FIR ``delays``, one ridge penalty per voxel by cross-validation over whole stories; the
      ``n_voxels`` voxels with the best CV score are kept;
    - the noise precision (:func:`~lmbrain.decoding.noise.noise_precision`) from held-out residuals of
      those voxels, each story predicted by the model fitted without its fold (the same folds);
    - a word-rate model (:class:`~lmbrain.decoding.wordrate.WordRateModel`).

    Parameters
    ----------
    n_voxels : int, default 10000
        Voxels kept (best cross-validated encoding score).
    shrinkage : float in [0, 1], default 2/3
        The noise model's shrinkage towards the identity.
    delays : sequence of int, default (1, 2, 3, 4)
        FIR delays (TRs) of the encoding model.
    alphas : array-like or None
        Ridge penalties (:class:`lmbrain.ridge.RidgeCV`; None = its default).
    rate_voxels : int or None, default 1000
        Voxels of the word-rate model (``n_voxels`` of :class:`WordRateModel`; None = all).
    device : str, default "cpu"
        Torch device of the ridges.
    search : str, default "grid"
        Alpha search of :class:`lmbrain.ridge.RidgeCV`.
    memory_gb : float, default 2.0
        Memory budget of :class:`lmbrain.ridge.RidgeCV`.
    cv_folds : int or None
        None = leave-one-story-out; else that many contiguous sets of stories (encoding, noise and
        word-rate models).
    rate_voxel_sets : sequence of array-like of int, or None
        Fixed voxel sets of the word-rate model (e.g. ROIs: auditory cortex; Broca's area and sPMv):
        one model per set, their predicted rates averaged (:meth:`WordRateModel.average`; one set = that
        model alone). None = the ``rate_voxels`` voxels best correlated with the word count.
    rate_delays_across_stories : bool, default False
        ``delays_across_stories`` of the word-rate model(s) (True = the reference code's stacking).
    delays_across_stories : bool, default False
        Design of the encoding model: False = each training story FIR-delayed on its own (zero-padded);
        True = the stories stacked and then delayed (the reference code: a story's first TRs carry the
        previous story's last TRs; :func:`lmbrain.stimulus.delay_stories`).
    score : {"r2", "corr", "neg_mse", "huth_r2", "r2_clipped"}, default "r2"
        Cross-validation score that picks each voxel's alpha and ranks the voxels kept (``score`` of
        :class:`lmbrain.ridge.RidgeCV`; the workflow passes ``encoding.score``), and picks the word-rate
        model's alpha. semantic-decoding (Tang et al.) uses ``r2_clipped``.

    Attributes
    ----------
    coef_ : ndarray of shape (n_delays * n_features, n_selected)
        Encoding weights of the kept voxels (delay blocks stacked).
    voxels_ : ndarray of shape (n_selected,), int
        The kept voxels (sorted indices into the responses' columns).
    cv_score_ : ndarray of shape (n_selected,)
        Their cross-validated encoding scores (``score``).
    alpha_ : ndarray of shape (n_selected,)
        Their ridge penalties (not saved by :meth:`save`).
    mean_, std_ : ndarray of shape (n_features,)
        Training statistics of the TR features.
    precision_ : ndarray of shape (n_selected, n_selected)
        Noise precision.
    rate_model_ : WordRateModel
    layer_ : int
        The proposer's feature layer the decoder was fitted on (-1 when the proposer has none).
    """

    def __init__(self, n_voxels: int = 10000, shrinkage: float = 2 / 3, delays=(1, 2, 3, 4), alphas=None,
                 rate_voxels: int | None = 1000, device: str = "cpu", search: str = "grid", memory_gb: float = 2.0,
                 cv_folds: int | None = None, rate_voxel_sets=None, rate_delays_across_stories: bool = False,
                 delays_across_stories: bool = False, score: str = "r2"):
        self.n_voxels = n_voxels
        self.shrinkage = shrinkage
        self.delays = delays
        self.alphas = alphas
        self.rate_voxels = rate_voxels
        self.device = device
        self.search = search
        self.memory_gb = memory_gb
        self.cv_folds = cv_folds
        self.rate_voxel_sets = rate_voxel_sets
        self.rate_delays_across_stories = rate_delays_across_stories
        self.delays_across_stories = delays_across_stories
        self.score = score

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, responses, tr_times, words, word_times, proposer) -> "Decoder":
        """Fit the decoder on training stories.

        Parameters
        ----------
        responses : ndarray of shape (n_trs_total, n_voxels)
            The training stories' responses stacked in story order (float32 is enough; not copied):
            story ``i`` holds the next ``len(tr_times[i])`` rows.
        tr_times : list of ndarray of shape (n_trs_i,)
            TR centres (s) of each story (at least two stories).
        words : list of sequence of str, each of length n_words_i
            Each story's words.
        word_times : list of ndarray of shape (n_words_i,)
            Each word's time (s; its midpoint).
        proposer : object with ``features(windows)``
            Gives each word's feature (:func:`word_features`); its ``layer`` is recorded.

        Returns
        -------
        self
        """
        from ..ridge import RidgeCV, make_folds, story_folds
        from ..stimulus import delay_stories, downsample

        n_stories = len(tr_times)
        if n_stories < 2:
            raise DecodingError("the decoder needs at least two training stories (its noise model is leave-one-story-out)")
        if not (len(words) == len(word_times) == n_stories):
            raise DecodingError(f"{n_stories} stories of TR times but {len(words)} of words and {len(word_times)} of "
                                "word times")
        if not 0 <= self.shrinkage <= 1:
            raise DecodingError(f"shrinkage must be in [0, 1], got {self.shrinkage}")
        delays = tuple(int(d) for d in self.delays)
        n_trs = [len(t) for t in tr_times]
        if np.shape(responses)[0] != sum(n_trs):
            raise DecodingError(f"{np.shape(responses)[0]} rows of responses but the stories have {sum(n_trs)} TRs")
        tr_feats, rates = [], []
        for w, wt, tt in zip(words, word_times, tr_times):
            wt = np.asarray(wt, dtype=np.float64)
            F = word_features(proposer, w)
            tr_feats.append(downsample(F, wt, tt))
            rates.append(downsample(np.ones(len(wt)), wt, tt)[:, 0])  # stimulus.word_rate
        bounds = np.cumsum([0] + n_trs)
        Yall = responses
        Y = [Yall[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        pooled = np.concatenate(tr_feats)
        mean, std = pooled.mean(axis=0), pooled.std(axis=0)
        z = [np.where(std > 0, (f - mean) / np.where(std > 0, std, 1), 0.0) for f in tr_feats]
        X = delay_stories(z, delays, across_stories=bool(self.delays_across_stories))
        groups = np.concatenate([np.full(len(x), i) for i, x in enumerate(X)])
        cv = story_folds(self.cv_folds, n_stories)
        ridge = RidgeCV(alphas=np.logspace(0, 6, 13) if self.alphas is None else self.alphas, cv=cv,
                        score=self.score, search=self.search, device=self.device, memory_gb=self.memory_gb,
                        progress=False).fit(np.concatenate(X), Yall, groups=groups)
        order = np.argsort(-np.nan_to_num(ridge.best_scores_, nan=-np.inf), kind="stable")
        voxels = np.sort(order[: min(self.n_voxels, len(order))])
        alpha = ridge.best_alphas_[voxels]
        residuals = []
        for _, val in make_folds(len(groups), groups, cv):
            held = np.unique(groups[val]).tolist()
            rest = [j for j in range(n_stories) if j not in held]
            w = ridge_fixed(np.concatenate([X[j] for j in rest]),
                            np.concatenate([Y[j][:, voxels] for j in rest]).astype(np.float64), alpha)
            residuals += [Y[i][:, voxels].astype(np.float64) - X[i] @ w for i in held]
        self.rate_model_ = self._fit_rate(Y, rates)
        self.coef_ = np.asarray(ridge.coef_, dtype=np.float64)[:, voxels]
        self.voxels_ = voxels
        self.cv_score_ = ridge.best_scores_[voxels]
        self.alpha_ = np.asarray(alpha, dtype=np.float64)
        self.mean_, self.std_ = mean, std
        self.precision_ = noise_precision(residuals, self.shrinkage)
        self.layer_ = int(getattr(proposer, "layer", -1))
        return self

    def _fit_rate(self, Y, rates) -> WordRateModel:
        across = bool(self.rate_delays_across_stories)
        if self.rate_voxel_sets is None:
            return WordRateModel(n_voxels=self.rate_voxels, device=self.device, cv_folds=self.cv_folds,
                                 delays_across_stories=across, score=self.score).fit(Y, rates)
        sets = list(self.rate_voxel_sets)
        if not sets:
            raise DecodingError("rate_voxel_sets is empty: give one voxel set per word-rate model, or None")
        models = [WordRateModel(n_voxels=None, voxels=v, device=self.device, cv_folds=self.cv_folds,
                                delays_across_stories=across, score=self.score).fit(Y, rates) for v in sets]
        return models[0] if len(models) == 1 else WordRateModel.average(models)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise DecodingError("fit the decoder (or load one) first")

    # -- file --------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the fitted decoder to an ``.npz`` file atomically (arrays ``coef``, ``voxels``, ``cv_score``,
        ``mean``, ``std``, ``delays``, ``precision``, ``rate_coef``, ``rate_voxels``, ``rate_delays``,
        ``rate_mean``, ``layer``)."""
        from ..io import atomic_path

        self._check_fitted()
        rm = self.rate_model_
        values = {"coef": self.coef_, "voxels": self.voxels_, "cv_score": self.cv_score_, "mean": self.mean_,
                  "std": self.std_, "delays": tuple(int(d) for d in self.delays), "precision": self.precision_}
        arrays = {k: np.asarray(values[k]) for k in _ARRAYS}
        arrays.update(rate_coef=np.asarray(rm.ridge_.coef_, dtype=np.float64), rate_voxels=rm.voxels_,
                      rate_delays=np.asarray(tuple(int(d) for d in rm.delays)), rate_mean=np.asarray(rm.mean_rate_),
                      layer=np.asarray(self.layer_))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    @classmethod
    def load(cls, path) -> "Decoder":
        """Read what :meth:`save` wrote. The parameters the file does not hold (``n_voxels``,
        ``shrinkage``, ...) are the defaults except ``delays`` and ``n_voxels`` (the number kept)."""
        try:
            z = np.load(path)
        except (OSError, ValueError) as exc:
            raise DecodingError(f"{path}: not a decoder file ({exc}); rerun the decoder rule") from None
        with z:
            d = {k: z[k] for k in z.files}
        missing = [k for k in (*_ARRAYS, "rate_coef", "rate_voxels", "rate_delays", "rate_mean", "layer") if k not in d]
        if missing:
            raise DecodingError(f"{path}: not a decoder file (no {', '.join(missing)}); rerun the decoder rule")
        rm = WordRateModel(delays=tuple(int(x) for x in d["rate_delays"]), n_voxels=len(d["rate_voxels"]))
        rm.voxels_, rm.mean_rate_, rm.ridge_ = d["rate_voxels"], float(d["rate_mean"]), FittedRidge(d["rate_coef"])
        dec = cls(n_voxels=len(d["voxels"]), delays=tuple(int(x) for x in d["delays"]))
        dec.coef_, dec.voxels_, dec.cv_score_ = d["coef"], d["voxels"], d["cv_score"]
        dec.mean_, dec.std_, dec.precision_ = d["mean"], d["std"], d["precision"]
        dec.rate_model_, dec.layer_ = rm, int(d["layer"])
        return dec

    # -- decoding ----------------------------------------------------------------------------
    def predict_word_times(self, observed, tr_times, rounding: str = "cumulative") -> np.ndarray:
        """Word times (s) the word-rate model predicts from one story's responses.

        Parameters
        ----------
        observed : ndarray of shape (n_trs, n_voxels)
            All voxels (the word-rate model's are selected here).
        tr_times : ndarray of shape (n_trs,)
        rounding : {"cumulative", "per_tr"}, default "cumulative"
            How rates become whole words (:func:`~lmbrain.decoding.wordrate.word_counts`; ``"per_tr"`` is
            the reference code's).

        Returns
        -------
        ndarray of shape (n_words,)
        """
        self._check_fitted()
        return word_times(self.rate_model_.predict(observed), tr_times, rounding=rounding)

    def encoder(self, tr_times, times) -> LinearEncoder:
        """The encoding model's predictions for words at ``times`` (s) on a story's TRs ``tr_times``."""
        self._check_fitted()
        return LinearEncoder(self.coef_, tuple(int(d) for d in self.delays), self.mean_, self.std_, tr_times, times)

    def predict_responses(self, features, tr_times, times) -> np.ndarray:
        """Predicted responses of the kept voxels ``(n_trs, n_selected)`` to words with ``features``
        ``(n_words, d)`` at ``times`` ``(n_words,)``."""
        return self.encoder(tr_times, times).predict(features)

    def decode(self, observed, tr_times, proposer, times=None, beam_width: int = 10, progress: bool = True,
               checkpoint=None, checkpoint_every: int = 100, checkpoint_key: str = "", rounding: str = "cumulative",
               content_window: int | None = None, bigram_window: int | None = None, device=None,
               max_batch_bytes: int = 256 * 2 ** 20) -> pd.DataFrame:
        """Decode one story's responses by beam search.

        Parameters
        ----------
        observed : ndarray of shape (n_trs, n_voxels)
            All voxels (the decoder's are selected here).
        tr_times : ndarray of shape (n_trs,)
        proposer : object with ``propose(contexts)`` and ``features(windows)``
        times : ndarray of shape (n_words,) or None
            Word times (s) to decode at; None = :meth:`predict_word_times`.
        beam_width : int, default 10
        progress : bool
        checkpoint, checkpoint_every, checkpoint_key, content_window, bigram_window, device, max_batch_bytes
            As :func:`~lmbrain.decoding.beam.beam_decode`.
        rounding : {"cumulative", "per_tr"}
            As :meth:`predict_word_times` (with ``times=None``).

        Returns
        -------
        DataFrame with columns ``word``, ``time``
        """
        self._check_fitted()
        observed = np.asarray(observed, dtype=np.float64)
        if times is None:
            times = self.predict_word_times(observed, tr_times, rounding=rounding)
        if len(times) == 0:
            raise DecodingError("no word times to decode at (the word-rate model predicts no words)")
        enc = self.encoder(tr_times, times)
        words, _ = beam_decode(enc, observed[:, self.voxels_], self.precision_, proposer, beam_width=beam_width,
                               progress=progress, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                               checkpoint_key=checkpoint_key, content_window=content_window,
                               bigram_window=bigram_window, device=device,
                               max_batch_bytes=max_batch_bytes)
        return pd.DataFrame({"word": words, "time": np.asarray(times, dtype=np.float64)})
