"""Regions of interest over a subject's voxel columns, and per-ROI summaries of the TRW table.

An ROI set (:class:`RoiSet`) is a list of names and a boolean mask per name over the subject's
response columns (the column order of :class:`lmbrain.volume.VoxelSpace`). Sources:

- :func:`pycortex_rois`: ROIs drawn in a pycortex subject's ``overlays.svg`` (LeBel et al.'s
  subjects; the demo's pycortex subject ``S1``, whose ``fullhead``/``thick`` voxels the demo
  sub-samples). The volume masks come from :func:`cortex.utils.get_roi_masks` (no Inkscape needed)
  and are mapped onto the subject's columns through world coordinates, so a sub-grid of the
  pycortex volume (the demo) lines up with its response columns.
- :func:`label_image_rois`: a label NIfTI on the subject's grid plus a TSV of ``index``/``name``
  (the BIDS ``*_dseg.nii.gz`` + ``*_dseg.tsv`` convention; :func:`bids_dseg_rois` finds them).

Conventions (the same for every source):

- **Overlap.** ``overlap="drop"`` (default): a voxel that falls in more than one of the requested
  ROIs belongs to none of them (pycortex's own default; it keeps ROI statistics independent). The
  counts of an ROI can therefore depend on which other ROIs are requested. ``overlap="keep"``: a
  voxel counts in every ROI it falls in. Label images cannot overlap.
- **Empty ROIs.** An ROI with no voxels among the subject's columns stays in the set (all-False
  mask) with a :class:`~lmbrain.LmbrainWarning` naming it; :func:`roi_summary` gives it a row with
  0 voxels and NaN statistics, so tables of several subjects keep the same rows.
  :meth:`RoiSet.drop_small` removes ROIs under a voxel count.

:func:`roi_summary` gives, per ROI: voxel counts, median test correlation, median TRW (words and
seconds) over significant voxels with a seeded percentile bootstrap interval over voxels, and the
shares of the in-silico scrambling classes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import LmbrainError, LmbrainWarning
from .volume import VoxelSpace

log = logging.getLogger(__name__)

OVERLAP_POLICIES = ("drop", "keep")


class RoiError(LmbrainError, ValueError):
    """An ROI source that cannot be used; the message names the file or key and what to do."""


# ------------------------------------------------------------------------------------------
@dataclass(eq=False)
class RoiSet:
    """Named boolean masks over a subject's voxel columns.

    Attributes
    ----------
    names : list of str, length n_rois
    masks : bool array, shape (n_rois, n_voxels)
        ``masks[i, v]``: column ``v`` of the responses is in ROI ``names[i]``.
    source : str
        Where the ROIs came from (for messages).
    """

    names: list
    masks: np.ndarray
    source: str = ""
    _index: dict = field(init=False, repr=False)

    def __post_init__(self):
        self.names = [str(n) for n in self.names]
        self.masks = np.asarray(self.masks, dtype=bool)
        if self.masks.ndim != 2 or self.masks.shape[0] != len(self.names):
            raise RoiError(f"{self.source or 'ROI set'}: masks must be (n_rois={len(self.names)}, n_voxels), "
                           f"got shape {self.masks.shape}")
        dup = sorted({n for n in self.names if self.names.count(n) > 1})
        if dup:
            raise RoiError(f"{self.source or 'ROI set'}: duplicate ROI name(s) {', '.join(dup)}")
        self._index = {n: i for i, n in enumerate(self.names)}

    @classmethod
    def from_dict(cls, masks: dict, source: str = "") -> "RoiSet":
        """From ``{name: bool (n_voxels,)}`` (insertion order kept)."""
        names = list(masks)
        if not names:
            raise RoiError(f"{source or 'ROI set'}: no ROIs")
        return cls(names, np.stack([np.asarray(masks[n], dtype=bool) for n in names]), source)

    @property
    def n_voxels(self) -> int:
        """Number of voxel columns the masks cover."""
        return int(self.masks.shape[1])

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name) -> bool:
        return name in self._index

    def __getitem__(self, name: str) -> np.ndarray:
        """The (n_voxels,) boolean mask of ROI ``name``."""
        return self.masks[self._lookup([name])[0]]

    def __iter__(self):
        return iter(zip(self.names, self.masks))

    def _lookup(self, names) -> list[int]:
        missing = [n for n in names if n not in self._index]
        if missing:
            raise RoiError(f"{self.source or 'ROI set'}: no ROI named {', '.join(map(repr, missing))}; "
                           f"available: {', '.join(self.names)}")
        return [self._index[n] for n in names]

    def counts(self) -> pd.Series:
        """Voxels per ROI: integer Series indexed by ROI name."""
        return pd.Series(self.masks.sum(axis=1).astype(int), index=self.names, name="voxels")

    def select(self, names) -> "RoiSet":
        """The ROIs ``names`` in that order; an unknown name raises :class:`RoiError` listing the available ones."""
        idx = self._lookup(list(names))
        return RoiSet([self.names[i] for i in idx], self.masks[idx], self.source)

    def drop_small(self, min_voxels: int) -> "RoiSet":
        """Leave out ROIs with fewer than ``min_voxels`` voxels (logged)."""
        keep = self.masks.sum(axis=1) >= min_voxels
        if not keep.all():
            log.info("%s: leaving out ROI(s) with fewer than %d voxels: %s", self.source, min_voxels,
                     ", ".join(f"{n} ({c})" for n, c, k in zip(self.names, self.masks.sum(axis=1), keep) if not k))
        return RoiSet([n for n, k in zip(self.names, keep) if k], self.masks[keep], self.source)

    def overlapping(self) -> np.ndarray:
        """(n_voxels,) bool: voxels in more than one ROI."""
        return self.masks.sum(axis=0) > 1

    def resolve_overlap(self, policy: str = "drop") -> "RoiSet":
        """Apply an overlap policy: ``"drop"`` removes voxels in more than one ROI from all of them
        (logged), ``"keep"`` leaves the masks as they are."""
        if policy not in OVERLAP_POLICIES:
            raise RoiError(f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, got {policy!r}")
        multi = self.overlapping()
        if policy == "keep" or not multi.any():
            return self
        log.info("%s: %d voxel(s) fall in more than one ROI (%s); they are left out of all of them", self.source,
                 int(multi.sum()), ", ".join(n for n, m in self if (m & multi).any()))
        return RoiSet(self.names, self.masks & ~multi[None, :], self.source)

    def labels(self) -> np.ndarray:
        """(n_voxels,) int: 1 + the index of each voxel's ROI, 0 outside every ROI. Needs disjoint ROIs."""
        if self.overlapping().any():
            raise RoiError(f"{self.source}: ROIs overlap in {int(self.overlapping().sum())} voxels; "
                           "a label vector needs disjoint ROIs (use overlap='drop')")
        lab = np.zeros(self.n_voxels, dtype=np.int32)
        for i, m in enumerate(self.masks):
            lab[m] = i + 1
        return lab


