"""Reference-code behaviours (issue 20): dataset.non_words, encoding.delays_across_stories,
encoding.score, encoding.phones_include_silence and the compat preset. Expectations are written by
hand from the published description of the reference methods, not from its code."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_datasets import lebel, long_textgrid  # noqa: F401  (fixture)

from lmbrain.config import ConfigError, DatasetSettings, from_json, resolve, to_json

ROOT = Path(__file__).resolve().parents[1]


def lanczos(tr_times, word_times, tr=2.0, w=3):
    """Hand-built Lanczos resampling (Huth lab: cutoff 1/TR, window 3): sum over words of L(x)."""
    x = (np.asarray(tr_times)[:, None] - np.asarray(word_times)[None, :]) / tr
    with np.errstate(divide="ignore", invalid="ignore"):
        L = w * np.sin(np.pi * x) * np.sin(np.pi * x / w) / (np.pi ** 2 * x ** 2)
    L[x == 0] = 1.0
    L[np.abs(x) > w] = 0.0
    return L.sum(axis=1)


def test_non_words_huth_counts_sl_cg_and_empty_labels_in_the_word_rate(lebel):
    from lmbrain.stages.common import open_job_dataset
    from lmbrain.stimulus import word_rate

    tg = lebel / "derivative" / "TextGrids" / "a.TextGrid"
    # a pause labelled {SL} and a cough (cg) between two words; the grid ends with an empty interval
    tg.write_text(long_textgrid([("Hello", 12.0, 12.4), ("{SL}", 12.4, 12.9), ("cg", 13.0, 13.2),
                                 ("World", 13.2, 13.6)], 40.0))
    settings = {nw: DatasetSettings(layout="lebel2023", root=str(lebel), tr=2.0, train="all", test=("b",),
                                    non_words=nw) for nw in ("lmbrain", "huth")}
    ds = {nw: open_job_dataset(s) for nw, s in settings.items()}
    assert ds["lmbrain"].words("a")["word"].tolist() == ["hello", "world"]
    assert ds["huth"].words("a")["word"].tolist() == ["hello", "sl", "cg", "world", ""]
    t = ds["lmbrain"].tr_times("a")  # 11, 13, 15, ... s
    rate = {nw: word_rate(d.words("a"), t)[:, 0] for nw, d in ds.items()}
    np.testing.assert_allclose(rate["lmbrain"], lanczos(t, [12.2, 13.4]), atol=1e-12)
    # the reference counts the silence label, the cough and the trailing empty interval (midpoint 26.8 s)
    extra = lanczos(t, [12.65, 13.1, 26.8])
    np.testing.assert_allclose(rate["huth"] - rate["lmbrain"], extra, atol=1e-12)
    # the TR at 13 s, amid the pause, gains almost two words; TRs beyond the kernel's reach are unchanged
    assert rate["huth"][t == 13.0] - rate["lmbrain"][t == 13.0] > 1.9
    far = np.min(np.abs(t[:, None] - np.array([12.65, 13.1, 26.8])), axis=1) > 6
    np.testing.assert_array_equal(rate["huth"][far], rate["lmbrain"][far])


def base():
    with open(ROOT / "config" / "config.yaml") as fh:
        return yaml.safe_load(fh)


def test_non_words_setting_reaches_every_job():
    cfg = base()
    assert resolve(cfg).dataset.non_words == "lmbrain"
    cfg["dataset"]["non_words"] = "huth"
    s = resolve(cfg)
    assert s.dataset.non_words == "huth"
    model = next(iter(s.models))
    for job in (s.data_job(), s.feature_job(model), s.encoding_job(model), s.trw_job(model)):
        assert job.dataset.non_words == "huth"
        assert from_json(type(job), to_json(job)).dataset.non_words == "huth"
    cfg["dataset"]["non_words"] = "none"
    with pytest.raises(ConfigError, match="dataset.non_words"):
        resolve(cfg)


# -- encoding.delays_across_stories ----------------------------------------------------------------
def test_delay_stories_per_story_pads_with_zeros_across_stories_carries_the_previous_story():
    from lmbrain.stimulus import delay_stories

    a = np.array([[1.0], [2.0], [3.0]])
    b = np.array([[10.0], [20.0]])
    per = delay_stories([a, b], (1, 2))
    np.testing.assert_array_equal(per[0], [[0, 0], [1, 0], [2, 1]])
    np.testing.assert_array_equal(per[1], [[0, 0], [10, 0]])
    across = delay_stories([a, b], (1, 2), across_stories=True)
    np.testing.assert_array_equal(across[0], per[0])  # the first story of the set: zero-padded either way
    # b's first row reads a's last row at delay 1 and a's second-last at delay 2
    np.testing.assert_array_equal(across[1], [[3, 2], [10, 3]])
    # a negative delay (the word-rate model's future delays) reads into the next story
    np.testing.assert_array_equal(delay_stories([a, b], (-1,), across_stories=True)[0], [[2], [3], [10]])
    np.testing.assert_array_equal(delay_stories([a, b], (-1,))[0], [[2], [3], [0]])
    np.testing.assert_array_equal(delay_stories([a], (1,), across_stories=True)[0], [[0], [1], [2]])


def test_delay_sets_stack_training_and_test_stories_separately():
    from lmbrain.stages.encoding import _delay_sets

    X = {"a": np.array([[1.0], [2.0]]), "b": np.array([[3.0], [4.0]]), "c": np.array([[5.0], [6.0]])}
    out = _delay_sets(X, (["a", "b"], ["c"]), (1,))
    np.testing.assert_array_equal(out["a"], [[0], [1]])
    np.testing.assert_array_equal(out["b"], [[2], [3]])
    np.testing.assert_array_equal(out["c"], [[0], [5]])  # the test story never reads a training story


# -- encoding.phones_include_silence ---------------------------------------------------------------
def two_tier_grid(phones, words, end):
    """A long-format TextGrid with a phone tier and a word tier, each fully tiled ((text, xmin, xmax))."""
    def tier(name, items):
        lines = ['        class = "IntervalTier"', f'        name = "{name}"', "        xmin = 0", f"        xmax = {end}",
                 f"        intervals: size = {len(items)}"]
        for i, (text, a, b) in enumerate(items, 1):
            lines += [f"        intervals [{i}]:", f"            xmin = {a}", f"            xmax = {b}",
                      f'            text = "{text}"']
        return lines

    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {end}", "tiers? <exists>",
           "size = 2", "item []:", "    item [1]:"] + tier("phone", phones) + ["    item [2]:"] + tier("word", words)
    return "\n".join(out) + "\n"


def test_phoneme_rate_with_silences_counts_every_phone_interval(lebel):
    from types import SimpleNamespace

    from lmbrain.datasets import open_dataset
    from lmbrain.stages.encoding import _nuisance

    phones = [("sp", 0.0, 12.0), ("HH", 12.0, 12.2), ("AH", 12.2, 12.4), ("sil", 12.4, 13.0), ("W", 13.0, 13.3),
              ("ER", 13.3, 13.6), ("", 13.6, 40.0)]
    words = [("sp", 0.0, 12.0), ("hello", 12.0, 12.4), ("sp", 12.4, 13.0), ("world", 13.0, 13.6), ("", 13.6, 40.0)]
    (lebel / "derivative" / "TextGrids" / "a.TextGrid").write_text(two_tier_grid(phones, words, 40.0))
    ds = open_dataset("lebel2023", lebel)
    t = ds.tr_times("UTS01", "a")
    rates = {}
    for include in (False, True):
        enc = SimpleNamespace(nuisance=("phoneme_rate",), phones_include_silence=include, delays=(0,))
        names, bands = _nuisance(ds, "UTS01", ["a"], {"a": t}, enc)
        assert names == ["phoneme_rate"]
        rates[include] = bands["a"][0][:, 0]
    speech = lanczos(t, [12.1, 12.3, 13.15, 13.45])
    every = lanczos(t, [6.0, 12.1, 12.3, 12.7, 13.15, 13.45, 26.8])  # sp, sil and the empty interval too

    def z(x):
        return (x - x.mean()) / x.std()

    np.testing.assert_allclose(rates[False], z(speech), atol=1e-5)  # the band is z-scored per story
    np.testing.assert_allclose(rates[True], z(every), atol=1e-5)
    assert not np.allclose(rates[False], rates[True], atol=0.1)


def test_decoder_encoding_model_delays_across_stories(monkeypatch):
    """The decoder's own encoding model: with delays_across_stories the first rows of the second training
    story hold the first story's last feature rows (delay d at row r < d: row n_0 + r - d of the stack)."""
    import lmbrain.ridge as ridge_mod
    from lmbrain.decoding import Decoder
    from test_decoding import PlantedDataset, PlantedProposer, _fit_inputs

    seen = []
    fit = ridge_mod.RidgeCV.fit

    def spy(self, X, Y, groups=None):
        if Y.shape[1] > 1:  # the encoding model (the word-rate model has one target)
            seen.append((np.array(X), np.asarray(groups)))
        return fit(self, X, Y, groups=groups)

    monkeypatch.setattr(ridge_mod.RidgeCV, "fit", spy)
    rng = np.random.default_rng(9)
    prop = PlantedProposer([], [f"w{i}" for i in range(40)], rng)
    ds = PlantedDataset(rng, prop, n_stories=3, n_words=50)
    inputs = _fit_inputs(ds, ["s0", "s1"])
    Decoder(n_voxels=20, rate_voxels=10).fit(*inputs, prop)
    Decoder(n_voxels=20, rate_voxels=10, delays_across_stories=True).fit(*inputs, prop)
    (P, groups), (A, _) = seen
    n0 = int(np.sum(groups == 0))
    f = P.shape[1] // 4  # delays (1, 2, 3, 4)
    z = np.vstack([P[1:n0, :f], A[n0, :f][None]])  # story 0's z-scored features (row r + 1, delay 1 = row r)
    np.testing.assert_array_equal(A[:n0], P[:n0])
    np.testing.assert_array_equal(A[n0 + 4:], P[n0 + 4:])
    for d in (1, 2, 3, 4):
        for r in range(d):
            np.testing.assert_allclose(A[n0 + r, (d - 1) * f:d * f], z[n0 + r - d], rtol=0, atol=0)
            assert np.all(P[n0 + r, (d - 1) * f:d * f] == 0)


