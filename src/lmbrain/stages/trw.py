"""Stage ``trw``: temporal receptive windows of one subject and model, maps and figures.

Reads the context sweep of the model's TRW feature (the encoding folder's ``k<k>/voxels.tsv``,
``predictions.h5`` and, for scrambling and the multi-timescale LSTM, ``weights.h5``), the test
responses, the test stories read by the model in scrambled versions (in-silico scrambling; made once
per model and story by :func:`scrambled_features`, rule ``scrambled_features``, and shared by the
subjects) and the test stories' features (the multi-timescale LSTM's unit timescales, and the model's
context use). Science: :mod:`lmbrain.trw` (curves, bootstrap,
unit timescales, seconds), :mod:`lmbrain.context_use` (how far the features resolve context),
:mod:`lmbrain.scrambling`, :mod:`lmbrain.recovery` (scoring against a planted answer).

Beside the window estimates, ``voxels.tsv`` has ``trw_seconds``, ``trw_peak_seconds`` and
``trw_centroid_seconds`` (the estimates in seconds, from the median time k-word windows span in the
subject's stories), ``context_ceiling`` (the longest window the fitted features resolve, the same
for every voxel: features at longer k repeat those at the ceiling, so every estimate is read from
the curve up to it) and ``at_ceiling`` (the voxel's best k is that ceiling: its window is *at least*
the ceiling as far as this model can tell, not a measured window; such voxels are left out of the
TRW map when the ceiling is below the longest k). ``context_use.tsv`` and ``context_use.png`` hold
the model's context-use curve of every saved layer of the feature's kind. The map and the primary
estimate is ``trw_centroid``.

Writes ``voxels.tsv``, NIfTI maps of each estimate and the figures into the output folder, which
appears only when complete (:func:`lmbrain.io.atomic_dir`). With a planted-truth file
(``TRWSettings.truth``: the demo's own ``ground_truth.tsv`` or ``trw.truth``) also ``recovery.tsv``,
``confusion.tsv`` and ``planted_vs_recovered.png``; that scoring is optional, so a truth file that
cannot be scored is reported in the log and never takes down the job's main outputs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import ScrambleJob, TRWJob
from ..io import atomic_dir, atomic_path
from ..layout import DEFAULT, Layout, k_folder
from .common import open_job_dataset, split_stories

log = logging.getLogger("lmbrain.trw")


def read_sweep(encoding_dir, ks) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(ks, cv, test_r, q)`` curves ``(n_k, n_voxels)`` from an encoding folder's ``k<k>/voxels.tsv``."""
    from ..trw import TRWError

    if len(ks) < 2:
        raise TRWError(f"{encoding_dir}: a context sweep needs at least two context lengths (the model has {list(ks)})")
    cols = {"cv_score": [], "test_r": [], "q": []}
    for k in ks:
        path = Path(k_folder(encoding_dir, k)) / "voxels.tsv"
        if not path.exists():
            raise TRWError(f"{path}: missing (run the encoding_model rule)")
        t = pd.read_csv(path, sep="\t")
        for c in cols:
            cols[c].append(t[c].to_numpy(dtype=np.float64))
    return np.asarray(ks), np.stack(cols["cv_score"]), np.stack(cols["test_r"]), np.stack(cols["q"])


