"""Evaluation CLI.

    python evaluate.py steps --references TEST --out steps.jsonl
    python evaluate.py score --references TEST --predictions preds.jsonl [--out metrics.json]
    python evaluate.py table RUN_OR_METRICS... [--names ...] [--out table.md] [--wandb]
    python evaluate.py gentool --run RUN [--references TEST.jsonl] [--out DIR]
    python evaluate.py episodes recipes/eval/toolalpaca_simulated.yaml --run RUN [key=value ...]

TEST is a test set in the α-UMi conversation form, canonical trajectories (JSONL) or a steps file.
Each subcommand is one entry of COMMANDS: (help, add_arguments, run); inference subcommands
(`static`: teacher-forced over a steps file, `agent`: one live episode, `episodes`: a whole test
set live, judged) are added there.
Bad input stops with one or two lines and exit code 2; --debug (or ALPHA_UMI_DEBUG=1) shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from core.atomic_files import write_text_atomic
from core.errors import run_cli
from evaluation.gentool.evaluate import add_gentool_args
from cli.agent import add_agent_args, run_agent_cli
from cli.episodes import add_episodes_args, run_episodes_cli
from evaluation.steps.metrics import load_predictions, score
from evaluation.report.results_table import load_runs, log_wandb, results_table
from evaluation.steps.teacher_forced import add_static_args, run_static_cli
from evaluation.steps.extract import load_steps, plan_counts, write_steps


def add_steps_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--references", required=True, help="test set file")
    p.add_argument("--out", required=True, help="steps JSONL to write")


def run_steps(args) -> int:
    anomalies = Counter()
    steps = load_steps(args.references, anomalies)
    write_steps(args.out, steps)
    print(json.dumps({"n_steps": len(steps), "counts": plan_counts(steps), "out": args.out,
                      "anomalies": dict(sorted(anomalies.items()))}))
    return 0


def add_score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--references", required=True, help="test set or steps file")
    p.add_argument("--predictions", required=True, help="predictions JSONL keyed by step id")
    p.add_argument("--out", help="metrics JSON to write")


def run_score(args) -> int:
    anomalies = Counter()
    steps = load_steps(args.references, anomalies)
    preds = load_predictions(args.predictions, [s["id"] for s in steps])
    metrics = {**score(steps, preds), "anomalies": dict(sorted(anomalies.items()))}
    text = json.dumps(metrics, indent=2) + "\n"
    if args.out:
        write_text_atomic(args.out, text)
    print(text, end="")
    return 0


def add_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_OR_METRICS",
                   help="metrics JSON, run directory (its eval folder's metrics and OOD metrics) "
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


def run_gentool(args) -> int:
    from evaluation.agent.exports import load_run_recipe
    from evaluation.gentool.recipe import evaluate_gentool_recipe
    recipe = load_run_recipe(args.run_dir, args.recipe)
    recipe["run"] = {**(recipe.get("run") or {}), "dir": args.run_dir}
    cfg = {"references": args.references, "include_train": bool(args.train) or not args.references,
           "limit": args.limit, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
           "device": args.device, "dtype": args.dtype, "out_dir": args.out}
    evaluate_gentool_recipe(recipe, cfg, train=args.train)
    return 0


COMMANDS = {
    "steps": ("extract evaluation steps from a test set", add_steps_args, run_steps),
    "score": ("score predictions against the reference steps", add_score_args, run_score),
    "table": ("collect metrics into a Markdown results table", add_table_args, run_table),
    "static": ("teacher-forced inference of a run over a test set -> predictions + metrics",
               add_static_args, run_static_cli),
    "gentool": ("GenTool models of a run over a tool-selection test set -> four-scenario metrics",
                add_gentool_args, run_gentool),
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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    return run_cli(f"evaluate.py {args.command}", lambda _: args.run(args), argv)


if __name__ == "__main__":
    sys.exit(main())
