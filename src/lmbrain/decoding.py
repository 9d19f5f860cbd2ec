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
- :class:`LinearEncoder`: a fitted encoding model's predicted responses written as a baseline plus
  one contribution per word (the design is linear in the word features), so a beam hypothesis
  updates only the TRs its newest word affects.
- :func:`beam_decode`: the beam search (the language model proposes continuations, the likelihood of
  the recorded responses ranks them); :class:`WordLMProposer` adapts a word-level lmbrain model.

Not built yet (issue 6): the workflow rule, HuggingFace proposals, the evaluation metrics, the null
and identification.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

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

    def _design(self, Y, z=None):
        from .stimulus import make_delayed, zscore

        z = zscore(np.asarray(Y, dtype=np.float64)) if z is None else z
        return make_delayed(z[:, self.voxels_], self.delays)

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
        zs = [zscore(np.asarray(y, dtype=np.float64)) for y in responses]
        target = np.concatenate([np.ravel(r) for r in rates])[:, None]
        if voxels is None:
            # voxels whose responses 1-4 TRs later track the word count best (training stories only)
            score = np.zeros(n_vox)
            for d in self.delays:
                yd = np.concatenate([make_delayed(z, (d,)) for z in zs])
                score += columnwise_corr(yd, np.repeat(target, n_vox, axis=1))
            order = np.argsort(-score, kind="stable")
            voxels = np.sort(order[: self.n_voxels] if self.n_voxels else order)
        self.voxels_ = np.asarray(voxels, dtype=np.int64)
        X = np.concatenate([self._design(None, z) for z in zs])
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


class LinearEncoder:
    """Predicted responses of an encoding model as a baseline plus one additive term per word.

    The design is ``delays(zscore(L @ F))`` with training-set statistics (``mean``, ``std``: ``(d,)``),
    Lanczos matrix ``L`` (TRs x words) and word features ``F``; so the prediction ``design @ coef`` is
    ``baseline + sum_j effect_j`` where word j's effect is ``sum_d shift_d(L[:, j]) (F_j / std) @ W_d``.
    coef: ``(n_delays * d, n_voxels)`` (delay blocks stacked, as the encoding stage saves them).
    """

    def __init__(self, coef, delays, mean, std, tr_times, word_times, window: int = 3):
        from .stimulus import lanczos_matrix, make_delayed

        self.delays = tuple(int(d) for d in delays)
        coef = np.asarray(coef, dtype=np.float64)
        mean = np.asarray(mean, dtype=np.float64)
        std = np.asarray(std, dtype=np.float64)
        d = mean.size
        if coef.shape[0] != len(self.delays) * d or std.shape != mean.shape:
            raise DecodingError(f"weights have {coef.shape[0]} rows, expected {len(self.delays)} delays x {d} features")
        self.inv_std = np.where(std > 0, 1 / np.where(std > 0, std, 1), 0.0)
        self.W = coef.reshape(len(self.delays), d, -1)  # (delays, d, voxels)
        self.L = lanczos_matrix(np.asarray(tr_times, dtype=np.float64), np.asarray(word_times, dtype=np.float64),
                                window)
        n_trs = self.L.shape[0]
        self.baseline = make_delayed(np.tile(-mean * self.inv_std, (n_trs, 1)), self.delays) @ coef
        # the TRs each word reaches: its Lanczos support, shifted by every delay
        self.rows = []
        for j in range(self.L.shape[1]):
            support = np.flatnonzero(self.L[:, j])
            rows = np.unique(np.concatenate([support + dl for dl in self.delays])) if support.size else support
            self.rows.append(rows[(rows >= 0) & (rows < n_trs)])

    @property
    def n_words(self) -> int:
        return self.L.shape[1]

    def effect(self, j: int, features) -> tuple[np.ndarray, np.ndarray]:
        """Word ``j``'s contribution for each row of ``features`` ``(B, d)``: ``(rows, (B, len(rows), V))``."""
        f = np.asarray(features, dtype=np.float64) * self.inv_std
        rows = self.rows[j]
        g = np.einsum("bf,kfv->bkv", f, self.W)  # (B, delays, V)
        out = np.zeros((f.shape[0], rows.size, self.W.shape[2]))
        for k, dl in enumerate(self.delays):
            lw = self.L[rows - dl, j] if rows.size else np.zeros(0)  # Lanczos weight reaching row t from t - dl
            valid = (rows - dl >= 0) & (rows - dl < self.L.shape[0])
            lw = np.where(valid, lw, 0.0)
            out += lw[None, :, None] * g[:, k][:, None, :]
        return rows, out

    def predict(self, features) -> np.ndarray:
        """Full prediction ``(n_trs, V)`` for all words' features ``(n_words, d)`` (a reference path)."""
        pred = self.baseline.copy()
        for j in range(self.n_words):
            rows, eff = self.effect(j, np.asarray(features)[j: j + 1])
            pred[rows] += eff[0]
        return pred


