"""Running a sweep: each selected variant trains its unfinished stages and is evaluated unless its
metrics are current; failures are recorded and the sweep goes on; then the report."""
from __future__ import annotations

import time
import traceback
from typing import Callable, Sequence


from core.atomic_files import write_text_atomic
from core.recipe import redact
from core.run_dir import RunDir, parse_time
from core.secrets import redact_argv, redact_text

from .index import (enabled_stages, load_index, now_local, refresh_index, safe_index, save_index,
                    select)
from .spec import Sweep, Variant


def _all_done(recipe: dict) -> bool:
    run = RunDir.of(recipe)
    return all(run.stage(n).is_done() for n in enabled_stages(recipe))


def _eval_dir(recipe: dict, cfg: dict):
    return RunDir.of(recipe).eval(cfg.get("out_dir"))


def eval_is_current(recipe: dict, cfg: dict) -> bool:
    """Every test set's metrics exist, finished after every stage did (the times the run directory
    records), and were made with this test set, limit, decoding length and mode."""
    from evaluation.steps.teacher_forced import StaticEvaluation, test_set_source
    settings = StaticEvaluation.from_node(cfg)
    run, out = RunDir.of(recipe), _eval_dir(recipe, cfg)
    done_times = [run.stage(n).finished() for n in enabled_stages(recipe) if run.stage(n).is_done()]
    for name, test_set in settings.test_sets.items():
        inf = (out.read_metrics(name) or {}).get("inference")
        if not isinstance(inf, dict):
            return False
        finished = parse_time(inf.get("finished"))
        if finished is None or any(t is None or t > finished for t in done_times):
            return False
        decoding = inf.get("decoding") or {}
        team = settings.team
        if (inf.get("references") != test_set_source(test_set) or inf.get("limit") != settings.limit
                or decoding.get("requested_max_new_tokens") != team.max_new_tokens
                or bool(decoding.get("do_sample")) != team.do_sample):
            return False
        if team.mode != "auto" and inf.get("mode") != team.mode:
            return False
    return True


def recipe_drift(recipe: dict) -> list[str]:
    """Keys where the run directory's saved recipe differs from `recipe` (training keys)."""
    return RunDir.of(recipe).recipe_drift(recipe)


def _eval_stamps(recipe: dict, cfg: dict | None) -> dict:
    """{test set: the recorded end time of its metrics' inference}."""
    if cfg is None:
        return {}
    out = _eval_dir(recipe, cfg)
    return {n: ((out.read_metrics(n) or {}).get("inference") or {}).get("finished")
            for n, f in (cfg.get("test_sets") or {}).items() if f}


def _eval_seconds_since(recipe: dict, cfg: dict | None, before: dict) -> float:
    """Inference seconds of the metrics files (re)written since `before` (by the stage runner)."""
    total = 0.0
    out = _eval_dir(recipe, cfg) if cfg is not None else None
    for name, stamp in _eval_stamps(recipe, cfg).items():
        if stamp is not None and before.get(name) != stamp:
            total += float(((out.read_metrics(name) or {}).get("inference") or {}).get("seconds") or 0)
    return total


def run_variant(v: Variant, entry: dict, save: Callable[[], None], log=print) -> None:
    """Train (unfinished stages) and evaluate (unless current) one variant, updating `entry`."""
    recipe = v.recipe
    stages = enabled_stages(recipe)
    entry.update(error=None, started=now_local())
    if _all_done(recipe):
        drift = recipe_drift(recipe)
        if drift:
            msg = (f"the recipe differs from the one {v.run_dir} was trained with at "
                   f"{', '.join(drift[:5])}{' ...' if len(drift) > 5 else ''}; the finished stages "
                   "are kept (remove the run directory to retrain)")
            log(f"[sweep] {v.name}: warning: {msg}")
            entry["warning"] = msg
        else:
            entry.pop("warning", None)
        log(f"[sweep] {v.name}: all {len(stages)} stage(s) finished; not training")
    else:
        entry["status"] = "training"
        save()
        from pipeline.stage_runner import run_recipe  # heavy imports only when training
        log(f"[sweep] {v.name}: training {', '.join(stages)} in {v.run_dir}")
        before = _eval_stamps(recipe, v.evaluate)
        t0 = time.perf_counter()
        eval_s = 0.0
        try:
            # the stage runner trains, then runs the recipe's `evaluate` node (the sweep's settings)
            ran = run_recipe(recipe)
        finally:  # summed over invocations: an interrupted variant resumes its stages
            eval_s = _eval_seconds_since(recipe, v.evaluate, before)
            entry["train_seconds"] = round((entry.get("train_seconds") or 0)
                                           + time.perf_counter() - t0 - eval_s, 1)
        if eval_s:
            entry["eval_seconds"] = round(eval_s, 1)
        entry["trained_stages"] = ran
    entry["status"] = "trained"
    save()
    cfg = v.evaluate
    if cfg is None:
        entry["status"] = "done"
        entry["finished"] = now_local()
        return
    if eval_is_current(recipe, cfg):
        log(f"[sweep] {v.name}: evaluation is up to date ({_eval_dir(recipe, cfg).path}); skipping")
    else:
        from evaluation.steps.teacher_forced import evaluate_run
        entry["status"] = "evaluating"
        save()
        limit = "" if cfg.get("limit") is None else f" (first {cfg['limit']} steps)"
        log(f"[sweep] {v.name}: evaluating on {', '.join(cfg.get('test_sets') or {})}{limit}")
        t0 = time.perf_counter()
        res = evaluate_run(recipe, cfg)
        entry["eval_seconds"] = round(time.perf_counter() - t0, 1)
        entry["mode"] = res["mode"]
    _record_metrics(recipe, cfg, entry)
    entry["status"] = "done"
    entry["finished"] = now_local()


