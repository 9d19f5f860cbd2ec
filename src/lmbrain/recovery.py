"""Scoring recovered temporal receptive windows against a planted answer (the demo, or any simulation).

A planted-truth table (``ground_truth.tsv`` of the demo, or a file named by ``trw.truth``) has the
columns ``voxel`` and ``trw_words`` (the planted window in words), and optionally ``noise`` (1 for a
pure-noise voxel), ``snr`` (signal-to-noise ratio) and ``driver`` (text: what drives the voxel; voxels
driven by ``none`` or by a low-level regressor, :data:`LOW_LEVEL`, carry no window and are not scored).
:func:`read_truth` checks it;
:func:`planted_recovery` gives Spearman correlations of planted windows with each recovered estimate
over the voxel sets the columns allow; :func:`recovery_by_fit` gives the same correlation within bins of
the voxels' fit quality (their best CV score), to show where a model's windows hold and where they do not.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import LmbrainError
from .scrambling import SCRAMBLE_CLASSES, SCRAMBLE_LEVELS

REQUIRED = ("voxel", "trw_words")
OPTIONAL = ("noise", "snr")
LOW_LEVEL = ("none", "word_rate", "phoneme_rate", "silence")


class RecoveryError(LmbrainError, ValueError):
    """A planted-truth file that cannot be scored against."""


def read_truth(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a planted-truth table (see the module docstring); errors name the file.

    Returns the table with ``voxel`` (int), ``trw_words`` (float) and, when present, ``noise`` (bool),
    ``snr`` (float) and ``driver`` (str).
    """
    path = Path(path)
    if not path.is_file():
        raise RecoveryError(f"{path}: planted-truth file not found")
    try:
        table = pd.read_csv(path, sep="\t")
    except Exception as exc:  # noqa: BLE001 - any parse failure becomes a message naming the file
        raise RecoveryError(f"{path}: cannot read as a tab-separated table ({exc})") from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise RecoveryError(f"{path}: planted-truth table lacks column(s) {', '.join(missing)} (found: "
                            f"{', '.join(map(str, table.columns))}); it needs voxel and trw_words, and may have "
                            "noise (1 = pure-noise voxel) and snr")
    out = pd.DataFrame({"voxel": pd.to_numeric(table["voxel"], errors="coerce"),
                        "trw_words": pd.to_numeric(table["trw_words"], errors="coerce")})
    for col in OPTIONAL:
        if col in table.columns:
            out[col] = pd.to_numeric(table[col], errors="coerce")
    bad = out.isna().any(axis=1)
    if "driver" in table.columns:
        out["driver"] = table["driver"].astype(str).str.strip()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise RecoveryError(f"{path}: line {row + 2}: a value that is not a number")
    if (out["voxel"] % 1 != 0).any() or (out["voxel"] < 0).any() or out["voxel"].duplicated().any():
        raise RecoveryError(f"{path}: voxel must hold distinct non-negative integers (response columns)")
    if (out["trw_words"] <= 0).any():
        raise RecoveryError(f"{path}: trw_words must be positive (planted windows in words)")
    out["voxel"] = out["voxel"].astype(np.int64)
    if "noise" in out:
        out["noise"] = out["noise"].astype(bool)
    return out


def planted_class(windows, lengths: dict) -> np.ndarray:
    """The scrambling class a planted window should give: the finest level whose typical unit holds it.

    ``lengths``: median words per unit (:func:`lmbrain.scrambling.unit_lengths`). A window of W words survives scrambling
    at a level when W words usually fit inside one unit: ``word`` if W = 1, ``sentence`` if W is at
    most the median sentence length, ``paragraph`` likewise, else ``story``.
    """
    w = np.asarray(windows, dtype=np.float64)
    cls = np.full(w.shape, "story", dtype=object)
    for level in reversed(SCRAMBLE_LEVELS):
        cls = np.where(w <= lengths[level], level, cls)
    return cls


def scramble_confusion(windows, found, lengths: dict) -> pd.DataFrame:
    """Voxel counts of each planted window's class (:func:`planted_class`, rows) against the scrambling class
    found (columns: word, sentence, paragraph, story, then any other class a voxel has: ``none``, no weight on
    the features and so nothing to scramble). Every voxel is counted: with the four columns alone, a ``none``
    voxel dropped out of the table unseen (and pandas 4 will refuse such values)."""
    found = np.asarray(found, dtype=object)
    columns = list(SCRAMBLE_CLASSES) + sorted({str(c) for c in found} - set(SCRAMBLE_CLASSES))
    planted = pd.Categorical(planted_class(windows, lengths), categories=SCRAMBLE_CLASSES)
    return pd.crosstab(planted, pd.Categorical(found, categories=columns), rownames=["planted"],
                       colnames=["recovered"], dropna=False)


