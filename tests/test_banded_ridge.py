"""BandedRidgeCV against a float64 closed form and against himalaya's BandedRidgeCV (same candidates,
alphas and folds)."""

import warnings

import numpy as np
import pytest
import torch
from test_ridge import gapped_folds, numpy_score, one_thread  # noqa: F401 (fixture)

from lmbrain.ridge import BandedRidgeCV, RidgeCV, RidgeError, gamma_candidates, make_folds, r2_score_split

ALPHAS = np.logspace(-1, 4, 7)
GAMMAS = np.array([[1 / 3, 1 / 3, 1 / 3], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.3, 0.1], [0.05, 0.15, 0.8]])


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny problems: BLAS threads only contend (on a busy 2-core machine, 100x slower for himalaya)."""
    yield


def planted_bands(n=240, widths=(4, 10, 16), t=48, seed=0, n_groups=6):
    """Bands with different relevance per voxel (some voxels use one band only), correlated columns
    across bands, varied SNR and some pure-noise voxels; z-scored, float32."""
    rng = np.random.default_rng(seed)
    p = sum(widths)
    X = rng.standard_normal((n, p))
    X[:, widths[0]: widths[0] + 4] += 0.7 * X[:, :4]  # band 1 partly shares band 0's signal
    edges = np.cumsum((0,) + tuple(widths))
    bands = [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:])]
    Y = np.empty((n, t))
    for j in range(t):
        scale = rng.uniform(0, 1, len(widths)) ** 2
        if j % 4 == 0:
            scale[:] = 0
            scale[j % 3] = 1
        w = np.concatenate([rng.standard_normal(len(b)) * s for b, s in zip(bands, scale)])
        sig = X @ w
        Y[:, j] = sig / sig.std() * np.sqrt(rng.uniform(0.05, 2)) + rng.standard_normal(n)
    Y[:, t - t // 6:] = rng.standard_normal((n, t // 6))
    X = (X - X.mean(0)) / X.std(0)
    Y = (Y - Y.mean(0)) / Y.std(0)
    return X.astype(np.float32), Y.astype(np.float32), bands, np.repeat(np.arange(n_groups), n // n_groups)


def banded_closed_form(X, Y, bands, folds, alphas, gammas, kind, eps):
    """float64 reference: for each candidate, the scaled features Z = X diag(sqrt(gamma)), an explicit
    ridge solve per fold and alpha; best alpha per candidate (ties to the larger), candidates in order
    (a later one wins only by more than eps, as himalaya); refit on all samples."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    p, t = X.shape[1], Y.shape[1]
    col_band = np.empty(p, dtype=int)
    for b, idx in enumerate(bands):
        col_band[idx] = b
    scores = np.zeros((len(gammas), len(alphas), t))
    for c, g in enumerate(gammas):
        Z = X * np.sqrt(g)[col_band]
        for tr, va in folds:
            for i, a in enumerate(alphas):
                W = np.linalg.solve(Z[tr].T @ Z[tr] + a * np.eye(p), Z[tr].T @ Y[tr])
                scores[c, i] += numpy_score(Y[va], Z[va] @ W, kind) / len(folds)
    best_a = np.argmax(scores + np.arange(len(alphas))[None, :, None] * 1e-10, axis=1)  # (n_cand, t)
    cand_scores = np.take_along_axis(scores, best_a[:, None, :], axis=1)[:, 0]
    best_c, best = np.zeros(t, dtype=int), np.full(t, -np.inf)
    for c in range(len(gammas)):
        better = cand_scores[c] > best + eps
        best_c[better], best[better] = c, cand_scores[c][better]
    coef = np.empty((p, t))
    for j in range(t):
        d = np.sqrt(gammas[best_c[j]])[col_band]
        Z = X * d
        coef[:, j] = d * np.linalg.solve(Z.T @ Z + alphas[best_a[best_c[j], j]] * np.eye(p), Z.T @ Y[:, j])
    return cand_scores, best_c, alphas[best_a[best_c, np.arange(t)]], coef


