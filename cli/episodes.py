"""`evaluate.py episodes CONFIG --run RUN [key=value ...]`: the agent on every instruction of a
test set (evaluation/episodes/runner.py), judged (judge.py); writes RUN/eval/NAME/episodes/
(NAME: the config's file name unless --name says otherwise): episodes.jsonl (one line per episode,
resumable), metrics.json (Proc. / Ans. / both or the pass rate, for `evaluate.py table`) and
summary.json (outcomes, per-API breakdown, throughput)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from core.atomic_files import write_json_atomic
from core.dir_lock import DirLock
from core.run_dir import RunDir
from evaluation import EvaluationError, check_test_set
from evaluation.agent.exports import load_run_recipe, warn_training_overlap
from evaluation.agent.setup import TeamSettings, evaluate_settings, run_team
from evaluation.episodes.config import load_episodes_config

from .run_args import add_endpoint_args, add_run_args, endpoints_from_args, evaluate_node


def add_args(p) -> None:
    p.add_argument("config", help="episodes config YAML (recipes/eval/*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the config's episodes node, e.g. in_flight=16 judge.enabled=false")
    add_run_args(p)
    add_endpoint_args(p)
    p.add_argument("--name", help="the test set's name in the run's eval folder (default: the config's file name)")
    p.add_argument("--out", help="output folder (default: RUN/eval/NAME/episodes)")


def run(args) -> int:
    from trajectories.sources import load_trajectories
    from trajectories.trajectory import TrajectoryError

    from evaluation.agent.loop import task_of

    cfg = load_episodes_config(args.config, args.overrides)
    try:
        trained_with = RunDir(args.run_dir).load_recipe() or {}
    except ValueError as exc:  # an unreadable recipe.yaml: name it, no traceback
        raise EvaluationError(f"{exc}; fix or remove it (the run's recipe)") from None
    overlap = warn_training_overlap(trained_with, cfg["test_set"],
                                    lambda m: print(f"[episodes] {m}", file=sys.stderr))
    try:
        recorded = load_trajectories(cfg["test_set"], format=cfg.get("format") or "auto").trajectories
    except TrajectoryError as exc:
        raise EvaluationError(str(exc)) from None
    check_test_set([(t["id"], i) for i, t in enumerate(recorded)], cfg["test_set"], "task")
    if cfg.get("limit"):
        recorded = recorded[:int(cfg["limit"])]
    tasks = [task_of(t) for t in recorded]
    references = {t["id"]: t for t in recorded}
    recipe = load_run_recipe(args.run_dir, args.recipe)
    out = Path(args.out or RunDir(args.run_dir).eval().episodes(args.name or Path(args.config).stem))
    with DirLock(out, what="evaluate.py episodes"):  # a second run on `out` stops, naming this one
        return _run_locked(args, cfg, recipe, tasks, references, overlap, out)


def _run_locked(args, cfg, recipe, tasks, references, overlap, out: Path) -> int:
    from evaluation.episodes.executors import executor_factory
    from evaluation.episodes.judge import WORLD_KIND, Judge, api_documentation, judge_metrics
    from evaluation.episodes.runner import EpisodeRunner, summarize

    make_executor, executor_stats = executor_factory(cfg["executor"], cfg["test_set"], references)
    judge_cfg = cfg["judge"]
    judge = None
    if judge_cfg.get("enabled", True) and judge_cfg.get("kind") == WORLD_KIND:
        from simulators.world.verdicts import WorldJudge  # computed verdicts, no LLM
        judge = WorldJudge()
    elif judge_cfg.get("enabled", True):
        from core.llm_client import LLMError
        try:
            judge = Judge(judge_cfg, api_documentation(cfg["executor"].get("apis") or cfg["test_set"]))
        except LLMError as exc:
            raise EvaluationError(f"judge: {exc}") from None
    # the team last: bad executor or judge settings stop before any model loads
    settings = TeamSettings.of(evaluate_settings(evaluate_node(args, batch_size=int(cfg["in_flight"]))))
    team, meta = run_team(args.run_dir, recipe, settings, endpoints=endpoints_from_args(args, cfg.get("endpoint")),
                          eos_text=args.eos_text)
    runner = EpisodeRunner(team, make_executor, max_steps=cfg["max_steps"],
                           in_flight=cfg["in_flight"], judge=judge, references=references,
                           unjudged=judge_cfg.get("fail_without_judging") or (),
                           progress=bool(cfg.get("progress", True)), down_after=cfg["down_after"])
    records = runner.run(tasks, out / "episodes.jsonl")
    summary = summarize(records, runner.stats, len(tasks))
    summary.update(mode=meta["mode"], config=str(args.config), executor_llm=executor_stats(),
                   training_overlap=overlap)
    metrics = {}
    if judge is not None:
        kind = getattr(judge, "kind", None) or judge_cfg.get("kind", "process_answer")
        summary["judge"] = judge_metrics(records, kind, float(judge_cfg.get("uncertain_credit", 0.0)))
        summary["judge_llm"] = dict(judge.llm.stats) if hasattr(judge, "llm") else {}
        metrics = {k: summary["judge"][k] for k in ("proc", "ans", "both", "pass_rate")
                   if k in summary["judge"]}
    metrics.update(episodes=len(records), concluded=summary["concluded"], errors=summary["errors"])
    write_json_atomic(out / "metrics.json", metrics)
    write_json_atomic(out / "summary.json", summary)
    print(json.dumps({**metrics, "out": str(out), "run": summary["run"]}))
    return 0
