"""The report as one W&B run: the metrics table, the loss curves (a table and line_series
charts), metrics vs data fraction, and the PNGs as images. Offline unless WANDB_MODE or the
report's `wandb.mode` says otherwise; one run per report folder, resumed by its saved id."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from core.atomic_files import write_text_atomic

from ..steps.metrics import STEP_METRICS as METRICS
from .collect import run_metrics
from .plots import SPAN_KINDS, test_sets_of


def log_report_wandb(runs, table: dict, plots: dict, series: Mapping, out_dir: Path, *, title: str,
                     group: str | None = None, project: str | None = None, entity: str | None = None,
                     mode: str | None = None, meta: Mapping | None = None, seeds: Mapping | None = None) -> str:
    """One W&B run with the metrics table, the seed spread (long format), the loss curves (table +
    line_series) and the PNGs."""
    import wandb
    mode = os.environ.get("WANDB_MODE") or mode or "offline"
    (out_dir / "wandb").mkdir(parents=True, exist_ok=True)
    id_file = out_dir / "wandb" / "report_run_id.txt"  # one W&B run per report folder, resumed
    if not id_file.is_file():
        import uuid
        write_text_atomic(id_file, uuid.uuid4().hex[:12])
    run = wandb.init(mode=mode, project=project or os.environ.get("WANDB_PROJECT", "alpha-umi-glpft"),
                     entity=entity, name=f"{title} report", group=group, job_type="sweep_report",
                     dir=str(out_dir), id=id_file.read_text().strip(), resume="allow",
                     config={"report": json.loads(json.dumps(dict(meta or {}), default=str))},
                     reinit="finish_previous")
    try:
        log: dict = {"results/metrics": wandb.Table(columns=table["columns"], data=table["rows"])}
        if seeds:
            log["results/seed_spread"] = wandb.Table(
                columns=["variant", "test_set", "metric", "seeds", "mean", "std", "delta", "beyond_2sigma"],
                data=[[g["group"], test_set, m, c["n"], c["mean"], c["std"], c.get("delta"), c.get("beyond_2sigma")]
                      for g in seeds["groups"] for test_set, cells in g["sets"].items()
                      for m, c in cells.items() if c["n"]])
        loss_rows = []
        for r in runs:
            for s in r["stages"]:
                for key, pts in (s.get("losses") or {}).items():
                    split, _, kind = key.partition("/loss")
                    for step, v in pts:
                        loss_rows.append([r["name"], s["name"], s.get("role"), kind.lstrip("_") or "all",
                                          split, step, v])
                kinds = [k for k in SPAN_KINDS if (s.get("losses") or {}).get(f"train/loss_{k}")]
                if kinds:
                    pts = [s["losses"][f"train/loss_{k}"] for k in kinds]
                    log[f"loss/{r['name']}/{s['name']}"] = wandb.plot.line_series(
                        xs=[[p[0] for p in c] for c in pts], ys=[[p[1] for p in c] for c in pts],
                        keys=kinds, title=f"{r['name']} / {s['name']}: train loss per span", xname="step")
        log["results/loss_curves"] = wandb.Table(
            columns=["run", "stage", "role", "kind", "split", "step", "loss"], data=loss_rows)
        sets = test_sets_of([r for pts in series.values() for _, r in pts])
        for m, label in METRICS:
            xs, ys, keys = [], [], []
            for name, pts in series.items():
                for test_set in sets:
                    xy = [(f, run_metrics(r, test_set).get(m)) for f, r in pts]
                    xy = [(f, v) for f, v in xy if v is not None]
                    if xy:
                        xs.append([p[0] for p in xy])
                        ys.append([p[1] for p in xy])
                        keys.append(f"{name} ({test_set})")
            if keys:
                log[f"data_fraction/{m}"] = wandb.plot.line_series(
                    xs=xs, ys=ys, keys=keys, title=f"{label} vs data fraction", xname="data fraction")
        for name, path in _all_plots(plots):
            log[f"plots/{name}"] = wandb.Image(path)
        run.log(log)
        return str(Path(run.dir).parent)
    finally:
        run.finish()


def _all_plots(plots: dict):
    for key in ("metrics", "loss_by_span", "data_fraction"):
        if plots.get(key):
            yield key, plots[key]
    for name, path in plots["runs"].items():
        yield f"loss_{name}", path
