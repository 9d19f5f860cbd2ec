"""Stage ``encoding_model``: fit and evaluate every context length of one (subject, model, feature).

Reads the model's features of every story of the subject and the subject's responses (once, reused
for every k); for each k fits :class:`lmbrain.ridge.RidgeCV` on the training stories and scores the
test stories (:mod:`lmbrain.encoding`, :mod:`lmbrain.stats`). Writes, into ``<out>/k<k>/``:
``voxels.tsv``, ``weights.h5``, ``predictions.h5``, ``test_r.nii.gz``, ``test_r.png`` (a preview: PNG only);
into ``<out>``: ``summary.tsv`` and ``test_r_by_k.jpg`` (every k's preview on one sheet; banded models
also ``r2_lm_by_k.jpg``). The folder appears only when complete (:func:`lmbrain.io.atomic_dir`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..config import EncodingJob
from ..io import atomic_dir, atomic_path
from ..layout import DEFAULT, Layout, k_folder
from .common import open_job_dataset, split_stories

log = logging.getLogger("lmbrain.encoding")

# the per-k maps are previews (the TRW stage draws the summary maps as PNG and PDF): PNG only, at 100 dpi
PREVIEW = {"dpi": 100, "vector": False}


def encoding_model(job: EncodingJob, subject: str, feature: str, out_dir, layout: Layout = DEFAULT,
                   progress: bool = False) -> pd.DataFrame:
    """Fit and evaluate ``feature`` of ``job.model`` for ``subject`` at every context length.

    Returns the summary table (one row per k); writes ``out_dir`` (see the module docstring).
    """
    from ..datasets import stacked_responses
    from ..encoding import EncodingError, design, parse_feature
    from ..plots import brain_map
    from ..encoding import banded_candidates
    from ..ridge import BandedRidgeCV, RidgeCV, story_folds
    from ..stats import block_permutation_pvalues, fdr_bh, noise_ceiling

    enc, model = job.encoding, job.model.name
    kind, layer = parse_feature(feature)
    ks = list(job.model.context_lengths)
    ds = open_job_dataset(job.dataset)
    train, test = split_stories(ds, subject, job.dataset)
    stories = train + test
    tr_times = {s: ds.tr_times(subject, s) for s in stories}
    t0 = time.time()
    n_trs = {s: len(tr_times[s]) for s in stories}  # the rows of every design matrix
    Ytr = stacked_responses(ds, subject, train, [n_trs[s] for s in train], error=EncodingError)
    Yte = stacked_responses(ds, subject, test, [n_trs[s] for s in test], error=EncodingError)
    bad = np.zeros(ds.n_voxels(subject), dtype=bool)
    for s in train:
        bad |= ds.invalid_voxels(subject, s)
    log.info("subject %s: %d training stories (%d TRs), %d test stories, %d voxels (%d invalid) read in %.1f s",
             subject, len(train), Ytr.shape[0], len(test), Ytr.shape[1], bad.sum(), time.time() - t0)
    groups = np.concatenate([np.full(n_trs[s], i) for i, s in enumerate(train)])
    reps = ds.repeats(subject, test[0])
    ceiling = noise_ceiling(reps) if reps is not None else np.full(Ytr.shape[1], np.nan)
    space = ds.voxel_space(subject)
    surface = ds.pycortex_surface(subject) if hasattr(ds, "pycortex_surface") else None
    banded = enc.model == "banded"
    across = bool(enc.delays_across_stories)  # the reference: stack each set's stories, then delay
    delays = (0,) if across else enc.delays  # design() and the nuisance bands delay per story unless across
    names, nuis = _nuisance(ds, subject, stories, tr_times, enc, delays) if banded else ([], {})
    if across and names:  # each band delayed over the stacked stories of its set
        per_band = [_delay_sets({s: nuis[s][j] for s in stories}, (train, test), enc.delays) for j in range(len(names))]
        nuis = {s: [band[s] for band in per_band] for s in stories}
    if banded and not names:
        raise EncodingError(f"encoding.model is banded but none of encoding.nuisance ({', '.join(enc.nuisance)}) can be "
                            f"computed for subject {subject}: set encoding.model: ridge or list other bands")
    band_names = ["lm", *names]
    rows = []
    with atomic_dir(out_dir) as tmp_dir:
        for k in ks:
            tk = time.time()
            files = {s: layout.feature_file(model, s, k) for s in stories}
            X = design(files, kind, layer, tr_times, delays)
            if across:
                X = _delay_sets(X, (train, test), enc.delays)
            n_features = X[train[0]].shape[1]
            alphas, cv = np.asarray(enc.alphas, dtype=np.float64), story_folds(enc.cv_folds, len(train))
            if banded:
                X = {s: np.hstack([X[s], *nuis[s]]) for s in stories}
                bands = [np.arange(n_features)]
                for j in range(len(names)):
                    bands.append(n_features + len(enc.delays) * j + np.arange(len(enc.delays)))
                ridge = BandedRidgeCV(alphas=alphas, gammas=banded_candidates(enc.gammas, len(bands), job.seed), cv=cv,
                                      score=enc.score, search=enc.search, device=job.device, memory_gb=enc.memory_gb,
                                      random_state=job.seed, refine_gammas=enc.refine_gammas)
                ridge.fit(np.concatenate([X[s] for s in train]), Ytr, bands=bands, groups=groups)
            else:
                ridge = RidgeCV(alphas=alphas, cv=cv, score=enc.score, search=enc.search, device=job.device,
                                memory_gb=enc.memory_gb, progress=False)
                ridge.fit(np.concatenate([X[s] for s in train]), Ytr, groups=groups)
            Xte = np.concatenate([X[s] for s in test])
            pred = ridge.predict(Xte)
            r, p = block_permutation_pvalues(pred, Yte, n_permutations=enc.n_permutations, block=enc.block,
                                             seed=job.seed + k)
            p[bad] = np.nan
            q = fdr_bh(p)
            with np.errstate(invalid="ignore", divide="ignore"):
                r_norm = r / ceiling
            table = pd.DataFrame({
                "voxel": np.arange(len(r)), "alpha": ridge.best_alphas_, "cv_score": ridge.best_scores_, "test_r": r,
                "noise_ceiling": ceiling, "test_r_normalised": r_norm, "p": p, "q": q,
                "significant": (q < enc.fdr) & ~bad,
            })
            split = None
            if banded:
                split = ridge.score_split(Xte, Yte)  # (n_bands, V): shares of the test R2
                split[:, bad] = np.nan
                at = table.columns.get_loc("cv_score")
                for b, name in enumerate(band_names):
                    table.insert(at + b, f"alpha_{name}", ridge.band_alphas_[b])
                for b, name in enumerate(band_names):
                    table[f"r2_{name}"] = split[b]
            folder = Path(k_folder(tmp_dir, k))
            with atomic_path(folder / "voxels.tsv") as tmp:
                table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
            write_weights(folder / "weights.h5", ridge, enc.weights_dtype, enc.delays, model, feature, k, n_features,
                          nuisance=names if banded else None, across_stories=across)
            write_predictions(folder / "predictions.h5", pred, test, [n_trs[s] for s in test])
            if space is not None:
                space.save_nifti(r.astype(np.float32), folder / "test_r.nii.gz")
                if enc.maps:
                    brain_map(r, space, surface, folder / "test_r.png", title=f"{subject} · {model} {feature} · k = {k} words",
                              label="test correlation r", vmin=0.0, vmax=max(0.1, float(np.nanpercentile(r, 99))),
                              cmap="inferno", **PREVIEW)
                if split is not None:
                    space.save_nifti(split[0].astype(np.float32), folder / "r2_lm.nii.gz")
                    if enc.maps:
                        brain_map(split[0], space, surface, folder / "r2_lm.png",
                                  title=f"{subject} · {model} {feature} · k = {k} words · language-model band",
                                  label="split test R2 of the language-model band", vmin=0.0,
                                  vmax=max(0.01, float(np.nanpercentile(split[0], 99))), cmap="inferno", **PREVIEW)
            row = {"k": k, "n_features": n_features, "mean_r": float(np.nanmean(r)),
                   "median_r": float(np.nanmedian(r)), "fraction_significant": float(table["significant"].mean())}
            if split is not None:
                row.update({f"mean_r2_{name}": float(np.nanmean(split[b])) for b, name in enumerate(band_names)})
            row["seconds"] = time.time() - tk
            rows.append(row)
            log.info("%s %s %s k=%d: %d features, mean r %.3f, %.1f%% voxels significant (q < %.2f), %.1f s", subject,
                     model, feature, k, row["n_features"], row["mean_r"], 100 * row["fraction_significant"], enc.fdr,
                     row["seconds"])
        if space is not None and enc.maps:  # every k's preview on one sheet (the report shows these)
            from ..plots import contact_sheet

            for name, what in (("test_r", "test correlation"), ("r2_lm", "language-model band's split test R2")):
                pngs = [Path(k_folder(tmp_dir, k)) / f"{name}.png" for k in ks]
                if all(p.exists() for p in pngs):
                    contact_sheet(pngs, Path(tmp_dir) / f"{name}_by_k.jpg",
                                  title=f"{subject} · {model} {feature} · {what} at every context length k")
        summary = pd.DataFrame(rows)
        with atomic_path(Path(tmp_dir) / "summary.tsv") as tmp:
            summary.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return summary


def write_weights(path, ridge, dtype: str, delays, model: str, feature: str, k: int, n_features: int,
                  nuisance=None, across_stories: bool = False) -> None:
    """``weights.h5``: the ridge coefficients of the feature (``coef``, delays x features by voxels), alphas
    and delays; for a banded model also the nuisance bands' coefficients (``coef_nuisance``, their names
    ``nuisance``), the band weights (``gamma``, bands x voxels) and per-band penalties (``band_alpha``)."""
    import h5py

    dtype = np.dtype(dtype)
    coef = np.asarray(ridge.coef_)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset("coef", data=coef[:n_features].astype(dtype),
                          chunks=(n_features, min(coef.shape[1], 4096)))
        if nuisance is not None:
            fh.create_dataset("coef_nuisance", data=coef[n_features:].astype(dtype))
            fh.create_dataset("nuisance", data=np.array(list(nuisance), dtype=object), dtype=h5py.string_dtype())
            fh.create_dataset("gamma", data=np.asarray(ridge.best_gammas_, dtype=np.float32))
            fh.create_dataset("band_alpha", data=np.asarray(ridge.band_alphas_, dtype=np.float64))
        fh.create_dataset("alpha", data=np.asarray(ridge.best_alphas_, dtype=np.float64))
        fh.create_dataset("delays", data=np.asarray(delays, dtype=np.int64))
        fh.attrs.update({"model": model, "feature": feature, "context_length": int(k), "n_features": int(n_features),
                         "alpha_convention": "penalty (sklearn/himalaya)", "design": "per-story z-scored, FIR-delayed" + (" across stacked stories" if across_stories else ""),
                         "lmbrain_version": __version__, "coef_dtype": str(dtype)})


def _delay_sets(X: dict, sets, delays) -> dict:
    """``{story: matrix}`` FIR-delayed with the stories of each set (training, test) stacked in order
    (:func:`lmbrain.stimulus.delay_stories` with ``across_stories=True``)."""
    from ..stimulus import delay_stories

    out = {}
    for group in sets:
        out.update(zip(group, delay_stories([X[s] for s in group], tuple(delays), across_stories=True)))
    return out


def _nuisance(ds, subject: str, stories, tr_times: dict, enc, delays=None) -> tuple[list[str], dict]:
    """The nuisance bands of every story (:func:`lmbrain.encoding.nuisance_design`, FIR-delayed by
    ``delays``, default ``enc.delays``); phoneme_rate is dropped, with a log line, when a story's
    transcript has no phone tier."""
    from ..encoding import nuisance_design

    names = list(enc.nuisance)
    words = {s: ds.words(subject, s) for s in stories}
    include = bool(enc.phones_include_silence)  # the reference counts every interval, silences too
    phones = {s: ds.phones(subject, s, include_silence=include) for s in stories} if "phoneme_rate" in names else {}
    lacking = [s for s, p in phones.items() if p is None]
    if lacking:
        log.info("phoneme_rate skipped: no phone tier in the transcript of %s%s", ", ".join(lacking[:3]),
                 f" and {len(lacking) - 3} more stories" if len(lacking) > 3 else "")
        names.remove("phoneme_rate")
    delays = enc.delays if delays is None else delays
    return names, {s: nuisance_design(names, words[s], phones.get(s), tr_times[s], delays) for s in stories}


def write_predictions(path, pred: np.ndarray, stories: list[str], n_trs: list[int]) -> None:
    """Test-set predictions (float16, TRs x voxels) with the story of each TR: what bootstrap intervals
    over test blocks and the scrambling analyses start from."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset("pred", data=np.asarray(pred, dtype=np.float16), chunks=(pred.shape[0], min(pred.shape[1], 4096)))
        fh.create_dataset("story", data=np.array(stories, dtype=object), dtype=h5py.string_dtype())
        fh.create_dataset("n_trs", data=np.asarray(n_trs, dtype=np.int64))
