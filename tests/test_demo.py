"""The embedded demo dataset: layout, determinism, planted truth, and that a context sweep can see it."""

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from lmbrain.config import resolve

from lmbrain.datasets import open_dataset
from lmbrain.demo import DemoError, build_demo, planted_windows, window_states

from conftest import tiny_config, traced_peak


def test_layout_and_reader(tiny_demo):
    cfg, summary = tiny_demo
    root = cfg["dataset"]["root"]
    ds = open_dataset("lebel2023", root)
    assert ds.subjects == ["DEMO01", "DEMO02"]  # demo.n_subjects: 2 by default
    assert ds.stories("DEMO01") == [f"romeo_and_juliet_0{i}" for i in range(1, 5)]
    train, test = ds.split("DEMO01", "all", cfg["stories"]["test"])
    assert test == ["romeo_and_juliet_03"] and len(train) == 3
    n_vox = summary["n_voxels"]
    for story in ds.stories("DEMO01"):
        r = ds.responses("DEMO01", story)
        assert r.shape == (len(ds.tr_times(story)), n_vox)
        np.testing.assert_allclose(r.mean(axis=0), 0, atol=1e-4)  # z-scored per story, as released
        w = ds.words(story)
        assert len(w) > 50 and w["word"].str.match(r"^[a-z0-9'\-]+$").all()
        assert w["onset"].is_monotonic_increasing and (w["offset"] > w["onset"]).all()
        # the story fits inside the response window (last row at least 8 s after the last word)
        assert ds.tr_times(story)[-1] >= w["offset"].iloc[-1] + 8
    reps = ds.repeats("DEMO01", "romeo_and_juliet_03")
    assert reps.shape[0] == 2
    assert ds.repeats("DEMO01", "romeo_and_juliet_01") is None
    space = ds.voxel_space("DEMO01")
    assert space.n_voxels == n_vox and space.mask.shape == (100, 100, 31)
    gt = pd.read_csv(os.path.join(root, "ground_truth.tsv"), sep="\t")
    assert list(gt.columns) == ["voxel", "trw_words", "snr", "noise", "driver"]
    assert set(gt["driver"]) <= {"none", "topics", "word_rate"}
    assert ((gt["driver"] == "none") == (gt["noise"] == 1)).all()
    assert gt["voxel"].tolist() == list(range(n_vox))
    assert gt["trw_words"].between(1, 256).all() and gt["trw_words"].nunique() > 5
    assert (gt.loc[gt.noise == 1, "snr"] == 0).all() and (gt.loc[gt.noise == 0, "snr"] > 0).all()
    # TextGrids come in all three Praat formats and two encodings
    heads = set()
    for p in sorted((ds.textgrids).glob("*.TextGrid")):
        raw = p.read_bytes()
        text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-8")
        heads.add(("chronological" if "chronological" in text.splitlines()[0] else
                   "long" if "item [" in text else "short", raw[:2] in (b"\xff\xfe", b"\xfe\xff")))
    assert {h[0] for h in heads} == {"long", "short", "chronological"} and any(h[1] for h in heads)


def test_repeats_share_signal_not_noise(tiny_demo):
    cfg, _ = tiny_demo
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    gt = pd.read_csv(os.path.join(cfg["dataset"]["root"], "ground_truth.tsv"), sep="\t")
    reps = ds.repeats("DEMO01", "romeo_and_juliet_03")
    r = np.array([np.corrcoef(reps[0][:, v], reps[1][:, v])[0, 1] for v in range(reps.shape[2])])
    # Between-repeat correlation of a voxel estimates snr / (1 + snr); pure-noise voxels sit near 0.
    sig = gt.noise.to_numpy() == 0
    expected = gt.snr.to_numpy()[sig] / (1 + gt.snr.to_numpy()[sig])
    assert abs(np.mean(r[~sig])) < 0.05
    assert np.mean(r[sig]) == pytest.approx(np.mean(expected), abs=0.08)