def test_decoder_selects_alphas_and_voxels_by_the_encoding_score(monkeypatch):
    """The decoder's encoding and word-rate models pick alphas by ``score`` (the workflow passes
    encoding.score; semantic-decoding uses r2_clipped): each voxel's alpha and CV score are those of
    RidgeCV(score=...) on the same design, and correlation scoring changes them."""
    import lmbrain.ridge as ridge_mod
    from lmbrain.decoding import Decoder
    from test_decoding import PlantedDataset, PlantedProposer, _fit_inputs

    seen = []
    fit = ridge_mod.RidgeCV.fit

    def spy(self, X, Y, groups=None):
        seen.append((self.score_kind, np.array(X), np.array(Y), np.asarray(groups), self.cv))
        return fit(self, X, Y, groups=groups)

    monkeypatch.setattr(ridge_mod.RidgeCV, "fit", spy)
    rng = np.random.default_rng(11)
    prop = PlantedProposer([], [f"w{i}" for i in range(40)], rng)
    ds = PlantedDataset(rng, prop, n_stories=4, n_words=60)
    inputs = _fit_inputs(ds, ["s0", "s1", "s2"])
    fitted = {score: Decoder(n_voxels=20, rate_voxels=10, score=score).fit(*inputs, prop)
              for score in ("r2", "corr")}
    # two ridges per decoder (encoding model, word-rate model), each with the decoder's score
    assert [k for k, *_ in seen] == ["r2", "r2", "corr", "corr"]
    monkeypatch.setattr(ridge_mod.RidgeCV, "fit", fit)
    _, X, Y, groups, cv = seen[2]
    ref = ridge_mod.RidgeCV(alphas=np.logspace(0, 6, 13), cv=cv, score="corr", search="grid",
                            progress=False).fit(X, Y, groups=groups)
    dec = fitted["corr"]
    np.testing.assert_allclose(dec.alpha_, ref.best_alphas_[dec.voxels_])
    np.testing.assert_allclose(dec.cv_score_, ref.best_scores_[dec.voxels_])
    # an independent check of the score: the kept voxels' CV correlations are correlations
    assert np.all(np.abs(dec.cv_score_) <= 1)
    assert not np.allclose(dec.cv_score_, fitted["r2"].cv_score_)


