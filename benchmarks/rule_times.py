"""Where a workflow run spent its time: Snakemake's benchmark files summed per rule.

    python benchmarks/rule_times.py                      # results/benchmarks of this checkout
    python benchmarks/rule_times.py --results /path/to/results --since 2026-12-03T05:00

Every job of the workflow writes ``results/benchmarks/...tsv`` (its ``benchmark:`` directive: wall
seconds, CPU seconds, peak resident memory). The rule of a file is read from its path
(:func:`rule_of`); ``--since`` keeps only files written after a time (the jobs of one run when older
files are still there). Prints a Markdown table: jobs, summed wall and CPU seconds, the longest job and
the largest peak memory per rule, largest total first, and the totals.

The CPU seconds are a lower bound: Snakemake samples a job's processes every second for its first 30 s
and every 30 s after that, so up to 30 s of a long job's last stretch is never counted (the demo's
DEMO01 LSTM encoding job, one busy thread throughout, shows 42 CPU-s in 72 s).
"""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rule_of(rel: Path) -> str:
    """The rule of a benchmark file, from its path relative to ``results/benchmarks`` (the layout of
    :meth:`lmbrain.layout.Layout.benchmark`)."""
    parts = rel.with_suffix("").parts
    if parts[0] == "models":  # models/<model>/<train_model or pretrained_model>
        return parts[-1]
    if parts[0] == "features":
        return "extract_features"
    if parts[0] == "scrambled":  # scrambled/<model>/<story>
        return "scrambled_features"
    if parts[0] == "group":
        return "group"
    if len(parts) == 1:
        return parts[0]
    # per subject: <subject>/<stage>/...
    stage = parts[1]
    if stage == "encoding":
        return "encoding_model"
    if stage == "decoding":
        return "decoder" if parts[-1] == "decoder" else "decode"
    return stage


def summarise(folder: Path, since: float | None = None) -> dict:
    rows = {}
    for path in sorted(folder.rglob("*.tsv")):
        if since is not None and path.stat().st_mtime < since:
            continue
        with open(path, newline="") as fh:
            records = list(csv.DictReader(fh, delimiter="\t"))
        if not records:
            continue
        r = records[-1]
        rule = rule_of(path.relative_to(folder))
        s, cpu = float(r["s"]), float(r["cpu_time"])
        rss = float(r["max_rss"]) if r["max_rss"] not in ("", "NA", "-") else float("nan")
        agg = rows.setdefault(rule, {"jobs": 0, "wall": 0.0, "cpu": 0.0, "longest": 0.0, "rss": 0.0})
        agg["jobs"] += 1
        agg["wall"] += s
        agg["cpu"] += cpu
        agg["longest"] = max(agg["longest"], s)
        agg["rss"] = max(agg["rss"], rss)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--since", default=None, help="ISO time: only benchmark files written after it")
    args = ap.parse_args(argv)
    folder = args.results / "benchmarks"
    if not folder.is_dir():
        raise SystemExit(f"{folder}: no benchmark files (run the workflow first)")
    since = datetime.fromisoformat(args.since).timestamp() if args.since else None
    rows = summarise(folder, since)
    if not rows:
        raise SystemExit(f"{folder}: no benchmark files" + (f" written after {args.since}" if since else ""))
    print("| rule | jobs | wall s (sum) | CPU s (sum) | longest job s | peak memory MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for rule, a in sorted(rows.items(), key=lambda kv: -kv[1]["wall"]):
        print(f"| {rule} | {a['jobs']} | {a['wall']:.0f} | {a['cpu']:.0f} | {a['longest']:.0f} | {a['rss']:.0f} |")
    print(f"| total | {sum(a['jobs'] for a in rows.values())} | {sum(a['wall'] for a in rows.values()):.0f} | "
          f"{sum(a['cpu'] for a in rows.values()):.0f} | | |")


if __name__ == "__main__":
    sys.exit(main())
