"""Stages ``decoder`` and ``decode``: fit a subject's decoder; decode, score and plot one story.

- :func:`decoder`: reads the subject's training stories (words, TR times, responses), builds the
  proposer (:func:`build_proposer`), fits a :class:`lmbrain.decoding.Decoder` and writes ``decoder.npz``
  atomically.
- :func:`decode`: decodes one story with the beam search (a checkpoint beside the output folder lets a
  killed decode resume), generates the LM-only null, scores windows against both nulls
  (:mod:`lmbrain.evaluation`), identifies segments, and writes the story's folder atomically
  (:func:`lmbrain.io.atomic_dir`: the folder appears only when complete).

Settings of Tang et al.'s reference behaviours (issue 20) are read with :func:`setting`, so a key the
configuration does not define yet keeps lmbrain's default: ``decoding.rate_rounding`` ("cumulative" |
"per_tr"), ``decoding.rate_delays_across_stories`` (bool), ``decoding.content_window`` and
``decoding.bigram_window`` (words or null), ``decoding.bertscore_idf`` (bool), ``decoding.beam_device``
(null = numpy, or a torch device / "auto") and ``decoding.beam_batch_mb``.
"""

from __future__ import annotations

import logging
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import DecodeJob, DecoderJob, to_json
from ..decoding import Decoder, DecodingError, WordLMProposer, decoder_layer, generate_null, word_features
from ..io import atomic_dir, atomic_path
from .common import open_job_dataset, split_stories

log = logging.getLogger("lmbrain.decoding")


def _device(job) -> str:
    from ..training import pick_device

    return str(pick_device(job.device))


#: Defaults of the decoding settings of issue 20 (lmbrain's behaviour; see the module docstring).
def _beam_device(job):
    device = job.decoding.beam_device
    if device is None:
        return None
    from ..training import pick_device

    return str(pick_device(device))


def build_proposer(job: DecoderJob | DecodeJob, model_dir, feature_model_dir=None, device: str = "cpu") -> WordLMProposer:
    """The proposer of a job's ``decoding`` settings: the language model in ``model_dir`` proposes words;
    the features come from it or from ``feature_model_dir`` (``decoding.feature_model``)."""
    from ..models import ModelError, load_model

    dec = job.decoding
    try:
        lm = load_model(model_dir, device=device)
        flm = load_model(feature_model_dir, device=device) if feature_model_dir else lm
    except ModelError as exc:
        raise DecodingError(str(exc)) from None
    if getattr(getattr(lm, "model", None), "kind", "") == "planted":
        raise DecodingError(f"model {lm.name} predicts no words and cannot propose; decode with a language model "
                            "and set decoding.feature_model to it instead")
    return WordLMProposer(lm, decoder_layer(dec.layer, flm), context=dec.context, extensions=dec.extensions,
                          top_p=dec.top_p, min_ratio=dec.min_ratio, feature_lm=flm)


def rate_voxel_sets(job: DecoderJob, ds, subject: str) -> list[np.ndarray]:
    """The word-rate models' voxel sets of ``decoding.rate_rois`` (Tang et al.: one model on the speech
    network, one on auditory cortex, their rates averaged): each group of ROI names is the union of those
    ROIs' voxels (column indices of the subject's responses), from the ``rois`` source of the job.

    Raises
    ------
    DecodingError
        Naming the ROI source, when a group has no voxels or an ROI cannot be read.
    """
    import dataclasses

    from ..rois import RoiError
    from .rois import subject_rois

    groups = [list(g) for g in job.decoding.rate_rois]
    if job.rois is None or not job.rois.enabled:
        raise DecodingError("decoding.rate_rois needs ROIs: set rois.source (pycortex, labels or bids)")
    names = tuple(dict.fromkeys(n for g in groups for n in g))
    try:
        rois = subject_rois(dataclasses.replace(job.rois, names=names), ds, subject, job.dataset.root)
    except RoiError as exc:
        raise DecodingError(f"decoding.rate_rois: {exc}") from None
    sets = []
    for group in groups:
        voxels = np.flatnonzero(np.any([rois[n] for n in group], axis=0))
        if voxels.size == 0:
            raise DecodingError(f"decoding.rate_rois: ROI(s) {', '.join(group)} of subject {subject} ({rois.source}) "
                                "hold no voxels; choose other ROIs or set decoding.rate_rois: null")
        log.info("word-rate model on %s: %d voxels", "+".join(group), voxels.size)
        sets.append(voxels)
    return sets


