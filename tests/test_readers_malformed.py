"""Malformed dataset inputs (issue 18): each is a DatasetError/TextGridError or an LmbrainWarning naming the file.

Reuses the tiny lebel2023 and BIDS datasets of test_datasets.py and breaks one thing at a time.
"""

import gzip
import json
import re
import shutil
import warnings

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from test_datasets import N_VOX, bids, lebel, long_textgrid  # noqa: F401  (fixtures)

from lmbrain import LmbrainError, LmbrainWarning
from lmbrain.datasets import DatasetError, open_dataset, read_word_tsv, stacked_responses
from lmbrain.textgrid import NON_WORDS_HUTH, TextGridError


def hf5(root, story="a", subject="UTS01"):
    return root / "derivative" / "preprocessed_data" / subject / f"{story}.hf5"


def replace(root, value, name="data", story="a", subject="UTS01"):
    """Replace dataset ``name`` of a story's .hf5 by ``value`` (the string "group": an HDF5 group)."""
    with h5py.File(hf5(root, story, subject), "a") as fh:
        del fh[name]
        if isinstance(value, str):
            fh.create_group(name)
        else:
            fh[name] = value


# ---------------------------------------------------------------------------------------------
# lebel2023
@pytest.mark.parametrize("value, message", [
    (np.zeros((15, N_VOX)), r"dataset 'individual_repeats' has shape \(15, 6\); expected 3-D \(repeats, TRs, voxels\)"),
    (np.zeros((2, 15, N_VOX + 1)), r"dataset 'individual_repeats' has 7 voxels but 'data' has 6"),
    (np.zeros((1, 2, 15, N_VOX)), r"dataset 'individual_repeats' has shape \(1, 2, 15, 6\); expected 3-D"),
    (np.zeros((2, 14, N_VOX)), r"dataset 'individual_repeats' has 14 TRs but respdict.json says 35"),
], ids=["2d", "voxels", "4d", "trs"])
def test_individual_repeats_must_match_data(lebel, value, message):
    replace(lebel, value, "individual_repeats", story="b")
    with pytest.raises(DatasetError, match=re.escape(str(hf5(lebel, "b"))) + ": " + message):
        open_dataset("lebel2023", lebel).repeats("UTS01", "b")


@pytest.mark.parametrize("value, message", [
    (True, "the TR count must be a whole number, got True (bool)"),
    (0, "0 TRs is too few: the responses have respdict - 20 rows, so at least 21 TRs are needed"),
    (-5, "-5 TRs is too few"),
    (20, "20 TRs is too few"),
    (10**12, "1000000000000 TRs is implausible for one story (more than 100,000"),
    (40.0, "the TR count must be a whole number, got 40.0 (float)"),
    ("40", "the TR count must be a whole number, got '40' (str)"),
    (None, "the TR count must be a whole number, got None (NoneType)"),
], ids=["bool", "zero", "negative", "twenty", "huge", "float", "string", "null"])
def test_respdict_values_name_the_file_and_the_story(lebel, value, message):
    path = lebel / "derivative" / "respdict.json"
    path.write_text(json.dumps({"b": 35, "a": value}))
    with pytest.raises(DatasetError) as err:
        open_dataset("lebel2023", lebel)
    assert str(err.value) == f"{path}: story 'a': {message}" or str(err.value).startswith(f"{path}: story 'a': {message}")


def test_respdict_not_utf8_or_not_a_file(lebel):
    path = lebel / "derivative" / "respdict.json"
    path.write_bytes('{"a": 40, "b": 35, "caf\xe9": 30}'.encode("latin-1"))
    with pytest.raises(DatasetError, match=re.escape(f"{path}: respdict.json is not UTF-8 text (byte 23: invalid "
                                                     "continuation byte); JSON files must be UTF-8")):
        open_dataset("lebel2023", lebel)
    path.unlink()
    path.mkdir()
    with pytest.raises(DatasetError, match=re.escape(f"{path}: cannot read respdict.json (Is a directory)")):
        open_dataset("lebel2023", lebel)
    path.rmdir()
    path.write_text(json.dumps([40, 35]))
    with pytest.raises(DatasetError, match="expected a mapping of story name to an integer TR count, got a JSON list"):
        open_dataset("lebel2023", lebel)


