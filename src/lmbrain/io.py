"""Atomic outputs and progress bars.

Every result lmbrain writes is either complete or absent, never half-written, whatever kills the
job (``kill -9`` included):

- a file is written under a temporary name beside its destination and renamed into place when
  complete (:func:`atomic_path`, :func:`write_text`, :func:`write_bytes`);
- a folder of results (a workflow rule's ``directory()`` output) is assembled in a temporary folder
  beside it and renamed into place when complete (:func:`atomic_dir`), so Snakemake sees either the
  finished folder or none, with or without checkpoints in the DAG.

Temporary names start with ``.<name>.`` and contain ``.tmp`` (files) or ``.building-<pid>-`` (folders);
:func:`atomic_dir` removes the leftovers of killed jobs for the same destination, and only those
(never anything lmbrain did not create). Outputs get the usual permissions (``0666``/``0777`` less
the umask), so lab mates on a shared cluster can read them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _chmod_file(path: Path) -> None:
    os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary file lives in the destination folder (so the final ``os.replace`` is atomic)
    and keeps the destination's suffix (so libraries that look at extensions, such as nibabel,
    behave). On any exception the temporary file is removed and ``path`` is left untouched. The
    result gets ``0666`` less the umask, also when the block replaced the temporary file with one of
    its own (safetensors does, with mode ``0600``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    _chmod_file(tmp)
    try:
        yield tmp
        _chmod_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_builds(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders that killed :func:`atomic_dir` blocks left beside ``path``.

    Only folders named ``.<name>.building-<pid>-*`` whose process is gone are removed: they were made
    by lmbrain for this destination and can never become a result. Returns what was removed.
    """
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.building-(\d+)-")
    removed = []
    if not path.parent.is_dir():
        return removed
    for cand in path.parent.iterdir():
        m = pattern.match(cand.name)
        if m and cand.is_dir() and not cand.is_symlink() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(cand, ignore_errors=True)
            removed.append(cand)
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it to ``path`` only if the block succeeds.

    A job killed inside the block leaves no ``path`` (Snakemake then reruns it) and a temporary
    folder that the next :func:`atomic_dir` for the same ``path`` removes. On an exception the
    temporary folder is removed. An existing ``path`` is replaced only with ``replace=True`` (the
    old folder is moved aside first, so a crash in between leaves the old or the new result, never a
    mixture); with ``replace=False`` it raises ``FileExistsError``. The folder gets ``0777`` less the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.building-{os.getpid()}-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            if not replace:
                raise FileExistsError(f"{path}: exists; refusing to replace it")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.building-{os.getpid()}-old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# Seconds between progress-bar redraws: tqdm's 0.1 s on a terminal; lmbrain.workflow.run_rule raises it
# when a rule's progress goes to its log file (a redraw every 0.1 s would write thousands of lines).
PROGRESS_INTERVAL = {"seconds": 0.1}


def progress_bar(*args, **kwargs):
    """``tqdm`` with the package's redraw interval (at least ``PROGRESS_INTERVAL``)."""
    from tqdm.auto import tqdm

    kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), PROGRESS_INTERVAL["seconds"])
    return tqdm(*args, **kwargs)
