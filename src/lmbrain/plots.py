"""Figures (matplotlib, Agg): each saved as PNG and vector PDF, atomically."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .io import atomic_path

_MAP_INCHES = (10, 5.2)  # a brain map's figure size (width, height)

# groups of voxels by temporal receptive window (words) in the TRW figures
TRW_GROUPS = (("TRW 1-4 words", 1, 4), ("TRW 8-32 words", 8, 32), ("TRW 64+ words", 64, np.inf))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def tight_bbox(fig, dpi: float):
    """The box (inches) that ``savefig(bbox_inches="tight", dpi=dpi)`` crops a PNG to, padded by
    ``savefig.pad_inches``, found without computing any image's pixels.

    matplotlib finds that box with a layout pass that draws the whole figure with drawing switched off,
    but still resamples every image (a flatmap's curvature and data, 780 pixels high at 150 dpi) before discarding
    it, and it repeats the pass for each format saved. An image's extent, which is all the box needs,
    does not depend on its pixels, so here the images return nothing during the one layout pass
    (at the PNG's dpi, on the Agg renderer, as matplotlib's pass for a PNG): the PNG is the same, byte for
    byte, for half the drawing, and the PDF gets the same box (matplotlib's own pass for a PDF measures
    text with the PDF's font metrics, a fraction of a point away)."""
    import matplotlib as mpl

    # the axes' images and the figure's own, through public API (an image added as a plain artist is
    # resampled in the pass, as matplotlib's own pass does)
    images = [a for a in [*(i for ax in fig.axes for i in ax.get_images()), *fig.images] if "make_image" not in vars(a)]
    for image in images:
        image.make_image = lambda *args, **kwargs: (None, 0, 0, None)
    old_dpi = fig.dpi
    try:
        fig.dpi = dpi
        fig.draw_without_rendering()
        box = fig.get_tightbbox()
    finally:
        fig.dpi = old_dpi
        for image in images:
            del image.make_image
    return box.padded(mpl.rcParams["savefig.pad_inches"])


def save_figure(fig, png: str | os.PathLike, dpi: int = 150, vector: bool = True) -> list[Path]:
    """Write ``png`` and (``vector``) the same figure as a PDF beside it (``x.png`` -> ``x.pdf``), each
    cropped as ``bbox_inches="tight"`` would (one layout pass for both: :func:`tight_bbox`).

    The PNG is stored with a 256-colour palette (:func:`palette_png`): a third of the RGBA file's size,
    which keeps the HTML report (every figure embedded) small; the PDF is the exact, vector figure, written
    without matplotlib's creation date so that two runs write the same bytes (the PNG holds none)."""
    import io

    png = Path(png)
    box = tight_bbox(fig, dpi)
    out = []
    for path in (png, png.with_suffix(".pdf")) if vector else (png,):
        with atomic_path(path) as tmp:
            if path.suffix == ".png":
                buf = io.BytesIO()
                fig.savefig(buf, dpi=dpi, bbox_inches=box, format="png", pil_kwargs={"compress_level": 1})
                palette_png(buf, tmp)
            else:  # no creation date: a PDF of the same figure is the same file, run after run
                fig.savefig(tmp, dpi=dpi, bbox_inches=box, format=path.suffix[1:], metadata={"CreationDate": None})
        out.append(path)
    _pyplot().close(fig)
    return out


def palette_png(source, target) -> None:
    """Re-save the PNG ``source`` (a path or file object) to ``target`` with a 256-colour palette (median
    cut, no dithering). A matplotlib figure's colours are a colormap's 256 levels, text and lines: the
    palette changes an average pixel by under 0.1 of 255 levels (a few anti-aliased edge pixels by more)
    and the file is 2.5-3x smaller. An image with transparency is kept as it is."""
    from PIL import Image

    with Image.open(source) as im:
        im.load()
        if im.mode in ("RGBA", "LA") and im.getchannel("A").getextrema()[0] < 255:
            im.save(target, format="png")
            return
        im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            target, format="png")


def training_curves(table, curve, png: str | os.PathLike, title: str = "") -> list[Path]:
    """Training report: loss over optimisation steps, and perplexity per epoch against a unigram model.

    table: per-epoch rows with ``epoch``, ``train_perplexity``, ``heldout_perplexity``,
    ``unigram_perplexity``, ``steps``; curve: ``[(step, mean training loss), ...]``.
    """
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    if len(curve):
        c = np.asarray(curve, dtype=float)
        a.plot(c[:, 0], c[:, 1], lw=1, color="C0", label="training (running mean)")
    a.plot(table["steps"], np.log(table["heldout_perplexity"]), "o-", color="C1", label="held-out")
    a.set_xlabel("optimisation step")
    a.set_ylabel("cross-entropy (nats per word)")
    a.legend(frameon=False)
    a.set_title("loss")
    b.plot(table["epoch"], table["train_perplexity"], "o-", color="C0", label="training")
    b.plot(table["epoch"], table["heldout_perplexity"], "o-", color="C1", label="held-out")
    if "unigram_perplexity" in table:
        b.axhline(float(table["unigram_perplexity"].iloc[0]), color="0.5", ls="--", label="unigram baseline")
    b.set_yscale("log")
    b.set_xlabel("epoch")
    b.set_ylabel("perplexity (words)")
    b.set_xticks(list(table["epoch"]))
    b.legend(frameon=False)
    b.set_title("perplexity")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, png)


