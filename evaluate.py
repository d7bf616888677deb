"""Evaluation CLI.

    python evaluate.py steps --references TEST --out steps.jsonl
    python evaluate.py score --references TEST --predictions preds.jsonl [--out metrics.json]
    python evaluate.py static --run RUN --references [NAME=]TEST ... [--endpoint ROLE=URL ...]
    python evaluate.py agent --run RUN --trajectory TEST [--index I]
    python evaluate.py episodes recipes/eval/toolalpaca_simulated.yaml --run RUN [key=value ...]
    python evaluate.py gentool --run RUN [--references TEST.jsonl] [--out DIR]
    python evaluate.py table RUN_OR_METRICS... [--names ...] [--out table.md] [--wandb]

TEST is a test set in the α-UMi conversation form, canonical trajectories (JSONL) or a steps file.
Each subcommand is one entry of COMMANDS: (help, add_arguments, run), from its module in cli/.
Bad input stops with one or two lines and exit code 2; --debug (or ALPHA_UMI_DEBUG=1) shows the traceback.
"""
from __future__ import annotations

import argparse
import sys

from cli import agent, episodes, gentool, static, test_sets
from core.errors import run_cli

COMMANDS = {
    "steps": ("extract evaluation steps from a test set", test_sets.add_steps_args, test_sets.run_steps),
    "score": ("score predictions against the reference steps", test_sets.add_score_args,
              test_sets.run_score),
    "table": ("collect metrics into a Markdown results table", test_sets.add_table_args,
              test_sets.run_table),
    "static": ("teacher-forced inference of a run over test sets -> predictions + metrics",
               static.add_args, static.run),
    "gentool": ("GenTool models of a run over a tool-selection test set -> four-scenario metrics",
                gentool.add_args, gentool.run),
    "agent": ("one live episode of a run (planner -> caller -> tool -> ...), tools replayed",
              agent.add_args, agent.run),
    "episodes": ("the agent on every instruction of a test set (simulated, http or replayed tools), "
                 "judged: Proc. / Ans. or a pass rate", episodes.add_args, episodes.run),
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
    parser = build_parser()
    args, extra = parser.parse_known_args([a for a in argv if a != "--debug"])
    # key=value overrides may also follow the options (`episodes CONFIG --run RUN in_flight=4`)
    if extra and isinstance(getattr(args, "overrides", None), list) \
            and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return run_cli(f"evaluate.py {args.command}", lambda _: args.run(args), argv)


if __name__ == "__main__":
    sys.exit(main())
