"""Context-sweep TRW estimates against planted curves and hand-computed values."""

import numpy as np
import pytest

from lmbrain.trw import (
    TRWError, bootstrap_trw, centre_of_mass, context_sweep, peak_window, robust_window, window_seconds, words_to_seconds,
)

KS = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256])


def saturating(window, height=0.3, base=0.05):
    """A curve that rises until k reaches the voxel's window and stays flat after."""
    return base + height * np.minimum(np.log2(KS), np.log2(window)) / max(np.log2(window), 1e-9) * (window > 1)


def test_robust_window_recovers_planted_windows():
    windows = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256])
    curves = np.stack([saturating(w) for w in windows], axis=1)
    assert robust_window(KS, curves, fraction=1.0).tolist() == windows.tolist()
    # with 90%: the first k reaching 90% of the gain (log-linear rise -> one octave earlier for long windows)
    r90 = robust_window(KS, curves, fraction=0.9)
    assert np.all(r90 <= windows) and np.all(r90 >= windows / 2)


def test_hand_computed_values():
    cv = np.array([[0.10, 0.10, 0.30], [0.20, 0.05, 0.20], [0.25, 0.00, 0.10], [0.20, -0.1, 0.35]])
    ks = np.array([1, 4, 16, 64])
    # voxel 0: gains 0.1, 0.15, 0.1 -> max 0.15 at k=16; 90% = 0.135 reached first at k=16
    # voxel 1: never above k=1 -> shortest; voxel 2: only k=64 beats k=1 (gain 0.05)
    assert robust_window(ks, cv).tolist() == [16, 1, 64]
    assert robust_window(ks, cv, fraction=0.5).tolist() == [4, 1, 64]
    # centre of mass, voxel 0: increments 0.1 at k=4, 0.05 at k=16 -> exp((0.1 ln4 + 0.05 ln16) / 0.15)
    com = centre_of_mass(ks, cv)
    assert com[0] == pytest.approx(np.exp((0.1 * np.log(4) + 0.05 * np.log(16)) / 0.15))
    assert com[1] == 1
    assert com[2] == pytest.approx(64.0)  # only the 0.25 rise into k=64
    table = context_sweep(ks, cv, cv * 0.5)
    assert table["k_best"].tolist() == [16, 1, 64]
    assert table["gain"].round(6).tolist() == [0.15, 0.0, 0.05]
    assert table["test_gain"].round(6).tolist() == [0.075, 0.0, 0.025]


def test_context_sweep_chooses_by_cv_not_test():
    cv = np.stack([saturating(8)], axis=1)
    test = np.stack([saturating(256)], axis=1)
    row = context_sweep(KS, cv, test).iloc[0]
    assert row["k_best"] == 8 and row["trw_words"] <= 8


def test_bootstrap_interval_brackets_the_planted_window():
    rng = np.random.default_rng(0)
    n, v = 400, 30
    windows = rng.choice([2, 16, 128], size=v)
    y = rng.standard_normal((n, v))
    preds = np.empty((KS.size, n, v))
    for j, k in enumerate(KS):
        # prediction quality rises with k up to the voxel's window
        quality = np.minimum(np.log2(k) + 1, np.log2(windows) + 1) / (np.log2(windows) + 1)
        preds[j] = quality * y + 0.8 * rng.standard_normal((n, v))
    lo, hi = bootstrap_trw(KS, preds, y, n_boot=100, block=10, fraction=0.9)
    assert np.mean((lo <= windows) & (windows <= hi)) >= 0.9
    assert np.all(lo <= hi)


def test_bad_input_is_named():
    with pytest.raises(TRWError, match="increasing"):
        robust_window([4, 2], np.zeros((2, 3)))
    with pytest.raises(TRWError, match="n_context_lengths=3"):
        robust_window([1, 2, 4], np.zeros((2, 3)))
    with pytest.raises(TRWError, match="fraction"):
        robust_window([1, 2], np.zeros((2, 3)), fraction=0)


