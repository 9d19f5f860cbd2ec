"""Feature files (``k<k>.h5``, one per story and context length): reading one array, and the attributes.

Kept apart from :mod:`lmbrain.features` (which writes them and needs torch) so that the stages that only
read features (TRW, context use, encoding) do not import torch: ~2.7 s per job.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import LmbrainError


class FeatureError(LmbrainError, ValueError):
    """A feature file that is missing or does not hold what was asked for."""


def read_features(path: str | os.PathLike, layer: int | None = None, kind: str = "hidden", rows=None):
    """One array from a feature file without loading the others.

    kind: ``hidden`` or ``pooled`` (needs ``layer``), ``heads``, ``entropy`` or ``distance`` (attention, needs
    ``layer``), ``words``/``onset``/``offset``/``time``, or a full dataset name. ``rows``: a slice or
    index array of words (default all).
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise FeatureError(f"{path}: feature file not found (run the extract_features rule)")
    if kind in ("hidden", "pooled"):
        name = f"{kind}/layer_{layer}"
    elif kind in ("heads", "entropy", "distance"):
        name = f"attention/layer_{layer}/{kind}"
    else:
        name = kind
    with h5py.File(path, "r") as fh:
        if name not in fh:
            have = []
            fh.visit(lambda x: have.append(x) if isinstance(fh[x], h5py.Dataset) else None)
            raise FeatureError(f"{path}: no {name!r} in this file (it has: {', '.join(have)})")
        d = fh[name]
        data = d[()] if rows is None else d[rows]
        if kind == "words":
            data = np.array([x.decode() if isinstance(x, bytes) else x for x in data], dtype=object)
        return data


def feature_info(path: str | os.PathLike) -> dict:
    """Attributes and dataset shapes of a feature file."""
    import h5py

    with h5py.File(path, "r") as fh:
        shapes = {}
        fh.visititems(lambda name, obj: shapes.__setitem__(name, obj.shape) if isinstance(obj, h5py.Dataset) else None)
        return {"attrs": {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in fh.attrs.items()}, "datasets": shapes}
