"""lmbrain: language models and the brain.

A Snakemake workflow plus this importable library: stimulus handling, dataset readers,
sequence models and features, ridge encoding models, temporal receptive windows and decoding.
Each module is one concept; every workflow rule calls a function from here.
"""

__version__ = "0.1.0"


class LmbrainError(Exception):
    """Base class of lmbrain's user-facing errors (bad input, bad configuration)."""


class LmbrainWarning(UserWarning):
    """Warnings about the data (NaN or constant voxels, dropped tokens) that do not stop a run."""
