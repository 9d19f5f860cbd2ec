"""Stage ``encoding_model``: fit and evaluate every context length of one (subject, model, feature).

Reads the model's features of every story of the subject and the subject's responses (once, reused
for every k); for each k fits :class:`lmbrain.ridge.RidgeCV` on the training stories and scores the
test stories (:mod:`lmbrain.encoding`, :mod:`lmbrain.stats`). Writes, into ``<out>/k<k>/``:
``voxels.tsv``, ``weights.h5``, ``predictions.h5``, ``test_r.nii.gz``, ``test_r.png``/``.pdf``, and
``<out>/summary.tsv``; the folder appears only when complete (:func:`lmbrain.io.atomic_dir`).
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


def encoding_model(job: EncodingJob, subject: str, feature: str, out_dir, layout: Layout = DEFAULT,
                   progress: bool = False) -> pd.DataFrame:
    """Fit and evaluate ``feature`` of ``job.model`` for ``subject`` at every context length.

    Returns the summary table (one row per k); writes ``out_dir`` (see the module docstring).
    """
    from ..datasets import stacked_responses
    from ..encoding import EncodingError, design, parse_feature
    from ..plots import brain_map
    from ..ridge import RidgeCV, story_folds
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
    rows = []
    with atomic_dir(out_dir) as tmp_dir:
        for k in ks:
            tk = time.time()
            files = {s: layout.feature_file(model, s, k) for s in stories}
            X = design(files, kind, layer, tr_times, enc.delays)
            ridge = RidgeCV(alphas=np.asarray(enc.alphas, dtype=np.float64), cv=story_folds(enc.cv_folds, len(train)),
                            score=enc.score, search=enc.search, device=job.device, memory_gb=enc.memory_gb,
                            progress=False)
            ridge.fit(np.concatenate([X[s] for s in train]), Ytr, groups=groups)
            pred = ridge.predict(np.concatenate([X[s] for s in test]))
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
            folder = Path(k_folder(tmp_dir, k))
            with atomic_path(folder / "voxels.tsv") as tmp:
                table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
            n_features = X[train[0]].shape[1]
            write_weights(folder / "weights.h5", ridge, enc.weights_dtype, enc.delays, model, feature, k, n_features)
            write_predictions(folder / "predictions.h5", pred, test, [n_trs[s] for s in test])
            if space is not None:
                space.save_nifti(r.astype(np.float32), folder / "test_r.nii.gz")
                if enc.maps:
                    brain_map(r, space, surface, folder / "test_r.png", title=f"{subject} · {model} {feature} · k = {k} words",
                              label="test correlation r", vmin=0.0, vmax=max(0.1, float(np.nanpercentile(r, 99))),
                              cmap="inferno")
            row = {"k": k, "n_features": n_features, "mean_r": float(np.nanmean(r)),
                   "median_r": float(np.nanmedian(r)), "fraction_significant": float(table["significant"].mean()),
                   "seconds": time.time() - tk}
            rows.append(row)
            log.info("%s %s %s k=%d: %d features, mean r %.3f, %.1f%% voxels significant (q < %.2f), %.1f s", subject,
                     model, feature, k, row["n_features"], row["mean_r"], 100 * row["fraction_significant"], enc.fdr,
                     row["seconds"])
        summary = pd.DataFrame(rows)
        with atomic_path(Path(tmp_dir) / "summary.tsv") as tmp:
            summary.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return summary


def write_weights(path, ridge, dtype: str, delays, model: str, feature: str, k: int, n_features: int) -> None:
    """``weights.h5``: the ridge coefficients (``coef``, delays x features by voxels), alphas and delays."""
    import h5py

    dtype = np.dtype(dtype)
    coef = np.asarray(ridge.coef_)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset("coef", data=coef.astype(dtype), chunks=(coef.shape[0], min(coef.shape[1], 4096)))
        fh.create_dataset("alpha", data=np.asarray(ridge.best_alphas_, dtype=np.float64))
        fh.create_dataset("delays", data=np.asarray(delays, dtype=np.int64))
        fh.attrs.update({"model": model, "feature": feature, "context_length": int(k), "n_features": int(n_features),
                         "alpha_convention": "penalty (sklearn/himalaya)", "design": "per-story z-scored, FIR-delayed",
                         "lmbrain_version": __version__, "coef_dtype": str(dtype)})


def write_predictions(path, pred: np.ndarray, stories: list[str], n_trs: list[int]) -> None:
    """Test-set predictions (float16, TRs x voxels) with the story of each TR: what bootstrap intervals
    over test blocks and the scrambling analyses start from."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset("pred", data=np.asarray(pred, dtype=np.float16), chunks=(pred.shape[0], min(pred.shape[1], 4096)))
        fh.create_dataset("story", data=np.array(stories, dtype=object), dtype=h5py.string_dtype())
        fh.create_dataset("n_trs", data=np.asarray(n_trs, dtype=np.int64))
