"""Static (teacher-forced) inference over evaluation steps, as in the α-UMi paper's Table 1.

Every step is the gold history before a gold planner turn (see steps.py). α-UMi mode: the planner
decides; the *predicted* planner turn is appended to the gold history, then the caller (predicted
call) or the summarizer (predicted conclusion) produces the rest. Single mode: the backbone plays
all three roles with its own system prompt (or, with a template whose `step_targets` merge a
step, produces the whole step in one output). Prompts are rendered with the recipe's template
(`PromptTemplate`, as training renders them), generation is batched and greedy by default.

A run directory (core.run_dir.RunDir) holds one Hugging Face export per stage; the role of each
is read from the run's saved recipe (its stages), else from the stage's DONE marker, else from
the folder name. Mode `auto`: alpha_umi when planner, caller and summarizer exports exist, else
single with the backbone. The template comes from `--recipe FILE...` when given, else from the
recipe saved in the run directory (the composed recipe the stage runner saves).

Outputs (atomic writes, in the run's eval folder unless `out_dir` says otherwise): predictions
(id, plan, thought, action, arguments, answer, raw outputs per role) and metrics
(`evaluation.steps.metrics.score` plus an `inference` block with the mode, models, decoding settings,
timings and the start and end time).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

from core.recipe import evaluate_defaults
from core.run_dir import EvalDir, RunDir, now
from core.vocabulary import TURN_ROLES
from prompting.prompt_template import PromptTemplate
from trajectories.trajectory import write_jsonl_atomic

from .. import EvaluationError

from ..agent.team import Team, build_team
from ..agent.exports import (add_run_args, find_exports, generation_lengths, load_run_recipe,
                          resolve_mode, role_map, warn_training_overlap)
from .metrics import score
from .extract import load_steps

EVAL_DEFAULTS = evaluate_defaults()  # the recipe schema's `evaluate:` node is their one definition


# ----- inference -----------------------------------------------------------------------------
def step_trajectory(step: Mapping) -> dict:
    """The gold context of a step as a (partial) canonical trajectory."""
    tools = step.get("tool_specs") or [{"name": n, "description": "", "parameters": {}}
                                       for n in step.get("tools", [])]
    return {"id": step.get("trajectory_id") or step["id"], "tools": tools,
            "instruction": step["instruction"], "turns": list(step.get("history") or [])}


def _release(role, *keep) -> None:
    if all(role is not k for k in keep) and hasattr(role, "release"):
        role.release()


def predict_steps(team: Team, steps: Sequence[Mapping], log=None) -> tuple[list[dict], dict]:
    """Predictions for steps (one dict per step, in order) and per-phase timings."""
    trajs = [step_trajectory(s) for s in steps]
    timing: dict[str, dict] = {}

    def phase(name, fn, items):
        t0 = time.perf_counter()
        res = fn(items) if items else []
        timing[name] = {"n": len(items), "seconds": round(time.perf_counter() - t0, 3)}
        last = getattr(team.roles[name], "last", None) if items else None
        if last:  # generations that ran out of max_new_tokens before EOS
            timing[name]["hit_limit"] = sum(1 for g in last if g is not None and not g.finished)
        if log and items:
            hit = timing[name].get("hit_limit")
            log(f"{name}: {len(items)} prompts in {timing[name]['seconds']:.1f} s"
                + (f", {hit} hit the generation limit" if hit else ""))
        return res

    plans = phase("planner", team.plan, trajs)
    preds = [{"id": s["id"], "plan": p.planner.plan, "thought": p.planner.thought, "action": None,
              "arguments": None, "answer": None,
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
        outs = phase("caller", team.call, [_extend(trajs[i], plans[i].turn) for i in calls])
        for i, out in zip(calls, outs):
            preds[i]["action"], preds[i]["arguments"] = out.name, out.arguments
            preds[i]["raw"]["caller"] = out.raw
        _release(team.caller, team.summarizer)
        concl = [i for i, p in enumerate(plans) if p.planner.decision == "conclusion"]
        outs = phase("summarizer", team.conclude, [_extend(trajs[i], plans[i].turn) for i in concl])
        for i, (answer, raw) in zip(concl, outs):
            preds[i]["answer"] = answer
            preds[i]["raw"]["summarizer"] = raw
    for role in (team.planner, team.caller, team.summarizer):
        _release(role)
    return preds, timing


def _extend(traj: dict, turn: dict) -> dict:
    return {**traj, "turns": traj["turns"] + [turn]}


def evaluate_steps(team: Team, steps: list[dict], out_dir, suffix: str = "", meta: dict | None = None,
                   log=None) -> dict:
    """Predict, score and write the predictions and metrics files for `suffix` in `out_dir`."""
    started = now()
    t0 = time.perf_counter()
    preds, timing = predict_steps(team, steps, log)
    elapsed = time.perf_counter() - t0
    metrics = score(steps, {p["id"]: p for p in preds})
    metrics["generation_hit_limit"] = {r: t.get("hit_limit", 0) for r, t in timing.items()}
    metrics["inference"] = {**(meta or {}), "timing": timing, "seconds": round(elapsed, 3),
                            "steps_per_second": round(len(steps) / elapsed, 3) if elapsed else None}
    eval_dir = EvalDir(out_dir)
    write_jsonl_atomic(eval_dir.predictions_file(suffix), preds)
    return eval_dir.write_metrics(metrics, suffix, started=started, finished=now())


def run_static(run_dir, references, *, recipe: Mapping | None = None,
               recipe_files: Sequence[str] | None = None, ood_references=None, mode: str = "auto",
               limit: int | None = None, batch_size: int = 8, max_new_tokens=None,
               do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
               seed: int | None = 0, device: str | None = None, dtype: str | None = None,
               max_prompt_tokens: int | None = None, models: Mapping[str, str] | None = None,
               out_dir=None, log=None, held_in: list[dict] | None = None) -> dict:
    """Static evaluation of a run on `references` (and `held_in` steps, `ood_references`).
    Returns {"mode", "out_dir", "metrics", "metrics_held_in", "metrics_ood"}."""
    run_dir = Path(run_dir)
    if references is None:
        raise EvaluationError("static evaluation: no references (test set) given")
    if recipe is None:
        recipe = load_run_recipe(run_dir, recipe_files)
    try:
        template = PromptTemplate(recipe["template"])
    except ValueError as exc:
        raise EvaluationError(f"recipe template: {exc}") from None
    exports = {**find_exports(run_dir, recipe), **dict(models or {})}
    mode = resolve_mode(mode, exports, run_dir)
    data_cfg = recipe.get("data") or {}
    lengths, longest = generation_lengths(max_new_tokens, exports, mode)
    short = {t: (lengths[t], longest[t]) for t in lengths if longest[t] and lengths[t] < longest[t]}
    if short and log:
        log("warning: generation shorter than the longest training target for "
            + ", ".join(f"{t} ({n} < {m} tokens)" for t, (n, m) in short.items()))
    team = build_team(template, mode, exports,
                      add_bos=(recipe.get("tokenizer") or {}).get("add_bos", True),
                      max_new_tokens=lengths, context_reserve=data_cfg.get("context_reserve"), batch_size=batch_size, do_sample=do_sample,
                      temperature=temperature, top_p=top_p, seed=seed, device=device, dtype=dtype,
                      max_prompt_tokens=max_prompt_tokens, max_length=data_cfg.get("max_length"))
    used = {r: exports[r] for r in (TURN_ROLES if mode == "alpha_umi" else ("backbone",))}
    meta = {"mode": mode, "run": str(run_dir), "models": used, "template": template.name,
            "decoding": {"do_sample": do_sample, "max_new_tokens": lengths,
                         "requested_max_new_tokens": max_new_tokens,
                         "longest_training_target": longest,
                         **({"temperature": temperature, "top_p": top_p, "seed": seed}
                            if do_sample else {})},
            "batch_size": batch_size, "limit": limit}
    out_dir = RunDir(run_dir).eval(out_dir).path
    result = {"mode": mode, "out_dir": str(out_dir), "metrics": None, "metrics_ood": None,
              "metrics_held_in": None}
    for refs, suffix, key in ((references, "", "metrics"), (held_in, "_held_in", "metrics_held_in"),
                              (ood_references, "_ood", "metrics_ood")):
        if refs is None or (isinstance(refs, list) and not refs):
            continue
        # a test set file, or already built steps (the held-in slice of the training data)
        steps = list(refs) if isinstance(refs, list) else load_steps(refs)
        refs = "the held-in slice of the training data" if isinstance(refs, list) else refs
        if limit is not None:
            steps = steps[:int(limit)]
        if log:
            log(f"{refs}: {len(steps)} steps, mode {mode}")
        overlap = [] if key == "metrics_held_in" else warn_training_overlap(recipe, refs, log)
        result[key] = evaluate_steps(team, steps, out_dir, suffix,
                                     {**meta, "references": str(refs), "training_overlap": overlap}, log)
    return result


def evaluate_run(recipe: dict, eval_cfg: dict) -> dict:
    """The `evaluate:` stage of a recipe: writes the run's eval predictions and metrics (and their
    out-of-domain twins for `ood_references`). `eval_cfg` keys:
    references, ood_references, limit, batch_size, max_new_tokens, mode (auto / alpha_umi /
    single), do_sample, temperature, top_p, seed, device, dtype, max_prompt_tokens,
    models ({role: export path} overrides), out_dir."""
    cfg = {**EVAL_DEFAULTS, **{k: v for k, v in dict(eval_cfg or {}).items() if k != "enabled"}}
    unknown = sorted(set(cfg) - set(EVAL_DEFAULTS))
    if unknown:
        raise EvaluationError(f"evaluate: unknown key(s) {', '.join(unknown)} "
                              f"(known: {', '.join(EVAL_DEFAULTS)})")
    run_dir = Path(recipe["run"]["dir"])
    held_in = cfg["held_in_references"]
    if held_in == "val_split":
        held_in = held_in_steps(recipe)
    elif held_in is not None:
        held_in = load_steps(held_in)
    return run_static(run_dir, cfg["references"], recipe=recipe, ood_references=cfg["ood_references"],
                      held_in=held_in,
                      mode=cfg["mode"] or "auto", limit=cfg["limit"], batch_size=cfg["batch_size"],
                      max_new_tokens=cfg["max_new_tokens"], do_sample=cfg["do_sample"],
                      temperature=cfg["temperature"], top_p=cfg["top_p"], seed=cfg["seed"],
                      device=cfg["device"], dtype=cfg["dtype"],
                      max_prompt_tokens=cfg["max_prompt_tokens"], models=cfg["models"],
                      out_dir=RunDir(run_dir).eval(cfg["out_dir"]).path,
                      log=lambda m: print(f"[evaluate] {m}", file=sys.stderr, flush=True))


def held_in_steps(recipe: Mapping) -> list[dict]:
    """Steps of the training data's validation split (dialogs of the training distribution that
    the run did not train on): the held-in slice."""
    from datamodules.tool_use_datamodule import ToolUseDataModule
    from .extract import trajectory_steps
    data = recipe["data"]
    dm = ToolUseDataModule(sources=data["sources"], role="backbone", template=recipe["template"],
                           val_fraction=data.get("val_fraction", 0.1),
                           seed=data.get("seed", recipe["run"].get("seed", 42)))
    trajs = [t for t in dm.load_split_trajectories()["val"]
             if not t.get("meta", {}).get("reference_only")]
    return [s for i, t in enumerate(trajs) for s in trajectory_steps(t, f"held_in-{i:04d}")]


# ----- command line (evaluate.py static) -----------------------------------------------------


def add_static_args(p) -> None:
    add_run_args(p)
    p.add_argument("--references", required=True, help="test set (any form load_steps reads)")
    p.add_argument("--ood-references", help="an out-of-domain test set (-> metrics_ood.json)")
    p.add_argument("--limit", type=int, help="only the first N steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", help="output folder (default: the run's eval folder)")
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)


def run_static_cli(args) -> int:
    res = run_static(args.run_dir, args.references, recipe_files=args.recipe,
                     ood_references=args.ood_references, mode=args.mode, limit=args.limit,
                     batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                     do_sample=args.do_sample, temperature=args.temperature, top_p=args.top_p,
                     seed=args.seed, device=args.device, dtype=args.dtype,
                     max_prompt_tokens=args.max_prompt_tokens,
                     models=role_map(args.model, "--model"), out_dir=args.out,
                     log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(res, indent=2))
    return 0
