"""Static (teacher-forced) inference over evaluation steps, as in the α-UMi paper's Table 1.

Every step is the gold history before a gold planner turn (see extract.py). α-UMi mode: the
planner decides; the *predicted* planner turn is appended to the gold history, then the caller
(predicted call) or the summarizer (predicted conclusion) produces the rest. Single mode: the
backbone plays all three roles with its own system prompt (or, with a template whose
`step_targets` merge a step, produces the whole step in one output). Prompts are rendered with the
recipe's template (`PromptTemplate`, as training renders them), generation is batched and greedy
by default.

A run directory (core.run_dir.RunDir) holds one Hugging Face export per stage (agent/exports.py
finds them). Each test set is evaluated into its own folder of the run's eval folder (EvalDir):
predictions (id, plan, thought, action, arguments, answer, raw outputs per role) and metrics
(`evaluation.steps.metrics.score` plus an `inference` block with the mode, models, decoding
settings, timings and the start and end time), both written atomically.
"""
from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

from core.dir_lock import DirLock
from core.run_dir import EvalDir, RunDir, now
from core.stage_config import shared_settings
from core.vocabulary import VAL_SPLIT
from trajectories.trajectory import write_jsonl_atomic

from .. import EvaluationError
from ..agent.exports import warn_training_overlap
from ..agent.setup import TeamSettings, evaluate_settings, run_team
from ..agent.team import Team
from .extract import load_steps, trajectory_steps
from .metrics import score

@dataclass(frozen=True)
class StaticEvaluation:
    """A teacher-forced evaluation: the test sets (name -> file, or val_split), the first `limit`
    steps of each, the output folder and the team's settings."""
    test_sets: Mapping[str, str]
    limit: int | None
    out_dir: str | None
    team: TeamSettings

    @classmethod
    def from_node(cls, node: Mapping | None) -> "StaticEvaluation":
        """From a recipe's `evaluate:` node (or the same keys from the command line)."""
        cfg = evaluate_settings(node)
        sets = {name: path for name, path in cfg["test_sets"].items() if path is not None}
        return cls(sets, cfg["limit"], cfg["out_dir"], TeamSettings.of(cfg))


# ----- inference -----------------------------------------------------------------------------
def step_trajectory(step: Mapping) -> dict:
    """The gold context of a step as a (partial) canonical trajectory."""
    tools = step.get("tool_specs") or [{"name": n, "description": "", "parameters": {}}
                                       for n in step.get("tools", [])]
    return {"id": step.get("trajectory_id") or step["id"], "tools": tools,
            "instruction": step["instruction"], "turns": list(step.get("history") or [])}


def _release(member, *keep) -> None:
    if all(member is not k for k in keep) and hasattr(member, "release"):
        member.release()


def predict_steps(team: Team, steps: Sequence[Mapping], log=None) -> tuple[list[dict], dict]:
    """Predictions for steps (one dict per step, in order) and per-phase timings."""
    trajs = [step_trajectory(s) for s in steps]
    timing: dict[str, dict] = {}

    def phase(role, items):
        t0 = time.perf_counter()
        res = team.act(role, items) if items else []
        timing[role] = {"n": len(items), "seconds": round(time.perf_counter() - t0, 3)}
        last = getattr(team.members[role], "last", None) if items else None
        if last:  # generations that ran out of max_new_tokens before EOS
            timing[role]["hit_limit"] = sum(1 for g in last if g is not None and not g.finished)
        if log and items:
            hit = timing[role].get("hit_limit")
            log(f"{role}: {len(items)} prompts in {timing[role]['seconds']:.1f} s"
                + (f", {hit} hit the generation limit" if hit else ""))
        return res

    plans = phase("planner", trajs)
    preds = [{"id": s["id"], "plan": p.planner.decision, "thought": p.planner.thought,
              "action": None, "arguments": None, "answer": None,
              "raw": {"planner": p.planner.raw, "caller": None, "summarizer": None}}
             for s, p in zip(steps, plans)]
    _release(team.planner, team.caller, team.summarizer)
    if team.merged:
        for pred, p in zip(preds, plans):
            if p.call is not None:
                pred["action"], pred["arguments"] = p.call.name, p.call.arguments
            if p.answer is not None:
                pred["answer"] = p.answer
    else:
        calls = [i for i, p in enumerate(plans) if p.planner.decision == "call"]
        outs = phase("caller", [_extend(trajs[i], plans[i].turn) for i in calls])
        for i, out in zip(calls, outs):
            preds[i]["action"], preds[i]["arguments"] = out.name, out.arguments
            preds[i]["raw"]["caller"] = out.raw
        _release(team.caller, team.summarizer)
        concl = [i for i, p in enumerate(plans) if p.planner.decision == "conclusion"]
        outs = phase("summarizer", [_extend(trajs[i], plans[i].turn) for i in concl])
        for i, (answer, raw) in zip(concl, outs):
            preds[i]["answer"] = answer
            preds[i]["raw"]["summarizer"] = raw
    for member in team.members.values():
        _release(member)
    return preds, timing


