"""Stages ``demo_dataset`` (build the embedded demo) and ``data_summary`` (check one subject's data)."""

from __future__ import annotations

import pandas as pd

from ..config import DataJob, DemoJob
from .common import open_job_dataset


def demo_dataset(job: DemoJob, progress: bool = False) -> dict:
    """Build the demo dataset under ``job.dataset.root`` (:func:`lmbrain.demo.build_demo`)."""
    from ..demo import build_demo

    return build_demo(job, progress=progress)


def data_summary(job: DataJob, subject: str, out) -> pd.DataFrame:
    """Read every story ``subject`` uses once and tabulate it (:func:`lmbrain.datasets.summarize`)."""
    from ..datasets import summarize

    d = job.dataset
    ds = open_job_dataset(d)
    return summarize(ds, subject, d.train if d.train == "all" else list(d.train), list(d.test), out)