def trw(job: TRWJob, subject: str, encoding_dir, out_dir, layout: Layout = DEFAULT,
        progress: bool = False) -> pd.DataFrame:
    """Per-voxel TRW estimates, maps and figures for ``subject`` and ``job.model`` (module docstring)."""
    import h5py

    from ..trw import TRWError, bootstrap_trw, context_sweep, mtlstm_timescales

    tc, model = job.trw, job.model.name
    encoding_dir = Path(encoding_dir)
    ks_all, cv_all, test_all, q_all = read_sweep(encoding_dir, list(job.model.context_lengths))
    ds = open_job_dataset(job.dataset)
    train, test = split_stories(ds, subject, job.dataset)
    # the longest window the model's features resolve: longer k repeat the same features (within the
    # tolerance), so their scores are repeated measurements, not evidence for longer windows; every
    # estimate is read from the curve up to the ceiling (at least the two shortest k)
    use = _context_use(job, layout, test, ks_all)  # the test stories' features (the rule's inputs)
    ceiling = int(use.attrs["ceiling"]) if use is not None else int(ks_all[-1])
    keep = ks_all <= max(ceiling, ks_all[1])
    ks, cv, test_r, q = ks_all[keep], cv_all[keep], test_all[keep], q_all[keep]
    table = context_sweep(ks, cv, test_r, tc.fraction)
    ib = np.nan_to_num(cv, nan=-np.inf).argmax(axis=0)
    v = np.arange(cv.shape[1])
    table["q_best"] = q[ib, v]
    table["significant"] = table["q_best"] < job.fdr
    # bootstrap interval of the test-curve estimate
    y = np.concatenate([ds.responses(subject, s) for s in test]).astype(np.float32)
    lo = np.empty(y.shape[1])
    hi = np.empty(y.shape[1])
    chunk = max(1, int(2e8 // (len(ks) * y.shape[0] * 4)))
    files = [h5py.File(Path(k_folder(encoding_dir, k)) / "predictions.h5", "r") for k in ks]
    try:
        for v0 in range(0, y.shape[1], chunk):
            sl = slice(v0, v0 + chunk)
            P = np.stack([f["pred"][:, sl].astype(np.float32) for f in files])
            lo[sl], hi[sl] = bootstrap_trw(ks, P, y[:, sl], n_boot=tc.n_boot, block=tc.block, fraction=tc.fraction,
                                           seed=job.seed)
    finally:
        for f in files:
            f.close()
    table.insert(2, "trw_low", lo)
    table.insert(3, "trw_high", hi)
    # the windows in seconds
    from ..trw import window_seconds, words_to_seconds

    seconds = window_seconds([ds.words(s) for s in train + test], ks_all)
    for col in ("trw_words", "trw_peak", "trw_centroid"):
        name = "trw_seconds" if col == "trw_words" else f"{col}_seconds"
        table.insert(table.columns.get_loc(col) + 1, name, words_to_seconds(table[col], ks_all, seconds))
    table["context_ceiling"] = ceiling
    table["at_ceiling"] = table["k_best"] >= ceiling
    # multi-timescale LSTM: weight-averaged unit timescales at the longest context
    if job.model.type == "mtlstm":
        timescales = _unit_timescales(layout.feature_file(model, test[0], ks_all[-1]), job.feature)
        if timescales is not None:
            with h5py.File(Path(k_folder(encoding_dir, ks_all[-1])) / "weights.h5", "r") as fh:
                coef = fh["coef"][()].astype(np.float64)
                n_delays = len(fh["delays"][()])
            table["timescale_words"], table["timescale_p"] = mtlstm_timescales(coef, timescales, n_delays,
                                                                               seed=job.seed)
    if tc.scramble:
        extra = _scrambling(job, ds, encoding_dir, ks, table["k_best"].to_numpy(), test, layout, progress)
        for col in extra.columns:
            table[col] = extra[col].to_numpy()
    with atomic_dir(out_dir) as tmp:
        tmp = Path(tmp)
        with atomic_path(tmp / "voxels.tsv") as path:
            table.to_csv(path, sep="\t", index=False, float_format="%.6g")
        log.info("%s %s: TRW from %s, %d of %d voxels significant at their best k; median TRW %.0f words there",
                 subject, model, job.feature, int(table["significant"].sum()), len(table),
                 float(table.loc[table["significant"], "trw_centroid"].median()) if table["significant"].any() else float("nan"))
        if use is not None:
            with atomic_path(tmp / "context_use.tsv") as path:
                use.to_csv(path, sep="\t", index=False, float_format="%.6g")
            from ..plots import context_use as plot_context_use

            plot_context_use(use, tmp / "context_use.png", fitted=use.attrs["layer"],
                             title=f"{subject} · {job.model.name} {job.feature} · context use")
        _maps_and_figures(job, ds, subject, ks_all, cv_all, test_all, table, tmp)
        if job.trw.truth is not None:
            _score_planted(job, ds, subject, table, tmp, test)
    return table


def _unit_timescales(path, feature: str):
    """The unit timescales of the fitted layer of a multi-timescale LSTM, or None (with a log line) when that
    layer has none: the embeddings, or the unconstrained last layer of a model with three or more layers."""
    import h5py

    from ..trw import TRWError

    layer = int(feature.split("-L")[-1]) if "-L" in feature else None
    with h5py.File(path, "r") as fh:
        names = sorted(n for n in fh.get("timescales", {}))
        if layer is None:  # "<kind>-last": the highest layer with saved timescales
            layer = max((int(n.split("_")[-1]) for n in names), default=None)
        name = f"layer_{layer}"
        if layer is None or name not in names:
            raise TRWError(f"{path}: no unit timescales saved for layer {layer} (saved: {', '.join(names) or 'none'})")
        timescales = fh["timescales"][name][()]
    if not np.isfinite(timescales).any():
        log.warning("%s: layer %s of the multi-timescale LSTM has no fixed timescales (unconstrained); no voxel "
                    "timescales: list the inverse-gamma layer in the model's layers to get them", path, layer)
        return None
    return timescales


def _context_use(job: TRWJob, layout: Layout, stories, ks):
    """The model's context-use curves (every saved layer of the TRW feature's kind) from its feature
    files; ``attrs``: the fitted ``layer`` and its ``ceiling``. None (with a warning) when the files
    cannot be read: the ceiling then defaults to the longest k."""
    from ..context_use import ContextUseError, feature_context_use
    from ..encoding import parse_feature
    from ..featurefile import FeatureError, feature_info

    kind, layer = parse_feature(job.feature)
    files = {s: {int(k): layout.feature_file(job.model.name, s, k) for k in ks} for s in stories}
    try:
        if layer is None:
            attrs = feature_info(files[stories[0]][int(ks[0])])["attrs"]
            saved = list(attrs.get("layers" if kind in ("hidden", "pooled") else "attention_layers", []))
            layer = int(max(saved))
        use = feature_context_use(files, kind)
    except (ContextUseError, FeatureError, OSError, KeyError, ValueError) as exc:
        log.warning("%s: context use not measured (%s); ceiling taken as the longest k", job.model.name, exc)
        return None
    rows = use[use["layer"] == layer]
    use.attrs["layer"] = int(layer)
    use.attrs["ceiling"] = int(rows["ceiling"].iloc[0]) if len(rows) else int(ks[-1])
    log.info("%s %s: features at k differ from those at k = %d by %s (1 - r); longest window resolved: %d words",
             job.model.name, job.feature, int(ks[-1]),
             ", ".join(f"{d:.3f}" for d in rows["distance"]) if len(rows) else "?", use.attrs["ceiling"])
    return use


def scrambled_features(job: ScrambleJob, story: str, model_dir, out_file, progress: bool = False) -> None:
    """Rule ``scrambled_features``: ``story`` and its scrambled versions read by ``job.model`` at every
    context length (:func:`lmbrain.scrambling.scrambled_versions`), written atomically to ``out_file``.

    The file holds ``intact/k<k>`` and ``<level>/seed<s>/k<k>`` (words x features, float32, rows in the
    intact word order) of the model's TRW feature, and the settings that made it as attributes; every
    subject's ``trw`` job that has the story among its test stories reads it.
    """
    import h5py

    from ..encoding import parse_feature
    from ..io import progress_bar
    from ..models import load_model, resolve_layers
    from ..scrambling import SCRAMBLE_LEVELS, scrambled_versions
    from ..training import pick_device

    kind, layer = parse_feature(job.feature)
    lm = load_model(model_dir, device=pick_device(job.device), name=job.model.name)
    layer = resolve_layers([-1 if layer is None else layer], lm.n_layers, f"model '{job.model.name}'")[0]
    words = open_job_dataset(job.dataset).words(story)
    ks = [int(k) for k in job.model.context_lengths]
    n_versions = 1 + len(SCRAMBLE_LEVELS) * job.seeds
    with atomic_path(out_file) as tmp, h5py.File(tmp, "w") as fh:
        fh.attrs.update(_scramble_attrs(job, story, len(words)))
        fh.attrs.update({"kind": kind, "layer": int(layer), "context_lengths": ks})
        versions = scrambled_versions(lm, layer, kind, words, ks, seeds=job.seeds, seed=job.seed,
                                      sentence_gap=job.sentence_gap, paragraph_gap=job.paragraph_gap,
                                      state_context=job.model.get("state_context"))
        for (level, sd), F in progress_bar(versions, total=n_versions, desc=f"scrambling {story}", unit="version",
                                           disable=not progress):
            group = "intact" if level == "intact" else f"{level}/seed{sd}"
            for k in ks:
                fh.create_dataset(f"{group}/k{k}", data=F[k].astype(np.float32))
    log.info("%s %s: %d words, intact and %d scrambled versions at k = %s", job.model.name, story, len(words),
             n_versions - 1, ks)


def _scramble_attrs(job: ScrambleJob, story: str, n_words: int) -> dict:
    """What a scrambled-features file must match to be read for a TRW job."""
    return {"model": job.model.name, "feature": job.feature, "story": story, "n_words": int(n_words),
            "seeds": int(job.seeds), "seed": int(job.seed), "sentence_gap": float(job.sentence_gap),
            "paragraph_gap": float(job.paragraph_gap)}


def _read_scrambled(path, job: ScrambleJob, story: str, n_words: int, ks):
    """The versions of a scrambled-features file, one at a time (as
    :func:`lmbrain.scrambling.scrambled_versions` yields them), after checking it was made with these
    settings."""
    import h5py

    from ..scrambling import SCRAMBLE_LEVELS
    from ..trw import TRWError

    if not Path(path).exists():
        raise TRWError(f"{path}: missing (run the scrambled_features rule for model {job.model.name}, story {story})")
    want = _scramble_attrs(job, story, n_words)
    with h5py.File(path, "r") as fh:
        have = {key: fh.attrs.get(key) for key in want}
        stale = [f"{key} {have[key]!r} (expected {want[key]!r})" for key in want if have[key] != want[key]]
        made = {int(k) for k in fh.attrs.get("context_lengths", [])}
        if not set(ks) <= made:
            stale.append(f"context lengths {sorted(made)} (expected {sorted(ks)} among them)")
        if stale:
            raise TRWError(f"{path}: made with other settings: {'; '.join(stale)}; rerun the scrambled_features rule")
        groups = [("intact", 0, "intact")] + [(lv, sd, f"{lv}/seed{sd}") for lv in SCRAMBLE_LEVELS
                                               for sd in range(job.seeds)]
        for level, sd, group in groups:
            yield (level, sd), {k: fh[f"{group}/k{k}"][()] for k in ks}


def _scrambling(job: TRWJob, ds, encoding_dir, ks, k_best, test, layout: Layout, progress) -> pd.DataFrame:
    """Read each used k's weights (summed over delays) and the test stories' scrambled versions
    (``layout.scrambled_file``, rule ``scrambled_features``), then
    :func:`lmbrain.scrambling.survival_from_versions`."""
    import h5py

    from ..scrambling import survival_from_versions

    tc = job.trw
    scramble = job.scramble_job()
    weights = {}
    for k in [int(k) for k in ks if np.any(k_best == k)]:
        with h5py.File(Path(k_folder(encoding_dir, k)) / "weights.h5", "r") as fh:
            coef = fh["coef"][:, np.flatnonzero(k_best == k)].astype(np.float64)
            n_delays = len(fh["delays"][()])
        weights[k] = coef.reshape(n_delays, coef.shape[0] // n_delays, -1).sum(axis=0)
    used = sorted(weights)
    stories = []
    for s in test:
        words = ds.words(s)
        stories.append((s, words, ds.tr_times(s),
                        _read_scrambled(layout.scrambled_file(job.model.name, s), scramble, s, len(words), used)))
    return survival_from_versions(stories, weights, k_best, seeds=tc.scramble_seeds,
                                  threshold=tc.scramble_threshold, progress=progress, label=job.model.name)


def _maps_and_figures(job: TRWJob, ds, subject, ks, cv, test_r, table, out_dir: Path) -> None:
    from ..plots import brain_map, scramble_survival, sweep_curves
    from ..scrambling import SCRAMBLE_CLASSES

    space = ds.voxel_space(subject)
    surface = ds.pycortex_surface(subject) if hasattr(ds, "pycortex_surface") else None
    sig = table["significant"].to_numpy()
    title = f"{subject} · {job.model.name} {job.feature}"
    scrambled = "scramble_class" in table
    code = table["scramble_class"].map({c: i for i, c in enumerate(SCRAMBLE_CLASSES)}) if scrambled else None
    if space is not None:
        cols = ["trw_centroid", "trw_centroid_seconds", "trw_words", "trw_peak", "k_best", "gain"] + [
            c for c in ("timescale_words", "scramble_index") if c in table]
        for col in cols:
            space.save_nifti(table[col].to_numpy(dtype=np.float32), out_dir / f"{col}.nii.gz")
        if scrambled:  # codes 0-3: word, sentence, paragraph, story
            space.save_nifti(code.to_numpy(dtype=np.float32), out_dir / "scramble_class.nii.gz")
        if job.maps:
            # a window at a ceiling below the sweep's longest k is a lower bound, not a window: not drawn
            capped = table["at_ceiling"].to_numpy(dtype=bool) & (table["context_ceiling"].to_numpy() < ks[-1])
            vals = np.where(sig & ~capped, table["trw_centroid"].to_numpy(dtype=np.float64), np.nan)
            what = "significant voxels" + (", not at the model's context ceiling" if capped.any() else "")
            brain_map(vals, space, surface, out_dir / "trw_map.png", title=f"{title} · TRW ({what})",
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


def _score_planted(job: TRWJob, ds, subject, table, out_dir: Path, test) -> None:
    """Recovery of the planted windows (optional: a failure is logged, the main outputs stay)."""
    from .. import LmbrainError

    try:
        _planted_outputs(job, ds, subject, table, out_dir, test)
    except (LmbrainError, OSError, ValueError, KeyError) as exc:
        log.error("planted-truth scoring skipped: %s (the TRW outputs are complete; fix trw.truth to score)", exc)
        for name in ("recovery.tsv", "confusion.tsv", "planted_vs_recovered.png", "planted_vs_recovered.pdf"):
            (out_dir / name).unlink(missing_ok=True)


def _planted_outputs(job: TRWJob, ds, subject, table, out_dir: Path, test) -> None:
    from ..plots import planted_vs_recovered
    from ..recovery import planted_recovery, planted_sets, read_truth, recovery_by_fit, scramble_confusion
    from ..scrambling import unit_lengths

    truth = read_truth(job.trw.truth)
    rec = planted_recovery(truth, table)
    with atomic_path(out_dir / "recovery.tsv") as tmp:
        rec.to_csv(tmp, sep="\t", index=False, float_format="%.4g")
    with atomic_path(out_dir / "recovery_by_fit.tsv") as tmp:  # where the primary estimate holds: by fit quality
        recovery_by_fit(truth, table, "trw_centroid").to_csv(tmp, sep="\t", index=False, float_format="%.4g")
    t, sets = planted_sets(truth, table)
    names = list(sets)
    scatter_set, primary = sets[names[-2]], sets[names[-1]]  # e.g. high-SNR voxels, and those significant
    sig = table["significant"].to_numpy()
    confusion = None
    if "scramble_class" in table:
        tc = job.trw
        lengths = unit_lengths([ds.words(s) for s in test], tc.sentence_gap, tc.paragraph_gap)
        confusion = scramble_confusion(t["trw_words"].to_numpy()[primary], table["scramble_class"].to_numpy()[primary],
                                       lengths)
        with atomic_path(out_dir / "confusion.tsv") as tmp:
            confusion.to_csv(tmp, sep="\t")
    label = "high-SNR voxels" if "high-SNR signal voxels" in sets else "signal voxels"
    truth_path = Path(job.trw.truth)  # the demo's answer: ground_truth.tsv, or ground_truth_<SUBJECT>.tsv
    demo = truth_path.parent == Path(job.dataset.root) and truth_path.name.startswith("ground_truth")
    planted_vs_recovered(t.loc[scatter_set, "trw_words"].to_numpy(), table.loc[scatter_set, "trw_words"].to_numpy(),
                         sig[scatter_set], out_dir / "planted_vs_recovered.png",
                         title=f"{subject} · {job.model.name} {job.feature} · {label} (planted answer{' of the demo' if demo else ''})",
                         confusion=confusion)
