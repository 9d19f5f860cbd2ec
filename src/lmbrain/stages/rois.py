"""Stages ``rois`` and ``group``: TRW per region of interest for each subject, and group results.

``rois`` (one subject, one model) reads the model's TRW table (``results/<subject>/trw/<model>/voxels.tsv``:
``significant``, ``trw_words``, ``trw_seconds``, ``test_r_best`` and, with scrambling, ``scramble_class``),
builds the subject's ROIs from ``rois.source`` (:func:`subject_rois`) and writes into
``results/<subject>/rois/<model>/``:

- ``rois.tsv``: :func:`lmbrain.rois.roi_summary` per ROI (voxel counts, median test r, median TRW over
  the significant voxels with a percentile bootstrap interval over voxels, scrambling-class shares), plus
  ``too_small`` (fewer than ``rois.min_voxels`` voxels: TRW statistics NaN, the row kept so that every
  subject's table has the same rows);
- ``rois.png`` / ``rois.pdf``: ROI x TRW, significant voxels as points, median and interval, ROIs ordered
  by median TRW (:func:`lmbrain.plots_rois.roi_trw_strip`);
- ``rois.nii.gz`` / ``rois_labels.tsv``: the subject's ROIs as a label image on its grid (when disjoint).

``group`` (one model) reads every subject's ``rois.tsv`` and writes into ``results/group/<model>/``:

- ``group.tsv``: :func:`lmbrain.group.group_table` (per ROI each subject's median TRW and test r, the
  across-subject geometric mean TRW and mean r (Fisher z) with t intervals);
- ``ordering.tsv``: :func:`lmbrain.group.ordering_test` on log2 median TRW for ``rois.order`` (a sign-flip
  test that the last group's windows exceed the first group's, and a rank-order test of the whole
  order); a row with NaN and a ``note`` when it cannot be run (one subject, an ROI without a value);
- ``group.png`` / ``group.pdf``: :func:`lmbrain.plots_rois.group_rois`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import GroupJob, RoiSettings, RoisJob
from ..io import atomic_dir, atomic_path
from .common import open_job_dataset

log = logging.getLogger("lmbrain.rois")

ORDERING_COLUMNS = ["test", "statistic", "p_value", "n_subjects", "n_permutations", "exact", "alternative",
                    "hypothesis", "note"]


def subject_rois(settings: RoiSettings, ds, subject: str, dataset_root):
    """The subject's :class:`lmbrain.rois.RoiSet` over its voxel columns, from ``settings.source``.

    Raises
    ------
    lmbrain.rois.RoiError
        Naming the file or key (an ROI name the source lacks lists the available ones; a label image on
        another grid names the image).
    """
    from ..rois import RoiError, bids_dseg_rois, label_image_rois, pycortex_rois

    space = ds.voxel_space(subject)
    if space is None:
        raise RoiError(f"subject {subject}: the dataset has no voxel grid (cortical mask) for it, so its columns "
                       "cannot be placed in ROIs")
    names = list(settings.names) if settings.names is not None else None
    if settings.source == "pycortex":
        surface = ds.pycortex_surface(subject) if hasattr(ds, "pycortex_surface") else None
        psub = settings.pycortex_subject or (surface or {}).get("subject")
        xfm = settings.pycortex_xfm or (surface or {}).get("xfm")
        if not psub or not xfm:
            raise RoiError(f"subject {subject}: no pycortex subject and transform (no derivative/pycortex-db/"
                           f"{subject}/surface.json); set rois.pycortex_subject and rois.pycortex_xfm, or use "
                           "rois.source labels")
        sampler = (surface or {}).get("mask", "thick")
        return pycortex_rois(psub, xfm, names, voxel_space=space, gm_sampler=sampler, overlap=settings.overlap,
                             cache_dir=settings.cache_dir)
    if settings.source == "labels":
        image = settings.label_image.replace("{subject}", subject)
        table = settings.label_table.replace("{subject}", subject)
        return label_image_rois(image, table, space, names)
    if settings.source == "bids":
        return bids_dseg_rois(dataset_root, subject, space, names, desc=settings.bids_desc)
    raise RoiError(f"rois.source is {settings.source!r}: no ROIs")


def rois(job: RoisJob, subject: str, model: str, trw_dir, out_dir) -> pd.DataFrame:
    """Per-ROI TRW summary, figure and label image of ``subject`` and ``model`` (module docstring)."""
    from ..plots_rois import roi_trw_strip
    from ..rois import RoiError, roi_summary, write_label_image

    r = job.rois
    path = Path(trw_dir) / "voxels.tsv"
    if not path.exists():
        raise RoiError(f"{path}: missing (run the trw rule)")
    voxels = pd.read_csv(path, sep="\t")
    if "trw_centroid" in voxels.columns:  # the trw stage's primary estimate is the TRW summarised per ROI
        voxels = voxels.assign(trw_words=voxels["trw_centroid"])
        if "trw_centroid_seconds" in voxels.columns:
            voxels = voxels.assign(trw_seconds=voxels["trw_centroid_seconds"])
    ds = open_job_dataset(job.dataset)
    roiset = subject_rois(r, ds, subject, job.dataset.root)
    summary = roi_summary(voxels, roiset, n_boot=r.n_boot, seed=job.seed, min_significant=r.min_significant)
    small = summary["n_voxels"].to_numpy() < r.min_voxels
    stats = [c for c in summary.columns if c.startswith(("median_trw", "trw_"))]
    summary.loc[small, stats] = np.nan
    summary.insert(3, "too_small", small)
    if small.any():
        log.info("%s: ROI(s) with fewer than %d voxels (rois.min_voxels) get no TRW statistics: %s", subject,
                 r.min_voxels, ", ".join(f"{n} ({c})" for n, c in zip(summary["roi"][small], summary["n_voxels"][small])))
    with atomic_dir(out_dir) as tmp:
        tmp = Path(tmp)
        with atomic_path(tmp / "rois.tsv") as p:
            summary.to_csv(p, sep="\t", index=False, float_format="%.6g")
        roi_trw_strip(voxels, roiset, summary, tmp / "rois.png", title=f"{subject} · {model}", seed=job.seed)
        space = ds.voxel_space(subject)
        if not roiset.overlapping().any():
            write_label_image(roiset, space, tmp / "rois.nii.gz", tmp / "rois_labels.tsv")
    log.info("%s %s: %d ROIs; median TRW (words) %s", subject, model, len(summary),
             ", ".join(f"{n} {m:.3g}" for n, m in zip(summary["roi"], summary["median_trw_words"])))
    return summary


def read_rois_table(folder) -> pd.DataFrame:
    from ..group import GroupError

    path = Path(folder) / "rois.tsv"
    if not path.exists():
        raise GroupError(f"{path}: missing (run the rois rule)")
    return pd.read_csv(path, sep="\t", dtype={"roi": str})


def group(job: GroupJob, model: str, rois_dirs: dict, out_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Group table, ordering test and figure of ``model`` over the subjects of ``rois_dirs``
    (``{subject: results/<subject>/rois/<model>}``); see the module docstring."""
    from ..group import group_table
    from ..plots_rois import group_rois

    per_subject = {s: read_rois_table(d) for s, d in rois_dirs.items()}
    table = group_table(per_subject, columns=("median_trw_words", "median_test_r"), seed=job.seed)
    ordering = ordering_result(per_subject, job.group.order, job.group.n_perm, job.seed)
    with atomic_dir(out_dir) as tmp:
        tmp = Path(tmp)
        with atomic_path(tmp / "group.tsv") as p:
            table.to_csv(p, sep="\t", index=False, float_format="%.6g")
        with atomic_path(tmp / "ordering.tsv") as p:
            ordering.to_csv(p, sep="\t", index=False, float_format="%.6g")
        group_rois(per_subject, table, tmp / "group.png", title=model)
    for row in ordering.itertuples(index=False):
        log.info("%s: %s %s: statistic %.3g, p = %.3g%s", model, row.test, row.hypothesis, row.statistic,
                 row.p_value, f" ({row.note})" if isinstance(row.note, str) and row.note else "")
    return table, ordering


