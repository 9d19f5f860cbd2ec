"""Readers for story-listening fMRI datasets: the LeBel et al. 2023 release and BIDS.

Public API (used by outside scripts)::

    ds = open_dataset("lebel2023", "/data/ds003020")
    ds.subjects                      # ['UTS01', ...]
    ds.stories("UTS01")              # story names with responses for that subject
    ds.words("wheretheressmoke")     # DataFrame: word, onset, offset, midpoint (s)
    ds.responses("UTS01", "wheretheressmoke")   # float32 (TRs, voxels)
    ds.tr_times("wheretheressmoke")  # float64 (TRs,), seconds from audio onset, one per response row

Responses load as float32 without a float64 copy of the whole matrix; ``voxels=`` reads a
slice of columns, so a 95k-voxel subject can be processed in voxel batches. NaN values are
replaced by 0 and reported (a :class:`~lmbrain.LmbrainWarning` naming the file);
:meth:`Dataset.invalid_voxels` tells which voxels were NaN or constant so that scoring can
exclude them.

Malformed inputs give a :class:`DatasetError` (or, where the data stay usable, a
:class:`~lmbrain.LmbrainWarning`) naming the file, and the story or subject where that helps;
story and subject names must be plain names (no path separators, not ``.``/``..``, not empty).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from . import LmbrainError, LmbrainWarning
from .stimulus import lebel_response_times, lebel_stimulus_times, read_textgrid, zscore
from .textgrid import NON_WORDS, NON_WORDS_HUTH
from .volume import VoxelSpace

LAYOUTS = ("lebel2023", "bids")

#: Largest plausible repetition time (s); a larger one is almost always milliseconds read as seconds.
MAX_TR = 100.0

#: Largest plausible ``respdict.json`` TR count of one story (about 55 h at TR = 2 s; the LeBel
#: release has 177..541).
MAX_STORY_TRS = 100_000

#: Smallest ``respdict.json`` TR count: the responses have ``respdict - 20`` rows, at least one.
MIN_STORY_TRS = 21


class DatasetError(LmbrainError, ValueError):
    """The dataset is missing something or holds something malformed; the message names the file."""


#: The word-tier label sets of the config key ``dataset.non_words``: ``lmbrain`` (:data:`NON_WORDS`, also
#: ``sl``, ``cg``, ``ig`` and empty intervals) and ``huth`` (:data:`NON_WORDS_HUTH`, the reference code's 7).
NON_WORD_SETS = {"lmbrain": NON_WORDS, "huth": NON_WORDS_HUTH}


def non_word_labels(name: str) -> frozenset:
    """The labels of a ``dataset.non_words`` setting (:data:`NON_WORD_SETS`)."""
    try:
        return NON_WORD_SETS[name]
    except KeyError:
        raise DatasetError(f"dataset.non_words = {name!r}: use one of {', '.join(NON_WORD_SETS)}") from None


def open_dataset(layout: str, root: str | os.PathLike, tr: float = 2.0,
                 non_words: Iterable[str] = NON_WORDS) -> "Dataset":
    """Open a dataset of the given layout (``"lebel2023"`` or ``"bids"``) rooted at ``root``.

    Parameters
    ----------
    layout : {"lebel2023", "bids"}
    root : str or os.PathLike
        The dataset folder.
    tr : float
        Repetition time (s): lebel2023's, and BIDS's fallback when neither the NIfTI header nor
        the JSON sidecar gives one.
    non_words : collection of str
        Word-tier labels that :meth:`Dataset.words` drops: :data:`lmbrain.textgrid.NON_WORDS`
        (lmbrain's default) or :data:`lmbrain.textgrid.NON_WORDS_HUTH` (the Huth lab's reference
        code's 7 labels).
    """
    if layout == "lebel2023":
        return Lebel2023Dataset(root, tr=tr, non_words=non_words)
    if layout == "bids":
        return BidsDataset(root, tr=tr, non_words=non_words)
    raise DatasetError(f"unknown dataset layout {layout!r}: use one of {', '.join(LAYOUTS)} (config key dataset.layout)")


VoxelSelection = slice | np.ndarray | list | None


def _as_selection(voxels: VoxelSelection, n: int, source: str = ""):
    """``voxels`` as an index for ``n`` columns: None (all), a slice with a positive step, increasing
    integer indices in ``[0, n)``, or a boolean mask of length ``n``; else a DatasetError (naming ``source``)."""
    where = f"{source}: " if source else ""
    if voxels is None:
        return slice(None)
    if isinstance(voxels, slice):
        if voxels.step is not None and (not isinstance(voxels.step, (int, np.integer)) or voxels.step < 1):
            raise DatasetError(f"{where}a voxel slice needs a positive whole step, got {voxels!r}")
        return voxels
    idx = np.asarray(voxels)
    if idx.ndim != 1:
        raise DatasetError(f"{where}voxels must be a 1-D list of indices or a boolean mask, got an array of shape {idx.shape}")
    if idx.dtype == bool:
        if idx.size != n:
            raise DatasetError(f"{where}a boolean voxel mask needs {n} entries (one per voxel), got {idx.size}")
        idx = np.flatnonzero(idx)
    elif idx.size and idx.dtype.kind not in "iu":
        raise DatasetError(f"{where}voxel indices must be whole numbers, got {idx.dtype} values")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise DatasetError(f"{where}voxel indices out of range [0, {n})")
    if np.any(np.diff(idx) <= 0):
        raise DatasetError(f"{where}voxel indices must be strictly increasing")
    return idx.astype(np.intp, copy=False)


def _clean(data: np.ndarray, source: str) -> np.ndarray:
    """Replace NaN/inf by 0 in place and warn, naming ``source``."""
    bad = ~np.isfinite(data)
    if bad.any():
        cols = int(bad.any(axis=0).sum()) if data.ndim == 2 else int(bad.sum())
        warnings.warn(
            f"{source}: {int(bad.sum())} NaN/inf values in {cols} voxels were replaced by 0; "
            "those voxels are excluded from scoring",
            LmbrainWarning,
            stacklevel=3,
        )
        data[bad] = 0
    return data


def _plain_name(name, what: str, root) -> str:
    """``name`` if it is a plain file name (a story or subject), else a DatasetError.

    Names become parts of paths (``<story>.TextGrid``), so ``"../x"`` would read outside the dataset.
    """
    if not isinstance(name, str):
        raise DatasetError(f"{root}: a {what} name must be a string, not {type(name).__name__} ({name!r})")
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise DatasetError(f"{root}: {what} name {name!r} is not a plain name: it must be non-empty, contain no "
                           "path separator ('/' or '\\') and not be '.' or '..'")
    return name


def _read_json(path: Path, what: str):
    """A JSON file's value; a DatasetError naming ``path`` when it cannot be read or parsed."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: {what} is not UTF-8 text (byte {exc.start}: {exc.reason}); JSON files must be "
                           "UTF-8: re-save it as UTF-8") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:  # json.loads would keep the last value silently
            raise DatasetError(f"{path}: the key {twice[0]!r} appears more than once in one JSON object; which value "
                               "is meant is ambiguous: keep one")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None


