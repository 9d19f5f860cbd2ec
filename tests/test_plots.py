"""Brain maps: a flatmap is rendered at the figure's own pixel height, and looks as pycortex's default does;
pycortex's cache files are made in a private folder and published whole."""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # pycortex draws four flatmaps (and caches a 520-pixel one on first use)


def _pdf_images(path) -> list[tuple[int, int]]:
    """(width, height) of every image a PDF holds (matplotlib writes each as an image XObject)."""
    import re

    data = path.read_bytes()
    return [(int(re.search(rb"/Width (\d+)", m.group(0)).group(1)), int(re.search(rb"/Height (\d+)", m.group(0)).group(1)))
            for m in re.finditer(rb"<<[^>]*/Subtype /Image[^>]*>>", data)]


def test_flatmaps_are_rendered_at_the_figure_height_and_match_the_default(tmp_path, monkeypatch):
    """A brain map renders its flatmap at the figure's height in pixels (520 at 100 dpi, 780 at 150), not at
    pycortex's 1024: the PNG looks as the 1024-pixel one does, and the PDF holds the same raster, since
    matplotlib resamples the image to the saved dpi for the PDF too."""
    cortex = pytest.importorskip("cortex")
    import matplotlib.image as mpimg

    import lmbrain.plots as P
    from lmbrain.demo import demo_voxel_space

    space, coords = demo_voxel_space((4, 12, 12))
    values = np.sin(coords[:, 0] / 9.0) * np.cos(coords[:, 1] / 13.0)  # smooth, so pixels compare
    surface = {"subject": "S1", "xfm": "fullhead"}
    heights = []
    real = cortex.quickflat.make_figure

    def spy(*args, **kw):
        heights.append(kw.get("height"))
        return real(*args, **kw)

    monkeypatch.setattr(cortex.quickflat, "make_figure", spy)
    kw = dict(title="t", label="l", vmin=-1, vmax=1, cmap="RdBu_r")
    preview = P.brain_map(values, space, surface, tmp_path / "preview.png", dpi=100, vector=False, **kw)
    assert [p.name for p in preview] == ["preview.png"]
    full = P.brain_map(values, space, surface, tmp_path / "full.png", dpi=150, vector=True, **kw)
    assert [p.name for p in full] == ["full.png", "full.pdf"]
    assert heights == [520, 780]  # 5.2 inches x 100 and 150 dpi
    # the references: the same maps drawn from pycortex's default 1024-pixel flatmap
    monkeypatch.setattr(cortex.quickflat, "make_figure", lambda *a, **k: real(*a, **{**k, "height": 1024}))
    P.brain_map(values, space, surface, tmp_path / "preview_ref.png", dpi=100, vector=False, **kw)
    P.brain_map(values, space, surface, tmp_path / "full_ref.png", dpi=150, vector=True, **kw)
    for name in ("preview", "full"):
        mine, ref = (mpimg.imread(tmp_path / f"{n}.png")[..., :3] for n in (name, f"{name}_ref"))
        assert mine.shape == ref.shape
        differ = np.abs(mine - ref).max(axis=-1) > 0.1
        print(f"{name}: mean |diff| {np.abs(mine - ref).mean():.4f}, pixels off by > 0.1: {differ.mean():.4f}")
        assert np.abs(mine - ref).mean() < 0.01 and differ.mean() < 0.02
    # the PDF's flatmap raster is the axes' pixels at 150 dpi either way (fewer rows than 780, let alone 1024)
    mine, ref = _pdf_images(tmp_path / "full.pdf"), _pdf_images(tmp_path / "full_ref.pdf")
    assert mine == ref and max(h for _, h in mine) < 780


