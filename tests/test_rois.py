"""ROI sets (pycortex overlays, label images, BIDS dseg), per-ROI summaries and the ROI figures."""

import os
import zlib

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lmbrain import LmbrainWarning
from lmbrain import rois as R
from lmbrain.volume import VoxelSpace

S1_ROIS = ["AC", "Broca", "V1", "V2"]  # V1 and V2 overlap in a few voxels of S1's thick mask


# ------------------------------------------------------------------------------------------
# pycortex S1 (the demo's subject); one get_roi_masks call (~10 s) for the whole module
@pytest.fixture(scope="module")
def s1(pycortex_roi_cache):
    """S1's ROIs over its full thick mask. The volume masks are cached in pytest's cache folder (keyed by
    the overlays' hash), so only a cold run pays pycortex's ~10-30 s."""
    pytest.importorskip("cortex")
    cortex = R.import_pycortex()
    cache = pycortex_roi_cache
    mask_zyx = np.asarray(cortex.db.get_mask("S1", "fullhead", "thick"), dtype=bool)
    keep = R.pycortex_rois("S1", "fullhead", S1_ROIS, overlap="keep", cache_dir=cache)
    vols = R.pycortex_roi_volumes("S1", "fullhead", S1_ROIS, cache_dir=cache)
    return {"cache": cache, "mask_zyx": mask_zyx, "keep": keep, "vols": vols}


def test_pycortex_rois_full_mask_in_pycortex_column_order(s1):
    """Without a voxel space the columns are S1's thick mask in pycortex order: C order of the (z, y, x) mask."""
    rois = s1["keep"]
    assert rois.names == S1_ROIS
    assert rois.n_voxels == int(s1["mask_zyx"].sum()) == 80615
    for name in S1_ROIS:
        np.testing.assert_array_equal(rois[name], s1["vols"][name][s1["mask_zyx"]])
    assert rois.counts()["AC"] > 2000  # a real ROI, not an empty mask


def test_pycortex_rois_on_demo_subgrid(s1):
    """The demo's voxels are a strided sub-grid of S1's thick mask: their ROI masks are the full ones, restricted."""
    from lmbrain.demo import demo_voxel_space

    space, _ = demo_voxel_space((2, 4, 4))
    demo = R.pycortex_rois("S1", "fullhead", S1_ROIS, voxel_space=space, overlap="keep", cache_dir=s1["cache"])
    assert demo.n_voxels == space.n_voxels
    full_space = VoxelSpace(s1["mask_zyx"].T, space.affine, "pycortex")
    pos = {tuple(ijk): i for i, ijk in enumerate(full_space.indices())}
    cols = np.array([pos[tuple(ijk)] for ijk in space.indices()])
    np.testing.assert_array_equal(demo.masks, s1["keep"].masks[:, cols])
    # measured demo geometry (stride [2, 4, 4]; see the report)
    assert demo.counts()[["AC", "Broca"]].tolist() == [68, 9]


def test_pycortex_overlap_policy(s1):
    keep = s1["keep"]
    multi = keep.overlapping()
    assert multi.sum() > 0 and (keep["V1"] & keep["V2"]).sum() == multi.sum()
    drop = R.pycortex_rois("S1", "fullhead", S1_ROIS, overlap="drop", cache_dir=s1["cache"])
    np.testing.assert_array_equal(drop.masks, keep.masks & ~multi)
    assert not drop.overlapping().any()
    np.testing.assert_array_equal(drop["AC"], keep["AC"])
    with pytest.raises(R.RoiError, match="overlap must be one of"):
        R.pycortex_rois("S1", "fullhead", ["AC"], overlap="union")


def test_pycortex_unknown_roi_names_the_file_and_lists_available():
    pytest.importorskip("cortex")
    with pytest.raises(R.RoiError) as err:
        R.pycortex_rois("S1", "fullhead", ["AC", "Wernicke", "V4"])
    msg = str(err.value)
    assert "overlays.svg" in msg and "'Wernicke'" in msg and "available: " in msg and "IPS" in msg
    assert "V4 exist but have no outline" in msg  # a layer without outline is not an ROI
    names = R.pycortex_roi_names("S1")
    assert {"AC", "Broca", "IPS", "FEF", "RSC", "PPA", "sPMv"} <= set(names) and "V4" not in names
    with pytest.raises(R.RoiError, match="no pycortex subject 'nobody'"):
        R.pycortex_rois("nobody", "fullhead", ["AC"])
    with pytest.raises(R.RoiError, match="no pycortex transform 'nope'.*available: fullhead"):
        R.pycortex_roi_volumes("S1", "nope", ["AC"])