def test_stories_with_different_voxel_counts(lebel):
    replace(lebel, np.zeros((15, N_VOX + 2)), story="b")
    ds = open_dataset("lebel2023", lebel)
    listing = re.escape(f"{lebel / 'derivative/preprocessed_data/UTS01'}: the stories of UTS01 differ in voxel count "
                        "(6 voxels in a.hf5; 8 voxels in b.hf5); every story of a subject must hold the same voxels")
    with pytest.raises(DatasetError, match=listing):  # was a raw numpy broadcast error
        stacked_responses(ds, "UTS01", ["a", "b"], [20, 15])
    with pytest.raises(DatasetError, match=listing):
        ds.n_voxels("UTS01")
    with pytest.raises(DatasetError, match=listing):
        ds.responses("UTS01", "a")


def test_stacked_responses_checks_voxels_of_any_dataset(lebel):
    class Uneven:
        def responses(self, subject, story):
            return np.zeros((2, 3 if story == "x" else 4), np.float32)

    with pytest.raises(LmbrainError, match="story y of S: 4 voxels, but story x has 3"):
        stacked_responses(Uneven(), "S", ["x", "y"], [2, 2])


@pytest.mark.parametrize("value, message", [
    (np.zeros(20), r"dataset 'data' has shape \(20,\); expected 2-D \(TRs, voxels\)"),
    (np.float64(3.0), r"dataset 'data' has shape \(\); expected 2-D"),
    ("group", r"'data' is an HDF5 group, not a dataset; expected an array \(TRs, voxels\)"),
    (np.array([[b"x"] * N_VOX] * 20), r"dataset 'data' holds \|S1 values; responses must be real numbers"),
    (np.zeros((20, N_VOX), complex), r"dataset 'data' holds complex128 values"),
    (np.zeros((20, N_VOX), bool), r"dataset 'data' holds bool values"),
    (np.zeros((1, 20, N_VOX)), r"dataset 'data' has shape \(1, 20, 6\); expected 2-D"),
    (np.zeros((20, 0)), r"dataset 'data' has no voxels \(shape \(20, 0\)\)"),
], ids=["1d", "scalar", "group", "strings", "complex", "bool", "3d", "no_voxels"])
def test_malformed_data_names_the_file(lebel, value, message):
    replace(lebel, value)
    with pytest.raises(DatasetError, match=re.escape(str(hf5(lebel))) + ": " + message):
        open_dataset("lebel2023", lebel).responses("UTS01", "a")


def test_integer_data_is_read(lebel):
    replace(lebel, np.arange(20 * N_VOX, dtype=np.int16).reshape(20, N_VOX))
    r = open_dataset("lebel2023", lebel).responses("UTS01", "a")
    assert r.dtype == np.float32 and r[1, 0] == N_VOX


@pytest.mark.parametrize("text, message", [
    ("{oops", "not valid JSON"),
    ("[1]", 'expected a JSON object {"subject": ..., "xfm": ...}, got a JSON list'),
    ('{"subject": "S1"}', "'xfm' must be a non-empty string (the pycortex transform), got None"),
    ('{"subject": "S1", "xfm": 3}', "'xfm' must be a non-empty string"),
    ('{"subject": "S1", "xfm": "fullhead", "mask": null}', "'mask' must be a non-empty string"),
], ids=["invalid", "list", "no_xfm", "xfm_number", "mask_null"])
def test_invalid_surface_json(lebel, text, message):
    db = lebel / "derivative" / "pycortex-db" / "UTS01"
    db.mkdir(parents=True)
    (db / "surface.json").write_text(text)
    with pytest.raises(DatasetError, match=re.escape(f"{db / 'surface.json'}: {message}")):
        open_dataset("lebel2023", lebel).pycortex_surface("UTS01")


def test_valid_surface_json(lebel):
    db = lebel / "derivative" / "pycortex-db" / "UTS01"
    db.mkdir(parents=True)
    (db / "surface.json").write_text('{"subject": "S1", "xfm": "fullhead", "mask": "thick", "note": "x"}')
    assert open_dataset("lebel2023", lebel).pycortex_surface("UTS01")["xfm"] == "fullhead"
    assert open_dataset("lebel2023", lebel).pycortex_surface("UTS02") is None


