"""Ridge regression with one regularisation per voxel, chosen by grouped cross-validation.

:class:`RidgeCV` follows scikit-learn/himalaya conventions (``fit``/``predict``/``score``, fitted
attributes with a trailing underscore) over a torch backend, so the same code runs on CUDA.

Conventions
-----------
- **Alpha**: by default the *penalty* of scikit-learn and himalaya,
  ``W = argmin ||XW - Y||^2 + alpha ||W||^2 = V diag(s / (s^2 + alpha)) U^T Y``.
  The Huth-lab ``bootstrap_ridge`` uses ``V diag(s / (s^2 + a^2)) U^T Y``: its ``a`` enters squared.
  ``alpha_convention="huth"`` takes alphas in that convention (``penalty = a^2``); ``best_alphas_``
  is reported in the convention the estimator was given.
- **Cross-validation** never shuffles time points: folds are whole groups (stories) when
  ``groups`` is given to :meth:`RidgeCV.fit` (leave-one-group-out, or ``cv`` contiguous sets of
  groups), else ``cv`` contiguous blocks of samples.
- **Selection score** (``score=``): ``"r2"`` (default), ``"corr"`` or ``"neg_mse"`` (himalaya's
  default), computed per fold and averaged over folds; ties go to the larger alpha. R2 is the
  default because it penalises over-fitted, high-variance predictions: on pure-noise voxels
  correlation-based selection often picks the smallest alpha (a noisy fit whose correlation is
  positive by chance), while R2 picks the largest (predictions shrunk towards zero).
- No intercept: centre (z-score) X and Y per story first, as the pipeline does.

Speed and memory
----------------
Work is shared wherever it is exact:

- ``X'X`` is formed once (float64, features x features); each fold's training Gram matrix is
  ``X'X - X_val'X_val``, eigendecomposed once (float64) and reused by every alpha. For each alpha a
  fold keeps its validation "hat" ``X_val V diag(1/(s^2 + alpha)) V^T`` (n_val x features, float32).
- ``X'Y`` is formed once per voxel batch; each fold's ``X_train'Y_train = X'Y - X_val'Y_val``, and
  the refit reuses ``X'Y`` too. Each evaluated alpha then costs one ``(n_val x p) @ (p x batch)``
  product per fold: the floor for exact validation predictions.
- ``search="refine"`` evaluates a coarse sub-grid for every voxel, then climbs each voxel to its best
  neighbouring alpha, computing each (alpha, voxel subset) product only for the voxels that need it.
  It returns the full grid's choice whenever a voxel's CV curve is unimodal over the grid (checked
  in the tests) at about 60-70% of the alpha products for 10 alphas, less for finer grids.
- Voxels are processed in batches sized from ``memory_gb``; the responses are never copied to float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import LmbrainError

SCORES = ("r2", "corr", "neg_mse")


class RidgeError(LmbrainError, ValueError):
    pass


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def make_folds(n_samples: int, groups=None, cv: int | None = None):
    """List of (train_idx, val_idx) integer arrays; folds are whole groups or contiguous blocks.

    ``groups`` (n_samples,) labels, e.g. the story of each TR: with ``cv=None`` one fold per group
    (leave-one-group-out); with ``cv=k`` the groups, in order of first appearance, are dealt into
    ``k`` contiguous sets. Without groups, ``cv`` (default 5) contiguous blocks of samples.
    """
    idx = np.arange(n_samples)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n_samples,):
            raise RidgeError(f"groups must have one label per sample ({n_samples}), got shape {groups.shape}")
        _, first = np.unique(groups, return_index=True)
        order = groups[np.sort(first)]
        if len(order) < 2:
            raise RidgeError("cross-validation needs at least two groups (stories)")
        k = len(order) if cv is None else int(cv)
        if not 2 <= k <= len(order):
            raise RidgeError(f"cv={k} folds but only {len(order)} groups")
        sets = np.array_split(order, k)
        folds = []
        for s in sets:
            val = np.isin(groups, s)
            folds.append((idx[~val], idx[val]))
        return folds
    k = 5 if cv is None else int(cv)
    if not 2 <= k <= n_samples:
        raise RidgeError(f"cv={k} folds for {n_samples} samples")
    return [(np.setdiff1d(idx, b), b) for b in np.array_split(idx, k)]


def story_folds(cv_folds: int | None, n_groups: int) -> int | None:
    """The ``cv`` of :class:`RidgeCV` for a ``cv_folds`` setting: None = leave-one-story-out, else that
    many contiguous sets of stories (at most one per story)."""
    if cv_folds is None:
        return None
    if int(cv_folds) < 2:
        raise RidgeError(f"cv_folds must be at least 2 (or null for leave-one-story-out), got {cv_folds}")
    return min(int(cv_folds), int(n_groups))


def _scores(y: torch.Tensor, pred: torch.Tensor, kind: str, y_ss: torch.Tensor, y_mean: torch.Tensor,
            inplace: bool = False) -> torch.Tensor:
    """Per-column scores of ``pred`` (n, t) against ``y`` (n, t); ``inplace`` lets it overwrite ``pred``."""
    # column sums of products as (a * b).sum(0): torch's einsum "ij,ij->j" runs as a batched matmul of
    # one column per batch, ~50x slower on CPU (it was most of the CV time at real size)
    n = y.shape[0]
    if kind == "corr":
        pc = pred.sub_(pred.mean(dim=0, keepdim=True)) if inplace else pred - pred.mean(dim=0, keepdim=True)
        num = (pc * (y - y_mean)).sum(dim=0)
        pp = pc.square_().sum(dim=0)
        den = torch.sqrt(pp * y_ss)
        return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))
    resid = pred.sub_(y) if inplace else pred - y
    sse = resid.square_().sum(dim=0)
    if kind == "neg_mse":
        return -sse / n
    # r2: 1 - SSE / SST (SST around the validation mean, as sklearn/himalaya)
    return torch.where(y_ss > 0, 1 - sse / torch.where(y_ss > 0, y_ss, torch.ones_like(y_ss)), torch.zeros_like(sse))


@dataclass
class _Fold:
    train: torch.Tensor
    val: torch.Tensor
    hat: torch.Tensor  # (n_alphas, n_val, p): X_val V diag(1 / (s^2 + alpha)) V^T, one per alpha


class RidgeCV:
    """Ridge regression with one alpha per target (voxel), chosen by grouped cross-validation.

    Parameters
    ----------
    alphas : array-like of shape (n_alphas,)
        Candidate regularisation strengths (see ``alpha_convention``). Default ``logspace(0, 6, 13)``.
    cv : int or None
        Number of folds (see :func:`make_folds`); ``None`` = leave-one-group-out when groups are given.
    score : {"r2", "corr", "neg_mse"}
        Cross-validation score used to pick each voxel's alpha (see the module notes).
    alpha_convention : {"penalty", "huth"}
        ``"penalty"``: sklearn/himalaya alpha; ``"huth"``: Huth-lab alpha, squared into the penalty.
    search : {"grid", "refine"}
        ``"grid"`` evaluates every alpha; ``"refine"`` a coarse sub-grid then per-voxel halving steps.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    dtype : str
        ``"float32"`` (default) or ``"float64"``.
    memory_gb : float
        Budget for the per-batch working arrays; sets the voxel batch size.
    progress : bool
        Show a progress bar over voxel batches.

    Attributes
    ----------
    coef_ : ndarray (n_features, n_targets)
    best_alphas_ : ndarray (n_targets,) in the given convention
    cv_scores_ : ndarray (n_alphas, n_targets); NaN where ``search="refine"`` did not evaluate an alpha
    best_scores_ : ndarray (n_targets,) CV score at the chosen alpha
    """

    def __init__(self, alphas=None, cv: int | None = None, score: str = "r2", alpha_convention: str = "penalty",
                 search: str = "grid", device: str = "auto", dtype: str = "float32", memory_gb: float = 2.0,
                 progress: bool = False):
        self.alphas = np.logspace(0, 6, 13) if alphas is None else np.asarray(alphas, dtype=np.float64)
        self.cv = cv
        self.score_kind = score
        self.alpha_convention = alpha_convention
        self.search = search
        self.device = device
        self.dtype = dtype
        self.memory_gb = memory_gb
        self.progress = progress

    # ----------------------------------------------------------------------------------------
    def _check(self):
        if self.score_kind not in SCORES:
            raise RidgeError(f"score must be one of {SCORES}, got {self.score_kind!r}")
        if self.alpha_convention not in ("penalty", "huth"):
            raise RidgeError("alpha_convention must be 'penalty' or 'huth'")
        if self.search not in ("grid", "refine"):
            raise RidgeError("search must be 'grid' or 'refine'")
        a = np.asarray(self.alphas, dtype=np.float64).ravel()
        if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise RidgeError("alphas must be positive finite numbers")
        order = np.argsort(a)
        self._alphas_sorted = a[order]
        penalties = a[order] ** 2 if self.alpha_convention == "huth" else a[order]
        return penalties

    def _tensor(self, x, name: str) -> torch.Tensor:
        arr = np.asarray(x)
        if arr.ndim != 2:
            raise RidgeError(f"{name} must be 2-D (samples, features/targets), got shape {arr.shape}")
        t = torch.as_tensor(arr)
        return t.to(device=self._dev, dtype=self._dt)

    def fit(self, X, Y, groups=None):
        """Fit on X (n_samples, n_features) and Y (n_samples, n_targets), choosing one alpha per target.

        ``groups`` (n_samples,): the story (or block) of each sample; folds never split a group.
        """
        penalties = self._check()
        self._dev = _device(self.device)
        self._dt = {"float32": torch.float32, "float64": torch.float64}.get(self.dtype)
        if self._dt is None:
            raise RidgeError("dtype must be 'float32' or 'float64'")
        X_np, Y_np = np.asarray(X), np.asarray(Y)
        if Y_np.ndim == 1:
            Y_np = Y_np[:, None]
        if X_np.ndim != 2 or X_np.shape[0] != Y_np.shape[0]:
            raise RidgeError(f"X {X_np.shape} and Y {Y_np.shape} must be 2-D with the same number of samples")
        if not np.isfinite(X_np).all():
            raise RidgeError("X contains NaN or infinite values")
        n, p = X_np.shape
        t = Y_np.shape[1]
        folds_idx = make_folds(n, groups, self.cv)
        pen = torch.as_tensor(penalties, device=self._dev, dtype=torch.float64)
        Xt = self._tensor(X_np, "X")
        n_alpha = len(penalties)

        # One symmetric eigendecomposition per fold, from shared sums: X_tr'X_tr = X'X - X_val'X_val
        # (in float64, p x p), then each alpha's validation "hat" X_val V diag(1/(s^2+a)) V^T.
        X64 = Xt.double()
        gram = X64.T @ X64
        folds = []
        for train, val in folds_idx:
            tr = torch.as_tensor(train, device=self._dev)
            va = torch.as_tensor(val, device=self._dev)
            xv = X64[va]
            evals, evecs = torch.linalg.eigh(gram - xv.T @ xv)
            evals = evals.clamp_min(0)
            q = (xv @ evecs).to(self._dt)  # (n_val, p)
            inv = (1.0 / (evals[None, :] + pen[:, None])).to(self._dt)  # (n_alpha, p)
            vt = evecs.T.to(self._dt)
            hat = torch.stack([(q * inv[a]) @ vt for a in range(n_alpha)])
            folds.append(_Fold(tr, va, hat))
        evals_all, evecs_all = torch.linalg.eigh(gram)
        evals_all = evals_all.clamp_min(0)
        evecs_t = evecs_all.to(self._dt)
        del X64, gram

        max_val = max(len(v) for _, v in folds_idx)
        batch = self._batch_size(n, p, max_val, n_alpha, len(folds))
        coarse = self._coarse(n_alpha)

        coef = np.empty((p, t), dtype=np.float32 if self._dt == torch.float32 else np.float64)
        cv_scores = np.full((n_alpha, t), np.nan)
        best_idx = np.empty(t, dtype=np.int64)
        from .io import progress_bar as tqdm

        starts = range(0, t, batch)
        for start in tqdm(starts, desc="ridge voxel batches", disable=not self.progress):
            sl = slice(start, min(start + batch, t))
            Yb = self._tensor(Y_np[:, sl], "Y")
            if not torch.isfinite(Yb).all():
                raise RidgeError(f"Y contains NaN or infinite values (targets {sl.start}..{sl.stop - 1}); "
                                 "replace them (the dataset readers zero them) before fitting")
            xty = Xt.T @ Yb  # (p, tb), shared by every fold and the refit
            scores_b, idx_b = self._cv_batch(folds, Xt, Yb, xty, coarse)
            cv_scores[:, sl] = scores_b
            best_idx[sl] = idx_b
            # refit on all samples with each voxel's alpha: W = V diag(1/(s^2 + a_v)) V^T X'Y
            g = 1.0 / (evals_all[:, None] + pen[torch.as_tensor(idx_b, device=self._dev)][None, :])
            coef[:, sl] = (evecs_t @ (g.to(self._dt) * (evecs_t.T @ xty))).cpu().numpy()
            del xty, Yb
        self.coef_ = coef
        self.cv_scores_ = cv_scores
        self.best_scores_ = cv_scores[best_idx, np.arange(t)]
        self.best_alphas_ = self._alphas_sorted[best_idx]
        self.n_features_in_ = p
        return self

    def _batch_size(self, n: int, p: int, n_val: int, n_alpha: int, n_folds: int) -> int:
        """Voxels per batch so that the per-batch arrays fit in ``memory_gb``."""
        item = 4 if self._dt == torch.float32 else 8
        # the batch of Y and its per-fold validation rows (together 2 n), each fold's X_tr'Y_tr and the
        # shared X'Y (n_folds + 1) p, the refit's two p-vectors, and one fold's prediction and copies
        per_target = item * (2 * n + (n_folds + 3) * p + 3 * n_val) + 8 * 3 * n_alpha
        return max(1, int(self.memory_gb * 2**30 // per_target))

    def _coarse(self, n_alpha: int) -> list[int]:
        """Alphas evaluated for every voxel; search='refine' then climbs to each voxel's best neighbour."""
        if self.search == "grid" or n_alpha <= 4:
            return list(range(n_alpha))
        stride = max(2, int(round(math.sqrt(n_alpha) * 0.9)))
        return sorted(set(range(0, n_alpha, stride)) | {n_alpha - 1})

    def _eval(self, folds, val_data, ztr, a: int, cols: torch.Tensor | None) -> torch.Tensor:
        """Mean CV score over folds of alpha index ``a`` for the voxels ``cols`` (None = all), float64."""
        acc = None
        for fold, z, (yv, y_mean, y_ss) in zip(folds, ztr, val_data):
            if cols is None:
                pred = fold.hat[a] @ z
            else:
                pred = fold.hat[a] @ z[:, cols]
                yv, y_mean, y_ss = yv[:, cols], y_mean[:, cols], y_ss[cols]
            sc = _scores(yv, pred, self.score_kind, y_ss, y_mean, inplace=True).double()
            acc = sc if acc is None else acc + sc
        return acc / len(folds)

    def _cv_batch(self, folds, Xt, Yb, xty, coarse):
        n_alpha = folds[0].hat.shape[0]
        tb = Yb.shape[1]
        # X_tr' Y_tr for each fold from the shared sum: X'Y - X_val' Y_val
        ztr, val_data = [], []
        for f in folds:
            yv = Yb[f.val]
            ztr.append(xty - Xt[f.val].T @ yv)
            y_mean = yv.mean(dim=0, keepdim=True)
            val_data.append((yv, y_mean, ((yv - y_mean) ** 2).sum(dim=0)))
        mean = torch.full((n_alpha, tb), math.nan, dtype=torch.float64, device=self._dev)
        all_cols = torch.arange(tb, device=self._dev)
        for a in coarse:
            mean[a] = self._eval(folds, val_data, ztr, a, None)
        log_pen = torch.arange(n_alpha, device=self._dev, dtype=torch.float64)[:, None] * 1e-10  # ties -> larger alpha
        while True:
            choice = torch.where(torch.isnan(mean), torch.full_like(mean, -math.inf), mean) + log_pen
            best = choice.argmax(dim=0)
            todo = []
            for cand in (best - 1, best + 1):
                ok = (cand >= 0) & (cand < n_alpha)
                cand_c = cand.clamp(0, n_alpha - 1)
                need = ok & torch.isnan(mean[cand_c, all_cols])
                todo.append((cand_c, need))
            if not any(need.any() for _, need in todo):
                break
            for cand_c, need in todo:
                for a in torch.unique(cand_c[need]).tolist():
                    cols = all_cols[need & (cand_c == a)]
                    mean[a, cols] = self._eval(folds, val_data, ztr, a, cols)
        return mean.cpu().numpy(), best.cpu().numpy()

    # ----------------------------------------------------------------------------------------
    def predict(self, X) -> np.ndarray:
        """Predictions (n_samples, n_targets) for X (n_samples, n_features)."""
        if not hasattr(self, "coef_"):
            raise RidgeError("this RidgeCV is not fitted yet: call fit(X, Y, groups) first")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise RidgeError(f"X must have shape (n_samples, {self.n_features_in_}), got {X.shape}")
        return X.astype(self.coef_.dtype, copy=False) @ self.coef_

    def score(self, X, Y, metric: str = "corr") -> np.ndarray:
        """Per-target test score of the predictions for X against Y: ``"corr"`` (default) or ``"r2"``."""
        pred = torch.as_tensor(self.predict(X), dtype=torch.float64)
        y = torch.as_tensor(np.asarray(Y), dtype=torch.float64)
        if y.ndim == 1:
            y = y[:, None]
        y_mean = y.mean(dim=0, keepdim=True)
        if metric not in ("corr", "r2"):
            raise RidgeError(f"metric must be 'corr' or 'r2', got {metric!r}")
        return _scores(y, pred, metric, ((y - y_mean) ** 2).sum(dim=0), y_mean).numpy()
