"""Command line of the live agent: `evaluate.py agent` (one episode, tools replayed) and the team
and endpoint flags it shares with `evaluate.py episodes`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from prompting.prompt_template import PromptTemplate

from evaluation import EvaluationError
from evaluation.agent.loop import run_episode, task_of
from evaluation.episodes.executors import ReplayExecutor
from evaluation.agent.team import Team, build_team


def add_endpoint_args(p) -> None:
    p.add_argument("--endpoint", action="append", metavar="ROLE=BASE_URL",
                   help="serve a role from an OpenAI-compatible server (its /completions) instead "
                        "of a local export; ROLE is planner, caller, summarizer, backbone or all")
    p.add_argument("--endpoint-model", action="append", metavar="ROLE=NAME",
                   help="served model name of an endpoint role (default: the role name)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the endpoints' API key")
    p.add_argument("--eos-text", help="EOS text in endpoint prompts (default: the export's tokenizer's)")


def add_agent_args(p) -> None:
    from evaluation.agent.exports import add_run_args
    add_run_args(p)
    p.add_argument("--trajectory", required=True,
                   help="recorded trajectories (any source format): the task, and the tool "
                        "responses to replay")
    p.add_argument("--index", type=int, default=0, help="which trajectory of the file")
    p.add_argument("--max-steps", type=int, default=8, help="most planner turns")
    add_endpoint_args(p)
    p.add_argument("--out", help="append the resulting trajectory to this JSONL file")


def team_from_args(args, endpoint_defaults: Mapping | None = None, batch_size: int = 1
                   ) -> tuple[Team, str, dict]:
    """(team, mode, recipe) for the run, export and endpoint flags."""
    from evaluation.agent.exports import find_exports, generation_lengths, load_run_recipe, resolve_mode, role_map

    recipe = load_run_recipe(args.run_dir, args.recipe)
    base = dict(endpoint_defaults or {})
    endpoints = {r: {**base, "base_url": url, "model": r, "api_key_env": args.api_key_env}
                 for r, url in role_map(args.endpoint, "--endpoint").items()}
    for r, name in role_map(args.endpoint_model, "--endpoint-model").items():
        if r in endpoints:
            endpoints[r]["model"] = name
    if args.eos_text:
        for kw in endpoints.values():
            kw["eos_text"] = args.eos_text
    exports = {**find_exports(args.run_dir, recipe), **role_map(args.model, "--model")}
    mode = resolve_mode(args.mode, {**exports, **{r: "endpoint" for r in endpoints}}, args.run_dir)
    try:
        template = PromptTemplate(recipe["template"])
    except ValueError as exc:
        raise EvaluationError(f"recipe template: {exc}") from None
    team = build_team(template, mode, exports, endpoints=endpoints,
                      add_bos=(recipe.get("tokenizer") or {}).get("add_bos", True),
                      max_new_tokens=generation_lengths(args.max_new_tokens, exports, mode)[0],
                      batch_size=batch_size, device=args.device, dtype=args.dtype,
                      max_prompt_tokens=args.max_prompt_tokens,
                      max_length=(recipe.get("data") or {}).get("max_length"),
                      context_reserve=(recipe.get("data") or {}).get("context_reserve"))
    return team, mode, recipe


def run_agent_cli(args) -> int:
    from trajectories.sources import load_trajectories

    trajectories = load_trajectories(args.trajectory).trajectories
    if not 0 <= args.index < len(trajectories):
        raise EvaluationError(f"{args.trajectory}: no trajectory {args.index} "
                              f"({len(trajectories)} in the file)")
    recorded = trajectories[args.index]
    team, mode, _ = team_from_args(args)
    traj = run_episode(team, task_of(recorded), ReplayExecutor(recorded), max_steps=args.max_steps)
    traj["meta"]["mode"] = mode
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(traj, ensure_ascii=False) + "\n")
    print(json.dumps(traj, indent=2, ensure_ascii=False))
    return 0
