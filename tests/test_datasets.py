"""Dataset readers: the lebel2023 release layout and BIDS, including every bad-input case."""

import json
import warnings

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lmbrain import LmbrainWarning
from lmbrain.datasets import DatasetError, open_dataset, read_word_tsv, summarize


def long_textgrid(words, end):
    """A long-format Praat TextGrid with a phone tier and a word tier (words: (text, xmin, xmax))."""
    def tier(name, items):
        lines = ['        class = "IntervalTier"', f'        name = "{name}"', "        xmin = 0", f"        xmax = {end}",
                 f"        intervals: size = {len(items)}"]
        for i, (text, a, b) in enumerate(items, 1):
            lines += [f"        intervals [{i}]:", f"            xmin = {a}", f"            xmax = {b}", f'            text = "{text}"']
        return lines

    tiled, t = [], 0.0
    for text, a, b in words:
        if a > t:
            tiled.append(("sp", t, a))
        tiled.append((text, a, b))
        t = b
    if t < end:
        tiled.append(("", t, end))
    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {end}", "tiers? <exists>",
           "size = 2", "item []:", "    item [1]:"] + tier("phone", [("", 0, end)]) + ["    item [2]:"] + tier("word", tiled)
    return "\n".join(out) + "\n"


N_VOX = 6


@pytest.fixture
def lebel(tmp_path):
    """A tiny lebel2023 dataset: subject UTS01 with stories a (train) and b (test, 2 repeats); UTS02 lacks b."""
    rng = np.random.default_rng(0)
    d = tmp_path / "ds" / "derivative"
    respdict = {"a": 40, "b": 35}
    for subj, stories in (("UTS01", ["a", "b"]), ("UTS02", ["a"])):
        (d / "preprocessed_data" / subj).mkdir(parents=True)
        for s in stories:
            with h5py.File(d / "preprocessed_data" / subj / f"{s}.hf5", "w") as fh:
                fh["data"] = rng.standard_normal((respdict[s] - 20, N_VOX))
                if s == "b":
                    fh["individual_repeats"] = rng.standard_normal((2, respdict[s] - 20, N_VOX))
    (d / "TextGrids").mkdir()
    for s in respdict:
        words = [("SENTENCE_START", 0.5, 0.6), ("Hello", 12.0, 12.4), ("{LG}", 12.4, 12.9), ("World", 13.0, 13.6)]
        (d / "TextGrids" / f"{s}.TextGrid").write_text(long_textgrid(words, 40.0))
    (d / "respdict.json").write_text(json.dumps(respdict))
    return tmp_path / "ds"


def test_lebel_api(lebel):
    ds = open_dataset("lebel2023", lebel)
    assert ds.subjects == ["UTS01", "UTS02"]
    assert ds.stories("UTS01") == ["a", "b"]
    w = ds.words("a")
    assert list(w.columns[:3]) == ["word", "onset", "offset"]
    assert w["word"].tolist() == ["hello", "world"]
    assert w["midpoint"].tolist() == [12.2, 13.3]
    r = ds.responses("UTS01", "a")
    assert r.dtype == np.float32 and r.shape == (20, N_VOX)
    with h5py.File(lebel / "derivative/preprocessed_data/UTS01/a.hf5") as fh:
        np.testing.assert_allclose(r, fh["data"][:].astype(np.float32))
    np.testing.assert_array_equal(ds.tr_times("a"), 2.0 * np.arange(20) + 11)
    assert ds.repeats("UTS01", "b").shape == (2, 15, N_VOX)
    assert ds.repeats("UTS01", "a") is None
    # voxel batches read only the requested columns
    np.testing.assert_array_equal(ds.responses("UTS01", "a", voxels=slice(2, 4)), r[:, 2:4])
    np.testing.assert_array_equal(ds.responses("UTS01", "a", voxels=[0, 5]), r[:, [0, 5]])
    assert ds.voxel_space("UTS01") is None