class WordLMProposer:
    """Proposals and features from a word-level lmbrain model for the beam search.

    ``propose(contexts)``: per context (a list of words) the words of the nucleus (probability at least
    ``min_ratio`` of the top word, until ``top_p`` of the mass), most likely first, at most
    ``extensions``, never ``<unk>``. ``features(windows)``: the hidden state of ``layer`` at the last word
    of each window (the encoding model's feature with a fixed short context).
    """

    def __init__(self, lm, layer: int, context: int = 5, extensions: int = 5, top_p: float = 0.9,
                 min_ratio: float = 0.1):
        self.lm, self.layer, self.context = lm, int(layer), int(context)
        self.extensions, self.top_p, self.min_ratio = int(extensions), float(top_p), float(min_ratio)

    def _last(self, windows, logits: bool):
        """The model's outputs at the last word of each window, in the given order: hidden states of
        ``layer`` ``(n, d)`` and, with ``logits``, next-word log-probabilities ``(n, vocab)``."""
        import torch

        hidden, logp = [None] * len(windows), [None] * len(windows)
        for length in sorted({len(w) for w in windows}):  # one batch per window length
            idx = [i for i, w in enumerate(windows) if len(w) == length]
            ids = torch.as_tensor(np.stack([self.lm.vocab.encode(windows[i]) for i in idx]))
            with torch.inference_mode():
                out = self.lm.run(ids, layers=[self.layer], logits=logits)
            h = out.hidden[self.layer][:, -1].float().cpu().numpy()
            lp = out.logits[:, -1].float().log_softmax(-1).cpu().numpy() if logits else [None] * len(idx)
            for i, hi, li in zip(idx, h, lp):
                hidden[i], logp[i] = hi, li
        return np.stack(hidden).astype(np.float64), logp

    def propose(self, contexts) -> list[list[str]]:
        _, logp = self._last([list(c[-self.context:]) or ["<unk>"] for c in contexts], logits=True)
        out = []
        for row in logp:
            row = row.copy()
            row[0] = -np.inf  # <unk>
            order = np.argsort(-row, kind="stable")
            p = np.exp(row[order] - row[order[0]])  # relative to the most likely word
            n = int(np.searchsorted(np.cumsum(p / p.sum()), self.top_p) + 1)
            keep = order[:n][p[:n] >= self.min_ratio][: self.extensions]
            out.append([self.lm.vocab.words[k] for k in keep])
        return out

    def features(self, windows) -> np.ndarray:
        return self._last([list(w[-self.context:]) for w in windows], logits=False)[0]


def _repeats(words: list[str], new: str) -> bool:
    """Tang et al.'s filter: no repeated bigram within a hypothesis."""
    if not words:
        return False
    bigram = (words[-1], new)
    return any((a, b) == bigram for a, b in zip(words[:-1], words[1:]))


