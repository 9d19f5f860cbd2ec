"""RidgeCV against a float64 closed form and against himalaya's RidgeCV (same alphas, same folds)."""

import numpy as np
import pytest
import torch

from lmbrain.ridge import SCORES, RidgeCV, RidgeError, _scores, make_folds

ALPHAS = np.logspace(-1, 4, 11)


@pytest.fixture
def one_thread():
    """Small problems: on a busy 2-core machine, BLAS/OpenMP threads only wait for each other."""
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


def planted(n=300, p=40, t=60, seed=0, noise_frac=0.3):
    """Structured data: correlated features, sparse-ish weights, varied SNR, some pure-noise targets."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((p, p)) / np.sqrt(p)
    X = rng.standard_normal((n, p)) @ (np.eye(p) + mix)
    W = rng.standard_normal((p, t)) * (rng.random((p, t)) < 0.3)
    snr = np.exp(rng.uniform(np.log(0.05), np.log(3), t))
    signal = X @ W
    Y = signal / signal.std(0) * np.sqrt(snr) + rng.standard_normal((n, t))
    Y[:, : int(noise_frac * t)] = rng.standard_normal((n, int(noise_frac * t)))
    X = (X - X.mean(0)) / X.std(0)
    Y = (Y - Y.mean(0)) / Y.std(0)
    groups = np.repeat(np.arange(6), n // 6)
    return X.astype(np.float32), Y.astype(np.float32), groups


def numpy_score(y, P, kind):
    """Hand-written float64 selection scores, one per column (the Huth-lab variants as in their code:
    population variances, the residual centred)."""
    if kind == "r2":
        return 1 - ((y - P) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    if kind == "corr":
        pc, yc = P - P.mean(0), y - y.mean(0)
        return (pc * yc).sum(0) / np.sqrt((pc**2).sum(0) * (yc**2).sum(0))
    if kind == "neg_mse":
        return -((y - P) ** 2).mean(0)
    if kind == "huth_r2":  # deep-fMRI-dataset ridge_corr(use_corr=False)
        r = 1 - (y - P).var(0) / ((1 + y.var(0)) / 2)
        return np.sign(r) * np.sqrt(np.abs(r))
    if kind == "r2_clipped":  # semantic-decoding ridge_corr(use_corr=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.clip(1 - (y - P).var(0) / y.var(0), 0, 1)
        return np.nan_to_num(r, nan=0.0)
    raise ValueError(kind)


def closed_form_cv(X, Y, groups, alphas, kind, folds=None):
    """float64 reference: explicit (X'X + a I)^-1 X'Y per fold and alpha, scores averaged over folds."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    scores = np.zeros((len(alphas), Y.shape[1]))
    folds = make_folds(len(X), groups) if folds is None else folds
    for tr, va in folds:
        for i, a in enumerate(alphas):
            W = np.linalg.solve(X[tr].T @ X[tr] + a * np.eye(X.shape[1]), X[tr].T @ Y[tr])
            scores[i] += numpy_score(Y[va], X[va] @ W, kind) / len(folds)
    best = np.argmax(scores + np.log(alphas)[:, None] * 1e-10, axis=0)
    coef = np.stack([np.linalg.solve(X.T @ X + alphas[b] * np.eye(X.shape[1]), X.T @ Y[:, j])
                     for j, b in enumerate(best)], axis=1)
    return scores, best, coef


@pytest.mark.parametrize("kind", SCORES)
@pytest.mark.usefixtures("one_thread")
def test_matches_float64_closed_form(kind):
    X, Y, groups = planted()
    ref_scores, ref_best, ref_coef = closed_form_cv(X, Y, groups, ALPHAS, kind)
    m = RidgeCV(alphas=ALPHAS, score=kind, device="cpu").fit(X, Y, groups=groups)
    np.testing.assert_allclose(m.cv_scores_, ref_scores, atol=2e-5)
    # chosen alphas agree except where two alphas tie within float32 noise
    gap = np.sort(ref_scores, axis=0)[-1] - np.sort(ref_scores, axis=0)[-2]
    agree = m.best_alphas_ == ALPHAS[ref_best]
    assert np.all(agree | (gap < 1e-5))
    np.testing.assert_allclose(m.coef_[:, agree], ref_coef[:, agree], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(m.predict(X), X @ m.coef_, rtol=1e-5)


def test_float64_mode_is_tight():
    X, Y, groups = planted(seed=3)
    ref_scores, ref_best, ref_coef = closed_form_cv(X, Y, groups, ALPHAS, "r2")
    m = RidgeCV(alphas=ALPHAS, device="cpu", dtype="float64").fit(X.astype(np.float64), Y.astype(np.float64), groups)
    np.testing.assert_allclose(m.cv_scores_, ref_scores, atol=1e-10)
    np.testing.assert_array_equal(m.best_alphas_, ALPHAS[ref_best])
    np.testing.assert_allclose(m.coef_, ref_coef, rtol=1e-8, atol=1e-10)


def test_huth_convention_squares_alpha():
    X, Y, groups = planted(seed=1)
    a = np.sqrt(ALPHAS)
    m1 = RidgeCV(alphas=ALPHAS, device="cpu").fit(X, Y, groups)
    m2 = RidgeCV(alphas=a, alpha_convention="huth", device="cpu").fit(X, Y, groups)
    np.testing.assert_allclose(m2.best_alphas_ ** 2, m1.best_alphas_, rtol=1e-6)
    np.testing.assert_allclose(m1.coef_, m2.coef_, rtol=1e-4, atol=1e-6)


def test_refine_equals_grid():
    X, Y, groups = planted(n=600, p=80, t=300, seed=2)
    alphas = np.logspace(-2, 5, 20)
    grid = RidgeCV(alphas=alphas, device="cpu").fit(X, Y, groups)
    fine = RidgeCV(alphas=alphas, search="refine", device="cpu").fit(X, Y, groups)
    np.testing.assert_array_equal(fine.best_alphas_, grid.best_alphas_)
    np.testing.assert_allclose(fine.best_scores_, grid.best_scores_, atol=1e-6)
    np.testing.assert_allclose(fine.coef_, grid.coef_, rtol=1e-5, atol=1e-6)
    assert np.isnan(fine.cv_scores_).mean() > 0.3  # it really skipped work


def test_voxel_batches_do_not_change_results():
    X, Y, groups = planted(seed=4)
    a = RidgeCV(alphas=ALPHAS, device="cpu").fit(X, Y, groups)
    b = RidgeCV(alphas=ALPHAS, device="cpu", memory_gb=1e-5).fit(X, Y, groups)  # tiny batches
    np.testing.assert_array_equal(a.best_alphas_, b.best_alphas_)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-4, atol=1e-5 * np.abs(a.coef_).max())


def test_noise_targets_pick_large_alpha_with_r2():
    X, Y, groups = planted(seed=5, t=200, noise_frac=1.0)
    r2 = RidgeCV(alphas=ALPHAS, device="cpu").fit(X, Y, groups)
    corr = RidgeCV(alphas=ALPHAS, score="corr", device="cpu").fit(X, Y, groups)
    assert np.mean(r2.best_alphas_ >= ALPHAS[-3]) > 0.8  # strong shrinkage on pure noise
    assert np.mean(corr.best_alphas_ == ALPHAS[0]) > np.mean(r2.best_alphas_ == ALPHAS[0])


def test_matches_himalaya():
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV as HRidgeCV
    from himalaya.scoring import r2_score

    set_backend("numpy")
    X, Y, groups = planted(n=480, p=60, t=120, seed=6)
    folds = make_folds(len(X), groups)
    h = HRidgeCV(alphas=ALPHAS, cv=folds, solver_params=dict(score_func=r2_score)).fit(X, Y)
    m = RidgeCV(alphas=ALPHAS, device="cpu").fit(X, Y, groups)
    np.testing.assert_allclose(m.best_alphas_, np.asarray(h.best_alphas_), rtol=1e-6)  # himalaya stores float32
    np.testing.assert_allclose(m.best_scores_, np.asarray(h.cv_scores_).ravel(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.predict(X), np.asarray(h.predict(X)), rtol=1e-4, atol=1e-4)


def test_groups_never_split_and_contiguous_blocks():
    groups = np.repeat(["a", "b", "c", "d"], [5, 3, 4, 2])
    for tr, va in make_folds(len(groups), groups):
        assert len(set(groups[va])) == 1 and not set(groups[va]) & set(groups[tr])
    folds = make_folds(len(groups), groups, cv=2)
    assert [sorted(set(groups[v])) for _, v in folds] == [["a", "b"], ["c", "d"]]
    blocks = make_folds(10, None, cv=3)
    assert [v.tolist() for _, v in blocks] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_bad_input():
    X, Y, groups = planted()
    with pytest.raises(RidgeError, match="same number of samples"):
        RidgeCV(device="cpu").fit(X[:-1], Y, groups)
    Yn = Y.copy()
    Yn[3, 7] = np.nan
    with pytest.raises(RidgeError, match="NaN"):
        RidgeCV(device="cpu").fit(X, Yn, groups)
    with pytest.raises(RidgeError, match="positive"):
        RidgeCV(alphas=[0, 1], device="cpu").fit(X, Y, groups)
    with pytest.raises(RidgeError, match="score must be"):
        RidgeCV(score="auc", device="cpu").fit(X, Y, groups)
    with pytest.raises(RidgeError, match="not fitted"):
        RidgeCV().predict(X)
    with pytest.raises(RidgeError, match="at least two groups"):
        RidgeCV(device="cpu").fit(X, Y, np.zeros(len(X)))


@pytest.mark.usefixtures("one_thread")
def test_huth_scores_match_numpy_formulas():
    """The Huth-lab selection scores on one validation set, including a constant response (var 0), a
    prediction worse than zero (negative R before the signed square root) and a perfect one."""
    rng = np.random.default_rng(7)
    y = rng.standard_normal((50, 6))
    P = 0.5 * y + 0.5 * rng.standard_normal((50, 6))
    y[:, 1] = 3.0
    P[:, 2] = -3 * y[:, 2]
    P[:, 3] = y[:, 3] + 0.25  # an offset leaves the residual variance (and both scores) untouched
    yt, Pt = torch.as_tensor(y), torch.as_tensor(P)
    y_mean = yt.mean(0, keepdim=True)
    for kind in ("huth_r2", "r2_clipped"):
        got = _scores(yt, Pt, kind, ((yt - y_mean) ** 2).sum(0), y_mean).numpy()
        np.testing.assert_allclose(got, numpy_score(y, P, kind), rtol=1e-12, atol=1e-12)
    assert numpy_score(y, P, "huth_r2")[2] < 0 and numpy_score(y, P, "r2_clipped")[1] == 0
    assert numpy_score(y, P, "r2_clipped")[3] == numpy_score(y, P - 0.25, "r2_clipped")[3]


@pytest.mark.usefixtures("one_thread")
def test_init_stores_parameters_as_given():
    from sklearn.base import clone

    alphas = [10.0, 1.0, 100.0]
    m = RidgeCV(alphas=alphas, cv=3, score="corr")
    assert m.alphas is alphas and RidgeCV().alphas is None
    params = m.get_params()
    assert params["alphas"] is alphas and params["score"] == "corr" and params["cv"] == 3
    c = clone(m)
    assert c is not m and c.get_params()["score"] == "corr" and c.alphas == alphas
    assert m.set_params(score="r2").score_kind == "r2"
    with pytest.raises(RidgeError, match="no parameter"):
        m.set_params(alpha=1.0)
    X, Y, groups = planted(seed=8)
    a = RidgeCV(device="cpu").fit(X, Y, groups)  # None: the default grid, applied in fit
    b = RidgeCV(alphas=np.logspace(0, 6, 13), device="cpu").fit(X, Y, groups)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    with pytest.raises(RidgeError, match="positive"):
        RidgeCV(alphas="many", device="cpu").fit(X, Y, groups)


def gapped_folds(groups, gap=5):
    """Leave-one-story-out folds that also drop ``gap`` training samples on each side of the held-out story."""
    n = len(groups)
    out = []
    for _, va in make_folds(n, groups):
        lo, hi = va.min() - gap, va.max() + gap
        tr = np.array([i for i in range(n) if i < lo or i > hi])
        out.append((tr, va))
    return out


@pytest.mark.usefixtures("one_thread")
def test_explicit_folds():
    X, Y, groups = planted(seed=9)
    folds = make_folds(len(X), groups)
    a = RidgeCV(alphas=ALPHAS, device="cpu").fit(X, Y, groups)
    b = RidgeCV(alphas=ALPHAS, cv=[(list(tr), list(va)) for tr, va in folds], device="cpu").fit(X, Y)
    np.testing.assert_array_equal(a.cv_scores_, b.cv_scores_)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    # folds that leave samples out of both sets (a buffer around the held-out story) are exact too
    gapped = gapped_folds(groups)
    ref_scores, ref_best, _ = closed_form_cv(X, Y, None, ALPHAS, "r2", folds=gapped)
    m = RidgeCV(alphas=ALPHAS, cv=gapped, device="cpu", dtype="float64").fit(X.astype(np.float64), Y)
    np.testing.assert_allclose(m.cv_scores_, ref_scores, atol=1e-10)
    assert not np.allclose(m.cv_scores_, a.cv_scores_, atol=1e-4)


@pytest.mark.usefixtures("one_thread")
def test_bad_explicit_folds():
    X, Y, groups = planted(n=60, t=5)
    tr, va = np.arange(30, 60), np.arange(30)
    cases = {
        "out of range": [(tr, np.arange(25, 61))],
        "empty": [(tr, np.array([], dtype=int))],
        "both train and test": [(np.arange(20, 60), va)],
        "repeated": [(np.r_[tr, 31], va)],
        "integers": [(tr.astype(float), va)],
        "not a .train_idx, test_idx. pair": [(tr, va, va)],
        "either groups or explicit folds": None,
        "must be None, an int": "five",
    }
    for message, cv in cases.items():
        with pytest.raises(RidgeError, match=message):
            if cv is None:
                RidgeCV(cv=[(tr, va)], device="cpu").fit(X, Y, groups)
            else:
                RidgeCV(cv=cv, device="cpu").fit(X, Y)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_more_features_than_samples_uses_the_kernel_form(dtype, monkeypatch):
    """p > n (the decoder's word-rate model: delays x rate voxels features): the n x n (dual) path gives
    the float64 closed form's scores, alphas and weights, and the p x p (primal) path's fit."""
    import lmbrain.ridge as ridge_mod

    X, Y, groups = planted(n=120, p=200, t=30, seed=4)
    X, Y = X.astype(dtype), Y.astype(dtype)
    ref_scores, ref_best, ref_coef = closed_form_cv(X, Y, groups, ALPHAS, "r2")
    m = RidgeCV(alphas=ALPHAS, device="cpu", dtype=dtype).fit(X, Y, groups)
    assert m._dual
    tight = dtype == "float64"
    np.testing.assert_allclose(m.cv_scores_, ref_scores, atol=1e-10 if tight else 2e-5)
    agree = m.best_alphas_ == ALPHAS[ref_best]
    assert agree.all() if tight else agree.mean() > 0.9
    np.testing.assert_allclose(m.coef_[:, agree], ref_coef[:, agree], rtol=1e-7 if tight else 1e-3,
                               atol=(1e-10 if tight else 1e-4) * np.abs(ref_coef).max())
    folds = gapped_folds(groups)  # samples in neither set of a fold
    gapped = RidgeCV(alphas=ALPHAS, cv=folds, device="cpu", dtype=dtype).fit(X, Y)
    np.testing.assert_allclose(gapped.cv_scores_, closed_form_cv(X, Y, groups, ALPHAS, "r2", folds=folds)[0],
                               atol=1e-10 if tight else 2e-5)
    monkeypatch.setattr(ridge_mod, "_use_dual", lambda n, p: False)
    primal = RidgeCV(alphas=ALPHAS, device="cpu", dtype=dtype).fit(X, Y, groups)
    assert not primal._dual
    # in float32 the p x p path is the less accurate one at small alphas (its Gram is rank-deficient)
    np.testing.assert_allclose(m.cv_scores_, primal.cv_scores_, atol=1e-10 if tight else 1e-3)
    assert np.abs(m.cv_scores_ - ref_scores).max() <= np.abs(primal.cv_scores_ - ref_scores).max() + 1e-12