def test_root_may_be_the_derivative_folder(lebel):
    assert open_dataset("lebel2023", lebel / "derivative").subjects == ["UTS01", "UTS02"]


def test_split(lebel):
    ds = open_dataset("lebel2023", lebel)
    assert ds.split("UTS01", "all", ["b"]) == (["a"], ["b"])
    with pytest.raises(DatasetError, match="UTS02 lacks test story b"):
        ds.split("UTS02", "all", ["b"])
    with pytest.raises(DatasetError, match="lacks training story zz"):
        ds.split("UTS01", ["a", "zz"], ["b"])
    with pytest.raises(DatasetError, match="both training and test"):
        ds.split("UTS01", ["a", "b"], ["b"])


def test_missing_subject_and_story(lebel):
    ds = open_dataset("lebel2023", lebel)
    with pytest.raises(DatasetError, match="no subject 'UTS09'.*UTS01, UTS02"):
        ds.responses("UTS09", "a")
    with pytest.raises(DatasetError, match="UTS02 has no story 'b'"):
        ds.responses("UTS02", "b")
    with pytest.raises(DatasetError, match=r"TextGrid for story 'zz' not found"):
        ds.words("zz")


def test_tr_count_must_match_respdict(lebel):
    path = lebel / "derivative/preprocessed_data/UTS01/a.hf5"
    with h5py.File(path, "w") as fh:
        fh["data"] = np.zeros((19, N_VOX))
    ds = open_dataset("lebel2023", lebel)
    with pytest.raises(DatasetError) as err:
        ds.responses("UTS01", "a")
    assert "a.hf5" in str(err.value) and "19 TRs but respdict.json says 40" in str(err.value)


def test_nan_and_constant_voxels_reported_and_zeroed(lebel):
    path = lebel / "derivative/preprocessed_data/UTS01/a.hf5"
    with h5py.File(path, "a") as fh:
        data = fh["data"][:]
        data[3, 1] = np.nan
        data[:, 4] = 0.7
        del fh["data"]
        fh["data"] = data
    ds = open_dataset("lebel2023", lebel)
    with pytest.warns(LmbrainWarning, match=r"a\.hf5: 1 NaN/inf values in 1 voxels"):
        r = ds.responses("UTS01", "a")
    assert r[3, 1] == 0 and np.isfinite(r).all()
    assert ds.invalid_voxels("UTS01", "a").tolist() == [False, True, False, False, True, False]


