"""Encoding with low-level nuisance bands (issue 14): the banded model, its split R2 columns and maps, the
nuisance regressors, and that turning the bands off gives the plain ridge model."""

import logging
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # banded fits on a 6-story demo

from lmbrain.config import ConfigError, resolve
from lmbrain.datasets import open_dataset
from lmbrain.encoding import banded_candidates, nuisance_design
from lmbrain.layout import Layout
from lmbrain.stages.encoding import encoding_model
from lmbrain.stages.features import extract_features
from lmbrain.stages.models import pretrained_model
from lmbrain import stimulus
from conftest import tiny_config

KS = [1, 16]


def _config(tmp, **encoding):
    cfg = tiny_config(tmp / "demo", n_stories=6, min_words=400, max_words=900, voxel_stride=[4, 8, 8],
                      snr_min=0.5, snr_max=1.0, n_repeats=3, noise_fraction=0.2, word_rate_fraction=0.15)
    cfg["stories"]["test"] = ["romeo_and_juliet_06"]
    cfg["models"] = {"planted": {"type": "planted"}}
    cfg["use_models"] = None
    cfg["features"]["context_lengths"] = KS
    cfg["device"] = "cpu"
    cfg["encoding"].update(n_permutations=100, maps=True, **encoding)
    return cfg


@pytest.fixture(scope="module")
def banded_run(tmp_path_factory, shakespeare_archive):
    """A demo with word-rate voxels and topic voxels; the planted model's features, fitted banded (the
    default: nuisance bands listed) and as plain ridge (nuisance off)."""
    from lmbrain.demo import build_demo

    tmp = tmp_path_factory.mktemp("banded")
    cfg = _config(tmp)
    settings = resolve(cfg)
    build_demo(settings.demo_job(), progress=False)
    layout = Layout(results=str(tmp))
    pretrained_model(settings.pretrained_job("planted"), layout.model_dir("planted"))
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    for story in ds.stories("DEMO01"):
        extract_features(settings.feature_job("planted"), story, layout.model_dir("planted"),
                         layout.features_dir("planted", story))
    assert settings.encoding.model == "banded"
    summary = encoding_model(settings.encoding_job("planted"), "DEMO01", "hidden-L1", tmp / "banded", layout=layout)
    plain = _config(tmp, nuisance=[])
    assert resolve(plain).encoding.model == "ridge"
    encoding_model(resolve(plain).encoding_job("planted"), "DEMO01", "hidden-L1", tmp / "ridge", layout=layout)
    return cfg, tmp, layout, summary


