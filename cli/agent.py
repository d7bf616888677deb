"""`evaluate.py agent --run RUN --trajectory FILE`: one live episode of a run's team (planner ->
caller -> tool -> ... -> summarizer) with the recorded tool responses replayed."""
from __future__ import annotations

import json
from pathlib import Path

from evaluation import EvaluationError
from evaluation.agent.exports import load_run_recipe
from evaluation.agent.loop import run_episode, task_of
from evaluation.agent.setup import TeamSettings, evaluate_settings, run_team
from evaluation.episodes.executors import ReplayExecutor

from .run_args import add_endpoint_args, add_run_args, endpoints_from_args, evaluate_node


def add_args(p) -> None:
    add_run_args(p)
    p.add_argument("--trajectory", required=True,
                   help="recorded trajectories (any source format): the task, and the tool "
                        "responses to replay")
    p.add_argument("--index", type=int, default=0, help="which trajectory of the file")
    p.add_argument("--max-steps", type=int, default=8, help="most planner turns")
    add_endpoint_args(p)
    p.add_argument("--out", help="append the resulting trajectory to this JSONL file")


def run(args) -> int:
    from trajectories.sources import load_trajectories

    trajectories = load_trajectories(args.trajectory).trajectories
    if not 0 <= args.index < len(trajectories):
        raise EvaluationError(f"{args.trajectory}: no trajectory {args.index} "
                              f"({len(trajectories)} in the file)")
    recorded = trajectories[args.index]
    recipe = load_run_recipe(args.run_dir, args.recipe)
    settings = TeamSettings.of(evaluate_settings(evaluate_node(args, batch_size=1)))
    team, meta = run_team(args.run_dir, recipe, settings, endpoints=endpoints_from_args(args),
                          eos_text=args.eos_text)
    traj = run_episode(team, task_of(recorded), ReplayExecutor(recorded), max_steps=args.max_steps)
    traj["meta"]["mode"] = meta["mode"]
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(traj, ensure_ascii=False) + "\n")
    print(json.dumps(traj, indent=2, ensure_ascii=False))
    return 0
