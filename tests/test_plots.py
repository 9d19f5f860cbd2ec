"""Brain maps: a flatmap is rendered at the figure's own pixel height, and looks as pycortex's default does."""

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