def beam_decode(encoder: LinearEncoder, observed, precision, proposer, beam_width: int = 10,
                progress: bool = True) -> tuple[list[str], float]:
    """Beam search over word sequences for the recorded responses (Tang et al. 2023).

    At each word time the language model (``proposer``) proposes continuations of every hypothesis
    (no repeated bigrams), and the ``beam_width`` candidates whose predicted responses best explain
    ``observed`` ``(n_trs, V)`` are kept. A candidate's score is the :func:`gaussian_loglik` of every
    TR reached so far: TRs no later word can reach are final and accumulate in the hypothesis; the
    TRs the newest word reaches, which later words will still change, are added at their current
    prediction. Returns the best hypothesis's words and its final score (all TRs).
    """
    from tqdm.auto import tqdm

    observed = np.asarray(observed, dtype=np.float64)
    n_trs = encoder.baseline.shape[0]
    if observed.shape != encoder.baseline.shape:
        raise DecodingError(f"observed responses {observed.shape} do not match the encoder's {encoder.baseline.shape}")
    n = encoder.n_words
    # rows below first[j] are reached by no word from j on (word times are sorted)
    first = [min((int(r.min()) for r in encoder.rows[j:] if r.size), default=n_trs) for j in range(n)] + [n_trs]
    first = np.minimum.accumulate(np.asarray(first)[::-1])[::-1]
    reach = np.maximum.accumulate([int(r.max()) + 1 if r.size else 0 for r in encoder.rows])

    def loglik(preds, lo, hi):  # rows [lo, hi) of the data; preds hold rows [done, ...)
        if hi <= lo:
            return np.zeros(len(preds))
        return gaussian_loglik(preds[:, lo - done: hi - done], observed[lo:hi], precision)

    beams = [([], encoder.baseline.copy(), 0.0)]  # words, predicted responses, log-likelihood of final TRs
    done = 0  # rows [0, done) are final for every hypothesis
    for j in tqdm(range(n), desc="decoding", unit="word", disable=not progress):
        proposals = proposer.propose([b[0] for b in beams])
        flat = [(bi, w) for bi, ws in enumerate(proposals) for w in ws if not _repeats(beams[bi][0], w)]
        if not flat:  # every proposal repeats a bigram: keep them anyway
            flat = [(bi, w) for bi, ws in enumerate(proposals) for w in ws]
        feats = proposer.features([beams[bi][0] + [w] for bi, w in flat])
        rows, eff = encoder.effect(j, feats)
        lo, hi = int(first[j + 1]), max(int(reach[j]), int(first[j + 1]))
        window = slice(done, max(hi, done))
        preds = np.stack([beams[bi][1][window] for bi, _ in flat])
        preds[:, rows - done] += eff
        final = np.array([beams[bi][2] for bi, _ in flat]) + loglik(preds, done, lo)
        scores = final + loglik(preds, lo, hi)
        best = np.argsort(-scores, kind="stable")[:beam_width]
        new = []
        for c in best:
            bi, w = flat[c]
            pred = beams[bi][1].copy()
            pred[window] = preds[c]
            new.append((beams[bi][0] + [w], pred, float(final[c])))
        beams, done = new, lo
    words, pred, score = beams[0]
    return words, score + (float(gaussian_loglik(pred[done:], observed[done:], precision)) if done < n_trs else 0.0)


def ridge_fixed(X, Y, alphas) -> np.ndarray:
    """Ridge weights ``(n_features, n_targets)`` with a given penalty per target (float64, via one SVD)."""
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


def word_features(proposer: "WordLMProposer", words) -> np.ndarray:
    """Every word's decoder feature (the proposer's layer, its fixed context) ``(n_words, d)``."""
    words = [str(w) for w in words]
    return np.concatenate([proposer.features([words[: j + 1] for j in range(s, min(s + 256, len(words)))])
                           for s in range(0, len(words), 256)])


