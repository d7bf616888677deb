"""`evaluate.py episodes CONFIG --run RUN [key=value ...]`: the agent on every instruction of a
test set (episodes.py), judged (judge.py); writes OUT/episodes.jsonl (one line per episode,
resumable), OUT/metrics.json (Proc. / Ans. / both or the pass rate, for `evaluate.py table`) and
OUT/summary.json (outcomes, per-API breakdown, throughput)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from core.run_dir import RunDir

from evaluation import EvaluationError
from evaluation.agent.exports import warn_training_overlap


def load_episodes_config(path, overrides=()) -> dict:
    """The `episodes:` node of an episodes config, over the file its `defaults:` names (relative
    to it), with `key=value` overrides relative to `episodes`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    def read(p: Path, seen=()):
        if p in seen:
            raise EvaluationError(f"{p}: `defaults` chain loops")
        try:
            cfg = OmegaConf.load(p)
        except (OSError, OmegaConfBaseException, ValueError) as exc:
            raise EvaluationError(f"{p}: cannot read the episodes config: {exc}") from None
        base = cfg.pop("defaults", None) if "defaults" in cfg else None
        if base:
            cfg = OmegaConf.merge(read(p.parent / str(base), seen + (p,)), cfg)
        return cfg

    cfg = read(Path(path))
    if "episodes" not in cfg:
        raise EvaluationError(f"{path}: no `episodes:` node")
    node = cfg.episodes
    for item in overrides:
        if "=" not in item:
            raise EvaluationError(f"override {item!r}: expected key=value")
    try:
        node = OmegaConf.merge(node, OmegaConf.from_dotlist([o.removeprefix("episodes.")
                                                             for o in overrides]))
        data = OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as exc:
        raise EvaluationError(f"{path}: {exc}") from None
    for key in ("test_set", "max_steps", "in_flight", "executor", "judge"):
        if key not in data:
            raise EvaluationError(f"{path}: episodes.{key} is missing")
    from simulators.settings import _refuse_secrets
    try:
        _refuse_secrets(data, "episodes")
    except ValueError as exc:
        raise EvaluationError(f"{path}: {exc}") from None
    return data


def add_episodes_args(p) -> None:
    from cli.agent import add_endpoint_args
    from evaluation.agent.exports import add_run_args
    p.add_argument("config", help="episodes config YAML (recipes/eval/*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the config's episodes node, e.g. in_flight=16 judge.enabled=false")
    add_run_args(p)
    add_endpoint_args(p)
    p.add_argument("--out", help="output folder (default: RUN/eval/episodes/<config name>)")


def run_episodes_cli(args) -> int:
    from core.atomic_files import write_json_atomic
    from trajectories.sources import load_trajectories
    from trajectories.trajectory import TrajectoryError

    from cli.agent import team_from_args
    from evaluation.agent.loop import task_of
    from evaluation.episodes.runner import EpisodeRunner, summarize
    from evaluation.episodes.executors import executor_factory
    from evaluation.episodes.judge import Judge, api_documentation, judge_metrics

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
    if cfg.get("limit"):
        recorded = recorded[:int(cfg["limit"])]
    tasks = [task_of(t) for t in recorded]
    references = {t["id"]: t for t in recorded}
    team, mode, _ = team_from_args(args, cfg.get("endpoint"), batch_size=int(cfg["in_flight"]))
    make_executor, executor_stats = executor_factory(cfg["executor"], cfg["test_set"], references)
    judge_cfg = cfg["judge"]
    judge = None
    if judge_cfg.get("enabled", True):
        from core.llm_client import LLMError
        try:
            judge = Judge(judge_cfg, api_documentation(cfg["executor"].get("apis") or cfg["test_set"]))
        except LLMError as exc:
            raise EvaluationError(f"judge: {exc}") from None
    out = Path(args.out or RunDir(args.run_dir).eval().episodes(Path(args.config).stem))
    runner = EpisodeRunner(team, make_executor, max_steps=cfg["max_steps"],
                           in_flight=cfg["in_flight"], judge=judge, references=references,
                           unjudged=judge_cfg.get("fail_without_judging") or (),
                           progress=bool(cfg.get("progress", True)))
    records = runner.run(tasks, out / "episodes.jsonl")
    summary = summarize(records, runner.stats, len(tasks))
    summary.update(mode=mode, config=str(args.config), executor_llm=executor_stats(),
                   training_overlap=overlap)
    metrics = {}
    if judge is not None:
        kind = judge_cfg.get("kind", "process_answer")
        summary["judge"] = judge_metrics(records, kind, float(judge_cfg.get("uncertain_credit", 0.0)))
        summary["judge_llm"] = dict(judge.llm.stats)
        metrics = {k: summary["judge"][k] for k in ("proc", "ans", "both", "pass_rate")
                   if k in summary["judge"]}
    metrics.update(episodes=len(records), answered=summary["answered"], errors=summary["errors"])
    write_json_atomic(out / "metrics.json", metrics)
    write_json_atomic(out / "summary.json", summary)
    print(json.dumps({**metrics, "out": str(out), "run": summary["run"]}))
    return 0
