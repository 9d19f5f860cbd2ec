"""Brain maps: a PNG-only preview renders its flatmap at its own pixel height, and looks as pycortex's default does."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # pycortex draws four flatmaps (and caches a 520-pixel one on first use)


def test_preview_flatmap_is_rendered_at_the_png_height_and_matches_the_default(tmp_path, monkeypatch):
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
    assert heights == [520, 1024]  # 5.2 inches x 100 dpi; print quality keeps pycortex's default
    # the reference: the same preview drawn from pycortex's default 1024-pixel flatmap
    monkeypatch.setattr(cortex.quickflat, "make_figure", lambda *a, **k: real(*a, **{**k, "height": 1024}))
    P.brain_map(values, space, surface, tmp_path / "reference.png", dpi=100, vector=False, **kw)
    mine, ref = (mpimg.imread(tmp_path / f"{n}.png")[..., :3] for n in ("preview", "reference"))
    assert mine.shape == ref.shape
    differ = np.abs(mine - ref).max(axis=-1) > 0.1
    print(f"mean |diff| {np.abs(mine - ref).mean():.4f}, pixels off by > 0.1: {differ.mean():.4f}")
    assert np.abs(mine - ref).mean() < 0.01 and differ.mean() < 0.02
