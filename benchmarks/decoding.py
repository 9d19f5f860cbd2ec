"""Decoding benchmark: the decoder's fit and beam search against the bare linear algebra they need, in one run.

    python benchmarks/decoding.py                                   # 2000 voxels, 3000 TRs, 128 features, 2 min
    python benchmarks/decoding.py --voxels 10000 --features 768 --minutes 5   # GPT-sized features, 10,000 voxels
    python benchmarks/decoding.py --voxels 800 --trs 1000 --features 64 --rate-voxels 200 --minutes 1 --threads 1
    python benchmarks/decoding.py --model lstm --beam-device cpu    # another proposer; beam arithmetic in torch
    python benchmarks/decoding.py --model none --beam-device cuda   # no LM; torch beam arithmetic on a GPU

Two measurements (random or planted weights throughout: speed does not depend on training):

- **fit**: :meth:`lmbrain.decoding.Decoder.fit` (encoding model by cross-validated ridge, noise model from
  held-out residuals, word-rate model) on ``--stories`` planted stories totalling ``--trs`` TRs,
  ``--voxels`` voxels and ``--features`` word features (a planted proposer: each word's feature is a
  fixed random vector, so no language model runs). Floor: the products a fit cannot avoid at the same
  sizes, in numpy float64: one ridge solve (SVD of the delayed design, ``U'Y``, the weights), the
  residuals ``Y - XW``, their covariance ``R'R`` over the kept voxels and its inverse, and one ridge
  solve of the word-rate model (one target, ``4 x rate voxels`` delayed features). The fit's own parts
  (features, the encoding RidgeCV, the per-fold refits of the noise model, the precision, the
  word-rate model) are printed below the table.
- **decode**: :func:`lmbrain.decoding.beam_decode` (what :meth:`Decoder.decode` runs) on a story of
  ``--minutes`` minutes at ``--wpm`` words per minute (random responses, word times given) with the
  config's beam width and extensions, on the fitted decoder's voxels and noise precision (the LM row:
  random encoding weights of the LM's feature size). Rows: the planted proposer
  (the beam arithmetic alone), and the config's decoding model (``--model``: a randomly initialised
  word-level LM of its architecture and vocabulary size proposing words and giving features), whose
  proposal (``propose``) and feature (``features``) passes are timed apart. Floor: the one-time
  whitening of the weights and responses by the noise precision's Cholesky factor (so the
  log-likelihood ``-1/2 r'Pr`` needs no ``V x V`` product per candidate, as lmbrain does), then per
  word one ``(B, d) @ (d, delays * V)`` product (each candidate's effect per delay), per parent its
  residuals on the word's TRs summed with each delay's Lanczos weights, per candidate one pass over its
  effects against its parent's sums and their ``delays x delays`` Gram, and the kept candidates'
  predictions on the word's TRs (the algebra of lmbrain's beam, which never forms the other
  candidates' predictions) -- plain numpy (or torch with ``--beam-device``) float64, the same candidate
  counts and sizes, no proposer. Also timed: the direct arithmetic (every candidate's predictions on
  the word's TRs, residuals and squared norms; what the beam did before).

Printed per row: lmbrain seconds, floor seconds, their ratio, and for decodes the seconds per minute of
story, the candidates scored per second and the seconds inside the proposer; then the fit's parts and,
for the LM row, whether the proposer or the beam arithmetic dominates. Everything runs once at a tiny
size first (untimed). Not a timed test.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import yaml  # noqa: E402

import lmbrain.decoding.decoder as decoder_module  # noqa: E402
import lmbrain.ridge  # noqa: E402
from lmbrain.decoding import (  # noqa: E402
    Decoder, LinearEncoder, WordLMProposer, WordRateModel, beam_decode, decoder_layer,
)
from lmbrain.modelspec import TRAINED_TYPES, check_models  # noqa: E402
from lmbrain.models import Vocabulary, WordLanguageModel, build_model  # noqa: E402
from lmbrain.stimulus import downsample, make_delayed  # noqa: E402

TR = 2.0


class PlantedProposer:
    """Proposes ``extensions`` random vocabulary words per context; a word's feature is a fixed random vector
    (no language model: the beam search's own arithmetic is what is timed)."""

    layer = -1

    def __init__(self, n_words: int, dim: int, extensions: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.vocab = [f"w{i}" for i in range(n_words)]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.embed = rng.standard_normal((n_words, dim))
        self.extensions = extensions
        self.rng = np.random.default_rng(seed + 1)

    def propose(self, contexts):
        picks = np.argsort(self.rng.random((len(contexts), len(self.vocab))), axis=1)[:, : self.extensions]
        return [[self.vocab[i] for i in row] for row in picks]

    def features(self, windows):
        return self.embed[[self.index[w[-1]] for w in windows]]


class Timers:
    """Seconds and calls per key of wrapped functions; a call inside another timed call counts for the outer."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self.sizes = defaultdict(list)
        self._active = 0

    def wrap(self, key, fn, size=None):
        def timed(*args, **kwargs):
            if self._active:
                return fn(*args, **kwargs)
            self._active += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - t0
                self.calls[key] += 1
                if size is not None:
                    self.sizes[key].append(size(*args, **kwargs))
                self._active -= 1

        return timed


def sync(device):
    if device is not None and str(device).startswith("cuda"):
        torch.cuda.synchronize()


# -- fit -------------------------------------------------------------------------------------------
def planted_stories(n_stories, n_trs, n_voxels, proposer, delays, wpm, seed=0):
    """Stories of random words at ``wpm`` words per minute, responses linear in the words' features."""
    rng = np.random.default_rng(seed)
    d = proposer.embed.shape[1]
    coef = rng.standard_normal((len(delays) * d, n_voxels)) / np.sqrt(len(delays) * d)
    per_story = np.full(n_stories, n_trs // n_stories)
    per_story[: n_trs % n_stories] += 1
    responses, tr_times, words, times = [], [], [], []
    for n in per_story:
        tt = np.arange(n) * TR + TR / 2
        n_words = max(2, int(round((tt[-1] - tt[0]) / 60 * wpm)))
        wt = np.sort(rng.uniform(tt[0], tt[-1], n_words))
        w = list(rng.choice(proposer.vocab, n_words))
        x = downsample(proposer.embed[[proposer.index[v] for v in w]], wt, tt)
        y = make_delayed((x - x.mean(0)) / x.std(0), delays) @ coef
        y += rng.standard_normal(y.shape) * (y.std() or 1.0)
        responses.append(y.astype(np.float32))
        tr_times.append(tt)
        words.append(w)
        times.append(wt)
    return np.concatenate(responses), tr_times, words, times


def fit_floor(n_trs, p, n_voxels, n_kept, p_rate, seed=0):
    """Seconds of the fit's irreducible products in numpy float64: one ridge solve of the encoding model,
    its residuals over the kept voxels, their covariance and its inverse (the noise precision), and one
    ridge solve of the word-rate model (``p_rate`` delayed voxels, one target)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_trs, p))
    Y = rng.standard_normal((n_trs, n_voxels))
    Xr = rng.standard_normal((n_trs, p_rate))
    y = rng.standard_normal(n_trs)
    t0 = time.perf_counter()
    U, S, Vt = np.linalg.svd(X, full_matrices=False)
    W = Vt.T @ ((S / (S ** 2 + 100.0))[:, None] * (U.T @ Y))
    R = Y[:, :n_kept] - X @ W[:, :n_kept]
    C = R.T @ R / n_trs
    C[np.diag_indices_from(C)] += 1.0
    np.linalg.inv(C)
    G = Xr.T @ Xr
    G[np.diag_indices_from(G)] += 100.0
    np.linalg.solve(G, Xr.T @ y)
    return time.perf_counter() - t0


def bench_fit(args, cfg, delays):
    dec_cfg = cfg["decoding"]
    prop = PlantedProposer(1000, args.features, dec_cfg["extensions"])
    responses, tr_times, words, times = planted_stories(args.stories, args.trs, args.voxels, prop, delays, args.wpm)
    n_kept = min(int(dec_cfg["n_voxels"]), args.voxels)
    rate_voxels = min(args.rate_voxels or int(dec_cfg["rate_voxels"]), args.voxels)
    dec = Decoder(n_voxels=n_kept, shrinkage=float(dec_cfg["shrinkage"]), delays=delays,
                  rate_voxels=rate_voxels, device=args.device)
    timers = Timers()
    with ExitStack() as stack:
        for name, key in (("word_features", "features"), ("ridge_fixed", "noise refits"),
                          ("noise_precision", "precision")):
            timed = timers.wrap(key, getattr(decoder_module, name))
            stack.enter_context(mock.patch.object(decoder_module, name, timed))
        stack.enter_context(mock.patch.object(lmbrain.ridge.RidgeCV, "fit",
                                              timers.wrap("RidgeCV", lmbrain.ridge.RidgeCV.fit)))
        dec._fit_rate = timers.wrap("word rate", dec._fit_rate)
        sync(args.device)
        t0 = time.perf_counter()
        dec.fit(responses, tr_times, words, times, prop)
        sync(args.device)
        t_fit = time.perf_counter() - t0
    del dec._fit_rate
    floor = fit_floor(args.trs, len(delays) * args.features, args.voxels, n_kept,
                      len(WordRateModel().delays) * rate_voxels)
    parts = dict(timers.seconds)
    parts["other"] = t_fit - sum(parts.values())
    return dec, prop, {"seconds": t_fit, "floor": floor, "parts": parts, "folds": timers.calls["noise refits"],
                       "kept": n_kept}


# -- decode ----------------------------------------------------------------------------------------
def story(minutes, wpm, seed=1):
    tr_times = np.arange(int(round(minutes * 60 / TR))) * TR + TR / 2
    n_words = max(1, int(round(minutes * wpm)))
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(tr_times[0], tr_times[-1], n_words))
    return tr_times, times


def decode_floor(encoder: LinearEncoder, precision, counts, beam_width, device=None, seed=0, direct=False):
    """Seconds of the candidates' likelihood arithmetic as plain batched products (numpy, or torch on
    ``device``; float64), after whitening once. Per word, one (B, d) x (d, delays*V) product (each
    candidate's effect per delay, ``g``), then

    - the floor (``direct=False``, the algebra lmbrain's beam uses): per parent its residuals on the
      word's TRs summed with each delay's Lanczos weights (``u``), per candidate its ``g`` against its
      parent's ``u`` and its ``delays x delays`` Gram, and the kept candidates' predictions on the word's
      TRs;
    - ``direct=True`` (what the beam computed before): every candidate's predictions on the word's TRs
      (the Lanczos and delay combination added to its parent's), their residuals and squared norms.
    """
    rng = np.random.default_rng(seed)
    K, d, V = encoder.W.shape
    n_trs = encoder.baseline.shape[0]
    lws = [np.stack(encoder.lanczos_weights(j), axis=1) for j in range(encoder.n_words)]  # (n_rows, K)
    rows = encoder.rows
    feats = [rng.standard_normal((b, d)) for b in counts]
    parents = [rng.integers(0, max(1, min(beam_width, b)), b) for b in counts]
    obs = rng.standard_normal((n_trs, V))
    W = encoder.W.transpose(1, 0, 2).reshape(d, K * V)  # (d, delays*V): one product per word
    P = np.asarray(precision, dtype=np.float64)
    width = max((r.size for r in rows), default=0)
    opened = rng.standard_normal((beam_width, width, V))
    if device is None:
        xp, cholesky, to = np, np.linalg.cholesky, lambda x: x

        def done():
            return None
    else:
        dev = torch.device(device)
        xp, cholesky = torch, torch.linalg.cholesky

        def to(x):
            return torch.as_tensor(x, dtype=torch.float64 if np.asarray(x).dtype.kind == "f" else None, device=dev)

        def done():
            sync(device)
    feats, parents, lws = [to(f) for f in feats], [to(p) for p in parents], [to(lw) for lw in lws]
    rows = [to(r) for r in rows]
    opened, W, P, obs = to(opened), to(W), to(P), to(obs)
    done()
    t0 = time.perf_counter()
    chol = cholesky(P)
    Ww = (W.reshape(d * K, V) @ chol).reshape(d, K * V)
    obs_w = obs @ chol
    for j, (f, par) in enumerate(zip(feats, parents)):
        n = len(rows[j])
        g = (f @ Ww).reshape(len(f), K, V)  # each candidate's effect per delay
        if direct:
            pred = opened[par, :n] + lws[j][None] @ g  # (B, n, K) @ (B, K, V)
            r = obs_w[rows[j]] - pred
            ll = (r * r).sum(axis=(1, 2))
            xp.argsort(ll)[:beam_width]
        else:
            u = lws[j].T @ (obs_w[rows[j]][None] - opened[:, :n])  # (parents, K, V)
            ll = -2 * (g * u[par]).sum(axis=(1, 2)) + ((g @ g.swapaxes(1, 2)) * (lws[j].T @ lws[j])[None]).sum(axis=(1, 2))
            keep = xp.argsort(ll)[:beam_width]  # the kept candidates' predictions on the word's TRs
            opened[: len(keep), :n] = opened[par[keep], :n] + lws[j][None] @ g[keep]
    done()
    return time.perf_counter() - t0


def bench_decode(encoder, observed, precision, proposer, args, beam_width, dec_cfg):
    """One beam search with the proposer's methods timed; returns the row's numbers."""
    timers = Timers()
    orig_p, orig_f = proposer.propose, proposer.features
    proposer.propose = timers.wrap("propose", orig_p)
    proposer.features = timers.wrap("features", orig_f, size=lambda windows: len(windows))
    try:
        sync(args.beam_device)
        t0 = time.perf_counter()
        words, score = beam_decode(encoder, observed, precision, proposer, beam_width=beam_width, progress=False,
                                   content_window=dec_cfg.get("content_window"),
                                   bigram_window=dec_cfg.get("bigram_window"), device=args.beam_device,
                                   max_batch_bytes=int(dec_cfg.get("beam_batch_mb") or 256) * 2 ** 20)
        sync(args.beam_device)
        seconds = time.perf_counter() - t0
    finally:
        del proposer.propose, proposer.features
    if not (len(words) == encoder.n_words and np.isfinite(score)):
        raise SystemExit(f"the beam search returned {len(words)} words (expected {encoder.n_words}), score {score}")
    counts = timers.sizes["features"]
    floor = decode_floor(encoder, precision, counts, beam_width, device=args.beam_device)
    direct = decode_floor(encoder, precision, counts, beam_width, device=args.beam_device, direct=True)
    return {"seconds": seconds, "floor": floor, "direct": direct, "candidates": int(sum(counts)),
            "propose": timers.seconds["propose"], "features": timers.seconds["features"]}


def warm_up(args, cfg, delays, beam_width, dec_cfg):
    """Everything once at a tiny size, untimed (imports, first torch and BLAS calls)."""
    tiny = argparse.Namespace(**{**vars(args), "voxels": 30, "trs": 120, "features": 8, "stories": 2})
    dec, prop, _ = bench_fit(tiny, cfg, delays)
    tr_times, times = story(0.3, args.wpm)
    observed = np.zeros((len(tr_times), len(dec.voxels_)))
    bench_decode(dec.encoder(tr_times, times), observed, dec.precision_, prop, tiny, beam_width, dec_cfg)


def random_lm(name, spec, seed=0):
    """A randomly initialised word-level LM of the config's architecture with a vocabulary of its size."""
    vocab = Vocabulary(["<unk>"] + [f"w{i}" for i in range(int(spec.get("max_vocab") or 6000) - 1)])
    return WordLanguageModel(build_model(spec, len(vocab), seed=seed), vocab, name=name, device="cpu")


def positive(kind):
    def parse(s):
        v = kind(s)
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {s}")
        return v

    return parse


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voxels", type=positive(int), default=2000, help="voxels of the responses")
    ap.add_argument("--trs", type=positive(int), default=3000, help="training TRs, all stories together")
    ap.add_argument("--features", type=positive(int), default=128, help="word feature dimension (planted proposer)")
    ap.add_argument("--rate-voxels", type=positive(int), default=None,
                    help="voxels of the word-rate model (default: the config's decoding.rate_voxels)")
    ap.add_argument("--stories", type=int, default=5, help="training stories (leave-one-story-out folds; at least 2)")
    ap.add_argument("--minutes", type=positive(float), default=2.0, help="decoded story length (minutes)")
    ap.add_argument("--wpm", type=positive(float), default=150.0, help="words per minute of the stories")
    ap.add_argument("--beam-width", type=positive(int), default=None, help="default: the config's decoding.beam_width")
    ap.add_argument("--model", default=None,
                    help="the LM proposer: a trained-type model of config/config.yaml, randomly initialised "
                         "(default: the first of decoding.models, else transformer); none = the planted row only")
    ap.add_argument("--device", default="cpu", help="torch device of the fit's ridges")
    ap.add_argument("--beam-device", default=None, help="torch device of the beam arithmetic (default: numpy)")
    ap.add_argument("--threads", type=positive(int), default=None, help="torch and BLAS threads")
    args = ap.parse_args(argv)
    if args.stories < 2:
        ap.error(f"--stories must be at least 2 (the noise model is leave-one-story-out), got {args.stories}")
    if args.trs < 20 * args.stories:
        ap.error(f"--trs {args.trs} is too few for {args.stories} stories (at least 20 TRs per story)")
    if args.minutes * 60 / TR < 8:
        ap.error(f"--minutes {args.minutes} is too short (at least {8 * TR / 60:.2f} minutes: 8 TRs)")
    if args.threads:
        torch.set_num_threads(args.threads)
        # numpy's BLAS too (the SVDs, the noise model, the numpy beam arithmetic): on a busy machine a threaded
        # OpenBLAS Cholesky of 300 x 300 took 0.7 s instead of 2 ms
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(args.threads)
        except ImportError:
            pass
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    models = check_models(cfg)
    dec_cfg = cfg["decoding"]
    delays = tuple(int(x) for x in cfg["encoding"]["delays"])
    beam_width = args.beam_width or int(dec_cfg["beam_width"])
    lm_name = args.model
    if lm_name is None:
        lm_name = next((m for m in dec_cfg.get("models") or [] if models.get(m, {}).get("type") in TRAINED_TYPES),
                       "transformer")
    if lm_name != "none" and (lm_name not in models or models[lm_name]["type"] not in TRAINED_TYPES):
        raise SystemExit(f"--model: {lm_name} cannot propose here (use a model of config/config.yaml of a trained "
                         f"type: {', '.join(m for m, s in models.items() if s['type'] in TRAINED_TYPES)}; or none)")

    print(f"fit: {args.stories} stories, {args.trs} TRs, {args.voxels} voxels, {args.features} features x "
          f"{len(delays)} delays; decode: {args.minutes:g} min at {args.wpm:g} words/min, beam {beam_width} x "
          f"{dec_cfg['extensions']} extensions; torch threads {torch.get_num_threads()}, beam "
          f"{args.beam_device or 'numpy'}", flush=True)
    warm_up(args, cfg, delays, beam_width, dec_cfg)
    dec, prop, fit = bench_fit(args, cfg, delays)
    rows = [("fit", fit["seconds"], fit["floor"], None, None)]

    tr_times, times = story(args.minutes, args.wpm)
    story_min = (tr_times[-1] - tr_times[0]) / 60
    observed = np.random.default_rng(2).standard_normal((len(tr_times), len(dec.voxels_)))
    encoder = dec.encoder(tr_times, times)
    r = bench_decode(encoder, observed, dec.precision_, prop, args, beam_width, dec_cfg)
    rows.append(("decode planted", r["seconds"], r["floor"], r, story_min))
    lm_row = None
    if lm_name != "none":
        lm = random_lm(lm_name, models[lm_name])
        proposer = WordLMProposer(lm, decoder_layer(dec_cfg.get("layer"), lm), context=int(dec_cfg["context"]),
                                  extensions=int(dec_cfg["extensions"]), top_p=float(dec_cfg["top_p"]),
                                  min_ratio=float(dec_cfg["min_ratio"]))
        d_lm = proposer.features([["w1"]]).shape[1]  # (also the first, untimed, forward passes)
        proposer.propose([["w1", "w2"]])
        rng = np.random.default_rng(3)
        lm_enc = LinearEncoder(rng.standard_normal((len(delays) * d_lm, len(dec.voxels_))) / np.sqrt(d_lm), delays,
                               np.zeros(d_lm), np.ones(d_lm), tr_times, times)
        lm_row = bench_decode(lm_enc, observed, dec.precision_, proposer, args, beam_width, dec_cfg)
        rows.append((f"decode {lm_name}", lm_row["seconds"], lm_row["floor"], lm_row, story_min))

    print(f"{'row':<20} {'lmbrain s':>10} {'floor s':>9} {'ratio':>8} {'s/story min':>12} {'cand/s':>9} "
          f"{'proposer s':>10}")
    for name, secs, floor, r, mins in rows:
        extra = "" if r is None else (f" {secs / mins:12.3f} {r['candidates'] / secs:9.0f} "
                                      f"{r['propose'] + r['features']:10.3f}")
        print(f"{name:<20} {secs:10.3f} {floor:9.3g} {secs / floor:7.1f}x{extra}", flush=True)
    parts = ", ".join(f"{k} {v:.3f}" for k, v in fit["parts"].items())
    print(f"fit parts (s): {parts}; {fit['folds']} noise-model folds, {fit['kept']} voxels kept")
    r = rows[1][3]
    print(f"decode planted: {len(times)} words, {r['candidates']} candidates; proposer "
          f"{r['propose'] + r['features']:.3f} s of {r['seconds']:.3f} s; the direct arithmetic (every candidate's "
          f"predictions on its word's TRs, residuals, squared norms) {r['direct']:.3f} s, "
          f"{r['direct'] / r['floor']:.1f}x the floor")
    if lm_row is not None:
        lm_s = lm_row["propose"] + lm_row["features"]
        rest = lm_row["seconds"] - lm_s
        verdict = ("the LM proposer dominates decode time" if lm_s > rest
                   else "the beam arithmetic dominates decode time")
        print(f"decode {lm_name}: propose {lm_row['propose']:.3f} s, features {lm_row['features']:.3f} s, "
              f"beam arithmetic and bookkeeping {rest:.3f} s ({rest / lm_row['floor']:.1f}x its floor): {verdict}")


if __name__ == "__main__":
    main()
