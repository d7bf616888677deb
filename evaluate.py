"""Evaluation CLI.

    python evaluate.py steps --references TEST --out steps.jsonl
    python evaluate.py score --references TEST --predictions preds.jsonl [--out metrics.json]
    python evaluate.py table RUN_OR_METRICS... [--names ...] [--out table.md] [--wandb]
    python evaluate.py episodes recipes/eval/toolalpaca_simulated.yaml --run RUN [key=value ...]

TEST is a test set in the α-UMi conversation form, canonical trajectories (JSONL) or a steps file.
Each subcommand is one entry of COMMANDS: (help, add_arguments, run); inference subcommands
(`static`: teacher-forced over a steps file, `agent`: one live episode, `episodes`: a whole test
set live, judged) are added there.
"""
from __future__ import annotations

import argparse
import json
import sys

from trajectories.trajectory import TrajectoryError
from core.atomic_files import write_text_atomic
from evaluation import EvaluationError
from evaluation.agent_cli import add_agent_args, run_agent_cli
from evaluation.episodes_cli import add_episodes_args, run_episodes_cli
from evaluation.metrics import load_predictions, score
from evaluation.results_table import load_runs, log_wandb, results_table
from evaluation.static_inference import add_static_args, run_static_cli
from evaluation.steps import load_steps, plan_counts, write_steps


def add_steps_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--references", required=True, help="test set file")
    p.add_argument("--out", required=True, help="steps JSONL to write")


def run_steps(args) -> int:
    steps = load_steps(args.references)
    write_steps(args.out, steps)
    print(json.dumps({"n_steps": len(steps), "counts": plan_counts(steps), "out": args.out}))
    return 0


def add_score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--references", required=True, help="test set or steps file")
    p.add_argument("--predictions", required=True, help="predictions JSONL keyed by step id")
    p.add_argument("--out", help="metrics JSON to write")


def run_score(args) -> int:
    steps = load_steps(args.references)
    preds = load_predictions(args.predictions, [s["id"] for s in steps])
    text = json.dumps(score(steps, preds), indent=2) + "\n"
    if args.out:
        write_text_atomic(args.out, text)
    print(text, end="")
    return 0


def add_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_OR_METRICS",
                   help="metrics JSON, run directory (eval/metrics.json, eval/metrics_ood.json) "
                        "or NAME=PATH")
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


COMMANDS = {
    "steps": ("extract evaluation steps from a test set", add_steps_args, run_steps),
    "score": ("score predictions against the reference steps", add_score_args, run_score),
    "table": ("collect metrics into a Markdown results table", add_table_args, run_table),
    "static": ("teacher-forced inference of a run over a test set -> predictions + metrics",
               add_static_args, run_static_cli),
    "agent": ("one live episode of a run (planner -> caller -> tool -> ...), tools replayed",
              add_agent_args, run_agent_cli),
    "episodes": ("the agent on every instruction of a test set (simulated, http or replayed tools), "
                 "judged: Proc. / Ans. or a pass rate", add_episodes_args, run_episodes_cli),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (EvaluationError, TrajectoryError, OSError) as exc:
        print(f"evaluate.py {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