def _same_words(a: pd.DataFrame, b: pd.DataFrame, atol: float = 1e-3) -> str | None:
    """How two word tables differ (``None`` when they hold the same words at the same times, to ``atol`` s)."""
    if len(a) != len(b):
        return f"{len(a)} words against {len(b)}"
    diff = np.flatnonzero(a["word"].to_numpy() != b["word"].to_numpy())
    if diff.size:
        i = int(diff[0])
        return f"word {i + 1} is {a['word'].iloc[i]!r} against {b['word'].iloc[i]!r}"
    for col in ("onset", "offset"):
        gap = np.abs(a[col].to_numpy() - b[col].to_numpy())
        if gap.size and gap.max() > atol:
            i = int(gap.argmax())
            return f"word {i + 1} ({a['word'].iloc[i]!r}) has {col} {a[col].iloc[i]:g} s against {b[col].iloc[i]:g} s"
    return None


def _check_word_times(words: pd.DataFrame, end: float, source: str, scan: str) -> None:
    """Refuse a word table that lies wholly after ``end`` (s), the end of the scan; warn when some words do."""
    late = words["onset"].to_numpy() > end
    if late.all():
        raise DatasetError(f"{source}: every word starts after the end of the scan ({scan}: {end:g} s; first word at "
                           f"{words['onset'].iloc[0]:g} s): are the word times in milliseconds, or is this another "
                           "story's word file?")
    if late.any():
        warnings.warn(f"{source}: {int(late.sum())} of {len(words)} words start after the end of the scan ({scan}: "
                      f"{end:g} s; the last at {words['onset'].max():g} s); they cannot affect any response",
                      LmbrainWarning, stacklevel=3)