def _fill_gaps(vol: np.ndarray, within: np.ndarray, sampled: np.ndarray) -> np.ndarray:
    """Give voxels of ``within`` that the dataset does not sample the value of the nearest sampled voxel.

    Only unsampled voxels are filled (from sampled ones, NaN included): a sampled voxel that is NaN,
    e.g. a non-significant one, stays NaN and never spreads its neighbours' values.
    """
    from scipy import ndimage

    if sampled.all() or not sampled.any():
        return vol
    _, idx = ndimage.distance_transform_edt(~sampled, return_indices=True)
    filled = vol[tuple(idx)]
    return np.where(within & ~sampled, filled, vol)


def flatmap_height(dpi: float) -> int:
    """Pixels of the flatmap image to render for a brain map saved at ``dpi``: the figure's height in
    pixels (``5.2 * dpi``), at most pycortex's default 1024.

    More pixels would only be downsampled, in the PDF as in the PNG: matplotlib resamples an image drawn
    with pycortex's interpolation (``nearest``, not ``none``) to the saved ``dpi`` for a vector file too,
    so a map's PDF holds the same raster (the axes' pixels at ``dpi``) whatever the flatmap's height.
    The map's axes are shorter than the figure, so the image is still downsampled a little. At 150 dpi
    (780 pixels) a PNG + PDF map draws in about 0.9 s against 1.3 s at 1024; at 100 dpi (520 pixels), a
    preview, in about 60% of the time."""
    return min(1024, math.ceil(_MAP_INCHES[1] * dpi))


def flatmap_figure(vol, space, surface: dict, vmin, vmax, cmap: str, log_scale: bool = False, height: int = 1024):
    """The pycortex flatmap (curvature, no colour bar) of a dataset volume ``vol`` (X, Y, Z) on the
    subject's surface (``surface``: subject, xfm, mask), cortical voxels the dataset does not sample
    filled from their nearest sampled neighbour; None when the dataset's grid is not the surface mask's.
    ``height``: pixels of the flatmap image (pycortex's default 1024); a figure written at fewer pixels
    gains nothing from more. Call inside :func:`lmbrain.rois._pycortex_filestore` for another pycortex
    database."""
    from .rois import _pycortex_filestore

    with _pycortex_filestore(None, surface["subject"]) as db:
        import cortex  # imported, its folders found, by the block
        mask = np.asarray(db.get_mask(surface["subject"], surface["xfm"], surface.get("mask", "thick")), dtype=bool).T
        if mask.shape != vol.shape:
            return None
        vol = _fill_gaps(vol, mask, space.mask)
        data = np.log10(vol) if log_scale else vol
        v = cortex.Volume(data.T.astype(np.float32), surface["subject"], surface["xfm"],
                          vmin=np.log10(vmin) if (log_scale and vmin) else vmin,
                          vmax=np.log10(vmax) if (log_scale and vmax) else vmax, cmap=cmap)
        return cortex.quickflat.make_figure(v, with_rois=False, with_labels=False, with_colorbar=False,
                                            with_curvature=True, height=int(height))


