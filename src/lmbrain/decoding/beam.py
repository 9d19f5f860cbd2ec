"""The beam search over word sequences (Tang et al. 2023).

- :class:`LinearEncoder`: a fitted encoding model's predicted responses written as a baseline plus
  one contribution per word (the design is linear in the word features), so a beam hypothesis
  updates only the TRs its newest word affects.
- :func:`beam_decode`: the language model (a proposer, :class:`~lmbrain.decoding.proposer.WordLMProposer`)
  proposes continuations, the likelihood of the recorded responses ranks them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .errors import DecodingError
from .noise import gaussian_loglik
from .proposer import _repeats

log = logging.getLogger("lmbrain.decoding")


class LinearEncoder:
    """Predicted responses of an encoding model as a baseline plus one additive term per word.

    The design is ``delays(zscore(L @ F))`` with training-set statistics (``mean``, ``std``: ``(d,)``),
    Lanczos matrix ``L`` (TRs x words) and word features ``F``; so the prediction ``design @ coef`` is
    ``baseline + sum_j effect_j`` where word j's effect is ``sum_d shift_d(L[:, j]) (F_j / std) @ W_d``.
    coef: ``(n_delays * d, n_voxels)`` (delay blocks stacked, as the encoding stage saves them).
    """

    def __init__(self, coef, delays, mean, std, tr_times, word_times, window: int = 3):
        from ..stimulus import lanczos_matrix, make_delayed

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

    from ..io import progress_bar as tqdm
    from ..io import write_text

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

