"""Issue 16: the rois and group stages and rules (several subjects, regions of interest, group results)."""

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import CACHE, tiny_config
from lmbrain.config import resolve
from lmbrain.rois import RoiError

pytest.importorskip("cortex")

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
DEFAULT_ROIS = ["AC", "Broca", "sPMv", "EBA", "PPA", "IPS", "FEF", "RSC"]


@pytest.fixture(scope="module")
def roi_cache(pycortex_roi_cache):
    """pycortex ROI volume masks, cached across sessions in pytest's cache folder (only a cold run asks pycortex)."""
    return str(pycortex_roi_cache)


def planted_trw_table(root: Path, subject: str) -> pd.DataFrame:
    """A TRW table whose windows are the subject's planted ones (every voxel significant): the stage's input
    without running the encoding and TRW jobs."""
    name = "ground_truth.tsv" if subject == "DEMO01" else f"ground_truth_{subject}.tsv"
    truth = pd.read_csv(root / name, sep="\t")
    rng = np.random.default_rng(0)
    return pd.DataFrame({"voxel": truth["voxel"], "trw_words": truth["trw_words"],
                         "trw_seconds": truth["trw_words"] / 2.6, "test_r_best": rng.uniform(0, 0.3, len(truth)),
                         "significant": True})


def test_rois_and_group_stages_on_two_demo_subjects(tiny_demo, tmp_path, roi_cache):
    from lmbrain.stages.rois import group, rois

    cfg, summary = tiny_demo
    root = Path(cfg["dataset"]["root"])
    cfg = dict(cfg, rois={"min_voxels": 1, "min_significant": 1, "n_boot": 200, "n_perm": 1000,
                          "order": [["AC"], ["Broca"], ["IPS"]], "cache_dir": roi_cache})
    s = resolve(cfg)
    assert s.subjects == ("DEMO01", "DEMO02")
    dirs = {}
    for subject in s.subjects:
        trw_dir = tmp_path / subject / "trw"
        trw_dir.mkdir(parents=True)
        planted_trw_table(root, subject).to_csv(trw_dir / "voxels.tsv", sep="\t", index=False)
        dirs[subject] = tmp_path / subject / "rois"
        with pytest.warns(Warning, match="sPMv, RSC have no voxels"):  # the tiny grid misses two ROIs
            table = rois(s.rois_job(), subject, "planted", trw_dir, dirs[subject])
        assert table["roi"].tolist() == DEFAULT_ROIS
        assert sorted(p.name for p in dirs[subject].iterdir()) == ["rois.nii.gz", "rois.pdf", "rois.png", "rois.tsv",
                                                                   "rois_labels.tsv"]
        saved = pd.read_csv(dirs[subject] / "rois.tsv", sep="\t")
        assert {"n_voxels", "n_significant", "too_small", "median_trw_words", "trw_words_low", "trw_words_high",
                "median_trw_seconds", "median_test_r"} <= set(saved.columns)
        assert saved.set_index("roi").loc[["sPMv", "RSC"], "n_voxels"].eq(0).all()
        assert saved.set_index("roi").loc["AC", "n_voxels"] == 3  # measured: the tiny [4, 12, 12] grid
        img = nib.load(dirs[subject] / "rois.nii.gz")
        assert int((np.asarray(img.dataobj) > 0).sum()) == int(saved["n_voxels"].sum())
    # the subjects' planted maps differ, so do their ROI medians
    a, b = (pd.read_csv(d / "rois.tsv", sep="\t")["median_trw_words"] for d in dirs.values())
    assert not np.allclose(a.fillna(-1), b.fillna(-1))
    out = tmp_path / "group"
    table, ordering = group(s.group_job(), "planted", dirs, out)
    assert sorted(p.name for p in out.iterdir()) == ["group.pdf", "group.png", "group.tsv", "ordering.tsv"]
    assert table["roi"].tolist() == DEFAULT_ROIS
    assert {"mean_trw_words", "trw_words_DEMO01", "trw_words_DEMO02", "mean_test_r"} <= set(table.columns)
    np.testing.assert_allclose(table.set_index("roi").loc["IPS", "mean_trw_words"],
                               np.sqrt(a[5] * b[5]), rtol=1e-6)  # geometric mean over subjects
    saved = pd.read_csv(out / "ordering.tsv", sep="\t")
    assert saved["hypothesis"].tolist() == ["IPS > AC", "AC < Broca < IPS"]
    assert saved["n_subjects"].eq(2).all() and saved["exact"].all()
    # with two subjects every sign pattern (4) and every relabelling (3!^2 = 36) is enumerated: both subjects'
    # planted windows follow AC < Broca < IPS on the tiny grid, so the p-values are the smallest possible
    np.testing.assert_allclose(saved["p_value"], [1 / 4, 1 / 36], rtol=1e-5)  # (written with 6 digits)
    assert saved["note"].isna().all()
    # one subject: the table and figure are still made, the test says why it was not run
    _, one = group(s.group_job(), "planted", {"DEMO01": dirs["DEMO01"]}, tmp_path / "one")
    assert one["p_value"].isna().all() and one["note"].str.contains("at least 2 subjects").all()
    # an ROI without a value in a subject (sPMv: no voxels on the tiny grid) is named, not a crash
    default = resolve(dict(cfg, rois={"order": [["AC"], ["sPMv"]], "cache_dir": roi_cache}))
    _, holes = group(default.group_job(), "planted", dirs, tmp_path / "holes")
    assert holes["p_value"].isna().all() and holes["note"].str.contains("sPMv").all()