def planted_sets(truth: pd.DataFrame, table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Align ``truth`` (:func:`read_truth`) with the TRW table's voxels; the voxel sets to score over.

    Returns ``(aligned truth, {name: mask})``: ``signal voxels`` (in the truth table, not pure noise, not driven by a low-level regressor;
    every listed voxel without a ``noise`` column), ``high-SNR signal voxels`` (SNR at least the signal
    voxels' median; only with an ``snr`` column) and that set's voxels significant at their best k
    (``high-SNR significant``, or ``significant signal voxels`` without ``snr``). The last set is the
    primary one (the scatter and the confusion matrix are drawn over the set before it).
    """
    aligned = truth.set_index("voxel").reindex(table["voxel"])
    signal = aligned["trw_words"].notna().to_numpy().copy()
    if "noise" in aligned:
        signal &= ~aligned["noise"].fillna(True).astype(bool).to_numpy()
    if "driver" in aligned:
        signal &= ~aligned["driver"].isin(LOW_LEVEL).to_numpy()
    sig = table["significant"].to_numpy(dtype=bool)
    sets = {"signal voxels": signal}
    if "snr" in aligned and signal.any():
        snr = aligned["snr"].to_numpy(dtype=np.float64)
        sets["high-SNR signal voxels"] = signal & (snr >= np.median(snr[signal]))
        sets["high-SNR significant"] = sets["high-SNR signal voxels"] & sig
    else:
        sets["significant signal voxels"] = signal & sig
    return aligned, sets


def planted_recovery(truth: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of planted windows with each recovered estimate, per voxel set.

    ``truth``: a planted-truth table (:func:`read_truth`); ``table``: the TRW table (``voxel``,
    ``significant`` and the estimates). Voxel sets: :func:`planted_sets`. Estimates: ``trw_words``, ``trw_peak``, ``trw_centroid``,
    ``k_best``, ``com_words`` and, when present, ``scramble_index`` and ``timescale_words``.
    """
    truth, sets = planted_sets(truth, table)
    estimates = [c for c in ("trw_words", "trw_peak", "trw_centroid", "k_best", "com_words", "scramble_index",
                             "timescale_words")
                 if c in table]
    rows = []
    for name, m in sets.items():
        for col in estimates:
            x, y = truth["trw_words"].to_numpy()[m], table[col].to_numpy(dtype=np.float64)[m]
            ok = np.isfinite(y)
            rows.append({"voxels": name, "estimate": col, "n": int(ok.sum()), "spearman": _spearman(x[ok], y[ok])})
    return pd.DataFrame(rows)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rho of planted windows ``x`` with estimates ``y``; NaN for fewer than 3 voxels or a constant side."""
    from scipy.stats import spearmanr

    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan
    return float(spearmanr(x, y).correlation)


def recovery_by_fit(truth: pd.DataFrame, table: pd.DataFrame, estimate: str = "trw_centroid",
                    n_bins: int = 4) -> pd.DataFrame:
    """Spearman correlation of planted windows with ``estimate`` within quantile bins of fit quality.

    Fit quality is each voxel's ``cv_best`` (the cross-validated score at its best k: training stories
    only, never the truth or the test story). The voxels are those of :func:`planted_recovery`'s first
    SNR-restricted set (``high-SNR signal voxels``, or ``signal voxels`` without an ``snr`` column),
    split into ``n_bins`` bins of equal count by ``cv_best`` (bin 1 = the worst fitted).

    Returns one row per bin: ``bin``, ``n``, ``cv_best_min``, ``cv_best_median``, ``cv_best_max``,
    ``spearman`` (NaN when a bin has fewer than 3 voxels or a constant estimate).
    """
    for col in ("cv_best", estimate):
        if col not in table:
            raise RecoveryError(f"the TRW table has no {col} column: recovery by fit quality needs cv_best and the "
                                f"estimate ({', '.join(map(str, table.columns))})")
    if int(n_bins) < 1:
        raise RecoveryError(f"n_bins must be at least 1, got {n_bins}")
    aligned, sets = planted_sets(truth, table)
    m = sets.get("high-SNR signal voxels", sets["signal voxels"])
    cv = table["cv_best"].to_numpy(dtype=np.float64)
    est = table[estimate].to_numpy(dtype=np.float64)
    m = m & np.isfinite(cv) & np.isfinite(est)
    idx = np.flatnonzero(m)
    idx = idx[np.argsort(cv[idx], kind="stable")]
    rows = []
    for b, part in enumerate(np.array_split(idx, int(n_bins)), start=1):
        rows.append({"bin": b, "n": int(part.size),
                     "cv_best_min": float(cv[part].min()) if part.size else np.nan,
                     "cv_best_median": float(np.median(cv[part])) if part.size else np.nan,
                     "cv_best_max": float(cv[part].max()) if part.size else np.nan,
                     "spearman": _spearman(aligned["trw_words"].to_numpy()[part], est[part])})
    return pd.DataFrame(rows)