def _extend(traj: dict, turn: dict) -> dict:
    return {**traj, "turns": traj["turns"] + [turn]}


def evaluate_steps(team: Team, steps: list[dict], eval_dir: EvalDir, name: str,
                   meta: dict | None = None, log=None) -> dict:
    """Predict, score and write test set `name`'s predictions and metrics in `eval_dir`."""
    started = now()
    t0 = time.perf_counter()
    preds, timing = predict_steps(team, steps, log)
    elapsed = time.perf_counter() - t0
    metrics = score(steps, {p["id"]: p for p in preds})
    metrics["generation_hit_limit"] = {r: t.get("hit_limit", 0) for r, t in timing.items()}
    metrics["inference"] = {**(meta or {}), "timing": timing, "seconds": round(elapsed, 3),
                            "steps_per_second": round(len(steps) / elapsed, 3) if elapsed else None}
    write_jsonl_atomic(eval_dir.predictions_file(name), preds)
    return eval_dir.write_metrics(metrics, name, started=started, finished=now())


def run_static(run_dir, recipe: Mapping, settings: StaticEvaluation, *,
               endpoints: Mapping[str, Mapping] | None = None, eos_text: str | None = None,
               log=None) -> dict:
    """Teacher-forced evaluation of a run on each of `settings.test_sets` (name -> file, or
    `val_split`: the held-in dialogs of `recipe`'s data). Returns {"mode", "out_dir",
    "metrics": {name: metrics}}."""
    if not settings.test_sets:
        raise EvaluationError("static evaluation: no test set given (evaluate.test_sets, or "
                              "--references FILE)")
    eval_dir = RunDir(run_dir).eval(settings.out_dir)
    with ExitStack() as locks:  # one process per test set's folder: a second one stops, naming the first
        for name in settings.test_sets:
            locks.enter_context(DirLock(eval_dir.test_set(name), what=f"a static evaluation of {name}"))
        return _run_static(run_dir, recipe, settings, eval_dir, endpoints, eos_text, log)


def _run_static(run_dir, recipe, settings, eval_dir, endpoints, eos_text, log) -> dict:
    team, meta = run_team(run_dir, recipe, settings.team, endpoints=endpoints, eos_text=eos_text, log=log)
    result = {"mode": meta["mode"], "out_dir": str(eval_dir.path), "metrics": {}}
    for name, test_set in settings.test_sets.items():
        held_in = test_set == VAL_SPLIT
        steps = held_in_steps(recipe) if held_in else load_steps(test_set)
        source = test_set_source(test_set)
        if settings.limit is not None:
            steps = steps[:int(settings.limit)]
        if log:
            log(f"{name} ({source}): {len(steps)} steps, mode {meta['mode']}")
        overlap = [] if held_in else warn_training_overlap(recipe, test_set, log)
        result["metrics"][name] = evaluate_steps(
            team, steps, eval_dir, name, {**meta, "limit": settings.limit, "test_set": name,
                                          "references": source, "training_overlap": overlap}, log)
    return result


def test_set_source(test_set: str) -> str:
    """What a test set's metrics record as their `references`."""
    return "the held-in dialogs of the training data" if test_set == VAL_SPLIT else str(test_set)


def evaluate_run(recipe: dict, node: Mapping | None = None, only: Sequence[str] | None = None) -> dict:
    """The `evaluate:` stage of a recipe (or `node` in its place): each of its test sets (or those
    named in `only`) into the run's eval folder."""
    settings = StaticEvaluation.from_node(recipe.get("evaluate") if node is None else node)
    if only is not None:
        settings = replace(settings, test_sets={n: f for n, f in settings.test_sets.items() if n in only})
    return run_static(RunDir.of(recipe).path, recipe, settings,
                      log=lambda m: print(f"[evaluate] {m}", file=sys.stderr, flush=True))


def held_in_steps(recipe: Mapping) -> list[dict]:
    """Steps of the training data's validation split (dialogs of the training distribution that
    the run did not train on): the held-in slice."""
    from datamodules.tool_use_datamodule import ToolUseDataModule
    data = shared_settings(recipe, "data")
    dm = ToolUseDataModule(sources=data["sources"], role="backbone", template=recipe["template"],
                           val_fraction=data["val_fraction"], seed=data["seed"],
                           add_bos=shared_settings(recipe, "tokenizer")["add_bos"])
    trajs = [t for t in dm.load_split_trajectories()["val"]
             if not t.get("meta", {}).get("reference_only")]
    return [s for i, t in enumerate(trajs) for s in trajectory_steps(t, f"held_in-{i:04d}")]
