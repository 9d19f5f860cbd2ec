"""Group results at ROI level: per-subject ROI medians, across-subject means and tests of the ROI ordering.

Subjects of the LeBel et al. 2023 release (and most BIDS datasets) are each in their own anatomical
space, so group statistics are done on per-subject ROI summaries (the ``rois.tsv`` tables of
:func:`lmbrain.rois.roi_summary`), never on voxels:

- :func:`group_table`: each subject's median TRW and test r per ROI, the across-subject mean
  (TRW: the geometric mean, i.e. the mean of log2 TRW back-transformed, since windows live on a log
  scale; test r: the mean of Fisher's z = atanh(r) back-transformed with tanh, so that the mean and
  its interval are correlations, inside (-1, 1), whatever the spread of a few subjects) and a
  t-based (or bootstrap) confidence interval on that scale.
- :func:`sign_flip_test`: within each subject, the contrast ``mean(long ROIs) - mean(short ROIs)``
  (of log2 TRW, say); the group statistic is its mean over subjects; under the null of no
  difference each subject's contrast is symmetric about 0, so its sign is flipped at random
  (exact enumeration of all ``2**n`` sign patterns when that is small).
- :func:`rank_order_test`: the mean over subjects of the Spearman correlation between the
  subject's ROI values and a reference ordering (ties allowed, e.g. groups of ROIs); the null
  permutes the ROI labels independently within each subject (exactly when ``(m!)**n`` is small).
- :func:`ordering_test` runs both for an ordering given as groups of ROI names, shortest first.

One-sided p-values (``alternative="greater"``: long-window ROIs exceed short-window ones) count the
null statistics at least as large as the observed one; Monte Carlo p-values are
``(1 + count) / (1 + n_perm)`` (never 0, valid at every n_perm).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import LmbrainError

LOG_COLUMNS = ("median_trw_words", "median_trw_seconds")
FISHER_COLUMNS = ("median_test_r",)
SCALES = ("linear", "log2", "fisher")  # mean_ci's scales


class GroupError(LmbrainError, ValueError):
    """Per-subject tables that cannot be combined; the message names the subject or ROI."""


# ------------------------------------------------------------------------------------------
def stack_subjects(per_subject: dict) -> pd.DataFrame:
    """Long table of per-subject ROI summaries.

    Parameters
    ----------
    per_subject : dict
        ``{subject: DataFrame}``, each a :func:`lmbrain.rois.roi_summary` table (a ``roi`` column).

    Returns
    -------
    DataFrame
        ``subject`` followed by the summary columns, one row per (subject, ROI), subjects in the
        order given.
    """
    if not per_subject:
        raise GroupError("no subjects to combine")
    frames = []
    for subject, table in per_subject.items():
        if "roi" not in table.columns:
            raise GroupError(f"subject {subject}: the ROI table has no 'roi' column")
        dup = table["roi"][table["roi"].duplicated()].unique()
        if len(dup):
            raise GroupError(f"subject {subject}: ROI(s) {', '.join(map(str, dup))} appear twice")
        frames.append(table.assign(subject=str(subject)))
    out = pd.concat(frames, ignore_index=True)
    return out[["subject"] + [c for c in out.columns if c != "subject"]]


def mean_ci(values: np.ndarray, ci: float = 0.95, method: str = "t", scale: str = "linear", n_boot: int = 10000,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Across-subject mean and confidence interval per column, NaNs (missing subjects) left out.

    Parameters
    ----------
    values : float array, shape (n_subjects, n_columns)
    ci : float
        Coverage.
    method : {"t", "bootstrap"}
        ``"t"``: mean +- t_{n-1} * sd / sqrt(n); ``"bootstrap"``: percentile interval of the mean over
        subjects resampled with replacement (seeded).
    scale : {"linear", "log2", "fisher"}
        Where the mean and interval are taken. ``"linear"``: on the values. ``"log2"``: on log2
        values, then back-transformed (a geometric mean and its interval; values <= 0 count as
        missing). ``"fisher"``: the values are correlations; average Fisher's ``z = atanh(r)`` and
        back-transform with ``tanh`` (the mean and both ends of the interval then lie in (-1, 1)).
        A correlation of exactly +-1 is taken as +-(1 - 1e-12); one outside [-1, 1] raises
        :class:`GroupError`.

    Returns
    -------
    mean, low, high : float arrays, shape (n_columns,)
        NaN where no subject has a value; low = high = NaN with one subject.
    n : int array, shape (n_columns,)
        Subjects with a value.
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise GroupError(f"values must be (n_subjects, n_columns), got shape {v.shape}")
    if scale not in SCALES:
        raise GroupError(f"mean_ci: scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if scale == "log2":
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(v > 0, np.log2(np.where(v > 0, v, 1)), np.nan)
    if scale == "fisher":
        if (np.abs(v[np.isfinite(v)]) > 1).any():
            raise GroupError(f"mean_ci: correlations must lie in [-1, 1] for Fisher's z, got {np.nanmax(np.abs(v)):g}")
        v = np.arctanh(np.clip(v, -1 + 1e-12, 1 - 1e-12))
    ok = np.isfinite(v)
    n = ok.sum(axis=0)
    mean, lo, hi = (np.full(v.shape[1], np.nan) for _ in range(3))
    rng = np.random.default_rng(seed)
    for j in range(v.shape[1]):
        x = v[ok[:, j], j]
        if len(x) == 0:
            continue
        mean[j] = x.mean()
        if len(x) < 2:
            continue
        if method == "t":
            half = stats.t.ppf((1 + ci) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
            lo[j], hi[j] = mean[j] - half, mean[j] + half
        elif method == "bootstrap":
            boots = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
            lo[j], hi[j] = np.percentile(boots, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
        else:
            raise GroupError(f"method must be 't' or 'bootstrap', got {method!r}")
    if scale == "log2":
        mean, lo, hi = 2.0 ** mean, 2.0 ** lo, 2.0 ** hi
    elif scale == "fisher":
        mean, lo, hi = np.tanh(mean), np.tanh(lo), np.tanh(hi)
    return mean, lo, hi, n


def _scale(column: str, log_columns, fisher_columns) -> str:
    if column in log_columns and column in fisher_columns:
        raise GroupError(f"column {column!r} is listed both as a log2 column and as a correlation (Fisher) column")
    return "log2" if column in log_columns else "fisher" if column in fisher_columns else "linear"


def roi_matrix(per_subject: dict, column: str, rois=None) -> tuple[np.ndarray, list, list]:
    """One value per (subject, ROI) from per-subject ROI tables.

    Parameters
    ----------
    per_subject : dict
        ``{subject: roi_summary DataFrame}``.
    column : str
        e.g. ``"median_trw_words"``.
    rois : list of str, optional
        ROIs (columns of the result); default: those of every subject, in the first subject's order.
        An ROI missing from a subject's table raises :class:`GroupError` naming both.

    Returns
    -------
    values : float array, shape (n_subjects, n_rois)
        NaN where the subject's table has NaN (e.g. too few significant voxels).
    subjects : list of str
    rois : list of str
    """
    long = stack_subjects(per_subject)
    if column not in long.columns:
        raise GroupError(f"no column {column!r} in the ROI tables (columns: {', '.join(long.columns)})")
    subjects = list(dict.fromkeys(long["subject"]))
    if rois is None:
        first = long.loc[long["subject"] == subjects[0], "roi"].tolist()
        rois = [r for r in first if all((long["subject"].eq(s) & long["roi"].eq(r)).any() for s in subjects)]
    rois = list(rois)
    wide = long.pivot(index="subject", columns="roi", values=column)
    for s in subjects:
        have = set(long.loc[long["subject"] == s, "roi"])
        missing = [r for r in rois if r not in have]
        if missing:
            raise GroupError(f"subject {s}: no row for ROI(s) {', '.join(missing)} in its ROI table")
    return wide.loc[subjects, rois].to_numpy(dtype=np.float64), subjects, rois


def group_table(per_subject: dict, columns=("median_trw_words", "median_test_r"), ci: float = 0.95,
                method: str = "t", log_columns=LOG_COLUMNS, n_boot: int = 10000, seed: int = 0,
                fisher_columns=FISHER_COLUMNS) -> pd.DataFrame:
    """Per ROI: each subject's value and the across-subject mean with a confidence interval.

    Parameters
    ----------
    per_subject : dict
        ``{subject: roi_summary DataFrame}`` (subjects may be in different anatomical spaces).
    columns : sequence of str
        Summary columns to combine (each ``median_<x>`` gives ``mean_<x>``, ``<x>_low``,
        ``<x>_high`` and ``<x>_<subject>``; other names are used as they are).
    ci, method, n_boot, seed
        See :func:`mean_ci`.
    log_columns : sequence of str
        Columns averaged on a log2 scale (geometric mean); by default the TRW ones.
    fisher_columns : sequence of str
        Columns of correlations, averaged as Fisher's z (:func:`mean_ci`); by default the test r.

    Returns
    -------
    DataFrame, one row per ROI (the union over subjects, first-seen order)
        ``roi, n_subjects`` (subjects with a value of the first column), then per column
        ``mean_<x>, <x>_low, <x>_high`` and ``<x>_<subject>`` for each subject (NaN where a subject
        lacks the ROI or has too few significant voxels).
    """
    long = stack_subjects(per_subject)
    subjects = list(dict.fromkeys(long["subject"]))
    rois = list(dict.fromkeys(long["roi"]))
    out = pd.DataFrame({"roi": rois})
    for k, col in enumerate(columns):
        if col not in long.columns:
            raise GroupError(f"no column {col!r} in the ROI tables (columns: {', '.join(long.columns)})")
        wide = long.pivot(index="subject", columns="roi", values=col).reindex(index=subjects, columns=rois)
        vals = wide.to_numpy(dtype=np.float64)
        mean, lo, hi, n = mean_ci(vals, ci, method, _scale(col, log_columns, fisher_columns), n_boot, seed)
        x = col[len("median_"):] if col.startswith("median_") else col
        if k == 0:
            out["n_subjects"] = n
        out[f"mean_{x}"], out[f"{x}_low"], out[f"{x}_high"] = mean, lo, hi
        for i, s in enumerate(subjects):
            out[f"{x}_{s}"] = vals[i]
    return out


# ------------------------------------------------------------------------------------------
@dataclass
class OrderingResult:
    """Outcome of a test across subjects.

    Attributes
    ----------
    test : str
    statistic : float
        Observed group statistic.
    p_value : float
    n_subjects : int
    n_permutations : int
        Null statistics the p-value counts (all ``2**n`` or ``(m!)**n`` when exact).
    exact : bool
    alternative : str
    per_subject : float array, shape (n_subjects,)
        Each subject's contrast or Spearman correlation.
    """

    test: str
    statistic: float
    p_value: float
    n_subjects: int
    n_permutations: int
    exact: bool
    alternative: str
    per_subject: np.ndarray = field(repr=False)

    def as_dict(self) -> dict:
        return {"test": self.test, "statistic": self.statistic, "p_value": self.p_value,
                "n_subjects": self.n_subjects, "n_permutations": self.n_permutations, "exact": self.exact,
                "alternative": self.alternative}


def _pvalue(null: np.ndarray, observed: float, alternative: str, exact: bool) -> float:
    tol = 1e-9 * max(1.0, abs(observed))
    if alternative == "greater":
        count = int(np.sum(null >= observed - tol))
    elif alternative == "less":
        count = int(np.sum(null <= observed + tol))
    elif alternative == "two-sided":
        count = int(np.sum(np.abs(null) >= abs(observed) - tol))
    else:
        raise GroupError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    return count / len(null) if exact else (1 + count) / (1 + len(null))


def _complete(values: np.ndarray, what: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise GroupError(f"{what}: values must be (n_subjects, n_rois), got shape {v.shape}")
    bad = ~np.isfinite(v)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise GroupError(f"{what}: missing (NaN) values at (subject, ROI) index pairs "
                         f"{list(zip(rows.tolist(), cols.tolist()))[:10]}; leave those subjects or ROIs out")
    if v.shape[0] < 2:
        raise GroupError(f"{what}: needs at least 2 subjects, got {v.shape[0]}")
    return v


def sign_flip_test(values, long, short, n_perm: int = 10000, seed: int = 0, alternative: str = "greater",
                   max_exact: int = 2 ** 16) -> OrderingResult:
    """Sign-flip test across subjects that ``long`` ROIs exceed ``short`` ones.

    Parameters
    ----------
    values : float array, shape (n_subjects, n_rois)
        One value per subject and ROI (e.g. log2 of the ROI's median TRW); no NaN.
    long, short : sequence of int
        Column indices of the two ROI sets (disjoint, non-empty).
    n_perm : int
        Random sign patterns when not exact.
    seed : int
    alternative : {"greater", "less", "two-sided"}
    max_exact : int
        Enumerate all ``2**n_subjects`` sign patterns when that is at most this.

    Returns
    -------
    OrderingResult
        statistic: mean over subjects of ``d_s = mean(values[s, long]) - mean(values[s, short])``;
        per_subject: ``d_s``.
    """
    long, short = [int(i) for i in long], [int(i) for i in short]
    if not long or not short or set(long) & set(short):
        raise GroupError(f"sign-flip test: the long {long} and short {short} ROI sets must be non-empty and disjoint")
    v = _complete(np.asarray(values, dtype=np.float64)[:, long + short], "sign-flip test")
    k = len(long)
    d = v[:, :k].mean(axis=1) - v[:, k:].mean(axis=1)
    n = len(d)
    obs = float(d.mean())
    exact = 2 ** n <= max_exact
    if exact:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1)
    else:
        signs = np.random.default_rng(seed).choice(np.array([-1, 1]), size=(n_perm, n))
    null = signs @ d / n
    return OrderingResult("sign-flip contrast", obs, _pvalue(null, obs, alternative, exact), n, len(null), exact,
                      alternative, d)


def _centred_ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    r = rankdata(x, axis=-1)
    return r - r.mean(axis=-1, keepdims=True)


def rank_order_test(values, reference, n_perm: int = 10000, seed: int = 0, alternative: str = "greater",
                    max_exact: int = 200000) -> OrderingResult:
    """Permutation test of the mean within-subject Spearman correlation with a reference ordering.

    Parameters
    ----------
    values : float array, shape (n_subjects, n_rois)
        No NaN.
    reference : float array, shape (n_rois,)
        Expected order (larger = longer window); ties allowed (groups of ROIs).
    n_perm : int
        Random within-subject permutations when not exact.
    seed : int
    alternative : {"greater", "less", "two-sided"}
    max_exact : int
        Enumerate all ``(n_rois!)**n_subjects`` label permutations when that is at most this.

    Returns
    -------
    OrderingResult
        statistic: mean Spearman rho (average ranks for ties; a subject whose values are all equal
        has rho 0); per_subject: each subject's rho.
    """
    v = _complete(values, "rank-order test")
    ref = np.asarray(reference, dtype=np.float64)
    n, m = v.shape
    if ref.shape != (m,):
        raise GroupError(f"rank-order test: reference must have one value per ROI ({m}), got shape {ref.shape}")
    if m < 2 or np.ptp(ref) == 0:
        raise GroupError("rank-order test: the reference must order at least two ROIs differently")
    r = _centred_ranks(ref)
    r = r / np.linalg.norm(r)
    q = _centred_ranks(v)  # (n, m)
    norm = np.linalg.norm(q, axis=1)
    q = np.divide(q, norm[:, None], out=np.zeros_like(q), where=norm[:, None] > 0)
    rho = q @ r
    obs = float(rho.mean())
    exact = math.factorial(m) ** n <= max_exact
    if exact:
        perms = np.array(list(itertools.permutations(range(m))))  # (m!, m)
        per = q[:, perms] @ r  # (n, m!): each subject's rho under each relabelling
        null = np.zeros(1)
        for s in range(n):  # every combination of one relabelling per subject
            null = (null[:, None] + per[s][None, :]).ravel()
        null = null / n
    else:
        rng = np.random.default_rng(seed)
        null = np.empty(n_perm)
        for b0 in range(0, n_perm, 1000):
            b = min(1000, n_perm - b0)
            idx = rng.permuted(np.broadcast_to(np.arange(m), (b, n, m)), axis=2)
            null[b0: b0 + b] = (np.take_along_axis(np.broadcast_to(q, (b, n, m)), idx, axis=2) @ r).mean(axis=1)
    return OrderingResult("rank order (mean Spearman)", obs, _pvalue(null, obs, alternative, exact), n, len(null),
                      exact, alternative, rho)


def ordering_test(values, rois, order, n_perm: int = 10000, seed: int = 0, alternative: str = "greater",
                  subjects=None) -> pd.DataFrame:
    """Test that ROIs are ordered as expected across subjects (e.g. by TRW).

    Parameters
    ----------
    values : float array, shape (n_subjects, n_rois)
        e.g. log2 median TRW (:func:`roi_matrix` then ``np.log2``); no NaN in the ROIs of ``order``.
    rois : list of str, length n_rois
        Names of the columns.
    order : list
        The expected order, shortest window first: ROI names, or lists of names for groups of
        ROIs expected to be alike (``[["AC"], ["Broca", "sPMv"], ["IPS", "FEF"]]``). Only these ROIs
        are used.
    n_perm, seed, alternative
        See :func:`sign_flip_test` and :func:`rank_order_test`.
    subjects : list of str, optional
        Names of the rows, for messages.

    Returns
    -------
    DataFrame, two rows
        The sign-flip test of the contrast last group minus first group, and the rank-order test of
        the whole order; columns ``test, statistic, p_value, n_subjects, n_permutations, exact,
        alternative, hypothesis`` (e.g. ``IPS+FEF > AC`` and ``AC < Broca+sPMv < IPS+FEF``).
    """
    rois = [str(r) for r in rois]
    groups = [[g] if isinstance(g, str) else list(g) for g in order]
    names = [n for g in groups for n in g]
    unknown = [n for n in names if n not in rois]
    if unknown:
        raise GroupError(f"ordering: ROI(s) {', '.join(unknown)} not among {', '.join(rois)}")
    if len(set(names)) != len(names):
        raise GroupError(f"ordering: an ROI appears twice in {order}")
    if len(groups) < 2:
        raise GroupError("ordering: give at least two groups of ROIs (shortest first)")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != len(rois):
        raise GroupError(f"ordering: values must be (n_subjects, {len(rois)} ROIs), got shape {v.shape}")
    subjects = [str(s) for s in subjects] if subjects is not None else [f"#{i}" for i in range(v.shape[0])]
    idx = [rois.index(n) for n in names]
    holes = [f"{subjects[i]}: {', '.join(names[j] for j in np.flatnonzero(~np.isfinite(v[i, idx])))}"
             for i in range(v.shape[0]) if not np.isfinite(v[i, idx]).all()]
    if holes:
        raise GroupError(f"ordering: no value (NaN, e.g. too few significant voxels) for subject {'; '.join(holes)}; "
                         "leave those ROIs out of the order or those subjects out")
    ref = np.concatenate([np.full(len(g), k, dtype=float) for k, g in enumerate(groups)])
    long = [rois.index(n) for n in groups[-1]]
    short = [rois.index(n) for n in groups[0]]
    flip = sign_flip_test(v, long, short, n_perm, seed, alternative)
    rank = rank_order_test(v[:, idx], ref, n_perm, seed, alternative)
    rows = [dict(flip.as_dict(), hypothesis=f"{'+'.join(groups[-1])} > {'+'.join(groups[0])}"),
            dict(rank.as_dict(), hypothesis=" < ".join("+".join(g) for g in groups))]
    return pd.DataFrame(rows)