def test_label_image_on_another_grid_names_the_file(tiny_demo, tmp_path):
    from lmbrain.datasets import open_dataset
    from lmbrain.stages.rois import subject_rois

    cfg, _ = tiny_demo
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    space = ds.voxel_space("DEMO02")
    img = tmp_path / "DEMO02_labels.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), dtype=np.int16), np.eye(4)), img)
    (tmp_path / "labels.tsv").write_text("index\tname\n1\tAC\n")
    s = resolve(dict(cfg, rois={"source": "labels", "label_image": str(tmp_path / "{subject}_labels.nii.gz"),
                                "label_table": str(tmp_path / "labels.tsv"), "names": ["AC"], "order": []}))
    with pytest.raises(RoiError) as err:
        subject_rois(s.rois, ds, "DEMO02", cfg["dataset"]["root"])
    assert str(img) in str(err.value) and "another grid" in str(err.value)
    # on the subject's grid it works
    nib.save(nib.Nifti1Image(space.unmask(np.ones(space.n_voxels), fill=0).astype(np.int16), space.affine), img)
    assert subject_rois(s.rois, ds, "DEMO02", cfg["dataset"]["root"]).counts()["AC"] == space.n_voxels


def test_planted_windows_follow_the_expected_roi_order(roi_cache):
    """The demo's planted map at the default grid orders the default ROIs as rois.order expects
    (measured medians, words: AC 4 < Broca 13, sPMv 33.5 < FEF 38, RSC 41, IPS 88; EBA and PPA 17).
    Only the planted answer is checked here: what a model recovers is for the recovery study."""
    from lmbrain.demo import demo_voxel_space, planted_windows
    from lmbrain.rois import pycortex_rois, roi_summary

    s = resolve(tiny_config(Path("unused")))
    space, coords = demo_voxel_space((2, 4, 4))
    windows = planted_windows(coords, 1, 256)
    roiset = pycortex_rois("S1", "fullhead", list(s.rois.names), voxel_space=space, cache_dir=roi_cache)
    table = roi_summary(pd.DataFrame({"significant": True, "trw_words": windows, "test_r": 0.0}), roiset,
                        n_boot=200, seed=0).set_index("roi")
    med = table["median_trw_words"]
    assert med.to_dict() == {"AC": 4, "Broca": 13, "sPMv": 33.5, "EBA": 17, "PPA": 17, "IPS": 88, "FEF": 38, "RSC": 41}
    groups = [med[list(g)] for g in s.group.order]
    for shorter, longer in zip(groups, groups[1:]):
        assert shorter.max() < longer.min()
    assert (table["n_voxels"] >= s.rois.min_voxels).all()  # every default ROI is usable at the default grid


def _run(args, cwd):
    return subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), *args], cwd=cwd, capture_output=True, text=True)


def _job_counts(text):
    from test_workflow import _job_counts

    return _job_counts(text)


@pytest.mark.slow
def test_adding_a_subject_plans_only_its_jobs_and_the_group_jobs(tmp_path, shakespeare_archive):
    """With DEMO01's results in place (marked done with --touch), adding DEMO02 to subjects: schedules
    DEMO02's jobs and each model's group job, nothing of DEMO01 and no model, feature or scrambled-story
    job (those are per story, shared by the subjects)."""
    cfg = {"dataset": {"layout": "lebel2023", "root": "data/demo"},
           "stories": {"train": "all", "test": ["romeo_and_juliet_03"]},
           "demo": {"n_stories": 4, "min_words": 120, "max_words": 250, "voxel_stride": [4, 12, 12], "n_repeats": 2,
                    "cache_dir": str(CACHE)},
           "subjects": ["DEMO01"], "use_models": ["planted"], "features": {"context_lengths": [1, 2, 8]},
           "decoding": {"models": []}}
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(cfg))
    built = _run(["data/demo/demo.json", "--cores", "1", "--configfile", "one.yaml"], tmp_path)  # the checkpoint
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    plan = _run(["-n", "--configfile", "one.yaml"], tmp_path)
    assert _job_counts(plan.stdout) == {"pretrained_model": 1, "run_config": 1, "data_summary": 1,
                                        "extract_features": 4, "scrambled_features": 1, "encoding_model": 1, "trw": 1,
                                        "rois": 1, "group": 1, "all": 1, "total": 13}, plan.stdout[-2000:]
    # stand-ins for every planned output (directories have no suffix), then --touch records them as done
    for line in plan.stdout.splitlines():
        if line.strip().startswith("output:"):
            for out in line.split(":", 1)[1].split(","):
                path = tmp_path / out.strip()
                if path.suffix:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                else:
                    path.mkdir(parents=True, exist_ok=True)
    touched = _run(["--cores", "1", "--touch", "--configfile", "one.yaml"], tmp_path)
    assert touched.returncode == 0, touched.stdout[-2000:] + touched.stderr[-2000:]
    assert "Nothing to be done" in _run(["-n", "--configfile", "one.yaml"], tmp_path).stdout
    cfg["subjects"] = ["DEMO01", "DEMO02"]
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(cfg))
    plan = _run(["-n", "--configfile", "two.yaml"], tmp_path)
    jobs = _job_counts(plan.stdout)
    # (a real run also rewrites results/config.yaml, whose params changed; touched outputs have no params record)
    jobs.pop("run_config", None), jobs.pop("total")
    assert jobs == {"data_summary": 1, "encoding_model": 1, "trw": 1, "rois": 1, "group": 1, "all": 1}, \
        plan.stdout[-2000:]
    assert "subject=DEMO01" not in plan.stdout and "subject=DEMO02" in plan.stdout


