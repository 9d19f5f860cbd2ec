"""Encoding models: language-model features -> every voxel, one ridge penalty per voxel.

For one subject, model and feature (a feature type at one layer, e.g. ``hidden-L2``) and each
context length k:

1. word-level features (``results/features/<model>/<story>/k<k>.h5``) are Lanczos-downsampled to the
   story's TR times (a sum over words), z-scored per story and FIR-delayed (default 1-4 TRs)
   (:func:`lmbrain.stimulus.tr_design`);
2. :class:`lmbrain.ridge.RidgeCV` fits the training stories, choosing each voxel's penalty by
   cross-validation over whole stories, never shuffled TRs (leave-one-story-out, or ``encoding.cv_folds``
   contiguous sets of stories);
3. the fitted model predicts the held-out test stories; each voxel gets its test correlation, a
   one-sided p-value from a block permutation of the test time series (blocks of ``block`` TRs keep
   the autocorrelation), Benjamini-Hochberg q-values across voxels, and the correlation normalised by
   the noise ceiling (Schoppe et al. 2016 ``CC_max`` from the repeated presentations of the test story).

Outputs per k (``<out>/k<k>/``): ``voxels.tsv`` (columns ``voxel``, ``alpha``, ``cv_score``,
``test_r``, ``noise_ceiling``, ``test_r_normalised``, ``p``, ``q``, ``significant``), ``weights.h5``
(coefficients ``(n_delays * d, n_voxels)`` in float16 by default, alphas, delays), ``predictions.h5``
(test-set predictions, float16, with the story of each block of TRs), ``test_r.nii.gz``
in the subject's space, and ``test_r.png``/``.pdf`` (a flatmap on the subject's pycortex surface when
the dataset names one, else orthogonal slices).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import LmbrainError, __version__
from .io import atomic_path

log = logging.getLogger(__name__)

FEATURE_KINDS = ("hidden", "heads", "entropy", "distance")
_FEATURE_RE = re.compile(r"^(hidden|heads|entropy|distance)-(L\d+|last)$")


class EncodingError(LmbrainError, ValueError):
    """Inputs of the encoding stage that cannot be used."""


def parse_feature(name: str) -> tuple[str, int | None]:
    """``"hidden-L2"`` -> ``("hidden", 2)``; ``"heads-last"`` -> ``("heads", None)`` (the highest saved layer)."""
    m = _FEATURE_RE.match(name)
    if not m:
        raise EncodingError(f"feature {name!r}: expected <kind>-L<layer> or <kind>-last with kind in "
                            f"{', '.join(FEATURE_KINDS)}")
    return m.group(1), (None if m.group(2) == "last" else int(m.group(2)[1:]))


def feature_names(spec: dict, encoding: dict) -> list[str]:
    """The feature folders fitted for a model: ``encoding.features`` x (``encoding.layers`` of the model).

    ``encoding.layers``: ``last`` (the highest layer the model saves), ``all`` (every saved layer; needs
    explicit ``layers`` for HuggingFace models, whose depth is unknown before loading).
    Attention kinds apply only to models with attention, and never to layer 0.
    """
    from .modelspec import ATTENTION_TYPES, n_layers_of

    kinds = encoding.get("features", ["hidden"])
    has_attention = spec["type"] in ATTENTION_TYPES and spec.get("attention_features", True)
    if spec["type"] == "huggingface":
        saved = spec["layers"]
    elif spec["layers"] is not None:
        n = n_layers_of(spec)
        saved = sorted({l + (n + 1 if l < 0 else 0) for l in spec["layers"]})
    else:
        saved = list(range(n_layers_of(spec) + 1))
    mode = encoding.get("layers", "last")
    if mode == "last":
        chosen = [max(saved)] if saved is not None else ["last"]
    else:
        if saved is None:
            raise EncodingError("encoding.layers: all needs the HuggingFace model's 'layers' listed in its config")
        chosen = saved
    out = []
    for kind in kinds:
        for layer in chosen:
            if kind != "hidden" and (not has_attention or layer == 0):
                continue
            out.append(f"{kind}-" + ("last" if layer == "last" else f"L{layer}"))
    return out


# ------------------------------------------------------------------------------------------
def story_tr_features(path: str | os.PathLike, kind: str, layer: int | None, tr_times: np.ndarray) -> np.ndarray:
    """One story's word features of ``kind`` at ``layer`` downsampled to ``tr_times``: ``(n_trs, d)`` float64."""
    from .features import feature_info, read_features
    from .stimulus import downsample

    if layer is None:
        info = feature_info(path)
        layers = list(info["attrs"].get("attention_layers" if kind != "hidden" else "layers", []))
        if not layers:
            raise EncodingError(f"{path}: no {kind} features saved")
        layer = int(max(layers))
    values = read_features(path, layer=layer, kind=kind)
    values = values.reshape(values.shape[0], -1)
    times = read_features(path, kind="time")
    if not np.all(np.isfinite(values)):
        raise EncodingError(f"{path}: {kind} features of layer {layer} contain NaN or infinite values")
    return downsample(values, times, tr_times)