def brain_map(values, space, surface: dict | None, png, title: str = "", label: str = "", vmin=None, vmax=None,
              cmap: str = "inferno", log_scale: bool = False, categories: list[str] | None = None,
              dpi: int = 150, vector: bool = True) -> list[Path]:
    """A per-voxel map as a pycortex flatmap (when ``surface`` names a pycortex subject) or slices.

    values: (n_voxels,) in the column order of ``space`` (:class:`lmbrain.volume.VoxelSpace`).
    ``surface``: ``{"subject", "xfm", "mask"}`` as the dataset's ``pycortex_surface`` gives it. Voxels
    of the cortical mask that the dataset does not sample (the demo's sub-grid) take the value of the
    nearest sampled voxel. ``categories``: the values are codes 0, 1, ... of these names (at most
    10), drawn in qualitative colours with a legend instead of a colour bar. Written as PNG (at
    ``dpi``) and, when ``vector``, PDF (a preview map drawn per context length is PNG only: half the
    drawing time and a report that opens quickly). The flatmap is rendered at the figure's own height in
    pixels (:func:`flatmap_height`) instead of pycortex's 1024, which both files would only downsample.
    """
    plt = _pyplot()
    from matplotlib.colors import LogNorm, Normalize

    values = np.asarray(values, dtype=np.float64)
    if categories is not None:
        if len(categories) > 10:
            raise ValueError(f"at most 10 categories can be drawn, got {len(categories)}")
        cmap, vmin, vmax, log_scale = "tab10", -0.5, 9.5, False
    vol = space.unmask(values).astype(np.float64)  # (X, Y, Z)
    norm = LogNorm(vmin=vmin, vmax=vmax) if log_scale else Normalize(vmin=vmin, vmax=vmax)
    if surface:
        try:
            fig = flatmap_figure(vol, space, surface, vmin, vmax, cmap, log_scale,
                                 height=flatmap_height(dpi))
            if fig is not None:
                fig.set_size_inches(*_MAP_INCHES)
                ax = fig.axes[0]
                _scale(fig, ax, norm, cmap, label, categories)
                ax.set_title(title)
                return save_figure(fig, png, dpi=dpi, vector=vector)
        except Exception as exc:  # pragma: no cover - fall back to slices, say why
            import logging

            logging.getLogger(__name__).warning("flatmap failed (%s); drawing slices instead", exc)
    # orthogonal slices through the voxel with the largest value
    finite = np.nan_to_num(vol, nan=-np.inf)
    x, y, z = np.unravel_index(int(np.argmax(finite)), vol.shape)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    panels = [(vol[x, :, :].T, "sagittal (x = %d)" % x), (vol[:, y, :].T, "coronal (y = %d)" % y),
              (vol[:, :, z].T, "axial (z = %d)" % z)]
    for ax, (img, name) in zip(axes, panels):
        ax.imshow(np.ma.masked_invalid(img), origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_title(name)
        ax.set_axis_off()
    _scale(fig, axes, norm, cmap, label, categories)
    fig.suptitle(title)
    return save_figure(fig, png, dpi=dpi, vector=vector)


def contact_sheet(pngs, png, title: str = "", ncols: int = 3, panel_px: int = 400) -> list[Path]:
    """One image with the figures ``pngs`` (files, each drawn as saved: title, map and colour bar) as
    panels of a grid of ``ncols`` columns, each scaled to ``panel_px`` pixels wide (100 dpi).

    A report then shows a model's maps at every context length as one image, where one figure per k
    made it large and slow to open; the full-size figures stay where they are. Panels keep their
    aspect ratio; a grid cell of an image with another ratio is padded with white. ``png`` ending in
    ``.jpg`` writes a JPEG (quality 85): a quarter of the PNG's size for noisy voxel maps.
    """
    import matplotlib.image as mpimg

    pngs = [Path(p) for p in pngs]
    if not pngs:
        raise ValueError("contact_sheet: no figures given")
    if ncols < 1 or panel_px < 1:
        raise ValueError(f"contact_sheet: ncols and panel_px must be positive, got {ncols} and {panel_px}")
    images = [mpimg.imread(str(p)) for p in pngs]
    aspect = max(im.shape[0] / im.shape[1] for im in images)  # height / width of the tallest panel
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    dpi = 100
    w = panel_px / dpi
    head = 0.4 if title else 0.0
    plt = _pyplot()
    fig = plt.figure(figsize=(ncols * w, nrows * w * aspect + head), dpi=dpi)
    top = 1 - head / (nrows * w * aspect + head)
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        ax = fig.add_axes([c / ncols, top * (1 - (r + 1) / nrows), 1 / ncols, top / nrows])
        ax.imshow(im, interpolation="antialiased")
        ax.set_xlim(-0.5, im.shape[1] - 0.5)
        ax.set_ylim(im.shape[1] * aspect - 0.5, -0.5)  # pad shorter panels at the bottom
        ax.set_axis_off()
    if title:
        fig.suptitle(title, y=1 - 0.5 * head / (nrows * w * aspect + head))
    png = Path(png)
    jpeg = png.suffix.lower() in (".jpg", ".jpeg")
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=dpi, format="jpeg" if jpeg else "png", **({"pil_kwargs": {"quality": 85}} if jpeg else {}))
    plt.close(fig)
    return [png]