def test_story_and_subject_names_must_be_plain(lebel):
    # ds.words("../../x") used to read <root>/x.TextGrid, outside the dataset's TextGrids folder
    (lebel / "x.TextGrid").write_text(long_textgrid([("Outside", 12.0, 12.4)], 40.0))
    ds = open_dataset("lebel2023", lebel)
    for call in (lambda: ds.words("../../x"), lambda: ds.words("/etc/passwd"), lambda: ds.words(""),
                 lambda: ds.words("."), lambda: ds.words("a\\b"), lambda: ds.tr_times("../x"),
                 lambda: ds.responses("UTS01", "../UTS02/a"), lambda: ds.repeats("UTS01", ".."),
                 lambda: ds.invalid_voxels("UTS01", "a/../b")):
        with pytest.raises(DatasetError, match=r"story name .* is not a plain name: it must be non-empty, contain no path separator"):
            call()
    for call in (lambda: ds.stories(".."), lambda: ds.voxel_space("../UTS02"), lambda: ds.pycortex_surface("../UTS02"),
                 lambda: ds.n_voxels("UTS01/.."), lambda: ds.responses("", "a")):
        with pytest.raises(DatasetError, match=r"subject name .* is not a plain name"):
            call()
    with pytest.raises(DatasetError, match=r"a story name must be a string, not int \(3\)"):
        ds.words(3)


def test_pycortex_mask_empty_or_nan(lebel):
    db = lebel / "derivative" / "pycortex-db" / "UTS01"
    db.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 2), np.uint8), np.eye(4)), db / "mask_thick.nii.gz")
    with pytest.raises(DatasetError, match=re.escape(f"{db / 'mask_thick.nii.gz'}: the brain mask is empty (every voxel is 0)")):
        open_dataset("lebel2023", lebel).voxel_space("UTS01")
    nan = np.zeros((4, 3, 2), np.float32)
    nan[0] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), db / "mask_thick.nii.gz")
    with pytest.raises(DatasetError, match="the brain mask holds 6 NaN or infinite values"):
        open_dataset("lebel2023", lebel).voxel_space("UTS01")
    (db / "mask_thick.nii.gz").write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match="cannot read the brain mask as NIfTI"):
        open_dataset("lebel2023", lebel).voxel_space("UTS01")


def test_lebel_words_outside_the_scan(lebel):
    tg_path = lebel / "derivative" / "TextGrids" / "a.TextGrid"
    # a TextGrid in milliseconds: every word after the 40-TR scan (60 s)
    tg_path.write_text(long_textgrid([("Hello", 12000.0, 12400.0), ("World", 13000.0, 13600.0)], 40000.0))
    with pytest.raises(DatasetError, match=re.escape(f"{tg_path}: every word starts after the end of the scan "
                                                     "(respdict.json gives 40 TRs of 2 s: 60 s; first word at 12000 s): "
                                                     "are the word times in milliseconds")):
        open_dataset("lebel2023", lebel).words("a")
    tg_path.write_text(long_textgrid([("Hello", 12.0, 12.4), ("World", 130.0, 131.0)], 400.0))
    with pytest.warns(LmbrainWarning, match=re.escape(f"{tg_path}: 1 of 2 words start after the end of the scan")):
        assert open_dataset("lebel2023", lebel).words("a")["word"].tolist() == ["hello", "world"]


def test_lebel_textgrid_with_no_words_or_a_folder(lebel):
    tg_path = lebel / "derivative" / "TextGrids" / "a.TextGrid"
    tg_path.write_text(long_textgrid([("{LG}", 12.0, 12.4)], 40.0))
    with pytest.raises(TextGridError, match=re.escape(f"{tg_path}: tier 1 ('word') holds no words")):
        open_dataset("lebel2023", lebel).words("a")
    tg_path.unlink()
    tg_path.mkdir()
    with pytest.raises(TextGridError, match="is a folder, not a TextGrid file"):
        open_dataset("lebel2023", lebel).words("a")


@pytest.mark.parametrize("tr", [0, -2, 2000, float("nan"), "2", True])
def test_configured_tr_is_checked(lebel, tr):
    with pytest.raises(DatasetError, match=r"the repetition time must be a number of seconds in \(0, 100\] \(config key tr"):
        open_dataset("lebel2023", lebel, tr=tr)


