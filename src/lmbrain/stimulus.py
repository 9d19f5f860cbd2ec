"""The stimulus side: word timings from TextGrids, TR time axes, and word -> TR resampling.

Conventions follow the LeBel et al. 2023 release (see the README's "Conventions" section):

- The released code simulates ``respdict[story] - 5`` stimulus TRs whose centres sit at
  ``-4.5 * TR, -3.5 * TR, ...`` seconds from audio onset (-9, -7, -5, ... s for TR = 2 s) and
  keeps stimulus rows ``[10:-5]``, which line up with the response rows of the ``.hf5`` files.
  Response row ``i`` therefore sits at ``t = TR * i + 5.5 * TR`` (``2 i + 11`` s for TR = 2 s).
- Words are placed at their interval midpoint.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd

from . import LmbrainError, LmbrainWarning
from . import textgrid as _textgrid

#: Stimulus rows dropped at the start and end of each story to align with the responses.
TRIM_START = 10
TRIM_END = 5
#: Stimulus TRs simulated per story = respdict[story] - SIM_SHORTFALL.
SIM_SHORTFALL = 5
#: Offset (in TRs) of the first simulated stimulus TR relative to audio onset.
FIRST_TR_OFFSET = -4.5


def read_textgrid(path: str | os.PathLike, tier: int | str | None = None,
                  non_words: Iterable[str] = _textgrid.NON_WORDS) -> pd.DataFrame:
    """Words of a Praat TextGrid (long, short or chronological text format; UTF-8 or UTF-16).

    The word tier is the one named ``word``/``words`` when there is one, else taken by position
    (the second tier when there are two or more, as in the LeBel et al. files where tier 1 holds
    phones); non-word tokens (``sp``, ``{LG}``, ``sentence_start``, ...: ``non_words``) are dropped
    and words are lower-cased. See :func:`lmbrain.textgrid.read_words`, which this calls, for the
    parameters, the errors and the warnings.

    Returns
    -------
    pandas.DataFrame
        Columns ``word`` (str), ``onset``, ``offset``, ``midpoint`` (float64, seconds), time-ordered.
    """
    return _textgrid.read_words(path, tier=tier, non_words=non_words)


def lebel_stimulus_times(n_respdict: int, tr: float = 2.0) -> np.ndarray:
    """Centres (s) of the simulated stimulus TRs of a story with ``respdict[story] = n_respdict``."""
    n_sim = int(n_respdict) - SIM_SHORTFALL
    if n_sim <= TRIM_START + TRIM_END:
        raise LmbrainError(
            f"respdict value {n_respdict} is too small: at least {SIM_SHORTFALL + TRIM_START + TRIM_END + 1} TRs are needed"
        )
    return tr * (np.arange(n_sim, dtype=np.float64) + FIRST_TR_OFFSET)


def lebel_response_times(n_respdict: int, tr: float = 2.0) -> np.ndarray:
    """Times (s from audio onset) of the ``n_respdict - 20`` response rows of a story."""
    return lebel_stimulus_times(n_respdict, tr)[TRIM_START:-TRIM_END]


def lanczos_kernel(x: np.ndarray, window: int = 3) -> np.ndarray:
    """Lanczos kernel ``L(x) = w sin(pi x) sin(pi x / w) / (pi^2 x^2)``, ``L(0) = 1``, 0 beyond ``|x| > w``."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    inside = np.abs(x) <= window
    xi = x[inside]
    with np.errstate(divide="ignore", invalid="ignore"):
        val = window * np.sin(np.pi * xi) * np.sin(np.pi * xi / window) / (np.pi**2 * xi**2)
    val[xi == 0] = 1.0
    out[inside] = val
    return out


def lanczos_matrix(tr_times: np.ndarray, word_times: np.ndarray, window: int = 3, cutoff_mult: float = 1.0) -> np.ndarray:
    """Resampling matrix ``L`` (n_trs, n_words) such that ``L @ word_features`` gives TR features.

    ``cutoff = cutoff_mult / mean(diff(tr_times))`` (0.5 for TR = 2 s, i.e. a 0.25 Hz low-pass).
    The product is a sum over words, not a mean, so it also tracks the word rate.
    """
    tr_times = np.asarray(tr_times, dtype=np.float64)
    word_times = np.asarray(word_times, dtype=np.float64)
    if tr_times.ndim != 1 or tr_times.size < 2:
        raise LmbrainError("tr_times must be a 1-D array of at least two times")
    cutoff = cutoff_mult / np.mean(np.diff(tr_times))
    return lanczos_kernel((tr_times[:, None] - word_times[None, :]) * cutoff, window)


