"""A Markdown results table like the paper's Table 1, from metrics JSON files.

A row is {"name", "in_domain": metrics or None, "out_of_domain": metrics or None, "gentool": GenTool
metrics or None}. A run is given as a metrics JSON file, a run directory whose eval folder
(core.run_dir.RunDir) holds the metrics (and optionally the out-of-domain metrics, episode metrics
and the GenTool four-scenario metrics, shown as a second table), an eval folder itself, or NAME=PATH.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from core.run_dir import EvalDir, RunDir

from .. import EvaluationError
from ..tables import Table, to_markdown

METRICS = (("plan_acc", "Plan ACC"), ("act_em", "Act. EM"), ("hallu", "Hallu."),
           ("arg_f1", "Arg. F1"), ("rouge_l", "Rouge-L"))
GROUPS = (("in_domain", "ID"), ("out_of_domain", "OOD"))
# Whole-episode metrics (evaluate.py episodes: one folder per config in the run's eval folder),
# after the step ones.
EPISODE_METRICS = (("proc", "Proc."), ("ans", "Ans."), ("both", "Proc.&Ans."), ("pass_rate", "Pass rate"))


def load_run(spec: str, name: str | None = None) -> dict:
    path = Path(spec)
    if "=" in spec and not path.exists():
        name_part, _, spec = spec.partition("=")
        name, path = name or name_part, Path(spec)
    if path.is_dir():
        folder = EvalDir(path) if EvalDir(path).metrics_file().exists() else RunDir(path).eval()
        ind, ood = folder.metrics_file(), folder.metrics_file("_ood")
        gentool = folder.gentool_metrics_file()
        default = (path.parent if RunDir.owning_eval(path) else path).resolve().name
        episodes = {k: v for f in folder.episode_metrics_files() for k, v in _read(f).items()}
        if not ind.exists() and not ood.exists() and not episodes and not gentool.exists():
            raise EvaluationError(f"{path}: no evaluation metrics in it ({ind}, {ood} or {gentool})")
        return {"name": name or default, "in_domain": _read(ind) if ind.exists() else None,
                "out_of_domain": _read(ood) if ood.exists() else None, "episodes": episodes,
                "gentool": _read(gentool) if gentool.exists() else None}
    if not path.exists():
        raise EvaluationError(f"{path}: no such metrics file or run directory")
    default = path.stem
    if RunDir.owning_eval(path.parent):  # a run's eval metrics file: name it after the run
        default = path.parent.parent.resolve().name
    return {"name": name or default, "in_domain": _read(path), "out_of_domain": None}


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


def table_data(rows: list[dict]) -> tuple[list[str], list[list]]:
    """Column names and rows of values (None: blank); OOD columns only if some row has them, and
    each episode metric (Proc., Ans., ...) only if some row has it."""
    groups = [g for g in GROUPS if g[0] == "in_domain" or any(r.get(g[0]) for r in rows)]
    grouped = len(groups) > 1
    columns = ["Run"] + [f"{label} ({tag})" if grouped else label
                         for _, tag in groups for _, label in METRICS]
    episodes = [(m, label) for m, label in EPISODE_METRICS
                if any(_episode_value(r, m) is not None for r in rows)]
    columns += [label for _, label in episodes]
    data = []
    for row in rows:
        values = [row["name"]]
        for key, _ in groups:
            metrics = row.get(key) or {}
            values += [metrics.get(m) for m, _ in METRICS]
        values += [_episode_value(row, m) for m, _ in episodes]
        data.append(values)
    return columns, data


def _episode_value(row: dict, metric: str):
    """From the run's episode metrics, or from a metrics file given directly."""
    value = (row.get("episodes") or {}).get(metric)
    return value if value is not None else (row.get("in_domain") or {}).get(metric)


def results_table(rows: list[dict]) -> str:
    """The Table-1 metrics of the runs that have them, then GenTool's table (selection accuracy
    per scenario and the overall test metrics) for runs with GenTool metrics."""
    gentool = [r for r in rows if r.get("gentool")]
    alpha = [r for r in rows if not r.get("gentool") or r.get("in_domain") or r.get("out_of_domain")
             or r.get("episodes")]
    out = _alpha_umi_table(alpha) if alpha else ""
    if gentool:
        from ..gentool.table import runs_table
        out += ("\n" if out else "") + runs_table(gentool)
    return out


def _alpha_umi_table(rows: list[dict]) -> str:
    return to_markdown(Table(*table_data(rows), numeric=True))


def log_wandb(rows: list[dict], project: str | None = None, name: str | None = None) -> str:
    """Log the table as a wandb.Table (offline unless WANDB_MODE says otherwise) and return the
    run's folder. Only the table is logged: no config, no environment."""
    import wandb

    columns, data = table_data(rows)
    run = wandb.init(mode=os.environ.get("WANDB_MODE", "offline"),
                     project=project or os.environ.get("WANDB_PROJECT", "alpha-umi-eval"),
                     name=name, job_type="results_table")
    try:
        run.log({"results_table": wandb.Table(columns=columns, data=data)})
        return run.dir
    finally:
        run.finish()
