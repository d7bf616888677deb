"""`evaluate.py steps | score | table`: what needs no model: a test set's agent steps, scoring
predictions against them, and the results table of runs."""
from __future__ import annotations

import json
import sys
from collections import Counter

from core.atomic_files import write_text_atomic
from evaluation.report.results_table import load_runs, log_wandb, results_table
from evaluation.steps.extract import load_steps, plan_counts, write_steps
from evaluation.steps.metrics import load_predictions, score


def add_steps_args(p) -> None:
    p.add_argument("--references", required=True, help="test set file")
    p.add_argument("--out", required=True, help="steps JSONL to write")


def run_steps(args) -> int:
    anomalies = Counter()
    steps = load_steps(args.references, anomalies)
    write_steps(args.out, steps)
    print(json.dumps({"n_steps": len(steps), "counts": plan_counts(steps), "out": args.out,
                      "anomalies": dict(sorted(anomalies.items()))}))
    return 0


def add_score_args(p) -> None:
    p.add_argument("--references", required=True, help="test set or steps file")
    p.add_argument("--predictions", required=True, help="predictions JSONL keyed by step id")
    p.add_argument("--out", help="metrics JSON to write")


def run_score(args) -> int:
    anomalies = Counter()
    steps = load_steps(args.references, anomalies)
    preds = load_predictions(args.predictions, [s["id"] for s in steps])
    missing = sum(s["id"] not in preds for s in steps)
    if missing:
        print(f"warning: {args.predictions}: no prediction for {missing} of the {len(steps)} steps of "
              f"{args.references} (scored as wrong)", file=sys.stderr)
    metrics = {**score(steps, preds), "anomalies": dict(sorted(anomalies.items()))}
    text = json.dumps(metrics, indent=2) + "\n"
    if args.out:
        write_text_atomic(args.out, text)
    print(text, end="")
    return 0


def add_table_args(p) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_OR_METRICS",
                   help="run directory (every test set in its eval folder), metrics JSON, or NAME=PATH")
    p.add_argument("--names", nargs="+", help="row names, one per run")
    p.add_argument("--out", help="Markdown file to write")
    p.add_argument("--wandb", action="store_true",
                   help="also log a wandb.Table (offline unless WANDB_MODE says otherwise)")


def run_table(args) -> int:
    rows = load_runs(args.runs, args.names)
    table = results_table(rows)
    if args.out:
        write_text_atomic(args.out, table)
    print(table, end="")
    if args.wandb:
        log_wandb(rows)
    return 0
