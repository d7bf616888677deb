"""What a report shows, read from the run directories: metrics rows, stages, loss curves, and the
results table (a Table model) with a footnote on every blank cell."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping, Sequence

from core.run_dir import RunDir

from .. import EvaluationError
from ..steps.metrics import STEP_METRICS
from ..tables import Table
from .results_table import load_run, set_lines, table_data

METRIC_NOTES = {
    "plan_acc": "no evaluation step",
    "hallu": "no evaluation step",
    "act_em": "no reference step is a tool call, so there is no action to match",
    "arg_f1": "no reference step is a tool call, so there are no arguments to score",
    "rouge_l": "no reference step is a conclusion, so there is no answer to score",
}


def run_metrics(run: Mapping, test_set: str, part: str = "steps") -> Mapping:
    """A gathered run's metrics of one test set: its step metrics, or its episode ones ({} if none)."""
    return (((run["row"].get("sets") or {}).get(test_set)) or {}).get(part) or {}


def read_losses(csv_path) -> dict[str, list[tuple[int, float]]]:
    """{column: [(step, value), ...]} for every loss column of a Lightning CSV log."""
    path = Path(csv_path)
    out: dict[str, list[tuple[int, float]]] = {}
    if not path.is_file():
        return out
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                step = int(float(row.get("step") or "nan"))
            except ValueError:
                continue
            for key, value in row.items():
                if not key or "loss" not in key or value in (None, ""):
                    continue
                try:
                    v = float(value)
                except ValueError:
                    continue
                if math.isfinite(v):
                    out.setdefault(key, []).append((step, v))
    for key in out:
        out[key].sort()
    return out


def _saved_recipe(run_dir) -> dict | None:
    try:
        return RunDir(run_dir).load_recipe()
    except ValueError:
        return None


def run_stages(run: Mapping) -> list[dict]:
    """[{name, role, init_from}] of a run: given, else from the run's saved recipe, else the
    stage folders holding a CSV log."""
    if run.get("stages"):
        return [dict(s) for s in run["stages"]]
    recipe = _saved_recipe(run["run_dir"])
    if recipe is not None:
        from core.recipe import stage_order
        try:
            stages = {n: s for n, s in (recipe.get("stages") or {}).items() if s.get("enabled", True)}
            return [{"name": n, "role": stages[n].get("role", n), "init_from": stages[n].get("init_from")}
                    for n in stage_order(stages)]
        except Exception:  # noqa: BLE001 - fall back to the folders
            pass
    return [{"name": s.name, "role": s.name, "init_from": None} for s in RunDir(run["run_dir"]).logged_stages()]


def gather(runs: Sequence[Mapping]) -> list[dict]:
    """Each run with its metrics row (load_run), stages and loss curves."""
    out = []
    for run in runs:
        r = dict(run)
        r.setdefault("name", Path(r["run_dir"]).name)
        try:
            row = load_run(str(r["run_dir"]), r["name"])
        except EvaluationError:
            row = {"name": r["name"], "sets": {}, "gentool": None}
        r["row"] = row
        r["stages"] = run_stages(r)
        for s in r["stages"]:
            s["losses"] = read_losses(RunDir(r["run_dir"]).stage(s["name"]).csv_log)
        if r.get("data_fraction") is None:
            r["data_fraction"] = ((_saved_recipe(r["run_dir"]) or {}).get("data") or {}).get("data_fraction")
        out.append(r)
    return out


def blank_reasons(run: Mapping, test_set: str | None) -> dict[str, str]:
    """{metric: why it is blank} for one run and test set (None: the run has none)."""
    metrics = ((run["row"].get("sets") or {}).get(test_set) or {}).get("steps")
    if metrics is None:
        status = run.get("status")
        rd = RunDir(run["run_dir"])
        if test_set is not None:
            why = f"no step evaluation of this test set ({rd.eval().metrics_file(test_set).relative_to(rd.path).as_posix()} missing)"
        elif status == "failed":
            why = f"the run failed ({run.get('error') or 'see the sweep log'})"
        elif status in (None, "done"):
            why = f"not evaluated (no {rd.eval().path.relative_to(rd.path).as_posix()}/<test set>/metrics.json in the run directory)"
        else:
            why = f"not evaluated yet (status: {status})"
        return {m: why for m, _ in STEP_METRICS}
    reasons = {}
    n = metrics.get("n_steps")
    counts = (metrics.get("counts") or {}).get("reference") or {}
    for m, _ in STEP_METRICS:
        if metrics.get(m) is None:
            why = METRIC_NOTES[m]
            if n is not None:
                why = f"undefined: {why} among the {n} evaluated steps"
                if counts:
                    why += " (reference plans: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"
            reasons[m] = why
    return reasons


def build_table(runs: Sequence[Mapping]) -> dict:
    """The results table as a Table model with a footnote on every blank cell, plus its parts
    ({table, columns, rows, notes, cell_notes}) for results.json and W&B."""
    rows = [r["row"] for r in runs]
    columns, data = table_data(rows)
    notes: list[str] = []
    cell_notes: dict[tuple[int, int], int] = {}
    for line, (i, test_set) in enumerate(set_lines(rows)):
        reasons = blank_reasons(runs[i], test_set)
        for mi, (m, _label) in enumerate(STEP_METRICS):
            col = 2 + mi
            if m not in reasons or data[line][col] is not None:
                continue
            if reasons[m] not in notes:
                notes.append(reasons[m])
            cell_notes[(line, col)] = notes.index(reasons[m]) + 1
    return {"table": Table(columns, data, numeric=True, notes=cell_notes), "columns": columns,
            "rows": data, "notes": notes, "cell_notes": cell_notes}