def design(feature_dir: str | os.PathLike, stories: list[str], kind: str, layer, k: int, tr_times: dict,
           delays) -> dict[str, np.ndarray]:
    """``{story: (n_trs, d * len(delays)) float32}``: downsampled, z-scored per story, FIR-delayed."""
    from .stimulus import tr_design

    out = {}
    for story in stories:
        path = Path(feature_dir) / story / f"k{k}.h5"
        if not path.exists():
            raise EncodingError(f"{path}: feature file missing (run extract_features for this model and story)")
        out[story] = tr_design(story_tr_features(path, kind, layer, tr_times[story]), delays=tuple(delays))
    return out


def _flatmap_or_slices(values, space, surface, png, title, label, vmin, vmax, cmap="inferno"):
    from .plots import brain_map

    return brain_map(values, space, surface, png, title=title, label=label, vmin=vmin, vmax=vmax, cmap=cmap)


def fit_encoding(config: dict, subject: str, model: str, feature: str, features_root: str | os.PathLike,
                 out_dir: str | os.PathLike, progress: bool = True) -> pd.DataFrame:
    """What the ``encoding_model`` rule does: fit and evaluate every context length of one feature.

    Returns a summary table (one row per k). Responses are read once and reused for every k.
    """
    from .datasets import open_dataset, stacked_responses
    from .features import context_lengths_for
    from .modelspec import check_models
    from .ridge import RidgeCV, story_folds
    from .stats import block_permutation_pvalues, fdr_bh, noise_ceiling

    enc = config.get("encoding", {})
    models = check_models(config)
    if model not in models:
        raise EncodingError(f"no model {model!r} in the config")
    kind, layer = parse_feature(feature)
    ks = context_lengths_for(config, models[model])
    ds = open_dataset(config["dataset"]["layout"], config["dataset"]["root"], tr=config.get("tr", 2.0))
    train, test = ds.split(subject, config["stories"]["train"], config["stories"]["test"])
    stories = train + test
    tr_times = {s: ds.tr_times(s, subject) for s in stories}
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
    out_dir = Path(out_dir)
    rows = []
    for k in ks:
        tk = time.time()
        X = design(Path(features_root) / model, stories, kind, layer, k, tr_times, enc.get("delays", [1, 2, 3, 4]))
        ridge = RidgeCV(alphas=np.asarray(enc.get("alphas", np.logspace(0, 6, 13).tolist()), dtype=np.float64),
                        cv=story_folds(enc.get("cv_folds"), len(train)), score=enc.get("score", "r2"), search=enc.get("search", "refine"),
                        device=config.get("device", "auto"), memory_gb=enc.get("memory_gb", 2.0), progress=False)
        ridge.fit(np.concatenate([X[s] for s in train]), Ytr, groups=groups)
        pred = ridge.predict(np.concatenate([X[s] for s in test]))
        r, p = block_permutation_pvalues(pred, Yte, n_permutations=enc.get("n_permutations", 1000),
                                         block=enc.get("block", 10), seed=int(config.get("seed", 0)) + k)
        p[bad] = np.nan
        q = fdr_bh(p)
        with np.errstate(invalid="ignore", divide="ignore"):
            r_norm = r / ceiling
        table = pd.DataFrame({
            "voxel": np.arange(len(r)), "alpha": ridge.best_alphas_, "cv_score": ridge.best_scores_, "test_r": r,
            "noise_ceiling": ceiling, "test_r_normalised": r_norm, "p": p, "q": q,
            "significant": (q < enc.get("fdr", 0.05)) & ~bad,
        })
        folder = out_dir / f"k{k}"
        with atomic_path(folder / "voxels.tsv") as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        _write_weights(folder / "weights.h5", ridge, enc, model, feature, k, X[train[0]].shape[1])
        _write_predictions(folder / "predictions.h5", pred, test, [n_trs[s] for s in test])
        if space is not None:
            space.save_nifti(r.astype(np.float32), folder / "test_r.nii.gz")
            if enc.get("maps", True):
                _flatmap_or_slices(r, space, surface, folder / "test_r.png",
                                   title=f"{subject} · {model} {feature} · k = {k} words",
                                   label="test correlation r", vmin=0.0, vmax=max(0.1, float(np.nanpercentile(r, 99))))
        row = {"k": k, "n_features": X[train[0]].shape[1], "mean_r": float(np.nanmean(r)),
               "median_r": float(np.nanmedian(r)), "fraction_significant": float(table["significant"].mean()),
               "seconds": time.time() - tk}
        rows.append(row)
        log.info("%s %s %s k=%d: %d features, mean r %.3f, %.1f%% voxels significant (q < %.2f), %.1f s", subject,
                 model, feature, k, row["n_features"], row["mean_r"], 100 * row["fraction_significant"],
                 enc.get("fdr", 0.05), row["seconds"])
    summary = pd.DataFrame(rows)
    with atomic_path(out_dir / "summary.tsv") as tmp:
        summary.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return summary


