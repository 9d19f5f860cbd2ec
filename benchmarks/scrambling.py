"""In-silico scrambling benchmark (the TRW stage's scrambling): lmbrain against its floor, in one run.

    python benchmarks/scrambling.py                         # lstm and transformer, 900 words, 2,500 voxels
    python benchmarks/scrambling.py --models lstm --words 300 --voxels 20000 --seeds 3

For each model (the architectures of ``config/config.yaml``, randomly initialised: speed does not depend
on training), a story of ``--words`` Shakespeare words (one word per 0.3 s, a pause after every 12th
word and a longer one after every 60th, so that sentences and paragraphs exist) goes through
:func:`lmbrain.scrambling.scramble_survival` with random encoding weights for ``--voxels`` voxels, each
with a random best context length among ``--ks``. The floor is the work it cannot avoid, timed in the
same run: the language model reading the intact story and its ``3 x --seeds`` scrambled versions at
every context length used (:func:`lmbrain.features.extract_in_memory`), each distinct window once (a
window inside one sentence or paragraph holds the same words as in the intact story:
:class:`lmbrain.features.WindowCache`), and one prediction product (words x features by features x
voxels) per version and context length. Printed per model: the time of each, their ratio (1.0 = no
overhead beyond the floor), words read per second (all versions), the share of the floor that is the
language model, and the language model reading every version whole (no window shared: how lmbrain read
them before). ``--state-context`` caps the words each state is read from (a HuggingFace model's
``state_context``; passes that short share most windows). Not a timed test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import yaml  # noqa: E402

from lmbrain.corpus import fetch_shakespeare, text_words  # noqa: E402
from lmbrain.features import WindowCache  # noqa: E402
from lmbrain.modelspec import TRAINED_TYPES, check_models  # noqa: E402
from lmbrain.scrambling import SCRAMBLE_LEVELS, read_word_features, scramble, scramble_survival  # noqa: E402


def story_table(words: list[str], tr: float = 2.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Word times at 0.3 s per word, 0.4 s pauses after every 12th word (sentences), 1 s after every 60th
    (paragraphs); TR times covering the story."""
    gaps = np.full(len(words), 0.3)
    gaps[11::12] += 0.4
    gaps[59::60] += 0.6
    onset = np.concatenate([[0.0], np.cumsum(gaps)[:-1]])
    offset = onset + 0.25
    table = pd.DataFrame({"word": words, "onset": onset, "offset": offset, "midpoint": (onset + offset) / 2})
    return table, np.arange(tr / 2, offset[-1] + tr, tr)


def bench(lm, layer: int, kind: str, words: pd.DataFrame, tr_times, ks, n_voxels: int, seeds: int, state_context):
    rng = np.random.default_rng(0)

    def read(w, windows=None):  # the reading scramble_survival does for each version
        return read_word_features(lm, w, ks, layer, kind, state_context, windows)

    probe = read(words.iloc[:8])
    n_feat = probe[ks[0]].shape[1]
    k_best = rng.choice(ks, size=n_voxels)
    weights = {k: rng.standard_normal((n_feat, int((k_best == k).sum()))) for k in ks}

    # the floor: every distinct window read by the model once, one prediction product per version and k
    versions = [words] + [scramble(words, lv, seed=sd) for lv in SCRAMBLE_LEVELS for sd in range(seeds)]
    t0 = time.perf_counter()
    for v in versions:
        read(v)
    t_whole = time.perf_counter() - t0
    windows = WindowCache()
    t0 = time.perf_counter()
    feats = [read(versions[0], windows)]
    windows.record = False
    feats += [read(v, windows) for v in versions[1:]]
    t_lm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for F in feats:
        out = np.empty((len(words), n_voxels))
        for k in ks:
            out[:, k_best == k] = F[k] @ weights[k]
    t_mm = time.perf_counter() - t0
    del feats

    t0 = time.perf_counter()
    table = scramble_survival(lm, layer, kind, [("story", words, tr_times)], weights, k_best, seeds=seeds,
                              state_context=state_context)
    t_lmb = time.perf_counter() - t0
    assert len(table) == n_voxels
    return {"t_lmbrain": t_lmb, "t_floor": t_lm + t_mm, "lm_share": t_lm / (t_lm + t_mm),
            "words_per_s": len(versions) * len(words) / t_lmb, "versions": len(versions), "n_feat": n_feat,
            "t_whole": t_whole, "shared": windows.hits / max(1, windows.hits + windows.misses)}


def main(argv=None):
    from features import make_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=["lstm", "transformer"], help="model names of config/config.yaml")
    ap.add_argument("--words", type=int, default=900, help="story length in words")
    ap.add_argument("--voxels", type=int, default=2500)
    ap.add_argument("--seeds", type=int, default=3, help="scrambles per level")
    ap.add_argument("--ks", type=int, nargs="*", default=None, help="context lengths (default: the config's)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--state-context", type=int, default=None,
                    help="words each state is read from (default: the model's state_context, if any)")
    args = ap.parse_args(argv)
    for opt in ("words", "voxels", "seeds"):
        if getattr(args, opt) < 1:
            ap.error(f"--{opt} must be at least 1, got {getattr(args, opt)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    models = check_models(cfg)
    bad = [m for m in args.models if m not in models or models[m]["type"] not in TRAINED_TYPES]
    if bad:
        raise SystemExit(f"--models: {', '.join(bad)} cannot be benchmarked (use trained model types of "
                         f"config/config.yaml: {', '.join(m for m, s in models.items() if s['type'] in TRAINED_TYPES)})")
    archive = fetch_shakespeare(ROOT / "data" / "cache")
    story = text_words(archive, "romeo_and_juliet")[: args.words]
    corpus = text_words(archive, "hamlet") + text_words(archive, "othello")
    words, tr_times = story_table(story)
    kind = (cfg.get("encoding", {}).get("features") or ["pooled"])[0]
    print(f"story: {len(story)} words, {args.voxels} voxels, {args.seeds} seeds per level, feature {kind}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'model':<12} {'ks':<26} {'versions':>8} {'lmbrain s':>10} {'floor s':>8} {'ratio':>7} {'words/s':>8} "
          f"{'LM share':>9} {'shared':>7} {'LM whole s':>11}")
    for name in args.models:
        spec = models[name]
        ks = sorted(args.ks or spec["context_lengths"] or cfg["features"]["context_lengths"])
        ks = [k for k in ks if k <= len(story)]
        lm = make_model(name, spec, corpus, "cpu")
        layer = lm.n_layers  # the last layer (0 = embeddings)
        r = bench(lm, layer, kind, words, tr_times, ks, args.voxels, args.seeds,
                  args.state_context or spec.get("state_context"))
        print(f"{name:<12} {','.join(map(str, ks)):<26} {r['versions']:8d} {r['t_lmbrain']:10.2f} {r['t_floor']:8.2f} "
              f"{r['t_lmbrain'] / r['t_floor']:6.2f}x {r['words_per_s']:8.0f} {r['lm_share']:9.2f} "
              f"{r['shared']:7.2f} {r['t_whole']:11.2f}", flush=True)


if __name__ == "__main__":
    main()
