"""Ridge benchmark: lmbrain.ridge.RidgeCV against himalaya (numpy, torch) and scikit-learn, in one run.

    python benchmarks/ridge.py --size quick            # 3000 x 2000 -> 20000 targets
    python benchmarks/ridge.py --size real-slice       # 10000 x 3072 -> 2000-voxel slice, extrapolated to 95k

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


def folds(n):
    groups = np.repeat(np.arange(10), int(np.ceil(n / 10)))[:n]
    from lmbrain.ridge import make_folds

    return groups, make_folds(n, groups, cv=5)


def child(method: str, data: Path, threads: int, device: str):
    import torch

    torch.set_num_threads(threads)
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
    wall = time.perf_counter() - t0
    np.save(data / f"pred_{method}.npy", pred.astype(np.float32))
    np.save(data / f"alphas_{method}.npy", alphas)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gpu_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    print(json.dumps({"method": method, "wall_s": wall, "peak_bytes": peak, "gpu_peak_bytes": gpu_peak}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="quick")
    ap.add_argument("--methods", default="lmbrain-grid,lmbrain-refine,himalaya-numpy,himalaya-torch,sklearn")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="lmbrain's device (cpu or cuda); use himalaya-torch_cuda for himalaya on GPU")
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], Path(args.child[1]), args.threads, args.device)
    n, p, t = SIZES[args.size]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        xy = make_data(n, p, t, args.seed, tmp)
        print(f"problem: {n} samples x {p} features -> {t} targets, {len(ALPHAS)} alphas, 5 folds of whole groups; "
              f"X+Y = {xy / 2**30:.2f} GiB; {args.threads} threads")
        results = {}
        for method in args.methods.split(","):
            proc = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--device", args.device,
                                   "--child", method, str(tmp)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{method:16s} FAILED: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
                continue
            results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
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