def _with_pycortex_settings(tmp_path, filestore, colormaps, code: str):
    """Run ``code`` (printing JSON last) in a fresh interpreter whose pycortex settings file names
    ``filestore`` and ``colormaps``; its parsed output and the settings file, which must be unchanged."""
    import json
    import subprocess
    import sys

    cfg = tmp_path / "config" / "pycortex" / "options.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"[basic]\nfilestore = {filestore}\n\n[webgl]\ncolormaps = {colormaps}\n")
    before = cfg.read_bytes()
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert cfg.read_bytes() == before
    return cfg, json.loads(out.stdout.splitlines()[-1])


def test_pycortex_settings_naming_missing_folders_fall_back_to_the_installed_ones(tmp_path):
    """pycortex writes the folder it was built in into its settings, and pip reuses a wheel built in
    another (since deleted) environment: a filestore and colour-map folder that do not exist. lmbrain
    then uses the folders installed with pycortex, says so once, and changes no file; a setting that
    names a real folder is kept."""
    pytest.importorskip("cortex")
    installed = R._installed_pycortex_folder("db")
    assert installed is not None and (installed / "S1").is_dir()
    code = """if True:
        import json, sys, warnings
        from lmbrain import rois as R
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plain = R._configured_filestore()  # read without importing pycortex
            imported = "cortex" in sys.modules
            cortex = R.import_pycortex()
            R.import_pycortex()
            n = int(cortex.db.get_mask("S1", "fullhead", "thick").sum())
            names = R.pycortex_roi_names("S1")
        from cortex import options
        print(json.dumps(dict(plain=plain, imported=imported, db=str(cortex.db.filestore), n=n, names=names,
                              colormaps=options.config.get("webgl", "colormaps"),
                              said=[str(w.message) for w in caught if issubclass(w.category, R.LmbrainWarning)])))
    """
    gone = tmp_path / "deleted-venv" / "share" / "pycortex"
    cfg, got = _with_pycortex_settings(tmp_path, gone / "db", gone / "colormaps", code)
    assert got["plain"] == got["db"] == str(installed) and not got["imported"]
    assert got["n"] == 80615 and "AC" in got["names"]
    assert got["colormaps"] == str(installed.parent / "colormaps")
    assert len(got["said"]) == 1 and str(cfg) in got["said"][0]
    assert f"filestore {gone / 'db'} -> {installed}" in got["said"][0]
    assert f"colormaps {gone / 'colormaps'} -> {installed.parent / 'colormaps'}" in got["said"][0]
    # the user's own filestore (holding S1) is kept, silently
    mine = tmp_path / "my-db"
    mine.mkdir()
    os.symlink(installed / "S1", mine / "S1")
    _, got = _with_pycortex_settings(tmp_path, mine, installed.parent / "colormaps", code)
    assert got["plain"] == got["db"] == str(mine) and got["said"] == [] and got["n"] == 80615


def test_pycortex_is_imported_without_its_inkscape_notice(tmp_path):
    """pycortex prints "Inkscape not found. Some tests will be skipped. ..." on stdout when imported on
    a machine without Inkscape, which lmbrain never needs (it draws no pycortex ROI labels): lmbrain
    imports it without that line, once per process, and passes on anything else the import prints."""
    import subprocess
    import sys

    fake = tmp_path / "fake" / "cortex"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('print("Inkscape not found. Some tests will be skipped. If you are on a Mac")\n'
                                      'print("something else pycortex says")\nLOADED = True\n')
    code = ("from lmbrain.rois import _import_cortex\n"
            "a = _import_cortex(); b = _import_cortex(); assert a is b and a.LOADED; print('done')")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "fake"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["something else pycortex says", "done"]
    # the real pycortex, through import_pycortex (every lmbrain use of pycortex), where it prints the notice
    pytest.importorskip("cortex")
    plain = subprocess.run([sys.executable, "-c", "import cortex"], capture_output=True, text=True, timeout=120)
    if "Inkscape not found" not in plain.stdout:
        pytest.skip("pycortex finds Inkscape on this machine and prints no notice")
    ours = subprocess.run([sys.executable, "-c", "from lmbrain.rois import import_pycortex; import_pycortex()"],
                          capture_output=True, text=True, timeout=120)
    assert ours.returncode == 0, ours.stderr
    assert "Inkscape" not in ours.stdout + ours.stderr