def test_word_rate_voxels_follow_hrf_convolved_word_onsets(tiny_demo):
    """Voxels whose ground-truth driver is word_rate carry the HRF-convolved word onsets (a low-level
    control for the nuisance bands); topic voxels do not."""
    from lmbrain.demo import canonical_hrf

    cfg, summary = tiny_demo
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    gt = pd.read_csv(os.path.join(cfg["dataset"]["root"], "ground_truth.tsv"), sep="\t")
    rate = gt.index[gt.driver == "word_rate"].to_numpy()
    topics = gt.index[gt.driver == "topics"].to_numpy()
    assert summary["n_word_rate_voxels"] == len(rate) > 0
    story = "romeo_and_juliet_01"
    t = ds.tr_times(story)
    mid = ds.words(story)[["onset", "offset"]].mean(axis=1).to_numpy()
    onsets = canonical_hrf(t[:, None] - mid[None, :]).sum(axis=1)
    Y = ds.responses("DEMO01", story)
    r = np.array([np.corrcoef(onsets, Y[:, v])[0, 1] for v in range(Y.shape[1])])
    snr = gt.snr.to_numpy()
    # a voxel's correlation with its own signal is sqrt(snr / (1 + snr)) up to sampling noise
    assert np.mean(r[rate]) == pytest.approx(np.mean(np.sqrt(snr[rate] / (1 + snr[rate]))), abs=0.1)
    assert np.mean(np.abs(r[topics])) < np.mean(r[rate]) / 2


def test_deterministic(tmp_path, shakespeare_archive, tiny_demo):
    cfg, _ = tiny_demo
    other = tiny_config(tmp_path / "again")
    build_demo(resolve(other).demo_job(), progress=False)
    a, b = cfg["dataset"]["root"], other["dataset"]["root"]
    for rel in ["ground_truth.tsv", "derivative/respdict.json", "derivative/TextGrids/romeo_and_juliet_02.TextGrid"]:
        assert Path(a, rel).read_bytes() == Path(b, rel).read_bytes(), rel
    for story in ("romeo_and_juliet_01", "romeo_and_juliet_03"):
        rel = f"derivative/preprocessed_data/DEMO01/{story}.hf5"
        with h5py.File(os.path.join(a, rel)) as fa, h5py.File(os.path.join(b, rel)) as fb:
            for key in fa:
                np.testing.assert_array_equal(fa[key][:], fb[key][:])
    # a different seed gives different noise
    third = tiny_config(tmp_path / "seed")
    third["seed"] = 99
    build_demo(resolve(third).demo_job(), progress=False)
    rel = "derivative/preprocessed_data/DEMO01/romeo_and_juliet_01.hf5"
    with h5py.File(os.path.join(a, rel)) as fa, h5py.File(os.path.join(third["dataset"]["root"], rel)) as fc:
        assert not np.allclose(fa["data"][:], fc["data"][:])


def test_bad_test_story_and_atomicity(tmp_path, shakespeare_archive):
    cfg = tiny_config(tmp_path / "demo")
    cfg["stories"]["test"] = ["hamlet_01"]
    with pytest.raises(DemoError, match="stories.test names hamlet_01"):
        build_demo(resolve(cfg).demo_job(), progress=False)
    assert not (tmp_path / "demo").exists()
    assert not [p for p in tmp_path.iterdir() if "building" in p.name]
    cfg = tiny_config(tmp_path / "demo", plays=["no_such_play"])
    with pytest.raises(DemoError, match="unknown play"):
        build_demo(resolve(cfg).demo_job(), progress=False)


def test_window_states_are_exact_windows():
    rng = np.random.default_rng(0)
    ev = rng.standard_normal((30, 4))
    p = window_states(ev, 5, 2.0)
    j = 17
    z = 2.0 * ev[j - 4 : j + 1].mean(axis=0)
    np.testing.assert_allclose(p[j], np.exp(z) / np.exp(z).sum())
    z0 = 2.0 * ev[:2].mean(axis=0)  # at the story start, only the words so far
    np.testing.assert_allclose(p[1], np.exp(z0) / np.exp(z0).sum())