def _warn_empty(rois: RoiSet) -> None:
    empty = [n for n, c in zip(rois.names, rois.masks.sum(axis=1)) if c == 0]
    if empty:
        warnings.warn(f"{rois.source}: ROI(s) {', '.join(empty)} have no voxels among the subject's "
                      f"{rois.n_voxels} columns; they get 0 voxels and NaN statistics (leave them out of the ROI "
                      "list to silence this)", LmbrainWarning, stacklevel=3)


# ------------------------------------------------------------------------------------------
# pycortex
_PYCORTEX_FOLDERS = (("basic", "filestore", "db"), ("webgl", "colormaps", "colormaps"))


def _installed_pycortex_folder(name: str) -> Path | None:
    """``share/pycortex/<name>`` where pip put pycortex's data files for this interpreter (the
    environment's data path, then the user's), None when neither holds it."""
    import sysconfig

    schemes = [sysconfig.get_default_scheme(), f"{os.name}_user"]
    for scheme in dict.fromkeys(schemes):
        try:
            data = sysconfig.get_paths(scheme)["data"]
        except KeyError:  # a scheme this platform lacks
            continue
        folder = Path(data) / "share" / "pycortex" / name
        if folder.is_dir():
            return folder
    return None


def _usable_pycortex_folder(configured: str | None, name: str) -> str | None:
    """``configured`` when it is a folder, else pycortex's installed ``share/pycortex/<name>`` (or
    ``configured`` again when that is missing too, for pycortex to report)."""
    if configured and Path(configured).is_dir():
        return configured
    installed = _installed_pycortex_folder(name)
    return str(installed) if installed is not None else configured


# what pycortex prints on stdout when imported on a machine without Inkscape (cortex.testing_utils)
_INKSCAPE_NOTICE = "Inkscape not found. Some tests will be skipped."