def test_open_dataset_non_words(lebel, bids):
    tg_path = lebel / "derivative" / "TextGrids" / "a.TextGrid"
    tg_path.write_text(long_textgrid([("Hello", 12.0, 12.4), ("{SL}", 12.4, 12.9), ("cg", 13.0, 13.2), ("World", 13.2, 13.6)], 40.0))
    assert open_dataset("lebel2023", lebel).words("a")["word"].tolist() == ["hello", "world"]
    # the reference keeps sl, cg and empty labels (the fixture ends with an empty interval)
    huth = open_dataset("lebel2023", lebel, non_words=NON_WORDS_HUTH).words("a")
    assert huth["word"].tolist() == ["hello", "sl", "cg", "world", ""]
    assert huth["onset"].tolist() == [12.0, 12.4, 13.0, 13.2, 13.6]
    tsv = bids / "sub-01" / "func" / "sub-01_task-alpha_run-1_words.tsv"
    tsv.write_text("word\tonset\toffset\nThe\t1.0\t1.4\n{IG}\t1.4\t1.6\nsp\t1.6\t2.0\ncat\t2.0\t2.5\n\t2.5\t2.6\n")
    assert open_dataset("bids", bids).words("alpha")["word"].tolist() == ["the", "cat"]
    assert open_dataset("bids", bids, non_words=NON_WORDS_HUTH).words("alpha")["word"].tolist() == ["the", "ig", "cat", ""]
    with pytest.raises(DatasetError, match="non_words: .*not the string"):
        open_dataset("bids", bids, non_words="sp")


# ---------------------------------------------------------------------------------------------
# BIDS
AFFINE = np.diag([2, 2, 3, 1])


def func(root):
    return root / "sub-01" / "func"


def save_bold(root, data, name="sub-01_task-beta_bold.nii.gz", affine=AFFINE, tr=1.5, units=None):
    img = nib.Nifti1Image(np.asarray(data, np.float32), affine)
    if tr is not None:
        zooms = list(img.header.get_zooms())
        zooms[3] = tr
        img.header.set_zooms(zooms)
    if units:
        img.header.set_xyzt_units(*units)
    nib.save(img, func(root) / name)
    return func(root) / name


def test_bids_empty_mask(bids):
    mask = func(bids) / "sub-01_desc-brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 2), np.uint8), AFFINE), mask)
    ds = open_dataset("bids", bids)
    for call in (lambda: ds.responses("01", "beta"), lambda: ds.n_voxels("01")):  # was 0 voxels, no error
        with pytest.raises(DatasetError, match=re.escape(f"{mask}: the brain mask is empty (every voxel is 0)")):
            call()


def test_bids_tr_in_milliseconds(bids):
    rng = np.random.default_rng(0)
    bold = save_bold(bids, rng.standard_normal((3, 3, 2, 20)), tr=2000)
    with pytest.raises(DatasetError, match=re.escape(f"{bold}: the NIfTI header gives a TR of 2000 (unknown units), i.e. "
                                                     "2000 s, which is implausible (more than 100 s): probably milliseconds")):
        open_dataset("bids", bids).tr_times("beta")
    # the header's own time unit is honoured
    save_bold(bids, rng.standard_normal((3, 3, 2, 20)), tr=2000, units=("mm", "msec"))
    np.testing.assert_allclose(open_dataset("bids", bids).tr_times("beta"), (np.arange(20) + 0.5) * 2.0)
    # a sidecar in seconds rescues an implausible header, with a warning
    save_bold(bids, rng.standard_normal((3, 3, 2, 20)), tr=2000)
    sidecar = func(bids) / "sub-01_task-beta_bold.json"
    sidecar.write_text('{"RepetitionTime": 2.0}')
    with pytest.warns(LmbrainWarning, match=re.escape(f"{bold}: the NIfTI header's TR (2000 s) is implausible")):
        np.testing.assert_allclose(open_dataset("bids", bids).tr_times("beta"), (np.arange(20) + 0.5) * 2.0)
    sidecar.write_text('{"RepetitionTime": 2000}')
    with pytest.raises(DatasetError, match=re.escape(f"{sidecar}: RepetitionTime = 2000 s is implausible (more than 100 s); "
                                                     "BIDS gives it in seconds: probably milliseconds, i.e. 2 s")):
        open_dataset("bids", bids).tr_times("beta")