def ordering_result(per_subject: dict, order, n_perm: int, seed: int) -> pd.DataFrame:
    """:func:`lmbrain.group.ordering_test` of log2 median TRW, or one row saying why it was not run."""
    from ..group import GroupError, ordering_test, roi_matrix

    groups = [list(g) for g in order]
    hypothesis = " < ".join("+".join(g) for g in groups)
    if not groups:
        return pd.DataFrame([dict(test="none", hypothesis="", note="no rois.order given")], columns=ORDERING_COLUMNS)
    subjects = list(per_subject)
    note = None
    if len(subjects) < 2:
        note = f"needs at least 2 subjects, got {len(subjects)}"
    else:
        try:
            values, subjects, names = roi_matrix(per_subject, "median_trw_words")
            with np.errstate(divide="ignore", invalid="ignore"):
                out = ordering_test(np.log2(values), names, groups, n_perm=n_perm, seed=seed, subjects=subjects)
            out["note"] = ""
            return out[ORDERING_COLUMNS]
        except GroupError as exc:
            note = str(exc)
    rows = [dict(test="sign-flip contrast", hypothesis=f"{'+'.join(groups[-1])} > {'+'.join(groups[0])}"),
            dict(test="rank order (mean Spearman)", hypothesis=hypothesis)]
    for row in rows:
        row.update(statistic=np.nan, p_value=np.nan, n_subjects=len(subjects), n_permutations=0, exact=False,
                   alternative="greater", note=note)
    return pd.DataFrame(rows, columns=ORDERING_COLUMNS)
