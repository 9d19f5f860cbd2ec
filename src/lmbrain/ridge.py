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
One SVD per fold (and one for the refit) serves every alpha; for each fold and voxel batch,
``U^T Y_train`` is computed once and each alpha costs a single ``(n_val x r) @ (r x batch)``
product. ``search="refine"`` evaluates a coarse sub-grid and then refines each voxel's alpha by
halving steps, each step one product with a per-voxel diagonal; it returns the same alphas as the
full grid whenever a voxel's CV curve is unimodal over the grid (checked in the tests), at about
half the work for 10-20 alphas. Voxels are processed in batches sized from ``memory_gb``; the
responses are never copied to float64.
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


def _scores(y: torch.Tensor, pred: torch.Tensor, kind: str, y_ss: torch.Tensor, y_mean: torch.Tensor) -> torch.Tensor:
    """Per-column scores of ``pred`` (n, t) or (a, n, t) against ``y`` (n, t)."""
    n = y.shape[0]
    if kind == "corr":
        pc = pred - pred.mean(dim=-2, keepdim=True)
        yc = y - y_mean
        num = (pc * yc).sum(dim=-2)
        den = torch.sqrt((pc * pc).sum(dim=-2) * (yc * yc).sum(dim=-2))
        return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))
    sse = ((y - pred) ** 2).sum(dim=-2)
    if kind == "neg_mse":
        return -sse / n
    # r2: 1 - SSE / SST (SST around the validation mean, as sklearn/himalaya)
    return torch.where(y_ss > 0, 1 - sse / torch.where(y_ss > 0, y_ss, torch.ones_like(y_ss)), torch.zeros_like(sse))


