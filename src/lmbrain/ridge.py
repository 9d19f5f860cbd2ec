"""Ridge regression with one regularisation per voxel, chosen by grouped cross-validation.

:class:`RidgeCV` follows scikit-learn/himalaya conventions (``fit``/``predict``/``score``, fitted
attributes with a trailing underscore, ``__init__`` only stores its parameters) over a torch backend,
so the same code runs on CUDA. :class:`BandedRidgeCV` adds one penalty per feature band and voxel
(Dupré la Tour et al. 2022), on the same machinery.

Conventions
-----------
- **Alpha**: by default the *penalty* of scikit-learn and himalaya,
  ``W = argmin ||XW - Y||^2 + alpha ||W||^2 = V diag(s / (s^2 + alpha)) U^T Y``.
  The Huth-lab ``bootstrap_ridge`` uses ``V diag(s / (s^2 + a^2)) U^T Y``: its ``a`` enters squared.
  ``alpha_convention="huth"`` takes alphas in that convention (``penalty = a^2``); ``best_alphas_``
  is reported in the convention the estimator was given.
- **Cross-validation** never shuffles time points: folds are whole groups (stories) when
  ``groups`` is given to :meth:`RidgeCV.fit` (leave-one-group-out, or ``cv`` contiguous sets of
  groups), else ``cv`` contiguous blocks of samples. ``cv`` may also be an explicit list of
  ``(train_idx, test_idx)`` pairs (as scikit-learn and himalaya accept), e.g. another study's splits;
  samples in neither set of a fold are left out of that fold.
- **Selection score** (``score=``), computed per fold and averaged over folds; ties go to the larger
  alpha:

  - ``"r2"`` (default): ``1 - SSE / SST`` with SST around the validation mean (sklearn, himalaya);
  - ``"corr"``: Pearson correlation (Huth-lab ``bootstrap_ridge`` default);
  - ``"neg_mse"``: ``-SSE / n`` (himalaya's default);
  - ``"huth_r2"``: the Huth lab's ``ridge_corr(use_corr=False)`` (deep-fMRI-dataset): with
    ``R = 1 - var(y - pred) / ((1 + var(y)) / 2)`` (population variances, the residual centred),
    the score is ``sign(R) sqrt(|R|)``; the ``(1 + var) / 2`` denominator assumes z-scored responses;
  - ``"r2_clipped"``: semantic-decoding's ``ridge_corr(use_corr=False)``:
    ``clip(1 - var(y - pred) / var(y), 0, 1)`` (0 for a constant ``y``).

  R2 is the default because it penalises over-fitted, high-variance predictions: on pure-noise
  voxels correlation-based selection often picks the smallest alpha (a noisy fit whose correlation
  is positive by chance), while R2 picks the largest (predictions shrunk towards zero).
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

Banded ridge
------------
Band ``b`` of the features is scaled by ``sqrt(gamma_b)`` (``gamma`` on the simplex), which turns each
``gamma`` candidate into an ordinary ridge with penalty ``alpha``: band ``b``'s effective penalty is
``alpha / gamma_b``. :class:`BandedRidgeCV` searches ``gamma`` candidates x ``alphas`` per voxel:

- Per fold, the training Gram ``X'X - X_val'X_val`` (float64) is scaled per candidate
  (``D G D``, ``D = diag(sqrt(gamma))`` per column) and eigendecomposed once, ``D G D = Q S Q'``; the
  fold keeps ``A = X_val D Q`` (n_val x p) and ``M = Q' D`` (p x p). Validation predictions for a
  voxel batch are ``A diag(1/(s + alpha)) T`` with ``T = M X_tr'Y_tr``: one ``p x p`` product per
  (fold, candidate, batch) and one ``(n_val x p) @ (p x batch)`` product per evaluated alpha, the
  same floor as :class:`RidgeCV`; ``X_tr'Y_tr`` is shared by every candidate. (himalaya works with
  ``n_val x n_train`` resolution matrices instead, which costs ``n_train / p`` times more per alpha.)
- One wide band beside narrow ones (a language model's features beside the nuisance bands: all bands
  but the widest hold ``r`` columns, ``4 r`` at most the widest band's width and the sample count): every
  candidate's scaled Gram (or kernel) is the wide band's, scaled by its weight, plus a rank-``r`` part.
  The wide band is then eigendecomposed once per fold (and once for the refit) for all candidates, and a
  candidate adds its narrow columns exactly through ``r x r`` systems (block elimination in the primal,
  the Woodbury identity in the dual). Each evaluated alpha costs the same main product plus two of inner
  size ``r``; on the demo's shapes (``benchmarks/ridge.py --size banded-demo``, ``banded-demo-smollm2``)
  the search is 1.3x (512 features) and 2.9x (2,304 features, kernel space) faster than one
  eigendecomposition per fold and candidate, with the same choices. A term with an exact zero factor
  is not computed: a candidate without the wide band (a corner of the simplex) runs no main product,
  the wide band's own corner no narrow correction; the predictions are the same.
- Candidates are processed in chunks whose factors fit in half of ``memory_gb``; ``search="refine"``
  evaluates :class:`RidgeCV`'s coarse alphas per candidate, then climbs with one alpha per voxel in a
  single product per fold and step (``A @ (diag(1/(s + alpha_v)) T)`` column by column), the full
  grid's choice wherever a candidate's CV curve is unimodal (banded curves can have two modes near the
  corners of the simplex, where the coarse grid is what finds the better one).
- Candidate choice follows himalaya: candidates in order, each at its best alpha; a later candidate
  replaces the current best only if its mean CV score is higher by more than the float epsilon of
  ``dtype``. Integer ``gammas`` are himalaya's ``n_iter`` candidates (:func:`gamma_candidates`).
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from . import LmbrainError

SCORES = ("r2", "corr", "neg_mse", "huth_r2", "r2_clipped")
DEFAULT_ALPHAS = tuple(np.logspace(0, 6, 13))


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


def check_folds(folds, n_samples: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validate explicit ``(train_idx, test_idx)`` pairs: 1-D integer indices in ``[0, n_samples)``,
    neither set empty nor with repeats, no sample in both sets of a fold. Returns int64 arrays."""
    try:
        folds = list(folds)
    except TypeError:
        raise RidgeError(f"cv must be None, an int or a list of (train_idx, test_idx) pairs, got {folds!r}") from None
    if not folds:
        raise RidgeError("cv is an empty list of folds")
    out = []
    for i, fold in enumerate(folds):
        try:
            train, test = fold
        except (TypeError, ValueError):
            raise RidgeError(f"fold {i} of cv is not a (train_idx, test_idx) pair") from None
        pair = []
        for name, idx in (("train", train), ("test", test)):
            a = np.asarray(idx)
            if a.ndim != 1:
                raise RidgeError(f"fold {i}: {name} indices must be 1-D, got shape {a.shape}")
            if a.size == 0:
                raise RidgeError(f"fold {i}: the {name} set is empty")
            if not np.issubdtype(a.dtype, np.integer):
                raise RidgeError(f"fold {i}: {name} indices must be integers, got dtype {a.dtype}")
            if a.min() < 0 or a.max() >= n_samples:
                raise RidgeError(f"fold {i}: {name} indices out of range: [{a.min()}, {a.max()}] for "
                                 f"{n_samples} samples")
            if np.unique(a).size != a.size:
                raise RidgeError(f"fold {i}: repeated {name} indices")
            pair.append(a.astype(np.int64))
        both = np.intersect1d(pair[0], pair[1])
        if both.size:
            raise RidgeError(f"fold {i}: {both.size} samples are in both train and test (first: {both[0]})")
        out.append((pair[0], pair[1]))
    return out