def test_figures_are_saved_as_palette_pngs_close_to_the_full_colour_rendering(tmp_path):
    """save_figure stores the PNG with a 256-colour palette: pixels within a fraction of a level of the RGBA
    rendering on average, a smaller file, and the exact figure in the PDF; transparency is kept."""
    import io

    from PIL import Image

    from lmbrain.plots import _pyplot, palette_png, save_figure

    plt = _pyplot()

    def figure():
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.imshow(np.random.default_rng(0).standard_normal((60, 90)).cumsum(axis=1), cmap="inferno")
        ax.plot(np.arange(90), 30 + 10 * np.sin(np.arange(90) / 7), color="C0", lw=2)
        ax.set_title("a map, a curve and some text")
        return fig

    full = io.BytesIO()
    fig = figure()
    fig.savefig(full, dpi=100, bbox_inches="tight", format="png")
    save_figure(fig, tmp_path / "f.png", dpi=100)
    with Image.open(tmp_path / "f.png") as im:
        assert im.mode == "P"
        got = np.asarray(im.convert("RGB"), dtype=float)
    want = np.asarray(Image.open(io.BytesIO(full.getvalue())).convert("RGB"), dtype=float)
    assert got.shape == want.shape and np.abs(got - want).mean() < 0.5
    assert (tmp_path / "f.png").stat().st_size < 0.6 * len(full.getvalue())
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    clear = io.BytesIO()
    fig = figure()
    fig.savefig(clear, dpi=50, format="png", transparent=True)
    plt.close(fig)
    clear.seek(0)
    palette_png(clear, tmp_path / "clear.png")
    with Image.open(tmp_path / "clear.png") as im:
        assert im.mode == "RGBA" and im.getchannel("A").getextrema()[0] == 0


@pytest.fixture
def pycortex_cache_setting(tmp_path):
    """pycortex's ``cache`` setting pointed at an empty folder (its files in ``<cache>/<subject>/cache``)
    for the test, and restored after it."""
    cortex = pytest.importorskip("cortex")
    config = cortex.options.config
    had = config.get("basic", "cache", fallback=None)
    shared = tmp_path / "pycortex-cache"
    config.set("basic", "cache", str(shared))
    yield shared
    if had is None:
        config.remove_option("basic", "cache")
    else:
        config.set("basic", "cache", had)


def test_a_mapper_cache_pycortex_would_make_again_is_made_privately_too(pycortex_cache_setting):
    """pycortex reads an existing cache file as it is, but makes a mapper's (``cortex.get_mapper``) again
    when it is not newer than its transform, and ``np.savez`` would write the new one through a link into
    the shared file, in place. Such a file is not linked into the private folder: pycortex makes the new
    one there, and it replaces the shared one whole (a new file) when the block ends."""
    from pathlib import Path

    cortex = pytest.importorskip("cortex")
    from lmbrain import rois as R

    R.import_pycortex()
    shared = pycortex_cache_setting
    (shared / "S1" / "cache").mkdir(parents=True)
    made = shared / "S1" / "cache" / "fullhead_pointnn.npz"
    with R._pycortex_filestore(None, "S1"):
        cortex.get_mapper("S1", "fullhead", "nearest")
    assert made.is_file()
    first = made.stat().st_ino
    with R._pycortex_filestore(None, "S1"):  # newer than the transform: read through its link
        cortex.get_mapper("S1", "fullhead", "nearest")
    assert made.stat().st_ino == first
    xfm = Path(cortex.db.get_paths("S1")["xfmdir"].format(xfmname="fullhead"))
    made.write_bytes(b"an old mapper")  # older than its transform: pycortex makes it again
    os.utime(made, (xfm.stat().st_mtime - 10, xfm.stat().st_mtime - 10))
    with R._pycortex_filestore(None, "S1"):
        mapper = cortex.get_mapper("S1", "fullhead", "nearest")
        # the shared file untouched while pycortex writes the new one
        assert made.read_bytes() == b"an old mapper" and made.stat().st_ino == first
    assert mapper.masks[0].shape == (mapper.masks[0].shape[0], int(np.prod(mapper.shape)))
    assert made.stat().st_ino != first and made.stat().st_mtime > xfm.stat().st_mtime
    assert not [f for f in made.parent.iterdir() if f.name.startswith(".")]