def _write_weights(path: Path, ridge, enc: dict, model: str, feature: str, k: int, n_features: int) -> None:
    import h5py

    dtype = np.dtype(enc.get("weights_dtype", "float16"))
    coef = np.asarray(ridge.coef_)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset("coef", data=coef.astype(dtype), chunks=(coef.shape[0], min(coef.shape[1], 4096)))
        fh.create_dataset("alpha", data=np.asarray(ridge.best_alphas_, dtype=np.float64))
        fh.create_dataset("delays", data=np.asarray(enc.get("delays", [1, 2, 3, 4]), dtype=np.int64))
        fh.attrs.update({"model": model, "feature": feature, "context_length": int(k), "n_features": int(n_features),
                         "alpha_convention": "penalty (sklearn/himalaya)", "design": "per-story z-scored, FIR-delayed",
                         "lmbrain_version": __version__, "coef_dtype": str(dtype)})


def _write_predictions(path: Path, pred: np.ndarray, stories: list[str], n_trs: list[int]) -> None:
    """Test-set predictions (float16, TRs x voxels) with the story of each TR: what bootstrap intervals
    over test blocks and the scrambling analyses start from."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset("pred", data=np.asarray(pred, dtype=np.float16), chunks=(pred.shape[0], min(pred.shape[1], 4096)))
        fh.create_dataset("story", data=np.array(stories, dtype=object), dtype=h5py.string_dtype())
        fh.create_dataset("n_trs", data=np.asarray(n_trs, dtype=np.int64))


def read_voxels(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise EncodingError(f"{path}: not found (run the encoding_model rule)")
    return pd.read_csv(path, sep="\t")