def test_mtlstm_voxel_timescales_recover_planted_units():
    from lmbrain.trw import mtlstm_timescales

    rng = np.random.default_rng(1)
    t = np.exp(rng.uniform(np.log(2), np.log(200), 60))
    t[-1] = 0.0  # the recipe's invgamma.isf(1) unit
    coef = rng.standard_normal((4, 60, 3)) * 0.01
    coef[:, t > 100, 0] += 1.0  # voxel 0 weights the slowest units
    coef[:, t < 4, 1] -= 1.0  # voxel 1 the fastest (sign does not matter)
    ts, p = mtlstm_timescales(coef.reshape(240, 3), t, n_delays=4, n_null=500)
    assert ts[0] > 100 and ts[1] < 4
    assert p[0] < 0.01 and p[1] < 0.01 and p[2] > 0.01
    with pytest.raises(TRWError, match="expected 4 delays x 60 units"):
        mtlstm_timescales(coef.reshape(240, 3)[:200], t, n_delays=4)


def test_gap_filling_never_spreads_values_into_masked_voxels():
    from lmbrain.plots import _fill_gaps

    vol = np.full((6, 1, 1), np.nan)
    sampled = np.zeros((6, 1, 1), bool)
    sampled[[0, 3], 0, 0] = True
    vol[0, 0, 0] = 5.0  # sampled, significant; voxel 3 sampled but NaN (not significant)
    out = _fill_gaps(vol, np.ones_like(sampled), sampled)
    assert out[:, 0, 0][:2].tolist() == [5.0, 5.0]
    assert np.isnan(out[3:, 0, 0]).all()  # voxel 3 stays NaN and so do its unsampled neighbours


def _story():
    import pandas as pd

    # 3 paragraphs (gap 1.0 s) of 2 sentences (gap 0.4 s) of 3 words (gap 0.05 s), word i lasts 0.2 + 0.01 i
    rows, t, i = [], 0.0, 0
    for p in range(3):
        for s in range(2):
            for w in range(3):
                dur = 0.2 + 0.01 * i
                rows.append((f"w{i}", t, t + dur))
                t += dur + (0.05 if w < 2 else (0.4 if s == 0 else 1.0))
                i += 1
    return pd.DataFrame(rows, columns=["word", "onset", "offset"])