def test_planted_windows_are_a_smooth_gradient():
    rng = np.random.default_rng(0)
    coords = rng.uniform(-50, 50, (3000, 3))
    w = planted_windows(coords, 1, 256)
    assert w.min() <= 2 and w.max() == 256
    # neighbours have similar windows: log-window difference of nearest pairs is small
    d = np.linalg.norm(coords[:, None] - coords[None, :500], axis=2)
    d[np.arange(500), np.arange(500)] = np.inf
    nn = d[:500].argmin(axis=1)
    assert np.median(np.abs(np.log2(w[:500]) - np.log2(w[nn]))) < 1.0


def test_never_replaces_a_folder_it_did_not_make(tmp_path, shakespeare_archive, tiny_demo):
    """Issue 18: demo.build with dataset.root on someone's data used to delete it. Only a folder with the
    builder's marker (or an empty one) is ever replaced; anything else stops the build untouched."""
    import shutil

    from lmbrain.demo import MARKER, check_demo_root

    real = tmp_path / "mystudy"
    (real / "derivative").mkdir(parents=True)
    (real / "derivative" / "notes.txt").write_text("my data")
    cfg = tiny_config(real)
    with pytest.raises(DemoError, match=r"holds files that lmbrain's demo builder did not make .* set demo.build: false"):
        build_demo(resolve(cfg).demo_job(), progress=False)
    assert (real / "derivative" / "notes.txt").read_text() == "my data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mystudy"]  # nothing half-built beside it
    # a file where the folder should be is refused too
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DemoError, match="is not a folder"):
        check_demo_root(tmp_path / "afile")
    # the builder's own folder is replaced (rebuilt), and an empty folder is used
    built = tmp_path / "built"
    shutil.copytree(tiny_demo[0]["dataset"]["root"], built)
    assert (built / MARKER).is_file()
    check_demo_root(built)
    (tmp_path / "empty").mkdir()
    check_demo_root(tmp_path / "empty")
    # the workflow refuses at start, before any job, naming the key
    from lmbrain.config import ConfigError, check_paths

    with pytest.raises(ConfigError, match="dataset.root .*mystudy holds files"):
        check_paths(resolve(cfg))


def test_stale_build_folders_of_killed_builds_are_removed(tmp_path, shakespeare_archive):
    """Issue 18: a killed build left data/.demo.building-* behind forever; the next build removes the
    leftovers of dead processes (and only those)."""
    import os
    import stat
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".demo.building-{dead.pid}-abc"
    (stale / "derivative").mkdir(parents=True)
    live = tmp_path / f".demo.building-{os.getpid()}-live"  # a build in progress (this process)
    live.mkdir()
    other = tmp_path / ".demo.backup"  # not ours: never touched
    other.mkdir()
    cfg = tiny_config(tmp_path / "demo")
    old = os.umask(0o022)
    try:
        build_demo(resolve(cfg).demo_job(), progress=False)
    finally:
        os.umask(old)
    assert not stale.exists() and live.exists() and other.exists()
    root = tmp_path / "demo"
    # outputs get the usual permissions (0777/0666 less the umask), so lab mates can read them
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "ground_truth.tsv").stat().st_mode) == 0o644


