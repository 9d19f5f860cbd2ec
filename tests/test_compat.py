"""Reference-code behaviours (issue 20): dataset.non_words, encoding.delays_across_stories,
encoding.score, encoding.phones_include_silence and the compat preset. Expectations are written by
hand from the published description of the reference methods, not from its code."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_datasets import lebel, long_textgrid  # noqa: F401  (fixture)

from lmbrain.config import ConfigError, DatasetSettings, from_json, resolve, to_json

ROOT = Path(__file__).resolve().parents[1]


def lanczos(tr_times, word_times, tr=2.0, w=3):
    """Hand-built Lanczos resampling (Huth lab: cutoff 1/TR, window 3): sum over words of L(x)."""
    x = (np.asarray(tr_times)[:, None] - np.asarray(word_times)[None, :]) / tr
    with np.errstate(divide="ignore", invalid="ignore"):
        L = w * np.sin(np.pi * x) * np.sin(np.pi * x / w) / (np.pi ** 2 * x ** 2)
    L[x == 0] = 1.0
    L[np.abs(x) > w] = 0.0
    return L.sum(axis=1)


def test_non_words_huth_counts_sl_cg_and_empty_labels_in_the_word_rate(lebel):
    from lmbrain.stages.common import open_job_dataset
    from lmbrain.stimulus import word_rate

    tg = lebel / "derivative" / "TextGrids" / "a.TextGrid"
    # a pause labelled {SL} and a cough (cg) between two words; the grid ends with an empty interval
    tg.write_text(long_textgrid([("Hello", 12.0, 12.4), ("{SL}", 12.4, 12.9), ("cg", 13.0, 13.2),
                                 ("World", 13.2, 13.6)], 40.0))
    settings = {nw: DatasetSettings(layout="lebel2023", root=str(lebel), tr=2.0, train="all", test=("b",),
                                    non_words=nw) for nw in ("lmbrain", "huth")}
    ds = {nw: open_job_dataset(s) for nw, s in settings.items()}
    assert ds["lmbrain"].words("a")["word"].tolist() == ["hello", "world"]
    assert ds["huth"].words("a")["word"].tolist() == ["hello", "sl", "cg", "world", ""]
    t = ds["lmbrain"].tr_times("a")  # 11, 13, 15, ... s
    rate = {nw: word_rate(d.words("a"), t)[:, 0] for nw, d in ds.items()}
    np.testing.assert_allclose(rate["lmbrain"], lanczos(t, [12.2, 13.4]), atol=1e-12)
    # the reference counts the silence label, the cough and the trailing empty interval (midpoint 26.8 s)
    extra = lanczos(t, [12.65, 13.1, 26.8])
    np.testing.assert_allclose(rate["huth"] - rate["lmbrain"], extra, atol=1e-12)
    # the TR at 13 s, amid the pause, gains almost two words; TRs beyond the kernel's reach are unchanged
    assert rate["huth"][t == 13.0] - rate["lmbrain"][t == 13.0] > 1.9
    far = np.min(np.abs(t[:, None] - np.array([12.65, 13.1, 26.8])), axis=1) > 6
    np.testing.assert_array_equal(rate["huth"][far], rate["lmbrain"][far])


def base():
    with open(ROOT / "config" / "config.yaml") as fh:
        return yaml.safe_load(fh)


def test_non_words_setting_reaches_every_job():
    cfg = base()
    assert resolve(cfg).dataset.non_words == "lmbrain"
    cfg["dataset"]["non_words"] = "huth"
    s = resolve(cfg)
    assert s.dataset.non_words == "huth"
    model = next(iter(s.models))
    for job in (s.data_job(), s.feature_job(model), s.encoding_job(model), s.trw_job(model)):
        assert job.dataset.non_words == "huth"
        assert from_json(type(job), to_json(job)).dataset.non_words == "huth"
    cfg["dataset"]["non_words"] = "none"
    with pytest.raises(ConfigError, match="dataset.non_words"):
        resolve(cfg)