def test_units_come_from_pauses():
    from lmbrain.scrambling import segment_units

    words = _story()
    assert segment_units(words, "word").tolist() == list(range(18))
    assert segment_units(words, "sentence").tolist() == [i // 3 for i in range(18)]
    assert segment_units(words, "paragraph").tolist() == [i // 6 for i in range(18)]
    with pytest.raises(TRWError, match="scrambling level"):
        segment_units(words, "chapter")


def test_scrambling_keeps_units_durations_and_length():
    from lmbrain.scrambling import scramble

    words = _story()
    for level, size in (("word", 1), ("sentence", 3), ("paragraph", 6)):
        out = scramble(words, level, seed=3)
        src = out["source"].to_numpy()
        assert sorted(src) == list(range(18)) and not np.array_equal(src, np.arange(18))
        # units stay whole and in their inner order
        for start in range(0, 18, size):
            block = src[start: start + size]
            assert block[0] % size == 0 and np.array_equal(block, np.arange(block[0], block[0] + size))
        dur = (words["offset"] - words["onset"]).to_numpy()
        assert np.allclose((out["offset"] - out["onset"]).to_numpy(), dur[src])
        assert out["offset"].iloc[-1] == pytest.approx(words["offset"].iloc[-1])  # same length: same words, same gaps
        assert list(out["word"]) == [f"w{i}" for i in src]
        assert scramble(words, level, seed=3)["source"].tolist() == src.tolist()  # deterministic


def test_scrambled_versions_reuse_the_intact_passes_and_equal_each_version_read_alone(monkeypatch):
    """Each version's features equal that scrambled story read on its own (rows back in the intact
    order), while the model runs only the windows that no unit of the intact story holds."""
    from lmbrain.models import WordLanguageModel
    from lmbrain.networks import build_model
    from lmbrain.scrambling import SCRAMBLE_LEVELS, read_word_features, scramble, scrambled_versions
    from lmbrain.vocab import Vocabulary
    from test_features import _contiguous_windows, _count_passes
    from test_models import tiny_spec

    words = _story()
    vocab = Vocabulary.build(list(words["word"]), min_count=1)
    lm = WordLanguageModel(build_model(tiny_spec("lstm"), len(vocab), seed=5), vocab, name="lstm")
    ks, K = [1, 2, 4, 8], 2  # state_context 2: passes of 2 words
    ran = _count_passes(monkeypatch, lm)
    got = dict(scrambled_versions(lm, 1, "pooled", words, ks, seeds=2, seed=7, state_context=K))
    windows_run = sum(ran)
    n = len(words)
    expected = 1 + (n - 1)  # the intact story: window 0 and every later start
    for (level, sd), F in got.items():
        scr = words.assign(source=np.arange(n)) if level == "intact" else scramble(words, level, seed=7 + sd)
        src = scr["source"].to_numpy()
        if level != "intact":
            expected += 1 + (n - 1 - _contiguous_windows(src, K))
        alone = read_word_features(lm, scr, ks, 1, "pooled", state_context=K)
        for k in ks:
            assert np.allclose(F[k][src], alone[k], rtol=1e-6, atol=1e-7), (level, sd, k)
    assert set(got) == {("intact", 0)} | {(lv, sd) for lv in SCRAMBLE_LEVELS for sd in range(2)}
    assert windows_run == expected < 7 * n


def test_survival_and_classes():
    from lmbrain.scrambling import scramble_summary, survival

    rng = np.random.default_rng(0)
    intact = rng.standard_normal((200, 3))
    same = np.stack([intact, intact])
    other = rng.standard_normal((2, 200, 3))
    r, ratio = survival(intact, same)
    assert np.allclose(r, 1) and np.allclose(ratio, 1)
    r, _ = survival(intact, other)
    assert np.all(np.abs(r) < 0.25)
    table = scramble_summary({"word": [0.9, 0.1, 0.1, 0.1], "sentence": [0.95, 0.8, 0.2, 0.1],
                              "paragraph": [0.97, 0.9, 0.7, 0.2]}, threshold=0.5)
    assert table["scramble_class"].tolist() == ["word", "sentence", "paragraph", "story"]
    assert np.all(np.diff(table["scramble_index"]) > 0)


def test_survival_sums_over_stories_match_the_concatenated_numpy_reference():
    from lmbrain.scrambling import SurvivalSums

    rng = np.random.default_rng(2)
    intact = 50.0 + rng.standard_normal((300, 4))  # a large offset: the sums must stay well conditioned
    scrambled = 0.6 * intact + 0.8 * rng.standard_normal((300, 4)) + 20.0
    acc = SurvivalSums()
    acc.add(intact[:120], scrambled[:120])
    acc.add(intact[120:], scrambled[120:])
    r, ratio = acc.result()
    ref_r = [np.corrcoef(intact[:, v], scrambled[:, v])[0, 1] for v in range(4)]
    assert np.allclose(r, ref_r, atol=1e-10)
    assert np.allclose(ratio, scrambled.var(0) / intact.var(0), rtol=1e-10)
    with pytest.raises(TRWError, match="must match"):
        acc.add(intact[:5], scrambled[:6])


def _bootstrap_reference(ks, P, y, n_boot, block, fraction, seed):
    """Resample the TRs by blocks and recompute every curve from the resampled series."""
    n = y.shape[0]
    starts = np.arange(0, n, block)
    rng = np.random.default_rng(seed)
    est = np.empty((n_boot, y.shape[1]))
    for b in range(n_boot):
        idx = np.concatenate([np.arange(s, min(s + block, n)) for s in rng.choice(starts, len(starts), replace=True)])
        yb = y[idx] - y[idx].mean(0)
        pb = P[:, idx] - P[:, idx].mean(1, keepdims=True)
        r = (pb * yb).sum(1) / np.sqrt((pb ** 2).sum(1) * (yb ** 2).sum(0))
        est[b] = robust_window(ks, r, fraction)
    return np.percentile(est, (2.5, 97.5), axis=0)


def test_bootstrap_from_block_sums_matches_resampling_the_series():
    rng = np.random.default_rng(4)
    n, v = 363, 60  # a short last block
    y = rng.standard_normal((n, v)) + 3.0  # an offset: the moment formulas must not lose precision
    preds = np.stack([(0.2 + 0.1 * j) * y + rng.standard_normal((n, v)) for j in range(KS.size)])
    lo, hi = bootstrap_trw(KS, preds, y, n_boot=50, block=10, fraction=0.9, seed=3)
    ref_lo, ref_hi = _bootstrap_reference(KS, preds, y, 50, 10, 0.9, seed=3)
    np.testing.assert_array_equal(lo, ref_lo)
    np.testing.assert_array_equal(hi, ref_hi)


def test_peak_window_against_polyfit():
    """Independent reference: numpy's polyfit of a quadratic through the best point and its neighbours."""
    ks = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256])
    rng = np.random.default_rng(3)
    curves = rng.standard_normal((ks.size, 200))
    got = peak_window(ks, curves)
    x = np.log(ks)
    for v in range(curves.shape[1]):
        i = int(curves[:, v].argmax())
        if 0 < i < ks.size - 1:
            a, b, _ = np.polyfit(x[i - 1: i + 2], curves[i - 1: i + 2, v], 2)
            want = np.exp(np.clip(-b / (2 * a), x[i - 1], x[i + 1]))
        else:
            want = ks[i]
        assert got[v] == pytest.approx(want, rel=1e-9)
    # a parabola in log k sampled on the grid peaks where it was planted; a symmetric peak is the grid point
    planted = np.array([3.0, 10.0, 100.0])
    parab = -(x[:, None] - np.log(planted)[None]) ** 2
    assert np.allclose(peak_window(ks, parab), planted)
    assert peak_window([1, 2, 4], np.array([[0.0], [1.0], [0.0]]))[0] == pytest.approx(2.0)
    # NaN counts as -inf; the ends give the end values
    assert peak_window([1, 2, 4], np.array([[np.nan], [1.0], [0.5]]))[0] == pytest.approx(2.0)
    assert peak_window([1, 2, 4], np.array([[0.0], [0.5], [1.0]]))[0] == 4


