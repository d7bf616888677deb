"""A sweep's report: the Table-1 metrics of every run, the per-span training-loss curves of each
role stage (the paper's Figure 5) and, when runs differ in `data.data_fraction`, the metrics
against the data fraction (Figure 4).

Written under OUT:
    report.md, report.html   the table (with footnotes for every blank cell), the runs, the figures
    results.json             the table as data (columns, rows, footnotes, seed_summary)
    plots/metrics.png        the five metrics per run (bars; one panel per test set)
    plots/loss_<run>.png     train/loss_<span kind> (thought, action, answer, ranking) vs step, one panel per
                             stage of the run (val losses as markers)
    plots/loss_by_span.png   each span kind from the stage that learns it (planner: thought,
                             caller: action, summarizer: answer; single-model runs: their one
                             stage), one line per run
    plots/data_fraction.png  each metric vs data fraction, one line per variant (when it varies)
    wandb/                   one W&B run (offline unless WANDB_MODE or `wandb.mode` says
                             otherwise): wandb.Table of the metrics and of the loss curves,
                             line_series charts, and the PNGs as images

A run is a dict: {"name", "run_dir", and optionally "variant" (series name for the data-fraction
plot), "description", "status", "error", "data_fraction", "stages" ([{name, role, init_from}]),
"mode", "train_seconds", "eval_seconds", "recipes", "overrides", "grid"}. Metrics are read from
the run's evaluation folder, losses from each stage's CSV log, stages and roles from the run's
saved recipe when "stages" is not given (core.run_dir.RunDir knows where each lives).

When runs differ only in their seed (a sweep's grid key ending in `seed`), the report also has the
seed table: mean ± std per variant and metric, differences from the reference variant
(`meta["reference"]`, default the first) beyond two standard deviations marked (seeds.py).

Rooms: collect (runs, metrics, losses, the table model), seeds (the seed table), plots, render
(one page model, rendered as Markdown and as HTML), wandb_run (the W&B run).

    python -m evaluation.report RUN_DIR... --out DIR [--title T] [--wandb]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Mapping, Sequence

from core.atomic_files import write_text_atomic

from .. import EvaluationError
from .collect import build_table, gather, read_losses, run_stages
from .plots import (fraction_series, plot_data_fraction, plot_loss_by_span, plot_metrics,
                    plot_run_losses, safe_name)
from .render import document, render_html, render_markdown
from .seeds import seed_summary, seed_table

__all__ = ["build_table", "gather", "read_losses", "run_stages", "seed_summary", "seed_table", "write_report"]


def write_report(runs: Sequence[Mapping], out_dir, *, title: str = "Report", meta: Mapping | None = None,
                 wandb: Mapping | None = None, group: str | None = None, log=None) -> dict:
    """Write the report files under `out_dir`; return their paths ({markdown, html, json, plots,
    wandb})."""
    out_dir = Path(out_dir)
    meta = dict(meta or {})
    runs = gather(runs)
    if not runs:
        raise EvaluationError("report: no runs")
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise EvaluationError(f"report: run names must be unique ({', '.join(names)})")
    plot_dir = out_dir / "plots"
    table = build_table(runs)
    seeds = seed_summary(runs, meta.get("reference"))
    plots = {"metrics": plot_metrics(runs, plot_dir / "metrics.png"),
             "loss_by_span": plot_loss_by_span(runs, plot_dir / "loss_by_span.png"),
             "runs": {r["name"]: plot_run_losses(r, plot_dir / f"loss_{safe_name(r['name'])}.png") for r in runs}}
    series = fraction_series(runs)
    if series:
        plots["data_fraction"] = plot_data_fraction(series, plot_dir / "data_fraction.png")
    doc = document(title, meta, table, runs, plots, seeds)
    md, page = render_markdown(doc), render_html(doc)
    paths = {"markdown": str(out_dir / "report.md"), "html": str(out_dir / "report.html"),
             "json": str(out_dir / "results.json"), "plots": plots, "wandb": None}
    write_text_atomic(paths["markdown"], md)
    write_text_atomic(paths["html"], page)
    write_text_atomic(paths["json"], json.dumps(
        {"title": title, "columns": table["columns"], "rows": table["rows"],
         "footnotes": table["notes"], "seed_summary": seeds,
         "blank_cells": [{"row": i, "column": table["columns"][c], "note": k}
                         for (i, c), k in sorted(table["cell_notes"].items())]}, indent=1) + "\n")
    wb = dict(wandb or {})
    if wb.get("enabled", False):
        try:
            from .wandb_run import log_report_wandb
            paths["wandb"] = log_report_wandb(runs, table, plots, series, out_dir, seeds=seeds,
                                              title=title, group=group,
                                              project=wb.get("project"), entity=wb.get("entity"),
                                              mode=wb.get("mode"), meta=meta)
        except Exception as exc:  # noqa: BLE001 - the files are written; W&B is an extra
            msg = f"W&B logging failed: {type(exc).__name__}: {exc}"
            paths["wandb_error"] = msg
            (log or (lambda m: print(m, file=sys.stderr)))(f"[report] warning: {msg}")
    return paths
