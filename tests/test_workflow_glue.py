"""The glue every rule script runs in (lmbrain.workflow.run_rule): logs, progress bars, clean failures."""

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmbrain import LmbrainError
from lmbrain.workflow import run_rule

ROOT = Path(__file__).resolve().parents[1]


def _smk(log):
    return SimpleNamespace(log=[str(log)], threads=1, rule="test_rule")


def test_progress_bars_in_a_log_file_are_throttled(tmp_path, monkeypatch):
    """A rule's progress bar goes to its log file: redrawn every 0.1 s it would write thousands of
    updates per job; in a log it is redrawn at most every 30 s."""
    from lmbrain import io
    from lmbrain.io import progress_bar as tqdm

    monkeypatch.setitem(io.PROGRESS_INTERVAL, "seconds", 0.1)
    log = tmp_path / "rule.log"
    with run_rule(_smk(log)):
        for _ in tqdm(range(60), desc="work"):
            time.sleep(0.01)
    text = log.read_text()
    assert "rule test_rule started" in text and "rule test_rule finished" in text
    assert 1 <= text.count("work:") <= 3, text


def test_a_library_error_ends_the_job_with_its_message(tmp_path, monkeypatch):
    from lmbrain import io

    monkeypatch.setitem(io.PROGRESS_INTERVAL, "seconds", 0.1)
    log = tmp_path / "rule.log"
    with pytest.raises(SystemExit):
        with run_rule(_smk(log)):
            raise LmbrainError("story x: 3 TRs of features but 4 of responses")
    text = log.read_text()
    assert "lmbrain error in rule test_rule: story x: 3 TRs of features but 4 of responses" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("subjects", [None, ["DEMO01", "DEMO02"]])
def test_report_captions_render_with_the_default_config(subjects):
    """`snakemake --report` renders every caption with the run's config: the default demo config has
    `subjects: null`, on which the workflow description failed (`join` of None: no report at all)."""
    from types import SimpleNamespace

    import jinja2

    from lmbrain.config import load_config

    cfg = load_config(ROOT / "config" / "config.yaml")
    cfg["subjects"] = subjects
    for name in ("trw_map", "test_r", "r2_lm"):
        wildcards = SimpleNamespace(subject="DEMO01", model="lstm", feature="pooled-L1", k="8", name=name,
                                    story="romeo_and_juliet_04")
        for rst in sorted((ROOT / "workflow" / "report").glob("*.rst")):
            text = jinja2.Template(rst.read_text()).render(snakemake=SimpleNamespace(config=cfg, wildcards=wildcards))
            assert "None" not in text, rst.name
            if rst.name == "encoding.rst":
                assert ("language-model band" in text) == (name == "r2_lm") and f"k<k>/{name}.png" in text
    rendered = jinja2.Template((ROOT / "workflow/report/workflow.rst").read_text()).render(
        snakemake=SimpleNamespace(config=cfg, wildcards=wildcards))
    assert ("DEMO01, DEMO02" if subjects else "the demo's") in rendered


def test_a_job_imports_torch_only_if_it_uses_it_and_then_with_the_jobs_threads(tmp_path):
    """run_rule used to import torch (~2.7 s) in every job to set its thread count; now a job that never
    uses torch does not import it, and one that does gets the job's threads the moment it imports it
    (over an OMP_NUM_THREADS from the environment, as before)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(
        "import sys\n"
        "from types import SimpleNamespace\n"
        "from lmbrain.workflow import run_rule\n"
        "with run_rule(SimpleNamespace(log=[], threads=1, rule='r')):\n"
        "    print('before', 'torch' in sys.modules)\n"
        "    import torch\n"
        "    print('threads', torch.get_num_threads(), float(torch.arange(4.0).sum()))\n"
        "    import importlib.resources\n"
        "    print('resources', importlib.resources.files('torch').joinpath('__init__.py').is_file())\n")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:3] == ["before False", "threads 1 6.0", "resources True"], proc.stdout


def test_a_job_sets_the_threads_of_a_torch_already_imported(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        with run_rule(SimpleNamespace(log=[str(tmp_path / "r.log")], threads=1, rule="r")):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_stages_that_only_read_features_do_not_import_torch(tmp_path):
    """The TRW, ROI, group and summary jobs read feature files and tables only: the modules they call
    must not import torch (lmbrain.featurefile holds the readers that lmbrain.features, which writes
    features with torch, held before)."""
    import subprocess
    import sys

    modules = ["lmbrain.stages.trw", "lmbrain.stages.rois", "lmbrain.stages.report", "lmbrain.stages.data",
               "lmbrain.trw", "lmbrain.context_use", "lmbrain.featurefile", "lmbrain.encoding", "lmbrain.scrambling",
               "lmbrain.plots", "lmbrain.group", "lmbrain.rois", "lmbrain.stats"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + (
        # what the TRW stage does with feature files: context use, a story's TR features, file attributes
        "import h5py, numpy as np\n"
        "from lmbrain.context_use import feature_context_use\n"
        "from lmbrain.encoding import story_tr_features\n"
        "files = {}\n"
        "for k in (1, 2):\n"
        "    with h5py.File(f'k{k}.h5', 'w') as fh:\n"
        "        fh['pooled/layer_1'] = np.random.default_rng(k).standard_normal((40, 3))\n"
        "        fh['time'] = np.linspace(0.5, 39.5, 40)\n"
        "    files[k] = f'k{k}.h5'\n"
        "feature_context_use({'story': files}, 'pooled', [1])\n"
        "story_tr_features('k2.h5', 'pooled', 1, np.arange(1.0, 40.0, 2.0))\n"
        "print('torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stdout + proc.stderr[-2000:]
