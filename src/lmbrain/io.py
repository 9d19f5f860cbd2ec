"""Atomic output writing (a result file is either complete or absent, never half-written) and progress bars."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary file lives in the destination folder (so the final ``os.replace`` is atomic)
    and keeps the destination's suffix (so libraries that look at extensions, such as nibabel,
    behave). On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates 0600 files; give outputs the usual permissions (0666 less the umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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
