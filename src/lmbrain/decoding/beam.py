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
from .proposer import RepetitionFilter

log = logging.getLogger("lmbrain.decoding")


class LinearEncoder:
    """Predicted responses of an encoding model as a baseline plus one additive term per word.

    The design is ``delays(zscore(L @ F))`` with training-set statistics (``mean``, ``std``), Lanczos
    matrix ``L`` (TRs x words) and word features ``F``; so the prediction ``design @ coef`` is
    ``baseline + sum_j effect_j`` where word j's effect is ``sum_d shift_d(L[:, j]) (F_j / std) @ W_d``.

    Parameters
    ----------
    coef : ndarray of shape (n_delays * d, V)
        Encoding weights, delay blocks stacked (as the encoding stage saves them).
    delays : sequence of int, length n_delays
    mean, std : ndarray of shape (d,)
        Training statistics of the TR features.
    tr_times : ndarray of shape (n_trs,)
    word_times : ndarray of shape (n_words,)
    window : int, default 3
        Lanczos window.

    Attributes
    ----------
    W : ndarray of shape (n_delays, d, V)
    L : ndarray of shape (n_trs, n_words)
    baseline : ndarray of shape (n_trs, V)
        The prediction with no word (every feature at its training mean).
    rows : list of ndarray
        The TRs each word reaches (its Lanczos support shifted by every delay).
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

    def lanczos_weights(self, j: int) -> list[np.ndarray]:
        """Per delay, the Lanczos weight with which word ``j`` reaches each of its rows ``(len(rows),)``."""
        rows = self.rows[j]
        out = []
        for dl in self.delays:
            lw = self.L[rows - dl, j] if rows.size else np.zeros(0)  # Lanczos weight reaching row t from t - dl
            valid = (rows - dl >= 0) & (rows - dl < self.L.shape[0])
            out.append(np.where(valid, lw, 0.0))
        return out

    def effect(self, j: int, features) -> tuple[np.ndarray, np.ndarray]:
        """Word ``j``'s contribution to the predicted responses.

        Parameters
        ----------
        j : int
            The word's position.
        features : ndarray of shape (B, d)
            Candidate features of word ``j``.

        Returns
        -------
        rows : ndarray of shape (n_rows,)
            The TRs the word reaches.
        effect : ndarray of shape (B, n_rows, V)
        """
        g = np.einsum("bf,kfv->bkv", np.asarray(features, dtype=np.float64) * self.inv_std, self.W, optimize=True)
        return self.rows[j], _combine(_NUMPY, self, j, g)

    def whitened(self, M) -> "LinearEncoder":
        """The same encoder with its predictions right-multiplied by ``M`` ``(V, V')`` (e.g. a whitening)."""
        import copy

        out = copy.copy(self)
        out.W = np.matmul(self.W, M)  # (delays, d, V) @ (V, V'): one BLAS product per delay
        out.baseline = self.baseline @ M
        return out

    def predict(self, features) -> np.ndarray:
        """Full prediction ``(n_trs, V)`` for all words' features ``(n_words, d)`` (a reference path)."""
        pred = self.baseline.copy()
        for j in range(self.n_words):
            rows, eff = self.effect(j, np.asarray(features)[j: j + 1])
            pred[rows] += eff[0]
        return pred


def _delay_effects(Wf, inv_std, features, n_delays: int):
    """Candidate features ``(B, d)`` times each delay's weights ``Wf`` ``(d, delays * V)``: ``(B, delays, V)``
    (one product; numpy arrays or torch tensors)."""
    return ((features * inv_std) @ Wf).reshape(features.shape[0], n_delays, -1)


def _combine(xp, encoder: LinearEncoder, j: int, g):
    """Word ``j``'s effect ``(B, n_rows, V)`` on its rows from its effect per delay ``g`` ``(B, delays, V)``:
    each delay's Lanczos weights times that delay's effect, summed (arrays of backend ``xp``)."""
    out = xp.zeros((g.shape[0], encoder.rows[j].size, g.shape[2]))
    for k, lw in enumerate(encoder.lanczos_weights(j)):
        out += xp.asarray(lw)[None, :, None] * g[:, k][:, None, :]
    return out


def _effect(xp, encoder: LinearEncoder, Wf, inv_std, j: int, features):
    """Word ``j``'s effect ``(B, n_rows, V)`` for candidate features ``(B, d)`` (arrays of backend ``xp``)."""
    return _combine(xp, encoder, j, _delay_effects(Wf, inv_std, features, len(encoder.delays)))


class _Numpy:
    """numpy arrays (float64): the reference arithmetic."""

    name = "numpy"

    @staticmethod
    def einsum(eq, *ops):  # optimize=True contracts through BLAS (plain np.einsum loops: ~8x slower here)
        return np.einsum(eq, *ops, optimize=True)

    @staticmethod
    def asarray(x):
        return np.asarray(x, dtype=np.float64)

    @staticmethod
    def zeros(shape):
        return np.zeros(shape)

    @staticmethod
    def concat(xs, axis=0):
        return np.concatenate(xs, axis=axis)

    @staticmethod
    def index(idx):
        return np.asarray(idx, dtype=np.int64)

    @staticmethod
    def numpy(x):
        return x

    @staticmethod
    def loglik(preds, observed):
        return gaussian_loglik(preds, observed, None)

    @staticmethod
    def rowsum(x):  # per leading index, the sum of the rest (each row reduced on its own: batch-independent)
        return x.reshape(x.shape[0], -1).sum(axis=1)


class _Torch:
    """torch tensors (float64) on a device: the same arithmetic on a GPU."""

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.name = f"torch:{self.device}"

    def einsum(self, eq, *ops):
        return self.torch.einsum(eq, *ops)

    def asarray(self, x):
        if isinstance(x, self.torch.Tensor):
            return x.to(device=self.device, dtype=self.torch.float64)
        return self.torch.as_tensor(np.asarray(x, dtype=np.float64), device=self.device)

    def zeros(self, shape):
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.device)

    def concat(self, xs, axis=0):
        return self.torch.cat(xs, dim=axis)

    def index(self, idx):
        return self.torch.as_tensor(np.asarray(idx, dtype=np.int64), device=self.device)

    @staticmethod
    def numpy(x):
        return x.cpu().numpy()

    def loglik(self, preds, observed):
        r = observed[None] - preds
        return self.numpy(-0.5 * self.torch.einsum("btv,btv->b", r, r))

    @staticmethod
    def rowsum(x):
        return x.reshape(x.shape[0], -1).sum(dim=1)


