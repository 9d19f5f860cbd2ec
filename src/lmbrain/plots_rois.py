"""ROI figures (matplotlib, Agg; PNG and PDF side by side through :func:`lmbrain.plots.save_figure`).

- :func:`roi_trw_strip`: one subject, ROI x TRW: significant voxels as points, the ROI median with
  its bootstrap interval; ROIs ordered by median TRW.
- :func:`group_rois`: several subjects, subjects as points per ROI, across-subject mean and interval.
- :func:`roi_outlines` / :func:`add_roi_outlines` / :func:`roi_flatmap`: ROI outlines of a pycortex
  subject's ``overlays.svg`` drawn on a flatmap with matplotlib (pycortex's own ``with_rois`` needs
  Inkscape, which lmbrain never requires).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .plots import _pyplot, save_figure

_COLUMN_LABELS = {"trw_words": "temporal receptive window (words)", "trw_seconds": "temporal receptive window (s)",
                  "test_r": "test correlation r"}


def _order_by(values, names) -> list[int]:
    """Indices sorting ``values`` ascending, NaN last, ties by name."""
    v = np.asarray(values, dtype=np.float64)
    return sorted(range(len(v)), key=lambda i: (not np.isfinite(v[i]), v[i] if np.isfinite(v[i]) else 0, names[i]))


def roi_trw_strip(voxels: pd.DataFrame, rois, summary: pd.DataFrame, png, title: str = "",
                  column: str = "trw_words", seed: int = 0) -> list[Path]:
    """Strip plot of one subject's TRW per ROI.

    Parameters
    ----------
    voxels : DataFrame, n_voxels rows
        The TRW table (``significant`` and ``column``).
    rois : lmbrain.rois.RoiSet
        Masks over the same voxels.
    summary : DataFrame
        :func:`lmbrain.rois.roi_summary` of the same (``median_<column>``, ``<column>_low``,
        ``<column>_high``, ``n_significant``, ``n_voxels``).
    png : path
        Output; a PDF is written beside it.
    column : str
        ``"trw_words"`` or ``"trw_seconds"`` (log2 axis).
    seed : int
        Horizontal jitter of the points.

    Returns
    -------
    list of Path
        The PNG and PDF written.
    """
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator

    summ = summary.set_index("roi")
    names = list(rois.names)
    med = summ.reindex(names)[f"median_{column}"].to_numpy(dtype=np.float64)
    order = _order_by(med, names)
    sig = voxels["significant"].to_numpy(dtype=bool)
    vals = voxels[column].to_numpy(dtype=np.float64) if column in voxels else np.full(len(voxels), np.nan)
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.75 * len(names) + 1.5), 4.2))
    labels = []
    for x, i in enumerate(order):
        name = names[i]
        y = vals[rois.masks[i] & sig & np.isfinite(vals)]
        if len(y):
            ax.scatter(x + rng.uniform(-0.28, 0.28, len(y)), y, s=7, alpha=0.35, color="tab:blue", lw=0,
                       rasterized=len(y) > 500)
        row = summ.loc[name]
        if np.isfinite(row[f"median_{column}"]):
            ax.errorbar([x], [row[f"median_{column}"]],
                        yerr=[[row[f"median_{column}"] - row[f"{column}_low"]],
                              [row[f"{column}_high"] - row[f"median_{column}"]]],
                        fmt="D", color="black", ms=6, capsize=5, lw=1.6, zorder=5)
        labels.append(f"{name}\n{int(row['n_significant'])}/{int(row['n_voxels'])}")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_locator(LogLocator(base=2))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylabel(_COLUMN_LABELS.get(column, column))
    ax.set_xlabel("ROI (significant / all voxels), ordered by median TRW")
    ax.grid(axis="y", color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    ax.set_title((f"{title} · " if title else "") + "TRW per ROI: significant voxels, median and bootstrap interval",
                 fontsize=10)
    if not sig.any():
        ax.text(0.5, 0.5, "no significant voxels", transform=ax.transAxes, ha="center", color="0.4")
    fig.tight_layout()
    return save_figure(fig, png)


def group_rois(per_subject: dict, group: pd.DataFrame, png, columns=("median_trw_words", "median_test_r"),
               title: str = "") -> list[Path]:
    """Group figure: per ROI, each subject's value as a point and the across-subject mean with its interval.

    Parameters
    ----------
    per_subject : dict
        ``{subject: roi_summary DataFrame}``.
    group : DataFrame
        :func:`lmbrain.group.group_table` of the same (``mean_<x>``, ``<x>_low``, ``<x>_high``).
    png : path
    columns : sequence of str
        One panel per column; ROIs ordered by the first column's group mean (TRW columns on a log2 axis).

    Returns
    -------
    list of Path
    """
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator

    from .group import FISHER_COLUMNS, LOG_COLUMNS, stack_subjects

    long = stack_subjects(per_subject)
    subjects = list(dict.fromkeys(long["subject"]))
    g = group.set_index("roi")
    rois = list(g.index)
    key = columns[0][len("median_"):] if columns[0].startswith("median_") else columns[0]
    order = [rois[i] for i in _order_by(g[f"mean_{key}"].to_numpy(dtype=np.float64), rois)]
    colours = plt.get_cmap("tab10" if len(subjects) <= 10 else "tab20").colors
    fig, axes = plt.subplots(1, len(columns), figsize=(max(4.5, 0.7 * len(order) + 2) * len(columns) / 1.4, 4.2),
                             squeeze=False)
    offsets = (np.arange(len(subjects)) - (len(subjects) - 1) / 2) * min(0.08, 0.6 / max(1, len(subjects)))
    for ax, col in zip(axes[0], columns):
        x_name = col[len("median_"):] if col.startswith("median_") else col
        for k, s in enumerate(subjects):
            t = long[long["subject"] == s].set_index("roi").reindex(order)
            y = t[col].to_numpy(dtype=np.float64)
            xs = np.arange(len(order)) + offsets[k]
            ax.plot(xs, y, "-", color=colours[k % len(colours)], lw=0.6, alpha=0.5)
            ax.plot(xs, y, "o", color=colours[k % len(colours)], ms=5, label=s)
        m = g.loc[order, f"mean_{x_name}"].to_numpy(dtype=np.float64)
        lo = g.loc[order, f"{x_name}_low"].to_numpy(dtype=np.float64)
        hi = g.loc[order, f"{x_name}_high"].to_numpy(dtype=np.float64)
        yerr = [np.where(np.isfinite(lo), m - lo, 0), np.where(np.isfinite(hi), hi - m, 0)]
        ax.errorbar(np.arange(len(order)), m, yerr=yerr,
                    fmt="_", color="black", ms=22, mew=2.2, capsize=6, lw=1.4, zorder=5, label="mean, CI")
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(order, rotation=45 if len(order) > 8 else 0, ha="right" if len(order) > 8 else "center")
        ax.set_xlim(-0.6, len(order) - 0.4)
        values = long[col].to_numpy(dtype=np.float64)
        if not (np.isfinite(values) & (values > 0)).any():  # nothing to draw (e.g. no significant voxels)
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", color="0.4")
        elif col in LOG_COLUMNS:
            ax.set_yscale("log", base=2)
            ax.yaxis.set_major_locator(LogLocator(base=2))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        label = _COLUMN_LABELS.get(x_name, x_name)
        mean_kind = "geometric mean" if col in LOG_COLUMNS else "mean of Fisher z" if col in FISHER_COLUMNS else "mean"
        ax.set_ylabel(f"{label}\nsubject medians; {mean_kind}")
        ax.grid(axis="y", color="0.9", lw=0.6)
        ax.set_axisbelow(True)
    axes[0][-1].legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle((f"{title} · " if title else "") + f"{len(subjects)} subjects, ROIs ordered by group TRW",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, png)


# ------------------------------------------------------------------------------------------
# ROI outlines on pycortex flatmaps
def roi_outlines(subject: str, roi_names=None, filestore=None) -> dict:
    """Outlines of the ROIs drawn in a pycortex subject's ``overlays.svg``, in flatmap coordinates.

    The SVG's coordinates span the flat surface's bounding box (y flipped), which is also the extent
    of pycortex's flatmap images, so the outlines can be drawn on a ``quickflat`` figure's axes.

    Parameters
    ----------
    subject : str
    roi_names : list of str, optional
        Default: every drawn ROI. Unknown names raise :class:`lmbrain.rois.RoiError`.
    filestore : path, optional

    Returns
    -------
    dict
        ``{name: [matplotlib.path.Path, ...]}`` (one path per drawn outline).
    """
    from matplotlib.transforms import Affine2D

    from .rois import RoiError, _drawn_rois, _overlays_path, _pycortex_filestore

    with _pycortex_filestore(filestore, subject) as db:
        from cortex import svgoverlay

        svg_path = _overlays_path(db, subject)
        drawn, _ = _drawn_rois(svg_path)
        names = drawn if roi_names is None else [str(r) for r in roi_names]
        bad = [n for n in names if n not in drawn]
        if bad:
            raise RoiError(f"{svg_path}: ROI(s) {', '.join(bad)} not drawn in the overlays; "
                           f"available: {', '.join(drawn)}")
        svg = svgoverlay.SVGOverlay(str(svg_path))
        pts, _ = db.get_surf(subject, "flat", merge=True, nudge=True)
    lo, hi = pts[:, :2].min(axis=0), pts[:, :2].max(axis=0)
    w, h = svg.svgshape
    # SVG units, y down -> flat-surface units, y up
    to_flat = (Affine2D().scale(1, -1).translate(0, h).scale((hi[0] - lo[0]) / w, (hi[1] - lo[1]) / h)
               .translate(lo[0], lo[1]))
    shapes = svg.layers["rois"].shapes
    return {n: [to_flat.transform_path(p) for p in shapes[n].splines] for n in names}


def add_roi_outlines(ax, subject: str, roi_names=None, color: str = "white", linewidth: float = 1.2,
                     labels: bool = True, filestore=None) -> dict:
    """Draw ROI outlines (and their names, with matplotlib text) on a pycortex flatmap's axes.

    Parameters
    ----------
    ax : matplotlib Axes
        The axes of ``cortex.quickflat.make_figure`` (flatmap coordinates).
    subject, roi_names, filestore
        See :func:`roi_outlines`.

    Returns
    -------
    dict
        The outlines drawn (``{name: [Path, ...]}``).
    """
    import matplotlib.patheffects as pe
    from matplotlib.patches import PathPatch

    outlines = roi_outlines(subject, roi_names, filestore)
    for name, paths in outlines.items():
        for p in paths:
            ax.add_patch(PathPatch(p, fill=False, ec=color, lw=linewidth, zorder=10))
            if labels:
                v = p.vertices if p.codes is None else p.vertices[p.codes != p.CLOSEPOLY]
                if len(v):
                    cx, cy = (v.min(axis=0) + v.max(axis=0)) / 2
                    ax.text(cx, cy, name, color=color, fontsize=7, ha="center", va="center", zorder=11,
                            path_effects=[pe.withStroke(linewidth=1.5, foreground="black")])
    return outlines


def roi_flatmap(values, space, surface: dict | None, png, roi_names=None, title: str = "", label: str = "",
                vmin=None, vmax=None, cmap: str = "viridis", log_scale: bool = False, filestore=None) -> list[Path]:
    """A per-voxel map on the subject's pycortex flatmap with ROI outlines.

    Same arguments as :func:`lmbrain.plots.brain_map` plus ``roi_names`` (default: every drawn ROI)
    and ``filestore``. Without a pycortex surface (``surface`` None), or on a grid that is not the
    surface's, it falls back to :func:`lmbrain.plots.brain_map` (slices, no outlines).
    """
    from matplotlib.colors import LogNorm, Normalize

    from .plots import _MAP_INCHES, _scale, brain_map, flatmap_figure, flatmap_height
    from .rois import _pycortex_filestore

    fig, dpi = None, 150
    if surface:
        vol = space.unmask(np.asarray(values, dtype=np.float64)).astype(np.float64)
        with _pycortex_filestore(filestore, surface["subject"]):
            fig = flatmap_figure(vol, space, surface, vmin, vmax, cmap, log_scale, height=flatmap_height(dpi))
    if fig is None:  # no surface, or a grid that is not the surface's: slices without outlines
        return brain_map(values, space, surface, png, title=title, label=label, vmin=vmin, vmax=vmax, cmap=cmap,
                         log_scale=log_scale)
    fig.set_size_inches(*_MAP_INCHES)
    ax = fig.axes[0]
    add_roi_outlines(ax, surface["subject"], roi_names, filestore=filestore)
    _scale(fig, ax, LogNorm(vmin=vmin, vmax=vmax) if log_scale else Normalize(vmin=vmin, vmax=vmax), cmap, label, None)
    ax.set_title(title)
    return save_figure(fig, png, dpi=dpi)
