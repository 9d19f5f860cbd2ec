"""The glue every rule script runs in (lmbrain.workflow.run_rule): logs, progress bars, clean failures."""

import time
from types import SimpleNamespace

import pytest

from lmbrain import LmbrainError
from lmbrain.workflow import run_rule


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