def test_unknown_layout_and_missing_root(lebel, tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset layout 'nwb'"):
        open_dataset("nwb", lebel)
    with pytest.raises(DatasetError, match="dataset root not found"):
        open_dataset("lebel2023", tmp_path / "missing")
    with pytest.raises(DatasetError, match="not a lebel2023 dataset"):
        open_dataset("lebel2023", tmp_path)


def test_missing_or_bad_respdict(lebel):
    p = lebel / "derivative/respdict.json"
    p.write_text("{not json")
    with pytest.raises(DatasetError, match="respdict.json: not valid JSON"):
        open_dataset("lebel2023", lebel)
    p.unlink()
    with pytest.raises(DatasetError, match="respdict.json not found"):
        open_dataset("lebel2023", lebel)


def test_malformed_textgrid_names_file_and_line(lebel):
    from lmbrain.textgrid import TextGridError

    p = lebel / "derivative/TextGrids/a.TextGrid"
    lines = p.read_text().splitlines()
    idx = next(i for i, l in enumerate(lines) if "xmin = 12.0" in l)
    lines[idx] = "            xmin = twelve"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(TextGridError) as err:
        open_dataset("lebel2023", lebel).words("a")
    assert "a.TextGrid" in str(err.value) and f"line {idx + 1}" in str(err.value)


def test_summary_table(lebel, tmp_path):
    ds = open_dataset("lebel2023", lebel)
    out = tmp_path / "res" / "summary.tsv"
    table = summarize(ds, "UTS01", "all", ["b"], out)
    back = pd.read_csv(out, sep="\t")
    assert back["story"].tolist() == ["a", "b"] and back["split"].tolist() == ["train", "test"]
    assert back["n_repeats"].tolist() == [0, 2] and back["n_trs"].tolist() == [20, 15]
    assert table.shape[0] == 2


def test_pycortex_mask_gives_voxel_space(lebel):
    mask = np.zeros((4, 3, 2), bool)  # nibabel (x, y, z)
    cols = [(0, 0, 0), (3, 0, 0), (1, 2, 0), (0, 0, 1), (2, 1, 1), (3, 2, 1)]
    for c in cols:
        mask[c] = True
    db = lebel / "derivative/pycortex-db/UTS01/transforms/UTS01_auto"
    db.mkdir(parents=True)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), db / "mask_thick.nii.gz")
    space = open_dataset("lebel2023", lebel).voxel_space("UTS01")
    # pycortex order: C order of the (z, y, x) array = z slowest, then y, then x.
    expected = sorted(cols, key=lambda c: (c[2], c[1], c[0]))
    assert [tuple(i) for i in space.indices()] == expected
    vol = space.unmask(np.arange(6.0))
    assert vol[expected[2]] == 2.0 and np.isnan(vol[1, 1, 1])
    np.testing.assert_array_equal(space.mask_columns(vol), np.arange(6.0))
    # and the pycortex convention itself: mask.T in zyx order, C-ravel
    zyx = mask.T
    assert [tuple(reversed(z)) for z in zip(*np.nonzero(zyx))] == expected


# ---------------------------------------------------------------------------------------------
@pytest.fixture
def bids(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "bids"
    func = root / "sub-01" / "func"
    func.mkdir(parents=True)
    mask = np.zeros((3, 3, 2), bool)
    mask[1:, :, 1] = True
    mask[0, 0, 0] = True
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.diag([2, 2, 3, 1])), func / "sub-01_desc-brain_mask.nii.gz")
    for run in (1, 2):
        img = nib.Nifti1Image((rng.standard_normal((3, 3, 2, 25)) * 5 + 100).astype(np.float32), np.diag([2, 2, 3, 1]))
        img.header.set_zooms((2, 2, 3, 1.5))
        nib.save(img, func / f"sub-01_task-alpha_run-{run}_bold.nii.gz")
    img = nib.Nifti1Image(rng.standard_normal((3, 3, 2, 20)).astype(np.float32), np.diag([2, 2, 3, 1]))
    img.header.set_zooms((2, 2, 3, 1.5))
    nib.save(img, func / "sub-01_task-beta_bold.nii.gz")
    pd.DataFrame({"word": ["The", "sp", "cat"], "onset": [1.0, 1.5, 2.0], "offset": [1.4, 2.0, 2.5]}).to_csv(
        func / "sub-01_task-alpha_run-1_words.tsv", sep="\t", index=False)
    (root / "stimuli").mkdir()
    (root / "stimuli" / "beta.TextGrid").write_text(long_textgrid([("Dog", 3.0, 3.5)], 30.0))
    return root


def test_bids_api(bids):
    ds = open_dataset("bids", bids)
    assert ds.subjects == ["01"] and ds.stories("01") == ["alpha", "beta"]
    assert ds.words("alpha")["word"].tolist() == ["the", "cat"]
    assert ds.words("01", "beta")["word"].tolist() == ["dog"]
    np.testing.assert_allclose(ds.tr_times("01", "alpha"), (np.arange(25) + 0.5) * 1.5)
    space = ds.voxel_space("01")
    assert space.n_voxels == 7
    r = ds.responses("01", "alpha")
    assert r.shape == (25, 7) and r.dtype == np.float32
    reps = ds.repeats("01", "alpha")
    assert reps.shape == (2, 25, 7)
    np.testing.assert_allclose(reps.mean(axis=1), 0, atol=1e-5)  # each run z-scored
    # nilearn order: C order of the (x, y, z) array
    img = nib.load(bids / "sub-01/func/sub-01_task-alpha_run-1_bold.nii.gz").get_fdata()
    col = img[mask_idx := tuple(np.argwhere(space.mask)[0])]
    assert mask_idx == (0, 0, 0)
    np.testing.assert_allclose(reps[0][:, 0], (col - col.mean()) / col.std(), rtol=1e-4)
    assert ds.repeats("01", "beta") is None
    out = space.to_nifti(np.arange(7.0))
    assert out.shape == (3, 3, 2) and np.allclose(out.affine, np.diag([2, 2, 3, 1]))