@pytest.mark.parametrize("kind", ["r2", "neg_mse", "corr"])
def test_matches_float64_closed_form(kind):
    X, Y, bands, groups = planted_bands()
    folds = make_folds(len(X), groups)
    eps = np.finfo(np.float32).eps
    ref_scores, ref_c, ref_alpha, ref_coef = banded_closed_form(X, Y, bands, folds, ALPHAS, GAMMAS, kind, eps)
    m = BandedRidgeCV(alphas=ALPHAS, gammas=GAMMAS, score=kind, device="cpu").fit(X, Y, bands, groups)
    np.testing.assert_allclose(m.cv_scores_, ref_scores, atol=2e-5)
    same = (m.best_candidates_ == ref_c) & (m.best_alphas_ == ref_alpha)
    assert same.mean() > 0.9  # float32 noise may tip near-ties, which must then be near-ties indeed
    np.testing.assert_allclose(m.best_scores_, ref_scores[ref_c, np.arange(Y.shape[1])], atol=2e-5)
    np.testing.assert_allclose(m.coef_[:, same], ref_coef[:, same], rtol=1e-3, atol=2e-4 * np.abs(ref_coef).max())
    np.testing.assert_array_equal(m.best_gammas_, GAMMAS[m.best_candidates_].T)
    with np.errstate(divide="ignore"):
        np.testing.assert_array_equal(m.band_alphas_, m.best_alphas_ / m.best_gammas_)
    assert (m.best_gammas_ == 0).any()  # the corners were chosen somewhere: a band switched off...
    off = m.best_gammas_ == 0
    for b, idx in enumerate(m.bands_):  # ... has zero weights
        assert np.all(m.coef_[np.ix_(idx, off[b])] == 0)