def test_pycortex_caches_are_made_in_a_private_folder_and_published_whole(tmp_path, monkeypatch,
                                                                          pycortex_cache_setting):
    """pycortex writes a missing cache file (a flatmap's pixel map per image height) in place, where a job
    drawing beside it can read it half-written, and cannot write it at all where its cache folder is
    read-only. lmbrain has pycortex write into a private folder and moves the files into the shared folder
    whole afterwards: into the user's cache folder where pycortex's is read-only, else into pycortex's."""
    import shutil
    from pathlib import Path

    cortex = pytest.importorskip("cortex")
    import lmbrain.plots as P
    from lmbrain import rois as R
    from lmbrain.demo import demo_voxel_space

    R.import_pycortex()
    space, _ = demo_voxel_space((4, 12, 12))
    vol = space.unmask(np.ones(space.n_voxels))
    surface = {"subject": "S1", "xfm": "fullhead"}
    made = {"flatmask_{h}.npz", "flatverts_{h}.npz", "flatpixel_fullhead_{h}_nearest_l32.npz"}
    shared = pycortex_cache_setting  # pycortex's "cache" setting: files in <cache>/S1/cache
    config = cortex.options.config
    written = []
    savez = np.savez
    monkeypatch.setattr(np, "savez", lambda file, *a, **k: (written.append(Path(file)), savez(file, *a, **k))[1])
    readonly = [True]
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: (
        False if readonly[0] and str(p).startswith(str(shared)) else access(p, mode, *a, **k)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # pycortex's folder read-only: the files land, whole, in the user's cache folder
    assert P.flatmap_figure(vol, space, surface, 0, 2, "viridis", height=60) is not None
    mine = tmp_path / "xdg" / "lmbrain" / "pycortex" / "S1"
    assert {m.format(h=60) for m in made} <= {f.name for f in mine.iterdir()}
    assert written and all(p.parents[2].name.startswith(".pycortex.building-") and p.parents[3] == mine
                           for p in written)
    assert not [f for f in mine.iterdir() if f.name.startswith(".")] and not list(shared.rglob("*.npz"))
    # pycortex's folder writable and filled by an earlier job: read, nothing made; a killed job's
    # private folder is cleared; a new height is made privately and published into pycortex's folder
    readonly[0] = False
    target = shared / "S1" / "cache"
    for f in mine.iterdir():
        shutil.copy(f, target / f.name)
    (target / ".pycortex.building-999999999-killed").mkdir()
    written.clear()
    assert P.flatmap_figure(vol, space, surface, 0, 2, "viridis", height=60) is not None
    assert written == [] and not (target / ".pycortex.building-999999999-killed").exists()
    assert P.flatmap_figure(vol, space, surface, 0, 2, "viridis", height=61) is not None
    assert written and all(p.parents[2].name.startswith(".pycortex.building-") and p.parents[3] == target
                           for p in written)
    assert {m.format(h=61) for m in made} <= {f.name for f in target.iterdir()}
    assert not [f for f in target.iterdir() if f.name.startswith(".")]
    assert config.get("basic", "cache") == str(shared)  # the setting is restored after each block
    # neither pycortex's folder nor the user's can be written: pycortex is left as it is, and draws
    readonly[0] = True
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file" / "cache"))
    written.clear()
    assert P.flatmap_figure(vol, space, surface, 0, 2, "viridis", height=61) is not None
    assert written == [] and config.get("basic", "cache") == str(shared)
    # pycortex's folder read-only but holding the files (an image built with them): read, nothing made
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg2"))
    assert P.flatmap_figure(vol, space, surface, 0, 2, "viridis", height=61) is not None
    assert written == [] and not list((tmp_path / "xdg2").rglob("*.npz"))
