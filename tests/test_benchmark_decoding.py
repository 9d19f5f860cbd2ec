"""benchmarks/decoding.py runs (at a tiny size: this checks that it works and prints sane rows, not how fast)."""

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "decoding.py"


ROW = re.compile(r"^(fit|decode \S+)\s+(\S+)\s+(\S+)\s+(\S+)x(\s|$)")


def _rows(stdout: str) -> dict:
    """The table's rows: name -> (lmbrain seconds, floor seconds, ratio)."""
    return {m[1]: (float(m[2]), float(m[3]), float(m[4])) for m in map(ROW.match, stdout.splitlines()) if m}


@pytest.mark.slow
def test_decoding_benchmark_runs_at_a_tiny_size():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--voxels", "40", "--trs", "120", "--features", "8",
                           "--stories", "2", "--rate-voxels", "20", "--minutes", "0.3", "--threads", "1",
                           "--model", "transformer"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _rows(proc.stdout)
    assert list(rows) == ["fit", "decode planted", "decode transformer"], proc.stdout
    for name, numbers in rows.items():
        assert all(math.isfinite(x) and x > 0 for x in numbers), (name, proc.stdout)
    assert "propose" in proc.stdout and "dominates decode time" in proc.stdout


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("decoding_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, message", [
    (["--voxels", "0"], "--voxels: must be positive, got 0"),
    (["--minutes", "-1"], "--minutes: must be positive, got -1"),
    (["--stories", "1"], "--stories must be at least 2"),
    (["--trs", "30"], "--trs 30 is too few for 5 stories"),
])
def test_decoding_benchmark_refuses_bad_arguments(argv, message, capsys):
    """Bad sizes stop before any work, with a message naming the argument (argparse: exit status 2)."""
    bench = _load_benchmark()
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_decoding_benchmark_refuses_a_model_that_cannot_propose():
    bench = _load_benchmark()
    with pytest.raises(SystemExit, match="--model: planted cannot propose here"):
        bench.main(["--model", "planted"])