def _scale(fig, ax, norm, cmap, label, categories):
    """A horizontal colour bar under ``ax``, or a legend of the category colours."""
    plt = _pyplot()
    if categories is None:
        cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, orientation="horizontal",
                          fraction=0.04, pad=0.02, shrink=0.45)
        cb.set_label(label)
        return
    from matplotlib.patches import Patch

    colours = plt.get_cmap("tab10").colors
    handles = [Patch(color=colours[i], label=name) for i, name in enumerate(categories)]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=len(categories), frameon=False,
               title=label)  # below the axes (saved with a tight bounding box)


def sweep_curves(ks, cv, test_r, table, png, title: str = "") -> list[Path]:
    """Encoding performance against context length, median and interquartile band per TRW group."""
    plt = _pyplot()
    ks = np.asarray(ks)
    trw = table["trw_words"].to_numpy()
    sig = table["significant"].to_numpy()
    groups = [(label, (trw >= lo) & (trw <= hi)) for label, lo, hi in TRW_GROUPS]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for ax, curves, name in ((axes[0], cv, "cross-validated score (R$^2$)"), (axes[1], test_r, "test correlation r")):
        for i, (label, m) in enumerate(groups):
            m = m & sig
            if m.sum() == 0:
                continue
            _band(ax, ks, curves[:, m], i, label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks)
        ax.set_xticklabels([str(int(k)) for k in ks])
        ax.set_xlabel("context length k (words)")
        ax.set_ylabel(name)
    return _finish_groups(fig, axes, sig.any(), png, f"{title} · significant voxels, median and interquartile range")