def fit_decoder(ds, subject: str, train: list[str], proposer: "WordLMProposer", n_voxels: int = 10000,
                shrinkage: float = 2 / 3, delays=(1, 2, 3, 4), alphas=None, rate_voxels: int | None = 1000,
                device: str = "cpu") -> dict:
    """Fit what the decoder needs on the training stories of ``subject``.

    - encoding model on the proposer's features (its fixed short context), TR features z-scored with
      statistics pooled over the training stories (a decoded story has no statistics of its own),
      one ridge penalty per voxel by leave-one-story-out CV; the ``n_voxels`` voxels with the best CV
      score are kept;
    - noise precision (:func:`noise_precision`) from leave-one-story-out residuals of those voxels;
    - word-rate model (:class:`WordRateModel`).

    Returns a dict: ``coef`` (delays x d, n_selected), ``voxels``, ``cv_score`` (of the kept voxels),
    ``mean``, ``std``, ``delays``, ``precision``, ``rate_model``.
    """
    from .ridge import RidgeCV
    from .stimulus import downsample, make_delayed, word_rate

    if len(train) < 2:
        raise DecodingError("the decoder needs at least two training stories (its noise model is leave-one-story-out)")
    tr_feats, Y, rates = [], [], []
    for story in train:
        words = ds.words(story)
        tr_times = ds.tr_times(story, subject)
        F = word_features(proposer, words["word"])
        tr_feats.append(downsample(F, words["midpoint"].to_numpy(), tr_times))
        Y.append(np.asarray(ds.responses(subject, story), dtype=np.float64))
        rates.append(word_rate(words, tr_times)[:, 0])
        if Y[-1].shape[0] != tr_feats[-1].shape[0]:
            raise DecodingError(f"story {story}: {tr_feats[-1].shape[0]} TRs of features, {Y[-1].shape[0]} of responses")
    pooled = np.concatenate(tr_feats)
    mean, std = pooled.mean(axis=0), pooled.std(axis=0)
    z = [np.where(std > 0, (f - mean) / np.where(std > 0, std, 1), 0.0) for f in tr_feats]
    X = [make_delayed(x, delays) for x in z]
    groups = np.concatenate([np.full(len(x), i) for i, x in enumerate(X)])
    ridge = RidgeCV(alphas=np.logspace(0, 6, 13) if alphas is None else alphas, search="grid", device=device,
                    progress=False).fit(np.concatenate(X), np.concatenate(Y), groups=groups)
    order = np.argsort(-np.nan_to_num(ridge.best_scores_, nan=-np.inf), kind="stable")
    voxels = np.sort(order[: min(n_voxels, len(order))])
    alpha = ridge.best_alphas_[voxels]
    residuals = []
    for i in range(len(train)):
        rest = [j for j in range(len(train)) if j != i]
        w = ridge_fixed(np.concatenate([X[j] for j in rest]), np.concatenate([Y[j][:, voxels] for j in rest]), alpha)
        residuals.append(Y[i][:, voxels] - X[i] @ w)
    rate_model = WordRateModel(n_voxels=rate_voxels, device=device).fit(Y, rates)
    return {"coef": np.asarray(ridge.coef_, dtype=np.float64)[:, voxels], "voxels": voxels,
            "cv_score": ridge.best_scores_[voxels], "mean": mean, "std": std, "delays": tuple(delays),
            "precision": noise_precision(residuals, shrinkage), "rate_model": rate_model}


def decode_story(decoder: dict, observed, tr_times, proposer, times=None, beam_width: int = 10,
                 progress: bool = True) -> pd.DataFrame:
    """Decode one story's responses ``(n_trs, n_voxels)`` (all voxels; the decoder's are selected here).

    ``times``: word times (s) to decode at; None = predicted by the decoder's word-rate model.
    Returns ``word``, ``time``.
    """
    observed = np.asarray(observed, dtype=np.float64)
    if times is None:
        times = word_times(decoder["rate_model"].predict(observed), tr_times)
    if len(times) == 0:
        raise DecodingError("no word times to decode at (the word-rate model predicts no words)")
    enc = LinearEncoder(decoder["coef"], decoder["delays"], decoder["mean"], decoder["std"], tr_times, times)
    words, _ = beam_decode(enc, observed[:, decoder["voxels"]], decoder["precision"], proposer,
                           beam_width=beam_width, progress=progress)
    return pd.DataFrame({"word": words, "time": np.asarray(times, dtype=np.float64)})
