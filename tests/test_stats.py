"""Noise ceiling, block-permutation p-values and FDR against planted truth and independent references."""

import numpy as np
import pytest
from scipy import stats as sps

from lmbrain import LmbrainError
from lmbrain.stats import block_permutation_pvalues, columnwise_corr, fdr_bh, noise_ceiling


def test_columnwise_corr_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((50, 4)), rng.standard_normal((50, 4))
    b[:, 3] = 1.0
    ref = [np.corrcoef(a[:, i], b[:, i])[0, 1] for i in range(3)]
    np.testing.assert_allclose(columnwise_corr(a, b)[:3], ref)
    assert columnwise_corr(a, b)[3] == 0


def test_noise_ceiling_planted():
    """Repeats = signal + independent noise: CC_max of the mean is sqrt(var_s / (var_s + var_n / N))."""
    rng = np.random.default_rng(1)
    n_rep, T, V = 5, 40000, 6
    snr = np.array([0.05, 0.2, 0.5, 1.0, 2.0, 5.0])
    signal = rng.standard_normal((T, V)) * np.sqrt(snr)
    reps = signal[None] + rng.standard_normal((n_rep, T, V))
    expected = np.sqrt(snr / (snr + 1 / n_rep))
    np.testing.assert_allclose(noise_ceiling(reps), expected, atol=0.03)
    # and it is the correlation of the true signal with the mean response
    np.testing.assert_allclose(noise_ceiling(reps), columnwise_corr(signal, reps.mean(0)), atol=0.03)
    pure_noise = rng.standard_normal((n_rep, T, 50))
    cc = noise_ceiling(pure_noise)
    assert np.nanmean(cc) < 0.15  # near zero (NaN where the estimated signal power is negative)
    with pytest.raises(LmbrainError, match="n_repeats >= 2"):
        noise_ceiling(reps[:1])


def test_block_permutation_null_is_calibrated_and_detects_signal():
    rng = np.random.default_rng(2)
    T, V = 300, 400
    # autocorrelated noise (AR(1) 0.6) on both sides: an i.i.d. shuffle would be anti-conservative
    def ar(shape):
        e = rng.standard_normal(shape)
        for t in range(1, shape[0]):
            e[t] = 0.6 * e[t - 1] + 0.8 * e[t]
        return e
    pred, y = ar((T, V)), ar((T, V))
    y[:, :50] += 0.5 * pred[:, :50]
    obs, p = block_permutation_pvalues(pred, y, n_permutations=500, block=10, seed=0)
    assert np.mean(p[50:] < 0.05) < 0.09  # null voxels near the nominal 5%
    assert np.mean(p[:50] < 0.05) > 0.9
    np.testing.assert_allclose(obs, columnwise_corr(pred, y))
    assert p.min() >= 1 / 501


def test_fdr_matches_scipy():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(size=500), rng.uniform(0, 1e-3, 50)])
    np.testing.assert_allclose(fdr_bh(p), sps.false_discovery_control(p, method="bh"))
    p2 = p.copy()
    p2[3] = np.nan
    q2 = fdr_bh(p2)
    assert np.isnan(q2[3]) and np.allclose(q2[~np.isnan(p2)], sps.false_discovery_control(p2[~np.isnan(p2)]))


def _permutation_reference(pred, y, n_permutations, block, seed):
    """The null as defined: blocks of y in a random order, concatenated, correlated with pred."""
    n = y.shape[0]
    obs = columnwise_corr(pred, y)
    pz = pred - pred.mean(0)
    pz /= pz.std(0)
    yz = y - y.mean(0)
    yz /= yz.std(0)
    blocks = [np.arange(s, min(s + block, n)) for s in range(0, n, block)]
    rng = np.random.default_rng(seed)
    exceed = np.zeros(y.shape[1])
    for _ in range(n_permutations):
        order = np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])
        exceed += (pz * yz[order]).sum(0) / n >= obs - 1e-12
    return (1 + exceed) / (1 + n_permutations)


@pytest.mark.parametrize("n", [363, 360, 25])
def test_block_permutation_matches_the_direct_null(n):
    """The block-product shortcut gives the same p-values as permuting and correlating each time series,
    with a short last block (363, 25 TRs) and without (360)."""
    rng = np.random.default_rng(n)
    pred, y = rng.standard_normal((n, 200)), rng.standard_normal((n, 200))
    y[:, :20] += 0.3 * pred[:, :20]
    _, p = block_permutation_pvalues(pred, y, n_permutations=300, block=10, seed=7, chunk=64)
    np.testing.assert_array_equal(p, _permutation_reference(pred, y, 300, 10, seed=7))