def context_use(table, png, fitted=None, title: str = "") -> list[Path]:
    """Context-use curves (:func:`lmbrain.context_use.feature_context_use`): 1 - r between the features at k
    and at the longest k, one line per layer (the fitted layer bold), each layer's ceiling marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (layer, rows) in enumerate(table.groupby("layer")):
        bold = layer == fitted
        ax.plot(rows["k"], rows["distance"], "o-", color=f"C{i % 10}", lw=2.5 if bold else 1.0,
                label=f"layer {layer}" + (" (fitted)" if bold else "") + f": resolves up to {rows['ceiling'].iloc[0]} word(s)")
        ax.axvline(rows["ceiling"].iloc[0], color=f"C{i % 10}", ls=":", lw=1)
    ks = np.sort(table["k"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(int(k)) for k in ks])
    ax.set_xlabel("context length k (words)")
    ax.set_ylabel("1 - r with the longest context\n(mean over units)")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, png)


def _band(ax, x, values, i, label):
    """Median line and interquartile band of ``values`` (len(x), n) in colour ``C<i>``."""
    med = np.nanmedian(values, axis=1)
    q1, q3 = np.nanpercentile(values, [25, 75], axis=1)
    ax.plot(x, med, "o-", color=f"C{i}", label=f"{label} (n = {values.shape[1]})")
    ax.fill_between(x, q1, q3, color=f"C{i}", alpha=0.2)


def _finish_groups(fig, axes, any_voxels, png, title):
    """Legend on the first panel (or a note that no voxel is significant), title, save."""
    if any_voxels:
        axes[0].legend(frameon=False, fontsize=8)
    else:
        for ax in axes:
            ax.text(0.5, 0.5, "no significant voxels", transform=ax.transAxes, ha="center", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, png)


def planted_vs_recovered(planted, recovered, significant, png, title: str = "", confusion=None) -> list[Path]:
    """Scatter of recovered against planted temporal receptive windows (log-log, jittered).

    ``confusion``: optional table (planted class rows x recovered class columns, voxel counts) drawn
    as a second panel.
    """
    from scipy.stats import spearmanr

    plt = _pyplot()
    planted = np.asarray(planted, dtype=float)
    recovered = np.asarray(recovered, dtype=float)
    significant = np.asarray(significant, dtype=bool)
    rng = np.random.default_rng(0)
    jitter = np.exp(rng.uniform(-0.12, 0.12, recovered.size))
    if confusion is None:
        fig, ax = plt.subplots(figsize=(4.6, 4.4))
    else:
        fig, (ax, cax) = plt.subplots(1, 2, figsize=(9.6, 4.4), gridspec_kw={"width_ratios": [1, 1]})
    ax.scatter(planted[~significant], recovered[~significant] * jitter[~significant], s=6, color="0.7",
               label="not significant")
    ax.scatter(planted[significant], recovered[significant] * jitter[significant], s=8, color="C0", label="significant")
    lim = [1, max([256.0] + list(planted) + list(recovered))]
    ax.plot(lim, lim, "--", color="0.4", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("planted window (words)")
    ax.set_ylabel("recovered TRW (words)")
    rho = spearmanr(planted, recovered).correlation if planted.size > 2 else np.nan
    rho_s = spearmanr(planted[significant], recovered[significant]).correlation if significant.sum() > 2 else np.nan
    ax.set_title(f"context sweep: Spearman rho = {rho:.2f} (n = {planted.size});\n"
                 f"significant voxels {rho_s:.2f} (n = {int(significant.sum())})", fontsize=9)
    if planted.size:
        ax.legend(frameon=False, fontsize=8)
    else:
        ax.text(0.5, 0.5, "no voxels", transform=ax.transAxes, ha="center", va="center")
    if confusion is not None:
        counts = confusion.to_numpy(dtype=float)
        frac = counts / np.where(counts.sum(axis=1, keepdims=True) > 0, counts.sum(axis=1, keepdims=True), 1)
        im = cax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for (i, j), c in np.ndenumerate(counts):
            cax.text(j, i, f"{int(c)}", ha="center", va="center", color="white" if frac[i, j] > 0.6 else "black",
                     fontsize=8)
        cax.set_xticks(range(counts.shape[1]))
        cax.set_xticklabels(confusion.columns)
        cax.set_yticks(range(counts.shape[0]))
        cax.set_yticklabels(confusion.index)
        cax.set_xlabel("scrambling class (recovered)")
        cax.set_ylabel("planted window class")
        cax.set_title("in-silico scrambling: voxel counts\n(colour = fraction of the row)", fontsize=9)
        fig.colorbar(im, ax=cax, fraction=0.046, pad=0.04, label="fraction of planted class")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, png)


def scramble_survival(table, png, title: str = "") -> list[Path]:
    """In-silico scrambling: how much of the intact predicted response survives each level, per TRW group.

    ``table``: the TRW table (``trw_words``, ``significant``, ``survival_<level>``, ``variance_<level>``
    for the levels word, sentence, paragraph). Left: correlation of scrambled with intact predicted
    responses; right: variance ratio; median and interquartile range over significant voxels, from
    intact (1 by definition) to word-scrambled.
    """
    plt = _pyplot()
    levels = ["paragraph", "sentence", "word"]
    x = np.arange(len(levels) + 1)
    trw = table["trw_words"].to_numpy()
    sig = table["significant"].to_numpy(dtype=bool)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for ax, what, name in ((axes[0], "survival", "survival (r, scrambled vs intact prediction)"),
                           (axes[1], "variance", "variance ratio (scrambled / intact)")):
        for i, (label, lo, hi) in enumerate(TRW_GROUPS):
            m = sig & (trw >= lo) & (trw <= hi)
            if not m.any():
                continue
            vals = np.stack([np.ones(int(m.sum()))] + [table[f"{what}_{lv}"].to_numpy(dtype=float)[m] for lv in levels])
            _band(ax, x, vals, i, label)
        ax.set_xticks(x)
        ax.set_xticklabels(["intact"] + [f"{lv}-\nscrambled" for lv in levels])
        ax.set_xlabel("stimulus (finer scrambling to the right)")
        ax.set_ylabel(name)
        ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    return _finish_groups(fig, axes, sig.any(), png,
                          f"{title} · in-silico scrambling, significant voxels (median, interquartile range)")


def decoding_scores(windows, summary, metrics, png, title: str = "") -> list[Path]:
    """Decoding scores over the story: one panel per metric, the decoded score per window against both
    nulls' mean +- 2 sd (LM-only generations, time-shifted decoding), windows significant after FDR
    against both marked, the story-level z-scores in the panel title."""
    from .evaluation import METRIC_LABELS

    plt = _pyplot()
    metrics = list(metrics)
    fig, axes = plt.subplots(len(metrics), 1, figsize=(8, 1.9 * len(metrics) + 0.6), sharex=True, squeeze=False)
    t = (windows["start"] + windows["end"]).to_numpy() / 2
    story = summary.set_index(["metric", "null"])
    for ax, m in zip(axes[:, 0], metrics):
        for null, color, label in (("lm", "0.8", "LM-only null"), ("shift", "C0", "time-shift null")):
            mu, sd = windows[f"{m}_{null}_mean"].to_numpy(), windows[f"{m}_{null}_std"].to_numpy()
            ax.fill_between(t, mu - 2 * sd, mu + 2 * sd, color=color, alpha=0.5 if null == "lm" else 0.2,
                            label=f"{label} mean ± 2 sd")
        ax.plot(t, windows[m], color="C3", lw=1.0, label="decoded")
        sig = (windows[f"{m}_lm_q"] < 0.05).to_numpy() & (windows[f"{m}_shift_q"] < 0.05).to_numpy()
        if sig.any():
            ax.plot(t[sig], windows[m].to_numpy()[sig], "|", color="k", ms=6, label="q < 0.05 (both nulls)")
        lm, sh = story.loc[(m, "lm")], story.loc[(m, "shift")]
        ax.set_ylabel(METRIC_LABELS.get(m, m))
        ax.set_title(f"{METRIC_LABELS.get(m, m)}: story z = {lm['z']:.2f} (LM null), {sh['z']:.2f} (shift null); "
                     f"windows significant {100 * lm['fraction_significant']:.0f}% / "
                     f"{100 * sh['fraction_significant']:.0f}%", fontsize=8, loc="left")
    axes[0, 0].legend(fontsize=7, loc="upper right", ncol=3)
    axes[-1, 0].set_xlabel("window centre (s)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, png)


def identification_curve(table, png, title: str = "") -> list[Path]:
    """Segment identification: top-1 accuracy and mean percentile rank against segment length, with chance."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    x = table["n_trs"].to_numpy()
    ax.plot(x, table["top1"], "o-", color="C0", label="top-1 accuracy")
    ax.plot(x, table["chance"], "--", color="C0", alpha=0.6, label="top-1 chance")
    ax.plot(x, table["mean_percentile"], "s-", color="C1", label="mean percentile rank")
    ax.axhline(0.5, ls=":", color="C1", alpha=0.6, label="percentile chance")
    ax.set_xscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([str(v) for v in x])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("segment length (TRs)")
    ax.set_ylabel("identification")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, png)
