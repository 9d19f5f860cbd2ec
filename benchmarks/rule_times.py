"""Where a workflow run spent its time: Snakemake's benchmark files summed per rule.

    python benchmarks/rule_times.py                      # results/benchmarks of this checkout
    python benchmarks/rule_times.py --results /path/to/results --since 2026-12-03T05:00
    python benchmarks/rule_times.py --logs logs --cores 2     # and how the jobs filled the cores
    python benchmarks/rule_times.py --leave-out smollm2 DEMO02   # what the run would cost without them

Every job of the workflow writes ``results/benchmarks/...tsv`` (its ``benchmark:`` directive: wall
seconds, CPU seconds, peak resident memory). The rule of a file is read from its path
(:func:`rule_of`); ``--since`` keeps only files written after a time (the jobs of one run when older
files are still there). Prints a Markdown table: jobs, summed wall and CPU seconds, the longest job and
the largest peak memory per rule, largest total first, and the totals.

``--leave-out NAME ...`` drops the jobs whose benchmark path has one of the names as a folder or file
name (a model, ``smollm2``; a subject, ``DEMO02``; ``group``, the group jobs)
and prints the table of the rest, with the job time left out and what the rest would take at
``--cores`` jobs at a time: an estimate from the jobs' own times, not a run (the jobs left are not
faster for running alone, and the packing onto the cores is never perfect).

``--logs DIR`` (the run's ``logs`` folder) adds how the jobs were packed onto ``--cores``: every job's
log has the lines ``rule <name> started`` and ``rule <name> finished``, timed to the millisecond, so the
elapsed time from the first start to the last finish, the jobs running at a time on average (job time
over elapsed), the seconds with fewer jobs than cores running, and the longest such stretches with the
jobs that ran in them (e.g. a long job left alone at the end) are read from them. A job's time between
its process start and its first log line (~0.6 s) is not in its log, so a fully packed run shows a
little under ``--cores`` jobs at a time. A job counts once whatever its threads: with
``resources.threads: auto`` a local run's jobs take one thread each when memory allows.

The CPU seconds are a lower bound: Snakemake samples a job's processes every second for its first 30 s
and every 30 s after that, so up to 30 s of a long job's last stretch is never counted (the demo's
DEMO01 LSTM encoding job, one busy thread throughout, shows 42 CPU-s in 72 s).
"""

from __future__ import annotations

import argparse
import csv
import re
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


def left_out(rel: Path, names) -> bool:
    """Whether the benchmark file ``rel`` (relative to ``results/benchmarks``) is a job of one of
    ``names``: a folder or the file's own name (without ``.tsv``) equal to one of them."""
    return bool(set(rel.with_suffix("").parts) & set(names))


def read_jobs(folder: Path, since: float | None = None) -> list[dict]:
    """One record per benchmark file under ``folder`` (written after ``since``): its path relative to
    ``folder`` (``rel``), rule, wall and CPU seconds and peak resident memory (MB)."""
    jobs = []
    for path in sorted(folder.rglob("*.tsv")):
        if since is not None and path.stat().st_mtime < since:
            continue
        with open(path, newline="") as fh:
            records = list(csv.DictReader(fh, delimiter="\t"))
        if not records:
            continue
        r, rel = records[-1], path.relative_to(folder)
        rss = float(r["max_rss"]) if r["max_rss"] not in ("", "NA", "-") else float("nan")
        jobs.append({"rel": rel, "rule": rule_of(rel), "s": float(r["s"]), "cpu": float(r["cpu_time"]), "rss": rss})
    return jobs


def summarise(jobs) -> dict:
    """Per rule: jobs, summed wall and CPU seconds, the longest job and the largest peak memory."""
    rows = {}
    for job in jobs:
        agg = rows.setdefault(job["rule"], {"jobs": 0, "wall": 0.0, "cpu": 0.0, "longest": 0.0, "rss": 0.0})
        agg["jobs"] += 1
        agg["wall"] += job["s"]
        agg["cpu"] += job["cpu"]
        agg["longest"] = max(agg["longest"], job["s"])
        agg["rss"] = max(agg["rss"], job["rss"])
    return rows


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ INFO rule (\S+) (started|finished)")


def job_spans(logs: Path, since: float | None = None) -> list[tuple[float, float, str]]:
    """``(start, end, job)`` (epoch seconds; ``job`` the log's path under ``logs``) of every job whose log
    has a ``started`` line followed by a ``finished`` one (the last such pair: a rerun appends to its
    log). :func:`lmbrain.workflow.run_rule` writes both lines, ``finished`` also when the job fails (it
    held its core all the same), so only a job killed or still running is left out."""
    spans = []
    for path in sorted(logs.rglob("*.log")):
        start = span = None
        for line in path.read_text(errors="replace").splitlines():
            m = _LOG_LINE.match(line)
            if not m:
                continue
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if m.group(3) == "started":
                start = t
            elif start is not None:
                span, start = (start, t), None
        if span is not None and (since is None or span[0] >= since):
            spans.append((span[0], span[1], str(path.relative_to(logs).with_suffix(""))))
    return spans


