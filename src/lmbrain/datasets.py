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
"""

from __future__ import annotations

import json
import os
import re
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from . import LmbrainError, LmbrainWarning
from .stimulus import lebel_response_times, read_textgrid, zscore
from .volume import VoxelSpace

LAYOUTS = ("lebel2023", "bids")


class DatasetError(LmbrainError, ValueError):
    """The dataset is missing something or holds something malformed; the message names the file."""


def open_dataset(layout: str, root: str | os.PathLike, tr: float = 2.0) -> "Dataset":
    """Open a dataset of the given layout (``"lebel2023"`` or ``"bids"``) rooted at ``root``."""
    if layout == "lebel2023":
        return Lebel2023Dataset(root, tr=tr)
    if layout == "bids":
        return BidsDataset(root, tr=tr)
    raise DatasetError(f"unknown dataset layout {layout!r}: use one of {', '.join(LAYOUTS)} (config key dataset.layout)")


VoxelSelection = slice | np.ndarray | list | None


def _as_selection(voxels: VoxelSelection, n: int):
    if voxels is None:
        return slice(None)
    if isinstance(voxels, slice):
        return voxels
    idx = np.asarray(voxels)
    if idx.dtype == bool:
        idx = np.flatnonzero(idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise DatasetError(f"voxel indices out of range [0, {n})")
    if np.any(np.diff(idx) <= 0):
        raise DatasetError("voxel indices must be strictly increasing")
    return idx


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


class Dataset:
    """Common interface; see the module docstring. Subclasses implement the file access."""

    layout: str = ""

    def __init__(self, root: str | os.PathLike, tr: float = 2.0):
        self.root = Path(root)
        self.tr = float(tr)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset root not found (config key dataset.root)")

    # -- to implement -------------------------------------------------------------------------
    @property
    def subjects(self) -> list[str]:
        raise NotImplementedError

    def stories(self, subject: str) -> list[str]:
        raise NotImplementedError

    def words(self, story: str, subject: str | None = None) -> pd.DataFrame:
        raise NotImplementedError

    def tr_times(self, story: str, subject: str | None = None) -> np.ndarray:
        raise NotImplementedError

    def responses(self, subject: str, story: str, voxels: VoxelSelection = None) -> np.ndarray:
        raise NotImplementedError

    def repeats(self, subject: str, story: str, voxels: VoxelSelection = None) -> np.ndarray | None:
        raise NotImplementedError

    def n_voxels(self, subject: str) -> int:
        raise NotImplementedError

    def voxel_space(self, subject: str) -> VoxelSpace | None:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def _check_subject(self, subject: str) -> None:
        if subject not in self.subjects:
            raise DatasetError(
                f"{self.root}: no subject {subject!r} in this {self.layout} dataset; "
                f"subjects present: {', '.join(self.subjects) or 'none'}"
            )

    def _check_story(self, subject: str, story: str) -> None:
        self._check_subject(subject)
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
        """Resolve the configured train/test stories for a subject (``train="all"`` = all but test)."""
        self._check_subject(subject)
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
    """

    layout = "lebel2023"

    def __init__(self, root, tr: float = 2.0):
        super().__init__(root, tr)
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
        try:
            with open(respdict_path, encoding="utf-8") as fh:
                respdict = json.load(fh)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{respdict_path}: not valid JSON ({exc})") from None
        if not isinstance(respdict, dict) or not all(isinstance(v, int) for v in respdict.values()):
            raise DatasetError(f"{respdict_path}: expected a mapping of story name to an integer TR count")
        self.respdict: dict[str, int] = respdict

    @property
    def subjects(self) -> list[str]:
        return sorted(p.name for p in self.preproc.iterdir() if p.is_dir())

    def stories(self, subject: str) -> list[str]:
        self._check_subject(subject)
        return sorted(p.stem for p in (self.preproc / subject).glob("*.hf5"))

    def _hf5(self, subject: str, story: str) -> Path:
        self._check_story(subject, story)
        return self.preproc / subject / f"{story}.hf5"

    def words(self, story: str, subject: str | None = None) -> pd.DataFrame:
        path = self.textgrids / f"{story}.TextGrid"
        if not path.exists():
            raise DatasetError(f"{path}: TextGrid for story {story!r} not found")
        return read_textgrid(path)

    def tr_times(self, story: str, subject: str | None = None) -> np.ndarray:
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
        if name not in fh:
            found = ", ".join(fh.keys()) or "nothing"
            fh.close()
            if name == "data":
                raise DatasetError(f"{path}: no dataset 'data' in this file (found: {found})")
            return None, path
        dset = fh[name]
        expected = self.respdict.get(story)
        if expected is None:
            fh.close()
            raise DatasetError(f"{self.derivative / 'respdict.json'}: no entry for story {story!r} (needed by {path})")
        n_rows = dset.shape[-2]
        if dset.ndim not in (2, 3) or n_rows != expected - 20:
            fh.close()
            raise DatasetError(
                f"{path}: dataset {name!r} has {n_rows} TRs but respdict.json says {expected} "
                f"(expected {expected} - 20 = {expected - 20} rows)"
            )
        return (fh, dset), path

    def n_voxels(self, subject: str) -> int:
        stories = self.stories(subject)
        if not stories:
            raise DatasetError(f"{self.preproc / subject}: no .hf5 files")
        import h5py

        with h5py.File(self.preproc / subject / f"{stories[0]}.hf5", "r") as fh:
            return int(fh["data"].shape[1])

    def _read(self, subject, story, name, voxels):
        opened, path = self._open(subject, story, name)
        if opened is None:
            return None, path
        fh, dset = opened
        with fh:
            sel = _as_selection(voxels, dset.shape[-1])
            # HDF5 converts to float32 chunk by chunk: no float64 copy of the whole matrix.
            data = dset.astype(np.float32)[..., sel]
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
        db = self.derivative / "pycortex-db" / subject
        if not db.is_dir():
            return None
        masks = sorted(db.rglob("mask_thick.nii.gz"))
        if not masks:
            return None
        space = VoxelSpace.from_nifti(masks[0], order="pycortex")
        n = self.n_voxels(subject)
        if space.n_voxels != n:
            raise DatasetError(
                f"{masks[0]}: mask has {space.n_voxels} voxels but the responses of {subject} have {n} columns"
            )
        return space

    def pycortex_surface(self, subject: str) -> dict | None:
        """Pycortex subject/transform to draw this subject's maps on, if the dataset names one.

        ``derivative/pycortex-db/<SUBJECT>/surface.json`` (written by the demo) holds
        ``{"subject": ..., "xfm": ...}``; the real release has full pycortex subjects instead.
        """
        path = self.derivative / "pycortex-db" / subject / "surface.json"
        if path.exists():
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)
        return None