def decoder(job: DecoderJob, subject: str, model_dir, out_path, feature_model_dir=None) -> Decoder:
    """What the ``decoder`` rule does: fit the decoder of ``subject`` on its training stories and save it
    to ``out_path``. Returns the fitted :class:`~lmbrain.decoding.Decoder`."""
    from ..datasets import stacked_responses

    dec = job.decoding
    device = _device(job)
    ds = open_job_dataset(job.dataset)
    train, _ = split_stories(ds, subject, job.dataset)
    if len(train) < 2:
        raise DecodingError("the decoder needs at least two training stories (its noise model is leave-one-story-out)")
    proposer = build_proposer(job, model_dir, feature_model_dir, device=device)
    log.info("fitting the decoder of %s on %d training stories (layer %d, context %d words)", subject, len(train),
             proposer.layer, proposer.context)
    words, times, tr_times = [], [], []
    for story in train:
        w = ds.words(story)
        words.append(w["word"].astype(str).tolist())
        times.append(w["midpoint"].to_numpy(dtype=np.float64))
        tr_times.append(ds.tr_times(subject, story))
    # the responses in one float32 array (a real subject's training set is several GB)
    responses = stacked_responses(ds, subject, train, [len(t) for t in tr_times], error=DecodingError)
    rate_sets = rate_voxel_sets(job, ds, subject) if dec.rate_rois else None
    model = Decoder(n_voxels=dec.n_voxels, shrinkage=dec.shrinkage, delays=tuple(job.delays), alphas=job.alphas,
                    rate_voxels=dec.rate_voxels, rate_voxel_sets=rate_sets, device=device, search=job.search, memory_gb=job.memory_gb,
                    cv_folds=job.cv_folds,
                    rate_delays_across_stories=bool(job.decoding.rate_delays_across_stories),
                    delays_across_stories=bool(job.delays_across_stories), score=job.score)
    model.fit(responses, tr_times, words, times, proposer)
    log.info("decoder: %d voxels, CV score of the kept voxels median %.3f (min %.3f)", len(model.voxels_),
             float(np.median(model.cv_score_)), float(np.min(model.cv_score_)))
    model.save(out_path)
    return model


def _story_seed(seed: int, story: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(story.encode())) % (2 ** 32)


def transcript_text(actual: pd.DataFrame, decoded: pd.DataFrame, window: float = 20.0) -> str:
    """The actual and decoded words (``word``, ``time`` tables) side by side, in consecutive windows of
    ``window`` s."""
    end = max(float(actual["time"].max()), float(decoded["time"].max()) if len(decoded) else 0.0)
    lines = []
    for s in np.arange(0.0, end + window, window):
        a = actual.loc[(actual["time"] >= s) & (actual["time"] < s + window), "word"]
        d = decoded.loc[(decoded["time"] >= s) & (decoded["time"] < s + window), "word"]
        if len(a) or len(d):
            lines += [f"[{s:6.0f} - {s + window:6.0f} s]", f"  actual : {' '.join(a)}", f"  decoded: {' '.join(d)}", ""]
    return "\n".join(lines)


def idf_documents(ds, subject: str, job, window: float) -> list[str]:
    """The documents of BERTScore's idf: every training story's transcript cut into consecutive windows of
    ``window`` s (the unit the decoded text is scored in)."""
    from ..evaluation import time_windows, window_words

    train, _ = split_stories(ds, subject, job.dataset)
    docs = []
    for story in train:
        w = ds.words(subject, story)
        times = w["midpoint"].to_numpy(dtype=np.float64)
        starts = time_windows(float(times.max()) + window if len(times) else window, window, window)
        docs += [" ".join(ws) for ws in window_words(w["word"].astype(str), times, starts, window) if ws]
    return docs


