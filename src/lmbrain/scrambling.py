"""In-silico scrambling (Lerner et al. 2011 design; Jain et al. 2023): how much context drives a voxel.

A test story is scrambled by words, sentences or paragraphs (units from pauses: spoken transcripts
carry no punctuation); a language model reads each version; each voxel's predicted response to a
word (through its own best encoding model) is compared with its response to the same word in the
intact story. A voxel whose response depends only on context inside a unit survives scrambling at
that level; one that integrates across units does not. See :func:`scramble_survival`.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .trw import TRWError

log = logging.getLogger("lmbrain.scrambling")

SCRAMBLE_LEVELS = ("word", "sentence", "paragraph")
SCRAMBLE_CLASSES = SCRAMBLE_LEVELS + ("story",)  # coded 0-3 in scramble_class.nii.gz


def segment_units(words: pd.DataFrame, level: str, sentence_gap: float = 0.3, paragraph_gap: float = 0.7) -> np.ndarray:
    """Unit index of every word for a scrambling level.

    Transcripts of spoken stories (TextGrids) carry no punctuation, so units come from the pauses:
    a sentence ends where the silence before the next word is at least ``sentence_gap`` seconds, a
    paragraph where it is at least ``paragraph_gap``. ``word``: every word is a unit. Columns needed:
    ``onset``, ``offset``.
    """
    if level not in SCRAMBLE_LEVELS:
        raise TRWError(f"scrambling level must be one of {', '.join(SCRAMBLE_LEVELS)}, not {level!r}")
    n = len(words)
    if level == "word":
        return np.arange(n)
    if not 0 < sentence_gap <= paragraph_gap:
        raise TRWError("need 0 < sentence_gap <= paragraph_gap")
    gaps = words["onset"].to_numpy()[1:] - words["offset"].to_numpy()[:-1]
    cut = gaps >= (sentence_gap if level == "sentence" else paragraph_gap)
    return np.concatenate([[0], np.cumsum(cut)])


def scramble(words: pd.DataFrame, level: str, seed: int = 0, sentence_gap: float = 0.3,
             paragraph_gap: float = 0.7) -> pd.DataFrame:
    """The story with its units (words, sentences or paragraphs) in a random order.

    Every word keeps its duration; the silences of the original story stay where they were in the
    sequence (the k-th gap of the scrambled story is the k-th gap of the original), so the scrambled
    story has the original length and speech rate. Returns ``word``, ``onset``, ``offset``,
    ``midpoint`` and ``source`` (the word's index in the intact story).
    """
    unit = segment_units(words, level, sentence_gap, paragraph_gap)
    n_units = int(unit.max()) + 1 if len(unit) else 0
    order = np.random.default_rng(seed).permutation(n_units)
    starts = np.searchsorted(unit, np.arange(n_units))
    ends = np.append(starts[1:], len(unit))
    src = np.concatenate([np.arange(starts[u], ends[u]) for u in order]) if n_units else np.array([], int)
    onset = words["onset"].to_numpy(dtype=np.float64)
    offset = words["offset"].to_numpy(dtype=np.float64)
    dur = offset - onset
    gaps = np.append(onset[1:] - offset[:-1], 0.0)
    new_on = np.empty(len(src))
    t = onset[0] if len(src) else 0.0
    for j, i in enumerate(src):
        new_on[j] = t
        t += dur[i] + gaps[j]
    out = pd.DataFrame({"word": words["word"].to_numpy()[src], "onset": new_on, "offset": new_on + dur[src]})
    out["midpoint"] = (out["onset"] + out["offset"]) / 2
    out["source"] = src
    return out


class SurvivalSums:
    """Running sums over words of one scrambled prediction against the intact one, per voxel.

    ``add(intact, scrambled)`` takes matched ``(n, n_voxels)`` rows (any number of calls, e.g. one per
    story); ``result()`` gives the correlation of scrambled with intact prediction (0 where either is
    constant) and the variance ratio scrambled / intact (NaN where the intact prediction is constant).
    Values are shifted by the first intact mean so the sums stay well conditioned.
    """

    def __init__(self):
        self.n = 0
        self.shift = None

    def add(self, intact, scrambled):
        intact = np.asarray(intact, dtype=np.float64)
        scrambled = np.asarray(scrambled, dtype=np.float64)
        if scrambled.shape != intact.shape or intact.ndim != 2:
            raise TRWError(f"scrambled predictions {scrambled.shape} must match the intact ones {intact.shape}")
        if self.shift is None:
            self.shift = intact.mean(axis=0)
            self.sums = np.zeros((5, intact.shape[1]))
        i, s = intact - self.shift, scrambled - self.shift
        self.sums += np.stack([i.sum(0), (i * i).sum(0), s.sum(0), (s * s).sum(0), (s * i).sum(0)])
        self.n += intact.shape[0]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.n:
            raise TRWError("no predictions were added")
        mi, mii, ms, mss, msi = self.sums / self.n
        var_i = np.clip(mii - mi * mi, 0, None)
        var_s = np.clip(mss - ms * ms, 0, None)
        den = np.sqrt(var_i * var_s)
        r = np.divide(msi - ms * mi, den, out=np.zeros_like(den), where=den > 0)
        ratio = np.divide(var_s, var_i, out=np.full_like(den, np.nan), where=var_i > 0)
        return np.clip(r, -1, 1), ratio


def survival(intact: np.ndarray, scrambled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How much of a voxel's intact predicted response survives scrambling.

    intact: ``(n, n_voxels)``; scrambled: ``(n_seeds, n, n_voxels)`` (rows matched: the same words).
    Returns the correlation of scrambled with intact prediction and the variance ratio (scrambled /
    intact), each averaged over seeds: ``(n_voxels,)`` twice (see :class:`SurvivalSums`).
    """
    scrambled = np.asarray(scrambled, dtype=np.float64)
    if scrambled.ndim != 3:
        raise TRWError(f"scrambled predictions must be (seeds, n, voxels), got {scrambled.shape}")
    results = []
    for s in scrambled:
        acc = SurvivalSums()
        acc.add(intact, s)
        results.append(acc.result())
    return np.mean([r for r, _ in results], axis=0), np.mean([q for _, q in results], axis=0)


def scramble_summary(survival_by_level: dict, threshold: float = 0.7) -> pd.DataFrame:
    """TRW class and continuous index from the survival correlation at each level.

    ``survival_by_level``: ``{"word": (V,), "sentence": (V,), "paragraph": (V,)}``. The class is the
    finest level whose scrambling the voxel's predicted response survives (correlation >= threshold):
    ``word`` if it survives word scrambling, else ``sentence``, else ``paragraph``, else ``story``.
    The index is ``1 - mean survival`` over the levels (0 = unaffected by scrambling, 1 = destroyed).
    """
    missing = [lv for lv in SCRAMBLE_LEVELS if lv not in survival_by_level]
    if missing:
        raise TRWError(f"survival missing for level(s) {', '.join(missing)}")
    s = np.stack([np.asarray(survival_by_level[lv], dtype=np.float64) for lv in SCRAMBLE_LEVELS])
    cls = np.full(s.shape[1], "story", dtype=object)
    for i in range(len(SCRAMBLE_LEVELS) - 1, -1, -1):
        cls = np.where(s[i] >= threshold, SCRAMBLE_LEVELS[i], cls)
    return pd.DataFrame({"scramble_index": 1 - np.clip(s, -1, 1).mean(axis=0), "scramble_class": cls})


def unit_lengths(stories_words, sentence_gap: float = 0.3, paragraph_gap: float = 0.7) -> dict:
    """Median number of words per scrambling unit (word, sentence, paragraph) over the given stories."""
    out = {}
    for level in SCRAMBLE_LEVELS:
        sizes = np.concatenate([np.bincount(segment_units(w, level, sentence_gap, paragraph_gap))
                                for w in stories_words])
        out[level] = float(np.median(sizes))
    return out


def read_word_features(lm, words: pd.DataFrame, ks, layer: int, kind: str, state_context: int | None = None,
                       windows=None) -> dict:
    """``{k: (n_words, n_features) float64}``: the feature ``kind`` at ``layer`` of every word of ``words``
    (a word table) read by ``lm`` at each context length of ``ks`` (:func:`lmbrain.features.extract_in_memory`;
    ``windows``: its :class:`lmbrain.features.WindowCache`)."""
    from .features import extract_in_memory

    state = kind in ("hidden", "pooled")
    name = f"{kind}/layer_{layer}" if state else f"attention/layer_{layer}/{kind}"
    f = extract_in_memory(lm, [str(w) for w in words["word"]], ks, layers=[layer], attention=not state,
                          pooled=kind == "pooled", state_context=state_context, windows=windows)
    return {k: f[k][name].reshape(len(words), -1).astype(np.float64) for k in ks}


def scrambled_versions(lm, layer: int, kind: str, words: pd.DataFrame, ks, seeds: int = 3, seed: int = 0,
                       sentence_gap: float = 0.3, paragraph_gap: float = 0.7, state_context: int | None = None):
    """The story and its scrambled versions as ``lm`` reads them, one version at a time.

    Yields ``(version, {k: (n_words, n_features) float64})``: first ``("intact", 0)``, then ``(level,
    s)`` for each level of :data:`SCRAMBLE_LEVELS` and ``s`` in ``range(seeds)`` (scrambled with seed
    ``seed + s``, :func:`scramble`). Every version's rows are in the intact story's word order, so row
    ``i`` is always the same word: its features in the scrambled context. These depend on the story and
    the model only, so subjects who heard the same story can share them (the workflow's
    ``scrambled_features`` rule).

    A scrambled version's word whose window lies inside one unit reads the same words as in the
    intact story, so the model's passes over such windows are taken from the intact story's
    (:class:`lmbrain.features.WindowCache`) instead of run again: the same features up to float32
    rounding. With a model that reads each word from at most ``state_context`` words, many of a
    sentence version's windows and most of a paragraph version's are such windows (SmolLM2's 16-word
    passes on the demo's test story: ~40% and ~70%); a window that repeats a run of words the story
    holds elsewhere is read from there too.
    """
    from .features import WindowCache

    ks = [int(k) for k in ks]
    windows = WindowCache()
    yield ("intact", 0), read_word_features(lm, words, ks, layer, kind, state_context, windows)
    windows.record = False  # later versions read the intact story's passes; their own are not kept
    for lv in SCRAMBLE_LEVELS:
        for sd in range(seeds):
            scr = scramble(words, lv, seed=seed + sd, sentence_gap=sentence_gap, paragraph_gap=paragraph_gap)
            Fs = read_word_features(lm, scr, ks, layer, kind, state_context, windows)
            src = scr["source"].to_numpy()
            aligned = {}
            for k in ks:  # back to the intact word order
                aligned[k] = np.empty_like(Fs[k])
                aligned[k][src] = Fs[k]
            yield (lv, sd), aligned


def scramble_survival(lm, layer: int, kind: str, stories, weights: dict, k_best, seeds: int = 3, seed: int = 0,
                      sentence_gap: float = 0.3, paragraph_gap: float = 0.7, threshold: float = 0.7,
                      progress: bool = False, label: str = "", state_context: int | None = None) -> pd.DataFrame:
    """In-silico scrambling: how much of each voxel's predicted response to a word survives scrambling.

    Each story is scrambled at the word, sentence and paragraph level (``seeds`` seeds each, seeded
    ``seed, seed + 1, ...``; units from pauses, see :func:`segment_units`) and read by the language
    model ``lm`` at every context length used (:func:`scrambled_versions`); then
    :func:`survival_from_versions`. See there for the comparison.

    Parameters
    ----------
    lm : lmbrain.models.LanguageModel
    layer : int
        The feature layer (resolved, >= 0).
    kind : str
        ``hidden``, ``pooled``, ``heads``, ``entropy`` or ``distance``.
    stories : iterable of (name, words, tr_times)
        The test stories: their word tables (``word``, ``onset``, ``offset``, ``midpoint``) and TR times.
    weights, k_best, threshold, progress, label
        As for :func:`survival_from_versions`.
    seeds, seed, sentence_gap, paragraph_gap
        Scrambles per level, base seed, pause lengths (s) ending a sentence / a paragraph.
    state_context : int or None
        The model's ``state_context`` (:func:`lmbrain.features.iter_features`), as for its features.
    """
    used = sorted(int(k) for k in weights)
    versions = ((name, words, tr_times,
                 scrambled_versions(lm, layer, kind, words, used, seeds=seeds, seed=seed, sentence_gap=sentence_gap,
                                    paragraph_gap=paragraph_gap, state_context=state_context))
                for name, words, tr_times in stories)
    return survival_from_versions(versions, weights, k_best, seeds=seeds, threshold=threshold, progress=progress,
                                  label=label)


def survival_from_versions(stories, weights: dict, k_best, seeds: int = 3, threshold: float = 0.7,
                           progress: bool = False, label: str = "") -> pd.DataFrame:
    """Each voxel's predicted response to a word in scrambled stories against the intact story.

    A voxel's predicted response to a word is the word's features at the voxel's own best context
    length ``k_best`` (chosen by cross-validation) read through the voxel's encoding weights fitted at
    that k (summed over delays, with the same per-column scaling as the design): the voxel's best
    encoding model, so a short-window voxel is not judged through a long-context model it does not
    prefer. Scrambling moves words in time, so the comparison is made word by word, each scrambled
    word matched to the same word in the intact story. Statistics are accumulated story by story
    (memory: two words x voxels arrays).

    Parameters
    ----------
    stories : iterable of (name, words, tr_times, versions)
        The test stories: word tables (``midpoint`` is used), TR times, and an iterable of ``(version,
        {k: (n_words, n_features)})`` as :func:`scrambled_versions` yields it (intact first, rows in the
        intact word order; at least the context lengths of ``weights``).
    weights : dict
        ``{k: (n_features, n_voxels_k)}`` encoding weights summed over delays, for the voxels whose
        ``k_best`` is k (in voxel order).
    k_best : array of int, shape (n_voxels,)
    seeds : int
        Scrambled versions per level each story must have.
    threshold : float
        Survival correlation a voxel must keep for its class (:func:`scramble_summary`).

    Returns
    -------
    pandas.DataFrame
        Per voxel: ``survival_<level>`` (correlation over words of scrambled with intact predicted
        responses, mean over seeds), ``variance_<level>`` (variance ratio), ``scramble_index`` and
        ``scramble_class`` (``none``, with NaN survival, where the voxel's weights on the features are all
        zero: a banded model that switched the feature's band off).
    """
    from .io import progress_bar as tqdm
    from .stimulus import downsample

    k_best = np.asarray(k_best, dtype=np.int64)
    used = sorted(int(k) for k in weights)
    groups = {k: np.flatnonzero(k_best == k) for k in used}
    missing = sorted(set(np.unique(k_best).tolist()) - set(used))
    if missing:
        raise TRWError(f"no encoding weights for the context length(s) {missing} some voxels prefer")

    def predict(F, scale):
        out = np.empty((F[used[0]].shape[0], k_best.size))
        for k in used:
            out[:, groups[k]] = np.asarray(F[k], dtype=np.float64) @ (weights[k] / scale[k][:, None])
        return out

    stories = list(stories)
    expected = [("intact", 0)] + [(lv, sd) for lv in SCRAMBLE_LEVELS for sd in range(seeds)]
    acc = {(lv, sd): SurvivalSums() for lv in SCRAMBLE_LEVELS for sd in range(seeds)}
    bar = tqdm(total=len(stories) * len(expected), desc=f"scrambling {label}".strip(), unit="version",
               disable=not progress)
    for story, words, tr_times, versions in stories:
        seen = []
        for version, F in versions:
            version = (str(version[0]), int(version[1]))
            absent = [k for k in used if k not in F]
            if absent:
                raise TRWError(f"story {story}, version {version}: no features at context length(s) {absent}")
            if version == ("intact", 0):
                scale = {}
                for k in used:
                    if weights[k].shape[0] != F[k].shape[1]:
                        raise TRWError(f"k={k}: weights for {weights[k].shape[0]} features per delay, "
                                       f"the model gives {F[k].shape[1]}")
                    std = downsample(np.asarray(F[k], dtype=np.float64), words["midpoint"].to_numpy(), tr_times).std(axis=0)
                    scale[k] = np.where(std > 0, std, np.inf)
                intact = predict(F, scale)
            elif not seen or version not in acc:
                raise TRWError(f"story {story}: version {version} {'before the intact story' if not seen else 'is not expected'}"
                               f" (expected {', '.join(map(str, expected))})")
            else:
                acc[version].add(intact, predict(F, scale))
            seen.append(version)
            bar.update()
        if seen != expected:
            raise TRWError(f"story {story}: scrambled versions {seen}, expected {expected}")
        log.info("scrambling %s: %d words, %d seeds per level, context lengths %s", story, len(words), seeds, used)
    bar.close()
    out, surv = {}, {}
    for lv in SCRAMBLE_LEVELS:
        results = [acc[(lv, sd)].result() for sd in range(seeds)]
        out[f"survival_{lv}"] = surv[lv] = np.mean([r for r, _ in results], axis=0)
        out[f"variance_{lv}"] = np.mean([q for _, q in results], axis=0)
    summary = scramble_summary(surv, threshold=threshold)
    table = pd.DataFrame(out)
    table["scramble_index"] = summary["scramble_index"].to_numpy()
    table["scramble_class"] = summary["scramble_class"].to_numpy()
    # a voxel whose weights on these features are all zero (a banded model that switched the band off)
    # has a constant prediction: nothing to scramble, no class
    flat = np.all([np.isnan(out[f"variance_{lv}"]) for lv in SCRAMBLE_LEVELS], axis=0)
    if flat.any():
        table.loc[flat, [f"survival_{lv}" for lv in SCRAMBLE_LEVELS] + ["scramble_index"]] = np.nan
        table.loc[flat, "scramble_class"] = "none"
        log.info("scrambling: %d voxels have no weight on the features (constant prediction): class none", flat.sum())
    return table