def downsample(values: np.ndarray, word_times: np.ndarray, tr_times: np.ndarray, window: int = 3,
               cutoff_mult: float = 1.0) -> np.ndarray:
    """Word-level values (n_words, d) -> TR-level (n_trs, d) by Lanczos interpolation (a sum over words).

    Computing at the response-aligned ``tr_times`` (:func:`lebel_response_times`) gives exactly the
    rows the released code keeps after trimming ``[10:-5]``, because the kernel is evaluated per TR.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[0] != len(word_times):
        raise LmbrainError(f"{values.shape[0]} rows of word features for {len(word_times)} word times")
    return lanczos_matrix(tr_times, word_times, window, cutoff_mult) @ values


def read_phones(path: str | os.PathLike, tier: int | str | None = None, include_silence: bool = False) -> pd.DataFrame:
    """Phone intervals of a TextGrid: columns ``phone``, ``onset``, ``offset``, ``midpoint`` (s), in time order.

    Parameters
    ----------
    path : str or os.PathLike
        A TextGrid in any format :func:`lmbrain.textgrid.read` accepts.
    tier : int, str or None
        The phone tier. ``None``: the tier named ``phone``/``phones``/``phoneme``/``phonemes`` (any
        case) when exactly one is, else the first tier (index 0, as in the LeBel et al. files). An
        int picks a 0-based position, a str a tier name.
    include_silence : bool
        ``False`` (lmbrain's default): silences and non-speech labels (``sp``, ``sil``, ``{LG}``,
        empty, ...: :data:`lmbrain.textgrid.SILENCES`) are dropped. ``True``: every interval of the
        tier is kept, silences and empty ones included, as the Huth lab's reference code counts
        them for its phoneme rate.

    Returns
    -------
    pandas.DataFrame
        ``phone`` (the label stripped of surrounding whitespace, case kept), ``onset``, ``offset``
        and ``midpoint`` (float64).

    Raises
    ------
    lmbrain.textgrid.TextGridError
        The file is malformed (see :func:`lmbrain.textgrid.read`), the tier does not exist or is a
        point tier, several tiers are named like a phone tier, or the tier holds no phone.

    Warns
    -----
    LmbrainWarning
        With ``tier=None``: another interval tier has at least 1.5 times as many labelled
        intervals as the one chosen (a phone tier has more intervals than its word tier, so the
        tiers are probably swapped).
    """
    name = os.fspath(path)
    grid = _textgrid.read(path, strict=False)
    idx, t = _textgrid._select_tier(grid, tier, name, _textgrid.PHONE_TIER_NAMES, default=0)
    if t.kind != "IntervalTier":
        raise _textgrid.TextGridError(f"{name}: tier {idx} ({t.name!r}) is a point tier (TextTier); phones need an "
                                      f"interval tier; {_textgrid._tier_list(grid)}")
    _textgrid.check_tier_times(grid, idx, name)
    if tier is None:
        n = len(_textgrid._speech_labels(t))
        more = [(j, m) for j, o in enumerate(grid.tiers)
                if j != idx and o.kind == "IntervalTier" and (m := len(_textgrid._speech_labels(o))) >= 1.5 * max(n, 1)]
        if more:
            j, m = max(more, key=lambda jm: jm[1])
            warnings.warn(f"{name}: the phone tier chosen, {idx} ({t.name!r}), has {n} labelled intervals but tier {j} "
                          f"({grid.tiers[j].name!r}) has {m}; a phone tier has more intervals than its word tier: are the "
                          "tiers swapped? Pass tier= (a position or a name) to choose", LmbrainWarning, stacklevel=2)
    rows = [(it.text.strip(), it.xmin, it.xmax) for it in t.items
            if include_silence or _textgrid._label_key(it.text) not in _textgrid.SILENCES]
    if not rows:
        raise _textgrid.TextGridError(f"{name}: tier {idx} ({t.name!r}) holds no phones (only silences and non-speech "
                                      f"labels); is it the phone tier? {_textgrid._tier_list(grid)}")
    out = pd.DataFrame(rows, columns=["phone", "onset", "offset"]).astype({"onset": "float64", "offset": "float64"})
    out["midpoint"] = (out["onset"] + out["offset"]) / 2
    return out


def _column(table: pd.DataFrame, col: str, what: str) -> np.ndarray:
    if not isinstance(table, pd.DataFrame) or col not in table.columns:
        found = ", ".join(map(str, table.columns)) if isinstance(table, pd.DataFrame) else type(table).__name__
        raise LmbrainError(f"{what} needs a table with a {col!r} column, as read_textgrid/read_phones give (got {found})")
    return table[col].to_numpy(dtype=np.float64)


def word_rate(words: pd.DataFrame, tr_times: np.ndarray) -> np.ndarray:
    """Nuisance regressor (n_trs, 1): Lanczos-downsampled count of words (one per word at its midpoint).

    Counts every row of ``words``; which labels are words is decided when reading them
    (``read_textgrid(..., non_words=NON_WORDS_HUTH)`` for the Huth lab's 7-label set).
    """
    return downsample(np.ones(len(words)), _column(words, "midpoint", "word_rate"), tr_times)


def phoneme_rate(phones: pd.DataFrame, tr_times: np.ndarray) -> np.ndarray:
    """Nuisance regressor (n_trs, 1): Lanczos-downsampled count of phones (see :func:`read_phones`).

    Counts every row of ``phones``: ``read_phones(path)`` drops silences (lmbrain's default);
    ``read_phones(path, include_silence=True)`` keeps them, as the Huth lab's reference code does.
    """
    return downsample(np.ones(len(phones)), _column(phones, "midpoint", "phoneme_rate"), tr_times)


def silence(words: pd.DataFrame, tr_times: np.ndarray) -> np.ndarray:
    """Nuisance regressor (n_trs, 1): fraction of each TR's window ``[t - TR/2, t + TR/2)`` with no word sounding."""
    tr_times = np.asarray(tr_times, dtype=np.float64)
    if tr_times.ndim != 1 or tr_times.size < 2:
        raise LmbrainError("tr_times must be a 1-D array of at least two times")
    tr = np.mean(np.diff(tr_times))
    lo, hi = tr_times - tr / 2, tr_times + tr / 2
    on = _column(words, "onset", "silence")[None, :]
    off = _column(words, "offset", "silence")[None, :]
    covered = np.clip(np.minimum(off, hi[:, None]) - np.maximum(on, lo[:, None]), 0, None).sum(axis=1)
    return (1 - np.clip(covered / tr, 0, 1))[:, None]


def tr_design(tr_features: np.ndarray, delays=(1, 2, 3, 4), mean: np.ndarray | None = None,
              std: np.ndarray | None = None, dtype=np.float32) -> np.ndarray:
    """One story's design matrix: z-score each column (per story, or with given training ``mean``/``std``),
    then FIR delays. (n_trs, d) -> (n_trs, d * len(delays)).
    """
    x = np.asarray(tr_features, dtype=np.float64)
    if mean is None:
        z = zscore(x)
    else:
        std = np.asarray(std, dtype=np.float64)
        z = np.where(std > 0, (x - mean) / np.where(std > 0, std, 1), 0.0)
    return make_delayed(z, delays).astype(dtype)


def make_delayed(x: np.ndarray, delays=(1, 2, 3, 4)) -> np.ndarray:
    """FIR design: copies of ``x`` (n_trs, n_features) shifted down by each delay (zero-padded), hstacked.

    Returns an array of shape (n_trs, n_features * len(delays)); block ``j`` holds ``x`` delayed
    by ``delays[j]`` TRs (row ``t`` of the block is row ``t - d`` of ``x``).
    """
    x = np.asarray(x)
    n = x.shape[0]
    blocks = []
    for d in delays:
        block = np.zeros_like(x)
        if d > 0:
            block[d:] = x[: n - d] if d < n else 0
        elif d < 0:
            block[: n + d] = x[-d:] if -d < n else 0
        else:
            block[:] = x
        blocks.append(block)
    return np.hstack(blocks)


def delay_stories(blocks, delays=(1, 2, 3, 4), across_stories: bool = False) -> list[np.ndarray]:
    """FIR designs of a set of stories: ``blocks`` is a list of (n_trs_i, n_features) matrices (already
    z-scored), returned as a list of (n_trs_i, n_features * len(delays)) matrices (:func:`make_delayed`).

    ``across_stories=False`` (lmbrain's default): each story is delayed on its own, its first
    ``max(delays)`` rows zero-padded. ``True`` (the Huth lab's reference code): the stories are stacked
    in the given order and then delayed, so the first rows of each story carry the last rows of the
    story before it (and a negative delay reads the first rows of the story after it); only the first
    story of the set is zero-padded.
    """
    blocks = [np.asarray(b) for b in blocks]
    if not across_stories or len(blocks) < 2:
        return [make_delayed(b, delays) for b in blocks]
    stacked = make_delayed(np.concatenate(blocks), delays)
    bounds = np.cumsum([0] + [len(b) for b in blocks])
    return [stacked[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def zscore(x: np.ndarray, axis: int = 0, eps: float = 1e-12) -> np.ndarray:
    """Z-score along ``axis`` (statistics in float64, result in ``x``'s dtype); constant columns become 0."""
    x = np.asarray(x)
    mu = x.mean(axis=axis, keepdims=True, dtype=np.float64)
    sd = x.std(axis=axis, keepdims=True, dtype=np.float64)
    out = (x - mu) / np.where(sd > eps, sd, 1)
    out = np.where(sd > eps, out, 0)
    return out.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64, copy=False)