def test_bids_errors(bids):
    (bids / "sub-01/func/sub-01_desc-brain_mask.nii.gz").unlink()
    with pytest.raises(DatasetError, match="no brain mask found"):
        open_dataset("bids", bids).responses("01", "beta")
    with pytest.raises(DatasetError, match="not a BIDS dataset"):
        open_dataset("bids", bids / "stimuli")


def test_bids_missing_word_timings(bids):
    (bids / "stimuli/beta.TextGrid").unlink()
    with pytest.raises(DatasetError, match="no word timings for this run"):
        open_dataset("bids", bids).words("beta")


def test_word_tsv_errors(tmp_path):
    p = tmp_path / "w.tsv"
    p.write_text("word\tonset\toffset\nhi\t1.0\t1.2\nyo\tabc\t2\n")
    with pytest.raises(DatasetError, match=r"w.tsv: line 3: onset is not a number"):
        read_word_tsv(p)
    p.write_text("word\tonset\nhi\t1.0\n")
    with pytest.raises(DatasetError, match="lacks column"):
        read_word_tsv(p)
    p.write_text("word\tonset\tduration\nhi\t1.0\t0.5\n")
    assert read_word_tsv(p)["offset"].tolist() == [1.5]


def test_atomic_outputs_have_normal_permissions_and_vanish_on_error(tmp_path):
    import os

    from lmbrain.io import atomic_path, write_text

    write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_words_and_tr_times_take_subject_then_story_like_responses(tmp_path):
    """Issue 17: words(story, subject) sat beside responses(subject, story). Now every per-story accessor
    takes (subject, story); a lone story works where the transcript does not depend on the subject."""
    import inspect

    from lmbrain.datasets import BidsDataset, Dataset, Lebel2023Dataset

    for cls in (Dataset, Lebel2023Dataset, BidsDataset):
        for name in ("words", "tr_times", "responses", "repeats"):
            params = list(inspect.signature(getattr(cls, name)).parameters)
            assert params[1] in ("subject", "subject_or_story"), (cls, name, params)


def test_bids_word_files_are_read_and_warned_about_once_per_dataset(bids):
    # a word file whose words overlap warns; a job asks for the same story's words many times (every
    # call compares all the story's runs), and the log should say it once, not at every call
    tsv = bids / "sub-01" / "func" / "sub-01_task-alpha_run-1_words.tsv"
    tsv.write_text("word\tonset\toffset\nThe\t1.0\t1.6\ncat\t1.5\t2.5\n")
    ds = open_dataset("bids", bids)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tables = [ds.words("alpha"), ds.words("alpha"), ds.words("01", "alpha")]
    assert [str(w.message).count("overlap") for w in caught] == [1]
    for t in tables:
        assert t["word"].tolist() == ["the", "cat"]
    tables[0].loc[0, "word"] = "changed"  # each call gets its own copy
    assert ds.words("alpha")["word"].tolist() == ["the", "cat"]


