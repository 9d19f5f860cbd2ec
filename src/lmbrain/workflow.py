"""Glue between Snakemake rules and the library: logging, threads and clean failures.

Each ``workflow/scripts/*.py`` file is a few lines::

    from lmbrain.workflow import run_rule
    with run_rule(snakemake):
        ...call the library...
"""

from __future__ import annotations

import contextlib
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
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass
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