def test_split_r2_columns_sum_to_the_test_r2_and_weights_per_band(banded_run):
    cfg, tmp, _, summary = banded_run
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    y = ds.responses("DEMO01", "romeo_and_juliet_06").astype(np.float64)
    bands = ["lm", "word_rate", "phoneme_rate", "silence"]
    for k in KS:
        folder = tmp / "banded" / f"k{k}"
        table = pd.read_csv(folder / "voxels.tsv", sep="\t")
        assert [f"r2_{b}" for b in bands] == [c for c in table.columns if c.startswith("r2_")]
        assert [f"alpha_{b}" for b in bands] == [c for c in table.columns if c.startswith("alpha_")]
        with h5py.File(folder / "predictions.h5") as fh:
            pred = fh["pred"][()].astype(np.float64)
        r2 = 1 - ((y - pred) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
        total = table[[f"r2_{b}" for b in bands]].sum(axis=1).to_numpy()
        np.testing.assert_allclose(total, r2, atol=5e-3)  # predictions stored as float16
        with h5py.File(folder / "weights.h5") as fh:
            n_feat = fh.attrs["n_features"]
            assert fh["coef"].shape == (n_feat, len(table))  # the language-model band only (scrambling reads it)
            assert fh["coef_nuisance"].shape == (3 * 4, len(table))
            assert list(fh["nuisance"].asstr()[()]) == bands[1:]
            np.testing.assert_allclose(fh["gamma"][()].sum(axis=0), 1, atol=1e-5)
            np.testing.assert_allclose(fh["band_alpha"][0], table["alpha_lm"], rtol=1e-5)  # %.6g in the table
        assert (folder / "r2_lm.nii.gz").exists() and (folder / "r2_lm.png").stat().st_size > 10000
    for b in bands:
        assert f"mean_r2_{b}" in summary.columns


def test_nuisance_bands_explain_word_rate_voxels_not_topic_voxels(banded_run):
    """The demo's word-rate voxels get most of their explained variance from the nuisance bands; its
    topic voxels from the language-model band (here the generator's own topic reader)."""
    cfg, tmp, _, _ = banded_run
    truth = pd.read_csv(tmp / "demo" / "ground_truth.tsv", sep="\t")
    table = pd.read_csv(tmp / "banded" / f"k{KS[-1]}" / "voxels.tsv", sep="\t")
    nuis = table[["r2_word_rate", "r2_phoneme_rate", "r2_silence"]].sum(axis=1).to_numpy()
    lm = table["r2_lm"].to_numpy()
    rate = (truth["driver"] == "word_rate").to_numpy()
    topics = (truth["driver"] == "topics").to_numpy() & (lm + nuis > 0.05)
    assert rate.sum() >= 5 and topics.sum() >= 20
    share_rate = nuis[rate] / np.maximum(nuis[rate] + lm[rate], 1e-9)
    share_topics = nuis[topics] / (nuis[topics] + lm[topics])
    print(f"nuisance share of the explained variance: word-rate voxels {np.median(share_rate):.2f}, "
          f"topic voxels {np.median(share_topics):.2f}")
    assert np.median(share_rate) > 0.7
    assert np.median(share_topics) < 0.2


def test_without_nuisance_the_plain_ridge_model_is_unchanged(banded_run):
    """nuisance: [] fits RidgeCV on the feature alone, exactly as before banded models existed."""
    from lmbrain.encoding import design
    from lmbrain.ridge import RidgeCV

    cfg, tmp, layout, _ = banded_run
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    train, test = ds.split("DEMO01", "all", cfg["stories"]["test"])
    k = KS[-1]
    files = {s: layout.feature_file("planted", s, k) for s in train + test}
    X = design(files, "hidden", 1, {s: ds.tr_times(s) for s in train + test}, (1, 2, 3, 4))
    Y = np.concatenate([ds.responses("DEMO01", s) for s in train])
    groups = np.concatenate([np.full(len(X[s]), i) for i, s in enumerate(train)])
    ref = RidgeCV(alphas=np.asarray(cfg["encoding"]["alphas"], dtype=np.float64), score="r2", search="refine",
                  device="cpu").fit(np.concatenate([X[s] for s in train]), Y, groups=groups)
    table = pd.read_csv(tmp / "ridge" / f"k{k}" / "voxels.tsv", sep="\t")
    assert not [c for c in table.columns if c.startswith(("r2_", "alpha_"))]
    np.testing.assert_allclose(table["alpha"], ref.best_alphas_, rtol=1e-5)
    with h5py.File(tmp / "ridge" / f"k{k}" / "weights.h5") as fh:
        assert "coef_nuisance" not in fh
        np.testing.assert_allclose(fh["coef"][()].astype(np.float64), ref.coef_, atol=2e-3, rtol=2e-3)


def test_nuisance_design_is_each_regressor_zscored_and_delayed(banded_run):
    cfg, *_ = banded_run
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    s = "romeo_and_juliet_01"
    words, phones, t = ds.words(s), ds.phones(s), ds.tr_times(s)
    # the demo's phones are one per letter of each word (pauses dropped)
    assert len(phones) == sum(max(1, sum(c.isalpha() for c in w)) for w in words["word"])
    out = nuisance_design(["word_rate", "phoneme_rate", "silence"], words, phones, t, (1, 2))
    for x, raw in zip(out, (stimulus.word_rate(words, t), stimulus.phoneme_rate(phones, t), stimulus.silence(words, t))):
        z = (raw[:, 0] - raw[:, 0].mean()) / raw[:, 0].std()
        assert x.shape == (len(t), 2)
        np.testing.assert_allclose(x[1:, 0], z[:-1], atol=1e-5)
        np.testing.assert_allclose(x[2:, 1], z[:-2], atol=1e-5)
        assert x[0, 0] == 0 and not x[:2, 1].any()


def test_phoneme_rate_is_skipped_without_a_phone_tier(banded_run, tmp_path, caplog):
    """A transcript without a phone tier (one word tier): phones() is None and the banded model goes on
    with word rate and silence, saying so in the log."""
    from lmbrain import textgrid as tg

    cfg, tmp, layout, _ = banded_run
    root = tmp_path / "demo"
    shutil.copytree(cfg["dataset"]["root"], root)
    for path in (root / "derivative" / "TextGrids").glob("*.TextGrid"):
        grid = tg.read(path)
        word = [t for t in grid.tiers if t.name == "word"][0]
        tg.write(path, tg.TextGrid(grid.xmin, grid.xmax, [word]))
    ds = open_dataset("lebel2023", root)
    assert ds.phones("romeo_and_juliet_01") is None
    assert len(ds.words("romeo_and_juliet_01")) > 100
    cfg2 = {**cfg, "dataset": {**cfg["dataset"], "root": str(root)}}
    cfg2["features"] = {**cfg["features"], "context_lengths": [KS[0]]}
    with caplog.at_level(logging.INFO, logger="lmbrain.encoding"):
        encoding_model(resolve(cfg2).encoding_job("planted"), "DEMO01", "hidden-L1", tmp_path / "out", layout=layout)
    assert "phoneme_rate skipped" in caplog.text
    table = pd.read_csv(tmp_path / "out" / f"k{KS[0]}" / "voxels.tsv", sep="\t")
    assert [c for c in table.columns if c.startswith("r2_")] == ["r2_lm", "r2_word_rate", "r2_silence"]


def test_banded_candidates_hold_every_band_alone_and_the_centre():
    g = banded_candidates(12, 4, seed=3)
    assert g.shape == (12, 4)
    np.testing.assert_allclose(g[:4], np.eye(4))
    np.testing.assert_allclose(g[4], 0.25)
    np.testing.assert_allclose(g.sum(axis=1), 1)
    assert len(np.unique(np.round(g, 8), axis=0)) == 12
    np.testing.assert_array_equal(g, banded_candidates(12, 4, seed=3))
    assert banded_candidates(2, 3, seed=0).shape == (4, 3)  # never fewer than the corners and the centre


def test_banded_settings_are_checked(tmp_path):
    cfg = tiny_config(tmp_path / "demo")
    cfg["encoding"].update(model="banded", nuisance=[])
    with pytest.raises(ConfigError, match="encoding.model is banded but encoding.nuisance is empty"):
        resolve(cfg)
    cfg["encoding"].update(model="ridge", nuisance=["word_rate"])
    assert resolve(cfg).encoding.model == "ridge"
    cfg["encoding"].update(model=None, nuisance=["loudness"])
    with pytest.raises(ConfigError, match="nuisance"):
        resolve(cfg)