@dataclass
class _Fold:
    u: torch.Tensor  # (n_train, r)
    s: torch.Tensor  # (r,)
    xv_v: torch.Tensor  # (n_val, r)
    train: torch.Tensor
    val: torch.Tensor


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

    def _batch_size(self, n: int, r: int, n_val: int, n_alpha_eval: int) -> int:
        per_target = 4 if self._dt == torch.float32 else 8
        per_target *= (2 * n + 2 * r + (n_alpha_eval + 3) * n_val + 4 * n_alpha_eval)
        return max(1, int(self.memory_gb * 2**30 // per_target))

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

        folds = []
        for train, val in folds_idx:
            tr = torch.as_tensor(train, device=self._dev)
            va = torch.as_tensor(val, device=self._dev)
            u, s, vh = torch.linalg.svd(Xt[tr], full_matrices=False)
            folds.append(_Fold(u, s, Xt[va] @ vh.T, tr, va))
        u_all, s_all, vh_all = torch.linalg.svd(Xt, full_matrices=False)
        r = s_all.shape[0]
        n_alpha = len(penalties)
        max_val = max(len(v) for _, v in folds_idx)
        eval_plan = self._plan(n_alpha)
        batch = self._batch_size(n, r, max_val, len(eval_plan[0]) if self.search == "refine" else n_alpha)

        coef = np.empty((p, t), dtype=np.float32 if self._dt == torch.float32 else np.float64)
        cv_scores = np.full((n_alpha, t), np.nan)
        best_idx = np.empty(t, dtype=np.int64)
        from tqdm.auto import tqdm

        starts = range(0, t, batch)
        for start in tqdm(starts, desc="ridge voxel batches", disable=not self.progress):
            sl = slice(start, min(start + batch, t))
            Yb = self._tensor(Y_np[:, sl], "Y")
            if not torch.isfinite(Yb).all():
                raise RidgeError(f"Y contains NaN or infinite values (targets {sl.start}..{sl.stop - 1}); "
                                 "replace them (the dataset readers zero them) before fitting")
            scores_b, idx_b = self._cv_batch(folds, Yb, pen, eval_plan)
            cv_scores[:, sl] = scores_b
            best_idx[sl] = idx_b
            # refit on all samples with each voxel's alpha
            uty = u_all.T @ Yb  # (r, tb)
            g = s_all[:, None].double() / (s_all[:, None].double() ** 2 + pen[torch.as_tensor(idx_b, device=self._dev)][None, :])
            coef[:, sl] = (vh_all.T @ (g.to(self._dt) * uty)).cpu().numpy()
        self.coef_ = coef
        self.cv_scores_ = cv_scores
        self.best_scores_ = cv_scores[best_idx, np.arange(t)]
        self.best_alphas_ = self._alphas_sorted[best_idx]
        self.n_features_in_ = p
        return self

    def _plan(self, n_alpha: int):
        """Coarse indices and step sizes for search='refine'."""
        if self.search == "grid" or n_alpha <= 4:
            return [list(range(n_alpha))], []
        step = 1
        while step * 4 < n_alpha:
            step *= 2
        coarse = sorted(set(list(range(0, n_alpha, step)) + [n_alpha - 1]))
        steps = []
        s = step // 2
        while s >= 1:
            steps.append(s)
            s //= 2
        return [coarse], steps

    def _fold_scores(self, fold: _Fold, uty: torch.Tensor, yv: torch.Tensor, g: torch.Tensor, y_ss, y_mean):
        """Scores (n_eval, tb) for shrinkage factors g of shape (n_eval, r) or per-voxel (n_eval, r, tb)."""
        out = []
        for i in range(g.shape[0]):
            gi = g[i]
            w = gi[:, None] * uty if gi.ndim == 1 else gi * uty
            pred = fold.xv_v @ w
            out.append(_scores(yv, pred, self.score_kind, y_ss, y_mean))
        return torch.stack(out)

    def _cv_batch(self, folds, Yb, pen, plan):
        n_alpha = len(pen)
        tb = Yb.shape[1]
        coarse, steps = torch.as_tensor(plan[0][0], device=self._dev), plan[1]
        total = torch.zeros((n_alpha, tb), dtype=torch.float64, device=self._dev)
        evaluated = torch.zeros((n_alpha, tb), dtype=torch.bool, device=self._dev)
        per_fold = []
        for fold in folds:
            uty = fold.u.T @ Yb[fold.train]
            yv = Yb[fold.val]
            y_mean = yv.mean(dim=0, keepdim=True)
            y_ss = ((yv - y_mean) ** 2).sum(dim=0)
            per_fold.append((uty, yv, y_ss, y_mean))
            s = fold.s.double()
            g = (s[None, :] / (s[None, :] ** 2 + pen[coarse][:, None])).to(self._dt)
            total[coarse] += self._fold_scores(fold, uty, yv, g, y_ss, y_mean).double()
        evaluated[coarse] = True
        tie = torch.log(pen)[:, None] * 1e-10  # ties go to the larger alpha, as himalaya
        cols = torch.arange(tb, device=self._dev)
        for step in steps:
            mean = torch.where(evaluated, total / len(folds), torch.full_like(total, -math.inf)) + tie
            best = mean.argmax(dim=0)
            for cand in (best - step, best + step):
                ok = (cand >= 0) & (cand < n_alpha)
                cand = cand.clamp(0, n_alpha - 1)
                need = ok & ~evaluated[cand, cols]
                if not need.any():
                    continue
                acc = torch.zeros(tb, dtype=torch.float64, device=self._dev)
                for fold, (uty, yv, y_ss, y_mean) in zip(folds, per_fold):
                    s = fold.s.double()[:, None]
                    g = (s / (s**2 + pen[cand][None, :])).to(self._dt)  # (r, tb) per-voxel diagonal
                    acc += self._fold_scores(fold, uty, yv, g[None], y_ss, y_mean)[0].double()
                total[cand[need], cols[need]] = acc[need]
                evaluated[cand[need], cols[need]] = True
        mean = torch.where(evaluated, total / len(folds), torch.full_like(total, math.nan))
        score_for_choice = torch.where(evaluated, mean, torch.full_like(mean, -math.inf)) + tie
        best = score_for_choice.argmax(dim=0)
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
        return _scores(y, pred, metric, ((y - y_mean) ** 2).sum(dim=0), y_mean).numpy()
