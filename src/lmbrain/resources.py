"""Memory and time requests of the workflow's jobs, from the size of the data.

A cluster kills a job that outgrows its request, and a request sized for the demo is far too small for
a real subject (~95k voxels, ~10k TRs). :func:`job_mem_mb` estimates each rule's peak from the
subject's voxel and TR counts (:func:`subject_size`, read from file headers, no data loaded) and the
relevant settings; the terms follow the arrays each job holds, and the constants were checked against
the ``benchmark:`` peaks of a real-size run (README, performance table). ``attempt`` (Snakemake's retry
counter) doubles the request on each retry. :func:`job_runtime_min` does the same for the time a job asks for:
a rule's fixed request, or an encoding job's estimate on CPU where that is longer.
"""

from __future__ import annotations

import functools
import math
import os

MB = 1e6
BASE_MB = 1500  # python, torch, numpy, h5py and the package itself
WORDS_PER_TR = 6  # words per 2 s TR when a transcript cannot be read (speech runs at 2-3 words/s)


@functools.lru_cache(maxsize=64)
def _size(layout: str, root: str, tr: float, subject: str, train, test, non_words: str = "lmbrain") -> dict:
    from .datasets import non_word_labels, open_dataset

    ds = open_dataset(layout, root, tr=tr, non_words=non_word_labels(non_words))
    train_s, test_s = ds.split(subject, list(train) if isinstance(train, tuple) else train, list(test))
    trs = {s: len(ds.tr_times(subject, s)) for s in train_s + test_s}
    n_test_trs = int(sum(trs[s] for s in test_s))
    try:  # the test transcripts (the scrambling analysis predicts every word)
        n_test_words = int(sum(len(ds.words(subject, s)) for s in test_s))
    except Exception:  # noqa: BLE001 - no transcript readable yet: a fast speaker's rate
        n_test_words = WORDS_PER_TR * n_test_trs
    return {"n_voxels": int(ds.n_voxels(subject)), "n_trs": int(sum(trs.values())), "n_test_trs": n_test_trs,
            "max_story_trs": int(max(trs.values())), "n_stories": len(trs), "n_test_words": n_test_words}


def subject_size(settings, subject: str) -> dict | None:
    """``n_voxels``, ``n_trs`` (all stories), ``n_test_trs``, ``max_story_trs``, ``n_stories``,
    ``n_test_words`` of a subject (``settings``: :class:`lmbrain.config.Settings`); None when the dataset
    cannot be read yet (the request then falls back to a default)."""
    d = settings.dataset
    try:
        return _size(d.layout, str(d.root), float(d.tr), subject, d.train, tuple(d.test), d.non_words)
    except Exception:  # noqa: BLE001 - not there yet (demo not built) or unreadable: the job will say why
        return None


WIDE = 4096  # the hidden size assumed when a model's cannot be read (large HuggingFace models)


def _pretrained_width(spec: dict, cache_dir: str) -> int:
    """Hidden size of a HuggingFace model from its ``config.json`` or GGUF header (no weights loaded,
    nothing fetched: a ``pip:`` model not yet in the cache raises, and the caller assumes :data:`WIDE`).

    Remembered per (spec, cache folder) for the life of the process: Snakemake asks for a job's memory
    (and, through it, its threads) every time it plans or readies the job, and ``gguf.GGUFReader`` parses
    the whole metadata, tokenizer included, to find one number: 2.3-3.8 s for SmolLM2-135M. Uncached,
    the demo's scheduler stalled 6-16 s, with a core idle, each time SmolLM2's encoding or TRW jobs
    became ready. A width read for a model that is not there yet raises and is not remembered."""
    import json

    return _pretrained_width_of(json.dumps(spec, sort_keys=True, default=str), str(cache_dir))