def test_float64_mode_is_tight():
    X, Y, bands, groups = planted_bands(seed=1)
    folds = make_folds(len(X), groups, cv=3)
    eps = np.finfo(np.float64).eps
    ref_scores, ref_c, ref_alpha, ref_coef = banded_closed_form(X, Y, bands, folds, ALPHAS, GAMMAS, "r2", eps)
    m = BandedRidgeCV(alphas=ALPHAS, gammas=GAMMAS, cv=3, device="cpu", dtype="float64").fit(
        X.astype(np.float64), Y.astype(np.float64), bands, groups)
    np.testing.assert_allclose(m.cv_scores_, ref_scores, atol=1e-10)
    np.testing.assert_array_equal(m.best_candidates_, ref_c)
    np.testing.assert_array_equal(m.best_alphas_, ref_alpha)
    np.testing.assert_allclose(m.coef_, ref_coef, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_more_features_than_samples_uses_the_kernel_form(dtype, monkeypatch):
    """p > n: the n x n (dual) eigendecompositions give the float64 closed form's choice and weights, and
    the same fit, CV scores and per-fold split as the p x p (primal) path forced on the same data."""
    import lmbrain.ridge as ridge_mod

    X, Y, bands, groups = planted_bands(n=120, widths=(40, 60, 50), t=24, seed=9)
    X, Y = X.astype(dtype), Y.astype(dtype)
    folds = make_folds(len(X), groups)
    tight = dtype == "float64"
    eps = np.finfo(dtype).eps
    ref_scores, ref_c, ref_alpha, ref_coef = banded_closed_form(X, Y, bands, folds, ALPHAS, GAMMAS, "r2", eps)
    m = BandedRidgeCV(alphas=ALPHAS, gammas=GAMMAS, device="cpu", dtype=dtype).fit(X, Y, bands, groups)
    assert m._dual
    np.testing.assert_allclose(m.cv_scores_, ref_scores, atol=1e-9 if tight else 5e-5)
    same = (m.best_candidates_ == ref_c) & (m.best_alphas_ == ref_alpha)
    assert same.all() if tight else same.mean() > 0.9
    np.testing.assert_allclose(m.coef_[:, same], ref_coef[:, same], rtol=1e-6 if tight else 1e-3,
                               atol=(1e-9 if tight else 2e-4) * np.abs(ref_coef).max())
    monkeypatch.setattr(ridge_mod, "_use_dual", lambda n, p: False)
    primal = BandedRidgeCV(alphas=ALPHAS, gammas=GAMMAS, device="cpu", dtype=dtype).fit(X, Y, bands, groups)
    assert not primal._dual
    np.testing.assert_allclose(m.cv_scores_, primal.cv_scores_, atol=1e-9 if tight else 5e-5)
    np.testing.assert_allclose(m.cv_score_split(X, Y), primal.cv_score_split(X, Y), atol=1e-8 if tight else 1e-3)


def test_explicit_folds():
    """cv as (train, test) pairs: the groups' folds give the same fit; folds that leave samples out of both
    sets (a buffer around the held-out story) match the float64 closed form on those folds."""
    from sklearn.base import clone

    X, Y, bands, groups = planted_bands(seed=8)
    a = BandedRidgeCV(alphas=ALPHAS, gammas=GAMMAS, device="cpu").fit(X, Y, bands, groups)
    b = clone(a).set_params(cv=make_folds(len(X), groups)).fit(X, Y, bands)
    np.testing.assert_array_equal(a.cv_scores_, b.cv_scores_)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    folds = gapped_folds(groups)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    ref_scores, ref_c, ref_alpha, _ = banded_closed_form(X64, Y64, bands, folds, ALPHAS, GAMMAS, "r2",
                                                         np.finfo(np.float64).eps)
    m = BandedRidgeCV(alphas=ALPHAS, gammas=GAMMAS, cv=folds, device="cpu", dtype="float64").fit(X64, Y64, bands)
    np.testing.assert_allclose(m.cv_scores_, ref_scores, atol=1e-10)
    np.testing.assert_array_equal(m.best_candidates_, ref_c)
    with pytest.raises(RidgeError, match="both train and test"):
        BandedRidgeCV(cv=[(np.arange(100), np.arange(90, 240))], device="cpu").fit(X, Y, bands)


def test_gamma_candidates_are_himalayas():
    from himalaya.kernel_ridge import generate_dirichlet_samples

    for n, b, seed in [(20, 3, 0), (7, 2, 5), (1, 4, 1)]:
        ref = np.asarray(generate_dirichlet_samples(n, b, concentration=[0.1, 1.0], random_state=seed))
        ref[0] = 1 / b  # as himalaya's solve_group_ridge_random_search
        np.testing.assert_array_equal(gamma_candidates(n, b, seed), ref)
        np.testing.assert_allclose(gamma_candidates(n, b, seed).sum(1), 1)


def test_matches_himalaya():
    """Same candidates (n_iter=int, random_state), alphas and folds, himalaya's default neg_mse."""
    from himalaya.backend import set_backend
    from himalaya.ridge import BandedRidgeCV as HBandedRidgeCV
    from himalaya.scoring import r2_score_split as h_r2_split

    set_backend("numpy")
    X, Y, bands, groups = planted_bands(n=360, widths=(6, 14, 20), t=80, seed=2)
    folds = make_folds(len(X), groups)
    alphas = np.logspace(-1, 4, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = HBandedRidgeCV(groups="input", cv=folds, random_state=0, solver_params=dict(
            n_iter=12, alphas=alphas, progress_bar=False)).fit([X[:, b] for b in bands], Y)
    m = BandedRidgeCV(alphas=alphas, gammas=12, score="neg_mse", random_state=0, device="cpu").fit(X, Y, bands, groups)
    h_band_alphas = np.exp(-np.asarray(h.deltas_, dtype=np.float64))
    same = np.all(np.isclose(m.band_alphas_, h_band_alphas, rtol=1e-5), axis=0)
    assert same.mean() >= 0.97
    np.testing.assert_allclose(m.best_alphas_[same], np.asarray(h.best_alphas_)[same], rtol=1e-5)
    np.testing.assert_allclose(m.cv_scores_, np.asarray(h.cv_scores_), atol=1e-5)
    ph = np.asarray(h.predict([X[:, b] for b in bands], split=True))
    pm = m.predict(X, split=True)
    assert np.abs(pm - ph)[:, :, same].max() < 1e-3
    np.testing.assert_allclose(pm.sum(0), m.predict(X), rtol=1e-4, atol=1e-5)
    assert np.abs(m.score_split(X, Y) - np.asarray(h_r2_split(Y, ph)))[:, same].max() < 1e-3


def test_one_band_is_ridgecv():
    X, Y, _, groups = planted_bands(seed=3)
    r = RidgeCV(alphas=ALPHAS, device="cpu").fit(X, Y, groups)
    m = BandedRidgeCV(alphas=ALPHAS, gammas=1, device="cpu").fit(X, Y, [slice(None)], groups)
    np.testing.assert_array_equal(m.best_alphas_, r.best_alphas_)
    np.testing.assert_allclose(m.cv_scores_[0], r.best_scores_, atol=1e-6)
    np.testing.assert_allclose(m.coef_, r.coef_, rtol=1e-4, atol=1e-5 * np.abs(r.coef_).max())


def test_refine_batches_and_chunks_do_not_change_the_choice():
    X, Y, bands, groups = planted_bands(n=300, t=120, seed=4)
    alphas = np.logspace(-2, 5, 15)
    grid = BandedRidgeCV(alphas=alphas, gammas=8, random_state=1, device="cpu").fit(X, Y, bands, groups)
    fine = BandedRidgeCV(alphas=alphas, gammas=8, random_state=1, search="refine", device="cpu").fit(X, Y, bands, groups)
    # ~100 kB: one candidate per chunk and a few voxels per batch
    tiny = BandedRidgeCV(alphas=alphas, gammas=8, random_state=1, search="refine", device="cpu",
                         memory_gb=1e-4).fit(X, Y, bands, groups)
    for m in (fine, tiny):
        np.testing.assert_array_equal(m.best_candidates_, grid.best_candidates_)
        np.testing.assert_array_equal(m.best_alphas_, grid.best_alphas_)
        np.testing.assert_allclose(m.best_scores_, grid.best_scores_, atol=1e-6)
        # a candidate that no voxel keeps may have a multimodal CV curve, where climbing stops at a local best
        assert np.all(m.cv_scores_ <= grid.cv_scores_ + 1e-6)
        assert np.mean(np.abs(m.cv_scores_ - grid.cv_scores_) < 1e-6) > 0.98
        np.testing.assert_allclose(m.coef_, grid.coef_, rtol=1e-4, atol=1e-5 * np.abs(grid.coef_).max())
    chunk, batch = tiny._plan(300, 30, 300, 50, 6, 15, 8)[:2]
    assert chunk == 1 and batch < 120
    assert grid._n_evaluated == 8 * 15 * 120 and fine._n_evaluated < 0.7 * grid._n_evaluated  # refine skipped work


def test_split_predictions_and_scores():
    X, Y, bands, groups = planted_bands(seed=5)
    order = np.random.default_rng(0).permutation(X.shape[1])  # bands need not be contiguous columns
    Xp = X[:, order]
    where = np.argsort(order)
    pbands = [where[b] for b in bands]
    m = BandedRidgeCV(alphas=ALPHAS, gammas=GAMMAS, device="cpu").fit(Xp, Y, pbands, groups)
    ref = BandedRidgeCV(alphas=ALPHAS, gammas=GAMMAS, device="cpu").fit(X, Y, bands, groups)
    np.testing.assert_allclose(m.coef_[where], ref.coef_, rtol=1e-4, atol=1e-6)
    split = m.predict(Xp, split=True)
    assert split.shape == (3,) + Y.shape
    np.testing.assert_allclose(split[1], Xp[:, pbands[1]] @ m.coef_[pbands[1]], rtol=1e-5, atol=1e-6)
    s = m.score_split(Xp, Y)
    y, P = Y.astype(np.float64), m.predict(Xp).astype(np.float64)
    np.testing.assert_allclose(s.sum(0), 1 - ((y - P) ** 2).sum(0) / (y**2).sum(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s, r2_score_split(Y, split))
    np.testing.assert_allclose(m.predict(Xp), Xp @ m.coef_, rtol=1e-5)


def test_cv_score_split_matches_per_fold_refits():
    X, Y, bands, groups = planted_bands(seed=6)
    m = BandedRidgeCV(alphas=ALPHAS, gammas=GAMMAS, cv=3, device="cpu").fit(X, Y, bands, groups)
    got = m.cv_score_split(X, Y)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    col_band = np.concatenate([np.full(len(b), i) for i, b in enumerate(bands)])
    ref = np.zeros((3, Y.shape[1]))
    for tr, va in make_folds(len(X), groups, cv=3):
        for j in range(Y.shape[1]):
            d = np.sqrt(m.best_gammas_[:, j])[col_band]
            Z = X64[tr] * d
            w = d * np.linalg.solve(Z.T @ Z + m.best_alphas_[j] * np.eye(X.shape[1]), Z.T @ Y64[tr, j])
            preds = np.stack([X64[va][:, b] @ w[b] for b in bands])[:, :, None]
            ref[:, j] += r2_score_split(Y64[va, j], preds)[:, 0] / 3
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert np.corrcoef(got.sum(0), m.best_scores_)[0, 1] > 0.99  # the CV R2 it selected on, split by band


def test_bad_input():
    X, Y, bands, groups = planted_bands(t=6)
    fit = BandedRidgeCV(alphas=ALPHAS, gammas=GAMMAS, device="cpu").fit
    cases = {
        "bands overlap: column 3": [np.arange(0, 4), np.arange(3, 14), bands[2]],
        "columns of X are in no band": [bands[0], bands[2]],
        "band 1 has width 0": [np.arange(14), np.array([], dtype=int), bands[2]],
        "out of range": [bands[0], bands[1], np.arange(14, 31)],
        "list with one column-index array": np.arange(30),
        "shape .n_candidates, 2. for 2 bands": [np.arange(10), np.arange(10, 30)],
    }
    for message, b in cases.items():
        with pytest.raises(RidgeError, match=message):
            fit(X, Y, b, groups)
    for g in ([[0.5, 0.6, -0.1]], [[0.2, 0.2, 0.2]], [[np.nan, 0.5, 0.5]]):
        with pytest.raises(RidgeError, match="simplex"):
            BandedRidgeCV(gammas=g, device="cpu").fit(X, Y, bands, groups)
    with pytest.raises(RidgeError, match="positive number of candidates"):
        BandedRidgeCV(gammas=0, device="cpu").fit(X, Y, bands, groups)
    Xn = X.copy()
    Xn[5, 2] = np.nan
    with pytest.raises(RidgeError, match="X contains NaN"):
        fit(Xn, Y, bands, groups)
    with pytest.raises(RidgeError, match="not fitted"):
        BandedRidgeCV().predict(X)
    with pytest.raises(RidgeError, match="score must be"):
        BandedRidgeCV(score="auc", device="cpu").fit(X, Y, bands, groups)
    m = BandedRidgeCV(alphas=ALPHAS, gammas=2, device="cpu")
    assert m.get_params()["gammas"] == 2 and m.alphas is ALPHAS  # stored as given


def planted_context(n_train=8, n_test=2, story_len=60, seed=0, per_kind=12):
    """Stories of nuisance (3), shortest-context (8) and context-k (8) features, where the k features share
    the short ones' signal (K = 0.6 S + 0.8 U); voxels driven by K, by S or by the nuisance only."""
    rng = np.random.default_rng(seed)
    T = (n_train + n_test) * story_len
    N, S, U = rng.standard_normal((T, 3)), rng.standard_normal((T, 8)), rng.standard_normal((T, 8))
    K = 0.6 * S + 0.8 * U
    Y = []
    for drive in (K, S, N):
        sig = drive @ rng.standard_normal((drive.shape[1], per_kind))
        Y.append(sig / sig.std(0) + rng.standard_normal((T, per_kind)))
    Y = np.concatenate(Y, axis=1)
    story = np.repeat(np.arange(n_train + n_test), story_len)

    def z(a):  # z-score per story, as the pipeline does
        out = np.empty_like(a)
        for s in range(n_train + n_test):
            blk = a[story == s]
            out[story == s] = (blk - blk.mean(0)) / blk.std(0)
        return out.astype(np.float32)

    N, S, K, Y = z(N), z(S), z(K), z(Y)
    tr = story < n_train
    return [a[tr] for a in (N, S, K, Y)], [a[~tr] for a in (N, S, K, Y)], story[tr]


def test_context_unique_r2_on_a_planted_problem():
    from lmbrain.partition import context_unique_r2

    (N, S, K, Y), (Nt, St, Kt, Yt), groups = planted_context()
    res = context_unique_r2(N, S, K, Y, groups, X_nuisance_test=Nt, X_short_test=St, X_k_test=Kt, Y_test=Yt,
                            alphas=np.logspace(-1, 4, 11), gammas=20, random_state=0, device="cpu")
    kinds = np.repeat(["k", "short", "nuisance"], 12)
    for est in (res.unique_r2_test, res.unique_r2_cv):
        assert est[kinds == "k"].mean() > 0.25  # K explains all; S only 0.36 of the planted signal
        assert np.abs(est[kinds != "k"]).max() < 0.08  # measured <= 0.04 over seeds 0-2
    assert res.bands == ("nuisance", "short", "k") and res.split_r2_test.shape == (3, 36)
    # the planted driver is the band with the largest share, out of sample and in CV
    for split in (res.split_r2_test, res.split_r2_cv):
        assert np.mean(np.argmax(split, axis=0) == np.repeat([2, 1, 0], 12)) > 0.9
    np.testing.assert_allclose(res.joint_r2_test, res.model.score(
        np.concatenate([Nt, St, Kt], 1), Yt, metric="r2"), atol=1e-4)  # Yt is zero-mean: split R2 sums to R2
    assert np.corrcoef(res.unique_r2_cv, res.unique_r2_test)[0, 1] > 0.9
    with pytest.raises(RidgeError, match="X_k equals X_short"):
        context_unique_r2(N, S, S.copy(), Y, groups, device="cpu")
    with pytest.raises(RidgeError, match="every test array"):
        context_unique_r2(N, S, K, Y, groups, X_k_test=Kt, Y_test=Yt, device="cpu")
    two = context_unique_r2(None, S, K, Y, groups, gammas=5, random_state=0, device="cpu")  # no nuisance band
    assert two.bands == ("short", "k") and two.unique_r2_test is None and two.split_r2_cv.shape == (2, 36)


def test_refine_gammas_never_lowers_the_cv_score():
    X, Y, bands, groups = planted_bands(seed=7)
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    kw = dict(alphas=ALPHAS, gammas=6, random_state=0, cv=3, device="cpu", dtype="float64")
    base = BandedRidgeCV(**kw).fit(X, Y, bands, groups)
    m = BandedRidgeCV(refine_gammas=2, **kw).fit(X, Y, bands, groups)
    assert np.all(m.best_scores_ >= base.best_scores_)
    assert np.mean(m.best_scores_ > base.best_scores_ + 1e-6) > 0.3  # it found better points for many voxels
    assert m.gammas_.shape[0] > 6 and m.cv_scores_.shape == (6, Y.shape[1])
    np.testing.assert_array_equal(m.gammas_[:6], base.gammas_)
    np.testing.assert_allclose(m.best_gammas_.sum(0), 1)
    # the reported CV score and the weights are those of the chosen (gamma, alpha): float64 closed form
    folds = make_folds(len(X), groups, cv=3)
    col_band = np.concatenate([np.full(len(b), i) for i, b in enumerate(bands)])
    for j in range(0, Y.shape[1], 5):
        d = np.sqrt(m.best_gammas_[:, j])[col_band]
        Z, eye = X * d, np.eye(X.shape[1])
        cv = np.mean([numpy_score(Y[va, j:j + 1], Z[va] @ np.linalg.solve(
            Z[tr].T @ Z[tr] + m.best_alphas_[j] * eye, Z[tr].T @ Y[tr, j:j + 1]), "r2")[0] for tr, va in folds])
        assert abs(cv - m.best_scores_[j]) < 1e-9
        w = d * np.linalg.solve(Z.T @ Z + m.best_alphas_[j] * eye, Z.T @ Y[:, j])
        np.testing.assert_allclose(m.coef_[:, j], w, rtol=1e-7, atol=1e-10)
    with pytest.raises(RidgeError, match="refine_gammas"):
        BandedRidgeCV(refine_gammas=-1, device="cpu").fit(X, Y, bands, groups)


GAMMAS4 = np.array([[0.25] * 4, [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0.6, 0.3, 0.05, 0.05],
                    [0.05, 0.15, 0.4, 0.4], [0, 0.5, 0.5, 0], [0.4, 0, 0.3, 0.3]])


def test_lowrank_split_picks_one_wide_band_beside_narrow_ones():
    from lmbrain.ridge import _lowrank_split

    assert _lowrank_split([512, 4, 4, 4], 1111) == 0  # a language-model band beside the nuisance bands
    assert _lowrank_split([4, 60, 3, 5], 240) == 1
    assert _lowrank_split([2304, 4, 4, 4], 1111) == 0  # dual: 4 r <= n as well
    assert _lowrank_split([2304, 4, 4, 4], 40) is None
    assert _lowrank_split([4, 10, 16], 240) is None  # no band wide enough to share
    assert _lowrank_split([16], 240) is None


@pytest.mark.parametrize("dual", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("search", ["grid", "refine"])
def test_shared_factorisation_matches_the_closed_form_and_the_per_candidate_path(dual, dtype, search, monkeypatch):
    """One wide band and narrow ones (the encoding models' language-model band beside the nuisance bands):
    one eigendecomposition per fold serves every candidate, corners included (the wide band switched off, or
    narrow ones), with the float64 closed form's scores, choices and weights, and the per-candidate path's
    CV scores and per-fold split."""
    import lmbrain.ridge as ridge_mod

    widths, n = ((5, 150, 4, 3), 120) if dual else ((5, 60, 4, 3), 240)
    X, Y, bands, groups = planted_bands(n=n, widths=widths, t=30, seed=4)
    X, Y = X.astype(dtype), Y.astype(dtype)
    folds = make_folds(len(X), groups)
    tight = dtype == "float64"
    eps = np.finfo(dtype).eps
    gammas = GAMMAS4[:, [1, 0, 2, 3]]  # the wide band is the second
    ref_scores, ref_c, ref_alpha, ref_coef = banded_closed_form(X, Y, bands, folds, ALPHAS, gammas, "r2", eps)
    m = BandedRidgeCV(alphas=ALPHAS, gammas=gammas, device="cpu", dtype=dtype, search=search).fit(X, Y, bands, groups)
    assert m._lowrank and m._dual == dual
    if search == "grid":
        np.testing.assert_allclose(m.cv_scores_, ref_scores, atol=1e-10 if tight else 5e-5)
        same = (m.best_candidates_ == ref_c) & (m.best_alphas_ == ref_alpha)
        assert same.all() if tight else same.mean() > 0.9
        np.testing.assert_allclose(m.coef_[:, same], ref_coef[:, same], rtol=1e-6 if tight else 1e-3,
                                   atol=(1e-9 if tight else 2e-4) * np.abs(ref_coef).max())
        assert (m.best_gammas_[1] == 0).any()  # the corner without the wide band was chosen somewhere
    monkeypatch.setattr(ridge_mod, "_lowrank_split", lambda sizes, n: None)
    each = BandedRidgeCV(alphas=ALPHAS, gammas=gammas, device="cpu", dtype=dtype, search=search).fit(X, Y, bands, groups)
    assert not each._lowrank
    np.testing.assert_allclose(m.cv_scores_, each.cv_scores_, atol=1e-10 if tight else 5e-5)
    assert (m.best_candidates_ == each.best_candidates_).mean() > (0.999 if tight else 0.9)
    np.testing.assert_allclose(m.cv_score_split(X, Y), each.cv_score_split(X, Y), atol=1e-8 if tight else 1e-3)


@pytest.mark.parametrize("widths,n", [((60, 4, 4, 4), 240), ((150, 4, 4, 4), 120)])
def test_shared_factorisation_with_refined_gammas_and_small_batches(widths, n, monkeypatch):
    """The local gamma search (voxel subsets) and voxel batches of a tight memory budget take the shared
    factorisation to the same fit as the per-candidate path."""
    import lmbrain.ridge as ridge_mod

    X, Y, bands, groups = planted_bands(n=n, widths=widths, t=30, seed=5)
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    kw = dict(gammas=6, refine_gammas=2, dtype="float64", random_state=0, memory_gb=0.001, device="cpu")
    m = BandedRidgeCV(**kw).fit(X, Y, bands, groups)
    monkeypatch.setattr(ridge_mod, "_lowrank_split", lambda sizes, n: None)
    each = BandedRidgeCV(**kw).fit(X, Y, bands, groups)
    assert m._lowrank and not each._lowrank and len(m.gammas_) > 6
    np.testing.assert_array_equal(m.best_candidates_, each.best_candidates_)
    np.testing.assert_allclose(m.best_scores_, each.best_scores_, atol=1e-12)
    np.testing.assert_allclose(m.coef_, each.coef_, atol=1e-10 * np.abs(each.coef_).max())


def test_per_alpha_correction_and_skinny_products_are_the_plain_products():
    """The search's per-voxel correction ``out[:, v] -= P[a_v] @ (rhs[v] @ Sinv[a_v])`` (voxels grouped by
    alpha through a sort) and the narrow product ``B @ E`` in its faster orientation give the plain
    per-column products, whatever the alphas' order, repeats and gaps."""
    from lmbrain.ridge import _rowsolve, _skinny, _subtract_per_alpha

    g = torch.Generator().manual_seed(3)
    n_val, m, r, n_alpha = 7, 23, 3, 6
    P = torch.randn(n_alpha, n_val, r, generator=g, dtype=torch.float64)
    S = torch.randn(n_alpha, r, r, generator=g, dtype=torch.float64)
    Sinv = S + S.transpose(1, 2)  # symmetric, as the Schur complements' inverses are
    rhs = torch.randn(m, r, generator=g, dtype=torch.float64)
    a_vec = torch.tensor([5, 0, 5, 2, 2, 0, 5, 3, 0, 0, 2, 5, 3, 3, 5, 0, 2, 2, 5, 0, 3, 5, 2])
    base = torch.randn(n_val, m, generator=g, dtype=torch.float32)
    out = base.clone()
    _subtract_per_alpha(out, P, rhs, a_vec, Sinv)
    xr = _rowsolve(rhs, Sinv[a_vec])  # one solve per row (the per-row path)
    expected = base.double()
    for v in range(m):  # column by column, in float64
        expected[:, v] -= P[int(a_vec[v])] @ xr[v]
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)
    one = base[:, :1].clone()
    _subtract_per_alpha(one, P, rhs[:1], a_vec[:1], Sinv)
    np.testing.assert_allclose(one.numpy(), expected[:, :1].numpy(), rtol=1e-6, atol=1e-6)
    B, E = torch.randn(40, 17, generator=g), torch.randn(17, 4, generator=g)
    np.testing.assert_allclose(_skinny(B, E).numpy(), B.double().numpy() @ E.double().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dual", [False, True])
@pytest.mark.parametrize("search", ["grid", "refine"])
def test_shared_factorisation_computes_no_term_with_a_zero_weight(dual, search, monkeypatch):
    """A candidate with the wide band at weight 0 (a corner of the nuisance bands: a quarter of the encoding
    models' candidates) runs none of the search's wide-band products, and the wide band's own corner none of
    the narrow corrections; every other candidate runs one of each per fold and alpha (grid search; the
    refine search's climbing steps take the same shortcuts). The fit is the one that computes them all:
    the same CV scores, choices and weights, bit for bit."""
    from torch.overrides import TorchFunctionMode

    import lmbrain.ridge as ridge_mod

    widths, n = ((5, 150, 4, 3), 120) if dual else ((5, 60, 4, 3), 240)
    t = 31  # voxels: a width no other factor of the fit has
    X, Y, bands, groups = planted_bands(n=n, widths=widths, t=t, seed=4)
    q, r = (n - n // 6) if dual else widths[1], sum(widths) - widths[1]
    n_val = n // 6
    gammas = GAMMAS4[:, [1, 0, 2, 3]]  # the wide band is the second: 4 rows without it, 1 with it alone
    wide, corrected = gammas[:, 1] > 0, (np.delete(gammas, 1, axis=1) > 0).any(axis=1)
    assert (~wide).sum() == 4 and (~corrected).sum() == 1

    class Products(TorchFunctionMode):
        """Counts the search's (n_val, q) @ (q, t) wide-band products and (n_val, r) @ (r, t) corrections."""

        def __init__(self):
            super().__init__()
            self.wide = self.narrow = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in ("matmul", "__matmul__", "mm") and len(args) == 2:
                a, b = args
                if a.ndim == b.ndim == 2 and a.shape[0] == n_val and b.shape[1] == t:
                    self.wide += a.shape[1] == b.shape[0] == q
                    self.narrow += a.shape[1] == b.shape[0] == r
            return func(*args, **(kwargs or {}))

    kw = dict(alphas=ALPHAS, gammas=gammas, device="cpu", dtype="float64", search=search)
    with Products() as count:
        m = BandedRidgeCV(**kw).fit(X, Y, bands, groups)
    assert m._lowrank and m._dual == dual
    n_folds = len(np.unique(groups))
    if search == "grid":
        assert count.wide == wide.sum() * n_folds * len(ALPHAS)
        assert count.narrow == corrected.sum() * n_folds * len(ALPHAS)
    real = ridge_mod.BandedRidgeCV._lowrank_candidate  # every term computed, zero factors included
    monkeypatch.setattr(ridge_mod.BandedRidgeCV, "_lowrank_candidate",
                        lambda *a: dict(real(*a), wide=True, couple=True, corrected=True))
    with Products() as count_all:
        every = BandedRidgeCV(**kw).fit(X, Y, bands, groups)
    if search == "grid":
        assert count_all.wide == count_all.narrow == len(gammas) * n_folds * len(ALPHAS)
    np.testing.assert_array_equal(m.cv_scores_, every.cv_scores_)
    np.testing.assert_array_equal(m.best_alphas_, every.best_alphas_)
    np.testing.assert_array_equal(m.best_candidates_, every.best_candidates_)
    np.testing.assert_array_equal(m.coef_, every.coef_)


@pytest.mark.slow
@pytest.mark.parametrize("refine_gammas", [0, 2])
def test_a_banded_fit_with_many_folds_stays_within_its_memory_budget(refine_gammas):
    """A 512-column band with three narrow ones over 20 folds of 150 TRs (real size has 74): the process
    grew by 1.56 GB with memory_gb 0.5 (each candidate and fold made an 8 MB einsum intermediate, and the
    thousands of short-lived blocks left glibc's heap holding them), and by 5.5 GB with two refine rounds
    (every refine candidate's per-fold factors were kept until the fit ended). Measured in a fresh process
    (peak resident memory after a warm-up fit, so imports and thread pools are not counted)."""
    import os
    import subprocess
    import sys

    script = f"""
import resource
import numpy as np
from lmbrain.ridge import BandedRidgeCV
rng = np.random.default_rng(0)
n = 3000
X = rng.standard_normal((n, 524)).astype(np.float32)
Y = rng.standard_normal((n, 200)).astype(np.float32)
bands = [np.arange(512)] + [512 + 4 * j + np.arange(4) for j in range(3)]
fit = lambda rows, story: BandedRidgeCV(gammas=12, search="refine", device="cpu", memory_gb=0.5, random_state=0,
                                        refine_gammas={refine_gammas}).fit(X[:rows], Y[:rows], bands=bands,
                                                                             groups=np.arange(rows) // story)
fit(100, 50)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fit(n, 150)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split()[-1]) < 0.5  # GB: the fit's memory_gb
