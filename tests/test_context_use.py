"""Context use of a model's features: the 1 - correlation curve against the longest context and the ceiling."""

import numpy as np
import pytest

from lmbrain.context_use import ContextUseError, context_ceiling, context_use_curve, unit_distance


def test_unit_distance_against_numpy_corrcoef():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 6))
    b = a + rng.standard_normal((50, 6)) * np.arange(6)
    want = [1 - np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(6)]
    assert np.allclose(unit_distance(a, b), want)
    # scale and offset do not matter; a constant unit is NaN
    assert np.allclose(unit_distance(a, 3 * a + 2), 0, atol=1e-12)
    c = a.copy()
    c[:, 2] = 5.0
    d = unit_distance(a, c)
    assert np.isnan(d[2]) and np.isfinite(np.delete(d, 2)).all()


def test_curve_averages_units_and_drops_constant_ones():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((200, 4))
    feats = {256: base, 1: base + rng.standard_normal((200, 4)), 8: base + 0.1 * rng.standard_normal((200, 4))}
    feats[8][:, 3] = 1.0  # constant at k = 8: unit 3 is left out at every k
    ks, u = context_use_curve(feats)
    assert ks.tolist() == [1, 8, 256]
    loop = [np.mean([1 - np.corrcoef(feats[k][:, j], base[:, j])[0, 1] for j in range(3)]) for k in (1, 8, 256)]
    assert np.allclose(u, loop)
    assert u[-1] == pytest.approx(0, abs=1e-12) and u[0] > u[1] > 0
    with pytest.raises(ContextUseError):
        context_use_curve({1: base})


def test_ceiling_is_where_features_stop_changing():
    ks = np.array([1, 2, 4, 8, 16, 32])
    assert context_ceiling(ks, [0.5, 0.3, 0.1, 0.0, 0.0, 0.0]) == 8
    assert context_ceiling(ks, [0.5, 0.3, 0.1, 0.005, 0.02, 0.0]) == 32  # 16 still differs: only 32 itself
    assert context_ceiling(ks, [0.5, 0.3, 0.1, 0.05, 0.02, 0.0], tolerance=0.03) == 16
    assert context_ceiling(ks, [0.0] * 6) == 1  # context-free features resolve no window
    assert context_ceiling(ks, [0.5, np.nan, 0.0, 0.0, 0.0, 0.0]) == 4
    with pytest.raises(ContextUseError):
        context_ceiling(ks, [0.1, 0.0])