def test_context_sweep_trw_peak_is_the_shortest_k_without_gain():
    ks = [1, 2, 4, 8]
    cv = np.array([[0.3, 0.1], [0.2, 0.2], [0.1, 0.4], [0.0, 0.3]])
    t = context_sweep(ks, cv, cv)
    assert t["trw_peak"][0] == 1 and 2 < t["trw_peak"][1] < 8


def test_window_seconds_and_conversion():
    import pandas as pd

    # words of 0.5 s every 1 s: a k-word window spans k - 0.5 s
    a = pd.DataFrame({"onset": np.arange(10.0), "offset": np.arange(10.0) + 0.5})
    b = pd.DataFrame({"onset": np.arange(4.0) * 2, "offset": np.arange(4.0) * 2 + 0.5})  # 2 s apart: 2k - 1.5
    sec = window_seconds([a, b], [1, 2, 4, 16])
    # k=1: medians of 14 spans of 0.5; k=2: 9 spans of 1.5 and 3 of 2.5 -> 1.5; k=4: 7 of 3.5, 1 of 6.5;
    # k=16 is longer than every story: the longest story's span (9.5 s)
    assert sec.tolist() == [0.5, 1.5, 3.5, 9.5]
    assert words_to_seconds([1, 2, 4, 0.5, 100], [1, 2, 4, 16], sec).tolist() == pytest.approx([0.5, 1.5, 3.5, 0.5, 9.5])
    mid = words_to_seconds([np.sqrt(2)], [1, 2], [0.5, 2.0])[0]
    assert mid == pytest.approx(1.0)  # geometric mean: log-log interpolation