def decode(job: DecodeJob, subject: str, story: str, model_dir, decoder_path, out_dir, feature_model_dir=None,
           progress: bool = True, observed=None) -> pd.DataFrame:
    """What the ``decode`` rule does for one story: decode, generate the null, score, identify, plot.

    Writes the folder ``out_dir`` (atomically: it appears only when complete) holding ``decoded.tsv``
    (word, time), ``transcript.txt`` (actual and decoded words side by side by window), ``null.tsv``
    (sample, word, time), ``scores.tsv`` (per window: metrics, and per null ``lm``/``shift`` its mean and
    sd, z, p, q), ``summary.tsv`` (per metric and null: story score, null, z, p, fraction of windows
    significant), ``identification.tsv`` (on the responses decoded), ``identification_single.tsv`` (on
    each single presentation, when the story's recorded responses are the mean of repeats; column
    ``repeat``), and the figures ``scores.png`` and ``identification.png`` (with PDFs). The beam is
    checkpointed to ``.<out_dir name>.checkpoint.json`` beside ``out_dir`` (a killed decode resumes from
    it; removed when the search finishes). ``observed``: responses to decode
    instead of the recorded ones (a control: e.g. noise). Returns the summary table.
    """
    from .. import evaluation as ev
    from ..plots import decoding_scores, identification_curve

    dec = job.decoding
    device = _device(job)
    out_dir = Path(out_dir)
    ds = open_job_dataset(job.dataset)
    model = Decoder.load(decoder_path)
    proposer = build_proposer(job, model_dir, feature_model_dir, device=device)
    if proposer.layer != model.layer_:
        raise DecodingError(f"{decoder_path} was fitted on layer {model.layer_}, the config now says "
                            f"{proposer.layer}; rerun the decoder rule")
    words = ds.words(subject, story)
    tr_times = ds.tr_times(subject, story)
    recorded = observed is None
    observed = np.asarray(ds.responses(subject, story) if observed is None else observed, dtype=np.float64)
    if observed.shape[0] != tr_times.size:
        raise DecodingError(f"story {story}: {observed.shape[0]} TRs of responses but {tr_times.size} TR times")
    actual = pd.DataFrame({"word": words["word"].astype(str), "time": words["midpoint"].to_numpy(dtype=np.float64)})
    if dec.word_times == "actual":
        times = actual["time"].to_numpy()
    else:
        times = model.predict_word_times(observed, tr_times, rounding=job.decoding.rate_rounding)
    if len(times) == 0:
        raise DecodingError(f"story {story}: the word-rate model predicts no words; check the responses")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log.info("decoding %s: %d word times over %.0f s, beam width %d", story, len(times), tr_times[-1] - tr_times[0],
             dec.beam_width)
    decoded = model.decode(observed, tr_times, proposer, times=times, beam_width=dec.beam_width, progress=progress,
                           checkpoint=out_dir.parent / f".{out_dir.name}.checkpoint.json",
                           checkpoint_every=dec.checkpoint_every,
                           checkpoint_key=f"{subject}|{story}|{Path(decoder_path).stat().st_mtime_ns}|{to_json(job)}",
                           content_window=job.decoding.content_window,
                           bigram_window=job.decoding.bigram_window, device=_beam_device(job),
                           max_batch_bytes=int(job.decoding.beam_batch_mb) * 2 ** 20)
    found = decoded["word"].tolist()
    decode_s = time.perf_counter() - t0
    minutes = (tr_times[-1] - tr_times[0]) / 60
    log.info("decoded %d words in %.0f s (%.1f s per minute of story)", len(found), decode_s, decode_s / minutes)
    nulls = generate_null(proposer, len(times), dec.null_samples, seed=_story_seed(job.seed, story), progress=progress,
                          content_window=job.decoding.content_window, bigram_window=job.decoding.bigram_window)
    # scoring
    metrics = list(dec.metrics)
    bert = None
    if "bertscore" in metrics:
        idf_docs = idf_documents(ds, subject, job, dec.window) if job.decoding.bertscore_idf else None
        bert = ev.BertScorer(ev.encoder_path(dec.bertscore_model), dec.bertscore_layer, device=device,
                             idf_documents=idf_docs)
    wordnet = ev.wordnet_reader(Path(dec.cache_dir)) if "meteor" in metrics else None
    end = float(tr_times[-1] + np.mean(np.diff(tr_times)) / 2)
    scorer = ev.WindowScorer(actual["word"], actual["time"], end, dec.window, dec.step, metrics, bert, wordnet)
    scored = scorer.score(found, times)
    windows, summary = ev.null_statistics(scored, [scorer.score(s, times) for s in nulls], metrics,
                                          alpha=dec.fdr, name="lm")
    start = float(tr_times[0] - np.mean(np.diff(tr_times)) / 2)
    shifts = ev.shift_offsets(end - start, dec.shift_samples, dec.min_shift, step=dec.step)
    shifted = [scorer.score(found, ev.shifted_times(times, s, start, end)) for s in shifts]
    windows_shift, summary_shift = ev.null_statistics(scored, shifted, metrics, alpha=dec.fdr, name="shift")
    windows = windows.join(windows_shift[[c for c in windows_shift.columns if c.endswith(
        ("_shift_mean", "_shift_std", "_shift_z", "_shift_p", "_shift_q"))]])
    summary = pd.concat([summary, summary_shift], ignore_index=True)
    # identification from the actual words
    feats = word_features(proposer, actual["word"])
    truth = model.predict_responses(feats, tr_times, actual["time"].to_numpy())
    ident = ev.identification(truth, observed[:, model.voxels_], model.precision_, dec.identification_lengths)
    # ...and on every single presentation of a repeated story (the recorded responses only)
    reps = ds.repeats(subject, story, voxels=model.voxels_) if recorded else None
    single = None
    if reps is not None and reps.shape[1:] != truth.shape:
        log.warning("story %s: the single presentations hold %s TRs x voxels, the responses %s; no single-"
                    "presentation identification", story, reps.shape[1:], truth.shape)
    elif reps is not None and len(reps) > 1:
        single = ev.identification_single(truth, reps, model.precision_, dec.identification_lengths)
        for n_trs, part in single.groupby("n_trs"):
            log.info("identification of %d-TR segments: top-1 %.3f on the repeat mean, %.3f +- %.3f on single "
                     "presentations (%d), chance %.3f", n_trs, float(ident.set_index("n_trs").loc[n_trs, "top1"]),
                     part["top1"].mean(), part["top1"].std(ddof=0), len(part), part["chance"].iloc[0])
    summary["decode_seconds"] = decode_s
    summary["seconds_per_story_minute"] = decode_s / minutes
    # outputs, into a folder that appears only when complete
    null_table = pd.concat([pd.DataFrame({"sample": i, "word": s, "time": times}) for i, s in enumerate(nulls)])
    title = f"{subject} {story}"
    with atomic_dir(out_dir) as tmp_dir:
        tmp_dir = Path(tmp_dir)
        tables = [("decoded.tsv", decoded), ("null.tsv", null_table), ("scores.tsv", windows),
                  ("summary.tsv", summary), ("identification.tsv", ident)]
        if single is not None:
            tables.append(("identification_single.tsv", single))
        for name, table in tables:
            with atomic_path(tmp_dir / name) as tmp:
                table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        with atomic_path(tmp_dir / "transcript.txt") as tmp:
            tmp.write_text(transcript_text(actual, decoded, dec.window))
        decoding_scores(windows, summary, metrics, tmp_dir / "scores.png", title=title)
        identification_curve(ident, tmp_dir / "identification.png", title=title)
    for row in summary.itertuples():
        log.info("%s against the %s null: decoded %.4f, null %.4f +- %.4f, z = %.2f, windows significant %.2f",
                 row.metric, row.null, row.decoded, row.null_mean, row.null_std, row.z, row.fraction_significant)
    return summary