def test_the_bundled_s1_is_read_where_the_configured_filestore_lacks_it(tmp_path):
    """A LeBel user's settings name the release's pycortex-db (UTS01, ...), which has no S1: the demo's
    geometry, ROI names, outlines and flatmaps read pycortex's bundled S1 from the filestore installed
    with it, and the configured filestore stays pycortex's database for everything else."""
    pytest.importorskip("cortex")
    installed = R._installed_pycortex_folder("db")
    lab = tmp_path / "pycortex-db"
    (lab / "UTS01").mkdir(parents=True)
    code = """if True:
        import json, sys
        import numpy as np
        from lmbrain import rois as R
        from lmbrain.demo import demo_voxel_space
        from lmbrain.plots import flatmap_figure
        from lmbrain.plots_rois import roi_outlines
        names = R.pycortex_roi_names("S1")
        imported = "cortex" in sys.modules
        space, _ = demo_voxel_space((4, 12, 12))
        fig = flatmap_figure(space.unmask(np.ones(space.n_voxels)), space, {"subject": "S1", "xfm": "fullhead"},
                             0, 2, "viridis", height=520)
        ac = roi_outlines("S1", ["AC"])["AC"]
        import cortex
        print(json.dumps(dict(names=names, imported=imported, n=int(space.n_voxels), fig=fig is not None,
                              ac=len(ac), db=str(cortex.db.filestore))))
    """
    _, got = _with_pycortex_settings(tmp_path, lab, installed.parent / "colormaps", code)
    assert "AC" in got["names"] and not got["imported"]
    from lmbrain.demo import demo_voxel_space

    assert got["n"] == demo_voxel_space((4, 12, 12))[0].n_voxels and got["fig"] and got["ac"] >= 1
    assert got["db"] == str(lab)