# ------------------------------------------------------------------------------------------
_BOLD_RE = re.compile(r"^sub-(?P<sub>[A-Za-z0-9]+)(?:_ses-(?P<ses>[A-Za-z0-9]+))?_task-(?P<task>[A-Za-z0-9]+)"
                      r"(?:_[a-z]+-[A-Za-z0-9]+)*?(?:_run-(?P<run>[0-9]+))?(?:_[a-z]+-[A-Za-z0-9]+)*_bold\.nii(?:\.gz)?$")


class BidsDataset(Dataset):
    """A BIDS dataset (raw or derivatives) of story listening.

    - Runs: ``sub-<S>/[ses-<X>/]func/sub-<S>_[ses-<X>_]task-<story>[_run-<n>][_...]_bold.nii.gz``.
      The task label is the story; several runs of one task are repeated presentations
      (their mean is the response, each run is one repeat).
    - Brain mask: ``sub-<S>/**/func/*_mask.nii.gz`` (a ``desc-brain`` one preferred) or
      ``sub-<S>/**/anat/*_mask.nii.gz``; voxels inside it (non-zero) become columns (nilearn order).
    - Word timings, per run: the bold file's name with ``_bold.nii.gz`` replaced by ``_words.tsv``,
      ``_events.tsv`` (columns ``word``, ``onset`` and ``offset`` or ``duration``) or ``.TextGrid``;
      else ``stimuli/<story>.TextGrid`` or ``stimuli/<story>.tsv`` at the dataset root.
    - Each run is z-scored per voxel. Volume ``i`` is placed at ``(i + 0.5) * TR`` from run start
      (mid-acquisition); TR from the NIfTI header, else the JSON sidecar, else the config ``tr``.
    """

    layout = "bids"

    def __init__(self, root, tr: float = 2.0):
        super().__init__(root, tr)
        self._runs: dict[str, dict[str, list[Path]]] = {}
        for bold in sorted(self.root.rglob("sub-*_bold.nii*")):
            m = _BOLD_RE.match(bold.name)
            if not m:
                continue
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
        return self._runs[subject][story]

    def _word_file(self, bold: Path, story: str) -> Path:
        stem = re.sub(r"_bold\.nii(\.gz)?$", "", bold.name)
        for suffix in ("_words.tsv", "_events.tsv", ".TextGrid"):
            cand = bold.with_name(stem + suffix)
            if cand.exists():
                return cand
        for name in (f"{story}.TextGrid", f"{story}.tsv"):
            cand = self.root / "stimuli" / name
            if cand.exists():
                return cand
        raise DatasetError(
            f"{bold}: no word timings for this run: put {stem}_words.tsv (columns word, onset, offset) "
            f"or {stem}.TextGrid beside it, or stimuli/{story}.TextGrid at the dataset root"
        )

    def words(self, story: str, subject: str | None = None) -> pd.DataFrame:
        subject = subject or next((s for s in self.subjects if story in self._runs[s]), None)
        if subject is None:
            raise DatasetError(f"{self.root}: no subject has a run of story {story!r}")
        path = self._word_file(self.runs(subject, story)[0], story)
        if path.suffix == ".TextGrid":
            return read_textgrid(path)
        return read_word_tsv(path)

    def _tr_of(self, bold: Path) -> float:
        import nibabel as nib

        zooms = nib.load(bold).header.get_zooms()
        if len(zooms) > 3 and zooms[3] > 0:
            return float(zooms[3])
        sidecar = Path(re.sub(r"\.nii(\.gz)?$", ".json", str(bold)))
        if sidecar.exists():
            with open(sidecar, encoding="utf-8") as fh:
                meta = json.load(fh)
            if "RepetitionTime" in meta:
                return float(meta["RepetitionTime"])
        return self.tr

    def _n_volumes(self, bold: Path) -> int:
        import nibabel as nib

        shape = nib.load(bold).shape
        if len(shape) != 4:
            raise DatasetError(f"{bold}: a BOLD run must be 4-D (x, y, z, time), got shape {shape}")
        return int(shape[3])

    def tr_times(self, story: str, subject: str | None = None) -> np.ndarray:
        subject = subject or next((s for s in self.subjects if story in self._runs[s]), None)
        bold = self.runs(subject, story)[0]
        tr = self._tr_of(bold)
        return (np.arange(self._n_volumes(bold)) + 0.5) * tr

    @lru_cache(maxsize=16)
    def voxel_space(self, subject: str) -> VoxelSpace:
        self._check_subject(subject)
        base = self.root / f"sub-{subject}"
        cands = sorted(base.rglob("func/*_mask.nii*")) + sorted(base.rglob("anat/*_mask.nii*"))
        if not cands:
            raise DatasetError(
                f"{base}: no brain mask found: put sub-{subject}_desc-brain_mask.nii.gz (non-zero inside the brain) "
                f"in {base / 'func'}"
            )
        preferred = [c for c in cands if "desc-brain" in c.name]
        return VoxelSpace.from_nifti((preferred or cands)[0], order="nilearn")

    def n_voxels(self, subject: str) -> int:
        return self.voxel_space(subject).n_voxels

    def _run_matrix(self, subject: str, bold: Path, voxels, chunk: int = 64) -> np.ndarray:
        import nibabel as nib

        space = self.voxel_space(subject)
        img = nib.load(bold)
        if img.shape[:3] != space.mask.shape:
            raise DatasetError(f"{bold}: volume shape {img.shape[:3]} does not match the mask {space.source} {space.mask.shape}")
        n_t = self._n_volumes(bold)
        ijk = space.indices()
        sel = _as_selection(voxels, len(ijk))
        ijk = ijk[sel]
        out = np.empty((n_t, len(ijk)), dtype=np.float32)
        for t0 in range(0, n_t, chunk):
            block = np.asarray(img.dataobj[..., t0 : t0 + chunk], dtype=np.float32)
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
            raise DatasetError(
                f"runs of story {story!r} for sub-{subject} differ in length ({sorted(lengths)} volumes): "
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
    a story whose responses differ raises ``error`` naming it. Per-story rows are consecutive slices.
    """
    out, off = None, 0
    for story, n in zip(stories, n_trs):
        y = ds.responses(subject, story)
        if y.shape[0] != n:
            raise error(f"story {story}: {n} TRs of features but {y.shape[0]} of responses")
        if out is None:
            out = np.empty((int(sum(n_trs)), y.shape[1]), dtype=np.float32)
        out[off: off + n] = y
        off += n
        del y
    return out


def read_word_tsv(path: str | os.PathLike) -> pd.DataFrame:
    """Word timings from a TSV with columns ``word``, ``onset`` and ``offset`` (or ``duration``), seconds."""
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read as a tab-separated table ({exc})") from None
    cols = set(table.columns)
    if "offset" not in cols and {"onset", "duration"} <= cols:
        table["offset"] = table["onset"] + table["duration"]
    missing = {"word", "onset", "offset"} - set(table.columns)
    if missing:
        raise DatasetError(f"{path}: word-timing table lacks column(s) {', '.join(sorted(missing))} "
                           f"(found: {', '.join(table.columns)})")
    for col in ("onset", "offset"):
        values = pd.to_numeric(table[col], errors="coerce")
        if values.isna().any():
            row = int(values.isna().to_numpy().argmax())
            raise DatasetError(f"{path}: line {row + 2}: {col} is not a number ({table[col].iloc[row]!r})")
        table[col] = values.astype(np.float64)
    bad = table["offset"] < table["onset"]
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DatasetError(f"{path}: line {row + 2}: offset before onset")
    from .textgrid import NON_WORDS

    words = table["word"].astype(str).str.strip().str.strip("{}").str.strip()
    keep = ~words.str.lower().isin(NON_WORDS) & table["word"].notna()
    out = pd.DataFrame({
        "word": words[keep].str.lower().to_numpy(),
        "onset": table.loc[keep, "onset"].to_numpy(),
        "offset": table.loc[keep, "offset"].to_numpy(),
    })
    out["midpoint"] = (out["onset"] + out["offset"]) / 2
    return out.sort_values("onset", kind="stable").reset_index(drop=True)


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
            words = ds.words(story, subject)
            times = ds.tr_times(story, subject)
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
