"""A Markdown results table like the paper's Table 1: one line per run and test set, the step
metrics then the whole-episode metrics, then GenTool's table for runs with GenTool metrics.

A run row is {"name", "sets": {test set: {"steps": metrics or None, "episodes": metrics or None}},
"gentool": GenTool metrics or None}. A run is given as a run directory (its eval folder's test
sets, core.run_dir.EvalDir), an eval folder itself, one metrics JSON file, or NAME=PATH.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from core.run_dir import EvalDir, RunDir

from .. import EvaluationError
from ..gentool.table import COLUMNS as GENTOOL_COLUMNS, SCENARIO_SHORT, cell as gentool_cell
from ..steps.metrics import STEP_METRICS
from ..tables import BLANK, Table, to_markdown

# Whole-episode metrics (`evaluate.py episodes` on a test set), after the step ones.
EPISODE_METRICS = (("proc", "Proc."), ("ans", "Ans."), ("both", "Proc.&Ans."), ("pass_rate", "Pass rate"))


def load_run(spec: str, name: str | None = None) -> dict:
    path = Path(spec)
    if "=" in spec and not path.exists():
        name_part, _, spec = spec.partition("=")
        name, path = name or name_part, Path(spec)
    if path.is_dir():
        folder = EvalDir(path) if EvalDir(path).test_sets() else RunDir(path).eval()
        default = (path.parent if RunDir.owning_eval(path) else path).resolve().name
        sets = {s: {"steps": _read_if(folder.metrics_file(s)), "episodes": _read_if(folder.episode_metrics_file(s))}
                for s in folder.test_sets()}
        gentool = folder.gentool_metrics_file()
        if not sets and not gentool.exists():
            raise EvaluationError(f"{path}: no evaluation metrics in it (no {folder.path}/<test set>/"
                                  f"metrics.json, no {gentool.name})")
        return {"name": name or default, "sets": sets, "gentool": _read_if(gentool)}
    if not path.exists():
        raise EvaluationError(f"{path}: no such metrics file or run directory")
    eval_dir = RunDir.owning_eval(path.parent.parent)  # RUN/eval/<test set>/metrics.json
    default = eval_dir.path.resolve().name if eval_dir else path.stem
    test_set = path.parent.name if eval_dir else path.stem
    return {"name": name or default, "sets": {test_set: {"steps": _read(path), "episodes": None}},
            "gentool": None}


def _read_if(path: Path) -> dict | None:
    return _read(path) if path.is_file() else None


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EvaluationError(f"{path}: expected a JSON object of metrics")
    return data


def load_runs(specs: list[str], names: list[str] | None = None) -> list[dict]:
    if names and len(names) != len(specs):
        raise EvaluationError(f"--names gives {len(names)} names for {len(specs)} runs")
    return [load_run(s, names[i] if names else None) for i, s in enumerate(specs)]


def set_lines(rows: list[dict]) -> list[tuple[int, str | None]]:
    """(row index, test set or None) of every table line: each run's test sets in its order, or
    one blank line for a run with none."""
    return [(i, s) for i, r in enumerate(rows) for s in (list(r.get("sets") or {}) or [None])]


def table_data(rows: list[dict]) -> tuple[list[str], list[list]]:
    """Column names and lines of values (None: blank); each episode metric (Proc., Ans., ...)
    only if some line has it."""
    lines = set_lines(rows)
    cell = lambda i, s, part: ((rows[i].get("sets") or {}).get(s) or {}).get(part) or {}  # noqa: E731
    episodes = [(m, label) for m, label in EPISODE_METRICS
                if any(cell(i, s, "episodes").get(m) is not None for i, s in lines)]
    columns = ["Run", "Test set"] + [label for _, label in STEP_METRICS] + [label for _, label in episodes]
    data = [[rows[i]["name"], s or BLANK] + [cell(i, s, "steps").get(m) for m, _ in STEP_METRICS]
            + [cell(i, s, "episodes").get(m) for m, _ in episodes] for i, s in lines]
    return columns, data


def results_table(rows: list[dict]) -> str:
    """The Table-1 metrics of the runs that have them, then GenTool's table (selection accuracy
    per scenario and the overall test metrics) for runs with GenTool metrics."""
    gentool = [r for r in rows if r.get("gentool")]
    alpha = [r for r in rows if r.get("sets") or not r.get("gentool")]
    out = to_markdown(Table(*table_data(alpha), numeric=True)) if alpha else ""
    if gentool:
        out += ("\n" if out else "") + gentool_runs_table(gentool)
    return out


def gentool_runs_table(rows: list[dict]) -> str:
    """One line per run: GenTool selection accuracy per scenario, then the overall test metrics."""
    columns = ["Run"] + [f"Sel. Acc {short}" for short in SCENARIO_SHORT.values()] + \
              [f"{label} (all)" for _, label in GENTOOL_COLUMNS]
    data = []
    for row in rows:
        test = (row.get("gentool") or {}).get("test") or {}
        data.append([str(row["name"])] + [gentool_cell((test.get(s) or {}).get("selection_acc"))
                                           for s in SCENARIO_SHORT]
                    + [gentool_cell((test.get("all") or {}).get(c)) for c, _ in GENTOOL_COLUMNS])
    return to_markdown(Table(columns, data, numeric=True))


def log_wandb(rows: list[dict], project: str | None = None, name: str | None = None) -> str:
    """Log the table as a wandb.Table (offline unless WANDB_MODE says otherwise) and return the
    run's folder. Only the table is logged: no config, no environment."""
    import wandb

    columns, data = table_data(rows)
    run = wandb.init(mode=os.environ.get("WANDB_MODE", "offline"),
                     project=project or os.environ.get("WANDB_PROJECT", "alpha-umi-eval"),
                     name=name, job_type="results_table",
                     dir=os.environ.get("WANDB_DIR"))  # per call: an earlier run in-process keeps its dir
    try:
        run.log({"results_table": wandb.Table(columns=columns, data=data)})
        return run.dir
    finally:
        run.finish()
