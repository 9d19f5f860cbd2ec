"""``python -m lmbrain`` / ``lmbrain``: command-line entry points of the library.

    lmbrain demo --config config/config.yaml [--out data/demo]
    lmbrain summary --config config/config.yaml --subject DEMO01 [--out summary.tsv]
"""

from __future__ import annotations

import argparse
import sys

from . import LmbrainError, __version__


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:  # every option, --help included, belongs to the demo builder's own parser
        from .demo import main as demo_main

        return demo_main(argv[1:], prog="lmbrain demo")
    parser = argparse.ArgumentParser(prog="lmbrain", description="language models and the brain")
    parser.add_argument("--version", action="version", version=f"lmbrain {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build the demo dataset (lmbrain demo --help)", add_help=False)
    demo.add_argument("rest", nargs=argparse.REMAINDER)
    summ = sub.add_parser("summary", help="check a subject's data and print the per-story table")
    summ.add_argument("--config", nargs="+", default=["config/config.yaml"])
    summ.add_argument("--subject", required=True)
    summ.add_argument("--out", default=None, help="also write the table as TSV here")
    args = parser.parse_args(argv)
    from .config import load_config, resolve
    from .stages.data import data_summary

    try:
        settings = resolve(load_config(*args.config), source=", ".join(args.config))
        table = data_summary(settings.data_job(), args.subject, args.out)
    except LmbrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
