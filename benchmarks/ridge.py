"""Ridge benchmark: lmbrain.ridge.RidgeCV against himalaya (numpy, torch) and scikit-learn, in one run.

    python benchmarks/ridge.py --size quick            # 3000 x 2000 -> 20000 targets
    python benchmarks/ridge.py --size real-slice       # 10000 x 3072 -> 2000-voxel slice, extrapolated to 95k
    python benchmarks/ridge.py --size banded           # BandedRidgeCV: 3000 x (60+200+300) -> 8000 targets
    python benchmarks/ridge.py --size banded-real-slice --methods lmbrain-banded-refine   # memory at real size
    python benchmarks/ridge.py --size banded-demo --methods lmbrain-banded-grid,lmbrain-eigh-banded-grid,himalaya-banded-torch

Banded sizes (``banded*``) time lmbrain.ridge.BandedRidgeCV against himalaya's BandedRidgeCV on the
same 20 band-weight candidates (himalaya's n_iter=20, random_state=0) x 11 alphas and the same 5 folds,
both selecting by himalaya's default neg_mse, and compare the per-band penalties, test predictions and
test split R2 with lmbrain's grid search. ``lmbrain-eigh-banded-*`` forces one eigendecomposition per
fold and candidate where lmbrain would share one per fold (one wide band and narrow ones, as the
``banded-demo*`` sizes: a language-model band beside the nuisance bands), for the ratio of the two.

Every method fits the same planted problem (same alphas; the same 5 contiguous folds of whole
"stories" for lmbrain and himalaya; scikit-learn's RidgeCV(alpha_per_target=True) can only use its
efficient leave-one-out CV) in its own subprocess, so the wall time and the peak resident memory
(ru_maxrss) are that method's alone. Printed: wall time, peak memory, ratio to lmbrain, and the
largest difference of test-set predictions to lmbrain's grid search. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"quick": (3000, 2000, 20000), "real-slice": (10000, 3072, 2000), "real": (10000, 3072, 95000),
         "tiny": (600, 200, 2000)}
# banded: (samples, band widths, targets, candidates, alphas)
BANDED_SIZES = {"banded": (3000, (60, 200, 300), 8000, 20, 11), "banded-tiny": (600, (12, 40, 60), 2000, 20, 11),
                # a real subject's TRs and bands totalling 3000 features, fewer voxels and candidates: memory
                "banded-real-slice": (10000, (500, 1000, 1500), 5000, 3, 3),
                # the demo's encoding models: one language-model band (128 units or SmolLM2's 576, 4 delays) and
                # three 4-column nuisance bands, 1,111 training TRs, 2,508 voxels, 12 candidates, 13 alphas
                "banded-demo": (1111, (512, 4, 4, 4), 2508, 12, 13),
                "banded-demo-smollm2": (1111, (2304, 4, 4, 4), 2508, 12, 13),
                # SmolLM2 beside the nuisance bands at a real subject's TRs (primal): memory
                "banded-real-smollm2-slice": (10000, (2304, 4, 4, 4), 5000, 3, 3)}
ALPHAS = np.logspace(1, 3, 10) ** 2  # the Huth-lab grid, as penalties
N_TEST = 300


def make_data(n, p, t, seed, out: Path):
    """Planted low-rank problem with varied SNR, float32, written as .npy for the children to memory-map."""
    rng = np.random.default_rng(seed)
    rank = 50
    X = rng.standard_normal((n + N_TEST, p)).astype(np.float32)
    X[:, : p // 2] += 0.5 * X[:, p // 2 : p // 2 * 2]  # correlated features
    X -= X[:n].mean(0)
    X /= X[:n].std(0)
    W = (rng.standard_normal((p, rank)) @ rng.standard_normal((rank, t))).astype(np.float32) / np.sqrt(p * rank)
    Y = np.empty((n + N_TEST, t), dtype=np.float32)
    snr = np.exp(rng.uniform(np.log(0.01), np.log(1.0), t)).astype(np.float32)
    for s in range(0, t, 2000):
        sl = slice(s, s + 2000)
        sig = X @ W[:, sl]
        sig /= sig.std(0)
        Y[:, sl] = sig * np.sqrt(snr[sl]) + rng.standard_normal((n + N_TEST, sig.shape[1])).astype(np.float32)
    Y -= Y[:n].mean(0)
    Y /= Y[:n].std(0)
    np.save(out / "X.npy", X[:n])
    np.save(out / "Y.npy", Y[:n])
    np.save(out / "Xtest.npy", X[n:])
    return X[:n].nbytes + Y[:n].nbytes


def make_banded_data(n, widths, t, seed, out: Path):
    """Planted banded problem: bands of different relevance per voxel (low-rank weights per band, band
    scales from a Dirichlet draw per voxel, a third of voxels driven by one band), varied SNR, float32."""
    rng = np.random.default_rng(seed)
    p = sum(widths)
    edges = np.cumsum((0,) + tuple(widths))
    X = rng.standard_normal((n + N_TEST, p)).astype(np.float32)
    w = min(widths[0], widths[1])
    X[:, edges[1]: edges[1] + w] += 0.5 * X[:, :w]  # bands share some signal
    X -= X[:n].mean(0)
    X /= X[:n].std(0)
    Y = np.empty((n + N_TEST, t), dtype=np.float32)
    snr = np.exp(rng.uniform(np.log(0.01), np.log(1.0), t)).astype(np.float32)
    scales = rng.dirichlet([0.5] * len(widths), t).T.astype(np.float32)  # (bands, t)
    scales[:, : t // 3] = np.eye(len(widths), dtype=np.float32)[:, rng.integers(0, len(widths), t // 3)]
    rank = 20
    for s in range(0, t, 2000):
        sl = slice(s, min(s + 2000, t))
        sig = np.zeros((n + N_TEST, sl.stop - s), dtype=np.float32)
        for b in range(len(widths)):
            wb = (rng.standard_normal((widths[b], rank)) @ rng.standard_normal((rank, sl.stop - s))).astype(np.float32)
            part = X[:, edges[b]: edges[b + 1]] @ wb
            sig += part / (part.std(0) + 1e-12) * np.sqrt(scales[b, sl])
        sig /= sig.std(0) + 1e-12
        Y[:, sl] = sig * np.sqrt(snr[sl]) + rng.standard_normal(sig.shape).astype(np.float32)
    Y -= Y[:n].mean(0)
    Y /= Y[:n].std(0)
    np.save(out / "X.npy", X[:n])
    np.save(out / "Y.npy", Y[:n])
    np.save(out / "Xtest.npy", X[n:])
    np.save(out / "Ytest.npy", Y[n:] - Y[n:].mean(0))
    (out / "bands.json").write_text(json.dumps([list(map(int, range(a, b))) for a, b in zip(edges[:-1], edges[1:])]))
    return X[:n].nbytes + Y[:n].nbytes


def banded_child(method, data: Path, device: str):
    """Fit one banded method; returns test predictions, per-band penalties (n_bands, t) and split predictions."""
    X = np.load(data / "X.npy")
    Y = np.load(data / "Y.npy")
    Xt = np.load(data / "Xtest.npy")
    bands = [np.asarray(b) for b in json.loads((data / "bands.json").read_text())]
    n_cand, n_alpha = json.loads((data / "grid.json").read_text())
    alphas = np.logspace(0, 5, n_alpha)
    groups, fl = folds(len(X))
    t0 = time.perf_counter()
    if method.startswith("lmbrain"):
        import lmbrain.ridge as ridge_mod
        from lmbrain.ridge import BandedRidgeCV

        if "-eigh-" in method:  # one eigendecomposition per (fold, candidate), not the shared factorisation
            ridge_mod._lowrank_split = lambda *a: None

        m = BandedRidgeCV(alphas=alphas, gammas=n_cand, cv=5, score="neg_mse", search=method.split("-")[-1],
                          device=device, random_state=0, memory_gb=float(os.environ.get("LMB_MEM_GB", 2)))
        m.fit(X, Y, bands, groups)
        band_alphas = m.band_alphas_
        split = m.predict(Xt, split=True)
    else:
        import warnings

        from himalaya.backend import set_backend
        from himalaya.ridge import BandedRidgeCV as HBandedRidgeCV

        backend = set_backend(method.split("-")[-1])
        batch = int(os.environ.get("HIM_BATCH", 0)) or None
        m = HBandedRidgeCV(groups="input", cv=fl, random_state=0, solver_params=dict(
            n_iter=n_cand, alphas=alphas, progress_bar=False, n_targets_batch=batch, n_targets_batch_refit=batch))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit([X[:, b] for b in bands], Y)
        band_alphas = np.exp(-np.asarray(backend.to_numpy(m.deltas_), dtype=np.float64))
        split = np.asarray(backend.to_numpy(m.predict([Xt[:, b] for b in bands], split=True)))
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    np.save(data / f"split_{method}.npy", split.astype(np.float32))
    return wall, split.sum(0), band_alphas


def folds(n):
    groups = np.repeat(np.arange(10), int(np.ceil(n / 10)))[:n]
    from lmbrain.ridge import make_folds

    return groups, make_folds(n, groups, cv=5)


def child(method: str, data: Path, threads: int, device: str):
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)  # numpy's BLAS too (himalaya's numpy backend), not only torch's
    c0 = time.process_time()
    if "banded" in method:
        wall, pred, alphas = banded_child(method, data, device)
    else:
        wall, pred, alphas = ridge_child(method, data, device)
    cpu = time.process_time() - c0  # CPU seconds of all threads (a loaded machine stretches wall time)
    np.save(data / f"pred_{method}.npy", pred.astype(np.float32))
    np.save(data / f"alphas_{method}.npy", alphas)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gpu_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    print(json.dumps({"method": method, "wall_s": wall, "cpu_s": cpu, "peak_bytes": peak, "gpu_peak_bytes": gpu_peak}))


def ridge_child(method: str, data: Path, device: str):
    import torch

    X = np.load(data / "X.npy")
    Y = np.load(data / "Y.npy")
    Xt = np.load(data / "Xtest.npy")
    groups, fl = folds(len(X))
    t0 = time.perf_counter()
    if method.startswith("lmbrain"):
        from lmbrain.ridge import RidgeCV

        search = "refine" if method.endswith("refine") else "grid"
        m = RidgeCV(alphas=ALPHAS, cv=5, search=search, device=device, memory_gb=float(os.environ.get("LMB_MEM_GB", 2)))
        m.fit(X, Y, groups)
        alphas = m.best_alphas_
        pred = m.predict(Xt)
    elif method.startswith("himalaya"):
        from himalaya.backend import set_backend
        from himalaya.ridge import RidgeCV as HRidgeCV
        from himalaya.scoring import r2_score

        backend = set_backend(method.split("-")[1])
        batch = int(os.environ.get("HIM_BATCH", 0)) or None
        m = HRidgeCV(alphas=ALPHAS, cv=fl, solver_params=dict(score_func=r2_score, n_targets_batch=batch,
                                                              n_targets_batch_refit=batch))
        m.fit(X, Y)
        alphas = np.asarray(backend.to_numpy(m.best_alphas_))
        pred = np.asarray(backend.to_numpy(m.predict(Xt)))
    elif method == "sklearn":
        from sklearn.linear_model import RidgeCV as SRidgeCV

        m = SRidgeCV(alphas=ALPHAS, alpha_per_target=True, fit_intercept=False).fit(X, Y)
        alphas = np.asarray(m.alpha_)
        pred = m.predict(Xt)
    else:
        raise SystemExit(f"unknown method {method}")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, pred, alphas


def run_children(methods: str, tmp: Path, args) -> dict:
    """Each method in its own subprocess (its own wall time and peak memory)."""
    results = {}
    for method in methods.split(","):
        proc = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--device", args.device,
                               "--child", method, str(tmp)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{method:22s} FAILED: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
            continue
        results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {method}: {results[method]['wall_s']:.1f} s wall, {results[method]['cpu_s']:.1f} s CPU", flush=True)
    return results


def banded_main(args):
    n, widths, t, n_cand, n_alpha = BANDED_SIZES[args.size]
    methods = args.methods or "lmbrain-banded-grid,lmbrain-banded-refine,himalaya-banded-numpy,himalaya-banded-torch"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        xy = make_banded_data(n, widths, t, args.seed, tmp)
        (tmp / "grid.json").write_text(json.dumps([n_cand, n_alpha]))
        mem = float(os.environ.get("LMB_MEM_GB", 2))
        print(f"banded problem: {n} samples x bands {'+'.join(map(str, widths))} = {sum(widths)} features -> {t} targets, "
              f"{n_cand} gamma candidates x {n_alpha} alphas, 5 folds of whole groups, neg_mse; X+Y = {xy / 2**30:.2f} GiB;"
              f" lmbrain memory_gb = {mem}; {args.threads} threads", flush=True)
        results = run_children(methods, tmp, args)
        if not results:
            return
        y = np.load(tmp / "Ytest.npy").astype(np.float64)
        ref = "lmbrain-banded-grid" if "lmbrain-banded-grid" in results else next(iter(results))
        base_split = np.load(tmp / f"split_{ref}.npy")
        base_pen = np.load(tmp / f"alphas_{ref}.npy")

        def split_r2(split):  # himalaya's r2_score_split (product measure), float64
            P = split.astype(np.float64)
            return ((2 * y[None] - P.sum(0)[None]) * P).sum(1) / (y**2).sum(0)

        base_r2 = split_r2(base_split)
        lm = min((r["wall_s"] for m, r in results.items() if m.startswith("lmbrain")), default=None)
        lm_cpu = min((r["cpu_s"] for m, r in results.items() if m.startswith("lmbrain")), default=None)
        others = {m: r["wall_s"] for m, r in results.items() if not m.startswith("lmbrain")}
        others_cpu = {m: r["cpu_s"] for m, r in results.items() if not m.startswith("lmbrain")}
        print(f"{'method':22s} {'wall s':>8s} {'CPU s':>8s} {'peak GiB':>9s} {'GPU GiB':>8s} {'wall / lmbrain':>14s} "
              f"{'CPU / lmbrain':>13s} {'same band penalties':>19s} {'max |dpred|':>12s} {'max |dsplitR2|':>14s}")
        for method, r in results.items():
            split = np.load(tmp / f"split_{method}.npy")
            pen = np.load(tmp / f"alphas_{method}.npy")
            same = np.all(np.isclose(pen, base_pen, rtol=1e-4), axis=0)
            # compared where both chose the same penalties: float32 rounding can tip near-ties
            dpred = np.abs(split.sum(0)[:, same] - base_split.sum(0)[:, same]).max() if same.any() else float("nan")
            dsplit = np.abs(split_r2(split)[:, same] - base_r2[:, same]).max() if same.any() else float("nan")
            print(f"{method:22s} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['peak_bytes'] / 2**30:9.2f} "
                  f"{r['gpu_peak_bytes'] / 2**30:8.2f} {r['wall_s'] / lm if lm else float('nan'):14.2f} "
                  f"{r['cpu_s'] / lm_cpu if lm_cpu else float('nan'):13.2f} {same.mean():19.4f} {dpred:12.2e} {dsplit:14.2e}")
        if lm and others:
            fastest = min(others, key=others.get)
            fastest_cpu = min(others_cpu, key=others_cpu.get)
            print(f"speed-up of lmbrain's fastest mode over the fastest himalaya backend: wall {others[fastest] / lm:.2f}x "
                  f"({fastest}), CPU time {others_cpu[fastest_cpu] / lm_cpu:.2f}x ({fastest_cpu})")
        print(f"inputs X+Y {xy / 2**30:.2f} GiB + memory_gb {mem:.2f}: lmbrain peaks "
              + ", ".join(f"{m} {r['peak_bytes'] / 2**30:.2f} GiB" for m, r in results.items() if m.startswith("lmbrain")))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES) + sorted(BANDED_SIZES), default="quick")
    ap.add_argument("--methods", default=None, help="default: lmbrain-grid,lmbrain-refine,himalaya-numpy,himalaya-torch,"
                    "sklearn; for banded sizes lmbrain-banded-grid,lmbrain-banded-refine,himalaya-banded-numpy,"
                    "himalaya-banded-torch")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="lmbrain's device (cpu or cuda); use himalaya-torch_cuda for himalaya on GPU")
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], Path(args.child[1]), args.threads, args.device)
    if args.size in BANDED_SIZES:
        return banded_main(args)
    n, p, t = SIZES[args.size]
    methods = args.methods or "lmbrain-grid,lmbrain-refine,himalaya-numpy,himalaya-torch,sklearn"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        xy = make_data(n, p, t, args.seed, tmp)
        print(f"problem: {n} samples x {p} features -> {t} targets, {len(ALPHAS)} alphas, 5 folds of whole groups; "
              f"X+Y = {xy / 2**30:.2f} GiB; {args.threads} threads")
        results = run_children(methods, tmp, args)
        if not results:
            return
        ref = "lmbrain-grid" if "lmbrain-grid" in results else next(iter(results))
        base = np.load(tmp / f"pred_{ref}.npy")
        base_alpha = np.load(tmp / f"alphas_{ref}.npy")
        fastest_other = min((r["wall_s"] for m, r in results.items() if not m.startswith("lmbrain")), default=None)
        print(f"{'method':16s} {'wall s':>8s} {'peak GiB':>9s} {'GPU GiB':>8s} {'peak/(X+Y)':>10s} {'time / lmbrain':>14s} "
              f"{'same alpha':>10s} {'max |dpred|':>12s} {'rel dpred':>10s}")
        lm = min(r["wall_s"] for m, r in results.items() if m.startswith("lmbrain")) if any(
            m.startswith("lmbrain") for m in results) else None
        for method, r in results.items():
            pred = np.load(tmp / f"pred_{method}.npy")
            alphas = np.load(tmp / f"alphas_{method}.npy")
            same = np.isclose(alphas, base_alpha, rtol=1e-5)
            # Predictions are compared where both chose the same alpha: on flat CV curves (noise voxels)
            # float32 rounding can tip the choice between distant alphas, which says nothing of accuracy.
            diff = np.abs(pred[:, same] - base[:, same]).max() if same.any() else float("nan")
            rel = diff / np.abs(base).max()
            print(f"{method:16s} {r['wall_s']:8.1f} {r['peak_bytes'] / 2**30:9.2f} {r['gpu_peak_bytes'] / 2**30:8.2f} "
                  f"{r['peak_bytes'] / xy:10.1f} {r['wall_s'] / lm if lm else float('nan'):14.2f} "
                  f"{same.mean():10.5f} {diff:12.2e} {rel:10.2e}")
        if lm and fastest_other:
            print(f"speed-up of lmbrain's fastest mode over the fastest other method: {fastest_other / lm:.2f}x")
        if args.size == "real-slice":
            n_vox = 95000
            print(f"extrapolated to {n_vox} voxels (time scales with voxels; fixed SVD cost included once): "
                  + ", ".join(f"{m}: {r['wall_s'] * n_vox / t / 60:.1f} min" for m, r in results.items()))


if __name__ == "__main__":
    main()