def _record_metrics(recipe: dict, cfg: dict, entry: dict) -> None:
    from evaluation.steps.metrics import STEP_METRICS
    from evaluation.steps.teacher_forced import StaticEvaluation
    out = _eval_dir(recipe, cfg)
    entry["metrics"] = {}
    for name in StaticEvaluation.from_node(cfg).test_sets:
        data = out.read_metrics(name)
        if data is not None:
            entry["metrics"][name] = {m: data.get(m) for m, _ in STEP_METRICS} | {"n_steps": data.get("n_steps")}
            entry.setdefault("mode", (data.get("inference") or {}).get("mode"))


def run_sweep(sweep: Sweep, only: Sequence[str] | None = None, report_only: bool = False,
              fail_fast: bool = False, log=print) -> int:
    """Run the (selected) variants one after the other, then write the report. Returns 0 when
    every selected variant finished, 1 when some failed."""
    chosen = select(sweep, only)
    sweep.out.mkdir(parents=True, exist_ok=True)
    index = refresh_index(sweep, load_index(sweep))
    save = lambda: save_index(sweep, index)  # noqa: E731
    save()
    failed = []
    t_all = time.perf_counter()
    if not report_only:
        for i, v in enumerate(chosen, 1):
            entry = index["variants"][v.name]
            log(f"[sweep] ({i}/{len(chosen)}) {v.name}")
            try:
                run_variant(v, entry, save, log)
            except KeyboardInterrupt:
                entry["status"] = "interrupted"
                save()
                raise
            except Exception as exc:  # noqa: BLE001 - recorded; the sweep goes on
                entry.update(status="failed", error=f"{type(exc).__name__}: {exc}", finished=now_local())
                tb = sweep.out / "logs" / f"{v.name}.traceback.txt"
                write_text_atomic(tb, redact_text(traceback.format_exc()))
                entry["traceback"] = str(tb)
                log(f"[sweep] {v.name}: FAILED: {type(exc).__name__}: {exc} (traceback: {tb})")
                failed.append(v.name)
                if fail_fast:
                    save()
                    break
            save()
        index["last_run"] = {"finished": now_local(), "seconds": round(time.perf_counter() - t_all, 1),
                             "variants": [v.name for v in chosen], "failed": failed}
        save()
    if sweep.report.get("enabled", True):
        write_sweep_report(sweep, index, log=log)
    return 1 if failed else 0


def write_sweep_report(sweep: Sweep, index: dict, log=print) -> dict:
    from evaluation.report import write_report
    safe = safe_index(index)
    runs = [safe["variants"][v.name] for v in sweep.variants]
    title = sweep.report.get("title") or f"Sweep {sweep.name}"
    wb = dict(sweep.report.get("wandb") or {})
    if wb.get("enabled", True) and not wb.get("project"):
        wb["project"] = ((sweep.variants[0].recipe.get("logger") or {}).get("wandb") or {}).get("project")
    meta = {"sweep": sweep.name, "spec": str(sweep.spec_path), "description": sweep.description,
            "base": sweep.base, "overrides": redact_argv(sweep.overrides),
            "command_line": redact_argv(sweep.extra_recipes + sweep.cli_overrides), "grid": sweep.grid,
            "evaluate": redact(sweep.evaluate), "last_run": index.get("last_run"),
            "reference": sweep.report.get("reference")}
    paths = write_report(runs, sweep.out, title=title, meta=meta, wandb=wb, group=sweep.name, log=log)
    log(f"[sweep] report: {paths['markdown']} and {paths['html']}")
    return paths
