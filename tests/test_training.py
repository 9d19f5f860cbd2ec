"""Training: learns, is deterministic on CPU, resumes exactly after an interruption, writes its report."""

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

import lmbrain.training as training
from lmbrain.models import load_model, model_spec
from lmbrain.training import CorpusError, split_corpus, train_model, training_corpus

# a small corpus with structure an LM can learn (a repeating grammar over a few hundred words)
_RNG = np.random.default_rng(0)
_NOUNS = [f"n{i}" for i in range(40)]
_VERBS = [f"v{i}" for i in range(20)]
CORPUS = []
for _ in range(2500):
    CORPUS += ["the", str(_RNG.choice(_NOUNS)), str(_RNG.choice(_VERBS)), "a", str(_RNG.choice(_NOUNS)), "."]
TRAIN, HELD = CORPUS[:14000], CORPUS[14000:]


def spec(kind, **kw):
    base = {"type": kind, "embedding_dim": 16, "min_count": 1, "epochs": 2, "batch_size": 8, "seq_len": 12,
            "dropout": 0.0}
    if kind in ("rnn", "lstm", "mtlstm"):
        base.update(hidden_dim=24, n_layers=1)
    if kind == "transformer":
        base.update(n_layers=1, n_heads=2, max_positions=32)
    return model_spec(kind, {**base, **kw})


@pytest.mark.parametrize("kind", ["attention", "rnn", "lstm", "mtlstm", "transformer"])
def test_every_type_trains_below_unigram_perplexity(kind, tmp_path):
    res = train_model(spec(kind), TRAIN, HELD, tmp_path / kind, seed=1)
    final = res["history"][-1]["heldout_perplexity"]
    # the grammar makes the next word far more predictable than word frequencies alone
    assert final < 0.6 * res["unigram_perplexity"], (final, res["unigram_perplexity"])
    table = pd.read_csv(tmp_path / kind / "training.tsv", sep="\t")
    assert list(table["epoch"]) == [1, 2] and {"train_perplexity", "heldout_perplexity", "unigram_perplexity"} <= set(table)
    assert (tmp_path / kind / "training.png").stat().st_size > 5000 and (tmp_path / kind / "training.pdf").exists()
    assert not (tmp_path / kind / "checkpoint").exists()
    assert load_model(tmp_path / kind).kind == kind


def test_training_is_deterministic_on_cpu(tmp_path):
    train_model(spec("lstm"), TRAIN, HELD, tmp_path / "a", seed=5)
    train_model(spec("lstm"), TRAIN, HELD, tmp_path / "b", seed=5)
    train_model(spec("lstm"), TRAIN, HELD, tmp_path / "c", seed=6)
    a, b, c = (load_file(str(tmp_path / x / "model.safetensors")) for x in "abc")
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert not all(np.array_equal(a[k].numpy(), c[k].numpy()) for k in a)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    s = spec("transformer", epochs=3)
    train_model(s, TRAIN, HELD, tmp_path / "full", seed=2)
    real = training._save_checkpoint
    calls = {"n": 0}

    def crash_after_first(*args, **kw):
        real(*args, **kw)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt("simulated job kill")

    monkeypatch.setattr(training, "_save_checkpoint", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        train_model(s, TRAIN, HELD, tmp_path / "resumed", seed=2)
    assert json.loads((tmp_path / "resumed/checkpoint/progress.json").read_text())["epoch"] == 1
    assert not (tmp_path / "resumed/model.safetensors").exists()
    monkeypatch.setattr(training, "_save_checkpoint", real)
    res = train_model(s, TRAIN, HELD, tmp_path / "resumed", seed=2)
    assert [r["epoch"] for r in res["history"]] == [1, 2, 3]
    full = load_file(str(tmp_path / "full/model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed/model.safetensors"))
    assert all(np.array_equal(full[k].numpy(), resumed[k].numpy()) for k in full)


def test_corpus_excludes_the_stimulus_plays_and_holds_out_text(shakespeare_archive, tmp_path):
    cfg = {"demo": {"plays": ["romeo_and_juliet"], "cache_dir": str(shakespeare_archive.parent)}, "corpus": {}}
    texts, excluded = training_corpus(cfg)
    assert excluded == ["romeo_and_juliet"] and "romeo_and_juliet" not in texts and "hamlet" in texts
    train, held = split_corpus({"a": list("abcdefghij"), "b": list("0123456789")}, 0.2)
    assert held == ["i", "j", "8", "9"] and len(train) == 16
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "one.txt").write_text("It is a truth universally acknowledged. " * 30)
    (folder / "two.txt").write_text("Call me Ishmael. " * 40)
    texts, _ = training_corpus({"corpus": {"source": str(folder), "exclude": ["two"]}})
    assert list(texts) == ["one"] and texts["one"][:3] == ["it", "is", "a"]
    with pytest.raises(CorpusError, match="neither 'shakespeare' nor an existing folder"):
        training_corpus({"corpus": {"source": str(tmp_path / "nope")}})
