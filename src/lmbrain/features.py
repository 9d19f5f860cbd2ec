"""Word-level language-model features at several context lengths.

For each story word ``i`` and context length ``k``, a word's features come from a causal forward
pass over **exactly** the last ``k`` words (the word itself included; fewer at the start of a
story; never across stories): *strict context truncation*, the honest context manipulation (a
banded attention mask is not equivalent: its receptive field grows with depth).

What is read off at the word's last token:

- ``hidden/layer_<l>``: the hidden state of layer ``l`` ``(n_words, d)``;
- ``pooled/layer_<l>`` (when asked for, ``pooled=True``): the mean over the window's ``k`` words of
  their layer-``l`` states, each word read at its last token within the same strictly truncated
  window (the first word of the window with no context, the last with all ``k``): a bag of
  contextual states whose content grows with ``k`` by construction, even for a model whose own
  states stop changing after a few words;
- for attention models, per layer ``l >= 1`` and head: ``attention/layer_<l>/heads`` the head's
  attention output before the output projection (Kumar et al.'s "transformations",
  ``(n_words, n_heads, d_head)``), ``attention/layer_<l>/entropy`` the entropy (nats) of the
  head's attention distribution over the window's tokens, and ``attention/layer_<l>/distance``
  the mean distance in words from the word to the tokens it attends to (the share on the BOS token
  is left out and the rest renormalised; distance 0 = the word's own tokens).

**The fast path is exact.** A causal pass over the window that *starts* at word ``s`` yields, at
the last token of its ``j``-th word, the feature of word ``s + j`` with context ``j + 1``. Word
``i`` at context ``k`` needs the window starting at ``max(0, i - k + 1)``, so one pass per start
word, ``max(k)`` words long, serves every ``k`` at once: ``n_words * max(k)`` tokens instead of
``n_words * sum(k)``, in batches of equal-length windows (right padding cannot change a causal
model's earlier positions). :func:`reference_features` is the deliberately simple one-window,
one-pass version the tests compare it with.

Output: one HDF5 file per (model, story, k) (see :func:`write_story_features`), chunked by word so
a layer or a range of words is read without loading the rest (:func:`read_features`).
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch

from . import __version__
from .featurefile import FeatureError, feature_info, read_features  # noqa: F401 (their home before)
from .io import atomic_path
from .models import LanguageModel, ModelError, check_context_lengths, resolve_layers

log = logging.getLogger(__name__)

CONTEXT_METHOD = ("strict truncation: each word's features come from a causal pass over exactly its last k "
                  "words (fewer at the start of a story), never across story boundaries")




class WindowCache:
    """The read-offs of the passes already run, by the tokens of their window, for reuse by a later text.

    A causal pass's read-offs depend on its window's tokens alone, so a later text (a scrambled version
    of a story) whose window holds the same tokens takes them from here instead of running the model
    again. Pass one cache to :func:`iter_features` (or :func:`extract_in_memory`) for every text read by
    one model with the same settings (context lengths, layers, attention, pooled, precision, state
    context): the settings are part of each entry's key, so a call with other settings never reads
    another's entries. Only the passes whose window starts at a story's second word or later are
    kept (the first window serves every word near the story start). ``record``: whether calls add
    their passes (set it false to keep the memory to one text's passes while later texts read them).
    ``hits`` and ``misses`` count the passes found and run while the cache was given.
    """

    def __init__(self, record: bool = True):
        self.record = record
        self.hits = 0
        self.misses = 0
        self._rows: dict = {}

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key):
        return self._rows.get(key)

    def add(self, key, rows: dict) -> None:
        if self.record:
            self._rows[key] = rows


def _windows(lm: LanguageModel, word_ids: list[list[int]], starts, length: int):
    """Token batch ``(B, T)`` for windows of ``length`` words at ``starts``; last-token index of each word."""
    prefix = list(lm.prefix)
    seqs, last = [], []
    n = len(word_ids)
    for s in starts:
        toks = list(prefix)
        ends = []
        for w in word_ids[s: min(s + length, n)]:
            toks.extend(w)
            ends.append(len(toks) - 1)
        seqs.append(toks)
        last.append(ends)
    T = max(len(t) for t in seqs)
    batch = torch.zeros((len(seqs), T), dtype=torch.long)
    for b, t in enumerate(seqs):
        batch[b, : len(t)] = torch.as_tensor(t)
    return batch, last


def _token_words(word_ids: list[list[int]], start: int, length: int, n_prefix: int, T: int) -> torch.Tensor:
    """Window-relative word index of each token (prefix tokens -1, padding -2)."""
    idx = [-1] * n_prefix
    for j, w in enumerate(word_ids[start: start + length]):
        idx.extend([j] * len(w))
    idx.extend([-2] * (T - len(idx)))
    return torch.as_tensor(idx[:T])


def attention_stats(probs: torch.Tensor, token_word: torch.Tensor, query_word: torch.Tensor):
    """Entropy (nats) and mean word distance of attention rows.

    probs: ``(B, H, Q, T)`` attention of Q query tokens over T key tokens; token_word: ``(B, T)``
    window word index of each key token (-1 prefix/BOS, -2 padding); query_word: ``(B, Q)`` window
    word index of each query. Returns two ``(B, Q, H)`` arrays. The distance leaves out the prefix
    (BOS) share and renormalises over the window's words.
    """
    p = probs if probs.dtype == torch.float64 else probs.float()
    token_word = token_word.to(p.device)
    query_word = query_word.to(p.device)
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)  # (B, H, Q)
    is_word = (token_word >= 0)[:, None, None, :]
    dist = (query_word[:, :, None] - token_word[:, None, :]).clamp_min(0).to(p.dtype)  # (B, Q, T)
    pw = p * is_word.to(p.dtype)
    mass = pw.sum(-1).clamp_min(1e-30)
    mean_dist = (pw * dist[:, None]).sum(-1) / mass
    return ent.permute(0, 2, 1), mean_dist.permute(0, 2, 1)


def _np(x: torch.Tensor) -> np.ndarray:
    """float32 numpy (float64 kept: the tests compare float64 runs)."""
    return (x if x.dtype == torch.float64 else x.float()).cpu().numpy()


def _read_off(lm, out, rows_tok, token_word, query_word, layers, attn_layers):
    """Gather features at query tokens rows_tok ``(B, Q)`` -> dict name -> (B, Q, ...) float32 numpy."""
    res = {}
    bidx = torch.arange(rows_tok.shape[0])[:, None]
    for layer in layers:
        res[f"hidden/layer_{layer}"] = _np(out.hidden[layer][bidx, rows_tok])
    for layer in attn_layers:
        res[f"attention/layer_{layer}/heads"] = _np(out.head_out[layer][bidx, rows_tok])
        probs = out.attn[layer]  # (B, H, T, T), or (B, H, Q, T) already restricted to the query rows
        rows = probs if out.attn_rows else probs[bidx, :, rows_tok].permute(0, 2, 1, 3)
        ent, dist = attention_stats(rows, token_word, query_word)
        res[f"attention/layer_{layer}/entropy"] = _np(ent)
        res[f"attention/layer_{layer}/distance"] = _np(dist)
    return res


def _pooled(out, word_ends: torch.Tensor, query_word: torch.Tensor, layers) -> dict:
    """Mean of each layer's states over the window's words ``0..q`` for every query word ``q``.

    word_ends: ``(B, L)`` token index of the last token of each of the window's words (padded by
    repeating the last one); query_word: ``(B, Q)`` window word index read off. Returns
    ``{"pooled/layer_<l>": (B, Q, d)}`` float32 numpy (float64 kept).
    """
    res = {}
    bidx = torch.arange(word_ends.shape[0])[:, None]
    top = int(query_word.max()) + 1  # words past the last query word are never needed
    word_ends = word_ends[:, :top]
    for layer in layers:
        hid = out.hidden[layer]
        dev = hid.device
        one_token = word_ends.shape[1] <= hid.shape[1] and bool(
            (word_ends == torch.arange(word_ends.shape[1])[None]).all())
        h = hid[:, :top] if one_token else hid[bidx, word_ends.to(dev)]  # (B, L, d): word-level states
        csum = h.float().cumsum(dim=1) if h.dtype != torch.float64 else h.cumsum(dim=1)
        q = query_word.to(dev)
        picked = csum[bidx.to(dev), q] / (q + 1).to(csum.dtype)[..., None]
        res[f"pooled/layer_{layer}"] = _np(picked)
    return res


def _padded_ends(last: list[list[int]]) -> torch.Tensor:
    L = max(len(e) for e in last)
    return torch.stack([torch.as_tensor(e + [e[-1]] * (L - len(e))) for e in last])


def _plan(lm: LanguageModel, layers, attention: bool):
    layers = resolve_layers(layers, lm.n_layers, f"model '{lm.name}'")
    attn_layers = [layer for layer in layers if layer >= 1] if (attention and lm.has_attention) else []
    return layers, attn_layers


@contextlib.contextmanager
def _autocast(lm: LanguageModel, precision: str):
    """GPU: bfloat16/float16 autocast when asked; float32 means float32 (cuDNN's TF32 RNN kernels off)."""
    if lm.device.type != "cuda":
        yield
        return
    if precision in ("bfloat16", "float16"):
        with torch.autocast("cuda", dtype=getattr(torch, precision)):
            yield
        return
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def iter_features(lm: LanguageModel, words: list[str], context_lengths, layers=None, attention: bool = True,
                  max_batch_tokens: int = 8192, precision: str = "float32", progress: bool = False,
                  pooled: bool = False, state_context: int | None = None, windows: WindowCache | None = None):
    """Fast exact path: yields ``(k, start_row, arrays)`` blocks covering every (word, k).

    ``pooled``: also the window means of the hidden states (``pooled/layer_<l>``, module docstring),
    from the same passes: the window that starts at word ``s`` holds every state its mean needs.

    ``state_context``: the model reads each word with at most this many words of context (None = the
    whole window). Every feature at ``k`` still depends on the last ``k`` words only: at ``k`` above
    ``state_context`` the word's own state (hidden, attention) is the one at ``state_context``, and the
    pooled feature averages the window's ``k`` states, each computed from at most ``state_context``
    words *inside the window* (the window's first words see fewer). Passes are then
    ``state_context`` words long instead of ``max(k)``, so a large model covers long windows through
    pooling at a fraction of the cost; see :func:`_capped`.

    ``arrays`` maps feature names to ``(n_rows, ...)`` float32 arrays for words
    ``start_row : start_row + n_rows``; blocks of one k arrive in word order. Memory is bounded by
    ``max_batch_tokens`` (window tokens per forward pass), never by the story length, except with
    ``state_context`` below ``max(k)``: the features at ``state_context`` of the whole story are kept
    to derive the longer contexts.

    ``windows``: a :class:`WindowCache`; passes whose window tokens it holds (with these settings) are
    read from it instead of run, and the passes run are added to it. The features are the same up to
    float32 rounding (a pass's numbers can differ in the last bits with the other windows of its batch).
    """
    ks = check_context_lengths(list(context_lengths))
    if state_context is not None:
        state_context = int(state_context)
        if state_context < 1:
            raise ModelError(f"model '{lm.name}': state_context must be a positive number of words, not {state_context}")
    if state_context is not None and state_context < max(ks) and len(words) > state_context:
        yield from _capped(lm, words, ks, layers, attention, max_batch_tokens, precision, progress, pooled,
                           state_context, windows)
        return
    yield from _exact(lm, words, ks, layers, attention, max_batch_tokens, precision, progress, pooled, windows)


def _capped(lm, words, ks, layers, attention, max_batch_tokens, precision, progress, pooled, L, windows=None):
    """:func:`iter_features` with states read from at most ``L`` words: the contexts up to ``L`` from
    ``L``-word passes, the longer ones derived from the features at ``L``.

    For word ``i`` at ``k > L`` with window start ``s = max(0, i - k + 1)`` and ``m = i - s + 1`` words:
    the state features are those at ``L``; the pooled mean is ``P_L[i]`` when ``m <= L`` (the window
    is the story's first ``m`` words), else ``(L * P_L[s + L - 1] + sum_{j = s + L .. i} H_L[j]) / m``:
    the window's first ``L`` words (states from inside the window, the mean ``P_L`` of the window that
    starts at ``s``) plus every later word's own state ``H_L`` at context ``L`` (which starts after
    ``s``).
    """
    n = len(words)
    core = sorted({k for k in ks if k < L} | {L})
    kept: dict = {}
    for k, start, arrays in _exact(lm, words, core, layers, attention, max_batch_tokens, precision, progress,
                                   pooled, windows):
        if k == L:
            for name, a in arrays.items():
                kept.setdefault(name, np.empty((n,) + a.shape[1:], dtype=a.dtype))[start: start + a.shape[0]] = a
        if k in ks:
            yield k, start, arrays
    i = np.arange(n)
    for k in (k for k in ks if k > L):
        s = np.maximum(0, i - k + 1)
        m = (i - s + 1).astype(np.float64)
        long_ = m > L
        out = {}
        for name, a in kept.items():
            if not name.startswith("pooled/"):
                out[name] = a
                continue
            H = kept["hidden/" + name.split("/", 1)[1]].astype(np.float64)
            C = np.concatenate([np.zeros((1,) + H.shape[1:]), np.cumsum(H, axis=0)])
            P = a.astype(np.float64)
            head = L * P[np.minimum(s + L - 1, n - 1)]
            tail = C[i + 1] - C[np.minimum(s + L, n)]
            mean = (head + tail) / m.reshape((-1,) + (1,) * (P.ndim - 1))
            out[name] = np.where(long_.reshape((-1,) + (1,) * (P.ndim - 1)), mean, P).astype(a.dtype)
        yield k, 0, out


def _exact(lm, words, ks, layers, attention, max_batch_tokens, precision, progress, pooled, windows=None):
    """:func:`iter_features` with every state read from its whole window (passes of ``max(k)`` words)."""
    layers, attn_layers = _plan(lm, layers, attention)
    n = len(words)
    if n == 0:
        return
    K = min(max(ks), n)
    word_ids = lm.encode(words)
    limit = lm.max_tokens()
    csum = np.concatenate([[0], np.cumsum([len(w) for w in word_ids])])
    longest = len(lm.prefix) + int((csum[K:] - csum[:-K]).max())
    if limit is not None and longest > limit:
        raise ModelError(f"model '{lm.name}': a {K}-word window takes up to {longest} tokens, more than the model's "
                         f"{limit} positions; use shorter context_lengths for this model")
    n_prefix = len(lm.prefix)
    mean_tokens = max(1.0, sum(len(w) for w in word_ids) / n)
    per_window = int(np.ceil(K * mean_tokens)) + n_prefix
    batch = max(1, int(max_batch_tokens // per_window))
    from .io import progress_bar as tqdm

    bar = tqdm(total=n, unit="word", desc=f"{lm.name} features", disable=not progress, mininterval=2.0)
    with torch.inference_mode(), _autocast(lm, precision):
        # window 0 serves every word whose context reaches the story start (i < k)
        tokens, last = _windows(lm, word_ids, [0], K)
        ends = torch.as_tensor(last[0])[None]  # (1, K)
        out = lm.run(tokens, layers, attention=bool(attn_layers), query_rows=ends)
        tw = _token_words(word_ids, 0, K, n_prefix, tokens.shape[1])[None]
        got = _read_off(lm, out, ends, tw, torch.arange(len(last[0]))[None], layers, attn_layers)
        if pooled:
            got.update(_pooled(out, ends, torch.arange(len(last[0]))[None], layers))
        for k in ks:
            m = min(k, n)
            yield k, 0, {name: a[0, :m] for name, a in got.items()}
        del out, got
        bar.update(1)
        # windows starting at s >= 1 serve word s + k - 1 at context k
        offsets = torch.as_tensor([k - 1 for k in ks])
        setting = (id(lm), tuple(ks), K, tuple(layers), tuple(attn_layers), bool(pooled), precision)

        def run(starts):
            tokens, last = _windows(lm, word_ids, starts, K)
            # query word j = k - 1 (clamped to the window; rows past the story end are dropped below)
            qword = torch.stack([offsets.clamp(max=len(e) - 1) for e in last])  # (B, Q)
            rows_tok = torch.stack([torch.as_tensor(e)[q] for e, q in zip(last, qword)])
            out = lm.run(tokens, layers, attention=bool(attn_layers), query_rows=rows_tok)
            tw = torch.stack([_token_words(word_ids, s, K, n_prefix, tokens.shape[1]) for s in starts])
            got = _read_off(lm, out, rows_tok, tw, qword, layers, attn_layers)
            if pooled:
                got.update(_pooled(out, _padded_ends(last), qword, layers))
            return got

        for s0 in range(1, n, batch):
            starts = list(range(s0, min(s0 + batch, n)))
            B = len(starts)
            got = run(starts) if windows is None else _through_cache(windows, run, starts, setting, word_ids, K)
            for qi, k in enumerate(ks):
                first = s0 + k - 1
                if first >= n:
                    continue
                m = min(B, n - first)
                yield k, first, {name: a[:m, qi] for name, a in got.items()}
            del got
            bar.update(B)
    bar.close()


def _through_cache(windows: WindowCache, run, starts: list, setting: tuple, word_ids, K: int) -> dict:
    """``run(starts)``'s read-offs ``{name: (B, Q, ...)}``, the passes ``windows`` holds read from it."""
    keys = [(setting, tuple(tuple(w) for w in word_ids[s: s + K])) for s in starts]
    cached = [windows.get(key) for key in keys]
    todo = [b for b, c in enumerate(cached) if c is None]
    windows.hits += len(starts) - len(todo)
    windows.misses += len(todo)
    if todo:
        fresh = run([starts[b] for b in todo])
        for j, b in enumerate(todo):
            cached[b] = {name: a[j].copy() if windows.record else a[j] for name, a in fresh.items()}
            windows.add(keys[b], cached[b])
    return {name: np.stack([c[name] for c in cached]) for name in cached[0]}


def reference_features(lm: LanguageModel, words: list[str], i: int, k: int, layers=None, attention: bool = True,
                       pooled: bool = False, state_context: int | None = None):
    """The simple reference: one forward pass over words ``max(0, i-k+1)..i`` read at word i's last token
    (``pooled``: also the plain mean of that pass's states at every word's last token).

    ``state_context`` (slow, for tests): the word's features at context ``min(k, state_context)``, and the
    pooled mean over the window's words ``j`` of each one's state at ``min(state_context, j - start + 1)``
    words, every one from its own pass."""
    if state_context is not None and k > state_context:
        res = reference_features(lm, words, i, int(state_context), layers, attention)
        if pooled:
            start = max(0, i - k + 1)
            states = [reference_features(lm, words, j, min(int(state_context), j - start + 1), layers, False)
                      for j in range(start, i + 1)]
            for name in [x for x in states[0] if x.startswith("hidden/")]:
                res["pooled/" + name.split("/", 1)[1]] = np.mean([st[name] for st in states], axis=0)
        return res
    layers, attn_layers = _plan(lm, layers, attention)
    start = max(0, i - k + 1)
    ids = lm.encode(words[start: i + 1])
    toks = list(lm.prefix) + [t for w in ids for t in w]
    with torch.inference_mode(), _autocast(lm, "float32"):
        out = lm.run(torch.as_tensor(toks)[None], layers, attention=bool(attn_layers),
                     query_rows=torch.as_tensor([[len(toks) - 1]]))
    tw = _token_words(ids, 0, len(ids), len(lm.prefix), len(toks))[None]
    got = _read_off(lm, out, torch.as_tensor([[len(toks) - 1]]), tw, torch.as_tensor([[i - start]]), layers,
                    attn_layers)
    res = {name: a[0, 0] for name, a in got.items()}
    if pooled:
        ends = np.cumsum([len(w) for w in ids]) + len(lm.prefix) - 1
        for layer in layers:
            res[f"pooled/layer_{layer}"] = _np(out.hidden[layer][0, torch.as_tensor(ends)].mean(dim=0))
    return res


def extract_reference(lm: LanguageModel, words: list[str], context_lengths, layers=None, attention=True,
                      pooled: bool = False, state_context: int | None = None):
    """Every (word, k) through :func:`reference_features`: ``{k: {name: (n_words, ...)}}`` (slow; for tests)."""
    ks = check_context_lengths(list(context_lengths))
    res = {}
    for k in ks:
        rows = [reference_features(lm, words, i, k, layers, attention, pooled, state_context)
                for i in range(len(words))]
        res[k] = {name: np.stack([r[name] for r in rows]) for name in rows[0]} if rows else {}
    return res


def extract_in_memory(lm: LanguageModel, words: list[str], context_lengths, layers=None, attention=True,
                      **kwargs) -> dict:
    """The fast path collected into ``{k: {name: (n_words, ...)}}`` (small inputs; files use the iterator)."""
    ks = check_context_lengths(list(context_lengths))
    parts: dict = {k: {} for k in ks}
    for k, start, arrays in iter_features(lm, words, ks, layers, attention, **kwargs):
        for name, a in arrays.items():
            parts[k].setdefault(name, []).append((start, a))
    out = {}
    for k, named in parts.items():
        out[k] = {}
        for name, pieces in named.items():
            pieces.sort(key=lambda p: p[0])
            arr = np.concatenate([a for _, a in pieces])
            if arr.shape[0] != len(words):
                raise AssertionError(f"k={k} {name}: {arr.shape[0]} rows for {len(words)} words")
            out[k][name] = arr
    return out


# ------------------------------------------------------------------------------------------
def write_story_features(lm: LanguageModel, story: str, words_df, paths: dict, layers=None, attention=True,
                         dtype: str = "float32", max_batch_tokens: int = 8192, precision: str = "float32",
                         progress: bool = False, attrs: dict | None = None, pooled: bool = False,
                         state_context: int | None = None) -> dict:
    """Extract one story at every k and write ``paths[k]`` (HDF5) atomically; returns shapes.

    ``words_df`` has columns ``word``, ``onset``, ``offset`` (and ``midpoint``). Each file holds the
    word table (``words``, ``onset``, ``offset``, ``time``), the feature arrays named as in the module
    docstring (chunked by word, float32 or float16), model-specific arrays (``timescales/layer_<l>``
    for the multi-timescale LSTM) and attributes describing the model, k and the context method.
    Nothing is kept in memory beyond one batch; on any error no file is left behind.
    """
    import h5py

    ks = check_context_lengths(sorted(paths))
    words = [str(w) for w in words_df["word"]]
    n = len(words)
    if n == 0:
        raise FeatureError(f"story {story!r} has no words")
    onset = np.asarray(words_df["onset"], dtype=np.float64)
    offset = np.asarray(words_df["offset"], dtype=np.float64)
    time = np.asarray(words_df["midpoint"], dtype=np.float64) if "midpoint" in words_df else (onset + offset) / 2
    layers_r, attn_layers = _plan(lm, layers, attention)
    store = np.dtype(dtype)
    with contextlib.ExitStack() as stack:
        files, tmps = {}, {}
        for k in ks:
            tmp = stack.enter_context(atomic_path(paths[k]))
            fh = stack.enter_context(h5py.File(tmp, "w"))
            files[k], tmps[k] = fh, tmp
            fh.create_dataset("words", data=np.array(words, dtype=object), dtype=h5py.string_dtype())
            fh.create_dataset("onset", data=onset)
            fh.create_dataset("offset", data=offset)
            fh.create_dataset("time", data=time)
            for name, arr in lm.extra_arrays().items():
                fh.create_dataset(name, data=arr)
            fh.attrs.update({
                "model": lm.name, "model_type": lm.kind, "story": story, "context_length": int(k),
                "context_method": CONTEXT_METHOD, "layers": np.asarray(layers_r, dtype=np.int64),
                "attention_layers": np.asarray(attn_layers, dtype=np.int64), "n_layers": int(lm.n_layers),
                "n_words": n, "lmbrain_version": __version__, "pooled": bool(pooled),
                "state_context": int(state_context) if state_context is not None else 0, **(attrs or {}),
            })
        filled = {k: 0 for k in ks}
        for k, start, arrays in iter_features(lm, words, ks, layers_r, attention, max_batch_tokens=max_batch_tokens,
                                              precision=precision, progress=progress, pooled=pooled,
                                              state_context=state_context):
            fh = files[k]
            m = None
            for name, a in arrays.items():
                if name not in fh:
                    chunk = (min(n, max(1, 2 ** 20 // max(1, int(np.prod(a.shape[1:])) * store.itemsize))),) + a.shape[1:]
                    fh.create_dataset(name, shape=(n,) + a.shape[1:], dtype=store, chunks=chunk)
                fh[name][start: start + a.shape[0]] = a.astype(store, copy=False)
                m = a.shape[0]
            filled[k] += m or 0
        for k in ks:
            if filled[k] != n:
                raise AssertionError(f"{paths[k]}: wrote {filled[k]} of {n} rows")
        shapes: dict = {}
        files[ks[0]].visititems(lambda name, obj: shapes.__setitem__(name, obj.shape)
                                if isinstance(obj, h5py.Dataset) else None)
    return shapes
