"""Figures (matplotlib, Agg): each saved as PNG and vector PDF, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, png: str | os.PathLike, dpi: int = 150) -> list[Path]:
    """Write ``png`` and the same figure as a PDF beside it (``x.png`` -> ``x.pdf``)."""
    png = Path(png)
    out = []
    for path in (png, png.with_suffix(".pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix[1:])
        out.append(path)
    _pyplot().close(fig)
    return out


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