def test_roi_names_are_read_without_importing_pycortex_and_agree_with_it(tmp_path):
    """The workflow checks rois.names at every start; pycortex_roi_names reads S1's overlays without
    importing pycortex (about 2 s), finds the filestore pycortex is configured with, and gives pycortex's
    answer. An overlays file pycortex's reader would reject goes to pycortex and gets its error."""
    import subprocess
    import sys

    pytest.importorskip("cortex")
    code = ("import sys, json; from lmbrain import rois as R; s = R._configured_filestore(); "
            "n = R.pycortex_roi_names('S1'); print(json.dumps([s, n, 'cortex' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    import json

    store, names, imported = json.loads(out.splitlines()[-1])
    assert not imported
    cortex = R.import_pycortex()

    assert store == str(cortex.db.filestore) == R._configured_filestore()
    svg = R._overlays_path(cortex.db, "S1")
    assert R._drawn_rois_plain(svg) == R._drawn_rois(svg)
    assert names == R._drawn_rois(svg)[0] and "V4" not in names
    # a copy of S1 whose overlays lose a layer's shapes: pycortex reads it and its reader's error is reported
    bad = tmp_path / "db" / "S1"
    bad.mkdir(parents=True)
    text = svg.read_text(encoding="utf-8")
    broken = text.replace('inkscape:label="shapes"', 'inkscape:label="shapez"', 1)
    assert broken != text
    (bad / "overlays.svg").write_text(broken, encoding="utf-8")
    assert R._drawn_rois_plain(bad / "overlays.svg") is None
    with pytest.raises(R.RoiError, match="cannot read the overlays file"):
        R.pycortex_roi_names("S1", filestore=tmp_path / "db")
    (bad / "overlays.svg").write_text(text.replace("<path", "<circle", 3), encoding="utf-8")
    assert R._drawn_rois_plain(bad / "overlays.svg") is not None
    with R._pycortex_filestore(tmp_path / "db") as db:  # fewer outlines, the same answer as pycortex's
        assert R._drawn_rois_plain(bad / "overlays.svg") == R._drawn_rois(R._overlays_path(db, "S1"))


def test_pycortex_grid_mismatch_is_an_error(s1):
    pytest.importorskip("cortex")
    cortex = R.import_pycortex()
    ref = cortex.db.get_xfm("S1", "fullhead").reference
    shifted = ref.affine.copy()
    shifted[:3, 3] += 0.5 * np.diag(ref.affine)[:3]  # half a voxel off
    space = VoxelSpace(s1["mask_zyx"].T, shifted, "pycortex", source="shifted_mask.nii.gz")
    with pytest.raises(R.RoiError, match="shifted_mask.nii.gz: its voxels are not on the grid of pycortex transform S1/fullhead"):
        R.pycortex_rois("S1", "fullhead", ["AC"], voxel_space=space, cache_dir=s1["cache"])


def test_pycortex_disk_cache_spares_pycortex(s1, monkeypatch, tmp_path):
    cortex = R.import_pycortex()

    def boom(*a, **k):
        raise AssertionError("get_roi_masks called although the ROIs are cached")

    monkeypatch.setattr(R, "_VOLUME_CACHE", {})
    monkeypatch.setattr(cortex.utils, "get_roi_masks", boom)
    again = R.pycortex_rois("S1", "fullhead", ["V2", "AC"], overlap="keep", cache_dir=s1["cache"])
    np.testing.assert_array_equal(again.masks, s1["keep"].select(["V2", "AC"]).masks)
    monkeypatch.setattr(R, "_VOLUME_CACHE", {})
    with pytest.raises(AssertionError, match="get_roi_masks called"):  # without the cache, pycortex is asked
        R.pycortex_rois("S1", "fullhead", ["AC"], cache_dir=tmp_path)


def test_pycortex_other_filestore(s1, tmp_path, monkeypatch):
    """LeBel's subjects live in the dataset's own pycortex-db: a filestore argument points pycortex there."""
    cortex = R.import_pycortex()

    store = tmp_path / "pycortex-db"
    store.mkdir()
    os.symlink(os.path.join(cortex.db.filestore, "S1"), store / "S1")
    before = cortex.db.filestore
    monkeypatch.setattr(R, "_VOLUME_CACHE", {})
    rois = R.pycortex_rois("S1", "fullhead", ["AC"], filestore=store, cache_dir=s1["cache"])
    np.testing.assert_array_equal(rois["AC"], s1["keep"]["AC"])
    assert cortex.db.filestore == before
    (tmp_path / "empty").mkdir()
    with pytest.raises(R.RoiError, match="no pycortex subject 'S1'"):
        R.pycortex_rois("S1", "fullhead", ["AC"], filestore=tmp_path / "empty")
    assert cortex.db.filestore == before


def test_empty_roi_is_kept_with_a_warning(s1):
    """An ROI with no voxels among the subject's columns: warned, kept, 0 voxels and NaN statistics."""
    keep = s1["keep"]
    sub = s1["mask_zyx"].T.copy()
    full_space = VoxelSpace(s1["mask_zyx"].T, np.eye(4), "pycortex")
    ijk = full_space.indices()[keep["Broca"]]
    sub[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = False  # the subject's columns miss Broca entirely
    pytest.importorskip("cortex")
    cortex = R.import_pycortex()
    space = VoxelSpace(sub, cortex.db.get_xfm("S1", "fullhead").reference.affine, "pycortex")
    with pytest.warns(LmbrainWarning, match="ROI\\(s\\) Broca have no voxels"):
        rois = R.pycortex_rois("S1", "fullhead", ["AC", "Broca"], voxel_space=space, cache_dir=s1["cache"])
    assert rois.counts().tolist() == [keep.counts()["AC"], 0]
    voxels = pd.DataFrame({"significant": True, "trw_words": 8.0, "test_r": 0.2}, index=range(rois.n_voxels))
    summ = R.roi_summary(voxels, rois, n_boot=20)
    row = summ.set_index("roi").loc["Broca"]
    assert row["n_voxels"] == 0 and np.isnan(row["median_trw_words"]) and np.isnan(row["median_test_r"])
    assert rois.drop_small(1).names == ["AC"]


# ------------------------------------------------------------------------------------------
# label images and BIDS dseg
def _space(order="pycortex"):
    mask = np.zeros((5, 4, 3), dtype=bool)
    mask[1:4, 1:3, :] = True
    return VoxelSpace(mask, np.diag([2.0, 2.0, 3.0, 1.0]), order, source="mask.nii.gz")


def _labels_and_tsv(tmp_path, space, labels_vol, rows=(("1", "AC"), ("2", "Broca"), ("3", "IPS")), name="rois"):
    img = tmp_path / f"{name}_dseg.nii.gz"
    nib.save(nib.Nifti1Image(labels_vol.astype(np.int16), space.affine), img)
    tsv = tmp_path / f"{name}_dseg.tsv"
    tsv.write_text("index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in rows))
    return img, tsv


@pytest.mark.parametrize("order", ["pycortex", "nilearn"])
def test_label_image_rois_follow_the_column_order(tmp_path, order):
    space = _space(order)
    vol = np.zeros(space.mask.shape, dtype=int)
    vol[1, 1:3, :] = 1
    vol[2:4, 1, 0] = 2
    vol[3, 2, 2] = 7  # not named in the table: ignored
    vol[0, 0, 0] = 3  # outside the brain mask: IPS is empty among the columns
    img, tsv = _labels_and_tsv(tmp_path, space, vol)
    with pytest.warns(LmbrainWarning, match="IPS have no voxels"):
        rois = R.label_image_rois(img, tsv, space)
    assert rois.names == ["AC", "Broca", "IPS"]
    cols = space.mask_columns(vol)
    np.testing.assert_array_equal(rois.masks, np.stack([cols == 1, cols == 2, cols == 3]))
    assert rois.counts().tolist() == [6, 2, 0]
    sel = R.label_image_rois(img, tsv, space, roi_names=["Broca", "AC"])
    assert sel.names == ["Broca", "AC"]
    with pytest.raises(R.RoiError, match="'Wernicke' not in the label table; available: AC, Broca, IPS"):
        R.label_image_rois(img, tsv, space, roi_names=["Wernicke"])


def test_label_image_on_another_grid_names_the_file(tmp_path):
    space = _space()
    vol = np.zeros((5, 4, 4), dtype=int)
    img, tsv = _labels_and_tsv(tmp_path, space, vol)
    with pytest.raises(R.RoiError, match=r"(?s)rois_dseg.nii.gz: the label image is on another grid .*shape \(5, 4, 4\) vs \(5, 4, 3\).*resample"):
        R.label_image_rois(img, tsv, space)
    img2 = tmp_path / "shifted_dseg.nii.gz"
    aff = space.affine.copy()
    aff[0, 3] = 1.0
    nib.save(nib.Nifti1Image(np.zeros(space.mask.shape, np.int16), aff), img2)
    with pytest.raises(R.RoiError, match="shifted_dseg.nii.gz: the label image is on another grid"):
        R.label_image_rois(img2, tsv, space)
    img3 = tmp_path / "float_dseg.nii.gz"
    nib.save(nib.Nifti1Image(np.full(space.mask.shape, 0.5, np.float32), space.affine), img3)
    with pytest.raises(R.RoiError, match="float_dseg.nii.gz: a label image must hold integer labels"):
        R.label_image_rois(img3, tsv, space)
    with pytest.raises(R.RoiError, match="missing.nii.gz: ROI label image not found"):
        R.label_image_rois(tmp_path / "missing.nii.gz", tsv, space)


def test_label_table_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("label\tname\n1\tAC\n")
    with pytest.raises(R.RoiError, match="bad.tsv: the ROI label table needs .* missing index"):
        R.read_label_table(bad)
    bad.write_text("index\tname\n1\tAC\n2\tAC\n")
    with pytest.raises(R.RoiError, match="bad.tsv: duplicate name\\(s\\) AC"):
        R.read_label_table(bad)
    bad.write_text("index\tname\n1.5\tAC\n")
    with pytest.raises(R.RoiError, match="bad.tsv: column 'index' must hold integers"):
        R.read_label_table(bad)
    with pytest.raises(R.RoiError, match="nothere.tsv: ROI label table not found"):
        R.read_label_table(tmp_path / "nothere.tsv")
    ok = tmp_path / "ok.tsv"
    ok.write_text("index\tname\tcolor\n0\tbackground\t#000000\n1\tAC\t#ff0000\n")
    assert R.read_label_table(ok)["name"].tolist() == ["background", "AC"]
    space = _space()
    vol = np.zeros(space.mask.shape, dtype=int)
    vol[1, 1, 1] = 1
    img, _ = _labels_and_tsv(tmp_path, space, vol)
    assert R.label_image_rois(img, ok, space).names == ["AC"]  # index 0 is background even when listed


def test_write_label_image_round_trip(tmp_path):
    space = _space("nilearn")
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, space.n_voxels)
    rois = R.RoiSet(["a", "b", "c"], np.stack([lab == k for k in (1, 2, 3)]), "test")
    R.write_label_image(rois, space, tmp_path / "x_dseg.nii.gz", tmp_path / "x_dseg.tsv")
    back = R.label_image_rois(tmp_path / "x_dseg.nii.gz", tmp_path / "x_dseg.tsv", space)
    assert back.names == rois.names
    np.testing.assert_array_equal(back.masks, rois.masks)


def test_bids_dseg_beside_the_runs(tmp_path):
    space = _space("nilearn")
    func = tmp_path / "sub-01" / "func"
    anat = tmp_path / "sub-01" / "anat"
    func.mkdir(parents=True)
    anat.mkdir(parents=True)
    with pytest.raises(R.RoiError, match="sub-01: no \\*_dseg.nii.gz ROI label image; put sub-01_desc-rois_dseg.nii.gz"):
        R.find_bids_dseg(tmp_path, "01")
    vol = np.zeros(space.mask.shape, dtype=int)
    vol[2, 1, :] = 2
    _labels_and_tsv(func, space, vol, name="sub-01_task-story_desc-rois")
    # an anatomical-space segmentation elsewhere is not picked when one sits beside the runs
    nib.save(nib.Nifti1Image(np.zeros((9, 9, 9), np.int16), np.eye(4)), anat / "sub-01_desc-aseg_dseg.nii.gz")
    img, tsv = R.find_bids_dseg(tmp_path, "01")
    assert img.parent == func and tsv == func / "sub-01_task-story_desc-rois_dseg.tsv"
    rois = R.bids_dseg_rois(tmp_path, "01", space, roi_names=["Broca"])
    assert rois.counts().tolist() == [3]
    with pytest.raises(R.RoiError, match="sub-01_desc-aseg_dseg.nii.gz: no label table beside it"):
        R.find_bids_dseg(tmp_path, "01", desc="aseg")
    _labels_and_tsv(func, space, vol, name="sub-01_task-story_desc-other")
    with pytest.raises(R.RoiError, match="several ROI label images .*choose one with desc"):
        R.find_bids_dseg(tmp_path, "01")
    assert R.find_bids_dseg(tmp_path, "01", desc="other")[0].name == "sub-01_task-story_desc-other_dseg.nii.gz"
    with pytest.raises(R.RoiError, match="sub-02: no such BIDS subject folder"):
        R.find_bids_dseg(tmp_path, "02")


def test_roiset_basics():
    m = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    rois = R.RoiSet(["a", "b", "e"], m, "t")
    assert rois.overlapping().tolist() == [False, True, False, False]
    with pytest.raises(R.RoiError, match="ROIs overlap in 1 voxels"):
        rois.labels()
    assert rois.resolve_overlap("drop").labels().tolist() == [1, 0, 2, 0]
    assert rois.resolve_overlap("keep") is rois
    with pytest.raises(R.RoiError, match="no ROI named 'z'; available: a, b, e"):
        rois.select(["z"])
    assert rois.drop_small(2).names == ["a", "b"]
    with pytest.raises(R.RoiError, match="duplicate ROI name"):
        R.RoiSet(["a", "a"], m[:2])
    assert R.RoiSet.from_dict({"x": [1, 0], "y": [0, 1]}).names == ["x", "y"]


# ------------------------------------------------------------------------------------------
# roi_summary
def _hand_table():
    voxels = pd.DataFrame({
        "voxel": range(8),
        "test_r_best": [0.1, 0.3, 0.2, 0.0, 0.5, 0.4, 0.05, 0.6],
        "significant": [1, 1, 1, 0, 1, 0, 0, 1],
        "trw_words": [4, 16, 8, 256, 32, 2, 1, 64],
        "scramble_class": ["word", "sentence", "sentence", "story", "paragraph", "word", "word", "story"],
    })
    rois = R.RoiSet(["A", "B", "C"], np.array([[1, 1, 1, 1, 0, 0, 0, 0],
                                               [0, 0, 0, 0, 1, 1, 0, 0],
                                               [0, 0, 0, 0, 0, 0, 0, 1]], dtype=bool), "hand")
    return voxels, rois


def test_roi_summary_hand_computed():
    voxels, rois = _hand_table()
    s = R.roi_summary(voxels, rois, n_boot=200, seed=3, min_significant=1, words_per_second=2.0).set_index("roi")
    assert s["n_voxels"].tolist() == [4, 2, 1]
    assert s["n_significant"].tolist() == [3, 1, 1]
    np.testing.assert_allclose(s["median_test_r"], [0.15, 0.45, 0.6])  # over all the ROI's voxels
    np.testing.assert_allclose(s["median_trw_words"], [8, 32, 64])  # over significant voxels only
    np.testing.assert_allclose(s["median_trw_seconds"], [4, 16, 32])
    # one significant voxel: every resample is that voxel
    assert s.loc["B", ["trw_words_low", "trw_words_high"]].tolist() == [32, 32]
    # three voxels 4, 8, 16: resampled medians are among them, and all three occur in 200 resamples
    assert s.loc["A", "trw_words_low"] == 4 and s.loc["A", "trw_words_high"] == 16
    np.testing.assert_allclose(s.loc["A", ["share_word", "share_sentence", "share_paragraph", "share_story"]].to_numpy(float),
                               [1 / 3, 2 / 3, 0, 0])
    np.testing.assert_allclose(s.loc["C", ["share_word", "share_story"]].to_numpy(float), [0, 1])
    # fewer significant voxels than min_significant: counts given, TRW statistics NaN
    s5 = R.roi_summary(voxels, rois, n_boot=50, min_significant=2).set_index("roi")
    assert np.isnan(s5.loc["B", "median_trw_words"]) and s5.loc["A", "median_trw_words"] == 8
    assert "median_trw_seconds" not in s5.columns  # no seconds without a rate or a trw_seconds column


def test_roi_summary_matches_numpy_reference():
    rng = np.random.default_rng(0)
    n = 500
    voxels = pd.DataFrame({"test_r": rng.normal(0.1, 0.1, n), "significant": rng.random(n) < 0.7,
                           "trw_words": 2.0 ** rng.integers(0, 9, n), "trw_seconds": rng.gamma(2, 5, n)})
    masks = np.stack([rng.random(n) < p for p in (0.2, 0.5, 0.05)])
    rois = R.RoiSet(["r0", "r1", "r2"], masks, "random")
    n_boot, seed = 300, 11
    s = R.roi_summary(voxels, rois, n_boot=n_boot, seed=seed, ci=0.9)
    for i, name in enumerate(rois.names):
        use = masks[i] & voxels["significant"].to_numpy()
        x = voxels.loc[use, ["trw_words", "trw_seconds"]].to_numpy()
        g = np.random.default_rng([seed, zlib.crc32(name.encode())])
        idx = g.integers(0, len(x), size=(n_boot, len(x)))
        meds = np.median(x[idx], axis=1)
        lo, hi = np.percentile(meds, [5, 95], axis=0)
        row = s.iloc[i]
        np.testing.assert_allclose(row[["median_trw_words", "median_trw_seconds"]].to_numpy(float), np.median(x, axis=0))
        np.testing.assert_allclose(row[["trw_words_low", "trw_seconds_low"]].to_numpy(float), lo)
        np.testing.assert_allclose(row[["trw_words_high", "trw_seconds_high"]].to_numpy(float), hi)
        assert row["median_test_r"] == pytest.approx(np.median(voxels["test_r"].to_numpy()[masks[i]]))


def test_roi_summary_deterministic_and_independent_of_other_rois():
    rng = np.random.default_rng(7)
    n = 200
    voxels = pd.DataFrame({"test_r": rng.normal(0.1, 0.1, n), "significant": rng.random(n) < 0.8,
                           "trw_words": rng.gamma(2, 10, n)})
    rois = R.RoiSet(["A", "B"], np.stack([rng.random(n) < 0.3, rng.random(n) < 0.3]), "random")
    a = R.roi_summary(voxels, rois, n_boot=100, seed=5)
    pd.testing.assert_frame_equal(a, R.roi_summary(voxels, rois, n_boot=100, seed=5))
    more = R.RoiSet(["X"] + rois.names, np.vstack([rng.random(n) < 0.5, rois.masks]), "random + X")
    b = R.roi_summary(voxels, more, n_boot=100, seed=5)  # X draws first
    pd.testing.assert_frame_equal(a, b.iloc[1:].reset_index(drop=True))
    assert not R.roi_summary(voxels, rois, n_boot=100, seed=6).equals(a)


def test_roi_summary_errors():
    voxels, rois = _hand_table()
    with pytest.raises(R.RoiError, match="voxel table has 7 rows but the ROI masks \\(hand\\) cover 8"):
        R.roi_summary(voxels.iloc[:7], rois)
    with pytest.raises(R.RoiError, match="no column 'significant'"):
        R.roi_summary(voxels.drop(columns="significant"), rois)
    with pytest.raises(R.RoiError, match="no column 'test_r or test_r_best'"):
        R.roi_summary(voxels.drop(columns="test_r_best"), rois)


# ------------------------------------------------------------------------------------------
# figures
def _capture(monkeypatch):
    import lmbrain.plots_rois as P

    figs = []
    real = P.save_figure

    def keep(fig, png, **kw):
        figs.append([t.get_text() for t in fig.axes[0].get_xticklabels()])
        return real(fig, png, **kw)

    monkeypatch.setattr(P, "save_figure", keep)
    return figs


def test_roi_trw_strip_writes_png_and_pdf_in_trw_order(tmp_path, monkeypatch):
    from lmbrain.plots_rois import roi_trw_strip

    figs = _capture(monkeypatch)
    rng = np.random.default_rng(1)
    n = 300
    masks = np.zeros((3, n), dtype=bool)
    masks[0, :100], masks[1, 100:200], masks[2, 200:] = True, True, True
    trw = np.concatenate([np.full(100, 64.0), np.full(100, 2.0), np.full(100, 16.0)]) * 2.0 ** rng.integers(-1, 2, n)
    voxels = pd.DataFrame({"trw_words": trw, "test_r": 0.2, "significant": rng.random(n) < 0.8})
    rois = R.RoiSet(["long", "short", "mid"], masks, "t")
    summ = R.roi_summary(voxels, rois, n_boot=100)
    out = roi_trw_strip(voxels, rois, summ, tmp_path / "rois_trw.png", title="S · model")
    assert [p.name for p in out] == ["rois_trw.png", "rois_trw.pdf"]
    assert all(p.stat().st_size > 5000 for p in out)
    assert [t.split("\n")[0] for t in figs[0]] == ["short", "mid", "long"]


def test_roi_outlines_match_pycortex_vertex_masks():
    """Outlines in flatmap coordinates enclose the same flat vertices as pycortex's own ROI test in SVG coordinates."""
    pytest.importorskip("cortex")
    cortex = R.import_pycortex()
    from lmbrain.plots_rois import roi_outlines

    outlines = roi_outlines("S1", ["AC", "IPS"])
    pts, _ = cortex.db.get_surf("S1", "flat", merge=True, nudge=True)
    from cortex import svgoverlay

    svg = svgoverlay.SVGOverlay(cortex.db.get_paths("S1")["overlays"], coords=pts[:, :2].copy())  # as get_overlay
    for name in ("AC", "IPS"):
        mine = np.zeros(len(pts), dtype=bool)
        for path in outlines[name]:
            mine |= path.contains_points(pts[:, :2])
        theirs = np.zeros(len(pts), dtype=bool)
        theirs[svg.rois.get_mask(name)] = True
        assert theirs.sum() > 500
        assert (mine != theirs).sum() <= 0.01 * theirs.sum()  # boundary points (Bezier flattening)
    with pytest.raises(R.RoiError, match="Wernicke"):
        roi_outlines("S1", ["Wernicke"])


def test_roi_flatmap_draws_outlines_and_names(tmp_path, monkeypatch):
    """A map on S1's flatmap with ROI outlines (matplotlib patches, no Inkscape); slices without a surface."""
    pytest.importorskip("cortex")
    import lmbrain.plots_rois as P
    from lmbrain.demo import demo_voxel_space

    seen = []
    real = P.save_figure

    def keep(fig, png, **kw):
        ax = fig.axes[0]
        seen.append((len(ax.patches), sorted(t.get_text() for t in ax.texts)))
        return real(fig, png, **kw)

    monkeypatch.setattr(P, "save_figure", keep)
    space, coords = demo_voxel_space((4, 12, 12))
    out = P.roi_flatmap(coords[:, 0], space, {"subject": "S1", "xfm": "fullhead"}, tmp_path / "map.png",
                        roi_names=["AC", "IPS"], title="x coordinate", label="mm")
    assert [p.name for p in out] == ["map.png", "map.pdf"] and out[0].stat().st_size > 20000
    outlines = P.roi_outlines("S1", ["AC", "IPS"])
    names = sorted(n for n, paths in outlines.items() for _ in paths)  # one outline per hemisphere
    assert names == ["AC", "AC", "IPS", "IPS"]
    assert seen[0] == (len(names), names)
    assert P.roi_flatmap(coords[:, 0], space, None, tmp_path / "slices.png")[0].exists()