@pytest.mark.parametrize("text, message", [
    ("{oops", "not valid JSON"),
    ('{"RepetitionTime": "two"}', "RepetitionTime must be a positive number of seconds, got 'two'"),
    ('{"RepetitionTime": -1}', "RepetitionTime must be a positive number of seconds, got -1"),
    ('{"RepetitionTime": true}', "RepetitionTime must be a positive number of seconds, got True"),
    ("[2.0]", "a JSON sidecar must be a JSON object, got a JSON list"),
], ids=["invalid", "string", "negative", "bool", "list"])
def test_bids_bad_sidecar(bids, text, message):
    save_bold(bids, np.random.default_rng(0).standard_normal((3, 3, 2, 20)), tr=0)
    sidecar = func(bids) / "sub-01_task-beta_bold.json"
    sidecar.write_text(text)
    with pytest.raises(DatasetError, match=re.escape(f"{sidecar}: {message}")):
        open_dataset("bids", bids).tr_times("beta")


def test_bids_tr_sources_agree_or_fall_back_with_a_warning(bids):
    rng = np.random.default_rng(0)
    bold = save_bold(bids, rng.standard_normal((3, 3, 2, 20)), tr=1.5)
    sidecar = func(bids) / "sub-01_task-beta_bold.json"
    sidecar.write_text('{"RepetitionTime": 2.0}')
    with pytest.raises(DatasetError, match=re.escape(f"{bold}: the NIfTI header gives a TR of 1.5 s but {sidecar} says "
                                                     "RepetitionTime = 2 s")):
        open_dataset("bids", bids).tr_times("beta")
    sidecar.write_text('{"RepetitionTime": 1.5, "TaskName": "beta"}')
    np.testing.assert_allclose(open_dataset("bids", bids).tr_times("beta"), (np.arange(20) + 0.5) * 1.5)
    sidecar.unlink()
    save_bold(bids, rng.standard_normal((3, 3, 2, 20)), tr=0)
    with pytest.warns(LmbrainWarning, match=re.escape(f"{bold}: no TR in the NIfTI header (pixdim[4] = 0) nor RepetitionTime")):
        np.testing.assert_allclose(open_dataset("bids", bids, tr=2.5).tr_times("beta"), (np.arange(20) + 0.5) * 2.5)


def test_bids_runs_with_different_word_files(bids):
    second = func(bids) / "sub-01_task-alpha_run-2_words.tsv"
    first = func(bids) / "sub-01_task-alpha_run-1_words.tsv"
    pd.DataFrame({"word": ["The", "dog"], "onset": [1.0, 2.0], "offset": [1.4, 2.5]}).to_csv(second, sep="\t", index=False)
    with pytest.raises(DatasetError, match=re.escape(f"{second}: the word timings of run sub-01_task-alpha_run-2_bold.nii.gz "
                                                     f"differ from those of sub-01_task-alpha_run-1_bold.nii.gz ({first}): "
                                                     "word 2 is 'cat' against 'dog'")):
        open_dataset("bids", bids).words("alpha")
    pd.DataFrame({"word": ["The", "cat"], "onset": [1.0, 2.2], "offset": [1.4, 2.5]}).to_csv(second, sep="\t", index=False)
    with pytest.raises(DatasetError, match="word 2 \\('cat'\\) has onset 2 s against 2.2 s"):
        open_dataset("bids", bids).words("01", "alpha")
    # the same words (sp aside) at the same times: fine
    pd.DataFrame({"word": ["the", "cat"], "onset": [1.0, 2.0], "offset": [1.4, 2.5]}).to_csv(second, sep="\t", index=False)
    assert open_dataset("bids", bids).words("alpha")["word"].tolist() == ["the", "cat"]


