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
  the recorded responses ranks them); :class:`WordLMProposer` adapts a word-level lmbrain model or a
  HuggingFace causal LM; :func:`generate_null` samples the language model alone.
- :func:`fit_decoder_from_config` and :func:`decode_from_config`: the workflow's ``decoder`` and
  ``decode`` rules (the scoring lives in :mod:`lmbrain.evaluation`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import LmbrainError

log = logging.getLogger("lmbrain.decoding")


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
    """Log-likelihood (up to a constant) of each candidate's predicted responses.

    predicted: ``(n_candidates, n_trs, n_voxels)`` (or ``(n_trs, n_voxels)`` for one); observed:
    ``(n_trs, n_voxels)``; precision ``(n_voxels, n_voxels)`` (None = identity). Returns ``-1/2 sum_t r_t' P r_t`` with
    ``r = observed - predicted``: ``(n_candidates,)`` (a float for one candidate).
    """
    pred = np.asarray(predicted, dtype=np.float64)
    single = pred.ndim == 2
    pred = pred[None] if single else pred
    obs = np.asarray(observed, dtype=np.float64)
    if pred.shape[1:] != obs.shape or (precision is not None and precision.shape != (obs.shape[1], obs.shape[1])):
        raise DecodingError(f"predicted {pred.shape[1:]}, observed {obs.shape} and precision {precision.shape} "
                            "do not match (TRs, voxels)")
    r = obs[None] - pred
    rp = r if precision is None else r @ precision  # one BLAS product (a 3-operand einsum is a loop)
    out = -0.5 * np.einsum("btv,btv->b", rp, r)
    return float(out[0]) if single else out


class WordRateModel:
    """Predicts how many words each TR holds from the responses that follow it.

    Parameters: ``delays`` (TRs of the responses used, negative = after the stimulus TR: the default
    ``(-4, -3, -2, -1)`` reads the responses 1-4 TRs later), ``n_voxels`` (the voxels whose future
    response correlates best with the word count on the training stories; None = all), ``alphas``
    (ridge penalties, chosen by cross-validation over whole stories: leave-one-story-out, or ``cv_folds``
    contiguous sets of stories). Fitted attributes:
    ``voxels_`` (indices), ``ridge_``, ``mean_rate_`` (training words per TR).
    """

    def __init__(self, delays=(-4, -3, -2, -1), n_voxels: int | None = 1000, alphas=None, device: str = "cpu",
                 cv_folds: int | None = None):
        if any(d >= 0 for d in delays):
            raise DecodingError(f"word-rate delays must be negative (responses after the words), got {list(delays)}")
        self.delays = tuple(int(d) for d in delays)
        self.n_voxels = n_voxels
        self.alphas = np.logspace(0, 5, 11) if alphas is None else np.asarray(alphas, dtype=np.float64)
        self.device = device
        self.cv_folds = cv_folds

    def _design(self, Y):
        from .stimulus import make_delayed, zscore

        return make_delayed(zscore(np.asarray(Y)[:, self.voxels_].astype(np.float64)), self.delays)

    def fit(self, responses: list, rates: list, voxels=None) -> "WordRateModel":
        """responses: per training story ``(n_trs, n_voxels)``; rates: per story ``(n_trs,)`` word counts
        (:func:`lmbrain.stimulus.word_rate`); ``voxels``: fixed voxel indices (e.g. from ROIs).

        Voxels are ranked one story at a time (no copy of all the responses is made): a voxel's score is
        the sum over delays of its z-scored response ``d`` TRs after each TR times the standardised word
        count of that TR."""
        from .ridge import RidgeCV, story_folds
        from .stimulus import make_delayed, zscore

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
                for d in self.delays:  # response |d| TRs later against the count now
                    score += (z.T @ make_delayed(t, (-d,)).astype(np.float32))[:, 0]
            order = np.argsort(-score, kind="stable")
            voxels = np.sort(order[: self.n_voxels] if self.n_voxels else order)
        self.voxels_ = np.asarray(voxels, dtype=np.int64)
        X = np.concatenate([self._design(y) for y in responses])
        self.mean_rate_ = float(target.mean())  # the ridge has no intercept: fit the centred count
        groups = np.concatenate([np.full(np.shape(y)[0], i) for i, y in enumerate(responses)])
        self.ridge_ = RidgeCV(alphas=self.alphas, cv=story_folds(self.cv_folds, len(responses)), device=self.device,
                              progress=False).fit(
            X, (target - self.mean_rate_)[:, None], groups=groups)
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

    def whitened(self, M) -> "LinearEncoder":
        """The same encoder with its predictions right-multiplied by ``M`` ``(V, V')`` (e.g. a whitening)."""
        import copy

        out = copy.copy(self)
        out.W = np.einsum("kfv,vw->kfw", self.W, M)
        out.baseline = self.baseline @ M
        return out

    def predict(self, features) -> np.ndarray:
        """Full prediction ``(n_trs, V)`` for all words' features ``(n_words, d)`` (a reference path)."""
        pred = self.baseline.copy()
        for j in range(self.n_words):
            rows, eff = self.effect(j, np.asarray(features)[j: j + 1])
            pred[rows] += eff[0]
        return pred


class WordLMProposer:
    """Proposals and features from lmbrain's language models (word-level, or HuggingFace) for the beam search.

    ``nucleus(contexts)``: per context (a list of words) the words of the nucleus (probability at least
    ``min_ratio`` of the top word, until ``top_p`` of the mass), most likely first, at most
    ``extensions``, never ``<unk>``, with their renormalised probabilities; ``propose`` keeps the words.
    ``features(windows)``: the hidden state of ``layer`` at the last word of each window, given its last
    ``context`` words (the encoding model's feature with a fixed short context). The features come from
    ``feature_lm`` when given (e.g. the demo's planted topic reader as a positive control), else from
    ``lm``.
    """

    def __init__(self, lm, layer: int, context: int = 5, extensions: int = 5, top_p: float = 0.9,
                 min_ratio: float = 0.1, feature_lm=None):
        self.lm, self.layer, self.context = lm, int(layer), int(context)
        self.feature_lm = lm if feature_lm is None else feature_lm
        self.extensions, self.top_p, self.min_ratio = int(extensions), float(top_p), float(min_ratio)
        if self.context < 1:
            raise DecodingError(f"the decoder's context must be at least one word, got {context}")

    @staticmethod
    def _ids(lm, words) -> list[int]:
        """Token ids of a window of words: one per word for lmbrain's word-level models; for a HuggingFace
        model the tokens of each ``" " + word`` after its beginning-of-sequence prefix."""
        if hasattr(lm, "vocab"):
            return [int(i) for i in lm.vocab.encode(list(words))]
        return list(lm.prefix) + [t for ids in lm.encode(list(words)) for t in ids]

    @classmethod
    def _last(cls, lm, windows, layer: int | None):
        """``lm``'s outputs at the last token of each window, in the given order: hidden states of ``layer``
        ``(n, d)``, or with ``layer=None`` next-token log-probabilities ``(n, vocab)``."""
        import torch

        ids = [cls._ids(lm, w) for w in windows]
        out_rows = [None] * len(windows)
        for length in sorted({len(t) for t in ids}):  # one batch per token count (no padding)
            idx = [i for i, t in enumerate(ids) if len(t) == length]
            for s in range(0, len(idx), 512):
                part = idx[s: s + 512]
                batch = torch.as_tensor(np.asarray([ids[i] for i in part], dtype=np.int64))
                with torch.inference_mode():
                    if layer is None:
                        out = lm.run(batch, layers=[], logits=True)
                        rows = out.logits[:, -1].float().log_softmax(-1).cpu().numpy()
                    else:
                        out = lm.run(batch, layers=[layer], logits=False)
                        rows = out.hidden[layer][:, -1].float().cpu().numpy().astype(np.float64)
                for i, r in zip(part, rows):
                    out_rows[i] = r
        return np.stack(out_rows) if out_rows else np.zeros((0, 0))

    def _candidates(self):
        """Token ids the proposer may propose and their words: the vocabulary without ``<unk>`` (word-level
        models), or the tokens that are a whole lower-case word with its leading space (HuggingFace:
        words made of several tokens are never proposed)."""
        if getattr(self, "_cand", None) is None:
            import re

            if hasattr(self.lm, "vocab"):
                ids = np.arange(1, len(self.lm.vocab.words))
                words = [self.lm.vocab.words[i] for i in ids]
            else:
                tok = self.lm.tokenizer
                pattern = re.compile(r"^ [a-z]+(?:'[a-z]+)?$")
                pairs = [(i, tok.decode([i])) for i in range(len(tok))]
                pairs = [(i, w[1:]) for i, w in pairs if pattern.match(w)]
                if not pairs:
                    raise DecodingError(f"{self.lm.name}: no whole-word tokens in the tokenizer to propose")
                ids = np.asarray([i for i, _ in pairs])
                words = [w for _, w in pairs]
            self._cand = (ids, words)
        return self._cand

    def nucleus(self, contexts) -> list[tuple[list[str], np.ndarray]]:
        ids, words = self._candidates()
        logp = self._last(self.lm, [list(c[-self.context:]) or ["<unk>"] if hasattr(self.lm, "vocab")
                                    else list(c[-self.context:]) for c in contexts], None)
        out = []
        for row in logp:
            row = row[ids]
            order = np.argsort(-row, kind="stable")
            p = np.exp(row[order] - row[order[0]])  # relative to the most likely word
            n = int(np.searchsorted(np.cumsum(p / p.sum()), self.top_p) + 1)
            keep = np.flatnonzero(p[:n] >= self.min_ratio)[: self.extensions]
            probs = p[keep] / p[keep].sum()
            out.append(([words[k] for k in order[keep]], probs))
        return out

    def propose(self, contexts) -> list[list[str]]:
        return [words for words, _ in self.nucleus(contexts)]

    def features(self, windows) -> np.ndarray:
        return self._last(self.feature_lm, [list(w[-self.context:]) for w in windows], self.layer)


def generate_null(proposer: WordLMProposer, n_words: int, n_samples: int = 10, seed: int = 0,
                  progress: bool = False) -> list[list[str]]:
    """Word sequences from the language model alone (no brain data): at each step a word is sampled from
    the proposer's nucleus (same ``top_p``, ``min_ratio``, ``extensions``) avoiding repeated bigrams, as
    the beam search's candidates are. ``n_samples`` sequences of ``n_words``, deterministic in ``seed``."""
    from .io import progress_bar as tqdm

    rng = np.random.default_rng(seed)
    seqs: list[list[str]] = [[] for _ in range(n_samples)]
    for _ in tqdm(range(n_words), desc="null sequences", unit="word", disable=not progress):
        for seq, (words, probs) in zip(seqs, proposer.nucleus(seqs)):
            ok = [i for i, w in enumerate(words) if not _repeats(seq, w)] or list(range(len(words)))
            p = probs[ok] / probs[ok].sum()
            seq.append(words[ok[int(rng.choice(len(ok), p=p))]])
    return seqs


def _repeats(words: list[str], new: str) -> bool:
    """Tang et al.'s filter: no repeated bigram within a hypothesis."""
    if not words:
        return False
    bigram = (words[-1], new)
    return any((a, b) == bigram for a, b in zip(words[:-1], words[1:]))


def _rebuild_predictions(encoder: LinearEncoder, proposer, hypotheses: list[list[str]]) -> np.ndarray:
    """Predicted responses ``(B, n_trs, V)`` of hypotheses (word lists of equal length) from scratch."""
    preds = np.repeat(encoder.baseline[None], len(hypotheses), axis=0)
    for j in range(len(hypotheses[0]) if hypotheses else 0):
        rows, eff = encoder.effect(j, proposer.features([h[: j + 1] for h in hypotheses]))
        preds[:, rows] += eff
    return preds


def beam_decode(encoder: LinearEncoder, observed, precision, proposer, beam_width: int = 10,
                progress: bool = True, checkpoint=None, checkpoint_every: int = 100,
                checkpoint_key: str = "") -> tuple[list[str], float]:
    """Beam search over word sequences for the recorded responses (Tang et al. 2023).

    At each word time the language model (``proposer``) proposes continuations of every hypothesis
    (no repeated bigrams), and the ``beam_width`` candidates whose predicted responses best explain
    ``observed`` ``(n_trs, V)`` are kept. A candidate's score is the :func:`gaussian_loglik` of every
    TR reached so far: TRs no later word can reach are final and accumulate in the hypothesis; the
    TRs the newest word reaches, which later words will still change, are added at their current
    prediction. Returns the best hypothesis's words and its final score (all TRs).

    ``checkpoint``: a JSON file where the beam (each hypothesis's words and final score) is saved every
    ``checkpoint_every`` words; a decode started with an existing checkpoint of the same
    ``checkpoint_key`` (any string naming the inputs and settings) resumes from it, rebuilding the
    predicted responses from the words. The file is removed when the decode finishes.
    """
    import json

    from .io import progress_bar as tqdm
    from .io import write_text

    observed = np.asarray(observed, dtype=np.float64)
    n_trs = encoder.baseline.shape[0]
    if observed.shape != encoder.baseline.shape:
        raise DecodingError(f"observed responses {observed.shape} do not match the encoder's {encoder.baseline.shape}")
    # whiten once (P = L L'): every candidate's log-likelihood is then -1/2 its squared residual, with no
    # (voxels x voxels) product per candidate
    chol = np.linalg.cholesky(np.asarray(precision, dtype=np.float64))
    encoder, observed, precision = encoder.whitened(chol), observed @ chol, None
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
    start = 0
    key = f"{checkpoint_key}|words={n}|trs={n_trs}|beam={beam_width}"
    if checkpoint is not None and Path(checkpoint).exists():
        try:
            state = json.loads(Path(checkpoint).read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("key") == key:
            hyps = state["words"]
            preds = _rebuild_predictions(encoder, proposer, hyps)
            beams = [(h, p, float(f)) for h, p, f in zip(hyps, preds, state["final"])]
            start, done = int(state["next"]), int(state["done"])
            log.info("resuming the beam search from %s at word %d of %d", checkpoint, start, n)
        else:
            log.info("ignoring checkpoint %s: it was written for other inputs or settings", checkpoint)
    for j in tqdm(range(start, n), desc="decoding", unit="word", disable=not progress, initial=start, total=n):
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
        if checkpoint is not None and (j + 1) % max(int(checkpoint_every), 1) == 0 and j + 1 < n:
            write_text(checkpoint, json.dumps({"key": key, "next": j + 1, "done": done,
                                               "words": [b[0] for b in beams], "final": [b[2] for b in beams]}))
    words, pred, score = beams[0]
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
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
                device: str = "cpu", search: str = "grid", memory_gb: float = 2.0, cv_folds: int | None = None) -> dict:
    """Fit what the decoder needs on the training stories of ``subject``.

    - encoding model on the proposer's features (its fixed short context), TR features z-scored with
      statistics pooled over the training stories (a decoded story has no statistics of its own),
      one ridge penalty per voxel by cross-validation over whole stories (``cv_folds``: None =
      leave-one-story-out, else that many contiguous sets of stories; ``alphas``, ``search`` and
      ``memory_gb`` as :class:`lmbrain.ridge.RidgeCV`; the workflow passes the ``encoding:`` settings);
      the ``n_voxels`` voxels with the best CV score are kept;
    - noise precision (:func:`noise_precision`) from held-out residuals of those voxels, one story at a
      time, each predicted by the model fitted without its fold (the same folds);
    - word-rate model (:class:`WordRateModel`).

    Returns a dict: ``coef`` (delays x d, n_selected), ``voxels``, ``cv_score`` (of the kept voxels),
    ``mean``, ``std``, ``delays``, ``precision``, ``rate_model``.
    """
    from .datasets import stacked_responses
    from .ridge import RidgeCV, make_folds, story_folds
    from .stimulus import downsample, make_delayed, word_rate

    if len(train) < 2:
        raise DecodingError("the decoder needs at least two training stories (its noise model is leave-one-story-out)")
    tr_feats, rates, n_trs = [], [], []
    for story in train:
        words = ds.words(story)
        tr_times = ds.tr_times(story, subject)
        F = word_features(proposer, words["word"])
        tr_feats.append(downsample(F, words["midpoint"].to_numpy(), tr_times))
        rates.append(word_rate(words, tr_times)[:, 0])
        n_trs.append(len(tr_times))
    # the responses in one float32 array (a real subject's training set is several GB), a view per story
    Yall = stacked_responses(ds, subject, train, n_trs, error=DecodingError)
    bounds = np.cumsum([0] + n_trs)
    Y = [Yall[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    pooled = np.concatenate(tr_feats)
    mean, std = pooled.mean(axis=0), pooled.std(axis=0)
    z = [np.where(std > 0, (f - mean) / np.where(std > 0, std, 1), 0.0) for f in tr_feats]
    X = [make_delayed(x, delays) for x in z]
    groups = np.concatenate([np.full(len(x), i) for i, x in enumerate(X)])
    cv = story_folds(cv_folds, len(train))
    ridge = RidgeCV(alphas=np.logspace(0, 6, 13) if alphas is None else alphas, cv=cv, search=search, device=device,
                    memory_gb=memory_gb, progress=False).fit(np.concatenate(X), Yall, groups=groups)
    order = np.argsort(-np.nan_to_num(ridge.best_scores_, nan=-np.inf), kind="stable")
    voxels = np.sort(order[: min(n_voxels, len(order))])
    alpha = ridge.best_alphas_[voxels]
    residuals = []
    for _, val in make_folds(len(groups), groups, cv):
        held = np.unique(groups[val]).tolist()
        rest = [j for j in range(len(train)) if j not in held]
        w = ridge_fixed(np.concatenate([X[j] for j in rest]),
                        np.concatenate([Y[j][:, voxels] for j in rest]).astype(np.float64), alpha)
        residuals += [Y[i][:, voxels].astype(np.float64) - X[i] @ w for i in held]
    rate_model = WordRateModel(n_voxels=rate_voxels, device=device, cv_folds=cv_folds).fit(Y, rates)
    return {"coef": np.asarray(ridge.coef_, dtype=np.float64)[:, voxels], "voxels": voxels,
            "cv_score": ridge.best_scores_[voxels], "mean": mean, "std": std, "delays": tuple(delays),
            "precision": noise_precision(residuals, shrinkage), "rate_model": rate_model}


def decode_story(decoder: dict, observed, tr_times, proposer, times=None, beam_width: int = 10,
                 progress: bool = True, **checkpointing) -> pd.DataFrame:
    """Decode one story's responses ``(n_trs, n_voxels)`` (all voxels; the decoder's are selected here).

    ``times``: word times (s) to decode at; None = predicted by the decoder's word-rate model.
    ``checkpointing``: ``checkpoint``, ``checkpoint_every``, ``checkpoint_key`` of :func:`beam_decode`.
    Returns ``word``, ``time``.
    """
    observed = np.asarray(observed, dtype=np.float64)
    if times is None:
        times = word_times(decoder["rate_model"].predict(observed), tr_times)
    if len(times) == 0:
        raise DecodingError("no word times to decode at (the word-rate model predicts no words)")
    enc = LinearEncoder(decoder["coef"], decoder["delays"], decoder["mean"], decoder["std"], tr_times, times)
    words, _ = beam_decode(enc, observed[:, decoder["voxels"]], decoder["precision"], proposer,
                           beam_width=beam_width, progress=progress, **checkpointing)
    return pd.DataFrame({"word": words, "time": np.asarray(times, dtype=np.float64)})


# --------------------------------------------------------------------------------------------
# the workflow's entry points
def decoder_layer(spec_layer, lm) -> int:
    """The decoder's feature layer: configured (negatives count from the end), or None = three quarters
    of the way up the model (Tang et al. used GPT's layer 9 of 12)."""
    n = int(lm.n_layers)
    if spec_layer is None:
        return max(1, int(round(0.75 * n)))
    layer = int(spec_layer) + (n + 1 if spec_layer < 0 else 0)
    if not 0 <= layer <= n:
        raise DecodingError(f"decoding.layer {spec_layer} is out of range: the model has layers 0..{n}")
    return layer


def build_proposer(config: dict, model_dir, feature_model_dir=None, device: str = "cpu") -> WordLMProposer:
    """The proposer for ``decoding:`` settings: the language model in ``model_dir`` proposes words; the
    features come from it or from ``feature_model_dir`` (``decoding.feature_model``)."""
    from .models import ModelError, load_model

    dec = config["decoding"]
    try:
        lm = load_model(model_dir, device=device)
        flm = load_model(feature_model_dir, device=device) if feature_model_dir else lm
    except ModelError as exc:
        raise DecodingError(str(exc)) from None
    if getattr(getattr(lm, "model", None), "kind", "") == "planted":
        raise DecodingError(f"model {lm.name} predicts no words and cannot propose; decode with a language model "
                            "and set decoding.feature_model to it instead")
    return WordLMProposer(lm, decoder_layer(dec["layer"], flm), context=dec["context"],
                          extensions=dec["extensions"], top_p=dec["top_p"], min_ratio=dec["min_ratio"],
                          feature_lm=flm)


def save_decoder(decoder: dict, path) -> None:
    """Write a fitted decoder (:func:`fit_decoder`) to an ``.npz`` file atomically."""
    from .io import atomic_path

    rm = decoder["rate_model"]
    arrays = {k: np.asarray(decoder[k]) for k in ("coef", "voxels", "cv_score", "mean", "std", "delays", "precision")}
    arrays.update(rate_coef=np.asarray(rm.ridge_.coef_, dtype=np.float64), rate_voxels=rm.voxels_,
                  rate_delays=np.asarray(rm.delays), rate_mean=np.asarray(rm.mean_rate_),
                  layer=np.asarray(decoder.get("layer", -1)))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


class _FittedRidge:
    def __init__(self, coef):
        self.coef_ = coef

    def predict(self, X):
        return np.asarray(X, dtype=np.float64) @ self.coef_


def load_decoder(path) -> dict:
    """Read what :func:`save_decoder` wrote."""
    try:
        z = np.load(path)
    except (OSError, ValueError) as exc:
        raise DecodingError(f"{path}: not a decoder file ({exc}); rerun the decoder rule") from None
    with z:
        d = {k: z[k] for k in z.files}
    rm = WordRateModel(delays=tuple(int(x) for x in d["rate_delays"]))
    rm.voxels_, rm.mean_rate_, rm.ridge_ = d["rate_voxels"], float(d["rate_mean"]), _FittedRidge(d["rate_coef"])
    return {"coef": d["coef"], "voxels": d["voxels"], "cv_score": d["cv_score"], "mean": d["mean"], "std": d["std"],
            "delays": tuple(int(x) for x in d["delays"]), "precision": d["precision"], "rate_model": rm,
            "layer": int(d["layer"])}


def _device(config) -> str:
    from .training import pick_device

    return str(pick_device(config.get("device", "auto")))


def fit_decoder_from_config(config: dict, subject: str, model_dir, out_path, feature_model_dir=None) -> dict:
    """What the ``decoder`` rule does: fit the decoder of ``subject`` on its training stories and save it."""
    from .datasets import open_dataset

    dec = config["decoding"]
    device = _device(config)
    ds = open_dataset(config["dataset"]["layout"], config["dataset"]["root"], tr=config.get("tr", 2.0))
    train, _ = ds.split(subject, config["stories"]["train"], config["stories"]["test"])
    proposer = build_proposer(config, model_dir, feature_model_dir, device=device)
    log.info("fitting the decoder of %s on %d training stories (layer %d, context %d words)", subject, len(train),
             proposer.layer, proposer.context)
    decoder = fit_decoder(ds, subject, train, proposer, n_voxels=dec["n_voxels"], shrinkage=dec["shrinkage"],
                          delays=tuple(config["encoding"]["delays"]), rate_voxels=dec["rate_voxels"], device=device,
                          alphas=config["encoding"]["alphas"], search=config["encoding"]["search"],
                          memory_gb=config["encoding"]["memory_gb"], cv_folds=config["encoding"].get("cv_folds"))
    decoder["layer"] = proposer.layer
    log.info("decoder: %d voxels, CV score of the kept voxels median %.3f (min %.3f)", len(decoder["voxels"]),
             float(np.median(decoder["cv_score"])), float(np.min(decoder["cv_score"])))
    save_decoder(decoder, out_path)
    return decoder


def _story_seed(seed: int, story: str) -> int:
    import zlib

    return (int(seed) * 1_000_003 + zlib.crc32(story.encode())) % (2 ** 32)


def transcript_text(actual: pd.DataFrame, decoded: pd.DataFrame, window: float = 20.0) -> str:
    """The actual and decoded words side by side, in consecutive windows of ``window`` s."""
    end = max(float(actual["time"].max()), float(decoded["time"].max()) if len(decoded) else 0.0)
    lines = []
    for s in np.arange(0.0, end + window, window):
        a = actual.loc[(actual["time"] >= s) & (actual["time"] < s + window), "word"]
        d = decoded.loc[(decoded["time"] >= s) & (decoded["time"] < s + window), "word"]
        if len(a) or len(d):
            lines += [f"[{s:6.0f} - {s + window:6.0f} s]", f"  actual : {' '.join(a)}", f"  decoded: {' '.join(d)}", ""]
    return "\n".join(lines)


def decode_from_config(config: dict, subject: str, story: str, model_dir, decoder_path, out_dir,
                       feature_model_dir=None, progress: bool = True, observed=None) -> pd.DataFrame:
    """What the ``decode`` rule does for one story: decode, generate the null, score, identify, plot.

    Writes into ``out_dir``: ``decoded.tsv`` (word, time), ``transcript.txt`` (actual and decoded words
    side by side by window), ``null.tsv`` (sample, word, time), ``scores.tsv`` (per window: metrics,
    and per null ``lm``/``shift`` its mean and sd, z, p, q), ``summary.tsv`` (per metric and null:
    story score, null, z, p, fraction of windows significant), ``identification.tsv``, and the figures ``scores.png`` and
    ``identification.png`` (with PDFs). ``observed``: responses to decode instead of the recorded ones
    (a control: e.g. noise). Returns the summary table.
    """
    import time as _time

    from . import evaluation as ev
    from .datasets import open_dataset
    from .io import atomic_path
    from .plots import decoding_scores, identification_curve

    dec = config["decoding"]
    device = _device(config)
    out_dir = Path(out_dir)
    ds = open_dataset(config["dataset"]["layout"], config["dataset"]["root"], tr=config.get("tr", 2.0))
    decoder = load_decoder(decoder_path)
    proposer = build_proposer(config, model_dir, feature_model_dir, device=device)
    if proposer.layer != decoder["layer"]:
        raise DecodingError(f"{decoder_path} was fitted on layer {decoder['layer']}, the config now says "
                            f"{proposer.layer}; rerun the decoder rule")
    words = ds.words(story, subject)
    tr_times = ds.tr_times(story, subject)
    observed = np.asarray(ds.responses(subject, story) if observed is None else observed, dtype=np.float64)
    if observed.shape[0] != tr_times.size:
        raise DecodingError(f"story {story}: {observed.shape[0]} TRs of responses but {tr_times.size} TR times")
    actual = pd.DataFrame({"word": words["word"].astype(str), "time": words["midpoint"].to_numpy(dtype=np.float64)})
    if dec["word_times"] == "actual":
        times = actual["time"].to_numpy()
    else:
        times = word_times(decoder["rate_model"].predict(observed), tr_times)
    if len(times) == 0:
        raise DecodingError(f"story {story}: the word-rate model predicts no words; check the responses")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = _time.perf_counter()
    log.info("decoding %s: %d word times over %.0f s, beam width %d", story, len(times), tr_times[-1] - tr_times[0],
             dec["beam_width"])
    decoded = decode_story(decoder, observed, tr_times, proposer, times=times, beam_width=dec["beam_width"],
                           progress=progress, checkpoint=out_dir.parent / f".{out_dir.name}.checkpoint.json",
                           checkpoint_every=dec["checkpoint_every"],
                           checkpoint_key=f"{subject}|{story}|{Path(decoder_path).stat().st_mtime_ns}|{dec}")
    found = decoded["word"].tolist()
    decode_s = _time.perf_counter() - t0
    minutes = (tr_times[-1] - tr_times[0]) / 60
    log.info("decoded %d words in %.0f s (%.1f s per minute of story)", len(found), decode_s, decode_s / minutes)
    nulls = generate_null(proposer, len(times), dec["null_samples"], seed=_story_seed(config["seed"], story),
                          progress=progress)
    # scoring
    metrics = list(dec["metrics"])
    bert = ev.BertScorer(ev.encoder_path(dec["bertscore_model"]), dec["bertscore_layer"], device=device) \
        if "bertscore" in metrics else None
    wordnet = ev.wordnet_reader(Path(dec["cache_dir"] or config["demo"]["cache_dir"])) if "meteor" in metrics else None
    end = float(tr_times[-1] + np.mean(np.diff(tr_times)) / 2)
    scorer = ev.WindowScorer(actual["word"], actual["time"], end, dec["window"], dec["step"], metrics, bert, wordnet)
    scored = scorer.score(found, times)
    windows, summary = ev.null_statistics(scored, [scorer.score(s, times) for s in nulls], metrics,
                                          alpha=dec["fdr"], name="lm")
    start = float(tr_times[0] - np.mean(np.diff(tr_times)) / 2)
    shifts = ev.shift_offsets(end - start, dec["shift_samples"], dec["min_shift"])
    shifted = [scorer.score(found, ev.shifted_times(times, s, start, end)) for s in shifts]
    windows_shift, summary_shift = ev.null_statistics(scored, shifted, metrics, alpha=dec["fdr"], name="shift")
    windows = windows.join(windows_shift[[c for c in windows_shift.columns if c.endswith(
        ("_shift_mean", "_shift_std", "_shift_z", "_shift_p", "_shift_q"))]])
    summary = pd.concat([summary, summary_shift], ignore_index=True)
    # identification from the actual words
    feats = word_features(proposer, actual["word"])
    truth = LinearEncoder(decoder["coef"], decoder["delays"], decoder["mean"], decoder["std"], tr_times,
                          actual["time"].to_numpy()).predict(feats)
    ident = ev.identification(truth, observed[:, decoder["voxels"]], decoder["precision"],
                              dec["identification_lengths"])
    summary["decode_seconds"] = decode_s
    summary["seconds_per_story_minute"] = decode_s / minutes
    # outputs
    null_table = pd.concat([pd.DataFrame({"sample": i, "word": s, "time": times}) for i, s in enumerate(nulls)])
    for name, table in (("decoded.tsv", decoded), ("null.tsv", null_table), ("scores.tsv", windows),
                        ("summary.tsv", summary), ("identification.tsv", ident)):
        with atomic_path(out_dir / name) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    with atomic_path(out_dir / "transcript.txt") as tmp:
        tmp.write_text(transcript_text(actual, decoded, dec["window"]))
    title = f"{subject} {story}"
    decoding_scores(windows, summary, metrics, out_dir / "scores.png", title=title)
    identification_curve(ident, out_dir / "identification.png", title=title)
    for row in summary.itertuples():
        log.info("%s against the %s null: decoded %.4f, null %.4f +- %.4f, z = %.2f, windows significant %.2f",
                 row.metric, row.null, row.decoded, row.null_mean, row.null_std, row.z, row.fraction_significant)
    return summary