class Dataset:
    """Common interface; see the module docstring. Subclasses implement the file access."""

    layout: str = ""

    def __init__(self, root: str | os.PathLike, tr: float = 2.0, non_words: Iterable[str] = NON_WORDS):
        self.root = Path(root)
        if isinstance(tr, bool) or not isinstance(tr, (int, float, np.integer, np.floating)) or not (0 < float(tr) <= MAX_TR):
            raise DatasetError(f"tr = {tr!r}: the repetition time must be a number of seconds in (0, {MAX_TR:g}] "
                               "(config key tr; 2.0 for the LeBel et al. data)")
        self.tr = float(tr)
        from .textgrid import _non_word_set

        try:
            self.non_words = _non_word_set(non_words)
        except TypeError as exc:
            raise DatasetError(f"non_words: {exc}") from None
        if not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "not found"
            raise DatasetError(f"{self.root}: dataset root {what} (config key dataset.root)")

    # -- to implement -------------------------------------------------------------------------
    @property
    def subjects(self) -> list[str]:
        raise NotImplementedError

    def stories(self, subject: str) -> list[str]:
        raise NotImplementedError

    def words(self, subject_or_story: str, story: str | None = None) -> pd.DataFrame:
        """A story's words: ``ds.words(subject, story)`` (the argument order of :meth:`responses`), or
        ``ds.words(story)`` where the transcript does not depend on the subject (LeBel et al. 2023).

        Returns a DataFrame with columns ``word``, ``onset``, ``offset``, ``midpoint`` (s from audio onset).
        """
        subject, story = (None, subject_or_story) if story is None else (subject_or_story, story)
        return self._words(story, subject)

    def tr_times(self, subject_or_story: str, story: str | None = None) -> np.ndarray:
        """Times (s from audio onset) of a story's response rows: ``ds.tr_times(subject, story)`` or
        ``ds.tr_times(story)`` (as :meth:`words`)."""
        subject, story = (None, subject_or_story) if story is None else (subject_or_story, story)
        return self._tr_times(story, subject)

    def phones(self, subject_or_story: str, story: str | None = None,
               include_silence: bool = False) -> pd.DataFrame | None:
        """A story's phone intervals (:func:`lmbrain.stimulus.read_phones`: ``phone``, ``onset``, ``offset``,
        ``midpoint``), or None when its transcript has no phone tier (a word table, or a TextGrid with a
        single tier that is not named like a phone tier). Arguments as :meth:`words`."""
        subject, story = (None, subject_or_story) if story is None else (subject_or_story, story)
        path = self._transcript(story, subject)
        if path is None or path.suffix != ".TextGrid":
            return None
        from . import textgrid as _tg
        from .stimulus import read_phones

        grid = _tg.read(path, strict=False)
        named = any(_tg._named(t.name, _tg.PHONE_TIER_NAMES) for t in grid.tiers)
        if not named and sum(t.kind == "IntervalTier" for t in grid.tiers) < 2:
            return None
        return read_phones(path, include_silence=include_silence)

    def _transcript(self, story: str, subject: str | None) -> Path | None:
        """The file the story's words are read from (None where there is none)."""
        return None

    def _words(self, story: str, subject: str | None) -> pd.DataFrame:
        raise NotImplementedError

    def _tr_times(self, story: str, subject: str | None) -> np.ndarray:
        raise NotImplementedError

    def responses(self, subject: str, story: str, voxels: VoxelSelection = None) -> np.ndarray:
        raise NotImplementedError

    def repeats(self, subject: str, story: str, voxels: VoxelSelection = None) -> np.ndarray | None:
        raise NotImplementedError

    def n_voxels(self, subject: str) -> int:
        raise NotImplementedError

    def voxel_space(self, subject: str) -> VoxelSpace | None:
        raise NotImplementedError

    # -- the files behind the data (a workflow's inputs: a job reruns when one of them changes) ------
    def word_files(self, story: str) -> list[Path]:
        """The files ``story``'s word timings come from (those of every subject's runs where the layout
        has them per run): what a job that reads only the story's words (:meth:`words` without a
        subject) depends on. Only files that exist, in a stable order."""
        raise NotImplementedError

    def files(self, subject: str, story: str) -> list[Path]:
        """Every file behind ``subject``'s responses, repeats, TR times and word timings of ``story``.
        Only files that exist, in a stable order."""
        raise NotImplementedError

    def grid_files(self, subject: str) -> list[Path]:
        """The files that give ``subject``'s voxel grid (:meth:`voxel_space`, and the pycortex surface
        where the layout has one); a :class:`DatasetError` where a required one is missing."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def _check_subject(self, subject: str) -> None:
        _plain_name(subject, "subject", self.root)
        if subject not in self.subjects:
            hint = ""
            if subject.startswith("sub-") and subject[4:] in self.subjects:
                hint = f" (subjects are named without the 'sub-' prefix: use {subject[4:]!r})"
            raise DatasetError(
                f"{self.root}: no subject {subject!r} in this {self.layout} dataset; "
                f"subjects present: {', '.join(self.subjects) or 'none'}{hint}"
            )

    def _check_story(self, subject: str, story: str) -> None:
        self._check_subject(subject)
        _plain_name(story, "story", self.root)
        available = self.stories(subject)
        if story not in available:
            raise DatasetError(
                f"{self.root}: subject {subject} has no story {story!r} "
                f"({len(available)} stories present: {', '.join(available[:12])}{' ...' if len(available) > 12 else ''})"
            )

    def invalid_voxels(self, subject: str, story: str) -> np.ndarray:
        """Boolean (n_voxels,): voxels that are NaN anywhere or constant over the story."""
        data = self._raw_responses(subject, story)
        bad = ~np.isfinite(data).all(axis=0)
        finite = np.where(np.isfinite(data), data, 0)
        bad |= finite.std(axis=0, dtype=np.float64) <= 1e-6
        return bad

    def _raw_responses(self, subject: str, story: str) -> np.ndarray:
        raise NotImplementedError

    def split(self, subject: str, train: str | list[str], test: list[str]) -> tuple[list[str], list[str]]:
        """Resolve the configured train/test stories for a subject (``train="all"`` = all but test).

        ``train`` is ``"all"`` or a list of story names, ``test`` a list of story names; a story
        listed twice (it would be stacked twice), a bare string instead of a list, or a name that
        is not a string is a :class:`DatasetError`.
        """
        self._check_subject(subject)
        for key, names in (("stories.test", test), ("stories.train", None if train == "all" else train)):
            if names is None:
                continue
            if isinstance(names, str) or not isinstance(names, (list, tuple)):
                allowed = "'all' or a list of story names" if key == "stories.train" else "a list of story names"
                raise DatasetError(f"config key {key}: expected {allowed}, got {names!r}")
            bad = [s for s in names if not isinstance(s, str)]
            if bad:
                raise DatasetError(f"config key {key}: story names must be strings, got {bad[0]!r}")
            twice = sorted({s for s in names if names.count(s) > 1})
            if twice:
                raise DatasetError(f"config key {key}: {', '.join(twice)} listed more than once")
        available = set(self.stories(subject))
        missing_test = [s for s in test if s not in available]
        if missing_test:
            raise DatasetError(
                f"{self.root}: subject {subject} lacks test stor{'y' if len(missing_test) == 1 else 'ies'} "
                f"{', '.join(missing_test)} (config key stories.test)"
            )
        if train == "all":
            train_list = sorted(available - set(test))
        else:
            missing = [s for s in train if s not in available]
            if missing:
                raise DatasetError(
                    f"{self.root}: subject {subject} lacks training stor{'y' if len(missing) == 1 else 'ies'} "
                    f"{', '.join(missing)} (config key stories.train; use 'all' to take what each subject has)"
                )
            train_list = list(train)
        overlap = sorted(set(train_list) & set(test))
        if overlap:
            raise DatasetError(f"stories {', '.join(overlap)} are both training and test stories (config key stories)")
        if not train_list:
            raise DatasetError(f"subject {subject} has no training stories left after removing the test stories")
        return train_list, list(test)


# ------------------------------------------------------------------------------------------
class Lebel2023Dataset(Dataset):
    """The OpenNeuro ds003020 release (LeBel et al. 2023), layout as released.

    ``root`` is the dataset folder holding ``derivative/`` (or the ``derivative`` folder itself).

    Checks (each a :class:`DatasetError` naming the file): ``respdict.json`` must be UTF-8 JSON
    mapping each story to a whole number of TRs from 21 to 100,000; ``data`` must be a 2-D HDF5
    dataset of real numbers with ``respdict - 20`` rows; ``individual_repeats`` a 3-D one whose
    TRs and voxels match ``data``; every story of a subject must have the same number of voxels;
    ``surface.json`` must be a JSON object naming a pycortex ``subject`` and ``xfm``; a
    ``mask_thick.nii.gz`` must be readable, 3-D and non-empty. :meth:`words` refuses a TextGrid
    whose words all start after the end of the scan and warns when some do.
    """

    layout = "lebel2023"

    def __init__(self, root, tr: float = 2.0, non_words: Iterable[str] = NON_WORDS):
        super().__init__(root, tr, non_words)
        deriv = self.root / "derivative"
        if not deriv.is_dir() and (self.root / "preprocessed_data").is_dir():
            deriv = self.root
        self.derivative = deriv
        self.preproc = deriv / "preprocessed_data"
        self.textgrids = deriv / "TextGrids"
        if not self.preproc.is_dir():
            raise DatasetError(
                f"{self.root}: not a lebel2023 dataset: expected {self.preproc} "
                "(derivative/preprocessed_data/<SUBJECT>/<story>.hf5); check dataset.root and dataset.layout"
            )
        respdict_path = deriv / "respdict.json"
        if not respdict_path.exists():
            raise DatasetError(f"{respdict_path}: respdict.json not found (story -> number of TRs)")
        respdict = _read_json(respdict_path, "respdict.json")
        if not isinstance(respdict, dict):
            raise DatasetError(f"{respdict_path}: expected a mapping of story name to an integer TR count, "
                               f"got a JSON {type(respdict).__name__}")
        for story, n in respdict.items():
            if isinstance(n, bool) or not isinstance(n, int):
                raise DatasetError(f"{respdict_path}: story {story!r}: the TR count must be a whole number, "
                                   f"got {n!r} ({type(n).__name__})")
            if not MIN_STORY_TRS <= n <= MAX_STORY_TRS:
                why = (f"too few: the responses have respdict - 20 rows, so at least {MIN_STORY_TRS} TRs are needed"
                       if n < MIN_STORY_TRS else
                       f"implausible for one story (more than {MAX_STORY_TRS:,}; the LeBel release has 177..541)")
                raise DatasetError(f"{respdict_path}: story {story!r}: {n} TRs is {why}")
        self.respdict: dict[str, int] = respdict
        self._n_voxels: dict[str, int] = {}

    @property
    def subjects(self) -> list[str]:
        return sorted(p.name for p in self.preproc.iterdir() if p.is_dir())

    def stories(self, subject: str) -> list[str]:
        self._check_subject(subject)
        return sorted(p.stem for p in (self.preproc / subject).glob("*.hf5"))

    def _hf5(self, subject: str, story: str) -> Path:
        self._check_story(subject, story)
        return self.preproc / subject / f"{story}.hf5"

    def _textgrid(self, story: str) -> Path:
        _plain_name(story, "story", self.root)
        return self.textgrids / f"{story}.TextGrid"

    def word_files(self, story: str) -> list[Path]:
        path = self._textgrid(story)
        return [path] if path.exists() else []

    def files(self, subject: str, story: str) -> list[Path]:
        return [self._hf5(subject, story), *self.word_files(story), self.derivative / "respdict.json"]

    def grid_files(self, subject: str) -> list[Path]:
        mask = self._mask_file(subject)
        surface = self.derivative / "pycortex-db" / subject / "surface.json"
        return [p for p in (mask, surface) if p is not None and p.exists()]

    def _mask_file(self, subject: str) -> Path | None:
        """``derivative/pycortex-db/<SUBJECT>/**/mask_thick.nii.gz`` (the first in sorted order), if any."""
        _plain_name(subject, "subject", self.root)
        db = self.derivative / "pycortex-db" / subject
        masks = sorted(db.rglob("mask_thick.nii.gz")) if db.is_dir() else []
        return masks[0] if masks else None

    def _transcript(self, story: str, subject: str | None = None) -> Path:
        path = self._textgrid(story)
        if not path.exists():
            raise DatasetError(f"{path}: TextGrid for story {story!r} not found")
        return path

    def _words(self, story: str, subject: str | None = None) -> pd.DataFrame:
        path = self._transcript(story)
        words = read_textgrid(path, non_words=self.non_words)
        n = self.respdict.get(story)
        if n is not None:
            end = float(lebel_stimulus_times(n, self.tr)[-1]) + self.tr / 2
            _check_word_times(words, end, str(path), f"respdict.json gives {n} TRs of {self.tr:g} s")
        return words

    def _tr_times(self, story: str, subject: str | None = None) -> np.ndarray:
        _plain_name(story, "story", self.root)
        if story not in self.respdict:
            raise DatasetError(f"{self.derivative / 'respdict.json'}: no entry for story {story!r}")
        return lebel_response_times(self.respdict[story], self.tr)

    def _open(self, subject: str, story: str, name: str = "data"):
        import h5py

        path = self._hf5(subject, story)
        try:
            fh = h5py.File(path, "r")
        except OSError as exc:
            raise DatasetError(f"{path}: cannot open as HDF5 ({exc})") from None
        try:
            if name not in fh:
                found = ", ".join(fh.keys()) or "nothing"
                if name == "data":
                    raise DatasetError(f"{path}: no dataset 'data' in this file (found: {found})")
                fh.close()
                return None, path
            dset = fh[name]
            shape = "(TRs, voxels)" if name == "data" else "(repeats, TRs, voxels)"
            if not isinstance(dset, h5py.Dataset):
                raise DatasetError(f"{path}: {name!r} is an HDF5 {type(dset).__name__.lower()}, not a dataset; "
                                   f"expected an array {shape}")
            if dset.dtype.kind not in "iuf":
                raise DatasetError(f"{path}: dataset {name!r} holds {dset.dtype} values; responses must be real "
                                   "numbers (float or integer)")
            ndim = 2 if name == "data" else 3
            if dset.ndim != ndim:
                raise DatasetError(f"{path}: dataset {name!r} has shape {dset.shape}; expected {ndim}-D {shape}")
            expected = self.respdict.get(story)
            if expected is None:
                raise DatasetError(f"{self.derivative / 'respdict.json'}: no entry for story {story!r} (needed by {path})")
            n_rows = dset.shape[-2]
            if n_rows != expected - 20:
                raise DatasetError(
                    f"{path}: dataset {name!r} has {n_rows} TRs but respdict.json says {expected} "
                    f"(expected {expected} - 20 = {expected - 20} rows)"
                )
            if name != "data":
                data = fh.get("data")
                n_vox = data.shape[-1] if isinstance(data, h5py.Dataset) and data.ndim == 2 else self.n_voxels(subject)
                if dset.shape[-1] != n_vox:
                    raise DatasetError(f"{path}: dataset {name!r} has {dset.shape[-1]} voxels but 'data' has {n_vox}")
            else:
                if dset.shape[1] == 0:
                    raise DatasetError(f"{path}: dataset 'data' has no voxels (shape {dset.shape})")
                n_vox = self.n_voxels(subject)
                if dset.shape[1] != n_vox:
                    raise DatasetError(f"{path}: {dset.shape[1]} voxels, but the other stories of {subject} have {n_vox}: "
                                       "every story of a subject must hold the same voxels")
        except BaseException:
            fh.close()
            raise
        return (fh, dset), path

    def n_voxels(self, subject: str) -> int:
        """Voxels (columns) of ``subject``'s responses; every story must agree (a DatasetError names those that do not).

        Reads only the files' metadata; files that cannot be opened are left to fail when read.
        """
        if subject in self._n_voxels:
            return self._n_voxels[subject]
        stories = self.stories(subject)
        if not stories:
            raise DatasetError(f"{self.preproc / subject}: no .hf5 files")
        import h5py

        counts: dict[int, list[str]] = {}
        for story in stories:
            try:
                with h5py.File(self.preproc / subject / f"{story}.hf5", "r") as fh:
                    dset = fh.get("data")
                    if isinstance(dset, h5py.Dataset) and dset.ndim == 2:
                        counts.setdefault(int(dset.shape[1]), []).append(story)
            except OSError:
                continue
        if not counts:
            raise DatasetError(f"{self.preproc / subject}: none of the {len(stories)} .hf5 files holds a readable 2-D "
                               f"'data' dataset (first: {self.preproc / subject / (stories[0] + '.hf5')})")
        if len(counts) > 1:
            ranked = sorted(counts.items(), key=lambda kv: -len(kv[1]))
            desc = "; ".join(f"{n} voxels in {', '.join(f'{s}.hf5' for s in ss[:4])}{' ...' if len(ss) > 4 else ''}"
                             for n, ss in ranked)
            raise DatasetError(f"{self.preproc / subject}: the stories of {subject} differ in voxel count ({desc}); "
                               "every story of a subject must hold the same voxels (same mask, same order)")
        n = next(iter(counts))
        self._n_voxels[subject] = n
        return n

    def _read(self, subject, story, name, voxels):
        opened, path = self._open(subject, story, name)
        if opened is None:
            return None, path
        fh, dset = opened
        with fh:
            sel = _as_selection(voxels, dset.shape[-1], str(path))
            # HDF5 converts to float32 chunk by chunk: no float64 copy of the whole matrix.
            try:
                data = dset.astype(np.float32)[..., sel]
            except OSError as exc:  # a damaged or truncated file
                raise DatasetError(f"{path}: cannot read dataset {name!r} ({exc}); is the file complete?") from None
        return np.ascontiguousarray(data), path

    def _raw_responses(self, subject, story):
        data, _ = self._read(subject, story, "data", None)
        return data

    def responses(self, subject: str, story: str, voxels: VoxelSelection = None) -> np.ndarray:
        data, path = self._read(subject, story, "data", voxels)
        return _clean(data, str(path))

    def repeats(self, subject: str, story: str, voxels: VoxelSelection = None) -> np.ndarray | None:
        """``individual_repeats`` (n_repeats, TRs, voxels) float32 when the file has it, else None."""
        data, path = self._read(subject, story, "individual_repeats", voxels)
        if data is None:
            return None
        return _clean(data, f"{path}:individual_repeats")

    def voxel_space(self, subject: str) -> VoxelSpace | None:
        """The subject's cortical mask from ``derivative/pycortex-db/<SUBJECT>/`` (pycortex order), if present."""
        mask = self._mask_file(subject)
        if mask is None:
            return None
        space = _load_mask(mask, "pycortex")
        n = self.n_voxels(subject)
        if space.n_voxels != n:
            raise DatasetError(
                f"{mask}: mask has {space.n_voxels} voxels but the responses of {subject} have {n} columns"
            )
        return space

    def pycortex_surface(self, subject: str) -> dict | None:
        """Pycortex subject/transform to draw this subject's maps on, if the dataset names one.

        ``derivative/pycortex-db/<SUBJECT>/surface.json`` (written by the demo) holds
        ``{"subject": ..., "xfm": ...}`` (optionally ``"mask"``); the real release has full pycortex
        subjects instead. A file that is not such a JSON object is a :class:`DatasetError`.
        """
        _plain_name(subject, "subject", self.root)
        path = self.derivative / "pycortex-db" / subject / "surface.json"
        if not path.exists():
            return None
        surface = _read_json(path, "surface.json")
        if not isinstance(surface, dict):
            raise DatasetError(f"{path}: expected a JSON object {{\"subject\": ..., \"xfm\": ...}}, "
                               f"got a JSON {type(surface).__name__}")
        for key in ("subject", "xfm", "mask"):
            if key == "mask" and key not in surface:
                continue
            if not isinstance(surface.get(key), str) or not surface[key]:
                raise DatasetError(f"{path}: {key!r} must be a non-empty string (the pycortex "
                                   f"{'subject' if key == 'subject' else 'transform' if key == 'xfm' else 'mask type'}), "
                                   f"got {surface.get(key)!r}")
        return surface


