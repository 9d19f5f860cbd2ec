"""Temporal receptive windows from a context sweep: how much preceding context drives each voxel.

Input: each voxel's encoding performance at context lengths ``ks`` (words): the cross-validated
score curve (used for every choice, so nothing peeks at the test story) and the test correlation
curve. Per voxel:

- ``k_best``: the context length with the highest CV score;
- ``gain``: CV score at ``k_best`` minus CV score at the shortest context (0 when context never helps);
- ``trw_words``: the robust estimate, the smallest k whose CV gain over the shortest context reaches
  ``fraction`` (default 0.9) of the voxel's maximum gain (the shortest k when there is no gain);
- ``com_words``: the log-k centre of mass of the curve's positive increments,
  ``exp(sum_j max(s_j - s_{j-1}, 0) log k_j / sum_j max(s_j - s_{j-1}, 0))`` (the shortest k when
  the curve never rises);
- ``test_gain``: the same gain on the test correlation (reported, never used to choose).

:func:`bootstrap_trw` gives an interval for ``trw_words`` computed on the test-correlation curve by
resampling blocks of test TRs (the stored test predictions of every k and the test responses).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import LmbrainError


class TRWError(LmbrainError, ValueError):
    """Curves that cannot give a temporal receptive window."""


def _check(ks, curves, name):
    ks = np.asarray(ks, dtype=np.float64)
    c = np.asarray(curves, dtype=np.float64)
    if ks.ndim != 1 or ks.size < 2 or np.any(np.diff(ks) <= 0) or ks[0] < 1:
        raise TRWError(f"context lengths must be at least two increasing values >= 1, got {ks.tolist()}")
    if c.ndim != 2 or c.shape[0] != ks.size:
        raise TRWError(f"{name} must be (n_context_lengths={ks.size}, n_voxels), got shape {c.shape}")
    return ks, c


def robust_window(ks, curves, fraction: float = 0.9) -> np.ndarray:
    """Smallest k whose gain over the shortest context reaches ``fraction`` of the maximum gain: (V,)."""
    ks, c = _check(ks, curves, "curves")
    if not 0 < fraction <= 1:
        raise TRWError(f"fraction must be in (0, 1], got {fraction}")
    c = np.nan_to_num(c, nan=-np.inf)
    gain = c - c[0]
    best = gain.max(axis=0)
    reached = gain >= fraction * best[None, :] - 1e-12
    first = np.argmax(reached, axis=0)
    return np.where(best > 0, ks[first], ks[0])


def centre_of_mass(ks, curves) -> np.ndarray:
    """Log-k centre of mass of the positive increments of each curve: (V,) in words."""
    ks, c = _check(ks, curves, "curves")
    inc = np.clip(np.diff(np.nan_to_num(c), axis=0), 0, None)  # (K-1, V), increment arriving at ks[1:]
    total = inc.sum(axis=0)
    logk = np.log(ks[1:])[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        com = np.exp((inc * logk).sum(axis=0) / total)
    return np.where(total > 0, com, ks[0])


def context_sweep(ks, cv, test_r, fraction: float = 0.9) -> pd.DataFrame:
    """Per-voxel TRW estimates from CV and test curves ``(n_k, n_voxels)``; see the module docstring."""
    ks, cv = _check(ks, cv, "cv")
    _, test_r = _check(ks, test_r, "test_r")
    if cv.shape != test_r.shape:
        raise TRWError(f"cv {cv.shape} and test_r {test_r.shape} differ in shape")
    safe = np.nan_to_num(cv, nan=-np.inf)
    ib = safe.argmax(axis=0)
    v = np.arange(cv.shape[1])
    return pd.DataFrame({
        "voxel": v,
        "k_best": ks[ib].astype(int),
        "gain": np.clip(cv[ib, v] - cv[0], 0, None),
        "trw_words": robust_window(ks, cv, fraction).astype(int),
        "com_words": centre_of_mass(ks, cv),
        "cv_best": cv[ib, v],
        "test_r_best": test_r[ib, v],
        "test_gain": test_r[ib, v] - test_r[0],
    })


def bootstrap_trw(ks, predictions, y, n_boot: int = 200, block: int = 10, fraction: float = 0.9,
                  seed: int = 0, interval=(2.5, 97.5)) -> tuple[np.ndarray, np.ndarray]:
    """Interval of the test-curve TRW estimate over block-resampled test TRs.

    predictions: ``(n_k, n_trs, n_voxels)`` test predictions at each k; y: ``(n_trs, n_voxels)``.
    Blocks of ``block`` consecutive TRs are drawn with replacement; each resample recomputes every
    voxel's correlation curve and its :func:`robust_window`. Returns ``(low, high)`` in words.
    """
    ks = np.asarray(ks, dtype=np.float64)
    P = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if P.ndim != 3 or P.shape[0] != ks.size or P.shape[1:] != y.shape:
        raise TRWError(f"predictions must be (n_k={ks.size}, TRs, voxels) matching y {y.shape}, got {P.shape}")
    # A resample is a multiset of blocks, so its sums are count-weighted sums of per-block sums: the
    # correlations of every resample come from five block-sum arrays and one matrix product, never
    # from a copy of the resampled time series. Centring first keeps the moment formulas exact enough.
    n = y.shape[0]
    P = P - P.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=0)
    starts = np.arange(0, n, block)
    lengths = np.diff(np.append(starts, n)).astype(np.float64)
    sums = {"p": np.add.reduceat(P, starts, axis=1), "pp": np.add.reduceat(P * P, starts, axis=1),
            "py": np.add.reduceat(P * y[None], starts, axis=1)}  # (n_k, blocks, voxels)
    sy, syy = np.add.reduceat(y, starts, axis=0), np.add.reduceat(y * y, starts, axis=0)  # (blocks, voxels)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.choice(starts, size=len(starts), replace=True) // block,
                                   minlength=len(starts)) for _ in range(n_boot)]).astype(np.float64)
    est = np.empty((n_boot, y.shape[1]))
    for b0 in range(0, n_boot, 16):
        c = counts[b0: b0 + 16]
        N = (c @ lengths)[:, None, None]
        sp, spp, spy = (np.tensordot(c, sums[k], axes=([1], [1])) for k in ("p", "pp", "py"))  # (boots, n_k, voxels)
        ty, tyy = (c @ sy)[:, None], (c @ syy)[:, None]
        cov = spy - sp * ty / N
        den = np.sqrt(np.clip(spp - sp * sp / N, 0, None) * np.clip(tyy - ty * ty / N, 0, None))
        r = np.divide(cov, den, out=np.zeros_like(den), where=den > 0)
        for i in range(len(c)):
            est[b0 + i] = robust_window(ks, r[i], fraction)
    lo, hi = np.percentile(est, interval, axis=0)
    return lo, hi


def mtlstm_timescales(coef: np.ndarray, timescales: np.ndarray, n_delays: int, n_null: int = 1000,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Voxel timescales from multi-timescale LSTM encoding weights (Jain et al. 2020).

    coef: ``(n_delays * n_units, n_voxels)`` ridge weights (delay blocks stacked); timescales:
    ``(n_units,)`` unit timescales in words. A voxel's timescale is ``exp`` of the mean of ``log T``
    weighted by its absolute weights summed over delays (units with T = 0 or infinite T, the ends of
    the inverse-gamma recipe, are left out). The null shuffles the timescale labels across units; returns ``(timescale_words, p)`` with a two-sided p-value of the log timescale
    against that null.
    """
    coef = np.asarray(coef, dtype=np.float64)
    t = np.asarray(timescales, dtype=np.float64)
    n_units = t.size
    if coef.shape[0] != n_delays * n_units:
        raise TRWError(f"weights have {coef.shape[0]} rows, expected {n_delays} delays x {n_units} units")
    w = np.abs(coef.reshape(n_delays, n_units, -1)).sum(axis=0)  # (units, voxels)
    # the recipe's last quantile, invgamma.isf(1) = 0, is a unit that forgets every word: no log timescale
    ok = np.isfinite(t) & (t > 0)
    w, logt = w[ok], np.log(t[ok])
    total = w.sum(axis=0)
    total = np.where(total > 0, total, 1.0)
    obs = (w * logt[:, None]).sum(axis=0) / total
    rng = np.random.default_rng(seed)
    null = np.stack([(w * rng.permutation(logt)[:, None]).sum(axis=0) / total for _ in range(n_null)])
    centre = null.mean(axis=0)
    extreme = (np.abs(null - centre) >= np.abs(obs - centre)[None] - 1e-12).sum(axis=0)
    return np.exp(obs), (1 + extreme) / (1 + n_null)


