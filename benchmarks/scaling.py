"""Scaling of the encoding stage: time and peak memory of one context length against voxels and TRs.

    python benchmarks/scaling.py                                  # voxels 2500 and 20000 at 1100 and 11000 TRs
    python benchmarks/scaling.py --voxels 2500 20000 80000 --trs 1100
    python benchmarks/scaling.py --voxels 1000 --trs 600 --features 64 --permutations 100   # a quick check

Each point runs in its own subprocess (so that the peak resident memory, ``ru_maxrss``, is that point's
alone) and does what ``encoding_model`` does for one k with the default settings: a banded ridge
(:class:`lmbrain.ridge.BandedRidgeCV`: the language-model band of ``--features`` delayed columns and three
4-column nuisance bands, 12 band-weight candidates, the default 13 alphas, ``refine`` search,
leave-one-story-out folds of ``--story-trs``-TR stories, ``encoding.memory_gb`` 2) on the training
stories, the prediction of one held-out story and its block-permutation test
(:func:`lmbrain.stats.block_permutation_pvalues`, ``--permutations``, blocks of 10 TRs). The responses
are planted (a random linear read-out of the features plus noise, z-scored), float32.

Printed per point: the fit, predict+permutation and total seconds, seconds per 1,000 voxels, the peak
memory once the data are made (``data GB``: one float32 copy of the responses and the features, built a
block of voxels at a time) and the peak memory of the whole point (``peak GB``, the fit's where it is
larger); then, per TR count, the growth factor in time between the smallest and largest voxel counts
against the voxel ratio (1.0 x the ratio = linear in voxels) and a linear extrapolation of the
per-voxel cost to ``--extrapolate`` voxels (a real subject: 80,000; marked as extrapolated). Not a
timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def point(n_trs: int, n_voxels: int, n_features: int, story_trs: int, permutations: int, seed: int = 0) -> dict:
    """One encoding fit + test at this size (run in a subprocess by :func:`main`)."""
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np

    from lmbrain.encoding import banded_candidates
    from lmbrain.ridge import BandedRidgeCV
    from lmbrain.stats import block_permutation_pvalues

    rng = np.random.default_rng(seed)
    n_test = story_trs
    n = n_trs + n_test
    p = n_features + 12
    X = rng.standard_normal((n, p)).astype(np.float32)
    W = (rng.standard_normal((p, n_voxels)) * (rng.random(n_voxels) < 0.3)).astype(np.float32) / np.sqrt(p)
    # the responses are built a block of voxels at a time, in float32, so that making them holds one float32
    # copy plus a block: the peak memory reported is then the fit's, not the data's (a whole float64 noise
    # array is twice the responses, and np.std makes another full-size temporary)
    Y = np.empty((n, n_voxels), dtype=np.float32)
    step = 4096
    for s in range(0, n_voxels, step):
        block = X @ W[:, s: s + step]
        block += rng.standard_normal(block.shape, dtype=np.float32)
        block -= block.mean(0)
        block /= block.std(0)
        Y[:, s: s + step] = block
    data_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    groups = np.arange(n_trs) // story_trs
    bands = [np.arange(n_features)] + [n_features + 4 * j + np.arange(4) for j in range(3)]
    alphas = np.logspace(0, 6, 13)
    t0 = time.perf_counter()
    ridge = BandedRidgeCV(alphas=alphas, gammas=banded_candidates(12, 4, seed), search="refine", device="cpu",
                          memory_gb=2.0, random_state=seed)
    ridge.fit(X[:n_trs], Y[:n_trs], bands=bands, groups=groups)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = ridge.predict(X[n_trs:])
    block_permutation_pvalues(pred, Y[n_trs:], n_permutations=permutations, block=10, seed=seed)
    t_test = time.perf_counter() - t0
    return {"fit_s": t_fit, "test_s": t_test, "folds": int(groups.max() + 1),
            "data_gb": data_gb, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def growth_line(n_trs: int, pts: list[tuple[int, float]], extrapolate: int) -> str | None:
    """The growth from the fewest to the most voxels at ``n_trs`` and the linear extrapolation of the
    time to ``extrapolate`` voxels; none where the time did not grow (fixed costs and timing noise
    dominate such small points, and a line through them would extrapolate to a falling time)."""
    if len(pts) < 2:
        return None
    (v0, t0), (v1, t1) = pts[0], pts[-1]
    head = f"{n_trs} TRs: {v1 / v0:.1f}x the voxels -> {t1 / t0:.2f}x the time; "
    if t1 <= t0:
        return head + "the time did not grow with the voxels at these sizes: no extrapolation"
    slope = (t1 - t0) / (v1 - v0)
    return head + f"extrapolated (linear in voxels) to {extrapolate} voxels: {t1 + slope * (extrapolate - v1):.0f} s per k"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voxels", type=int, nargs="+", default=[2500, 20000])
    ap.add_argument("--trs", type=int, nargs="+", default=[1100, 11000], help="training TRs")
    ap.add_argument("--features", type=int, default=512, help="columns of the language-model band (delays x dims)")
    ap.add_argument("--story-trs", type=int, default=150, help="TRs per story (one CV fold per story)")
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--extrapolate", type=int, default=80000, help="voxels of the linear extrapolation")
    ap.add_argument("--point", default=None, help=argparse.SUPPRESS)  # internal: one point, JSON out
    args = ap.parse_args(argv)
    if args.point:
        print(json.dumps(point(**json.loads(args.point))))
        return 0
    for name in ("voxels", "trs"):
        if min(getattr(args, name)) < 1:
            ap.error(f"--{name} must be positive")
    if args.features < 1 or args.permutations < 1:
        ap.error("--features and --permutations must be positive")
    if min(args.trs) < 2 * args.story_trs:
        ap.error(f"--trs must hold at least two stories of --story-trs {args.story_trs} TRs (the CV folds)")
    print(f"encoding one k: banded ridge (LM band {args.features} columns + 3 x 4 nuisance), 12 candidates, 13 alphas, "
          f"{args.story_trs}-TR stories, {args.permutations} permutations; {os.cpu_count()} CPU cores")
    print(f"{'TRs':>6} {'voxels':>7} {'folds':>5} {'fit s':>8} {'test s':>7} {'total s':>8} {'s/1k vox':>8} {'data GB':>8} {'peak GB':>8}")
    results = {}
    for n_trs in args.trs:
        for v in sorted(args.voxels):
            spec = {"n_trs": n_trs, "n_voxels": v, "n_features": args.features, "story_trs": args.story_trs,
                    "permutations": args.permutations}
            proc = subprocess.run([sys.executable, __file__, "--point", json.dumps(spec)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{n_trs:6d} {v:7d} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}",
                      flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            total = r["fit_s"] + r["test_s"]
            results[(n_trs, v)] = total
            print(f"{n_trs:6d} {v:7d} {r['folds']:5d} {r['fit_s']:8.3f} {r['test_s']:7.3f} {total:8.3f} "
                  f"{1000 * total / v:8.2f} {r['data_gb']:8.2f} {r['peak_gb']:8.2f}", flush=True)
    for n_trs in args.trs:
        line = growth_line(n_trs, sorted((v, t) for (n, v), t in results.items() if n == n_trs), args.extrapolate)
        if line:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