def resolve_folds(n_samples: int, groups=None, cv=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The folds of a fit: ``cv`` None or an int goes to :func:`make_folds` (with ``groups``); any other
    ``cv`` is a list of explicit ``(train_idx, test_idx)`` pairs (:func:`check_folds`)."""
    if cv is None or (isinstance(cv, numbers.Integral) and not isinstance(cv, bool)):
        return make_folds(n_samples, groups, cv)
    if isinstance(cv, (str, bytes, float, bool)):
        raise RidgeError(f"cv must be None, an int or a list of (train_idx, test_idx) pairs, got {cv!r}")
    if groups is not None:
        raise RidgeError("give either groups or explicit folds in cv, not both: explicit folds already say "
                         "which samples are held out")
    return check_folds(cv, n_samples)


def _left_out(train: np.ndarray, val: np.ndarray, n: int) -> np.ndarray | None:
    """Samples in neither set of a fold (None when train and val cover every sample)."""
    if len(train) + len(val) == n:
        return None
    keep = np.zeros(n, dtype=bool)
    keep[train] = True
    keep[val] = True
    return np.flatnonzero(~keep)


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
    """Per-column scores of ``pred`` (n, t) against ``y`` (n, t); ``inplace`` lets it overwrite ``pred``.

    ``y_ss`` (t,) is the sum of squares of ``y`` around its mean ``y_mean`` (1, t)."""
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
    if kind in ("huth_r2", "r2_clipped"):
        # both Huth-lab variants use the variance of the residual (centred), not its mean square
        res_ss = resid.sub_(resid.mean(dim=0, keepdim=True)).square_().sum(dim=0)
        if kind == "huth_r2":
            r = 1 - (res_ss / n) / ((1 + y_ss / n) / 2)
            return torch.sign(r) * torch.sqrt(torch.abs(r))
        ok = y_ss > 0
        r = torch.where(ok, 1 - res_ss / torch.where(ok, y_ss, torch.ones_like(y_ss)), torch.zeros_like(res_ss))
        return r.clamp_(0, 1)
    sse = resid.square_().sum(dim=0)
    if kind == "neg_mse":
        return -sse / n
    # r2: 1 - SSE / SST (SST around the validation mean, as sklearn/himalaya)
    return torch.where(y_ss > 0, 1 - sse / torch.where(y_ss > 0, y_ss, torch.ones_like(y_ss)), torch.zeros_like(sse))


def _coarse(search: str, n_alpha: int) -> list[int]:
    """Alphas evaluated for every voxel; search='refine' then climbs to each voxel's best neighbour."""
    if search == "grid" or n_alpha <= 4:
        return list(range(n_alpha))
    stride = max(2, int(round(math.sqrt(n_alpha) * 0.9)))
    return sorted(set(range(0, n_alpha, stride)) | {n_alpha - 1})


def _val_data(Yb: torch.Tensor, val_rows) -> list:
    """Per fold: the validation rows of the batch, their mean and sum of squares around it."""
    out = []
    for va in val_rows:
        yv = Yb[va]
        y_mean = yv.mean(dim=0, keepdim=True)
        out.append((yv, y_mean, ((yv - y_mean) ** 2).sum(dim=0)))
    return out


def _search(predict, val_data, n_alpha: int, coarse: list[int], kind: str, dev,
            predict_each=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean CV score (n_alpha, batch) float64 (NaN where not evaluated) and each voxel's best alpha index.

    ``predict(i, a, cols)``: fold ``i``'s validation predictions at (sorted) alpha index ``a`` for the
    voxels ``cols`` (None = all). The ``coarse`` alphas are evaluated for every voxel, then each voxel
    climbs to its best neighbour until no neighbour of its best is unevaluated; ties go to the larger
    alpha. The result is the full grid's choice wherever a voxel's CV curve is unimodal.

    ``predict_each(i, a_vec, cols)``, when given, predicts with one alpha index per voxel (``a_vec``,
    one per column of ``cols``): the start and every climbing step are then one product per fold for all
    the voxels that need it, whatever their alphas (``predict`` serves only the coarse alphas)."""

    def scores(i, pred, cols):
        yv, y_mean, y_ss = val_data[i]
        if cols is not None:
            yv, y_mean, y_ss = _take(yv, cols, 1), _take(y_mean, cols, 1), _take(y_ss, cols)
        return _scores(yv, pred, kind, y_ss, y_mean, inplace=True).double()

    def evaluate(a: int, cols):
        acc = None
        for i in range(len(val_data)):
            sc = scores(i, predict(i, a, cols), cols)
            acc = sc if acc is None else acc + sc
        return acc / len(val_data)

    def evaluate_each(a_vec: torch.Tensor, cols):
        acc = None
        for i in range(len(val_data)):
            sc = scores(i, predict_each(i, a_vec, cols), cols)
            acc = sc if acc is None else acc + sc
        return acc / len(val_data)

    tb = val_data[0][0].shape[1]
    mean = torch.full((n_alpha, tb), math.nan, dtype=torch.float64, device=dev)
    all_cols = torch.arange(tb, device=dev)
    for a in coarse:
        mean[a] = evaluate(a, None)
    log_pen = torch.arange(n_alpha, device=dev, dtype=torch.float64)[:, None] * 1e-10  # ties -> larger alpha
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
            if predict_each is not None:
                if need.any():
                    cols = all_cols[need]
                    mean[cand_c[cols], cols] = evaluate_each(cand_c[cols], None if len(cols) == tb else cols)
                continue
            for a in torch.unique(cand_c[need]).tolist():
                cols = all_cols[need & (cand_c == a)]
                mean[a, cols] = evaluate(a, cols)
    return mean, best


def _take(x: torch.Tensor, idx: torch.Tensor | None, dim: int = 0) -> torch.Tensor:
    """``x`` at the indices ``idx`` along ``dim`` (None = all of ``x``): ``torch.index_select``, the same
    gather as ``x[idx]`` at a tenth of its time on CPU (13 x 512 float32 rows gathered for 2,508 voxels:
    0.10 against 0.95 ms)."""
    return x if idx is None else torch.index_select(x, dim, idx)


def _skinny(B: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """``B @ E`` for a tall ``B`` (voxels x q) and a narrow ``E`` (q x r), computed as ``(E' B')'``.

    The same products, in an orientation MKL's sgemm runs about twice as fast for this shape (2,508 x
    512 x 12 on one thread: 0.86 ms as ``B @ E``, 0.46 ms as ``(E' B')'``); a sum can round differently
    in its last float32 bit (one of the demo's 126 encoding fits moved by that much)."""
    return (E.T @ B.T).T


def _subtract_per_alpha(out: torch.Tensor, P: torch.Tensor, rhs: torch.Tensor, a_vec: torch.Tensor,
                        Sinv: torch.Tensor) -> None:
    """``out[:, v] -= P[a_v] @ x_v`` with ``x_v = rhs[v] @ Sinv[a_v]`` for every column ``v`` (``P``
    (n_alpha, n_val, r), ``rhs`` (m, r) and ``Sinv`` (n_alpha, r, r) float64; ``out`` (n_val, m) in its
    own dtype).

    The voxels are grouped by alpha through one stable sort, so each alpha's two small products
    (``rhs @ Sinv[a]``, as :func:`_rowsolve` does for one alpha, then ``@ P[a].T``) write a contiguous
    block of rows of the transposed correction, and one row copy puts them back in voxel order. The
    same products as a solve per row and one ``P[a] @ x[sel].T`` per alpha scattered into the columns
    of ``out``, without the per-row (m, r, r) gather of ``Sinv`` and the column scatter (2.8 against 1.1
    ms for 2,508 voxels over 13 alphas)."""
    a_sorted, perm = torch.sort(a_vec, stable=True)
    alphas, counts = torch.unique_consecutive(a_sorted, return_counts=True)
    xs = _take(rhs, perm)
    corr = torch.empty((rhs.shape[0], P.shape[1]), dtype=P.dtype, device=P.device)
    start = 0
    for a, c in zip(alphas.tolist(), counts.tolist()):
        torch.mm(_rowsolve(xs[start: start + c], Sinv[a]), P[a].T, out=corr[start: start + c])
        start += c
    out -= torch.empty_like(corr).index_copy_(0, perm, corr).T.to(out.dtype)


def _rowsolve(rhs: torch.Tensor, Sinv: torch.Tensor) -> torch.Tensor:
    """``rhs`` (m, r) times a symmetric inverse: one (r, r) for all rows, or one per row (m, r, r)."""
    if Sinv.ndim == 2:
        return rhs @ Sinv
    return torch.einsum("mj,mji->mi", rhs, Sinv)


def r2_score_split(Y, preds) -> np.ndarray:
    """Per-band R2 contributions (n_bands, n_targets) that sum to the joint R2 (float64).

    himalaya's ``r2_score_split`` (product measure, correlations between bands included):
    ``r2_b = sum_t (2 y * p_b - p_b * sum_c p_c) / sum_t y^2``, which assumes ``Y`` zero-mean over
    samples (z-score each story first). ``preds`` (n_bands, n_samples, n_targets)."""
    y = np.asarray(Y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    P = np.asarray(preds, dtype=np.float64)
    if P.ndim != 3 or P.shape[1:] != y.shape:
        raise RidgeError(f"per-band predictions must have shape (n_bands, {y.shape[0]}, {y.shape[1]}), got {P.shape}")
    total = P.sum(axis=0)
    sst = (y**2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((2 * y[None] - total[None]) * P).sum(axis=1) / sst


def _lowrank_split(band_sizes, n_samples: int) -> int | None:
    """The wide band whose eigendecomposition every band-weight candidate can share, or None.

    When all bands but the widest hold ``r`` columns in all, with ``4 r`` at most the widest band's width
    (and the number of samples), each candidate's scaled Gram (or kernel) is the wide band's, scaled,
    plus a rank-``r`` part that an ``r x r`` system adds exactly: one eigendecomposition per fold
    instead of one per fold and candidate, for about ``2 r / q`` more work per evaluated alpha."""
    if len(band_sizes) < 2:
        return None
    big = int(np.argmax(band_sizes))
    r = int(sum(band_sizes)) - int(band_sizes[big])
    return big if 4 * r <= min(int(band_sizes[big]), n_samples) else None


def _lowrank_columns(bands, big: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """The wide band's columns and the other bands' columns (sorted), as index tensors."""
    narrow = np.sort(np.concatenate([b for j, b in enumerate(bands) if j != big]))
    return torch.as_tensor(bands[big], device=dev), torch.as_tensor(narrow, device=dev)


def _use_dual(n_samples: int, n_features: int) -> bool:
    """Ridge and banded ridge solve in kernel space when there are more features than samples (their
    eigendecompositions are then n x n instead of p x p; the same fit by the push-through identity)."""
    return n_features > n_samples


@dataclass
class _Fold:
    train: torch.Tensor
    val: torch.Tensor
    hat: torch.Tensor  # (n_alphas, n_val, p): X_val V diag(1 / (s^2 + alpha)) V^T, one per alpha
    #                    dual: (n_alphas, n_val, n_train) K_val,tr U diag(1 / (s + alpha)) U^T
    drop: torch.Tensor | None = None  # samples in neither set (explicit folds only)


class _Estimator:
    """Shared parameter handling (sklearn's get_params/set_params), device setup and prediction."""

    #: constructor parameter -> attribute where a method already has the parameter's name
    _attr_of = {"score": "score_kind"}

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """The constructor parameters as stored (scikit-learn convention; ``clone`` works)."""
        return {name: getattr(self, self._attr_of.get(name, name)) for name in self._param_names()}

    def set_params(self, **params):
        names = self._param_names()
        for name, value in params.items():
            if name not in names:
                raise RidgeError(f"{type(self).__name__} has no parameter {name!r} (it has {names})")
            setattr(self, self._attr_of.get(name, name), value)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def _setup(self):
        if self.score_kind not in SCORES:
            raise RidgeError(f"score must be one of {SCORES}, got {self.score_kind!r}")
        if self.search not in ("grid", "refine"):
            raise RidgeError("search must be 'grid' or 'refine'")
        self._dt = {"float32": torch.float32, "float64": torch.float64}.get(self.dtype)
        if self._dt is None:
            raise RidgeError("dtype must be 'float32' or 'float64'")
        try:
            mem = float(self.memory_gb)
        except (TypeError, ValueError):
            mem = math.nan
        if not mem > 0:
            raise RidgeError(f"memory_gb must be a positive number, got {self.memory_gb!r}")
        self._dev = _device(self.device)

    @staticmethod
    def _check_alphas(alphas) -> np.ndarray:
        try:
            a = np.asarray(DEFAULT_ALPHAS if alphas is None else alphas, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise RidgeError(f"alphas must be positive finite numbers, got {alphas!r}") from None
        if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise RidgeError("alphas must be positive finite numbers")
        return a

    def _check_xy(self, X, Y):
        X_np, Y_np = np.asarray(X), np.asarray(Y)
        if Y_np.ndim == 1:
            Y_np = Y_np[:, None]
        if X_np.ndim != 2 or X_np.shape[0] != Y_np.shape[0]:
            raise RidgeError(f"X {X_np.shape} and Y {Y_np.shape} must be 2-D with the same number of samples")
        if not np.isfinite(X_np).all():
            raise RidgeError("X contains NaN or infinite values")
        return X_np, Y_np

    def _tensor(self, x, name: str) -> torch.Tensor:
        arr = np.asarray(x)
        if arr.ndim != 2:
            raise RidgeError(f"{name} must be 2-D (samples, features/targets), got shape {arr.shape}")
        t = torch.as_tensor(arr)
        return t.to(device=self._dev, dtype=self._dt)

    def _y_batch(self, Y_np, sl) -> torch.Tensor:
        Yb = self._tensor(Y_np[:, sl], "Y")
        if not torch.isfinite(Yb).all():
            where = f"targets {sl.start}..{sl.stop - 1}" if isinstance(sl, slice) else "some targets"
            raise RidgeError(f"Y contains NaN or infinite values ({where}); "
                             "replace them (the dataset readers zero them) before fitting")
        return Yb

    def _check_fitted_x(self, X) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise RidgeError(f"this {type(self).__name__} is not fitted yet: call fit first")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise RidgeError(f"X must have shape (n_samples, {self.n_features_in_}), got {X.shape}")
        return X

    def predict(self, X) -> np.ndarray:
        """Predictions (n_samples, n_targets) for X (n_samples, n_features)."""
        X = self._check_fitted_x(X)
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


class RidgeCV(_Estimator):
    """Ridge regression with one alpha per target (voxel), chosen by grouped cross-validation.

    Parameters
    ----------
    alphas : array-like of shape (n_alphas,) or None
        Candidate regularisation strengths (see ``alpha_convention``). None: ``logspace(0, 6, 13)``.
    cv : int, None or list of (train_idx, test_idx) pairs
        Number of folds (see :func:`make_folds`); ``None`` = leave-one-group-out when groups are given;
        or explicit folds (:func:`check_folds`), then without ``groups``.
    score : {"r2", "corr", "neg_mse", "huth_r2", "r2_clipped"}
        Cross-validation score used to pick each voxel's alpha (see the module notes). Stored as
        ``score_kind`` (``score`` is the method); ``get_params`` reports it as ``score``.
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

    Parameters are stored as given; they are converted and checked by :meth:`fit`.

    Attributes
    ----------
    coef_ : ndarray (n_features, n_targets)
    best_alphas_ : ndarray (n_targets,) in the given convention
    cv_scores_ : ndarray (n_alphas, n_targets); rows in increasing alpha; NaN where ``search="refine"``
        did not evaluate an alpha
    best_scores_ : ndarray (n_targets,) CV score at the chosen alpha
    """

    def __init__(self, alphas=None, cv=None, score: str = "r2", alpha_convention: str = "penalty",
                 search: str = "grid", device: str = "auto", dtype: str = "float32", memory_gb: float = 2.0,
                 progress: bool = False):
        self.alphas = alphas
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
        self._setup()
        if self.alpha_convention not in ("penalty", "huth"):
            raise RidgeError("alpha_convention must be 'penalty' or 'huth'")
        a = self._check_alphas(self.alphas)
        order = np.argsort(a)
        self._alphas_sorted = a[order]
        penalties = a[order] ** 2 if self.alpha_convention == "huth" else a[order]
        return penalties

    def fit(self, X, Y, groups=None):
        """Fit on X (n_samples, n_features) and Y (n_samples, n_targets), choosing one alpha per target.

        ``groups`` (n_samples,): the story (or block) of each sample; folds never split a group.
        """
        penalties = self._check()
        X_np, Y_np = self._check_xy(X, Y)
        n, p = X_np.shape
        t = Y_np.shape[1]
        folds_idx = resolve_folds(n, groups, self.cv)
        pen = torch.as_tensor(penalties, device=self._dev, dtype=torch.float64)
        Xt = self._tensor(X_np, "X")
        n_alpha = len(penalties)

        # One symmetric eigendecomposition per fold, from shared sums: X_tr'X_tr = X'X - X_val'X_val
        # (in float64, p x p), then each alpha's validation "hat" X_val V diag(1/(s^2+a)) V^T.
        # More features than samples: the same in kernel space (n_train x n_train, _dual_folds).
        X64 = Xt.double()
        self._dual = _use_dual(n, p)
        if self._dual:
            folds, evals_all, evecs_t = self._dual_folds(X64, folds_idx, pen)
            right = (X64.T @ evecs_t.double()).to(self._dt)  # (p, n): X' U of the refit on all samples
            del X64
            return self._finish(Xt, Y_np, folds, folds_idx, evals_all, evecs_t, right, pen)
        gram = X64.T @ X64
        folds = []
        for train, val in folds_idx:
            tr = torch.as_tensor(train, device=self._dev)
            va = torch.as_tensor(val, device=self._dev)
            drop = _left_out(train, val, n)
            xv = X64[va]
            g = gram - xv.T @ xv
            if drop is not None:
                drop = torch.as_tensor(drop, device=self._dev)
                g = g - X64[drop].T @ X64[drop]
            evals, evecs = torch.linalg.eigh(g)
            evals = evals.clamp_min(0)
            q = (xv @ evecs).to(self._dt)  # (n_val, p)
            inv = (1.0 / (evals[None, :] + pen[:, None])).to(self._dt)  # (n_alpha, p)
            vt = evecs.T.to(self._dt)
            hat = torch.stack([(q * inv[a]) @ vt for a in range(n_alpha)])
            folds.append(_Fold(tr, va, hat, drop))
        evals_all, evecs_all = torch.linalg.eigh(gram)
        evals_all = evals_all.clamp_min(0)
        evecs_t = evecs_all.to(self._dt)
        del X64, gram
        return self._finish(Xt, Y_np, folds, folds_idx, evals_all, evecs_t, evecs_t, pen)

    def _dual_folds(self, X64, folds_idx, pen):
        """Kernel-space folds: K = X X' (float64), per fold K_tr = U S U' and each alpha's validation hat
        K_val,tr U diag(1/(s + a)) U' (applied to Y_tr, not X_tr'Y_tr); the eigendecomposition of K."""
        K = X64 @ X64.T
        folds = []
        n = K.shape[0]
        for train, val in folds_idx:
            tr = torch.as_tensor(train, device=self._dev)
            va = torch.as_tensor(val, device=self._dev)
            drop = _left_out(train, val, n)
            evals, U = torch.linalg.eigh(K[tr][:, tr])
            evals = evals.clamp_min(0)
            q = (K[va][:, tr] @ U).to(self._dt)
            inv = (1.0 / (evals[None, :] + pen[:, None])).to(self._dt)
            ut = U.T.to(self._dt)
            hat = torch.stack([(q * inv[a]) @ ut for a in range(len(pen))])
            folds.append(_Fold(tr, va, hat, None if drop is None else torch.as_tensor(drop, device=self._dev)))
        evals_all, U_all = torch.linalg.eigh(K)
        return folds, evals_all.clamp_min(0), U_all.to(self._dt)

    def _finish(self, Xt, Y_np, folds, folds_idx, evals_all, evecs_t, right, pen):
        """CV over voxel batches and the refit W = right diag(1/(s + a_v)) evecs' Z, where Z is X'Y
        (primal: right = V) or Y (dual: right = X'U)."""
        n, p = Xt.shape
        t = Y_np.shape[1]
        n_alpha = len(pen)
        max_val = max(len(v) for _, v in folds_idx)
        batch = self._batch_size(n, p, max_val, n_alpha, len(folds))
        coarse = _coarse(self.search, n_alpha)

        coef = np.empty((p, t), dtype=np.float32 if self._dt == torch.float32 else np.float64)
        cv_scores = np.full((n_alpha, t), np.nan)
        best_idx = np.empty(t, dtype=np.int64)
        from .io import progress_bar as tqdm

        starts = range(0, t, batch)
        for start in tqdm(starts, desc="ridge voxel batches", disable=not self.progress):
            sl = slice(start, min(start + batch, t))
            Yb = self._y_batch(Y_np, sl)
            xty = Yb if self._dual else Xt.T @ Yb  # X'Y (p, tb) or, dual, Y (n, tb): shared by the folds and the refit
            scores_b, idx_b = self._cv_batch(folds, Xt, Yb, xty, coarse)
            cv_scores[:, sl] = scores_b
            best_idx[sl] = idx_b
            # refit on all samples with each voxel's alpha: W = V diag(1/(s^2 + a_v)) V^T X'Y
            # (dual: X'U diag(1/(s + a_v)) U'Y)
            g = 1.0 / (evals_all[:, None] + pen[torch.as_tensor(idx_b, device=self._dev)][None, :])
            coef[:, sl] = (right @ (g.to(self._dt) * (evecs_t.T @ xty))).cpu().numpy()
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
        return max(1, int(float(self.memory_gb) * 2**30 // per_target))

    def _cv_batch(self, folds, Xt, Yb, xty, coarse):
        n_alpha = folds[0].hat.shape[0]
        # X_tr' Y_tr for each fold from the shared sum: X'Y - X_val' Y_val (dual: the hat applies to Y_tr)
        if self._dual:
            ztr = [Yb[f.train] for f in folds]
        else:
            ztr = []
            for f in folds:
                z = xty - Xt[f.val].T @ Yb[f.val]
                if f.drop is not None:
                    z -= Xt[f.drop].T @ Yb[f.drop]
                ztr.append(z)
        val_data = _val_data(Yb, [f.val for f in folds])

        def predict(i, a, cols):
            return folds[i].hat[a] @ _take(ztr[i], cols, 1)

        mean, best = _search(predict, val_data, n_alpha, coarse, self.score_kind, self._dev)
        return mean.cpu().numpy(), best.cpu().numpy()


# ------------------------------------------------------------------------------------------------
# Banded ridge

def gamma_candidates(n_candidates: int, n_bands: int, random_state=None, concentration=(0.1, 1.0)) -> np.ndarray:
    """himalaya's ``n_iter`` band-weight candidates (n_candidates, n_bands), rows on the simplex.

    Exactly ``himalaya.kernel_ridge.generate_dirichlet_samples`` followed by its first row set to the
    centre ``1 / n_bands`` (as himalaya's ``solve_group_ridge_random_search`` does): Dirichlet samples,
    alternating between the ``concentration`` values (0.1: near the corners and edges; 1: uniform on
    the simplex), drawn from ``numpy.random.RandomState(random_state)`` (the global one when None).
    himalaya adds no exact corners; prepend ``np.eye(n_bands)`` to an explicit array for them.
    """
    if random_state is None:
        rng = np.random.mtrand._rand
    elif isinstance(random_state, np.random.RandomState):
        rng = random_state
    elif isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        rng = np.random.RandomState(int(random_state))
    else:
        raise RidgeError(f"random_state must be None, an int or a numpy RandomState, got {random_state!r}")
    conc = np.atleast_1d(np.asarray(concentration, dtype=np.float64))
    per = int(np.ceil(n_candidates / len(conc)))
    draws = [np.tile(np.full(n_bands, 1.0 / n_bands), (per, 1)) if c == np.inf else rng.dirichlet([c] * n_bands, per)
             for c in conc]
    g = np.vstack(draws).reshape(len(conc), per, n_bands).swapaxes(0, 1).reshape(-1, n_bands)[:n_candidates]
    g[0] = 1.0 / n_bands
    return g


def check_bands(bands, n_features: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Validate ``bands`` (a list of column-index arrays, boolean masks or slices of ``X``, one per band):
    every column of ``X`` in exactly one band, no band empty. Returns the int64 index arrays and the band
    of each column (n_features,)."""
    if isinstance(bands, (slice, np.ndarray, str)) or not hasattr(bands, "__len__"):
        raise RidgeError("bands must be a list with one column-index array (or slice) per band")
    if len(bands) == 0:
        raise RidgeError("bands is empty: give at least one band of columns")
    cols = np.arange(n_features)
    col_band = np.full(n_features, -1, dtype=np.int64)
    out = []
    for b, band in enumerate(bands):
        if isinstance(band, slice):
            idx = cols[band]
        else:
            idx = np.asarray(band)
            if idx.ndim != 1:
                raise RidgeError(f"band {b} must be a 1-D array of column indices or a slice, got shape {idx.shape}")
            if idx.dtype == bool:
                if idx.size != n_features:
                    raise RidgeError(f"band {b}: a boolean mask needs one entry per column ({n_features})")
                idx = np.flatnonzero(idx)
            elif idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise RidgeError(f"band {b}: column indices must be integers, got dtype {idx.dtype}")
        if idx.size == 0:
            raise RidgeError(f"band {b} has width 0 (no columns)")
        idx = idx.astype(np.int64)
        if idx.min() < 0 or idx.max() >= n_features:
            raise RidgeError(f"band {b}: column indices out of range [{idx.min()}, {idx.max()}] for X with "
                             f"{n_features} columns")
        if np.unique(idx).size != idx.size:
            raise RidgeError(f"band {b} lists a column twice")
        taken = idx[col_band[idx] >= 0]
        if taken.size:
            raise RidgeError(f"bands overlap: column {taken[0]} of X is in band {col_band[taken[0]]} and band {b} "
                             f"({taken.size} shared columns)")
        col_band[idx] = b
        out.append(idx)
    missing = np.flatnonzero(col_band < 0)
    if missing.size:
        raise RidgeError(f"{missing.size} columns of X are in no band (first: {missing[:5].tolist()}); "
                         "every column must belong to exactly one band")
    return out, col_band


def check_gammas(gammas, n_bands: int, random_state=None) -> np.ndarray:
    """Band-weight candidates (n_candidates, n_bands) float64 from an int (:func:`gamma_candidates`) or
    an explicit array whose rows lie on the simplex (non-negative, summing to 1 within 1e-5)."""
    if isinstance(gammas, numbers.Integral) and not isinstance(gammas, bool):
        if gammas < 1:
            raise RidgeError(f"gammas must be a positive number of candidates or an array, got {gammas}")
        return gamma_candidates(int(gammas), n_bands, random_state)
    try:
        g = np.atleast_2d(np.asarray(gammas, dtype=np.float64))
    except (TypeError, ValueError):
        raise RidgeError(f"gammas must be an int or an array (n_candidates, n_bands), got {gammas!r}") from None
    if g.ndim != 2 or g.shape[1] != n_bands or g.shape[0] == 0:
        raise RidgeError(f"gammas must have shape (n_candidates, {n_bands}) for {n_bands} bands, got {np.shape(gammas)}")
    if not np.isfinite(g).all() or (g < 0).any() or (np.abs(g.sum(axis=1) - 1) > 1e-5).any():
        bad = np.flatnonzero(~np.isfinite(g).all(axis=1) | (g < 0).any(axis=1) | (np.abs(g.sum(axis=1) - 1) > 1e-5))
        raise RidgeError(f"gammas must lie on the simplex (non-negative, each row summing to 1): row {bad[0]} is "
                         f"{g[bad[0]].tolist()}")
    return g


def _gamma_neighbours(g: np.ndarray, factor: float, mix: float) -> list[np.ndarray]:
    """Points of the simplex next to ``g``: each band's weight multiplied and divided by ``factor`` (then
    renormalised); a band at zero weight instead gets the share ``mix``. Points equal to ``g`` are dropped."""
    out = []
    for b in range(len(g)):
        if g[b] > 0:
            for f in (factor, 1 / factor):
                w = g.copy()
                w[b] *= f
                out.append(w / w.sum())
        else:
            e = np.zeros_like(g)
            e[b] = 1
            out.append((1 - mix) * g + mix * e)
    return [w for w in out if not np.allclose(w, g, rtol=0, atol=1e-9)]


@dataclass
class _BandFold:
    val: torch.Tensor
    drop: torch.Tensor | None
    A: torch.Tensor  # (n_val, p): X_val D Q; dual: (n_val, n_tr) K_val,tr U
    M: torch.Tensor  # (p, p): Q' D; dual: (n_tr, n_tr) U'
    inv: torch.Tensor  # (n_alpha, p) or (n_alpha, n_tr): 1 / (s + alpha)


class BandedRidgeCV(_Estimator):
    """Banded ridge: per voxel, an overall ``alpha`` and band weights ``gamma`` on the simplex, chosen by
    grouped cross-validation; band ``b``'s effective penalty is ``alpha / gamma_b``.

    Parameters
    ----------
    alphas : array-like of shape (n_alphas,) or None
        Candidate overall penalties (sklearn/himalaya convention). None: ``logspace(0, 6, 13)``.
    gammas : int or array-like of shape (n_candidates, n_bands)
        Band-weight candidates: an int is that many of himalaya's ``n_iter`` candidates
        (:func:`gamma_candidates`: the centre, then Dirichlet samples from ``random_state``); an array
        is used as given (rows on the simplex; a zero weight switches a band off).
    cv : int, None or list of (train_idx, test_idx) pairs
        As :class:`RidgeCV`: folds of whole groups (``fit(..., groups=)``), ``cv`` contiguous sets of
        them, or explicit folds.
    score : {"r2", "corr", "neg_mse", "huth_r2", "r2_clipped"}
        CV score (module notes); ``"neg_mse"`` is himalaya's default. Stored as ``score_kind``.
    search : {"grid", "refine"}
        Per candidate, every alpha or :class:`RidgeCV`'s coarse grid plus climbing.
    device, dtype, memory_gb, progress
        As :class:`RidgeCV`; ``memory_gb`` bounds the candidate factors plus the voxel-batch arrays.
    random_state : None, int or numpy RandomState
        Seed of the Dirichlet candidates when ``gammas`` is an int (himalaya's ``random_state``).
    refine_gammas : int
        Rounds of local search after the candidates (default 0: himalaya's random search only). In
        round ``r`` the voxels that share a best gamma try its neighbours on the simplex (each band's
        weight multiplied and divided by ``4 ** (1 / 2**r)``; a band at weight 0 gets the share
        ``0.1 / 2**r``), each at its best alpha; a neighbour is kept only when its CV score is higher
        (himalaya's rule), so no voxel's CV score decreases. Costs ``2 n_bands`` eigendecompositions per
        fold and shared gamma, and about ``2 n_bands / n_candidates`` of the search's products per round.

    Parameters are stored as given; they are converted and checked by :meth:`fit`.

    Attributes
    ----------
    coef_ : ndarray (n_features, n_targets)
        Weights on the unscaled columns of X (original column order).
    best_alphas_ : ndarray (n_targets,)
        Overall penalty ``alpha``.
    best_gammas_ : ndarray (n_bands, n_targets)
        Band weights (rows of ``gammas_``).
    band_alphas_ : ndarray (n_bands, n_targets)
        Effective per-band penalties ``alpha / gamma`` (himalaya's ``exp(-deltas_)``; inf for a zero weight).
    cv_scores_ : ndarray (n_candidates, n_targets)
        Each candidate's mean CV score at its best alpha (himalaya's ``cv_scores_``).
    best_scores_ : ndarray (n_targets,)
        CV score of the chosen (gamma, alpha).
    best_candidates_ : ndarray (n_targets,)
        Row of ``gammas_`` chosen per voxel.
    gammas_ : ndarray (n_candidates + n_refined, n_bands)
        The candidates searched, then the points tried by ``refine_gammas`` (``cv_scores_`` has rows for
        the candidates only).
    bands_ : list of ndarray
        Column indices of each band.
    folds_ : list of (train_idx, val_idx)
        The CV folds used (for :meth:`cv_score_split`).
    """

    def __init__(self, alphas=None, gammas=20, cv=None, score: str = "r2", search: str = "grid",
                 device: str = "auto", dtype: str = "float32", memory_gb: float = 2.0, random_state=None,
                 refine_gammas: int = 0, progress: bool = False):
        self.alphas = alphas
        self.gammas = gammas
        self.cv = cv
        self.score_kind = score
        self.search = search
        self.refine_gammas = refine_gammas
        self.device = device
        self.dtype = dtype
        self.memory_gb = memory_gb
        self.random_state = random_state
        self.progress = progress

    # ----------------------------------------------------------------------------------------
    def _plan(self, n: int, p: int, n_val_sum: int, max_val: int, n_folds: int, n_alpha: int, n_cand: int):
        """Candidates per chunk (their factors in at most half of ``memory_gb``) and voxels per batch."""
        item = 4 if self._dt == torch.float32 else 8
        budget = float(self.memory_gb) * 2**30
        per_cand = item * (n_val_sum * p + n_folds * p * p + n_folds * n_alpha * p)  # A, M, 1/(s + alpha)
        chunk = int(max(1, min(n_cand, (budget / 2) // per_cand)))
        # the batch of Y and its validation rows (2 n), X'Y, each fold's X_tr'Y_tr and T = M X_tr'Y_tr, one
        # scaled copy of T ((2 n_folds + 2) p), one fold's prediction and its copies (3 n_val); float64 scores
        per_target = item * (2 * n + (2 * n_folds + 2) * p + 3 * max_val) + 8 * (3 * n_alpha + 4)
        batch = max(1, int(max(budget - chunk * per_cand, budget / 2) // per_target))
        return chunk, batch, per_cand, per_target

    def fit(self, X, Y, bands, groups=None):
        """Fit on X (n_samples, n_features) and Y (n_samples, n_targets).

        Parameters
        ----------
        X : array (n_samples, n_features)
            All bands side by side (z-scored per story; no intercept is fitted).
        Y : array (n_samples, n_targets) or (n_samples,)
        bands : list of index arrays, boolean masks or slices
            The columns of X in each band; every column in exactly one band.
        groups : array (n_samples,) or None
            The story (or block) of each sample; folds never split a group.
        """
        self._setup()
        self._check_refine_gammas()
        a = self._check_alphas(self.alphas)
        order = np.argsort(a)
        alphas_sorted = a[order]
        X_np, Y_np = self._check_xy(X, Y)
        n, p = X_np.shape
        t = Y_np.shape[1]
        band_idx, col_band = check_bands(bands, p)
        cand = check_gammas(self.gammas, len(band_idx), self.random_state)
        folds_idx = resolve_folds(n, groups, self.cv)
        n_cand, n_alpha, n_folds = len(cand), len(alphas_sorted), len(folds_idx)
        dev, dt = self._dev, self._dt
        pen = torch.as_tensor(alphas_sorted, device=dev, dtype=torch.float64)
        col_band_t = torch.as_tensor(col_band, device=dev)

        Xt = self._tensor(X_np, "X")
        # primal (feature space, p x p eigendecompositions) when there are fewer features than samples,
        # else dual (kernel space, n_train x n_train): the same predictions (push-through identity)
        self._dual = _use_dual(n, p)
        X64 = Xt.double()
        gram = None if self._dual else X64.T @ X64  # float64 (p, p), shared by every fold and candidate
        if not self._dual:
            del X64
            X64 = None
        parts = []
        for train, val in folds_idx:
            drop = _left_out(train, val, n)
            parts.append((torch.as_tensor(val, device=dev), None if drop is None else torch.as_tensor(drop, device=dev),
                          torch.as_tensor(train, device=dev)))

        coarse = _coarse(self.search, n_alpha)
        eps = float(np.finfo(np.float32 if dt == torch.float32 else np.float64).eps)
        cv_scores = np.full((n_cand, t), np.nan)
        state = (np.full(t, -np.inf), np.zeros(t, dtype=np.int64), np.zeros(t, dtype=np.int64))  # score, cand, alpha
        ctx = dict(Xt=Xt, X64=X64, Y_np=Y_np, gram=gram, parts=parts, col_band_t=col_band_t, pen=pen, coarse=coarse, eps=eps,
                   evaluated=0,
                   shape=(n, p, sum(len(v) for _, v in folds_idx), max(len(v) for _, v in folds_idx), n_folds, n_alpha))
        big = _lowrank_split([len(b) for b in band_idx], n)
        if big is not None:  # one eigendecomposition per fold, shared by every candidate
            ctx.update(lowrank=_lowrank_columns(band_idx, big, dev), lowrank_big=big)
        self._lowrank = big is not None
        self._run_candidates(ctx, cand, np.arange(n_cand), None, state, cv_scores, progress=self.progress)
        rounds = self._check_refine_gammas()
        for r in range(rounds):  # local search around each voxel's best gamma, shared by the voxels of a gamma
            factor = 4.0 ** (0.5**r)
            jobs, rows = [], []
            for g in np.unique(state[1]):
                nb = _gamma_neighbours(cand[g], factor, 0.1 * 0.5**r)
                if len(nb):
                    jobs.append((len(cand) + len(rows) + np.arange(len(nb)), np.flatnonzero(state[1] == g)))
                    rows.extend(nb)
            if not rows:
                break
            cand = np.vstack([cand, np.asarray(rows)])
            for ids, vox in jobs:
                self._run_candidates(ctx, cand, ids, vox, state, None)
        best_score, best_cand, best_alpha = state
        self._n_evaluated = ctx["evaluated"]  # (candidate, alpha, voxel) CV scores computed

        self.gammas_ = cand
        self.bands_ = band_idx
        self.folds_ = [(tr, va) for tr, va in folds_idx]
        self.n_features_in_ = p
        self._n_samples_fit = n
        self._col_band = col_band
        self._alphas_sorted = alphas_sorted
        self.best_candidates_ = best_cand
        self._best_alpha_idx = best_alpha
        self.best_alphas_ = alphas_sorted[best_alpha]
        self.best_gammas_ = cand[best_cand].T.copy()
        with np.errstate(divide="ignore"):
            self.band_alphas_ = self.best_alphas_[None, :] / self.best_gammas_
        self.cv_scores_ = cv_scores
        self.best_scores_ = np.where(np.isfinite(best_score), best_score, np.nan)
        item = 4 if dt == torch.float32 else 8
        # the refit per voxel: its column of Y (copy and tensor) and four p-vectors (X'Y, M X'Y, scaled, W)
        del ctx, X64
        self.coef_ = self._fixed_coef(Xt, Y_np, gram, None, max(1, int(float(self.memory_gb) * 2**30 //
                                                                           (item * (2 * n + 4 * p)))))
        return self

    def _check_refine_gammas(self) -> int:
        r = self.refine_gammas
        if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 0:
            raise RidgeError(f"refine_gammas must be a number of rounds (0 or more), got {r!r}")
        return int(r)

    def _run_candidates(self, ctx, cand, ids, vox, state, cv_scores, progress=False):
        """Evaluate the candidates ``cand[ids]`` (each at its best alpha) for the voxels ``vox`` (None = all)
        and update ``state`` (best score, candidate and alpha index per voxel) by himalaya's rule:
        candidates in order, one replaces the current best only when better by more than ``eps``."""
        if ctx.get("lowrank") is not None:
            return self._run_candidates_lowrank(ctx, cand, ids, vox, state, cv_scores, progress)
        Xt, Y_np, parts, dev = ctx["Xt"], ctx["Y_np"], ctx["parts"], self._dev
        n, p, n_val_sum, max_val, n_folds, n_alpha = ctx["shape"]
        t = Y_np.shape[1] if vox is None else len(vox)
        # the factors' inner dimension: features (primal) or at most n training samples (dual)
        chunk, batch, _, _ = self._plan(n, n if self._dual else p, n_val_sum, max_val, n_folds, n_alpha, len(ids))
        from .io import progress_bar as tqdm

        chunks = [ids[s: s + chunk] for s in range(0, len(ids), chunk)]
        bar = tqdm(total=len(chunks) * math.ceil(t / batch), desc="banded ridge batches", disable=not progress)
        for cands in chunks:
            if self._dual:
                factors = self._factors_dual(ctx["X64"], parts, cand, cands, ctx["col_band_t"], ctx["pen"])
            else:
                factors = self._factors(Xt, ctx["gram"], parts, cand, cands, ctx["col_band_t"], ctx["pen"])
            for start in range(0, t, batch):
                sl = slice(start, min(start + batch, t)) if vox is None else vox[start: start + batch]
                Yb = self._y_batch(Y_np, sl)
                if self._dual:  # T = U' Y_tr
                    ztr = [Yb[tr] for _, _, tr in parts]
                else:
                    xty = Xt.T @ Yb
                    ztr = []
                    for va, drop, _ in parts:  # X_tr'Y_tr = X'Y - X_val'Y_val (- left-out rows), shared by candidates
                        z = xty - Xt[va].T @ Yb[va]
                        if drop is not None:
                            z -= Xt[drop].T @ Yb[drop]
                        ztr.append(z)
                    del xty
                val_data = _val_data(Yb, [va for va, _, _ in parts])
                for c in cands:
                    fc = factors[c]
                    # T' = (M X_tr'Y_tr)' (batch x p): voxels in rows, so that a subset of voxels is a cheap gather
                    Tt = [z.T @ f.M.T for f, z in zip(fc, ztr)]

                    def predict(i, a, cols, fc=fc, Tt=Tt):
                        return (fc[i].A * fc[i].inv[a]) @ _take(Tt[i], cols).T

                    def predict_each(i, a_vec, cols, fc=fc, Tt=Tt):  # one alpha per voxel: scale T's columns
                        return fc[i].A @ (_take(fc[i].inv, a_vec) * _take(Tt[i], cols)).T

                    # refine: the coarse grid, then each voxel climbs, one product per fold and step for all
                    # the voxels that climb (a warm start from another candidate's alpha was no faster on CPU
                    # and missed the best alpha of ~5% of (voxel, candidate) pairs: banded CV curves can have
                    # two modes, e.g. near a corner of the simplex)
                    self._search_candidate(ctx, c, sl, predict, predict_each, val_data, state, cv_scores)
                    del Tt
                del Yb, ztr, val_data
                bar.update(1)
            del factors
        bar.close()

    def _search_candidate(self, ctx, c, sl, predict, predict_each, val_data, state, cv_scores):
        """Candidate ``c``'s CV scores at every alpha for the voxels ``sl`` of the batch, its best alpha per
        voxel, and the update of ``state`` by himalaya's rule (better by more than ``eps`` replaces)."""
        dev = self._dev
        best_score, best_cand, best_alpha = state
        mean, best = _search(predict, val_data, ctx["shape"][5], ctx["coarse"], self.score_kind, dev,
                             predict_each=predict_each if self.search == "refine" else None)
        sc = mean[best, torch.arange(mean.shape[1], device=dev)].cpu().numpy()
        best_np = best.cpu().numpy()
        ctx["evaluated"] += int((~torch.isnan(mean)).sum())
        if cv_scores is not None:
            cv_scores[c, sl] = sc
        better = sc > best_score[sl] + ctx["eps"]
        best_score[sl] = np.where(better, sc, best_score[sl])
        best_cand[sl] = np.where(better, c, best_cand[sl])
        best_alpha[sl] = np.where(better, best_np, best_alpha[sl])

    # -- the shared factorisation: one wide band, a few narrow ones -----------------------------------
    def _lowrank_folds(self, ctx) -> list[dict]:
        """Per fold, the factors every candidate shares (computed once per fit): the eigendecomposition
        of the wide band's training Gram (primal, ``G_ff = Q S Q'``) or kernel (dual, ``K_f = U S U'``),
        the validation rows in that basis (``A``), the narrow columns' coupling to it (``C0``) and their
        validation rows (``Ar``); primal also ``G_rr``. float64 except ``A`` and the basis (``dt``)."""
        if "lowrank_folds" in ctx:
            return ctx["lowrank_folds"]
        f, r = ctx["lowrank"]
        dt, out = self._dt, []
        if not self._dual:
            Xt, gram = ctx["Xt"], ctx["gram"]
            for va, drop, _ in ctx["parts"]:
                xv = Xt[va].double()
                g = gram - xv.T @ xv
                if drop is not None:
                    xd = Xt[drop].double()
                    g = g - xd.T @ xd
                evals, Q = torch.linalg.eigh(g[f][:, f])
                out.append(dict(s=evals.clamp_min(0), basis=Q.to(dt), A=(xv[:, f] @ Q).to(dt), Ar=xv[:, r],
                                C0=Q.T @ g[f][:, r], Grr=g[r][:, r]))
                del g, xv, Q
        else:
            X64 = ctx["X64"]
            Kf, Xr = X64[:, f] @ X64[:, f].T, X64[:, r]
            for va, _, tr in ctx["parts"]:
                evals, U = torch.linalg.eigh(Kf[tr][:, tr])
                out.append(dict(s=evals.clamp_min(0), basis=U.to(dt), A=(Kf[va][:, tr] @ U).to(dt), Ar=Xr[va],
                                C0=U.T @ Xr[tr]))
                del U
            del Kf
        ctx["lowrank_folds"] = out
        return out

    def _lowrank_candidate(self, fold: dict, gamma: np.ndarray, big: int, r_band: torch.Tensor, pen) -> dict:
        """One candidate's small factors on one fold, for every alpha.

        With ``L = g s + alpha`` (the wide band's weight ``g``) and the narrow columns' ``d_r = sqrt(gamma)``,
        a voxel batch's validation predictions are ``g (A L^-1) b - P x_r`` with ``x_r = S^-1 (b0 + (L^-1 b)' Cr)``:

        - primal (block elimination of ``[g S + alpha, C; C', D_r G_rr D_r + alpha]``, ``C = sqrt(g) C0 D_r``):
          ``b = Q' z_f``, ``b0 = d_r z_r``, ``Cr = -sqrt(g) C``, ``P = sqrt(g) A L^-1 C - X_r,val D_r``,
          ``S = D_r G_rr D_r + alpha - C' L^-1 C`` (the Schur complement);
        - dual (Woodbury, ``N = U' X_r,tr D_r``): ``b = U' y_tr``, ``b0 = 0``, ``Cr = N``,
          ``P = g A L^-1 N - X_r,val D_r``, ``S = 1 + N' L^-1 N`` (``x_r`` is then ``N' w``).

        ``inv`` = ``1 / L`` and ``E`` = ``L^-1 Cr`` per alpha in ``dtype``; ``P`` and ``S^-1`` float64."""
        dev, dt = self._dev, self._dt
        g = float(gamma[big])
        dr = torch.sqrt(torch.as_tensor(gamma, device=dev, dtype=torch.float64)[r_band])
        inv = 1.0 / (g * fold["s"][None, :] + pen[:, None])  # (n_alpha, q)
        eye = torch.eye(len(dr), device=dev, dtype=torch.float64)
        if not self._dual:
            C = math.sqrt(g) * fold["C0"] * dr[None, :]
            S = (dr[:, None] * fold["Grr"] * dr[None, :])[None] + pen[:, None, None] * eye
            S = S - torch.einsum("qi,aq,qj->aij", C, inv, C)
            Cr, Cp = -math.sqrt(g) * C, math.sqrt(g) * C
        else:
            Cr = fold["C0"] * dr[None, :]
            S = eye[None] + torch.einsum("qi,aq,qj->aij", Cr, inv, Cr)
            Cp = g * Cr
        P = None  # no validation rows: a refit (_fixed_fits_lowrank)
        if "A" in fold:  # from A as stored (dtype), as the main term uses it
            # A @ (L^-1 Cp) per alpha: a batched product with no (n_val, n_alpha, q) intermediate. The einsum
            # "nq,aq,qr->anr" made one (8 MB per fold and candidate at 150-TR folds): thousands of such
            # short-lived blocks between the factors kept left glibc's heap holding ~6 GB at real size
            P = torch.matmul(fold["A"].double(), inv[:, :, None] * Cp[None]) - (fold["Ar"] * dr[None, :])[None]
        return dict(g=g, dr=dr, Cr=Cr.to(dt), E=(inv[:, :, None] * Cr[None]).to(dt),
                    inv=inv.to(dt), P=P, Sinv=torch.linalg.inv(S),
                    wide=g > 0, couple=bool(Cr.any()), corrected=bool(dr.any()))

    def _run_candidates_lowrank(self, ctx, cand, ids, vox, state, cv_scores, progress=False):
        """:meth:`_run_candidates` when every band but the widest is narrow (``_lowrank_split``): one
        eigendecomposition per fold for all candidates instead of one per (fold, candidate). A candidate
        scales the wide band's factors by its weight and adds the narrow columns exactly through an
        r x r Schur complement (primal) or the Woodbury identity (dual); the validation predictions
        are the same as from the scaled Gram's own eigendecomposition, at the same one
        ``(n_val x q) @ (q x batch)`` product per evaluated alpha plus two of inner size r."""
        Xt, Y_np, parts, dev, dt = ctx["Xt"], ctx["Y_np"], ctx["parts"], self._dev, self._dt
        n, p, n_val_sum, max_val, n_folds, n_alpha = ctx["shape"]
        f, r = ctx["lowrank"]
        big, r_band, pen = ctx["lowrank_big"], ctx["col_band_t"][r], ctx["pen"]
        folds = self._lowrank_folds(ctx)
        t = Y_np.shape[1] if vox is None else len(vox)
        _, batch, _, _ = self._plan(n, n if self._dual else p, n_val_sum, max_val, n_folds, n_alpha, 1)
        # each candidate's small factors per fold, for this call only: a refine round's candidates are new
        # ones, and at 74 folds a candidate's factors take ~40 MB that a fit-long cache would keep
        small = {c: [self._lowrank_candidate(fold, cand[c], big, r_band, pen) for fold in folds] for c in ids}
        from .io import progress_bar as tqdm

        bar = tqdm(total=math.ceil(t / batch), desc="banded ridge batches", disable=not progress)
        for start in range(0, t, batch):
            sl = slice(start, min(start + batch, t)) if vox is None else vox[start: start + batch]
            Yb = self._y_batch(Y_np, sl)
            # per fold, shared by every candidate (voxels in rows): the wide band's X_tr'Y_tr in its
            # eigenbasis and the narrow columns' X_tr'Y_tr (primal), or U' Y_tr (dual)
            bf, br = [], []
            if self._dual:
                for i, (_, _, tr) in enumerate(parts):
                    bf.append(Yb[tr].T @ folds[i]["basis"])
            else:
                xty = Xt.T @ Yb
                for i, (va, drop, _) in enumerate(parts):
                    z = xty - Xt[va].T @ Yb[va]
                    if drop is not None:
                        z -= Xt[drop].T @ Yb[drop]
                    bf.append(z[f].T @ folds[i]["basis"])
                    br.append(z[r].T.double())
                    del z
                del xty
            val_data = _val_data(Yb, [va for va, _, _ in parts])
            for c in ids:
                ks = small[c]

                def narrow(i, cols, rhs, ks=ks):
                    """The right-hand side (m, r) float64 of x_r = rhs S^-1: (L^-1 b)' Cr, plus b0 (primal);
                    ``rhs`` None where Cr is 0 (primal at g = 0: b0 alone)."""
                    b0 = _take(br[i], cols) * ks[i]["dr"][None, :] if br else None
                    if rhs is None:
                        return b0
                    rhs = rhs.double()
                    if b0 is not None:
                        rhs += b0
                    return rhs

                # a term with an exact zero factor is left out (the same predictions, but for the sign of
                # a zero): the wide band's product when its weight is 0 (the nuisance bands' corners of the
                # simplex, a quarter of the demo's candidates), the coupling through Cr when it is 0 (primal
                # at g = 0) and the narrow correction when every narrow weight is 0 (the wide band's corner)
                wide, couple, corrected = (any(k[key] for k in ks) for key in ("wide", "couple", "corrected"))

                def predict(i, a, cols, ks=ks, narrow=narrow, wide=wide, couple=couple, corrected=corrected):
                    k, A = ks[i], folds[i]["A"]
                    B = _take(bf[i], cols) if wide or couple else None
                    out = (A * (k["g"] * k["inv"][a])) @ B.T if wide else None
                    if not corrected:
                        return out
                    rhs = _skinny(B, k["E"][a]) if couple else None
                    corr = (k["P"][a] @ _rowsolve(narrow(i, cols, rhs), k["Sinv"][a]).T).to(dt)
                    return out.sub_(corr) if wide else corr.neg_()

                def predict_each(i, a_vec, cols, ks=ks, narrow=narrow, wide=wide, couple=couple,
                                 corrected=corrected):  # one alpha per voxel (row)
                    k, A = ks[i], folds[i]["A"]
                    B = _take(bf[i], cols) * _take(k["inv"], a_vec) if wide or couple else None
                    if wide:
                        out = A @ B.T
                        out *= k["g"]
                    else:
                        out = torch.zeros((A.shape[0], len(a_vec)), device=dev, dtype=dt)
                    if corrected:
                        rhs = _skinny(B, k["Cr"]) if couple else None
                        _subtract_per_alpha(out, k["P"], narrow(i, cols, rhs), a_vec, k["Sinv"])
                    return out

                self._search_candidate(ctx, c, sl, predict, predict_each, val_data, state, cv_scores)
            del Yb, bf, br, val_data
            bar.update(1)
        bar.close()

    def _factors(self, Xt, gram, parts, cand, cands, col_band_t, pen) -> dict:
        """Per candidate of the chunk, per fold: A = X_val D Q, M = Q' D and 1/(s + alpha), from one
        eigendecomposition of the scaled training Gram D (X'X - X_val'X_val) D (float64)."""
        dt = self._dt
        factors = {c: [] for c in cands}
        for va, drop, _ in parts:
            xv = Xt[va].double()
            g = gram - xv.T @ xv
            if drop is not None:
                xd = Xt[drop].double()
                g = g - xd.T @ xd
            for c in cands:
                d = torch.sqrt(torch.as_tensor(cand[c], device=self._dev, dtype=torch.float64))[col_band_t]
                evals, Q = torch.linalg.eigh(g * d[:, None] * d[None, :])
                evals = evals.clamp_min(0)
                A = ((xv * d) @ Q).to(dt)
                M = (Q.T * d[None, :]).to(dt)
                inv = (1.0 / (evals[None, :] + pen[:, None])).to(dt)
                factors[c].append(_BandFold(va, drop, A, M, inv))
                del evals, Q
            del g, xv
        return factors

    def _factors_dual(self, X64, parts, cand, cands, col_band_t, pen) -> dict:
        """The dual form of :meth:`_factors` (more features than samples): per candidate the kernel
        K = X D^2 X' (float64, n x n), per fold the eigendecomposition K_tr = U S U' and A = K_val,tr U,
        M = U', 1/(s + alpha); the prediction A diag(1/(s + alpha)) U' Y_tr equals the primal one."""
        dt = self._dt
        factors = {}
        for c in cands:
            d2 = torch.as_tensor(cand[c], device=self._dev, dtype=torch.float64)[col_band_t]
            K = (X64 * d2) @ X64.T
            factors[c] = []
            for va, drop, tr in parts:
                evals, U = torch.linalg.eigh(K[tr][:, tr])
                evals = evals.clamp_min(0)
                A = (K[va][:, tr] @ U).to(dt)
                inv = (1.0 / (evals[None, :] + pen[:, None])).to(dt)
                factors[c].append(_BandFold(va, drop, A, U.T.to(dt), inv))
                del evals, U
            del K
        return factors

    def _fixed_fits(self, Xt, Y_np, gram, rows, batch):
        """Weights at each voxel's chosen (gamma, alpha), fitted on ``rows`` (None = all samples), voxel
        group by voxel group: yields (voxel indices, W (p, n) tensor). ``gram`` is X[rows]'X[rows]."""
        dev, dt = self._dev, self._dt
        pen = torch.as_tensor(self._alphas_sorted, device=dev, dtype=torch.float64)
        col_band_t = torch.as_tensor(self._col_band, device=dev)
        sqrt_g = torch.sqrt(torch.as_tensor(self.gammas_, device=dev, dtype=torch.float64))
        Xr = Xt if rows is None else Xt[torch.as_tensor(rows, device=dev)]
        big = _lowrank_split([len(b) for b in self.bands_], Xr.shape[0])
        if big is not None:
            yield from self._fixed_fits_lowrank(Xr, Y_np, gram, rows, batch, big, pen, col_band_t)
            return
        X64 = Xr.double() if self._dual else None
        for c in np.unique(self.best_candidates_):
            # W = L diag(1/(s + alpha)) R Z: primal L = M', R = M = Q' D, Z = X'Y (D X'X D = Q S Q');
            # dual L = D^2 X' U, R = U', Z = Y (X D^2 X' = U S U', float64 kernel of the fitted rows)
            if self._dual:
                d2 = torch.as_tensor(self.gammas_[c], device=dev, dtype=torch.float64)[col_band_t]
                Xd = X64 * d2
                evals, U = torch.linalg.eigh(Xd @ X64.T)
                L, R = (Xd.T @ U).to(dt), U.T.to(dt)
                del Xd, U
            else:
                d = sqrt_g[c][col_band_t]
                evals, Q = torch.linalg.eigh(gram * d[:, None] * d[None, :])
                R = (Q.T * d[None, :]).to(dt)
                L = R.T
                del Q
            evals = evals.clamp_min(0)
            vox = np.flatnonzero(self.best_candidates_ == c)
            for s in range(0, len(vox), batch):
                cols = vox[s: s + batch]
                Yc = Y_np[:, cols] if rows is None else Y_np[np.ix_(rows, cols)]
                Yb = self._y_batch(Yc, slice(None))
                g = 1.0 / (evals[:, None] + pen[torch.as_tensor(self._best_alpha_idx[cols], device=dev)][None, :])
                yield cols, L @ (g.to(dt) * (R @ (Yb if self._dual else Xr.T @ Yb)))
                del Yb, Yc

    def _fixed_fits_lowrank(self, Xr, Y_np, gram, rows, batch, big, pen, col_band_t):
        """:meth:`_fixed_fits` with one eigendecomposition of the wide band for every chosen candidate
        (:meth:`_run_candidates_lowrank`'s algebra on the fitted rows ``Xr``): primal
        ``W_f = sqrt(g) Q x_f``, ``W_r = d_r x_r``; dual ``W_f = g X_f' U w``, ``W_r = d_r N' w``."""
        dev, dt = self._dev, self._dt
        f, r = _lowrank_columns(self.bands_, big, dev)
        if self._dual:
            X64 = Xr.double()
            evals, basis = torch.linalg.eigh(X64[:, f] @ X64[:, f].T)
            fold = dict(s=evals.clamp_min(0), C0=basis.T @ X64[:, r])
            Xf_t = Xr[:, f].T.contiguous()  # (q, n) for W_f = g X_f' U w
            del X64
        else:
            evals, basis = torch.linalg.eigh(gram[f][:, f])
            fold = dict(s=evals.clamp_min(0), C0=basis.T @ gram[f][:, r], Grr=gram[r][:, r])
        basis = basis.to(dt)
        p = len(self._col_band)
        for c in np.unique(self.best_candidates_):
            k = self._lowrank_candidate(fold, self.gammas_[c], big, col_band_t[r], pen)
            vox = np.flatnonzero(self.best_candidates_ == c)
            for st in range(0, len(vox), batch):
                cols = vox[st: st + batch]
                Yc = Y_np[:, cols] if rows is None else Y_np[np.ix_(rows, cols)]
                Yb = self._y_batch(Yc, slice(None))
                a_vec = torch.as_tensor(self._best_alpha_idx[cols], device=dev)
                inv, Sinv = _take(k["inv"], a_vec), _take(k["Sinv"], a_vec)
                W = torch.empty((p, len(cols)), device=dev, dtype=dt)
                if self._dual:
                    Bi = (Yb.T @ basis) * inv  # L^-1 U'y (voxels in rows)
                    z = _rowsolve(_skinny(Bi, k["Cr"]).double(), Sinv)  # N' w
                    w = Bi - (z @ k["Cr"].double().T).to(dt) * inv
                    W[f] = k["g"] * (Xf_t @ (basis @ w.T))
                    W[r] = (k["dr"][:, None] * z.T).to(dt)
                else:
                    z = Xr.T @ Yb
                    Bi = (z[f].T @ basis) * inv
                    xr = _rowsolve(z[r].T.double() * k["dr"][None, :] + _skinny(Bi, k["Cr"]).double(), Sinv)
                    # sqrt(g) x_f = g L^-1 b - sqrt(g) L^-1 C x_r, and Cr = -sqrt(g) C
                    W[f] = basis @ (k["g"] * Bi + (xr @ k["Cr"].double().T).to(dt) * inv).T
                    W[r] = (k["dr"][:, None] * xr.T).to(dt)
                    del z
                yield cols, W
                del Yb, Yc, Bi

    def _fixed_coef(self, Xt, Y_np, gram, rows, batch) -> np.ndarray:
        coef = np.empty((Xt.shape[1], Y_np.shape[1]), dtype=np.float32 if self._dt == torch.float32 else np.float64)
        for cols, W in self._fixed_fits(Xt, Y_np, gram, rows, batch):
            coef[:, cols] = W.cpu().numpy()
        return coef

    # ----------------------------------------------------------------------------------------
    def predict(self, X, split: bool = False) -> np.ndarray:
        """Predictions (n_samples, n_targets) for X (n_samples, n_features); with ``split=True`` the
        per-band predictions (n_bands, n_samples, n_targets), which sum to the joint prediction."""
        X = self._check_fitted_x(X)
        X = X.astype(self.coef_.dtype, copy=False)
        if not split:
            return X @ self.coef_
        return np.stack([X[:, b] @ self.coef_[b] for b in self.bands_])

    def score_split(self, X, Y) -> np.ndarray:
        """Per-band R2 (n_bands, n_targets) of the predictions for X against Y, summing to the joint R2
        (:func:`r2_score_split`, himalaya's product measure; Y zero-mean over samples)."""
        return r2_score_split(Y, self.predict(X, split=True))

    def cv_score_split(self, X, Y) -> np.ndarray:
        """Per-band split R2 (n_bands, n_targets) on the CV folds of the fit, averaged over folds.

        For each fold of ``folds_``, the weights are refitted on its training rows at each voxel's chosen
        (gamma, alpha) and the per-band predictions of its validation rows are scored with
        :func:`r2_score_split`: a per-band estimate that never uses data outside ``X``, ``Y`` (the
        training set the model was fitted on, passed again)."""
        if not hasattr(self, "coef_"):
            raise RidgeError("this BandedRidgeCV is not fitted yet: call fit first")
        self._setup()
        X_np, Y_np = self._check_xy(X, Y)
        if X_np.shape != (self._n_samples_fit, self.n_features_in_) or Y_np.shape[1] != len(self.best_alphas_):
            raise RidgeError(f"cv_score_split needs the X {(self._n_samples_fit, self.n_features_in_)} and Y "
                             f"{(self._n_samples_fit, len(self.best_alphas_))} the model was fitted on, got X "
                             f"{X_np.shape} and Y {Y_np.shape}")
        Xt = self._tensor(X_np, "X")
        n, p = X_np.shape
        n_bands = len(self.bands_)
        out = np.zeros((n_bands, Y_np.shape[1]))
        item = 4 if self._dt == torch.float32 else 8
        max_val = max(len(v) for _, v in self.folds_)
        # per voxel: its training rows (copy and tensor), X'Y and the weights (item); in float64 the weights,
        # the validation rows and the per-band predictions with r2_score_split's temporaries
        per_target = item * (2 * n + 4 * p) + 8 * (p + (2 * n_bands + 4) * max_val)
        batch = max(1, int(float(self.memory_gb) * 2**30 // per_target))
        for train, val in self.folds_:
            gram = None
            if not self._dual:
                xtr = Xt[torch.as_tensor(train, device=self._dev)].double()
                gram = xtr.T @ xtr
                del xtr
            xv = X_np[val].astype(np.float64)
            for cols, W in self._fixed_fits(Xt, Y_np, gram, train, batch):
                W = W.double().cpu().numpy()
                preds = np.stack([xv[:, b] @ W[b] for b in self.bands_])
                out[:, cols] += r2_score_split(Y_np[np.ix_(val, cols)], preds)
        return out / len(self.folds_)