def read_sweep(encoding_dir, ks=None):
    """``(ks, cv, test_r, q)`` curves ``(n_k, n_voxels)`` from an encoding folder's ``k<k>/voxels.tsv``."""
    from pathlib import Path

    encoding_dir = Path(encoding_dir)
    if ks is None:
        ks = sorted(int(p.name[1:]) for p in encoding_dir.glob("k*") if p.name[1:].isdigit())
    if len(ks) < 2:
        raise TRWError(f"{encoding_dir}: a context sweep needs at least two k<k>/ folders (found {len(ks)})")
    cols = {"cv_score": [], "test_r": [], "q": []}
    for k in ks:
        path = encoding_dir / f"k{k}" / "voxels.tsv"
        if not path.exists():
            raise TRWError(f"{path}: missing (run the encoding_model rule)")
        t = pd.read_csv(path, sep="\t")
        for c in cols:
            cols[c].append(t[c].to_numpy(dtype=np.float64))
    return np.asarray(ks), np.stack(cols["cv_score"]), np.stack(cols["test_r"]), np.stack(cols["q"])


def estimate_trw(config: dict, subject: str, model: str, encoding_dir, out_dir, features_root=None,
                 models_dir=None, feature: str | None = None, progress: bool = True) -> pd.DataFrame:
    """What the ``trw`` rule does: per-voxel TRW estimates, maps and figures for one subject and model.

    Reads the context sweep of ``encoding_dir`` (``k<k>/voxels.tsv`` and ``predictions.h5``), the test
    responses, and for ``mtlstm`` models the ridge weights and unit timescales. Writes ``voxels.tsv``,
    NIfTI maps of each estimate, and figures; on the demo (a ``ground_truth.tsv`` in the dataset) also
    ``recovery.tsv`` and a planted-versus-recovered figure.
    """
    import logging
    from pathlib import Path

    import h5py

    from .datasets import open_dataset
    from .io import atomic_path
    from .modelspec import check_models

    log = logging.getLogger(__name__)
    tc = config.get("trw", {})
    fdr = config.get("encoding", {}).get("fdr", 0.05)
    encoding_dir, out_dir = Path(encoding_dir), Path(out_dir)
    feature = feature or encoding_dir.name  # the workflow names encoding folders by feature
    spec = check_models(config).get(model)
    if spec is None:
        raise TRWError(f"no model {model!r} in the config")
    ks, cv, test_r, q = read_sweep(encoding_dir)
    table = context_sweep(ks, cv, test_r, tc.get("fraction", 0.9))
    ib = np.nan_to_num(cv, nan=-np.inf).argmax(axis=0)
    v = np.arange(cv.shape[1])
    table["q_best"] = q[ib, v]
    table["significant"] = table["q_best"] < fdr
    # bootstrap interval of the test-curve estimate
    ds = open_dataset(config["dataset"]["layout"], config["dataset"]["root"], tr=config.get("tr", 2.0))
    _, test = ds.split(subject, config["stories"]["train"], config["stories"]["test"])
    y = np.concatenate([ds.responses(subject, s) for s in test]).astype(np.float32)
    lo = np.empty(y.shape[1])
    hi = np.empty(y.shape[1])
    chunk = max(1, int(2e8 // (len(ks) * y.shape[0] * 4)))
    files = [h5py.File(encoding_dir / f"k{k}" / "predictions.h5", "r") for k in ks]
    try:
        for v0 in range(0, y.shape[1], chunk):
            sl = slice(v0, v0 + chunk)
            P = np.stack([f["pred"][:, sl].astype(np.float32) for f in files])
            lo[sl], hi[sl] = bootstrap_trw(ks, P, y[:, sl], n_boot=tc.get("n_boot", 200), block=tc.get("block", 10),
                                           fraction=tc.get("fraction", 0.9), seed=int(config.get("seed", 0)))
    finally:
        for f in files:
            f.close()
    table.insert(2, "trw_low", lo)
    table.insert(3, "trw_high", hi)
    # multi-timescale LSTM: weight-averaged unit timescales at the longest context
    if spec["type"] == "mtlstm":
        with h5py.File(encoding_dir / f"k{ks[-1]}" / "weights.h5", "r") as fh:
            coef = fh["coef"][()].astype(np.float64)
            n_delays = len(fh["delays"][()])
        layer = int(feature.split("-L")[-1]) if "-L" in feature else None
        story_dir = Path(features_root or "results/features") / model / test[0]
        with h5py.File(story_dir / f"k{ks[-1]}.h5", "r") as fh:
            names = sorted(n for n in fh.get("timescales", {}))
            name = f"layer_{layer}" if layer is not None and f"layer_{layer}" in names else (names[-1] if names else None)
            if name is None or layer == 0:
                raise TRWError(f"{story_dir}: no unit timescales for the fitted layer")
            timescales = fh["timescales"][name][()]
        table["timescale_words"], table["timescale_p"] = mtlstm_timescales(coef, timescales, n_delays,
                                                                           seed=int(config.get("seed", 0)))
    if tc.get("scramble", True):
        if models_dir is None:
            raise TRWError("in-silico scrambling needs the model folder (models_dir)")
        extra = scramble_predictions(config, ds, model, Path(models_dir) / model, encoding_dir, feature, ks,
                                     table["k_best"].to_numpy(), test, progress=progress)
        for col in extra.columns:
            table[col] = extra[col].to_numpy()
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "voxels.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    log.info("%s %s: TRW from %s, %d of %d voxels significant at their best k; median TRW %.0f words there",
             subject, model, feature, int(table["significant"].sum()), len(table),
             float(table.loc[table["significant"], "trw_words"].median()) if table["significant"].any() else float("nan"))
    _trw_outputs(config, ds, subject, model, feature, ks, cv, test_r, table, out_dir, test)
    return table


def unit_lengths(stories_words, sentence_gap: float = 0.3, paragraph_gap: float = 0.7) -> dict:
    """Median number of words per scrambling unit (word, sentence, paragraph) over the given stories."""
    out = {}
    for level in SCRAMBLE_LEVELS:
        sizes = np.concatenate([np.bincount(segment_units(w, level, sentence_gap, paragraph_gap))
                                for w in stories_words])
        out[level] = float(np.median(sizes))
    return out


def planted_class(windows, lengths: dict) -> np.ndarray:
    """The scrambling class a planted window should give: the finest level whose typical unit holds it.

    ``lengths``: median words per unit (:func:`unit_lengths`). A window of W words survives scrambling
    at a level when W words usually fit inside one unit: ``word`` if W = 1, ``sentence`` if W is at
    most the median sentence length, ``paragraph`` likewise, else ``story``.
    """
    w = np.asarray(windows, dtype=np.float64)
    cls = np.full(w.shape, "story", dtype=object)
    for level in reversed(SCRAMBLE_LEVELS):
        cls = np.where(w <= lengths[level], level, cls)
    return cls


def _planted_sets(truth: pd.DataFrame, table: pd.DataFrame):
    """``(truth aligned to the table's voxels, signal-voxel mask, high-SNR mask)``: high SNR = at least
    the signal voxels' median SNR."""
    truth = truth.set_index("voxel").reindex(table["voxel"])
    signal = (truth["noise"] == 0).to_numpy()
    return truth, signal, signal & (truth["snr"] >= truth.loc[signal, "snr"].median()).to_numpy()


def planted_recovery(truth: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of planted windows with each recovered estimate, per voxel set.

    ``truth``: the demo's ``ground_truth.tsv`` (``voxel``, ``trw_words``, ``snr``, ``noise``); ``table``:
    the TRW table. Voxel sets: signal voxels (not pure noise), high-SNR signal voxels (SNR at least
    the signal voxels' median) and those of them significant at their best k. Estimates:
    ``trw_words``, ``k_best``, ``com_words`` and, when present, ``scramble_index`` and ``timescale_words``.
    """
    from scipy.stats import spearmanr

    truth, signal, hi_snr = _planted_sets(truth, table)
    sig = table["significant"].to_numpy(dtype=bool)
    estimates = [c for c in ("trw_words", "k_best", "com_words", "scramble_index", "timescale_words") if c in table]
    rows = []
    for name, m in (("signal voxels", signal), ("high-SNR signal voxels", hi_snr), ("high-SNR significant", hi_snr & sig)):
        for col in estimates:
            x, y = truth["trw_words"].to_numpy()[m], table[col].to_numpy(dtype=np.float64)[m]
            ok = np.isfinite(y)
            constant = ok.sum() < 3 or np.ptp(y[ok]) == 0 or np.ptp(x[ok]) == 0
            rho = np.nan if constant else spearmanr(x[ok], y[ok]).correlation
            rows.append({"voxels": name, "estimate": col, "n": int(ok.sum()), "spearman": rho})
    return pd.DataFrame(rows)


def _trw_outputs(config, ds, subject, model, feature, ks, cv, test_r, table, out_dir, test):
    from pathlib import Path

    from .io import atomic_path
    from .plots import brain_map, planted_vs_recovered, scramble_survival, sweep_curves

    space = ds.voxel_space(subject)
    surface = ds.pycortex_surface(subject) if hasattr(ds, "pycortex_surface") else None
    sig = table["significant"].to_numpy()
    title = f"{subject} · {model} {feature}"
    scrambled = "scramble_class" in table
    code = table["scramble_class"].map({c: i for i, c in enumerate(SCRAMBLE_CLASSES)}) if scrambled else None
    if space is not None:
        cols = ["trw_words", "k_best", "gain"] + [c for c in ("timescale_words", "scramble_index") if c in table]
        for col in cols:
            space.save_nifti(table[col].to_numpy(dtype=np.float32), out_dir / f"{col}.nii.gz")
        if scrambled:  # codes 0-3: word, sentence, paragraph, story
            space.save_nifti(code.to_numpy(dtype=np.float32), out_dir / "scramble_class.nii.gz")
        if config.get("encoding", {}).get("maps", True):
            vals = np.where(sig, table["trw_words"].to_numpy(dtype=np.float64), np.nan)
            brain_map(vals, space, surface, out_dir / "trw_map.png", title=f"{title} · TRW (significant voxels)",
                      label="temporal receptive window (words, log scale)", vmin=float(ks[0]), vmax=float(ks[-1]),
                      cmap="viridis", log_scale=True)
            if scrambled:
                brain_map(np.where(sig, code.to_numpy(dtype=np.float64), np.nan), space, surface,
                          out_dir / "scramble_class_map.png",
                          title=f"{title} · scrambling class (significant voxels)",
                          label="finest scrambling the predicted response survives", categories=list(SCRAMBLE_CLASSES))
                brain_map(np.where(sig, table["scramble_index"].to_numpy(dtype=np.float64), np.nan), space, surface,
                          out_dir / "scramble_index_map.png", title=f"{title} · scrambling index (significant voxels)",
                          label="scrambling index (0 = unaffected, 1 = destroyed)", vmin=0.0, vmax=1.0,
                          cmap="magma")
    sweep_curves(ks, cv, test_r, table, out_dir / "curves.png", title=title)
    if scrambled:
        scramble_survival(table, out_dir / "scrambling.png", title=title)
    truth_path = Path(config["dataset"]["root"]) / "ground_truth.tsv"
    if truth_path.exists():
        truth = pd.read_csv(truth_path, sep="\t")
        rec = planted_recovery(truth, table)
        with atomic_path(out_dir / "recovery.tsv") as tmp:
            rec.to_csv(tmp, sep="\t", index=False, float_format="%.4g")
        t, _, hi_snr = _planted_sets(truth, table)
        confusion = None
        if scrambled:
            tc = config.get("trw", {})
            lengths = unit_lengths([ds.words(s) for s in test], tc.get("sentence_gap", 0.3), tc.get("paragraph_gap", 0.7))
            m = hi_snr & sig
            planted = pd.Categorical(planted_class(t["trw_words"].to_numpy()[m], lengths), categories=SCRAMBLE_CLASSES)
            found = pd.Categorical(table["scramble_class"].to_numpy()[m], categories=SCRAMBLE_CLASSES)
            confusion = pd.crosstab(planted, found, rownames=["planted"], colnames=["recovered"], dropna=False)
            with atomic_path(out_dir / "confusion.tsv") as tmp:
                confusion.to_csv(tmp, sep="\t")
        planted_vs_recovered(t.loc[hi_snr, "trw_words"].to_numpy(), table.loc[hi_snr, "trw_words"].to_numpy(),
                             sig[hi_snr], out_dir / "planted_vs_recovered.png",
                             title=f"{title} · high-SNR voxels (planted answer of the demo)", confusion=confusion)


# ------------------------------------------------------------------------------------------
# In-silico scrambling (Lerner et al. 2011 design; Jain et al. 2023): stimulus side and summaries.
SCRAMBLE_LEVELS = ("word", "sentence", "paragraph")
SCRAMBLE_CLASSES = SCRAMBLE_LEVELS + ("story",)  # coded 0-3 in scramble_class.nii.gz


def segment_units(words: pd.DataFrame, level: str, sentence_gap: float = 0.3, paragraph_gap: float = 0.7) -> np.ndarray:
    """Unit index of every word for a scrambling level.

    Transcripts of spoken stories (TextGrids) carry no punctuation, so units come from the pauses:
    a sentence ends where the silence before the next word is at least ``sentence_gap`` seconds, a
    paragraph where it is at least ``paragraph_gap``. ``word``: every word is a unit. Columns needed:
    ``onset``, ``offset``.
    """
    if level not in SCRAMBLE_LEVELS:
        raise TRWError(f"scrambling level must be one of {', '.join(SCRAMBLE_LEVELS)}, not {level!r}")
    n = len(words)
    if level == "word":
        return np.arange(n)
    if not 0 < sentence_gap <= paragraph_gap:
        raise TRWError("need 0 < sentence_gap <= paragraph_gap")
    gaps = words["onset"].to_numpy()[1:] - words["offset"].to_numpy()[:-1]
    cut = gaps >= (sentence_gap if level == "sentence" else paragraph_gap)
    return np.concatenate([[0], np.cumsum(cut)])


def scramble(words: pd.DataFrame, level: str, seed: int = 0, sentence_gap: float = 0.3,
             paragraph_gap: float = 0.7) -> pd.DataFrame:
    """The story with its units (words, sentences or paragraphs) in a random order.

    Every word keeps its duration; the silences of the original story stay where they were in the
    sequence (the k-th gap of the scrambled story is the k-th gap of the original), so the scrambled
    story has the original length and speech rate. Returns ``word``, ``onset``, ``offset``,
    ``midpoint`` and ``source`` (the word's index in the intact story).
    """
    unit = segment_units(words, level, sentence_gap, paragraph_gap)
    n_units = int(unit.max()) + 1 if len(unit) else 0
    order = np.random.default_rng(seed).permutation(n_units)
    starts = np.searchsorted(unit, np.arange(n_units))
    ends = np.append(starts[1:], len(unit))
    src = np.concatenate([np.arange(starts[u], ends[u]) for u in order]) if n_units else np.array([], int)
    onset = words["onset"].to_numpy(dtype=np.float64)
    offset = words["offset"].to_numpy(dtype=np.float64)
    dur = offset - onset
    gaps = np.append(onset[1:] - offset[:-1], 0.0)
    new_on = np.empty(len(src))
    t = onset[0] if len(src) else 0.0
    for j, i in enumerate(src):
        new_on[j] = t
        t += dur[i] + gaps[j]
    out = pd.DataFrame({"word": words["word"].to_numpy()[src], "onset": new_on, "offset": new_on + dur[src]})
    out["midpoint"] = (out["onset"] + out["offset"]) / 2
    out["source"] = src
    return out


class SurvivalSums:
    """Running sums over words of one scrambled prediction against the intact one, per voxel.

    ``add(intact, scrambled)`` takes matched ``(n, n_voxels)`` rows (any number of calls, e.g. one per
    story); ``result()`` gives the correlation of scrambled with intact prediction (0 where either is
    constant) and the variance ratio scrambled / intact (NaN where the intact prediction is constant).
    Values are shifted by the first intact mean so the sums stay well conditioned.
    """

    def __init__(self):
        self.n = 0
        self.shift = None

    def add(self, intact, scrambled):
        intact = np.asarray(intact, dtype=np.float64)
        scrambled = np.asarray(scrambled, dtype=np.float64)
        if scrambled.shape != intact.shape or intact.ndim != 2:
            raise TRWError(f"scrambled predictions {scrambled.shape} must match the intact ones {intact.shape}")
        if self.shift is None:
            self.shift = intact.mean(axis=0)
            self.sums = np.zeros((5, intact.shape[1]))
        i, s = intact - self.shift, scrambled - self.shift
        self.sums += np.stack([i.sum(0), (i * i).sum(0), s.sum(0), (s * s).sum(0), (s * i).sum(0)])
        self.n += intact.shape[0]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.n:
            raise TRWError("no predictions were added")
        mi, mii, ms, mss, msi = self.sums / self.n
        var_i = np.clip(mii - mi * mi, 0, None)
        var_s = np.clip(mss - ms * ms, 0, None)
        den = np.sqrt(var_i * var_s)
        r = np.divide(msi - ms * mi, den, out=np.zeros_like(den), where=den > 0)
        ratio = np.divide(var_s, var_i, out=np.full_like(den, np.nan), where=var_i > 0)
        return np.clip(r, -1, 1), ratio


def survival(intact: np.ndarray, scrambled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How much of a voxel's intact predicted response survives scrambling.

    intact: ``(n, n_voxels)``; scrambled: ``(n_seeds, n, n_voxels)`` (rows matched: the same words).
    Returns the correlation of scrambled with intact prediction and the variance ratio (scrambled /
    intact), each averaged over seeds: ``(n_voxels,)`` twice (see :class:`SurvivalSums`).
    """
    scrambled = np.asarray(scrambled, dtype=np.float64)
    if scrambled.ndim != 3:
        raise TRWError(f"scrambled predictions must be (seeds, n, voxels), got {scrambled.shape}")
    results = []
    for s in scrambled:
        acc = SurvivalSums()
        acc.add(intact, s)
        results.append(acc.result())
    return np.mean([r for r, _ in results], axis=0), np.mean([q for _, q in results], axis=0)


def scramble_summary(survival_by_level: dict, threshold: float = 0.7) -> pd.DataFrame:
    """TRW class and continuous index from the survival correlation at each level.

    ``survival_by_level``: ``{"word": (V,), "sentence": (V,), "paragraph": (V,)}``. The class is the
    finest level whose scrambling the voxel's predicted response survives (correlation >= threshold):
    ``word`` if it survives word scrambling, else ``sentence``, else ``paragraph``, else ``story``.
    The index is ``1 - mean survival`` over the levels (0 = unaffected by scrambling, 1 = destroyed).
    """
    missing = [lv for lv in SCRAMBLE_LEVELS if lv not in survival_by_level]
    if missing:
        raise TRWError(f"survival missing for level(s) {', '.join(missing)}")
    s = np.stack([np.asarray(survival_by_level[lv], dtype=np.float64) for lv in SCRAMBLE_LEVELS])
    cls = np.full(s.shape[1], "story", dtype=object)
    for i in range(len(SCRAMBLE_LEVELS) - 1, -1, -1):
        cls = np.where(s[i] >= threshold, SCRAMBLE_LEVELS[i], cls)
    return pd.DataFrame({"scramble_index": 1 - np.clip(s, -1, 1).mean(axis=0), "scramble_class": cls})


def scramble_predictions(config: dict, ds, model: str, model_dir, encoding_dir, feature: str, ks, k_best,
                         test: list[str], progress: bool = True) -> pd.DataFrame:
    """In-silico scrambling: how much of each voxel's predicted response to a word survives scrambling.

    Each test story is scrambled at the word, sentence and paragraph level (``trw.scramble_seeds``
    seeds each; units from pauses, see :func:`segment_units`) and read by the model at every context
    length of the sweep. A voxel's predicted response to a word is the word's features at the voxel's
    own best context length ``k_best`` (chosen by cross-validation) read through the voxel's encoding
    weights fitted at that k (summed over delays, with the same per-column scaling as the design): the
    voxel's best encoding model, so a short-window voxel is not judged through a long-context model
    it does not prefer. Scrambling moves words in time, so the comparison is made word by word, each
    scrambled word matched to the same word in the intact story: a voxel whose response depends only
    on context inside the scrambled unit keeps its word responses (survival near 1); one that
    integrates across units loses them. Statistics are accumulated story by story, so memory stays at
    two (words x voxels) arrays. Returns ``survival_<level>`` (correlation over words of scrambled with
    intact predicted responses, averaged over seeds), ``variance_<level>`` (variance ratio),
    ``scramble_index`` and ``scramble_class``.
    """
    import logging
    from pathlib import Path

    import h5py
    from .io import progress_bar as tqdm

    from .encoding import parse_feature
    from .features import extract_in_memory
    from .models import load_model, resolve_layers
    from .stimulus import downsample
    from .training import pick_device

    log = logging.getLogger(__name__)
    tc = config.get("trw", {})
    kind, layer = parse_feature(feature)
    lm = load_model(model_dir, device=pick_device(config.get("device", "auto")), name=model)
    layer = resolve_layers([-1 if layer is None else layer], lm.n_layers, f"model '{model}'")[0]
    name = f"hidden/layer_{layer}" if kind == "hidden" else f"attention/layer_{layer}/{kind}"
    k_best = np.asarray(k_best, dtype=np.int64)
    used = [int(k) for k in ks if np.any(k_best == k)]
    groups = {k: np.flatnonzero(k_best == k) for k in used}
    collapsed = {}  # k -> (n_features, n_voxels_k): weights summed over delays
    for k in used:
        with h5py.File(Path(encoding_dir) / f"k{k}" / "weights.h5", "r") as fh:
            coef = fh["coef"][:, groups[k]].astype(np.float64)
            n_delays = len(fh["delays"][()])
        collapsed[k] = coef.reshape(n_delays, coef.shape[0] // n_delays, -1).sum(axis=0)

    def word_features(words):
        f = extract_in_memory(lm, [str(w) for w in words["word"]], used, layers=[layer], attention=kind != "hidden")
        return {k: f[k][name].reshape(len(words), -1).astype(np.float64) for k in used}

    def predict(F, scale):
        out = np.empty((next(iter(F.values())).shape[0], k_best.size))
        for k in used:
            out[:, groups[k]] = F[k] @ (collapsed[k] / scale[k][:, None])
        return out

    seeds = int(tc.get("scramble_seeds", 3))
    acc = {(lv, sd): SurvivalSums() for lv in SCRAMBLE_LEVELS for sd in range(seeds)}
    bar = tqdm(total=len(test) * (1 + len(SCRAMBLE_LEVELS) * seeds), desc=f"scrambling {model}", unit="version",
               disable=not progress)
    for story in test:
        words = ds.words(story)
        F = word_features(words)
        bar.update()
        scale = {}
        for k in used:
            if collapsed[k].shape[0] != F[k].shape[1]:
                raise TRWError(f"{encoding_dir}/k{k}: weights for {collapsed[k].shape[0]} features per delay, "
                               f"the model gives {F[k].shape[1]}")
            std = downsample(F[k], words["midpoint"].to_numpy(), ds.tr_times(story)).std(axis=0)
            scale[k] = np.where(std > 0, std, np.inf)
        intact = predict(F, scale)
        for lv in SCRAMBLE_LEVELS:
            for sd in range(seeds):
                scr = scramble(words, lv, seed=int(config.get("seed", 0)) + sd,
                               sentence_gap=tc.get("sentence_gap", 0.3), paragraph_gap=tc.get("paragraph_gap", 0.7))
                Fs = word_features(scr)
                src = scr["source"].to_numpy()
                aligned = {}
                for k in used:  # back to the intact word order
                    aligned[k] = np.empty_like(Fs[k])
                    aligned[k][src] = Fs[k]
                acc[(lv, sd)].add(intact, predict(aligned, scale))
                bar.update()
        log.info("scrambling %s: %d words, %d seeds per level, context lengths %s", story, len(words), seeds, used)
    bar.close()
    out, surv = {}, {}
    for lv in SCRAMBLE_LEVELS:
        results = [acc[(lv, sd)].result() for sd in range(seeds)]
        out[f"survival_{lv}"] = surv[lv] = np.mean([r for r, _ in results], axis=0)
        out[f"variance_{lv}"] = np.mean([q for _, q in results], axis=0)
    summary = scramble_summary(surv, threshold=tc.get("scramble_threshold", 0.7))
    table = pd.DataFrame(out)
    table["scramble_index"] = summary["scramble_index"].to_numpy()
    table["scramble_class"] = summary["scramble_class"].to_numpy()
    return table