def _import_cortex():
    """``import cortex``, without the notice pycortex prints on import where Inkscape is missing
    ("Inkscape not found. Some tests will be skipped. ..."). pycortex needs Inkscape only to draw its
    ROI outlines and labels onto a flatmap, which lmbrain never asks for (``with_rois=False``; lmbrain
    draws ROI outlines itself), so the notice told a workflow's user about tests they never run, once
    per job that imports pycortex (19 times in a one-subject demo run). Anything else the import prints
    is printed as before."""
    import sys

    if "cortex" in sys.modules:
        return sys.modules["cortex"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        import cortex
    rest = [line for line in out.getvalue().splitlines() if not line.startswith(_INKSCAPE_NOTICE)]
    if rest:
        print("\n".join(rest))
    return cortex


def import_pycortex():
    """pycortex, imported, its database and colour maps found even where its settings name folders
    that do not exist.

    pycortex writes the folder it was built in into its ``defaults.cfg`` and copies that into the
    user's ``options.cfg`` on first import; pip reuses a wheel built in another environment (a
    deleted one: a CI clone, an old virtual environment), so the subject database ``S1`` can sit
    where the settings do not look. A ``filestore`` or ``colormaps`` setting that is not a folder is
    replaced, in this process only, by the folder installed with pycortex, with a
    :class:`~lmbrain.LmbrainWarning` naming both (once: the repaired settings need no repair at the
    next call); no file is changed. Every lmbrain use of pycortex goes through here.
    """
    cortex = _import_cortex()
    from cortex import options

    repairs = []
    for section, option, name in _PYCORTEX_FOLDERS:
        configured = options.config.get(section, option, fallback=None)
        usable = _usable_pycortex_folder(configured, name)
        if usable != configured:
            options.config.set(section, option, usable)
            repairs.append((option, configured, usable))
            if option == "filestore":
                import cortex.database

                cortex.database.default_filestore = usable
                if str(cortex.db.filestore) == str(configured):  # not inside another filestore's block
                    cortex.db.filestore, cortex.db._subjects = usable, None
    if repairs:
        said = "; ".join(f"{option} {old} -> {new}" for option, old, new in repairs)
        warnings.warn(f"{options.usercfg}: pycortex's settings name folders that do not exist, so lmbrain uses "
                      f"the ones installed with pycortex ({said}). pycortex writes the folder it was built in, and "
                      "pip can reuse a wheel built elsewhere; set these options in that file to silence this",
                      LmbrainWarning, stacklevel=2)
    return cortex


def _filestore_for(subject: str | None, filestore=None):
    """The filestore to read pycortex ``subject`` from: ``filestore`` when given; else None (pycortex's
    configured one), unless only the filestore installed with pycortex holds the subject: pycortex's
    bundled ``S1`` (the demo's) while the settings name a lab's own filestore (LeBel's ``pycortex-db``)."""
    if filestore is not None or not subject:
        return filestore
    configured = _configured_filestore()
    if configured is None or (Path(configured) / subject).is_dir():
        return None
    installed = _installed_pycortex_folder("db")
    if installed is None or not (installed / subject).is_dir():
        return None  # pycortex's configured filestore says what it lacks
    log.info("pycortex subject %s is not in the configured filestore %s; reading it from %s, installed with "
             "pycortex", subject, configured, installed)
    return str(installed)


@contextlib.contextmanager
def _pycortex_filestore(filestore, subject: str | None = None):
    """Point pycortex's database at ``filestore`` for the duration of the block (None: leave it, or
    where only the filestore installed with pycortex holds ``subject``, point it there:
    :func:`_filestore_for`)."""
    cortex = import_pycortex()

    filestore = _filestore_for(subject, filestore)
    if filestore is None:
        with _pycortex_cache(cortex, subject):
            yield cortex.db
        return
    filestore = str(Path(filestore))
    if not Path(filestore).is_dir():
        raise RoiError(f"{filestore}: pycortex filestore not found")
    db = cortex.db
    saved = db.filestore, db._subjects, getattr(db, "_memocache", None)
    db.filestore, db._subjects = filestore, None
    db._memocache = {}
    try:
        with _pycortex_cache(cortex, subject):
            yield db
    finally:
        db.filestore, db._subjects = saved[0], saved[1]
        if saved[2] is None:
            del db._memocache
        else:
            db._memocache = saved[2]


@contextlib.contextmanager
def _pycortex_cache(cortex, subject: str | None):
    """Let pycortex write the cache files of ``subject`` where no other job reads them half-written, and
    where it can write at all.

    pycortex makes a missing cache file (a flatmap's pixel map at each image height, ~7 s; a mapper; a
    surface's curvature) and writes it in place, into ``db.get_cache(subject)``. Jobs drawing maps side
    by side (the encoding jobs' first maps on a fresh install, or a cluster's jobs on one shared
    install) then both make it, and one can read the file while the other writes it: a truncated file,
    and that map drawn as slices. A folder it cannot write (a container, a shared read-only environment)
    gets no cache file at all, so every flatmap fails. In the block pycortex's cache folder is a private
    one (``.pycortex.building-<pid>-*`` inside the shared folder, which :func:`lmbrain.io.remove_stale_builds`
    clears after a killed job) holding links to the shared folder's files (but a mapper's that pycortex would
    make again: :func:`_stale_mappers`); the files pycortex adds there
    are moved into the shared folder whole (``os.replace``) when the block ends without an error. The shared
    folder is pycortex's own when writable, else ``$XDG_CACHE_HOME/lmbrain/pycortex/<subject>``
    (``~/.cache``), and the files a read-only pycortex folder already holds are linked too (read, not
    made again). Where neither can be written, pycortex is left as it is."""
    from .io import remove_stale_builds

    private = None
    if subject and (Path(cortex.db.filestore) / subject).is_dir():  # get_cache would make a folder for any name
        try:
            own = Path(cortex.db.get_cache(subject))
        except OSError:  # a read-only folder with no cache folder yet
            own = None
        shared = own
        try:
            if own is None or not os.access(own, os.W_OK):
                home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
                shared = Path(home) / "lmbrain" / "pycortex" / subject
                shared.mkdir(parents=True, exist_ok=True)
            remove_stale_builds(shared / "pycortex")
            private = Path(tempfile.mkdtemp(prefix=f".pycortex.building-{os.getpid()}-", dir=shared))
            cache = private / subject / "cache"  # pycortex's layout under its "cache" setting
            cache.mkdir(parents=True)
            # the shared folder's files, then those a read-only pycortex folder already holds (an image
            # built with them) that the shared one lacks; not a file pycortex would make again, which it
            # would write through the link into the shared file, in place
            stale = _stale_mappers(cortex, subject)
            for folder in dict.fromkeys(d for d in (shared, own) if d is not None and d.is_dir()):
                for f in folder.iterdir():
                    if (f.is_file() and not f.name.startswith(".") and not os.path.lexists(cache / f.name)
                            and not stale(f)):
                        (cache / f.name).symlink_to(f)
        except OSError:
            if private is not None:
                shutil.rmtree(private, ignore_errors=True)
            private = None
    if private is None:
        yield
        return
    config = cortex.options.config
    had = config.get("basic", "cache", fallback=None)
    config.set("basic", "cache", str(private))
    try:
        try:
            yield
        finally:
            if had is None:
                config.remove_option("basic", "cache")
            else:
                config.set("basic", "cache", had)
        try:
            for f in cache.iterdir():
                if f.is_file() and not f.is_symlink():
                    os.replace(f, shared / f.name)
        except OSError as exc:  # the drawing is done; the next job makes the file again
            log.warning("could not keep pycortex's new cache files in %s (%s)", shared, exc)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _stale_mappers(cortex, subject: str):
    """A test of whether pycortex would make a cache file of ``subject`` again although it exists.

    pycortex reads an existing cache file as it is, except a mapper's (``<xfm>_<type>.npz``, made by
    ``cortex.get_mapper``), which it makes again unless it is newer than its transform
    (``transforms/<xfm>/matrices.xfm``; never for ``identity``)."""
    try:
        xfmdir = cortex.db.get_paths(subject)["xfmdir"]
        xfms = {p.parent.name: p for p in Path(xfmdir.format(xfmname="*")).parent.parent.glob("*/matrices.xfm")
                if p.parent.name != "identity"}
    except Exception:  # a subject without transforms: no mapper to make
        xfms = {}

    def stale(f: Path) -> bool:
        xfm = next((x for name, x in xfms.items() if f.name.startswith(name + "_") and f.suffix == ".npz"), None)
        try:
            return xfm is not None and f.stat().st_mtime <= xfm.stat().st_mtime
        except OSError:
            return False

    return stale


def _overlays_path(db, subject: str) -> Path:
    return _subject_overlays(db.filestore, subject)


def _subject_overlays(filestore, subject: str) -> Path:
    subj_dir = Path(filestore) / subject
    if not subj_dir.is_dir():
        avail = sorted(p.name for p in Path(filestore).iterdir() if p.is_dir())
        raise RoiError(f"{filestore}: no pycortex subject {subject!r} (available: {', '.join(avail)})")
    svg = subj_dir / "overlays.svg"
    if not svg.exists():
        raise RoiError(f"{svg}: the pycortex subject has no overlays.svg, so no drawn ROIs; give the ROIs as a "
                       "label image with a TSV of names instead")
    return svg


def _drawn_rois(svg_path: Path) -> tuple[list[str], list[str]]:
    """(ROIs with at least one outline, ROI layers without any) in the ``rois`` layer of ``overlays.svg``."""
    from cortex import svgoverlay

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            svg = svgoverlay.SVGOverlay(str(svg_path))
            shapes = svg.layers["rois"].shapes
    except KeyError:
        raise RoiError(f"{svg_path}: no 'rois' layer in the overlays file") from None
    except Exception as exc:  # lxml / parse errors
        raise RoiError(f"{svg_path}: cannot read the overlays file ({exc})") from None
    drawn = [n for n, s in shapes.items() if len(s.paths) > 0]
    return drawn, [n for n in shapes if n not in drawn]


def pycortex_roi_names(subject: str, filestore=None) -> list[str]:
    """Names of the ROIs drawn in a pycortex subject's ``overlays.svg`` (layers with no outline left out).

    Parameters
    ----------
    subject : str
        pycortex subject (e.g. ``"S1"``, ``"UTS01"``).
    filestore : path, optional
        pycortex filestore holding the subject; default: pycortex's configured one.
    """
    # The workflow checks rois.names with this at every start (each dry run, each cluster job), and
    # importing pycortex takes about 2 s: the overlays file is found and read without it where it can be.
    store = _filestore_for(subject, filestore) or _configured_filestore()
    if store is not None and Path(store).is_dir():
        svg = _subject_overlays(store, subject)
        fast = _drawn_rois_plain(svg)
        if fast is not None:
            return fast[0]
    with _pycortex_filestore(filestore, subject) as db:
        return _drawn_rois(_overlays_path(db, subject))[0]


_SVG_NS = "{http://www.w3.org/2000/svg}"
_INK_LABEL = "{http://www.inkscape.org/namespaces/inkscape}label"


def _configured_filestore() -> str | None:
    """pycortex's configured filestore, read as ``cortex.options`` reads it (the package's
    ``defaults.cfg``, then the user's ``options.cfg``) but without importing pycortex; pycortex's own
    ``cortex.db.filestore`` once it is imported. A setting that is not a folder gives the filestore
    installed with pycortex, as :func:`import_pycortex` does. None when pycortex is not installed or
    its files are not where this expects them (the caller then asks pycortex)."""
    import sys

    if "cortex" in sys.modules and hasattr(sys.modules["cortex"], "db"):
        return _usable_pycortex_folder(str(sys.modules["cortex"].db.filestore), "db")
    import configparser
    import importlib.util

    try:
        spec = importlib.util.find_spec("cortex")
        if spec is None or not spec.submodule_search_locations:
            return None
        pkg = Path(list(spec.submodule_search_locations)[0])
        ad_spec = importlib.util.spec_from_file_location("_lmbrain_pycortex_appdirs", pkg / "appdirs.py")
        appdirs = importlib.util.module_from_spec(ad_spec)
        ad_spec.loader.exec_module(appdirs)
        cfg = configparser.ConfigParser()
        if not cfg.read(pkg / "defaults.cfg"):
            return None
        cfg.read(Path(appdirs.user_data_dir("pycortex")) / "options.cfg")
    except Exception:  # noqa: BLE001 - any surprise: let pycortex resolve it
        return None
    configured = cfg.get("basic", "filestore") if cfg.has_option("basic", "filestore") \
        else str(pkg.parent / "filestore" / "db")
    return _usable_pycortex_folder(configured, "db")


def _drawn_rois_plain(svg_path: Path) -> tuple[list[str], list[str]] | None:
    """:func:`_drawn_rois` read with the standard library: the same answer for a well-formed overlays
    file (every top-level layer but ``data`` labelled and holding ``shapes`` and ``labels`` layers, as
    pycortex's reader requires), None for anything else, which pycortex then reads and reports on. (A
    path pycortex cannot parse is found by the ``rois`` job, which reads the file with pycortex.)"""
    from xml.etree import ElementTree

    try:
        root = ElementTree.parse(svg_path).getroot()
    except (ElementTree.ParseError, OSError):
        return None
    layers = root.findall(f"{_SVG_NS}g")
    data = [g for g in layers if g.get(_INK_LABEL) == "data"][:1]  # pycortex drops the first data layer
    shapes_of = {}
    for g in layers:
        if g in data:
            continue
        name = g.get(_INK_LABEL)
        sub = {s.get(_INK_LABEL): s for s in reversed(g.findall(f"{_SVG_NS}g"))}  # the first of each label
        if name is None or "shapes" not in sub or "labels" not in sub:
            return None
        shapes_of[name] = sub["shapes"]
    if "rois" not in shapes_of:
        return None
    count = {}
    for shape in shapes_of["rois"].findall(f"{_SVG_NS}g"):
        name = shape.get(_INK_LABEL)
        if name is None:
            return None
        count[name] = len(shape.findall(f"{_SVG_NS}path"))
    drawn = [n for n, c in count.items() if c > 0]
    return drawn, [n for n in count if n not in drawn]


_VOLUME_CACHE: dict = {}


def _sha1(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def pycortex_roi_volumes(subject: str, xfm: str, roi_names, gm_sampler="thick", threshold=None,
                         cache_dir=None, filestore=None) -> dict:
    """Volume masks of pycortex ROIs, overlaps kept, cached in memory and (optionally) on disk.

    Calls :func:`cortex.utils.get_roi_masks` (``allow_overlap=True``) once for the ROIs not cached
    yet; for S1 this takes about 8 s for two ROIs and 25 s for all of them, most of it fixed cost.
    The on-disk cache (``cache_dir/<subject>_<xfm>_<sampler>_<hash>.npz``) is keyed by the subject,
    transform, sampler, threshold and the SHA-1 of ``overlays.svg`` and of the
    transform's ``matrices.xfm``: redrawing an ROI invalidates it.

    Parameters
    ----------
    subject, xfm : str
        pycortex subject and transform.
    roi_names : list of str
        ROIs drawn in the subject's ``overlays.svg`` (checked by the caller).
    gm_sampler, threshold
        Passed to :func:`cortex.utils.get_roi_masks` (``threshold`` only matters for the
        mapper-based samplers).
    cache_dir : path, optional
    filestore : path, optional

    Returns
    -------
    dict
        ``{name: bool array (Z, Y, X)}`` in pycortex's (z, y, x) orientation of the transform's
        reference volume.
    """
    cortex = import_pycortex()

    with _pycortex_filestore(filestore, subject) as db:
        svg = _overlays_path(db, subject)
        xfm_file = Path(db.filestore) / subject / "transforms" / xfm / "matrices.xfm"
        if not xfm_file.exists():
            avail = sorted(p.name for p in (Path(db.filestore) / subject / "transforms").glob("*") if p.is_dir())
            raise RoiError(f"{xfm_file}: no pycortex transform {xfm!r} for subject {subject!r} "
                           f"(available: {', '.join(avail)})")
        digest = hashlib.sha1(repr((subject, xfm, gm_sampler, threshold, _sha1(svg),
                                    _sha1(xfm_file))).encode()).hexdigest()[:16]
        key = (str(db.filestore), digest)
        cached = _VOLUME_CACHE.setdefault(key, {})
        disk = Path(cache_dir) / f"{subject}_{xfm}_{gm_sampler}_{digest}.npz" if cache_dir is not None else None
        if disk is not None and disk.exists() and not all(r in cached for r in roi_names):
            try:
                with np.load(disk) as npz:
                    for n in npz.files:
                        cached.setdefault(n, npz[n].astype(bool))
            except Exception as exc:  # a broken cache file is recomputed, not fatal
                log.warning("%s: unreadable ROI cache (%s); recomputing", disk, exc)
        missing = [r for r in roi_names if r not in cached]
        if missing:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                vols = cortex.utils.get_roi_masks(subject, xfm, roi_list=list(missing), gm_sampler=gm_sampler,
                                                  split_lr=False, allow_overlap=True, threshold=threshold,
                                                  return_dict=True)
            for n, v in vols.items():
                cached[n] = np.asarray(v) > 0
            if disk is not None:
                from .io import atomic_path

                with atomic_path(disk) as tmp:
                    with open(tmp, "wb") as fh:
                        np.savez_compressed(fh, **cached)
        return {r: cached[r] for r in roi_names}


def _reference(db, subject: str, xfm: str):
    return db.get_xfm(subject, xfm).reference


def pycortex_rois(subject: str, xfm: str, roi_names=None, voxel_space: VoxelSpace | None = None,
                  gm_sampler="thick", threshold=None, overlap: str = "drop",
                  cache_dir=None, filestore=None) -> RoiSet:
    """ROIs drawn in a pycortex subject's ``overlays.svg``, as masks over the subject's voxel columns.

    Parameters
    ----------
    subject, xfm : str
        pycortex subject and transform (the demo: ``"S1"``, ``"fullhead"``; LeBel et al.'s release:
        e.g. ``"UTS01"``, ``"UTS01_auto"``).
    roi_names : list of str, optional
        ROIs to read; default: every ROI with an outline in ``overlays.svg``. A name that is not
        drawn there raises :class:`RoiError` listing the available ones.
    voxel_space : VoxelSpace, optional
        The subject's voxel columns (``Dataset.voxel_space``). Its voxels are mapped through world
        coordinates onto the transform's reference grid, so a sub-grid of that grid (the demo)
        works; a grid that is not a subset of it raises :class:`RoiError`. Default: the transform's
        own ``mask_<gm_sampler>`` in pycortex order.
    gm_sampler, threshold
        Passed to :func:`cortex.utils.get_roi_masks`.
    overlap : {"drop", "keep"}
        What to do with voxels in more than one ROI (see the module docstring).
    cache_dir : path, optional
        Folder for the on-disk cache of the volume masks (see :func:`pycortex_roi_volumes`).
    filestore : path, optional
        pycortex filestore holding the subject; default: pycortex's configured one.

    Returns
    -------
    RoiSet
        masks of shape (n_rois, n_voxels) in the column order of ``voxel_space``.
    """
    import nibabel as nib

    if overlap not in OVERLAP_POLICIES:
        raise RoiError(f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, got {overlap!r}")
    with _pycortex_filestore(filestore, subject) as db:
        svg = _overlays_path(db, subject)
        drawn, undrawn = _drawn_rois(svg)
        if roi_names is None:
            roi_names = drawn
        else:
            roi_names = [str(r) for r in ([roi_names] if isinstance(roi_names, str) else roi_names)]
            bad = [r for r in roi_names if r not in drawn]
            if bad:
                extra = f" (layer(s) {', '.join(r for r in bad if r in undrawn)} exist but have no outline)" \
                    if any(r in undrawn for r in bad) else ""
                raise RoiError(f"{svg}: ROI(s) {', '.join(map(repr, bad))} not drawn in the overlays{extra}; "
                               f"available: {', '.join(drawn)}")
        if not roi_names:
            raise RoiError(f"{svg}: no ROIs drawn in the overlays")
        ref = _reference(db, subject, xfm)
        if voxel_space is None:
            mask = np.asarray(db.get_mask(subject, xfm, gm_sampler), dtype=bool)
            voxel_space = VoxelSpace(mask=mask.T, affine=ref.affine, order="pycortex",
                                     source=f"pycortex {subject}/{xfm} mask_{gm_sampler}")
        vols = pycortex_roi_volumes(subject, xfm, roi_names, gm_sampler, threshold, cache_dir)
    # subject's voxels -> indices on the reference grid, through world coordinates
    ref_shape = tuple(int(s) for s in ref.shape[:3])  # (X, Y, Z)
    ijk = nib.affines.apply_affine(np.linalg.inv(ref.affine) @ voxel_space.affine, voxel_space.indices())
    rounded = np.rint(ijk).astype(int)
    off_grid = np.abs(ijk - rounded).max() if len(ijk) else 0.0
    outside = ((rounded < 0) | (rounded >= np.array(ref_shape))).any(axis=1)
    if off_grid > 1e-2 or outside.any():
        raise RoiError(
            f"{voxel_space.source or 'voxel space'}: its voxels are not on the grid of pycortex transform "
            f"{subject}/{xfm} (reference shape {ref_shape}; {int(outside.sum())} voxel(s) outside it, largest "
            f"off-grid offset {off_grid:.3g} voxel); use the subject's own pycortex transform, or give the ROIs "
            "as a label image on the subject's grid")
    names = list(vols)
    masks = np.stack([vols[n][rounded[:, 2], rounded[:, 1], rounded[:, 0]] for n in names])
    source = f"{svg} ({xfm}, {gm_sampler})"
    rois = RoiSet(names, masks, source).resolve_overlap(overlap)
    _warn_empty(rois)
    return rois


# ------------------------------------------------------------------------------------------
# label images
def read_label_table(path) -> pd.DataFrame:
    """A TSV of ROI labels with BIDS ``dseg.tsv`` columns ``index`` (integer) and ``name``.

    Returns a DataFrame with columns ``index`` (int) and ``name`` (str), one row per label; other
    columns (``abbreviation``, ``color``, ...) are kept.
    """
    path = Path(path)
    if not path.exists():
        raise RoiError(f"{path}: ROI label table not found (a TSV with columns index, name)")
    try:
        table = pd.read_csv(path, sep="\t", dtype={"name": str})
    except Exception as exc:
        raise RoiError(f"{path}: cannot read the ROI label table as TSV ({exc})") from None
    missing = [c for c in ("index", "name") if c not in table.columns]
    if missing:
        raise RoiError(f"{path}: the ROI label table needs tab-separated columns 'index' and 'name'; "
                       f"missing {', '.join(missing)} (found {', '.join(map(str, table.columns))})")
    idx = pd.to_numeric(table["index"], errors="coerce")
    if idx.isna().any() or (idx != np.round(idx)).any():
        raise RoiError(f"{path}: column 'index' must hold integers")
    table["index"] = idx.astype(int)
    table["name"] = table["name"].fillna("").astype(str).str.strip()
    if (table["name"] == "").any():
        rows = ", ".join(map(str, np.flatnonzero(table["name"] == "") + 2))
        raise RoiError(f"{path}: empty ROI name in line(s) {rows}")
    for col in ("index", "name"):
        dup = table[col][table[col].duplicated()].unique()
        if len(dup):
            raise RoiError(f"{path}: duplicate {col}(s) {', '.join(map(str, dup))}")
    return table


def label_image_rois(label_nifti, labels_tsv, voxel_space: VoxelSpace, roi_names=None,
                     atol: float = 1e-3) -> RoiSet:
    """ROIs from a label NIfTI on the subject's grid and a TSV of label names.

    Parameters
    ----------
    label_nifti : path
        3-D integer image (or 4-D with one volume); 0 is background. Must have the shape and affine
        of ``voxel_space``'s mask, else :class:`RoiError` naming the file.
    labels_tsv : path
        Columns ``index`` and ``name`` (BIDS ``*_dseg.tsv``); see :func:`read_label_table`. Index 0
        is background even when listed. Labels in the image that the table does not name are ignored
        (logged).
    voxel_space : VoxelSpace
        The subject's voxel columns.
    roi_names : list of str, optional
        ROIs to keep, in this order; default: every row of the table except index 0.
    atol : float
        Tolerance on the affines (mm).

    Returns
    -------
    RoiSet
        masks (n_rois, n_voxels) in the column order of ``voxel_space``; disjoint by construction.
    """
    import nibabel as nib

    path = Path(label_nifti)
    if not path.exists():
        raise RoiError(f"{path}: ROI label image not found")
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise RoiError(f"{path}: cannot read the ROI label image as NIfTI ({exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape != voxel_space.mask.shape or not np.allclose(img.affine, voxel_space.affine, atol=atol):
        raise RoiError(
            f"{path}: the label image is on another grid than the subject's voxels ({voxel_space.source}): shape "
            f"{data.shape} vs {voxel_space.mask.shape}, affine\n{np.round(img.affine, 3)}\nvs\n"
            f"{np.round(voxel_space.affine, 3)}; resample it onto the subject's grid with nearest-neighbour "
            "interpolation (e.g. nilearn.image.resample_to_img(labels, mask, interpolation='nearest'))")
    data = np.asarray(data)
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise RoiError(f"{path}: a label image must hold integer labels (found non-integer values)")
        data = data.astype(np.int64)
    table = read_label_table(labels_tsv)
    table = table[table["index"] != 0]
    cols = voxel_space.mask_columns(data)
    unnamed = sorted(set(np.unique(cols).tolist()) - set(table["index"].tolist()) - {0})
    if unnamed:
        log.info("%s: label(s) %s are not named in %s; ignored", path, unnamed, labels_tsv)
    by_name = dict(zip(table["name"], table["index"]))
    if roi_names is None:
        roi_names = list(table["name"])
    else:
        roi_names = [str(r) for r in ([roi_names] if isinstance(roi_names, str) else roi_names)]
        bad = [r for r in roi_names if r not in by_name]
        if bad:
            raise RoiError(f"{labels_tsv}: ROI(s) {', '.join(map(repr, bad))} not in the label table; "
                           f"available: {', '.join(table['name'])}")
    if not roi_names:
        raise RoiError(f"{labels_tsv}: no ROIs (only background) in the label table")
    masks = np.stack([cols == by_name[n] for n in roi_names])
    rois = RoiSet(roi_names, masks, str(path))
    _warn_empty(rois)
    return rois


def find_bids_dseg(root, subject: str, desc: str | None = None) -> tuple[Path, Path]:
    """The ``*_dseg.nii[.gz]`` of a BIDS subject and its ``*_dseg.tsv``.

    Looks under ``<root>/sub-<subject>/``; files in a ``func`` folder (beside the runs, so on their
    grid) are preferred over others. ``desc`` keeps files with ``_desc-<desc>_``. Several candidates
    left -> :class:`RoiError` listing them. The TSV is the image's name with ``.nii[.gz]`` replaced
    by ``.tsv``, or failing that ``<root>/desc-<desc>_dseg.tsv`` / ``<root>/dseg.tsv`` (BIDS
    inheritance at the dataset root).
    """
    root = Path(root)
    base = root / f"sub-{subject}"
    if not base.is_dir():
        raise RoiError(f"{base}: no such BIDS subject folder")
    cands = sorted(base.rglob("*_dseg.nii*"))
    if desc is not None:
        cands = [c for c in cands if f"_desc-{desc}_" in c.name]
    if not cands:
        raise RoiError(f"{base}: no *_dseg.nii.gz ROI label image{f' with desc-{desc}' if desc else ''}; put "
                       f"sub-{subject}_desc-rois_dseg.nii.gz (labels on the runs' grid) and its _dseg.tsv "
                       f"(columns index, name) in {base / 'func'}")
    func = [c for c in cands if c.parent.name == "func"]
    pick = func or cands
    if len(pick) > 1:
        raise RoiError(f"{base}: several ROI label images ({', '.join(str(c.relative_to(root)) for c in pick)}); "
                       "choose one with desc")
    img = pick[0]
    stem = img.name[: img.name.index(".nii")]
    tsvs = [img.with_name(stem + ".tsv")] + ([root / f"desc-{desc}_dseg.tsv"] if desc else []) + [root / "dseg.tsv"]
    for tsv in tsvs:
        if tsv.exists():
            return img, tsv
    raise RoiError(f"{img}: no label table beside it: put {img.with_name(stem + '.tsv')} "
                   "(tab-separated columns index, name)")


def bids_dseg_rois(root, subject: str, voxel_space: VoxelSpace, roi_names=None, desc: str | None = None) -> RoiSet:
    """ROIs of a BIDS subject from its ``*_dseg.nii.gz`` and ``*_dseg.tsv`` (:func:`find_bids_dseg`,
    :func:`label_image_rois`)."""
    img, tsv = find_bids_dseg(root, subject, desc)
    return label_image_rois(img, tsv, voxel_space, roi_names)


def write_label_image(rois: RoiSet, voxel_space: VoxelSpace, nifti_path, tsv_path) -> None:
    """Write disjoint ROIs as a label NIfTI (labels 1..n) and a BIDS-style TSV (``index``, ``name``).

    :func:`label_image_rois` reads them back; the workflow can keep a subject's ROIs this way so that
    pycortex is asked once.
    """
    from .io import atomic_path

    if rois.n_voxels != voxel_space.n_voxels:
        raise RoiError(f"{rois.source}: {rois.n_voxels} ROI columns for a voxel space of {voxel_space.n_voxels}")
    img_vals = rois.labels().astype(np.float32)
    import nibabel as nib

    img = nib.Nifti1Image(voxel_space.unmask(img_vals, fill=0).astype(np.int16), voxel_space.affine)
    with atomic_path(nifti_path) as tmp:
        nib.save(img, tmp)
    table = pd.DataFrame({"index": np.arange(1, len(rois) + 1), "name": rois.names})
    with atomic_path(tsv_path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)


# ------------------------------------------------------------------------------------------
# per-ROI summary of the TRW table
R_COLUMNS = ("test_r", "test_r_best")


def _roi_rng(seed: int, name: str) -> np.random.Generator:
    """A generator per (seed, ROI name): an ROI's interval does not depend on the other ROIs."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def bootstrap_median(values: np.ndarray, n_boot: int, rng: np.random.Generator, ci: float = 0.95,
                     chunk: int = 256) -> np.ndarray:
    """Percentile bootstrap interval of the median over the rows of ``values``.

    Parameters
    ----------
    values : float array, shape (n,) or (n, k)
        Columns are resampled together (the same voxels for every column).
    n_boot : int
    rng : numpy Generator
    ci : float
        Coverage of the interval (0.95 gives the 2.5th and 97.5th percentiles).

    Returns
    -------
    float array, shape (2,) or (2, k)
        Low and high ends.
    """
    v = np.asarray(values, dtype=np.float64)
    one = v.ndim == 1
    v = v[:, None] if one else v
    n = v.shape[0]
    meds = np.empty((n_boot, v.shape[1]))
    for b0 in range(0, n_boot, chunk):
        b = min(chunk, n_boot - b0)
        idx = rng.integers(0, n, size=(b, n))
        meds[b0: b0 + b] = np.median(v[idx], axis=1)
    q = 100 * (1 - ci) / 2
    out = np.percentile(meds, [q, 100 - q], axis=0)
    return out[:, 0] if one else out


def roi_summary(voxels: pd.DataFrame, rois: RoiSet, n_boot: int = 1000, seed: int = 0, ci: float = 0.95,
                min_significant: int = 5, words_per_second: float | None = None,
                r_column: str | None = None) -> pd.DataFrame:
    """Per-ROI counts, median test r and median TRW with a bootstrap interval over voxels.

    Parameters
    ----------
    voxels : DataFrame, n_voxels rows in column order
        The TRW table (``trw/.../voxels.tsv``): ``significant`` (bool), ``trw_words``, a test
        correlation (``test_r`` or ``test_r_best``, or ``r_column``); optional ``trw_seconds`` and
        ``scramble_class`` (word, sentence, paragraph, story).
    rois : RoiSet
        Masks over the same n_voxels columns.
    n_boot : int
        Bootstrap resamples of the significant voxels of each ROI.
    seed : int
        Each ROI draws from ``default_rng([seed, crc32(name)])``: results are deterministic and an
        ROI's interval does not change when other ROIs are added.
    ci : float
        Coverage of the percentile interval.
    min_significant : int
        ROIs with fewer significant voxels get NaN TRW statistics (their counts are still given).
    words_per_second : float, optional
        Without a ``trw_seconds`` column, ``trw_seconds = trw_words / words_per_second`` (the
        stimulus speech rate); without either, no seconds columns.
    r_column : str, optional

    Returns
    -------
    DataFrame, one row per ROI in the order of ``rois``
        ``roi, n_voxels, n_significant, median_test_r`` (over all the ROI's voxels),
        ``median_trw_words, trw_words_low, trw_words_high`` (significant voxels), the same for
        ``trw_seconds`` when available, and ``share_<class>`` (fraction of significant voxels in each
        scrambling class) when ``scramble_class`` is present.
    """
    from .scrambling import SCRAMBLE_CLASSES

    if len(voxels) != rois.n_voxels:
        raise RoiError(f"the voxel table has {len(voxels)} rows but the ROI masks ({rois.source}) cover "
                       f"{rois.n_voxels} voxels; use the ROIs of the same subject")
    if r_column is None:
        r_column = next((c for c in R_COLUMNS if c in voxels.columns), None)
    for col in ("significant", "trw_words", r_column):
        if col is None or col not in voxels.columns:
            want = col or " or ".join(R_COLUMNS)
            raise RoiError(f"the voxel table has no column {want!r} (columns: {', '.join(map(str, voxels.columns))})")
    if not 0 < ci < 1:
        raise RoiError(f"ci must be in (0, 1), got {ci}")
    sig = voxels["significant"].to_numpy(dtype=bool)
    r = voxels[r_column].to_numpy(dtype=np.float64)
    trw_cols = {"trw_words": voxels["trw_words"].to_numpy(dtype=np.float64)}
    if "trw_seconds" in voxels.columns:
        trw_cols["trw_seconds"] = voxels["trw_seconds"].to_numpy(dtype=np.float64)
    elif words_per_second is not None:
        if not words_per_second > 0:
            raise RoiError(f"words_per_second must be positive, got {words_per_second}")
        trw_cols["trw_seconds"] = trw_cols["trw_words"] / float(words_per_second)
    trw = np.stack(list(trw_cols.values()), axis=1)  # (n_voxels, 1 or 2)
    classes = voxels["scramble_class"].astype(str).to_numpy() if "scramble_class" in voxels.columns else None
    rows = []
    for name, mask in rois:
        use = mask & sig & np.isfinite(trw).all(axis=1)
        row = {"roi": name, "n_voxels": int(mask.sum()), "n_significant": int((mask & sig).sum()),
               "median_test_r": float(np.nanmedian(r[mask])) if np.isfinite(r[mask]).any() else np.nan}
        n = int(use.sum())
        if n >= max(1, min_significant):
            med = np.median(trw[use], axis=0)
            lo, hi = bootstrap_median(trw[use], n_boot, _roi_rng(seed, name), ci)
        else:
            med = lo = hi = np.full(trw.shape[1], np.nan)
        for j, col in enumerate(trw_cols):
            row[f"median_{col}"], row[f"{col}_low"], row[f"{col}_high"] = float(med[j]), float(lo[j]), float(hi[j])
        if classes is not None:
            cs = classes[mask & sig]
            for c in SCRAMBLE_CLASSES:
                row[f"share_{c}"] = float(np.mean(cs == c)) if len(cs) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
