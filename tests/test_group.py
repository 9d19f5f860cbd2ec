"""Group results at ROI level: per-subject tables, across-subject means and the ROI-ordering tests."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lmbrain import group as G


def _subject_table(trw, r, rois=("AC", "Broca", "IPS")):
    return pd.DataFrame({"roi": list(rois), "n_voxels": 10, "n_significant": 5,
                         "median_test_r": r, "median_trw_words": trw})


@pytest.fixture
def three_subjects():
    return {
        "UTS01": _subject_table([4.0, 16.0, 64.0], [0.2, 0.1, 0.15]),
        "UTS02": _subject_table([8.0, 16.0, 128.0], [0.3, 0.2, 0.05]),
        "UTS03": _subject_table([2.0, np.nan, 32.0], [0.1, 0.1, 0.1]),
    }


def test_group_table_hand_computed(three_subjects):
    g = G.group_table(three_subjects).set_index("roi")
    assert g["n_subjects"].tolist() == [3, 2, 3]
    # TRW: geometric mean (mean of log2) with a t interval on the log2 scale
    np.testing.assert_allclose(g.loc["AC", "mean_trw_words"], 4.0)
    lo, hi = stats.t.interval(0.95, 2, loc=2.0, scale=stats.sem([2.0, 3.0, 1.0]))
    np.testing.assert_allclose(g.loc["AC", ["trw_words_low", "trw_words_high"]].to_numpy(float), [2 ** lo, 2 ** hi])
    np.testing.assert_allclose(g.loc["IPS", "mean_trw_words"], 64.0)
    # a subject without a value for an ROI is left out of that ROI's mean
    np.testing.assert_allclose(g.loc["Broca", "mean_trw_words"], 16.0)
    assert np.isnan(g.loc["Broca", "trw_words_UTS03"]) and g.loc["Broca", "trw_words_UTS02"] == 16
    # test r: the mean of Fisher's z and its t interval, back-transformed
    z = np.arctanh([0.2, 0.3, 0.1])
    np.testing.assert_allclose(g.loc["AC", "mean_test_r"], np.tanh(z.mean()))
    lo, hi = stats.t.interval(0.95, 2, loc=z.mean(), scale=stats.sem(z))
    np.testing.assert_allclose(g.loc["AC", ["test_r_low", "test_r_high"]].to_numpy(float), np.tanh([lo, hi]))
    assert [c for c in g.columns if c.startswith("test_r_U")] == ["test_r_UTS01", "test_r_UTS02", "test_r_UTS03"]
    # one subject: a mean but no interval
    one = G.group_table({"UTS01": three_subjects["UTS01"]})
    assert one["mean_trw_words"].tolist() == [4, 16, 64] and one["trw_words_low"].isna().all()


def test_a_mean_correlation_and_its_interval_stay_correlations():
    # two subjects far apart: a t interval on r itself (t_1 = 12.7) reached -1.37 .. 2.01 on the demo
    g = G.group_table({"A": _subject_table([4.0], [0.05], ("AC",)), "B": _subject_table([8.0], [0.6], ("AC",))}).iloc[0]
    assert -1 < g["test_r_low"] < g["mean_test_r"] < g["test_r_high"] < 1
    z = np.arctanh([0.05, 0.6])
    np.testing.assert_allclose(g["test_r_low"], np.tanh(z.mean() - stats.t.ppf(0.975, 1) * z.std(ddof=1) / np.sqrt(2)))
    # a correlation of exactly 1 is kept finite; one outside [-1, 1] is refused
    m, lo, hi, _ = G.mean_ci(np.array([[1.0], [0.5]]), scale="fisher")
    assert np.isfinite([m, lo, hi]).all() and hi[0] <= 1
    with pytest.raises(G.GroupError, match=r"\[-1, 1\]"):
        G.mean_ci(np.array([[1.5], [0.5]]), scale="fisher")
    with pytest.raises(G.GroupError, match="scale must be one of linear, log2, fisher"):
        G.mean_ci(np.array([[0.5], [0.5]]), scale="atanh")
    with pytest.raises(G.GroupError, match="both as a log2 column and as a correlation"):
        G.group_table({"A": _subject_table([4.0], [0.05], ("AC",))}, log_columns=("median_test_r",))


def test_mean_ci_coverage_and_bootstrap():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=(6, 2000))  # 2000 experiments of 6 subjects
    m, lo, hi, n = G.mean_ci(x, 0.95)
    assert (n == 6).all()
    assert 0.93 <= np.mean((lo <= 1.0) & (1.0 <= hi)) <= 0.97
    mb, lob, hib, _ = G.mean_ci(x[:, :50], 0.95, method="bootstrap", n_boot=500, seed=1)
    np.testing.assert_allclose(mb, m[:50])
    assert (lob < mb).all() and (mb < hib).all()
    again = G.mean_ci(x[:, :50], 0.95, method="bootstrap", n_boot=500, seed=1)
    np.testing.assert_array_equal(again[1], lob)
    with pytest.raises(G.GroupError, match="method must be"):
        G.mean_ci(x, method="jackknife")


def test_roi_matrix_and_missing_roi_names_the_subject(three_subjects):
    v, subjects, rois = G.roi_matrix(three_subjects, "median_trw_words")
    assert subjects == ["UTS01", "UTS02", "UTS03"] and rois == ["AC", "Broca", "IPS"]
    assert v.shape == (3, 3) and np.isnan(v[2, 1])
    short = dict(three_subjects, UTS04=_subject_table([4.0, 8.0], [0.1, 0.1], rois=("AC", "Broca")))
    assert G.roi_matrix(short, "median_trw_words")[2] == ["AC", "Broca"]  # default: ROIs every subject has
    with pytest.raises(G.GroupError, match="subject UTS04: no row for ROI\\(s\\) IPS"):
        G.roi_matrix(short, "median_trw_words", rois=["AC", "IPS"])
    with pytest.raises(G.GroupError, match="no column 'median_trw_seconds'"):
        G.roi_matrix(three_subjects, "median_trw_seconds")


# ------------------------------------------------------------------------------------------
# tests of the ordering
def _brute_sign_flip(d, alternative):
    d = np.asarray(d)
    obs = d.mean()
    null = np.array([np.mean(np.array(s) * d) for s in itertools.product([1, -1], repeat=len(d))])
    if alternative == "greater":
        return np.mean(null >= obs - 1e-12)
    if alternative == "less":
        return np.mean(null <= obs + 1e-12)
    return np.mean(np.abs(null) >= abs(obs) - 1e-12)


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_sign_flip_exact_matches_enumeration(alternative):
    rng = np.random.default_rng(2)
    v = rng.normal(size=(7, 4)) + np.array([0, 0, 0.4, 0.6])
    res = G.sign_flip_test(v, long=[2, 3], short=[0, 1], alternative=alternative)
    d = v[:, 2:].mean(axis=1) - v[:, :2].mean(axis=1)
    assert res.exact and res.n_permutations == 2 ** 7
    np.testing.assert_allclose(res.per_subject, d)
    assert res.p_value == pytest.approx(_brute_sign_flip(d, alternative))
    mc = G.sign_flip_test(v, long=[2, 3], short=[0, 1], alternative=alternative, n_perm=20000, seed=0, max_exact=0)
    assert not mc.exact and abs(mc.p_value - res.p_value) < 0.015


def test_rank_order_exact_matches_enumeration():
    v = np.array([[1.0, 3.0, 2.0], [0.5, 0.7, 0.9], [2.0, 1.0, 3.0]])
    ref = np.array([0.0, 1.0, 1.0])  # groups: the first ROI short, the other two long (a tie)
    res = G.rank_order_test(v, ref)
    assert res.exact and res.n_permutations == 6 ** 3

    def rho(x):
        return stats.spearmanr(x, ref)[0]

    obs = np.mean([rho(row) for row in v])
    assert res.statistic == pytest.approx(obs)
    np.testing.assert_allclose(res.per_subject, [rho(row) for row in v], atol=1e-12)
    perms = list(itertools.permutations(range(3)))
    null = [np.mean([rho(v[s, list(p)]) for s, p in enumerate(ps)]) for ps in itertools.product(perms, repeat=3)]
    assert res.p_value == pytest.approx(np.mean(np.array(null) >= obs - 1e-12))
    mc = G.rank_order_test(v, ref, n_perm=20000, seed=0, max_exact=0)
    assert not mc.exact and abs(mc.p_value - res.p_value) < 0.015
    # a subject with all-equal values contributes rho = 0
    flat = G.rank_order_test(np.vstack([v, [1.0, 1.0, 1.0]]), ref)
    assert flat.per_subject[-1] == 0


def _planted(rng, n_subjects=8, effect=1.0):
    """log2 TRW of 6 ROIs: an ordering 0 < 1 < ... < 5 scaled by ``effect`` plus subject noise."""
    return effect * np.arange(6)[None, :] + rng.normal(0, 1.0, size=(n_subjects, 6)) + rng.normal(0, 2, (n_subjects, 1))


def test_planted_ordering_is_found_and_null_or_reversed_is_not():
    rois = ["AC", "sPMv", "Broca", "EBA", "IPS", "FEF"]
    order = [["AC"], ["sPMv", "Broca"], ["EBA"], ["IPS", "FEF"]]
    rng = np.random.default_rng(3)
    found = G.ordering_test(_planted(rng), rois, order, n_perm=2000, seed=1)
    assert found["test"].tolist() == ["sign-flip contrast", "rank order (mean Spearman)"]
    assert found["hypothesis"].tolist() == ["IPS+FEF > AC", "AC < sPMv+Broca < EBA < IPS+FEF"]
    assert (found["p_value"] < 0.01).all()
    assert found.loc[0, "exact"] and found.loc[0, "p_value"] == pytest.approx(1 / 256)  # all 8 subjects agree
    reversed_ = G.ordering_test(_planted(rng, effect=-1.0), rois, order, n_perm=2000, seed=1)
    assert (reversed_["p_value"] > 0.9).all()
    null = G.ordering_test(_planted(rng, effect=0.0), rois, order, n_perm=2000, seed=1)
    assert (null["p_value"] > 0.05).all()


def test_null_pvalues_are_calibrated():
    """Over many null data sets, p-values are roughly uniform (both tests, exact and Monte Carlo)."""
    rng = np.random.default_rng(4)
    p_flip, p_rank = [], []
    for seed in range(300):
        v = _planted(rng, n_subjects=6, effect=0.0)
        p_flip.append(G.sign_flip_test(v, long=[4, 5], short=[0]).p_value)  # exact, 64 sign patterns
        p_rank.append(G.rank_order_test(v, np.arange(6), n_perm=199, seed=seed).p_value)
    for p in (np.array(p_flip), np.array(p_rank)):
        assert 0.02 <= np.mean(p <= 0.05) <= 0.09
        assert 0.4 <= np.mean(p) <= 0.6
        assert stats.kstest(p, "uniform").pvalue > 0.001


def test_ordering_errors_name_subject_and_roi():
    rois = ["AC", "Broca", "IPS"]
    v = np.array([[1.0, 2.0, 3.0], [1.0, np.nan, 3.0], [0.0, 1.0, 2.0]])
    with pytest.raises(G.GroupError, match="no value .* for subject UTS02: Broca"):
        G.ordering_test(v, rois, ["AC", "Broca", "IPS"], subjects=["UTS01", "UTS02", "UTS03"])
    res = G.ordering_test(v, rois, ["AC", "IPS"])  # leaving the ROI out works
    assert res["n_subjects"].tolist() == [3, 3]
    with pytest.raises(G.GroupError, match="ROI\\(s\\) Wernicke not among AC, Broca, IPS"):
        G.ordering_test(v, rois, ["AC", "Wernicke"])
    with pytest.raises(G.GroupError, match="at least two groups"):
        G.ordering_test(v, rois, [["AC", "IPS"]])
    with pytest.raises(G.GroupError, match="non-empty and disjoint"):
        G.sign_flip_test(v, long=[0], short=[0])
    with pytest.raises(G.GroupError, match="at least 2 subjects"):
        G.sign_flip_test(v[:1], long=[2], short=[0])


def test_group_figure_written_in_group_order(tmp_path, monkeypatch, three_subjects):
    import lmbrain.plots_rois as P

    seen = []
    real = P.save_figure
    monkeypatch.setattr(P, "save_figure", lambda fig, png, **kw: (
        seen.append([t.get_text() for t in fig.axes[0].get_xticklabels()]), real(fig, png, **kw))[1])
    subjects = {s: t.assign(median_trw_words=t["median_trw_words"].to_numpy()[::-1]) for s, t in three_subjects.items()}
    g = G.group_table(subjects)
    out = P.group_rois(subjects, g, tmp_path / "group_rois.png", title="3 subjects")
    assert [p.name for p in out] == ["group_rois.png", "group_rois.pdf"] and all(p.stat().st_size > 5000 for p in out)
    assert seen[0] == ["IPS", "Broca", "AC"]  # by group mean TRW, shortest first