# -- compat preset ---------------------------------------------------------------------------------
# the reference's alpha grid logspace(1, 3, 10) enters its ridge squared: penalties 10^2 .. 10^6
HUTH_PENALTIES = [(10 ** (1 + 2 * i / 9)) ** 2 for i in range(10)]
REFERENCE = {("dataset", "non_words"): "huth", ("encoding", "delays_across_stories"): True,
             ("encoding", "score"): "huth_r2", ("encoding", "search"): "grid",
             ("encoding", "phones_include_silence"): True, ("decoding", "rate_rounding"): "per_tr",
             ("decoding", "rate_delays_across_stories"): True, ("decoding", "bertscore_idf"): True}
LMBRAIN = {("dataset", "non_words"): "lmbrain", ("encoding", "delays_across_stories"): False,
           ("encoding", "score"): "r2", ("encoding", "search"): "refine",
           ("encoding", "phones_include_silence"): False, ("decoding", "rate_rounding"): "cumulative",
           ("decoding", "rate_delays_across_stories"): False, ("decoding", "bertscore_idf"): False}


def _values(cfg):
    return {(sec, key): cfg[sec][key] for sec, key in REFERENCE}


def test_default_config_keeps_lmbrain_behaviour():
    from lmbrain.config import load_config

    cfg = load_config(ROOT / "config" / "config.yaml")
    assert cfg["compat"] is None and _values(cfg) == LMBRAIN
    assert cfg["encoding"]["alphas"][0] == 1.0 and len(cfg["encoding"]["alphas"]) == 13


