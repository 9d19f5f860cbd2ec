"""Variance partitioning of context with banded ridge (Dupré la Tour et al. 2022).

How much does a voxel gain from a language model's features at context length ``k`` beyond what the
same model gives at the shortest context? :func:`context_unique_r2` fits, per voxel,
:class:`lmbrain.ridge.BandedRidgeCV` on three bands side by side, ``[nuisance, short, k]``
(nuisance: e.g. word rate, phoneme rate, articulatory features; short: the features at the shortest
context; k: the features at context ``k``), each band with its own penalty ``alpha / gamma_b`` chosen
by cross-validation over whole stories, and reports the split R2 of the ``k`` band
(:func:`lmbrain.ridge.r2_score_split`, himalaya's product measure: the band contributions sum to the
joint R2). Because the bands compete in one model, variance that the shortest context also explains
tends to go to whichever band the CV prefers; the ``k`` band's share is what it adds on top.

Two estimates per voxel:

- ``unique_r2_cv``: on the training stories only: for every CV fold the weights are refitted on the
  fold's training stories at the chosen hyperparameters and scored on its held-out stories (the
  hyperparameters themselves were chosen on the same folds, as ``best_scores_`` always is), so
  choices such as the best ``k`` can be made without the test story;
- ``unique_r2_test``: on the held-out test data, when given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ridge import BandedRidgeCV, RidgeError, r2_score_split

BAND_NAMES = ("nuisance", "short", "k")


@dataclass
class ContextPartition:
    """Result of :func:`context_unique_r2`; arrays are per voxel, bands in the order of ``bands``."""

    bands: tuple[str, ...]
    unique_r2_cv: np.ndarray  # (V,) split R2 of the k band on the CV folds of the training data
    split_r2_cv: np.ndarray  # (n_bands, V)
    unique_r2_test: np.ndarray | None  # (V,) split R2 of the k band on the test data (None without test data)
    split_r2_test: np.ndarray | None  # (n_bands, V)
    band_alphas: np.ndarray  # (n_bands, V) alpha / gamma
    best_gammas: np.ndarray  # (n_bands, V)
    best_alphas: np.ndarray  # (V,)
    cv_score: np.ndarray  # (V,) the CV score the hyperparameters were selected on
    model: BandedRidgeCV = field(repr=False)

    @property
    def joint_r2_cv(self) -> np.ndarray:
        return self.split_r2_cv.sum(axis=0)

    @property
    def joint_r2_test(self) -> np.ndarray | None:
        return None if self.split_r2_test is None else self.split_r2_test.sum(axis=0)


def _stack(parts, names, n_rows=None):
    arrays = []
    for name, x in zip(names, parts):
        a = np.asarray(x)
        if a.ndim != 2:
            raise RidgeError(f"{name} must be 2-D (samples, features), got shape {a.shape}")
        if n_rows is not None and a.shape[0] != n_rows:
            raise RidgeError(f"{name} has {a.shape[0]} rows, expected {n_rows}")
        n_rows = a.shape[0]
        arrays.append(a)
    return arrays


def context_unique_r2(X_nuisance, X_short, X_k, Y, groups, *, X_nuisance_test=None, X_short_test=None,
                      X_k_test=None, Y_test=None, alphas=None, gammas=20, cv=None, score: str = "r2",
                      search: str = "refine", device: str = "auto", dtype: str = "float32", memory_gb: float = 2.0,
                      random_state=0) -> ContextPartition:
    """Unique split R2 of the context-``k`` band over ``[nuisance, shortest context]``, per voxel.

    Parameters
    ----------
    X_nuisance : array (n_samples, p_nuisance) or None
        Low-level features (word rate, phoneme rate, ...); None for no nuisance band.
    X_short : array (n_samples, p_short)
        The language model's (delayed) features at the shortest context length.
    X_k : array (n_samples, p_k)
        The same features at context length ``k`` (not the shortest: its unique R2 over itself is 0).
    Y : array (n_samples, n_voxels)
        Training responses, z-scored per story (zero mean, as the split R2 assumes).
    groups : array (n_samples,)
        The story of each training sample; folds are whole stories (``cv`` as :class:`BandedRidgeCV`).
    X_nuisance_test, X_short_test, X_k_test, Y_test : arrays or None
        The same for the test stories; all four (or three without nuisance) or none.
    alphas, gammas, cv, score, search, device, dtype, memory_gb, random_state
        Passed to :class:`lmbrain.ridge.BandedRidgeCV`.

    Returns
    -------
    ContextPartition
        ``unique_r2_cv``/``unique_r2_test`` (V,), the per-band split R2 (n_bands, V) they come from, the
        chosen per-band penalties and the fitted model.
    """
    names = BAND_NAMES if X_nuisance is not None else BAND_NAMES[1:]
    train = [X_nuisance, X_short, X_k] if X_nuisance is not None else [X_short, X_k]
    train = _stack(train, [f"X_{b}" for b in names])
    if train[-1].shape == train[-2].shape and np.array_equal(train[-1], train[-2]):
        raise RidgeError("X_k equals X_short: the unique R2 of the shortest context over itself is 0 by definition")
    test = [X_nuisance_test, X_short_test, X_k_test] if X_nuisance is not None else [X_short_test, X_k_test]
    given = [x is not None for x in test] + [Y_test is not None]
    if any(given) and not all(given):
        raise RidgeError("give every test array (" + ", ".join(f"X_{b}_test" for b in names) + ", Y_test) or none")
    widths = [x.shape[1] for x in train]
    edges = np.cumsum([0] + widths)
    bands = [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:])]
    X = np.concatenate(train, axis=1)
    model = BandedRidgeCV(alphas=alphas, gammas=gammas, cv=cv, score=score, search=search, device=device,
                          dtype=dtype, memory_gb=memory_gb, random_state=random_state)
    model.fit(X, Y, bands, groups)
    split_cv = model.cv_score_split(X, Y)
    split_test = None
    if all(given):
        Xt = np.concatenate(_stack(test, [f"X_{b}_test" for b in names]), axis=1)
        if Xt.shape[1] != X.shape[1]:
            raise RidgeError(f"the test bands have {Xt.shape[1]} columns, the training bands {X.shape[1]}")
        split_test = r2_score_split(Y_test, model.predict(Xt, split=True))
    return ContextPartition(
        bands=tuple(names), unique_r2_cv=split_cv[-1], split_r2_cv=split_cv,
        unique_r2_test=None if split_test is None else split_test[-1], split_r2_test=split_test,
        band_alphas=model.band_alphas_, best_gammas=model.best_gammas_, best_alphas=model.best_alphas_,
        cv_score=model.best_scores_, model=model)
