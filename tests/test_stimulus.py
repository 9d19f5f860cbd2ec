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