_NUMPY = _Numpy()


def _backend(device):
    return _NUMPY if device is None else _Torch(device)


def beam_decode(encoder: LinearEncoder, observed, precision, proposer, beam_width: int = 10,
                progress: bool = True, checkpoint=None, checkpoint_every: int = 100,
                checkpoint_key: str = "", content_window: int | None = None, bigram_window: int | None = None,
                device=None,
                max_batch_bytes: int = 256 * 2 ** 20) -> tuple[list[str], float]:
    """Beam search over word sequences for the recorded responses (Tang et al. 2023).

    At each word time the language model (``proposer``) proposes continuations of every hypothesis,
    the :class:`~lmbrain.decoding.proposer.RepetitionFilter` drops repeated bigrams (and, with
    ``content_window``, repeated content-word stems; when it drops every proposal, all are kept), and
    the ``beam_width`` candidates whose predicted responses best explain ``observed`` are kept. A
    candidate's score is the :func:`~lmbrain.decoding.noise.gaussian_loglik` of every TR reached so far:
    TRs no later word can reach are final and accumulate in the hypothesis; the TRs the newest word
    reaches, which later words will still change, are added at their current prediction.

    Memory does not grow with the story: a hypothesis holds its words, its final score and the
    predictions of the open TRs only (those a later word can still change; a few TRs), and the
    candidates are scored in batches of at most ``max_batch_bytes`` of arrays.

    Parameters
    ----------
    encoder : LinearEncoder
    observed : ndarray of shape (n_trs, V)
    precision : ndarray of shape (V, V)
        Noise precision (the responses are whitened with its Cholesky factor once).
    proposer : object with ``propose(contexts)`` and ``features(windows)``
    beam_width : int, default 10
    progress : bool
    checkpoint : path or None
        A JSON file where the beam (each hypothesis's words and final score) is saved every
        ``checkpoint_every`` words; a search started with an existing checkpoint of the same
        ``checkpoint_key`` (any string naming the inputs and settings) resumes from it, rebuilding the
        open predictions from the words. The file is removed when the search finishes.
    checkpoint_every : int, default 100
    checkpoint_key : str
    content_window : int or None
        Refuse content words whose stem is among the last ``content_window`` words' stems; None = off.
    bigram_window : int or None
        Refuse repeated bigrams within the last ``bigram_window`` words; None = the whole hypothesis.
    device : str or None
        None: the candidate arithmetic in numpy (the reference). A torch device (``"cpu"``, ``"cuda"``):
        in torch, float64, on that device (the same results up to float rounding).
    max_batch_bytes : int
        Memory budget of one batch of candidates.

    Returns
    -------
    words : list of str, length n_words
        The best hypothesis.
    score : float
        Its log-likelihood over all TRs.
    """
    import json

    from ..io import progress_bar as tqdm
    from ..io import write_text

    observed = np.asarray(observed, dtype=np.float64)
    n_trs = encoder.baseline.shape[0]
    if observed.shape != encoder.baseline.shape:
        raise DecodingError(f"observed responses {observed.shape} do not match the encoder's {encoder.baseline.shape}")
    filt = RepetitionFilter(content_window=content_window, bigram_window=bigram_window)
    filt.allowed([], [])  # checks the windows
    xp = _backend(device)
    # whiten once (P = L L'): every candidate's log-likelihood is then -1/2 its squared residual, with no
    # (voxels x voxels) product per candidate
    chol = np.linalg.cholesky(np.asarray(precision, dtype=np.float64))
    # the whitened weights as one (d, delays x V) matrix: a batch of candidates' effects is then one product
    d = encoder.W.shape[1]
    if xp is _NUMPY:
        white = encoder.whitened(chol)
        W = np.ascontiguousarray(white.W.transpose(1, 0, 2)).reshape(d, -1)
        baseline, obs = white.baseline, observed @ chol
        del white
    else:
        c = xp.asarray(chol)
        W = xp.einsum("kfv,vw->kfw", xp.asarray(encoder.W), c).transpose(0, 1).contiguous().reshape(d, -1)
        baseline, obs = xp.asarray(encoder.baseline) @ c, xp.asarray(observed) @ c
    inv_std = xp.asarray(encoder.inv_std)
    n_vox = obs.shape[1]
    n = encoder.n_words
    # rows below first[j] are reached by no word from j on (word times are sorted)
    first = [int(r.min()) if r.size else n_trs for r in encoder.rows] + [n_trs]
    first = np.minimum.accumulate(np.asarray(first)[::-1])[::-1]  # the smallest row of words j, j + 1, ...
    reach = np.maximum.accumulate([int(r.max()) + 1 if r.size else 0 for r in encoder.rows])

    def bounds(j):  # rows [done, lo) become final after word j; [lo, hi) stay open
        lo = int(first[j + 1])
        return lo, max(int(reach[j]), lo)

    # the beam: words, final log-likelihood (rows [0, done)), open predictions (rows [done, top))
    hyps: list[list[str]] = [[]]
    final = np.zeros(1)
    done = top = 0
    opened = xp.zeros((1, 0, n_vox))
    start = 0
    key = f"{checkpoint_key}|words={n}|trs={n_trs}|beam={beam_width}" + (
        f"|content={content_window}" if content_window is not None else "") + (
        f"|bigrams={bigram_window}" if bigram_window is not None else "")
    if checkpoint is not None and Path(checkpoint).exists():
        try:
            state = json.loads(Path(checkpoint).read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("key") == key:
            hyps, final = state["words"], np.asarray(state["final"], dtype=np.float64)
            start, done = int(state["next"]), int(state["done"])
            top = bounds(start - 1)[1]
            opened = _rebuild_open(xp, encoder, W, inv_std, baseline, proposer, hyps, done, top)
            log.info("resuming the beam search from %s at word %d of %d", checkpoint, start, n)
        else:
            log.info("ignoring checkpoint %s: it was written for other inputs or settings", checkpoint)
    for j in tqdm(range(start, n), desc="decoding", unit="word", disable=not progress, initial=start, total=n):
        proposals = proposer.propose(hyps)
        flat = [(bi, w) for bi, ws in enumerate(proposals) for w, ok in zip(ws, filt.allowed(hyps[bi], ws)) if ok]
        if not flat:  # every proposal is refused: keep them anyway
            flat = [(bi, w) for bi, ws in enumerate(proposals) for w in ws]
        feats = xp.asarray(proposer.features([hyps[bi] + [w] for bi, w in flat]))
        parents = np.asarray([bi for bi, _ in flat], dtype=np.int64)
        rows = encoder.rows[j]
        lo, hi = bounds(j)
        if hi > top:  # rows no word had reached yet join the open rows at the baseline
            fresh = baseline[top:hi][None]
            opened = xp.concat([opened, xp.concat([fresh] * opened.shape[0], 0)], 1)
            top = hi
        # every candidate's log-likelihood from its parent's residuals (no (rows x voxels) array per
        # candidate; only the kept ones get their open rows, below)
        lw = np.stack(encoder.lanczos_weights(j)) if rows.size else np.zeros((len(encoder.delays), 0))
        terms = _parent_terms(xp, opened, obs[done:hi], rows - done, lw, lo - done)
        per_candidate = 8 * n_vox * 3 * len(encoder.delays)  # its effect per delay, its parent's u and their product
        size = max(1, int(max_batch_bytes) // max(per_candidate, 1))
        scores, finals = [], []
        for s in range(0, len(flat), size):
            par = parents[s: s + size]
            g = _delay_effects(W, inv_std, feats[s: s + size], len(encoder.delays))  # (b, K, V)
            ll_final, ll_open = _candidate_logliks(xp, g, xp.index(par), terms)
            fin = final[par] + xp.numpy(ll_final)
            finals.append(fin)
            scores.append(fin + xp.numpy(ll_open))
            del g
        del terms
        scores, fin = np.concatenate(scores), np.concatenate(finals)
        best = np.argsort(-scores, kind="stable")[:beam_width]
        held = best if j + 1 < n else best[:1]  # after the last word only the best one's open rows are needed
        # the kept candidates' open rows; their effects are computed again in one product (beam-width rows, the
        # scoring's were all candidates') rather than taken from the scoring batches, so these rows never
        # depend on the batching
        kept = opened[xp.index(parents[held])]
        if rows.size:
            kept[:, xp.index(rows - done)] += _effect(xp, encoder, W, inv_std, j, feats[xp.index(held)])
        opened = kept[:, lo - done:]
        hyps = [hyps[parents[c]] + [flat[c][1]] for c in best]
        final = fin[best]
        done = lo
        if checkpoint is not None and (j + 1) % max(int(checkpoint_every), 1) == 0 and j + 1 < n:
            write_text(checkpoint, json.dumps({"key": key, "next": j + 1, "done": done, "words": hyps,
                                               "final": [float(f) for f in final]}))
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    score = float(final[0])
    if done < n_trs:  # the open rows of the best hypothesis, then rows no word reached
        rest = xp.concat([opened[0], baseline[top:]], 0)
        score += float(xp.loglik(rest[None], obs[done:])[0])
    return hyps[0], score


def _parent_terms(xp, opened, observed, rows, lw, n_final: int) -> list[tuple]:
    """What every candidate's log-likelihood needs from its parent (:func:`_candidate_logliks`).

    A candidate's squared residual on a set T of rows, through its parent's residuals ``R = observed -
    opened``: ``||R||^2 on T - 2 sum_k <g_k, u_k> + sum_kl M_kl <g_k, g_l>``, where ``g_k`` is its word's
    effect at delay k, ``u_k = sum_t lw_k[t] R[t]`` and ``M = lw lw'`` over the word's rows in T.

    Parameters
    ----------
    opened : array of shape (n_parents, n_rows_open, V)
        The parents' predictions of the open rows (``n_rows_open`` >= ``len(observed)``).
    observed : array of shape (n_open, V)
        The (whitened) responses of those rows.
    rows : ndarray of shape (n_rows,)
        The word's rows, as indices into them.
    lw : ndarray of shape (n_delays, n_rows)
        The word's Lanczos weight per delay on each of its rows.
    n_final : int
        The first ``n_final`` rows become final after this word; the others stay open.

    Returns
    -------
    list of (base, u, M), one per set T (final rows, open rows): base ``(n_parents,)`` = ``||R||^2`` on
    T, u ``(n_parents, n_delays, V)``, M ``(n_delays, n_delays)``.
    """
    resid = observed[None] - opened[:, : observed.shape[0]]
    sq = resid * resid
    at_rows = resid[:, xp.index(rows)]
    out = []
    for base, part in ((xp.rowsum(sq[:, :n_final]), rows < n_final), (xp.rowsum(sq[:, n_final:]), rows >= n_final)):
        lw_t = lw * part[None]
        out.append((base, xp.asarray(lw_t) @ at_rows, xp.asarray(lw_t @ lw.T)))
    return out


def _candidate_logliks(xp, g, parents, terms) -> list:
    """Candidates' log-likelihoods ``-1/2 ||residual||^2`` on the final rows and on the open rows, from their
    word's effect per delay ``g`` ``(B, n_delays, V)``, their parents' indices ``(B,)`` and the parents'
    :func:`_parent_terms`; each candidate's arithmetic does not depend on the others in the batch."""
    gram = g @ g.swapaxes(1, 2)  # (B, K, K)
    return [-0.5 * (base[parents] - 2 * xp.rowsum(g * u[parents]) + xp.rowsum(gram * m[None]))
            for base, u, m in terms]


def _rebuild_open(xp, encoder: LinearEncoder, W, inv_std, baseline, proposer, hyps, done: int, top: int):
    """The open predictions ``(B, top - done, V)`` of hypotheses (word lists of equal length) from their
    words: the baseline plus every word's effect on those rows, added in word order (words that reach
    none of them need no features)."""
    opened = xp.concat([baseline[done:top][None]] * len(hyps), 0)
    for j in range(len(hyps[0]) if hyps else 0):
        rows = encoder.rows[j]
        sel = (rows >= done) & (rows < top)
        if not sel.any():
            continue
        eff = _effect(xp, encoder, W, inv_std, j, xp.asarray(proposer.features([h[: j + 1] for h in hyps])))
        opened[:, xp.index(rows[sel] - done)] += eff[:, xp.index(np.flatnonzero(sel))]
    return opened
