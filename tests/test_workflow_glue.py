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
