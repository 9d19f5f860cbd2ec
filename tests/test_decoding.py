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
        WordRateModel(delays=(1, 2))
    with pytest.raises(DecodingError, match="story 0: 150 TRs of responses but 3"):
        WordRateModel().fit([y, y], [rate[:3], rate])


def test_word_times_spread_evenly_within_trs():
    t = word_times([2.0, 0.4, 0.7, 3.0], np.array([1.0, 3.0, 5.0, 7.0]))
    # cumulative 2, 2.4, 3.1, 6.1 -> rounded 2, 2, 3, 6 -> 2, 0, 1, 3 words
    assert np.allclose(t, [0.5, 1.5, 5.0, 6 + 1 / 3, 7.0, 7 + 2 / 3])
    assert word_times(np.zeros(3), np.array([1.0, 3.0, 5.0])).size == 0
    with pytest.raises(DecodingError, match="differ in shape"):
        word_times([1.0], np.array([1.0, 3.0]))