def test_bids_unparsed_run_name_warns(bids):
    src = func(bids) / "sub-01_task-beta_bold.nii.gz"
    odd = [func(bids) / "sub-01_task-gamma-x_bold.nii.gz", func(bids) / "sub-01_task-delta_bold.nii.gz.bak"]
    for path in odd:
        shutil.copy(src, path)
    with pytest.warns(LmbrainWarning) as rec:
        ds = open_dataset("bids", bids)
    assert ds.stories("01") == ["alpha", "beta"]
    messages = sorted(str(w.message) for w in rec if issubclass(w.category, LmbrainWarning))
    assert [m.split(": skipped: ")[0] for m in messages] == [str(p) for p in sorted(odd)]
    assert all("the name does not parse as a BIDS BOLD run" in m for m in messages)


def test_bids_bold_affine_must_match_the_mask(bids):
    bold = save_bold(bids, np.random.default_rng(0).standard_normal((3, 3, 2, 20)), affine=np.diag([3, 3, 3, 1]))
    with pytest.raises(DatasetError, match=re.escape(f"{bold}: the image's affine (voxel-to-world transform) differs from the "
                                                     f"mask's ({func(bids) / 'sub-01_desc-brain_mask.nii.gz'})")):
        open_dataset("bids", bids).responses("01", "beta")
    shifted = AFFINE.astype(float)
    shifted[:3, 3] = 1e-5  # below the 0.001 mm tolerance
    save_bold(bids, np.random.default_rng(0).standard_normal((3, 3, 2, 20)), affine=shifted)
    assert open_dataset("bids", bids).responses("01", "beta").shape == (20, 7)


