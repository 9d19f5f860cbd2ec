"""save_figure crops as bbox_inches="tight" does, with one layout pass for the PNG and the PDF that
computes no image's pixels."""

import io

import numpy as np


def _figure(plt):
    """A flatmap-like figure: two images composited in one axes, a colour bar, a title, a suptitle and a
    legend placed outside the figure (the tight box grows past the figure's edge to keep it)."""
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.imshow(rng.standard_normal((80, 160)), cmap="gray", extent=(0, 160, 0, 80))
    im = ax.imshow(rng.standard_normal((80, 160)).cumsum(axis=1), cmap="inferno", alpha=0.7, extent=(0, 160, 0, 80))
    ax.plot([10, 150], [10, 70], label="a line")
    ax.legend(loc="upper left", bbox_to_anchor=(1.6, 1.0))
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, label="r")
    ax.set_title("a title")
    fig.suptitle("a suptitle")
    return fig


def test_save_figure_crops_as_tight_and_resamples_each_image_once_per_format(tmp_path, monkeypatch):
    from matplotlib.image import AxesImage
    from PIL import Image

    from lmbrain.plots import _pyplot, palette_png, save_figure

    plt = _pyplot()
    reference = io.BytesIO()
    fig = _figure(plt)
    fig.savefig(reference, dpi=120, bbox_inches="tight", format="png", pil_kwargs={"compress_level": 1})
    plt.close(fig)
    palette_png(io.BytesIO(reference.getvalue()), tmp_path / "reference.png")
    with Image.open(tmp_path / "reference.png") as im:
        want = np.asarray(im.convert("RGB"))
    assert want.shape[1] > 6 * 120  # the outside legend widened the tight box past the figure

    calls = []
    real = AxesImage.make_image
    monkeypatch.setattr(AxesImage, "make_image", lambda self, *a, **k: (calls.append(id(self)), real(self, *a, **k))[1])
    fig = _figure(plt)
    images = fig.axes[0].get_images()
    out = save_figure(fig, tmp_path / "f.png", dpi=120)
    assert [p.name for p in out] == ["f.png", "f.pdf"]
    # matplotlib's own tight pass resamples every image once more per format (4 per image in all)
    assert sorted(calls) == sorted(2 * [id(i) for i in images])
    assert all("make_image" not in vars(i) for i in images) and fig.dpi == 100  # the figure left as it was
    assert (tmp_path / "f.png").read_bytes() == (tmp_path / "reference.png").read_bytes()  # the same PNG
    pdf = (tmp_path / "f.pdf").read_bytes()
    box = [float(v) for v in pdf.split(b"/MediaBox [")[1].split(b"]")[0].split()]
    # the PDF has the PNG's box: pixels at 120 dpi are 0.6 points
    assert abs(box[2] - want.shape[1] * 72 / 120) < 1.5 and abs(box[3] - want.shape[0] * 72 / 120) < 1.5


def test_a_figure_saved_on_two_days_is_the_same_file(tmp_path, monkeypatch):
    """Two runs write the same PNG and PDF, byte for byte: the PDF carries no creation date (matplotlib
    writes the time of saving by default, so every PDF of a run differed from the previous run's)."""
    from lmbrain.plots import _pyplot, save_figure

    plt = _pyplot()
    saved = []
    for day, folder in ((0, "a"), (400, "b")):  # matplotlib's clock for the PDF's date, one day each
        monkeypatch.setenv("SOURCE_DATE_EPOCH", str(86_400 * day))
        saved.append(save_figure(_figure(plt), tmp_path / folder / "fig.png", dpi=60))
    first, second = saved
    assert [p.suffix for p in first] == [".png", ".pdf"]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert b"CreationDate" not in first[1].read_bytes()
