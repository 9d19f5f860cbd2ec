"""TR alignment and word -> TR resampling against hand-computed values and float64 references."""

import numpy as np
import pytest

from lmbrain import LmbrainError
from lmbrain.stimulus import (lanczos_kernel, lanczos_matrix, lebel_response_times, lebel_stimulus_times,
                              make_delayed, zscore)


def test_lebel_alignment_hand_computed():
    # wheretheressmoke: respdict 311 -> 306 simulated stimulus TRs centred at -9, -7, ... s;
    # rows [10:-5] are the 291 response rows, row i at 2 i + 11 s.
    stim = lebel_stimulus_times(311)
    assert len(stim) == 306
    assert stim[:3].tolist() == [-9.0, -7.0, -5.0]
    resp = lebel_response_times(311)
    assert len(resp) == 311 - 20
    assert resp[0] == 11.0 and resp[1] == 13.0 and resp[-1] == 2 * 290 + 11
    np.testing.assert_array_equal(resp, 2.0 * np.arange(291) + 11.0)


def test_alignment_scales_with_tr():
    resp = lebel_response_times(40, tr=1.5)
    np.testing.assert_allclose(resp, 1.5 * np.arange(20) + 5.5 * 1.5)


def test_too_short_story_is_an_error():
    with pytest.raises(LmbrainError, match="too small"):
        lebel_response_times(20)


def test_lanczos_kernel_values():
    # L(0) = 1, zero at non-zero integers, zero beyond the window, hand value at x = 0.5:
    # 3 sin(pi/2) sin(pi/6) / (pi^2 / 4) = 3 * 1 * 0.5 * 4 / pi^2 = 6 / pi^2.
    x = np.array([0.0, 1.0, -2.0, 3.0, 3.5, 0.5])
    np.testing.assert_allclose(lanczos_kernel(x), [1, 0, 0, 0, 0, 6 / np.pi**2], atol=1e-12)


def test_lanczos_matrix_float64_reference():
    rng = np.random.default_rng(0)
    tr_times = 2.0 * np.arange(30) + 11
    word_times = np.sort(rng.uniform(0, 70, 100))
    L = lanczos_matrix(tr_times, word_times)
    ref = np.zeros((30, 100))
    for i, t in enumerate(tr_times):
        for j, w in enumerate(word_times):
            x = (t - w) * 0.5
            if x == 0:
                ref[i, j] = 1
            elif abs(x) <= 3:
                ref[i, j] = 3 * np.sin(np.pi * x) * np.sin(np.pi * x / 3) / (np.pi**2 * x**2)
    np.testing.assert_allclose(L, ref, atol=1e-12)
    # A sum, not a mean: a constant feature of 1 per word tracks the word count (about 2 words per s
    # -> about rate * TR / (TR * cutoff) ... checked loosely: more words, larger values).
    dense = lanczos_matrix(tr_times, np.linspace(0, 70, 400)) @ np.ones(400)
    sparse = lanczos_matrix(tr_times, np.linspace(0, 70, 100)) @ np.ones(100)
    assert dense[10] == pytest.approx(4 * sparse[10], rel=0.05)