def test_bids_unreadable_images(bids):
    bold = func(bids) / "sub-01_task-beta_bold.nii.gz"
    good = bold.read_bytes()
    raw = gzip.decompress(good)
    cases = {"not_gzip": b"garbage", "truncated_gzip": good[: len(good) // 2],
             "truncated_data": gzip.compress(raw[: len(raw) // 2])}
    for case, data in cases.items():
        bold.write_bytes(data)
        ds = open_dataset("bids", bids)
        with pytest.raises(DatasetError, match=re.escape(str(bold)) + r": cannot read .*(truncated|complete)"):
            ds.responses("01", "beta")
        if case != "truncated_data":  # the header is unreadable too
            with pytest.raises(DatasetError, match=re.escape(f"{bold}: cannot read as a NIfTI image")):
                ds.tr_times("beta")


def test_bids_bold_too_short(bids):
    save_bold(bids, np.zeros((3, 3, 2, 1)))
    with pytest.raises(DatasetError, match="a BOLD run needs at least 2 volumes to be z-scored, got 1"):
        open_dataset("bids", bids).responses("01", "beta")


def test_bids_two_files_for_one_run(bids):
    deriv = bids / "derivatives" / "prep" / "sub-01" / "func"
    deriv.mkdir(parents=True)
    copy = deriv / "sub-01_task-beta_space-T1w_bold.nii.gz"
    shutil.copy(func(bids) / "sub-01_task-beta_bold.nii.gz", copy)
    ds = open_dataset("bids", bids)
    with pytest.raises(DatasetError, match=r"_bold\.nii\.gz: the same run as .*\(subject 01, task beta, same session and run\)"):
        ds.repeats("01", "beta")  # was silently two 'repeats' of one run
    assert ds.responses("01", "alpha").shape == (25, 7)  # other stories are unaffected


def test_bids_words_after_the_run(bids):
    tsv = func(bids) / "sub-01_task-alpha_run-1_words.tsv"
    tsv.write_text("word\tonset\toffset\nThe\t1000\t1400\ncat\t2000\t2500\n")  # milliseconds
    with pytest.raises(DatasetError, match=re.escape(f"{tsv}: every word starts after the end of the scan "
                                                     "(sub-01_task-alpha_run-1_bold.nii.gz has 25 volumes of 1.5 s: 37.5 s")):
        open_dataset("bids", bids).words("alpha")
    tsv.write_text("word\tonset\toffset\nThe\t1\t1.4\ncat\t2000\t2000.5\n")
    with pytest.warns(LmbrainWarning, match=re.escape(f"{tsv}: 1 of 2 words start after the end of the scan")):
        open_dataset("bids", bids).words("alpha")


# ---------------------------------------------------------------------------------------------
# Word tables (TSV)
@pytest.mark.parametrize("text, message", [
    ("The\t1.0\t1.4\ncat\t2.0\t2.5\n", "lacks column(s) offset, onset, word (found: The, 1.0, 1.4); the first line must be the header"),
    ("word,onset,offset\nThe,1.0,1.4\n", "(found: word,onset,offset); the file looks comma-separated"),
    ("word\tonset\toffset\nThe\t-inf\t1.4\n", "line 2: onset is not a finite number (-inf)"),
    ("word\tonset\toffset\nThe\t1.0\tNaN\n", "line 2: offset is not a number ('NaN')"),
    ("word\tonset\toffset\nThe\tn/a\t1.4\n", "line 2: onset is not a number ('n/a')"),
    ("word\tonset\toffset\nThe\t1e308\t1.7e308\n", "line 2: onset = 1e+308 s is not a plausible word time"),
    ("word\tonset\tduration\nThe\t1.0\tx\n", "line 2: offset is not a number"),
    ("word\tonset\toffset\n", "no words: 0 rows"),
    ("word\tonset\toffset\nsp\t1\t2\n{LG}\t2\t3\n", "no words: 2 rows, all non-word labels"),
    ("", "cannot read as a tab-separated UTF-8 table"),
], ids=["no_header", "commas", "inf", "nan", "n/a", "huge", "bad_duration", "header_only", "only_non_words", "empty"])
def test_word_tsv_malformed(tmp_path, text, message):
    p = tmp_path / "w.tsv"
    p.write_text(text)
    with pytest.raises(DatasetError, match=re.escape(f"{p}: ") + ".*" + re.escape(message)):
        read_word_tsv(p)


def test_word_tsv_encoding_and_warnings(tmp_path):
    p = tmp_path / "w.tsv"
    p.write_bytes("\ufeffword\tonset\toffset\nThe\t1.0\t1.4\n".encode())  # a byte-order mark is not part of the header
    with warnings.catch_warnings():
        warnings.simplefilter("error", LmbrainWarning)
        assert read_word_tsv(p)["word"].tolist() == ["the"]
    p.write_bytes("word\tonset\toffset\ncaf\xe9\t1.0\t1.4\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="cannot read as a tab-separated UTF-8 table"):
        read_word_tsv(p)
    p.write_text("word\tonset\toffset\nThe\t1.0\t2.4\ncat\t2.0\t2.5\n")
    with pytest.warns(LmbrainWarning, match=re.escape(f"{p}: 1 word(s) overlap the next one (first: 'the' 1-2.4 s and 'cat' from 2 s)")):
        read_word_tsv(p)
    p.write_text("word\tonset\toffset\nThe\t-1.0\t-0.5\ncat\t2.0\t2.5\n")
    with pytest.warns(LmbrainWarning, match=re.escape(f"{p}: 1 word(s) start before 0 s (the first at -1 s)")):
        read_word_tsv(p)
    # rows out of order are sorted (BIDS events files need not be in order)
    p.write_text("word\tonset\toffset\ncat\t2.0\t2.5\nThe\t1.0\t1.4\n")
    assert read_word_tsv(p)["word"].tolist() == ["the", "cat"]


def test_bids_msec_unit_on_a_value_in_seconds(bids):
    bold = save_bold(bids, np.random.default_rng(0).standard_normal((3, 3, 2, 20)), tr=2.0, units=("mm", "msec"))
    with pytest.warns(LmbrainWarning, match=re.escape(f"{bold}: the NIfTI header gives pixdim[4] = 2 with a time unit of msec, "
                                                      "i.e. 0.002 s, too short for fMRI; taking it as 2 s")):
        np.testing.assert_allclose(open_dataset("bids", bids).tr_times("beta"), (np.arange(20) + 0.5) * 2.0)


def test_small_naming_slips(bids, tmp_path):
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path / 'f'}: dataset root is a file, not a folder")):
        (tmp_path / "f").write_text("x")
        open_dataset("bids", tmp_path / "f")
    with pytest.raises(DatasetError, match=re.escape("no subject 'sub-01' in this bids dataset; subjects present: 01 "
                                                     "(subjects are named without the 'sub-' prefix: use '01')")):
        open_dataset("bids", bids).responses("sub-01", "beta")
    events = func(bids) / "sub-01_task-alpha_run-1_events.tsv"
    (func(bids) / "sub-01_task-alpha_run-1_words.tsv").unlink()
    events.write_text("onset\tduration\ttrial_type\n1\t2\tstory\n")
    with pytest.raises(DatasetError, match=re.escape(f"{events}: word-timing table lacks column(s) word (found: onset, duration, trial_type)")):
        open_dataset("bids", bids).words("alpha")


# ---------------------------------------------------------------------------------------------
# Arguments: voxel selections, story lists
@pytest.mark.parametrize("voxels, message", [
    ([10], "voxel indices out of range [0, 6)"),
    ([3, 1], "voxel indices must be strictly increasing"),
    ([0.5], "voxel indices must be whole numbers, got float64 values"),
    (np.array([[0, 1]]), "voxels must be a 1-D list of indices or a boolean mask, got an array of shape (1, 2)"),
    ("abc", "voxels must be a 1-D list of indices or a boolean mask, got an array of shape ()"),
    (slice(None, None, -1), "a voxel slice needs a positive whole step, got slice(None, None, -1)"),
    ([True, True, True], "a boolean voxel mask needs 6 entries (one per voxel), got 3"),
], ids=["range", "order", "float", "2d", "string", "reversed", "short_mask"])
def test_voxel_selections_are_checked(lebel, voxels, message):
    with pytest.raises(DatasetError, match=re.escape(f"{hf5(lebel)}: {message}")):
        open_dataset("lebel2023", lebel).responses("UTS01", "a", voxels=voxels)


def test_valid_voxel_selections(lebel, bids):
    ds = open_dataset("lebel2023", lebel)
    full = ds.responses("UTS01", "a")
    mask = np.zeros(N_VOX, bool)
    mask[[1, 4]] = True
    np.testing.assert_array_equal(ds.responses("UTS01", "a", voxels=mask), full[:, [1, 4]])
    np.testing.assert_array_equal(ds.responses("UTS01", "a", voxels=slice(0, 100, 2)), full[:, ::2])
    assert ds.responses("UTS01", "a", voxels=[]).shape == (20, 0)
    b = open_dataset("bids", bids)
    np.testing.assert_array_equal(b.responses("01", "beta", voxels=np.array([0, 6])), b.responses("01", "beta")[:, [0, 6]])


@pytest.mark.parametrize("train, test, message", [
    (["a", "a"], ["b"], "config key stories.train: a listed more than once"),
    ("all", ["b", "b"], "config key stories.test: b listed more than once"),
    ("a", ["b"], "config key stories.train: expected 'all' or a list of story names, got 'a'"),
    ("all", "b", "config key stories.test: expected a list of story names, got 'b'"),
    ("all", [3], "config key stories.test: story names must be strings, got 3"),
], ids=["train_twice", "test_twice", "train_str", "test_str", "test_int"])
def test_split_refuses_malformed_story_lists(lebel, train, test, message):
    with pytest.raises(DatasetError, match=re.escape(message)):
        open_dataset("lebel2023", lebel).split("UTS01", train, test)


def test_stacked_responses_arguments(lebel):
    ds = open_dataset("lebel2023", lebel)
    with pytest.raises(DatasetError, match="2 stories but 1 TR counts"):
        stacked_responses(ds, "UTS01", ["a", "b"], [20])  # zip used to drop story b silently
    with pytest.raises(DatasetError, match="no stories to stack for subject UTS01"):
        stacked_responses(ds, "UTS01", [], [])
    assert stacked_responses(ds, "UTS01", ["a", "b"], (20, 15)).shape == (35, N_VOX)


def test_duplicate_json_keys(lebel, bids):
    path = lebel / "derivative" / "respdict.json"
    path.write_text('{"a": 40, "b": 35, "a": 50}')  # json.loads keeps 50 silently
    with pytest.raises(DatasetError, match=re.escape(f"{path}: the key 'a' appears more than once in one JSON object")):
        open_dataset("lebel2023", lebel)
    sidecar = func(bids) / "sub-01_task-beta_bold.json"
    sidecar.write_text('{"RepetitionTime": 1.5, "RepetitionTime": 2.0}')
    with pytest.raises(DatasetError, match=re.escape(f"{sidecar}: the key 'RepetitionTime' appears more than once")):
        open_dataset("bids", bids).tr_times("beta")