def _load_mask(path: Path, order: str) -> VoxelSpace:
    """A mask image as a :class:`VoxelSpace`; a DatasetError naming ``path`` when unreadable or empty."""
    try:
        return VoxelSpace.from_nifti(path, order=order)
    except LmbrainError as exc:
        raise DatasetError(str(exc)) from None


# ------------------------------------------------------------------------------------------
_BOLD_RE = re.compile(r"^sub-(?P<sub>[A-Za-z0-9]+)(?:_ses-(?P<ses>[A-Za-z0-9]+))?_task-(?P<task>[A-Za-z0-9]+)"
                      r"(?:_[a-z]+-[A-Za-z0-9]+)*?(?:_run-(?P<run>[0-9]+))?(?:_[a-z]+-[A-Za-z0-9]+)*_bold\.nii(?:\.gz)?$")


class BidsDataset(Dataset):
    """A BIDS dataset (raw or derivatives) of story listening.

    - Runs: ``sub-<S>/[ses-<X>/]func/sub-<S>_[ses-<X>_]task-<story>[_run-<n>][_...]_bold.nii.gz``.
      The task label is the story; several runs of one task are repeated presentations
      (their mean is the response, each run is one repeat). A ``sub-*_bold.nii*`` file whose name
      does not parse so is skipped with a warning naming it; two files for the same run (same
      subject, session, task and run, e.g. a raw run and a ``derivatives/`` copy, or two echoes)
      make that story's runs a :class:`DatasetError`.
    - Brain mask: ``sub-<S>/**/func/*_mask.nii.gz`` (a ``desc-brain`` one preferred) or
      ``sub-<S>/**/anat/*_mask.nii.gz``; voxels inside it (non-zero) become columns (nilearn order).
      It must have at least one voxel, and each BOLD run its shape and affine (to 0.001 mm).
    - Word timings, per run: the bold file's name with ``_bold.nii.gz`` replaced by ``_words.tsv``,
      ``_events.tsv`` (columns ``word``, ``onset`` and ``offset`` or ``duration``) or ``.TextGrid``;
      else ``stimuli/<story>.TextGrid`` or ``stimuli/<story>.tsv`` at the dataset root. Runs of
      one story whose word files differ (by more than 1 ms) are a :class:`DatasetError`.
    - Each run is z-scored per voxel. Volume ``i`` is placed at ``(i + 0.5) * TR`` from run start
      (mid-acquisition); TR from the NIfTI header (in the header's time unit), else the JSON
      sidecar's ``RepetitionTime`` (seconds), else the config ``tr`` (with a warning). A TR above
      100 s is refused as a unit mistake (milliseconds read as seconds) unless the sidecar gives a
      plausible one (used, with a warning); a header whose msec unit would make the TR shorter
      than 0.05 s is read in seconds (with a warning); header and sidecar must agree to 1 ms.
    """

    layout = "bids"

    def __init__(self, root, tr: float = 2.0, non_words: Iterable[str] = NON_WORDS):
        super().__init__(root, tr, non_words)
        self._runs: dict[str, dict[str, list[Path]]] = {}
        self._duplicates: dict[tuple[str, str], list[tuple[Path, Path]]] = {}
        self._word_tables: dict[Path, pd.DataFrame] = {}  # _read_words
        self._checked_words: dict[tuple[str, str | None], pd.DataFrame] = {}  # _words
        seen: dict[tuple, Path] = {}
        for bold in sorted(self.root.rglob("sub-*_bold.nii*")):
            m = _BOLD_RE.match(bold.name)
            if not m:
                warnings.warn(
                    f"{bold}: skipped: the name does not parse as a BIDS BOLD run "
                    "(sub-<label>[_ses-<label>]_task-<label>[_run-<index>][_<key>-<value>...]_bold.nii[.gz], "
                    "labels alphanumeric)", LmbrainWarning, stacklevel=2)
                continue
            key = (m["sub"], m["ses"], m["task"], int(m["run"]) if m["run"] else None)
            if key in seen:
                self._duplicates.setdefault((m["sub"], m["task"]), []).append((seen[key], bold))
            seen[key] = bold
            runs = self._runs.setdefault(m["sub"], {}).setdefault(m["task"], [])
            runs.append(bold)
        if not self._runs:
            raise DatasetError(
                f"{self.root}: not a BIDS dataset with BOLD runs: no sub-*/func/sub-*_task-*_bold.nii.gz found; "
                "check dataset.root and dataset.layout"
            )

    @property
    def subjects(self) -> list[str]:
        return sorted(self._runs)

    def stories(self, subject: str) -> list[str]:
        self._check_subject(subject)
        return sorted(self._runs[subject])

    def runs(self, subject: str, story: str) -> list[Path]:
        self._check_story(subject, story)
        dupes = self._duplicates.get((subject, story))
        if dupes:
            a, b = dupes[0]
            raise DatasetError(
                f"{b}: the same run as {a} (subject {subject}, task {story}, same session and run): two files for one "
                "run would count as two presentations; keep one (point dataset.root at the raw data or at one "
                "derivatives folder, and one space/echo per run)")
        return self._runs[subject][story]

    def _subjects_of(self, story: str, subject: str | None) -> list[str]:
        _plain_name(story, "story", self.root)
        if subject is not None:
            self._check_story(subject, story)
            return [subject]
        found = [s for s in self.subjects if story in self._runs[s]]
        if not found:
            raise DatasetError(f"{self.root}: no subject has a run of story {story!r}")
        return found

    def _word_file(self, bold: Path, story: str, required: bool = True) -> Path | None:
        stem = re.sub(r"_bold\.nii(\.gz)?$", "", bold.name)
        for suffix in ("_words.tsv", "_events.tsv", ".TextGrid"):
            cand = bold.with_name(stem + suffix)
            if cand.exists():
                return cand
        for name in (f"{story}.TextGrid", f"{story}.tsv"):
            cand = self.root / "stimuli" / name
            if cand.exists():
                return cand
        if not required:
            return None
        raise DatasetError(
            f"{bold}: no word timings for this run: put {stem}_words.tsv (columns word, onset, offset) "
            f"or {stem}.TextGrid beside it, or stimuli/{story}.TextGrid at the dataset root"
        )

    def word_files(self, story: str) -> list[Path]:
        found = [self._word_file(bold, story, required=False)
                 for s in self._subjects_of(story, None) for bold in self.runs(s, story)]
        return list(dict.fromkeys(p for p in found if p is not None))

    def files(self, subject: str, story: str) -> list[Path]:
        out = []
        for bold in self.runs(subject, story):
            sidecar = self._sidecar_path(bold)
            out += [bold, *([sidecar] if sidecar.exists() else []), self._word_file(bold, story, required=False)]
        return list(dict.fromkeys(p for p in out if p is not None))

    def grid_files(self, subject: str) -> list[Path]:
        return [self._mask_file(subject)]

    def _transcript(self, story: str, subject: str | None = None) -> Path:
        subjects = self._subjects_of(story, subject)
        return self._word_file(self.runs(subjects[0], story)[0], story)

    def _read_words(self, path: Path) -> pd.DataFrame:
        """A word file's table, read once per dataset object (a copy each time): every call of
        :meth:`words` compares all the runs' word files of the story, and a job calls it for several
        stories and subjects, so without this each file's warnings (overlapping words, say) were
        logged again at every call."""
        if path not in self._word_tables:
            if path.suffix == ".TextGrid":
                self._word_tables[path] = read_textgrid(path, non_words=self.non_words)
            else:
                self._word_tables[path] = read_word_tsv(path, non_words=self.non_words)
        return self._word_tables[path].copy()

    def _words(self, story: str, subject: str | None = None) -> pd.DataFrame:
        """The story's words, from the first run's word file (``subject``'s, or the first subject's with the story).

        Every other run of the story (of ``subject``, or of every subject when ``subject`` is None)
        whose word file exists must hold the same words at the same times (to 1 ms): a
        :class:`DatasetError` names both files otherwise. Words starting after the end of the first
        run (volumes x TR) warn; all of them doing so is a :class:`DatasetError`. Checked once per
        (story, subject) and dataset object, so its warnings are given once (a copy each call).
        """
        key = (story, subject)
        if key not in self._checked_words:
            self._checked_words[key] = self._check_words(story, subject)
        return self._checked_words[key].copy()

    def _check_words(self, story: str, subject: str | None) -> pd.DataFrame:
        subjects = self._subjects_of(story, subject)
        first_bold = self.runs(subjects[0], story)[0]
        first = self._word_file(first_bold, story)
        words = self._read_words(first)
        checked = {first}
        for s in subjects:
            for bold in self.runs(s, story):
                path = self._word_file(bold, story, required=False)
                if path is None or path in checked:
                    continue
                checked.add(path)
                diff = _same_words(words, self._read_words(path))
                if diff is not None:
                    raise DatasetError(
                        f"{path}: the word timings of run {bold.name} differ from those of {first_bold.name} ({first}): "
                        f"{diff}; every presentation of story {story!r} must have the same words at the same times "
                        "(fix or remove the odd file, or name the runs as different tasks)")
        n_t, tr = self._n_volumes(first_bold), self._tr_of(first_bold)
        _check_word_times(words, n_t * tr, str(first), f"{first_bold.name} has {n_t} volumes of {tr:g} s")
        return words

    def _load(self, bold: Path):
        """``nib.load(bold)`` with its header read; a DatasetError naming the file when it cannot be."""
        import nibabel as nib

        try:
            img = nib.load(bold)
            img.header.get_zooms()
        except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib errors) for bad files
            raise DatasetError(f"{bold}: cannot read as a NIfTI image ({type(exc).__name__}: {exc}); is the file "
                               "complete (not a truncated download) and really NIfTI (.nii or gzip-compressed .nii.gz)?") from None
        return img

    @staticmethod
    def _sidecar_path(bold: Path) -> Path:
        return Path(re.sub(r"\.nii(\.gz)?$", ".json", str(bold)))

    def _sidecar_tr(self, bold: Path) -> tuple[float | None, Path]:
        sidecar = self._sidecar_path(bold)
        if not sidecar.exists():
            return None, sidecar
        meta = _read_json(sidecar, "the JSON sidecar")
        if not isinstance(meta, dict):
            raise DatasetError(f"{sidecar}: a JSON sidecar must be a JSON object, got a JSON {type(meta).__name__}")
        if "RepetitionTime" not in meta:
            return None, sidecar
        value = meta["RepetitionTime"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise DatasetError(f"{sidecar}: RepetitionTime must be a positive number of seconds, got {value!r}")
        if value > MAX_TR:
            raise DatasetError(f"{sidecar}: RepetitionTime = {value:g} s is implausible (more than {MAX_TR:g} s); BIDS gives "
                               f"it in seconds: probably milliseconds, i.e. {value / 1000:g} s")
        return float(value), sidecar

    def _tr_of(self, bold: Path) -> float:
        hdr = self._load(bold).header
        zooms = hdr.get_zooms()
        header_tr, unit = None, "unknown"
        if len(zooms) > 3 and math.isfinite(float(zooms[3])) and zooms[3] > 0:
            unit = hdr.get_xyzt_units()[1] if hasattr(hdr, "get_xyzt_units") else "unknown"
            raw = float(zooms[3])
            header_tr = raw * {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
            if header_tr < 0.05 <= raw <= MAX_TR:
                # a time unit of msec on a value that reads as seconds: a known converter slip
                warnings.warn(f"{bold}: the NIfTI header gives pixdim[4] = {raw:g} with a time unit of {unit}, i.e. "
                              f"{header_tr:g} s, too short for fMRI; taking it as {raw:g} s (fix the header's "
                              "xyzt_units, or give RepetitionTime in the JSON sidecar)", LmbrainWarning, stacklevel=3)
                header_tr = raw
        sidecar_tr, sidecar = self._sidecar_tr(bold)
        if header_tr is not None and header_tr > MAX_TR:
            if sidecar_tr is None:
                raise DatasetError(
                    f"{bold}: the NIfTI header gives a TR of {float(zooms[3]):g} ({unit} units), i.e. {header_tr:g} s, "
                    f"which is implausible (more than {MAX_TR:g} s): probably milliseconds written with a seconds "
                    f"unit. Fix the header (nibabel: img.header.set_xyzt_units(t='msec'), or pixdim[4] = "
                    f"{header_tr / 1000:g}) or give RepetitionTime in seconds in {sidecar.name}")
            warnings.warn(f"{bold}: the NIfTI header's TR ({header_tr:g} s) is implausible (more than {MAX_TR:g} s, "
                          f"probably milliseconds); using RepetitionTime = {sidecar_tr:g} s from {sidecar}",
                          LmbrainWarning, stacklevel=3)
            return sidecar_tr
        if header_tr is not None:
            if sidecar_tr is not None and abs(header_tr - sidecar_tr) > 1e-3:
                raise DatasetError(f"{bold}: the NIfTI header gives a TR of {header_tr:g} s but {sidecar} says "
                                   f"RepetitionTime = {sidecar_tr:g} s; make them agree")
            return header_tr
        if sidecar_tr is not None:
            return sidecar_tr
        warnings.warn(f"{bold}: no TR in the NIfTI header (pixdim[4] = 0) nor RepetitionTime in {sidecar}; "
                      f"using the configured tr = {self.tr:g} s", LmbrainWarning, stacklevel=3)
        return self.tr

    def _n_volumes(self, bold: Path) -> int:
        shape = self._load(bold).shape
        if len(shape) != 4:
            raise DatasetError(f"{bold}: a BOLD run must be 4-D (x, y, z, time), got shape {shape}")
        if shape[3] < 2:
            raise DatasetError(f"{bold}: a BOLD run needs at least 2 volumes to be z-scored, got {shape[3]}")
        return int(shape[3])

    def _tr_times(self, story: str, subject: str | None = None) -> np.ndarray:
        bold = self.runs(self._subjects_of(story, subject)[0], story)[0]
        n_t = self._n_volumes(bold)
        return (np.arange(n_t) + 0.5) * self._tr_of(bold)

    @lru_cache(maxsize=16)
    def voxel_space(self, subject: str) -> VoxelSpace:
        return _load_mask(self._mask_file(subject), "nilearn")

    def _mask_file(self, subject: str) -> Path:
        """The subject's brain mask (see the class docstring); a DatasetError when there is none."""
        self._check_subject(subject)
        base = self.root / f"sub-{subject}"
        cands = sorted(base.rglob("func/*_mask.nii*")) + sorted(base.rglob("anat/*_mask.nii*"))
        if not cands:
            raise DatasetError(
                f"{base}: no brain mask found: put sub-{subject}_desc-brain_mask.nii.gz (non-zero inside the brain) "
                f"in {base / 'func'}"
            )
        preferred = [c for c in cands if "desc-brain" in c.name]
        return (preferred or cands)[0]

    def n_voxels(self, subject: str) -> int:
        return self.voxel_space(subject).n_voxels

    def _run_matrix(self, subject: str, bold: Path, voxels, chunk: int = 64) -> np.ndarray:
        space = self.voxel_space(subject)
        img = self._load(bold)
        if img.shape[:3] != space.mask.shape:
            raise DatasetError(f"{bold}: volume shape {img.shape[:3]} does not match the mask {space.source} {space.mask.shape}")
        if not np.allclose(img.affine, space.affine, rtol=0, atol=1e-3):
            raise DatasetError(
                f"{bold}: the image's affine (voxel-to-world transform) differs from the mask's ({space.source}): "
                f"they are not in the same space, so the mask would pick the wrong voxels; resample the mask to the "
                f"BOLD grid (e.g. nilearn.image.resample_to_img(mask, bold, interpolation='nearest')) or use a mask "
                f"in the BOLD space.\n  BOLD affine: {np.round(img.affine, 4).tolist()}\n"
                f"  mask affine: {np.round(space.affine, 4).tolist()}")
        n_t = self._n_volumes(bold)
        ijk = space.indices()
        sel = _as_selection(voxels, len(ijk), str(bold))
        ijk = ijk[sel]
        out = np.empty((n_t, len(ijk)), dtype=np.float32)
        for t0 in range(0, n_t, chunk):
            try:
                block = np.asarray(img.dataobj[..., t0 : t0 + chunk], dtype=np.float32)
            except Exception as exc:  # truncated or corrupt data: EOFError, zlib.error, ValueError, OSError ...
                raise DatasetError(f"{bold}: cannot read volumes {t0}..{min(t0 + chunk, n_t) - 1} ({type(exc).__name__}: "
                                   f"{exc}); is the file complete (not a truncated download)?") from None
            out[t0 : t0 + block.shape[3]] = block[ijk[:, 0], ijk[:, 1], ijk[:, 2], :].T
        _clean(out, str(bold))
        return zscore(out)

    def _raw_responses(self, subject, story):
        return np.stack([self._run_matrix(subject, b, None) for b in self.runs(subject, story)]).mean(axis=0)

    def repeats(self, subject: str, story: str, voxels: VoxelSelection = None) -> np.ndarray | None:
        runs = self.runs(subject, story)
        if len(runs) < 2:
            return None
        mats = [self._run_matrix(subject, b, voxels) for b in runs]
        lengths = {m.shape[0] for m in mats}
        if len(lengths) > 1:
            listed = ", ".join(f"{b.name} ({m.shape[0]})" for b, m in zip(runs, mats))
            raise DatasetError(
                f"runs of story {story!r} for sub-{subject} differ in length ({sorted(lengths)} volumes: {listed}): "
                "repeated presentations must have the same number of volumes"
            )
        return np.stack(mats)

    def responses(self, subject: str, story: str, voxels: VoxelSelection = None) -> np.ndarray:
        runs = self.runs(subject, story)
        if len(runs) == 1:
            return self._run_matrix(subject, runs[0], voxels)
        return zscore(self.repeats(subject, story, voxels).mean(axis=0))


def stacked_responses(ds: "Dataset", subject: str, stories: list[str], n_trs, error=DatasetError) -> np.ndarray:
    """The responses of ``stories`` in one float32 array ``(sum of n_trs, voxels)``, filled story by story
    (no per-story copies are kept: a real subject's training responses are ~4 GB).

    ``n_trs``: the TRs each story must have (its design matrix's rows), in the order of ``stories``;
    a story whose responses differ in TRs, or in voxels from the first story's, raises ``error``
    naming it. Per-story rows are consecutive slices.
    """
    n_trs = list(n_trs)
    if len(n_trs) != len(stories):
        raise error(f"{len(stories)} stories but {len(n_trs)} TR counts")
    if not stories:
        raise error(f"no stories to stack for subject {subject}")
    out, off = None, 0
    for story, n in zip(stories, n_trs):
        y = ds.responses(subject, story)
        if y.ndim != 2:
            raise error(f"story {story}: responses of shape {y.shape}; expected (TRs, voxels)")
        if y.shape[0] != n:
            raise error(f"story {story}: {n} TRs of features but {y.shape[0]} of responses")
        if out is None:
            out = np.empty((int(sum(n_trs)), y.shape[1]), dtype=np.float32)
        elif y.shape[1] != out.shape[1]:
            raise error(f"story {story} of {subject}: {y.shape[1]} voxels, but story {stories[0]} has {out.shape[1]}; "
                        "every story of a subject must hold the same voxels")
        out[off: off + n] = y
        off += n
        del y
    return out


def read_word_tsv(path: str | os.PathLike, non_words: Iterable[str] = NON_WORDS) -> pd.DataFrame:
    """Word timings from a TSV with a header line and columns ``word``, ``onset`` and ``offset`` (or ``duration``), seconds.

    Parameters
    ----------
    path : str or os.PathLike
        A tab-separated UTF-8 file (a byte-order mark is allowed); other columns are ignored, as in
        BIDS ``_events.tsv`` files.
    non_words : collection of str
        Labels dropped as in :func:`lmbrain.textgrid.read_words` (:data:`lmbrain.textgrid.NON_WORDS`
        by default, :data:`lmbrain.textgrid.NON_WORDS_HUTH` for the Huth lab's set). An empty
        ``word`` cell is the label ``""``.

    Returns
    -------
    pandas.DataFrame
        ``word`` (lower-cased), ``onset``, ``offset``, ``midpoint`` (float64), sorted by onset (rows
        need not be in order, as in BIDS events files).

    Raises
    ------
    DatasetError
        Naming the file (and the line): unreadable or not UTF-8, no header line with the three
        columns (the message says when the file looks comma-separated or headerless), a time that
        is not a finite number (``NaN``, ``inf``, ``n/a``) or beyond
        :data:`lmbrain.textgrid.MAX_WORD_TIME` s, an offset before its onset, or no words at all.

    Warns
    -----
    LmbrainWarning
        Words that start before 0 s, or that overlap the next word.
    """
    from .textgrid import MAX_WORD_TIME, _non_word_set

    path = Path(path)
    drop = _non_word_set(non_words)
    try:
        table = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""], encoding="utf-8-sig",
                            dtype={"word": str})
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read as a tab-separated UTF-8 table ({exc})") from None
    cols = set(table.columns)
    found = ", ".join(map(str, table.columns))
    if "offset" not in cols and {"onset", "duration"} <= cols:
        table["offset"] = pd.to_numeric(table["onset"], errors="coerce") + pd.to_numeric(table["duration"], errors="coerce")
    missing = {"word", "onset", "offset"} - set(table.columns)
    if missing:
        hint = ""
        if len(table.columns) == 1 and "," in str(table.columns[0]):
            hint = "; the file looks comma-separated: columns must be separated by tabs"
        elif not cols & {"word", "onset", "offset", "duration"}:
            hint = "; the first line must be the header: word<TAB>onset<TAB>offset"
        raise DatasetError(f"{path}: word-timing table lacks column(s) {', '.join(sorted(missing))} "
                           f"(found: {found}){hint}")
    for col in ("onset", "offset"):
        values = pd.to_numeric(table[col], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
        if bad.any():
            row = int(bad.argmax())
            cell = table[col].iloc[row]
            shown = repr(cell) if isinstance(cell, str) else str(cell)
            what = "not a number" if np.isnan(values.iloc[row]) else "not a finite number"
            raise DatasetError(f"{path}: line {row + 2}: {col} is {what} ({shown})")
        huge = np.abs(values.to_numpy(dtype=np.float64)) > MAX_WORD_TIME
        if huge.any():
            row = int(huge.argmax())
            raise DatasetError(f"{path}: line {row + 2}: {col} = {values.iloc[row]:g} s is not a plausible word time "
                               f"(beyond {MAX_WORD_TIME:g} s); times are seconds")
        table[col] = values.astype(np.float64)
    bad = table["offset"] < table["onset"]
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DatasetError(f"{path}: line {row + 2}: offset before onset")
    labels = table["word"].fillna("").astype(str)
    words = labels.str.strip().str.strip("{}").str.strip()
    keep = ~words.str.lower().isin(drop)
    out = pd.DataFrame({
        "word": words[keep].str.lower().to_numpy(),
        "onset": table.loc[keep, "onset"].to_numpy(),
        "offset": table.loc[keep, "offset"].to_numpy(),
    })
    if out.empty:
        raise DatasetError(f"{path}: no words: {len(table)} rows, all non-word labels (sp, {{LG}}, empty, ...)")
    out["midpoint"] = (out["onset"] + out["offset"]) / 2
    out = out.sort_values("onset", kind="stable").reset_index(drop=True)
    if out["onset"].iloc[0] < 0:
        warnings.warn(f"{path}: {int((out['onset'] < 0).sum())} word(s) start before 0 s (the first at "
                      f"{out['onset'].iloc[0]:g} s); word times are read as seconds from the run's start",
                      LmbrainWarning, stacklevel=2)
    overlap = out["onset"].to_numpy()[1:] < out["offset"].to_numpy()[:-1] - 1e-6
    if overlap.any():
        i = int(overlap.argmax())
        warnings.warn(f"{path}: {int(overlap.sum())} word(s) overlap the next one (first: {out['word'].iloc[i]!r} "
                      f"{out['onset'].iloc[i]:g}-{out['offset'].iloc[i]:g} s and {out['word'].iloc[i + 1]!r} from "
                      f"{out['onset'].iloc[i + 1]:g} s)", LmbrainWarning, stacklevel=2)
    return out


def summarize(ds: Dataset, subject: str, train, test, out: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per story of ``subject`` used by the config: split, TRs, words, bad voxels, repeats.

    Reads every story once (so a broken file fails here, early, with its name). Writes a TSV to
    ``out`` atomically when given.
    """
    from .io import atomic_path

    train_list, test_list = ds.split(subject, train, test)
    rows = []
    for split_name, stories in (("train", train_list), ("test", test_list)):
        for story in stories:
            words = ds.words(subject, story)
            times = ds.tr_times(subject, story)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                data = ds.responses(subject, story)
            for w in caught:
                warnings.warn(w.message, w.category, stacklevel=2)
            if data.shape[0] != len(times):
                raise DatasetError(f"{subject}/{story}: {data.shape[0]} response rows but {len(times)} TR times")
            reps = ds.repeats(subject, story)
            n_invalid = int(ds.invalid_voxels(subject, story).sum())
            late = int((words["midpoint"] > times[-1]).sum())
            if late:
                warnings.warn(f"{subject}/{story}: {late} words fall after the last response row", LmbrainWarning, stacklevel=2)
            rows.append({
                "story": story, "split": split_name, "n_trs": data.shape[0], "n_voxels": data.shape[1],
                "n_words": len(words), "first_tr_s": float(times[0]), "last_tr_s": float(times[-1]),
                "last_word_s": float(words["offset"].max()) if len(words) else float("nan"),
                "n_invalid_voxels": n_invalid, "n_repeats": 0 if reps is None else int(reps.shape[0]),
            })
    table = pd.DataFrame(rows)
    if out is not None:
        with atomic_path(out) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
    return table