def test_real_data_is_checked_at_workflow_start(lebel, tmp_path):
    # demo.build false: the dataset must open and every subject have its stories before Snakemake builds
    # the job graph (there the first input function met the problem and printed it inside a traceback)
    from conftest import ROOT

    from lmbrain.config import ConfigError, check_paths, load_config, resolve

    cfg = load_config(ROOT / "config" / "config.yaml")
    cfg.update(subjects=["UTS01"], use_models=[])
    cfg["dataset"]["root"] = str(lebel)
    cfg["demo"]["build"] = False
    cfg["stories"]["test"] = ["b"]
    cfg["rois"]["source"] = "none"
    check_paths(resolve(cfg))  # UTS01 has a and b
    cfg["subjects"] = ["UTS01", "UTS02"]
    with pytest.raises(ConfigError, match=r"subject UTS02 lacks test story b \(config key stories.test\)"):
        check_paths(resolve(cfg))
    cfg["dataset"]["root"] = str(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="nothing"):
        check_paths(resolve(cfg))


def test_the_files_behind_the_data_are_listed_for_the_workflow(lebel, bids):
    # the workflow's inputs (a job reruns when one changes): exactly the files each reader opens
    ds = open_dataset("lebel2023", lebel)
    d = lebel / "derivative"
    assert ds.files("UTS01", "b") == [d / "preprocessed_data/UTS01/b.hf5", d / "TextGrids/b.TextGrid", d / "respdict.json"]
    assert ds.word_files("a") == [d / "TextGrids/a.TextGrid"]
    assert ds.grid_files("UTS01") == []  # no pycortex-db: no voxel grid
    db = d / "pycortex-db/UTS01"
    (db / "transforms/UTS01_auto").mkdir(parents=True)
    mask = db / "transforms/UTS01_auto/mask_thick.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((N_VOX, 1, 1), np.uint8), np.eye(4)), mask)
    (db / "surface.json").write_text(json.dumps({"subject": "S1", "xfm": "fullhead"}))
    assert ds.grid_files("UTS01") == [mask, db / "surface.json"]
    assert ds.voxel_space("UTS01").source == str(mask)
    with pytest.raises(DatasetError, match="no story 'c'"):
        ds.files("UTS01", "c")

    ds = open_dataset("bids", bids)
    func = bids / "sub-01/func"
    (func / "sub-01_task-beta_bold.json").write_text(json.dumps({"RepetitionTime": 1.5}))
    # alpha: run 1 has its own word file, run 2 none (and no stimuli/alpha.*); beta: a sidecar and stimuli/
    assert ds.files("01", "alpha") == [func / "sub-01_task-alpha_run-1_bold.nii.gz", func / "sub-01_task-alpha_run-1_words.tsv",
                                       func / "sub-01_task-alpha_run-2_bold.nii.gz"]
    assert ds.files("01", "beta") == [func / "sub-01_task-beta_bold.nii.gz", func / "sub-01_task-beta_bold.json",
                                      bids / "stimuli/beta.TextGrid"]
    assert ds.word_files("alpha") == [func / "sub-01_task-alpha_run-1_words.tsv"]
    assert ds.grid_files("01") == [func / "sub-01_desc-brain_mask.nii.gz"]
    (func / "sub-01_desc-brain_mask.nii.gz").unlink()
    with pytest.raises(DatasetError, match="no brain mask found"):
        ds.grid_files("01")


def test_a_bids_subject_without_a_brain_mask_stops_the_workflow_at_start(bids):
    from conftest import ROOT

    from lmbrain.config import ConfigError, check_paths, load_config, resolve

    cfg = load_config(ROOT / "config" / "config.yaml")
    cfg.update(subjects=["01"], use_models=[], tr=1.5)
    cfg["dataset"].update(root=str(bids), layout="bids")
    cfg["demo"]["build"] = False
    cfg["stories"]["test"] = ["beta"]
    cfg["rois"]["source"] = "none"
    check_paths(resolve(cfg))
    (bids / "sub-01/func/sub-01_desc-brain_mask.nii.gz").unlink()
    with pytest.raises(ConfigError, match="no brain mask found"):
        check_paths(resolve(cfg))
