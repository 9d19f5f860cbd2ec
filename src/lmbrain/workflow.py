"""Glue between Snakemake rules and the library: logging, threads and clean failures.

Each ``workflow/scripts/*.py`` file is a few lines::

    from lmbrain.workflow import run_rule
    with run_rule(snakemake):
        ...call the library...
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import traceback
import warnings

from . import LmbrainError


@contextlib.contextmanager
def run_rule(smk):
    """Send logging, warnings and stderr (progress bars) to the rule's log; set thread counts.

    A :class:`~lmbrain.LmbrainError` (bad input, bad config) ends the job with its one-line message
    in the log and on the console; anything else keeps its traceback in the log.
    """
    log_path = smk.log[0] if len(smk.log) else None
    stream = open(log_path, "w", encoding="utf-8", buffering=1) if log_path else sys.stderr
    old_stderr = sys.stderr
    sys.stderr = stream
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    if log_path:  # a progress bar redrawn ten times a second would fill the log: once per 30 s
        from .io import PROGRESS_INTERVAL

        PROGRESS_INTERVAL["seconds"] = 30.0
    threads = max(int(getattr(smk, "threads", 1) or 1), 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    torch_threads(threads)
    rule = getattr(smk, "rule", "rule")
    logging.getLogger("lmbrain").info("rule %s started (threads=%d)", rule, threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            yield
    except LmbrainError as exc:
        msg = f"lmbrain error in rule {rule}: {exc}"
        print(msg, file=stream)
        if stream is not old_stderr:
            print(msg, file=old_stderr)
        raise SystemExit(1) from None
    except BaseException:
        traceback.print_exc(file=stream)
        raise
    finally:
        logging.getLogger("lmbrain").info("rule %s finished", rule)
        root.removeHandler(handler)
        logging.captureWarnings(False)
        sys.stderr = old_stderr
        if stream is not old_stderr:
            stream.close()


def torch_threads(n: int) -> None:
    """Give torch ``n`` intra-op threads: now if torch is imported, else the moment it is.

    Importing torch takes ~2.7 s; the jobs that never use it (ROIs, TRW, group, summaries) should not
    pay that to set a thread count. An import hook sets it right after ``import torch`` runs instead.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
        return
    for finder in sys.meta_path:
        if isinstance(finder, _TorchThreadsOnImport):
            finder.n = n
            return
    sys.meta_path.insert(0, _TorchThreadsOnImport(n))


class _TorchThreadsOnImport(importlib.abc.MetaPathFinder):
    """Finds ``torch`` with the other finders and wraps its loader to call ``set_num_threads`` after the
    module has run; then takes itself off ``sys.meta_path``."""

    def __init__(self, n: int):
        self.n = n

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenSetThreads(spec.loader, self.n)
        return spec


class _ThenSetThreads(importlib.abc.Loader):
    """A loader that runs ``loader`` and then ``module.set_num_threads(n)``; every other attribute is the
    wrapped loader's (resource readers and the like)."""

    def __init__(self, loader, n: int):
        self._loader, self._n = loader, n

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.set_num_threads(self._n)

    def __getattr__(self, name):
        return getattr(self._loader, name)