def test_decoder_word_rate_models_on_rois(tiny_demo, tmp_path, roi_cache, monkeypatch):
    """Issue 20 (Tang et al.): decoding.rate_rois fits one word-rate model per group of ROIs, on exactly the
    union of those ROIs' voxels (read from rois.source), and averages their rates; config errors name the key."""
    import copy

    import lmbrain.decoding.decoder as decoder_mod
    from lmbrain.config import ConfigError, check_paths, from_json, to_json
    from lmbrain.datasets import open_dataset
    from lmbrain.models import Vocabulary, build_model, model_spec, save_model
    from lmbrain.rois import pycortex_rois
    from lmbrain.stages.decoding import decoder

    cfg = copy.deepcopy(tiny_demo[0])
    spec = {"type": "lstm", "embedding_dim": 8, "hidden_dim": 8, "n_layers": 1}
    cfg["models"], cfg["use_models"], cfg["device"] = {"tiny": spec}, None, "cpu"
    cfg["rois"] = {"cache_dir": roi_cache, "min_voxels": 1}
    cfg["decoding"].update(models=["tiny"], n_voxels=40, rate_rois=[["AC"], ["Broca", "IPS"]])
    s = resolve(cfg)
    job = s.decoder_job("tiny")
    assert job.rois == s.rois and job.decoding.rate_rois == (("AC",), ("Broca", "IPS"))
    assert from_json(type(job), to_json(job)) == job  # the rule's params
    assert resolve(dict(cfg, decoding=dict(cfg["decoding"], rate_rois=None))).decoder_job("tiny").rois is None
    subject = cfg["demo"]["subject"]
    ds = open_dataset(cfg["dataset"]["layout"], cfg["dataset"]["root"])
    words = sorted({w for st in ds.stories(subject) for w in ds.words(st)["word"]})
    vocab = Vocabulary(["<unk>"] + words)
    save_model(build_model(model_spec("tiny", spec), len(vocab), seed=0), vocab, tmp_path / "tiny")
    seen = []
    fit = decoder_mod.WordRateModel.fit

    def spy(self, responses, rates):
        seen.append(None if self.voxels is None else np.asarray(self.voxels).tolist())
        return fit(self, responses, rates)

    monkeypatch.setattr(decoder_mod.WordRateModel, "fit", spy)
    fitted = decoder(job, subject, tmp_path / "tiny", tmp_path / "decoder.npz")
    # independent reference: the ROI masks read directly from pycortex on the subject's grid
    ref = pycortex_rois("S1", "fullhead", ["AC", "Broca", "IPS"], voxel_space=ds.voxel_space(subject),
                        cache_dir=roi_cache)
    want = [np.flatnonzero(ref["AC"]).tolist(), np.flatnonzero(ref["Broca"] | ref["IPS"]).tolist()]
    assert seen == want and all(want)
    assert fitted.rate_model_.voxels_.tolist() == want[0] + want[1]  # the average of the two models
    # errors that say what to do
    with pytest.raises(ConfigError, match="rate_rois.*rois.source is none"):
        resolve(dict(cfg, rois={"source": "none"}))
    bad = dict(cfg["decoding"], rate_rois=[["Nowhere"]])
    with pytest.raises(ConfigError, match=r"rate_rois names ROI\(s\) Nowhere that are not in rois.names"):
        resolve(dict(cfg, decoding=bad))
    with pytest.raises(ConfigError, match="decoding.rate_rois: Nowhere not drawn in pycortex subject S1"):
        check_paths(resolve(dict(cfg, decoding=bad, rois=dict(cfg["rois"], names=None))))  # at workflow start