def packing(spans, cores: int, top: int = 3) -> dict:
    """How ``spans`` (:func:`job_spans`) filled ``cores``: elapsed and job seconds, jobs at a time, the
    seconds with fewer than ``cores`` jobs running, and the ``top`` longest such stretches as
    ``(from, to, jobs running)`` in seconds since the first start."""
    t0 = min(s for s, _, _ in spans)
    events = sorted({t - t0 for s, e, _ in spans for t in (s, e)})
    stretches, under = [], 0.0
    for a, b in zip(events[:-1], events[1:]):
        running = [j for s, e, j in spans if s - t0 <= a and e - t0 >= b]
        if len(running) < cores:
            under += b - a
            if stretches and stretches[-1][1] == a and stretches[-1][2] == running:
                stretches[-1] = (stretches[-1][0], b, running)
            else:
                stretches.append((a, b, running))
    elapsed = max(e for _, e, _ in spans) - t0
    job = sum(e - s for s, e, _ in spans)
    return {"jobs": len(spans), "elapsed": elapsed, "job": job, "at_a_time": job / elapsed if elapsed > 0 else float("nan"),
            "under": under, "stretches": sorted(stretches, key=lambda x: x[0] - x[1])[:top]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--since", default=None, help="ISO time: only benchmark files written after it")
    ap.add_argument("--logs", type=Path, default=None, help="the run's logs folder: also print how the jobs filled the cores")
    ap.add_argument("--cores", type=int, default=2, help="the run's --cores (default 2)")
    ap.add_argument("--leave-out", nargs="+", default=[], metavar="NAME",
                    help="drop the jobs with NAME in their benchmark path (a model, a subject, group) and estimate the rest")
    args = ap.parse_args(argv)
    if args.cores < 1:
        ap.error("--cores must be at least 1")
    folder = args.results / "benchmarks"
    if not folder.is_dir():
        raise SystemExit(f"{folder}: no benchmark files (run the workflow first)")
    since = datetime.fromisoformat(args.since).timestamp() if args.since else None
    jobs = read_jobs(folder, since)
    if not jobs:
        raise SystemExit(f"{folder}: no benchmark files" + (f" written after {args.since}" if since else ""))
    unknown = [n for n in args.leave_out if not any(left_out(job["rel"], [n]) for job in jobs)]
    if unknown:
        raise SystemExit(f"--leave-out: no benchmark file of {', '.join(unknown)} in {folder}")
    kept = [job for job in jobs if not left_out(job["rel"], args.leave_out)]
    rows = summarise(kept)
    print("| rule | jobs | wall s (sum) | CPU s (sum) | longest job s | peak memory MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for rule, a in sorted(rows.items(), key=lambda kv: -kv[1]["wall"]):
        print(f"| {rule} | {a['jobs']} | {a['wall']:.0f} | {a['cpu']:.0f} | {a['longest']:.0f} | {a['rss']:.0f} |")
    print(f"| total | {sum(a['jobs'] for a in rows.values())} | {sum(a['wall'] for a in rows.values()):.0f} | "
          f"{sum(a['cpu'] for a in rows.values()):.0f} | | |")
    if args.leave_out:
        total, rest = sum(job["s"] for job in jobs), sum(job["s"] for job in kept)
        n_out = len(jobs) - len(kept)
        print(f"\nleft out ({', '.join(args.leave_out)}): {n_out} jobs, {total - rest:.0f} of {total:.0f} s of job time; "
              f"the rest, {rest:.0f} s, is {rest / args.cores:.0f} s ({rest / args.cores / 60:.1f} min) at {args.cores} "
              f"jobs at a time (an estimate, not a run)")
    if args.logs is not None:
        spans = job_spans(args.logs, since)
        if not spans:
            raise SystemExit(f"{args.logs}: no job log with 'rule ... started' and 'finished' lines")
        p = packing(spans, args.cores)
        print(f"\npacking ({p['jobs']} job logs, {args.cores} cores): {p['elapsed']:.0f} s elapsed from the first "
              f"start to the last finish, {p['job']:.0f} s of job time, {p['at_a_time']:.2f} jobs at a time; "
              f"fewer than {args.cores} jobs running for {p['under']:.0f} s")
        for a, b, running in p["stretches"]:
            print(f"  {a:.0f}-{b:.0f} s ({b - a:.0f} s): {', '.join(running) or 'no job'}")


if __name__ == "__main__":
    sys.exit(main())