@functools.lru_cache(maxsize=64)
def _pretrained_width_of(spec_json: str, cache_dir: str) -> int:
    import json
    from pathlib import Path

    from .huggingface import resolve_pretrained

    spec = resolve_pretrained(json.loads(spec_json), cache_dir, fetch=False)
    folder = Path(str(spec.get("path") or "")).expanduser()
    if spec.get("gguf_file"):
        import gguf

        fields = gguf.GGUFReader(folder / spec["gguf_file"]).fields
        key = next(k for k in fields if k.endswith(".embedding_length"))
        return int(fields[key].parts[fields[key].data[0]][0])
    cfg = json.loads((folder / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    return int(next(cfg[k] for k in ("hidden_size", "n_embd", "d_model") if k in cfg))


def feature_width(settings, model: str | None) -> int:
    """Hidden size of ``model``'s features: from its spec (word-level models) or its files
    (HuggingFace); :data:`WIDE` when it cannot be known before the model exists."""
    try:
        spec = settings.models[model]
        if spec.type in ("rnn", "lstm", "mtlstm"):
            return int(spec["hidden_dim"])
        if spec.type in ("transformer", "attention"):
            return int(spec["embedding_dim"])
        if spec.type == "huggingface":
            return _pretrained_width(spec.as_dict(), settings.corpus.cache_dir)
    except Exception:  # noqa: BLE001 - unknown model, files not there yet: assume a wide model
        return WIDE
    return 1024  # planted: the demo's topic reader (a few hundred topic units)


def _context_lengths(settings, model: str | None):
    """A model's own context lengths (features.context_lengths for a model not configured)."""
    if model in settings.models:
        return settings.models[model].context_lengths
    return settings.effective["features"]["context_lengths"]


def _features(settings, model: str | None = None) -> int:
    """A model's delayed feature count: hidden size times the FIR delays."""
    return len(settings.encoding.delays) * feature_width(settings, model)


def job_mem_mb(rule: str, settings, size: dict | None, attempt: int = 1, default: int = 4000,
               model: str | None = None) -> int:
    """Memory request (MB) of one job of ``rule`` for a subject of ``size`` (:func:`subject_size`) and
    ``model`` (its hidden size sets the feature count; None = :data:`WIDE`); ``settings``:
    :class:`lmbrain.config.Settings`."""
    if size is None:
        return default * attempt
    V, T, Tt = size["n_voxels"], size["n_trs"], size["n_test_trs"]
    dec = settings.decoding
    enc = settings.encoding
    if rule == "decoder" and dec.feature_model:
        model = dec.feature_model
    F = _features(settings, model)
    if rule == "data_summary":
        need = 3 * 8 * size["max_story_trs"] * V / MB
    elif rule == "encoding_model":
        # one float32 copy of the responses, the ridge's working set (encoding.memory_gb), the coefficients
        # of one k (float32 and their float16 copy), the test predictions and the permutation test's copies
        need = (4 * T * V + 1024 ** 3 * float(enc.memory_gb) + 3 * 4 * F * V + 3 * 8 * Tt * V) / MB
    elif rule == "trw":
        # the test responses and one bootstrap chunk, every k's coefficients summed over delays (float64),
        # and the scrambling: intact and scrambled word-level predictions (float64) and a product's temporary
        W = size.get("n_test_words", WORDS_PER_TR * Tt)
        n_k = len(_context_lengths(settings, model))  # the model's own context lengths
        need = (2 * 4 * Tt * V + 200e6 + n_k * 8 * F / len(enc.delays) * V
                + (3 * 8 * W * V if settings.trw.scramble else 0)) / MB
    elif rule == "decoder":
        n_sel = min(int(dec.n_voxels), V)
        n_rate = 4 * min(int(dec.rate_voxels or V), V)  # the word-rate model's delayed voxels
        residuals = 8 * T * n_sel
        # one float32 copy of the responses, held throughout, plus the largest of its phases: the ridge CV
        # (encoding.memory_gb), the held-out residuals (a float64 training copy of the kept voxels and
        # the residuals), the word-rate model (residuals kept, its ridge's 11 validation hats and design
        # copies) and the precision (residuals kept, covariance sum, inverse and its workspace)
        phases = (1024 ** 3 * float(enc.memory_gb), 2 * residuals,
                  residuals + 11 * 4 * T * n_rate + 5 * 4 * T * n_rate, residuals + 3 * 8 * n_sel ** 2)
        need = (4 * T * V + max(phases)) / MB
    elif rule == "decode":
        n_sel = min(int(dec.n_voxels), V)
        beam = int(dec.beam_width)
        # the story's responses, the precision and its factor, per hypothesis the predictions of the ~16 TRs
        # later words can still change (two copies), one batch of candidates (~1.5 x its budget), the rest of
        # the story for the best hypothesis after the last word, the BERTScore encoder
        need = (2 * 8 * Tt * V + 3 * 8 * n_sel ** 2 + beam * 2 * 8 * 16 * n_sel + 8 * Tt * n_sel) / MB \
            + 1.5 * float(dec.beam_batch_mb) + 500
    else:
        return default * attempt
    return int(math.ceil((BASE_MB + 1.3 * need) / 100) * 100) * attempt


# Seconds per (training TR x voxel x delayed feature column x context length) of an encoding job on two CPU
# threads with the default banded ridge: the slowest per-unit cost measured (benchmarks/scaling.py, one k:
# 3.1e-9 s at 1,100 TRs x 20,000 voxels x 524 columns, 0.9e-9 with 2,316 columns; 2.4e-9 at 11,000 TRs x
# 2,500 voxels x 524 and 3.7e-9 x 2,316, where the per-fold factorisations of the wide band dominate; the
# real-size job, 11,328 x 80,615 x 524 at 26 folds, 1.8-1.9e-9 with its test and maps). Plain ridge costs less.
ENCODING_S_PER_UNIT = 3.7e-9
# This machine's speed varied about 2x from day to day (README: a fixed product took 6.2 to 13 ms), and a
# cluster node's cores are not ours: the estimate is doubled before it is requested.
RUNTIME_MARGIN = 2.0


def job_runtime_min(rule: str, settings, size: dict | None, attempt: int = 1, default: int = 60,
                    model: str | None = None) -> int:
    """Time request (minutes) of one job of ``rule``: ``default`` (the rule's fixed request), doubled on each
    retry like the memory request (a job killed at its time limit gets twice the time).

    An encoding job on CPU (``resources.gpu: 0``) asks for more when its estimate is longer: it fits every
    context length of the model with a cost that grows with training TRs x voxels x delayed features
    (:data:`ENCODING_S_PER_UNIT`, x :data:`RUNTIME_MARGIN`). At real size that is hours: SmolLM2's 2,304
    delayed features over 95,000 voxels, 10,000 TRs and 9 context lengths are ~20 h on two threads (a 40 h
    request), where a fixed 4 h request had SLURM kill the job, and its retry, at the limit. A job on a GPU
    keeps ``default`` (the real-size fit takes seconds to minutes there).
    """
    minutes = int(default)
    if rule == "encoding_model" and size is not None and not settings.resources.gpu:
        columns = _features(settings, model) + len(settings.encoding.delays) * len(settings.encoding.nuisance)
        seconds = ENCODING_S_PER_UNIT * (size["n_trs"] - size["n_test_trs"]) * size["n_voxels"] * columns * len(
            _context_lengths(settings, model))
        minutes = max(minutes, int(math.ceil(RUNTIME_MARGIN * seconds / 60)))
    return minutes * attempt


CLUSTER_THREADS = 4  # resources.threads: auto on a cluster: each job's CPUs (its own allocation)


def machine_memory_mb() -> float:
    """Physical memory of this machine in MB (the total, not what is free now: a thread count taken
    from it does not change from one run to the next)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MB


def job_threads(threads: int | str, mem_mb: float, cores: int | None, local: bool = True,
                machine_mb: float | None = None) -> int:
    """Threads of a heavy job (config ``resources.threads``).

    An integer is used as it is (Snakemake caps it at ``--cores``). ``"auto"`` on a cluster gives
    :data:`CLUSTER_THREADS` (each job gets its own allocation). ``"auto"`` on a local run gives the job
    the fewest threads with which the jobs Snakemake runs side by side (``cores // threads`` of them)
    fit in the machine's memory together: ``n = machine_mb // mem_mb`` jobs fit, so
    ``threads = cores // (n + 1) + 1``, at most ``cores``. Small jobs (the demo's) get one thread each and
    run ``cores`` at a time, which on 2 cores finished each stage 1.3-1.8x sooner than one job at a time
    on two threads (README: cores actually used): much of a job is one-threaded (start-up, Python loops,
    I/O), and torch's idle threads spin.

    Parameters
    ----------
    threads : int or "auto"
    mem_mb : float
        The job's memory request (first attempt).
    cores : int or None
        Snakemake's ``--cores`` (None: this machine's CPU count).
    local : bool
        False when a cluster executor submits the job (or it runs inside such a submission).
    machine_mb : float, optional
        This machine's memory (default :func:`machine_memory_mb`).
    """
    if threads != "auto":
        return int(threads)
    if not local:
        return CLUSTER_THREADS
    cores = int(cores or os.cpu_count() or 1)
    machine_mb = float(machine_mb if machine_mb is not None else machine_memory_mb())
    fit = int(machine_mb // max(float(mem_mb), 1.0))  # such jobs that fit in memory together
    return int(min(cores, cores // (fit + 1) + 1))