def test_centroid_window_against_a_loop():
    from lmbrain.trw import centroid_window

    ks = np.array([1, 2, 4, 8, 16])
    rng = np.random.default_rng(5)
    curves = rng.standard_normal((5, 30))
    curves[2, 3] = np.nan
    got = centroid_window(ks, curves)
    for v in range(30):
        c = curves[:, v]
        ok = ~np.isnan(c)
        w = np.where(ok, np.maximum(c - c[ok].mean(), 0), 0.0)
        assert got[v] == pytest.approx(np.exp((w * np.log(ks)).sum() / w.sum()), rel=1e-12)
    # a symmetric bump in log k is centred on its peak; a flat curve gives the shortest k
    assert centroid_window(ks, np.array([[0.0], [1.0], [2.0], [1.0], [0.0]]))[0] == pytest.approx(4.0)
    assert centroid_window(ks, np.array([[0.0], [0.0], [3.0], [1.0], [0.0]]))[0] == pytest.approx(
        np.exp((2.2 * np.log(4) + 0.2 * np.log(8)) / 2.4))
    assert centroid_window(ks, np.full((5, 1), 0.3))[0] == 1


def test_recovery_by_fit_quality_bins_the_scored_voxels_by_their_cv_score():
    """Issue 15: recovery within quarters of fit quality (cv_best). Planted: the 40 best-fitted high-SNR signal
    voxels carry the exact window, the 40 worst a shuffled one; noise, low-level and low-SNR voxels are not
    scored. The bins follow cv_best (equal counts, worst first), never the truth."""
    import pandas as pd
    from scipy.stats import spearmanr

    from lmbrain.recovery import RecoveryError, recovery_by_fit

    rng = np.random.default_rng(3)
    n = 100
    windows = rng.choice([1, 2, 4, 8, 16, 32, 64, 128, 256], n).astype(float)
    snr = np.r_[np.full(80, 1.0), np.full(20, 0.1)]  # the last 20 are below the signal voxels' median SNR
    truth = pd.DataFrame({"voxel": np.arange(n), "trw_words": windows, "snr": snr, "noise": 0,
                          "driver": "topics"})
    truth.loc[[0, 1], "noise"] = 1  # pure noise and low-level voxels leave the scored set
    truth.loc[2, "driver"] = "word_rate"
    cv = rng.uniform(0, 0.2, n)
    order = np.argsort(cv[:80])  # among the 80 high-SNR voxels (minus 3 unscored)
    est = windows * np.exp(rng.normal(0, 0.05, n))
    worst = [v for v in order if v > 2][:40]
    est[worst] = rng.permutation(windows[worst])
    table = pd.DataFrame({"voxel": np.arange(n), "cv_best": cv, "trw_centroid": est, "significant": True})
    fit = recovery_by_fit(read_truth_frame(truth), table, n_bins=4)
    scored = np.array([v for v in order if v > 2])
    assert fit["n"].tolist() == [20, 19, 19, 19] and fit["n"].sum() == 77
    parts = np.array_split(scored, 4)
    for row, part in zip(fit.itertuples(), parts):
        assert row.cv_best_min == pytest.approx(cv[part].min()) and row.cv_best_max == pytest.approx(cv[part].max())
        assert row.cv_best_median == pytest.approx(np.median(cv[part]))
        assert row.spearman == pytest.approx(spearmanr(windows[part], est[part]).correlation)
    assert fit["spearman"].iloc[-1] > 0.95 and fit["spearman"].iloc[0] < 0.6
    # a constant estimate within a bin gives NaN; a table without cv_best says what is missing
    flat = table.assign(trw_centroid=1.0)
    assert recovery_by_fit(read_truth_frame(truth), flat)["spearman"].isna().all()
    with pytest.raises(RecoveryError, match="no cv_best column"):
        recovery_by_fit(read_truth_frame(truth), table.drop(columns="cv_best"))


def read_truth_frame(truth):
    """A truth table as :func:`lmbrain.recovery.read_truth` returns it (noise as bool)."""
    return truth.assign(noise=truth["noise"].astype(bool))
