"""`evaluate.py static --run RUN --references [NAME=]FILE ...`: teacher-forced inference of a run's
exports (or --endpoint servers) over test sets; each set's predictions and metrics go to
RUN/eval/NAME/ (NAME: the file's own name unless given)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from evaluation.agent.exports import load_run_recipe
from evaluation.steps.teacher_forced import StaticEvaluation, run_static

from .run_args import (add_decoding_args, add_endpoint_args, add_run_args, endpoints_from_args,
                       evaluate_node)


def add_args(p) -> None:
    add_run_args(p)
    p.add_argument("--references", required=True, nargs="+", metavar="[NAME=]FILE",
                   help="test sets (any form `evaluate.py steps` reads, or val_split: the run's "
                        "held-in dialogs); NAME defaults to the file's own name")
    p.add_argument("--limit", type=int, help="only the first N steps of each test set")
    p.add_argument("--out", help="output folder (default: the run's eval folder)")
    add_decoding_args(p)
    add_endpoint_args(p)


def test_sets(items) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        name, path = (name, path) if sep and not Path(item).exists() else (Path(item).stem, item)
        out[name] = path
    return out


def run(args) -> int:
    recipe = load_run_recipe(args.run_dir, args.recipe)
    node = evaluate_node(args, test_sets=test_sets(args.references), limit=args.limit, out_dir=args.out)
    res = run_static(args.run_dir, recipe, StaticEvaluation.from_node(node),
                     endpoints=endpoints_from_args(args), eos_text=args.eos_text,
                     log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(res, indent=2))
    return 0
