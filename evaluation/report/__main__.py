"""python -m evaluation.report RUN_DIR... --out DIR [--title T] [--wandb]"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import EvaluationError
from . import write_report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Report (table + loss / data-fraction plots) for run directories")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (NAME=DIR to rename)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--title", default="Report")
    p.add_argument("--wandb", action="store_true", help="also log to W&B (offline unless WANDB_MODE)")
    args = p.parse_args(argv)
    runs = []
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep or Path(spec).exists():
            name, path = Path(spec).name, spec
        runs.append({"name": name, "run_dir": path})
    try:
        paths = write_report(runs, args.out, title=args.title, wandb={"enabled": args.wandb})
    except EvaluationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(Path(paths["markdown"]).read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