def test_further_subjects_leave_the_first_unchanged(tmp_path, shakespeare_archive, tiny_demo):
    """Issue 16: the first subject is made from exactly the single-subject random streams (its files are
    byte-identical with n_subjects 1 and 2); a further subject has its own noise, SNR and a jittered copy
    of the planted map, with its own ground truth."""
    cfg, summary = tiny_demo
    assert summary["subjects"] == ["DEMO01", "DEMO02"]
    one = tiny_config(tmp_path / "one", n_subjects=1)
    build_demo(resolve(one).demo_job(), progress=False)
    a, b = Path(one["dataset"]["root"]), Path(cfg["dataset"]["root"])
    assert not (a / "derivative/preprocessed_data/DEMO02").exists() and not (a / "ground_truth_DEMO02.tsv").exists()
    for rel in ["ground_truth.tsv", *(f"derivative/preprocessed_data/DEMO01/romeo_and_juliet_0{i}.hf5" for i in (1, 3))]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    t1 = pd.read_csv(b / "ground_truth.tsv", sep="\t")
    t2 = pd.read_csv(b / "ground_truth_DEMO02.tsv", sep="\t")
    assert list(t2.columns) == ["voxel", "trw_words", "snr", "noise", "driver"] and len(t2) == len(t1)
    assert not t1["trw_words"].equals(t2["trw_words"]) and not t1["snr"].equals(t2["snr"])
    # the jitter keeps the gradient: the two planted maps agree closely on the log scale
    assert np.corrcoef(np.log2(t1["trw_words"]), np.log2(t2["trw_words"]))[0, 1] > 0.9
    ds = open_dataset("lebel2023", b)
    r1, r2 = (ds.responses(s, "romeo_and_juliet_01") for s in ("DEMO01", "DEMO02"))
    assert r1.shape == r2.shape and not np.allclose(r1, r2)
    assert ds.pycortex_surface("DEMO02")["subject"] == "S1"


def test_word_mean_is_the_concatenations_mean_bit_for_bit_without_the_copy():
    """The demo build centres its topic states on their mean over every word of every story; at real size
    the states are 2 GB and their concatenation doubled the build's peak (4.6 GB against a 4 GB request)."""
    from lmbrain.demo import word_mean

    rng = np.random.default_rng(0)
    parts = [rng.random((40, n, 16)) for n in (1200, 700, 1900, 1500)]
    want = np.concatenate(parts, axis=1).mean(axis=1, keepdims=True)
    got, peak = traced_peak(lambda: word_mean(parts))
    assert got.shape == want.shape and np.array_equal(got, want)
    largest = max(p.nbytes for p in parts)
    assert peak < 1.2 * largest < 0.5 * sum(p.nbytes for p in parts)  # one story's copy, not all of them


def test_presentations_are_written_one_at_a_time_with_the_same_numbers(tmp_path):
    """A test story's presentations go to the file as they are drawn: the file holds what the stack of all
    of them and their mean gave (same noise, same bits), with about two presentations in memory."""
    from lmbrain.demo import _ar1_noise, _write_presentations, _zscore64

    n_t, n_v, reps, rho = 150, 800, 5, 0.3
    signal = np.random.default_rng(1).standard_normal((n_t, n_v)).astype(np.float32)
    noise_sd = np.random.default_rng(2).uniform(0.5, 2, n_v).astype(np.float32)
    rng = np.random.default_rng(3)
    presentations = [_zscore64(signal + noise_sd * _ar1_noise(rng, n_t, n_v, rho)) for _ in range(reps)]
    with h5py.File(tmp_path / "story.hf5", "w") as fh:
        _, peak = traced_peak(lambda: _write_presentations(fh, signal, noise_sd, np.random.default_rng(3), reps, rho))
    with h5py.File(tmp_path / "story.hf5") as fh:
        assert list(fh) == ["data", "individual_repeats"]
        assert np.array_equal(fh["individual_repeats"][()], np.stack(presentations))
        assert np.array_equal(fh["data"][()], _zscore64(np.mean(presentations, axis=0)))
    one = n_t * n_v * 8  # a float64 presentation
    assert peak < 4.5 * one  # the running sum, a presentation and z-scoring's temporaries; all five were 10+
    with h5py.File(tmp_path / "single.hf5", "w") as fh:
        _write_presentations(fh, signal, noise_sd, np.random.default_rng(3), 1, rho)
    with h5py.File(tmp_path / "single.hf5") as fh:
        assert list(fh) == ["data"] and np.array_equal(fh["data"][()], presentations[0])