def test_compat_huth2023_sets_every_reference_behaviour(tmp_path):
    from lmbrain.config import load_config

    user = tmp_path / "user.yaml"
    user.write_text("compat: huth2023\n")
    cfg = load_config(ROOT / "config" / "config.yaml", user)  # as snakemake --configfile merges it
    assert _values(cfg) == REFERENCE
    np.testing.assert_allclose(cfg["encoding"]["alphas"], HUTH_PENALTIES, rtol=1e-12)
    s = resolve(cfg)
    assert s.dataset.non_words == "huth" and s.encoding.score == "huth_r2" and s.encoding.search == "grid"
    assert s.encoding.delays_across_stories and s.encoding.phones_include_silence
    assert s.decoding.rate_rounding == "per_tr" and s.decoding.rate_delays_across_stories and s.decoding.bertscore_idf
    model = next(iter(s.models))
    job = s.encoding_job(model)
    assert from_json(type(job), to_json(job)) == job and job.encoding.score == "huth_r2"
    dec = s.decoder_job(model)
    assert dec.delays_across_stories and dec.search == "grid" and dec.dataset.non_words == "huth"
    assert dec.score == "huth_r2" and from_json(type(dec), to_json(dec)) == dec
    np.testing.assert_allclose(dec.alphas, HUTH_PENALTIES, rtol=1e-12)
    # the effective configuration (results/config.yaml) validates to itself
    assert _values(resolve(s.effective).effective) == REFERENCE


def test_explicit_keys_win_over_the_preset(tmp_path):
    from lmbrain.config import load_config

    user = tmp_path / "user.yaml"
    user.write_text("compat: huth2023\nencoding:\n  score: corr\n  search: refine\n  alphas: [1.0, 10.0]\n"
                    "decoding:\n  rate_rounding: cumulative\ndataset:\n  non_words: lmbrain\n")
    cfg = load_config(ROOT / "config" / "config.yaml", user)
    want = dict(REFERENCE)
    want.update({("encoding", "score"): "corr", ("encoding", "search"): "refine",
                 ("decoding", "rate_rounding"): "cumulative", ("dataset", "non_words"): "lmbrain"})
    assert _values(cfg) == want and cfg["encoding"]["alphas"] == [1.0, 10.0]
    # an explicit false is a value too
    cfg = base()
    cfg["compat"] = "huth2023"
    cfg["encoding"]["delays_across_stories"] = False
    s = resolve(cfg)
    assert s.encoding.delays_across_stories is False and s.encoding.phones_include_silence is True


def test_preset_fills_sections_the_config_leaves_out():
    from lmbrain.config import validate_config

    cfg = {"seed": 1, "tr": 2.0, "dataset": {"layout": "lebel2023", "root": "x"}, "subjects": ["S"], "demo": {"build": False},
           "stories": {"test": ["t"]}, "compat": "huth2023"}
    assert _values(validate_config(cfg)) == REFERENCE
    cfg.pop("compat")
    assert _values(validate_config(cfg)) == LMBRAIN


def test_unknown_preset_is_named():
    cfg = base()
    cfg["compat"] = "huth2022"
    with pytest.raises(ConfigError, match="compat"):
        resolve(cfg)
    cfg["compat"] = None
    cfg.pop("dataset")
    with pytest.raises(ConfigError, match="'dataset' is a required property"):
        resolve(cfg)