def test_make_delayed():
    x = np.arange(12, dtype=float).reshape(6, 2)
    d = make_delayed(x, (1, 2))
    assert d.shape == (6, 4)
    np.testing.assert_array_equal(d[:, :2], [[0, 0], [0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
    np.testing.assert_array_equal(d[:, 2:], [[0, 0], [0, 0], [0, 1], [2, 3], [4, 5], [6, 7]])


def test_zscore_constant_column_is_zero():
    x = np.c_[np.arange(5.0), np.ones(5)]
    z = zscore(x)
    np.testing.assert_allclose(z[:, 0].std(), 1)
    assert np.all(z[:, 1] == 0)


def test_downsample_hand_values():
    from lmbrain.stimulus import downsample

    tr = np.array([11.0, 13.0, 15.0])
    # a word exactly on a TR centre: L(0) = 1 there, 0 at the neighbours (x = 1, 2)
    np.testing.assert_allclose(downsample([[1.0]], [11.0], tr)[:, 0], [1, 0, 0], atol=1e-12)
    # a word half-way: x = -0.5 and 0.5 -> 6 / pi^2 each; x = 1.5 -> 3 sin(1.5 pi) sin(pi/2) / (2.25 pi^2)
    expected = [6 / np.pi**2, 6 / np.pi**2, 3 * np.sin(1.5 * np.pi) * np.sin(0.5 * np.pi) / (2.25 * np.pi**2)]
    np.testing.assert_allclose(downsample([[2.0]], [12.0], tr)[:, 0], 2 * np.array(expected), atol=1e-12)
    with pytest.raises(LmbrainError, match="rows of word features"):
        downsample(np.ones((3, 2)), [1.0, 2.0], tr)


def test_nuisance_regressors():
    import pandas as pd

    from lmbrain.stimulus import phoneme_rate, silence, word_rate

    tr = np.array([11.0, 13.0, 15.0, 17.0])
    words = pd.DataFrame({"word": ["a", "b"], "onset": [11.5, 14.0], "offset": [12.5, 16.0]})
    words["midpoint"] = (words.onset + words.offset) / 2
    # windows [10,12), [12,14), [14,16), [16,18): covered 0.5, 0.5, 2.0, 0.0 s of 2 s
    np.testing.assert_allclose(silence(words, tr)[:, 0], [0.75, 0.75, 0.0, 1.0])
    np.testing.assert_allclose(word_rate(words, tr), lanczos_matrix(tr, words.midpoint.to_numpy()) @ np.ones((2, 1)))
    phones = pd.DataFrame({"midpoint": [11.7, 12.2, 14.5, 15.5]})
    assert phoneme_rate(phones, tr).shape == (4, 1) and phoneme_rate(phones, tr).sum() > word_rate(words, tr).sum()


def test_read_phones_drops_silence(tmp_path):
    from lmbrain import textgrid as tg
    from lmbrain.stimulus import read_phones

    grid = tg.TextGrid(0, 3, [tg.Tier("phone", "IntervalTier", 0, 3, [tg.Interval(0, 1, "sil"), tg.Interval(1, 1.5, "HH"),
                                                                      tg.Interval(1.5, 2, "AY1"), tg.Interval(2, 3, "sp")]),
                              tg.Tier("word", "IntervalTier", 0, 3, [tg.Interval(0, 1, ""), tg.Interval(1, 2, "HI"),
                                                                     tg.Interval(2, 3, "")])])
    tg.write(tmp_path / "x.TextGrid", grid)
    ph = read_phones(tmp_path / "x.TextGrid")
    assert ph.phone.tolist() == ["HH", "AY1"] and ph.midpoint.tolist() == [1.25, 1.75]


def test_tr_design_with_training_statistics():
    from lmbrain.stimulus import tr_design

    x = np.arange(12.0).reshape(6, 2)
    d = tr_design(x, delays=(1,))
    np.testing.assert_allclose(d[1:], ((x - x.mean(0)) / x.std(0))[:-1], rtol=1e-6)
    d2 = tr_design(x, delays=(0, 2), mean=np.array([1.0, 1.0]), std=np.array([2.0, 0.0]))
    np.testing.assert_allclose(d2[:, 0], (x[:, 0] - 1) / 2)
    assert np.all(d2[:, 1] == 0) and d2.dtype == np.float32 and d2.shape == (6, 4)


def _phone_word_grid(phone_name="phone", word_name="word", swap=False):
    from lmbrain import textgrid as tg

    phones = tg.Tier(phone_name, "IntervalTier", 0, 3, [tg.Interval(0, 1, "sil"), tg.Interval(1, 1.5, "HH"),
                                                         tg.Interval(1.5, 2, "AY1"), tg.Interval(2, 2.5, "sp"),
                                                         tg.Interval(2.5, 3, "")])
    words = tg.Tier(word_name, "IntervalTier", 0, 3, [tg.Interval(0, 1, ""), tg.Interval(1, 2, "HI"), tg.Interval(2, 3, "")])
    return tg.TextGrid(0, 3, [words, phones] if swap else [phones, words])


def test_read_phones_include_silence_keeps_every_interval(tmp_path):
    # the Huth lab's phoneme rate counts every phone-tier interval, silences and empty ones included
    from lmbrain import textgrid as tg
    from lmbrain.stimulus import downsample, phoneme_rate, read_phones

    p = tg.write(tmp_path / "x.TextGrid", _phone_word_grid())
    default = read_phones(p)
    assert default.phone.tolist() == ["HH", "AY1"]
    pd_all = read_phones(p, include_silence=True)
    assert pd_all.phone.tolist() == ["sil", "HH", "AY1", "sp", ""]
    assert pd_all.onset.tolist() == [0, 1, 1.5, 2, 2.5] and pd_all.midpoint.tolist() == [0.5, 1.25, 1.75, 2.25, 2.75]
    tr = np.array([1.0, 3.0, 5.0])
    # hand-built expectation: one count per interval at its midpoint, Lanczos-summed per TR
    expected = np.zeros(3)
    for t in (0.5, 1.25, 1.75, 2.25, 2.75):
        expected += lanczos_kernel((tr - t) * 0.5)
    np.testing.assert_allclose(phoneme_rate(pd_all, tr)[:, 0], expected, atol=1e-12)
    np.testing.assert_allclose(phoneme_rate(default, tr), downsample(np.ones(2), [1.25, 1.75], tr), atol=1e-12)
    assert phoneme_rate(pd_all, tr).sum() > phoneme_rate(default, tr).sum()


def test_read_phones_finds_the_phone_tier_by_name_and_warns_when_swapped(tmp_path):
    import warnings

    from lmbrain import LmbrainWarning
    from lmbrain import textgrid as tg
    from lmbrain.stimulus import read_phones

    named = tg.write(tmp_path / "n.TextGrid", _phone_word_grid(swap=True))  # words first, named
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_phones(named).phone.tolist() == ["HH", "AY1"]
    assert read_phones(named, tier=0).phone.tolist() == ["HI"]  # an explicit position is obeyed
    unnamed = tg.write(tmp_path / "u.TextGrid", _phone_word_grid("a", "b", swap=True))
    with pytest.warns(LmbrainWarning, match=r"u\.TextGrid: the phone tier chosen, 0 \('b'\), has 1 labelled intervals but "
                                            r"tier 1 \('a'\) has 2.*are the tiers swapped"):
        read_phones(unnamed)
    silent = tg.write(tmp_path / "s.TextGrid", tg.TextGrid(0, 1, [tg.Tier("phone", "IntervalTier", 0, 1, [tg.Interval(0, 1, "sil")])]))
    with pytest.raises(LmbrainError, match=r"s\.TextGrid: tier 0 \('phone'\) holds no phones"):
        read_phones(silent)
    assert read_phones(silent, include_silence=True).phone.tolist() == ["sil"]
    with pytest.raises(LmbrainError, match="no tier named 'phones'"):
        read_phones(named, tier="phones")


def test_read_textgrid_passes_non_words(tmp_path):
    from lmbrain import textgrid as tg
    from lmbrain.stimulus import read_textgrid

    p = tg.write(tmp_path / "x.TextGrid", _phone_word_grid())
    assert read_textgrid(p)["word"].tolist() == ["hi"]
    assert read_textgrid(p, non_words=tg.NON_WORDS_HUTH)["word"].tolist() == ["", "hi", ""]


def test_nuisance_regressors_refuse_bad_input():
    import pandas as pd

    from lmbrain.stimulus import phoneme_rate, silence, word_rate

    words = pd.DataFrame({"word": ["a"], "onset": [1.0], "offset": [2.0]})  # no midpoint column
    with pytest.raises(LmbrainError, match="word_rate needs a table with a 'midpoint' column.*got word, onset, offset"):
        word_rate(words, np.array([1.0, 3.0]))
    with pytest.raises(LmbrainError, match="phoneme_rate needs a table with a 'midpoint' column"):
        phoneme_rate(np.ones(3), np.array([1.0, 3.0]))
    with pytest.raises(LmbrainError, match="tr_times must be a 1-D array of at least two times"):
        silence(words, np.array([11.0]))
    with pytest.raises(LmbrainError, match="silence needs a table with a 'offset' column"):
        silence(words.drop(columns="offset"), np.array([1.0, 3.0]))
