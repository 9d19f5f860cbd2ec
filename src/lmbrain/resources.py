"""Memory requests of the workflow's jobs, from the size of the data.

A cluster kills a job that outgrows its request, and a request sized for the demo is far too small for
a real subject (~95k voxels, ~10k TRs). :func:`job_mem_mb` estimates each rule's peak from the
subject's voxel and TR counts (:func:`subject_size`, read from file headers, no data loaded) and the
relevant settings; the terms follow the arrays each job holds, and the constants were checked against
the ``benchmark:`` peaks of a real-size run (README, performance table). ``attempt`` (Snakemake's retry
counter) doubles the request on each retry.
"""

from __future__ import annotations

import functools
import math

MB = 1e6
BASE_MB = 1500  # python, torch, numpy, h5py and the package itself


@functools.lru_cache(maxsize=64)
def _size(layout: str, root: str, tr: float, subject: str, train, test) -> dict:
    from .datasets import open_dataset

    ds = open_dataset(layout, root, tr=tr)
    train_s, test_s = ds.split(subject, list(train) if isinstance(train, tuple) else train, list(test))
    trs = {s: len(ds.tr_times(s, subject)) for s in train_s + test_s}
    return {"n_voxels": int(ds.n_voxels(subject)), "n_trs": int(sum(trs.values())),
            "n_test_trs": int(sum(trs[s] for s in test_s)), "max_story_trs": int(max(trs.values())),
            "n_stories": len(trs)}


def subject_size(config: dict, subject: str) -> dict | None:
    """``n_voxels``, ``n_trs`` (all stories), ``n_test_trs``, ``max_story_trs``, ``n_stories`` of a
    subject; None when the dataset cannot be read yet (the request then falls back to a default)."""
    train = config["stories"]["train"]
    try:
        return _size(config["dataset"]["layout"], str(config["dataset"]["root"]), float(config.get("tr", 2.0)),
                     subject, tuple(train) if isinstance(train, list) else train, tuple(config["stories"]["test"]))
    except Exception:  # noqa: BLE001 - not there yet (demo not built) or unreadable: the job will say why
        return None


def _features(config: dict) -> int:
    """An upper bound of a model's delayed feature count (hidden size up to 1024, four delays)."""
    return len(config["encoding"]["delays"]) * 1024


def job_mem_mb(rule: str, config: dict, size: dict | None, attempt: int = 1, default: int = 4000) -> int:
    """Memory request (MB) of one job of ``rule`` for a subject of ``size`` (:func:`subject_size`)."""
    if size is None:
        return default * attempt
    V, T, Tt = size["n_voxels"], size["n_trs"], size["n_test_trs"]
    F = _features(config)
    dec = config.get("decoding", {})
    if rule == "data_summary":
        need = 3 * 8 * size["max_story_trs"] * V / MB
    elif rule == "encoding_model":
        # float32 responses (train + test), the ridge's working set (encoding.memory_gb), test predictions
        # and permutation nulls, the coefficients of one k
        need = 2.5 * 4 * T * V / MB + 1024 * float(config["encoding"]["memory_gb"]) + 3 * 4 * F * V / MB
    elif rule == "trw":
        # every k's coefficients (float32 once read) and the predicted test responses per scrambling condition
        n_k = len(config["features"]["context_lengths"])
        conditions = 2 + 3 * int(config["trw"]["scramble_seeds"])
        need = n_k * 4 * F * V / MB + conditions * 4 * Tt * V / MB + 2 * 8 * Tt * V / MB
    elif rule == "decoder":
        n_sel = min(int(dec.get("n_voxels", 10000)), V)
        # one float32 copy of the training responses (plus a story's z-scores), the ridge's working set,
        # leave-one-out residuals of the kept voxels and the precision
        need = 1.5 * 4 * T * V / MB + 3 * 8 * n_sel ** 2 / MB + 1024 * float(config["encoding"]["memory_gb"])
    elif rule == "decode":
        n_sel = min(int(dec.get("n_voxels", 10000)), V)
        beam = int(dec.get("beam_width", 10))
        # the story's responses, the precision and its factor, one predicted response per hypothesis,
        # the BERTScore encoder
        need = 2 * 8 * Tt * V / MB + 3 * 8 * n_sel ** 2 / MB + 2 * beam * 8 * Tt * n_sel / MB + 500
    else:
        return default * attempt
    return int(math.ceil((BASE_MB + 1.3 * need) / 100) * 100) * attempt
