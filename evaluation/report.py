"""A sweep's report: the Table-1 metrics of every run, the per-span training-loss curves of each
role stage (the paper's Figure 5) and, when runs differ in `data.data_fraction`, the metrics
against the data fraction (Figure 4).

Written under OUT:
    report.md, report.html   the table (with footnotes for every blank cell), the runs, the figures
    results.json             the table as data (columns, rows, footnotes)
    plots/metrics.png        the five metrics per run (bars; ID and OOD)
    plots/loss_<run>.png     train/loss_thought, loss_action, loss_answer vs step, one panel per
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
RUN_DIR/eval/metrics.json (and metrics_ood.json), losses from RUN_DIR/<stage>/logs/metrics.csv,
stages and roles from RUN_DIR/recipe.yaml when "stages" is not given.

    python -m evaluation.report RUN_DIR... --out DIR [--title T] [--wandb]
"""
from __future__ import annotations

import argparse
import csv
import html
import json
import math
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

from core.vocabulary import KIND_OF_ROLE, SPAN_KINDS as ALL_KINDS

from core.atomic_files import write_text_atomic

from . import EvaluationError
from .results_table import BLANK, GROUPS, METRICS, load_run, results_table, table_data

SPAN_KINDS = ALL_KINDS[1:]  # the supervised kinds, one loss curve each
COLORS = {"thought": "tab:blue", "action": "tab:orange", "answer": "tab:green", "ranking": "tab:purple"}
METRIC_NOTES = {
    "plan_acc": "no evaluation step",
    "hallu": "no evaluation step",
    "act_em": "no reference step is a tool call, so there is no action to match",
    "arg_f1": "no reference step is a tool call, so there are no arguments to score",
    "rouge_l": "no reference step is a conclusion (finish), so there is no answer to score",
}


# ----- gathering -----------------------------------------------------------------------------
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


def run_stages(run: Mapping) -> list[dict]:
    """[{name, role, init_from}] of a run: given, else from RUN_DIR/recipe.yaml, else the
    folders holding a CSV log."""
    if run.get("stages"):
        return [dict(s) for s in run["stages"]]
    run_dir = Path(run["run_dir"])
    saved = run_dir / "recipe.yaml"
    if saved.is_file():
        from omegaconf import OmegaConf

        from core.recipe import stage_order
        try:
            recipe = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
            stages = {n: s for n, s in (recipe.get("stages") or {}).items() if s.get("enabled", True)}
            return [{"name": n, "role": stages[n].get("role", n), "init_from": stages[n].get("init_from")}
                    for n in stage_order(stages)]
        except Exception:  # noqa: BLE001 - fall back to the folders
            pass
    return [{"name": p.parent.parent.name, "role": p.parent.parent.name, "init_from": None}
            for p in sorted(run_dir.glob("*/logs/metrics.csv"))]


def gather(runs: Sequence[Mapping]) -> list[dict]:
    """Each run with its metrics row (load_run), stages and loss curves."""
    out = []
    for run in runs:
        r = dict(run)
        r.setdefault("name", Path(r["run_dir"]).name)
        try:
            row = load_run(str(r["run_dir"]), r["name"])
        except EvaluationError:
            row = {"name": r["name"], "in_domain": None, "out_of_domain": None}
        r["row"] = row
        r["stages"] = run_stages(r)
        for s in r["stages"]:
            s["losses"] = read_losses(Path(r["run_dir"]) / s["name"] / "logs" / "metrics.csv")
        if r.get("data_fraction") is None:
            r["data_fraction"] = _recipe_value(r["run_dir"], ("data", "data_fraction"))
        out.append(r)
    return out


def _recipe_value(run_dir, keys):
    saved = Path(run_dir) / "recipe.yaml"
    if not saved.is_file():
        return None
    from omegaconf import OmegaConf
    try:
        node = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
        for k in keys:
            node = node[k]
        return node
    except Exception:  # noqa: BLE001
        return None


# ----- the table and its footnotes -----------------------------------------------------------
def blank_reasons(run: Mapping, group: str) -> dict[str, str]:
    """{metric: why it is blank} for one run and group (in_domain / out_of_domain)."""
    metrics = run["row"].get(group)
    if metrics is None:
        status = run.get("status")
        if group == "out_of_domain":
            why = "no out-of-domain evaluation for this run (metrics_ood.json missing)"
        elif status == "failed":
            why = f"the run failed ({run.get('error') or 'see the sweep log'})"
        elif status in (None, "done"):
            why = "not evaluated (no eval/metrics.json in the run directory)"
        else:
            why = f"not evaluated yet (status: {status})"
        return {m: why for m, _ in METRICS}
    reasons = {}
    n = metrics.get("n_steps")
    counts = (metrics.get("counts") or {}).get("reference") or {}
    for m, _ in METRICS:
        if metrics.get(m) is None:
            why = METRIC_NOTES[m]
            if n is not None:
                why = f"undefined: {why} among the {n} evaluated steps"
                if counts:
                    why += " (reference plans: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"
            reasons[m] = why
    return reasons


def build_table(runs: Sequence[Mapping]) -> dict:
    """The results table (results_table's Markdown, with a footnote on every blank cell)."""
    rows = [r["row"] for r in runs]
    columns, data = table_data(rows)
    groups = [g for g in GROUPS if g[0] == "in_domain" or any(r.get(g[0]) for r in rows)]
    notes: list[str] = []
    cell_notes: dict[tuple[int, int], int] = {}
    for i, run in enumerate(runs):
        for gi, (group, tag) in enumerate(groups):
            reasons = blank_reasons(run, group)
            for mi, (m, label) in enumerate(METRICS):
                if m not in reasons:
                    continue
                text = reasons[m]
                if text not in notes:
                    notes.append(text)
                cell_notes[(i, 1 + gi * len(METRICS) + mi)] = notes.index(text) + 1
    md_lines = results_table(rows).rstrip("\n").split("\n")
    for (i, col), k in cell_notes.items():
        cells = md_lines[2 + i].strip().strip("|").split(" | ")
        cells = [c.strip() for c in cells]
        if cells[col] == BLANK:
            cells[col] = f"{BLANK}[^{k}]"
        md_lines[2 + i] = "| " + " | ".join(cells) + " |"
    return {"columns": columns, "rows": data, "markdown": "\n".join(md_lines) + "\n",
            "notes": notes, "cell_notes": cell_notes}


# ----- plots -----------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend; no pyplot (no global state, no display)
    return fig


def _save(fig, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return str(path)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


def plot_run_losses(run: Mapping, path: Path) -> str:
    """Figure 5 for one run: per stage, the per-span-kind train losses vs step."""
    from matplotlib.ticker import MaxNLocator
    stages = run["stages"] or [{"name": "(no stages)", "role": "", "losses": {}}]
    fig = _figure(3.6 * len(stages) + 0.4, 3.2)
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    for ax, stage in zip(axes, stages):
        losses = stage.get("losses") or {}
        drawn = False
        for kind in SPAN_KINDS:
            pts = losses.get(f"train/loss_{kind}")
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=COLORS[kind], lw=1.2,
                        label=f"train {kind}")
                drawn = True
            vpts = losses.get(f"val/loss_{kind}")
            if vpts:
                ax.plot([p[0] for p in vpts], [p[1] for p in vpts], ls="none", marker="o", ms=4,
                        color=COLORS[kind], label=f"val {kind}")
        if not drawn:
            ax.text(0.5, 0.5, "no per-span losses logged", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="gray")
        init = stage.get("init_from") or "base model"
        ax.set_title(f"{stage['name']} ({stage.get('role', '')})\nfrom {init}", fontsize=9)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
    axes[0].set_ylabel("loss (nats / supervised token)")
    fig.suptitle(f"{run['name']}: training loss per span kind", fontsize=11)
    return _save(fig, path)


def span_curve(run: Mapping, kind: str) -> tuple[str, list[tuple[int, float]]] | None:
    """The stage that learns `kind` (the role's stage, else a backbone / multitask stage)."""
    stages = run["stages"]
    ranked = [s for s in stages if KIND_OF_ROLE.get(s.get("role")) == kind] + \
             [s for s in stages if s.get("role") in ("multitask", "backbone")]
    for s in ranked:
        pts = (s.get("losses") or {}).get(f"train/loss_{kind}")
        if pts:
            return s["name"], pts
    return None


def plot_loss_by_span(runs: Sequence[Mapping], path: Path) -> str:
    """Figure 5 across runs: one panel per span kind, one line per run."""
    from matplotlib.ticker import MaxNLocator
    fig = _figure(12, 3.4)
    axes = fig.subplots(1, len(SPAN_KINDS), squeeze=False)[0]
    for ax, kind in zip(axes, SPAN_KINDS):
        for run in runs:
            curve = span_curve(run, kind)
            if curve:
                stage, pts = curve
                ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2, label=f"{run['name']} ({stage})")
        ax.set_title(f"train/loss_{kind}", fontsize=10)
        ax.set_xlabel("step of the stage")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    axes[0].set_ylabel("loss")
    fig.suptitle("Training loss per span kind, from the stage that learns it", fontsize=11)
    return _save(fig, path)


def plot_metrics(runs: Sequence[Mapping], path: Path) -> str:
    """The table as grouped bars (a blank value is drawn as no bar)."""
    import numpy as np
    groups = [g for g in GROUPS if g[0] == "in_domain" or any(r["row"].get(g[0]) for r in runs)]
    fig = _figure(max(7.0, 2.5 + 0.3 * len(runs) * len(METRICS)), 3.2 * len(groups))
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    x = np.arange(len(METRICS))
    width = 0.8 / max(1, len(runs))
    for ax, (group, tag) in zip(axes, groups):
        for i, run in enumerate(runs):
            m = run["row"].get(group) or {}
            pts = [(j, m.get(k)) for j, (k, _) in enumerate(METRICS) if m.get(k) is not None]
            ax.bar([x[j] - 0.4 + width * (i + 0.5) for j, _ in pts], [v for _, v in pts], width,
                   label=run["name"], color=f"C{i % 10}")
        for container in ax.containers:
            ax.bar_label(container, fmt="%.1f", fontsize=6, padding=1)
        top = max([(r["row"].get(group) or {}).get(k) or 0 for r in runs for k, _ in METRICS] + [0])
        ax.set_ylim(0, max(10.0, 1.15 * top))
        ax.set_xticks(x, [label for _, label in METRICS])
        ax.set_ylabel(f"{tag} (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("Step-level metrics (Hallu.: lower is better)", fontsize=11)
    return _save(fig, path)


def fraction_series(runs: Sequence[Mapping]) -> dict[str, list[tuple[float, Mapping]]]:
    """{series (variant): [(data fraction, run), ...]} for series with two or more fractions."""
    series: dict[str, list] = {}
    for run in runs:
        frac = run.get("data_fraction")
        if isinstance(frac, (int, float)) and run["row"].get("in_domain"):
            series.setdefault(run.get("variant") or run["name"], []).append((float(frac), run))
    return {k: sorted(v, key=lambda p: p[0]) for k, v in series.items()
            if len({f for f, _ in v}) >= 2}


def plot_data_fraction(series: Mapping[str, list], path: Path) -> str:
    """Figure 4: each metric vs the fraction of training data, one line per variant."""
    fig = _figure(3.2 * len(METRICS), 3.2)
    axes = fig.subplots(1, len(METRICS), squeeze=False)[0]
    for ax, (m, label) in zip(axes, METRICS):
        for name, pts in series.items():
            for group, style in (("in_domain", "-"), ("out_of_domain", "--")):
                xy = [(f, (r["row"].get(group) or {}).get(m)) for f, r in pts]
                xy = [(f, v) for f, v in xy if v is not None]
                if xy:
                    tag = "" if group == "in_domain" else " (OOD)"
                    ax.plot([p[0] for p in xy], [p[1] for p in xy], style, marker="o", ms=4,
                            label=f"{name}{tag}")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("data fraction")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("%")
    axes[0].legend(fontsize=7)
    fig.suptitle("Metrics vs fraction of the training data", fontsize=11)
    return _save(fig, path)


# ----- Markdown and HTML ------------------------------------------------------------------------
def _fmt_seconds(s) -> str:
    if s is None:
        return BLANK
    s = float(s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _stages_text(run: Mapping) -> str:
    parts = []
    for s in run["stages"]:
        init = s.get("init_from") or "base"
        parts.append(f"{s['name']} ({s.get('role')}) ← {init}")
    return "; ".join(parts) or BLANK


def run_rows(runs: Sequence[Mapping]) -> tuple[list[str], list[list[str]]]:
    columns = ["Run", "Overlays", "Variant overrides", "Stages (init)", "Mode", "Data fraction", "Train",
               "Eval", "Status"]
    rows = []
    for r in runs:
        mode = r.get("mode") or ((r["row"].get("in_domain") or {}).get("inference") or {}).get("mode")
        overlays = [Path(p).stem for p in (r.get("recipes") or [])[1:]]
        rows.append([r["name"], ", ".join(overlays) or BLANK,
                     " ".join(r.get("variant_overrides", r.get("overrides")) or []) or BLANK,
                     _stages_text(r),
                     mode or BLANK, BLANK if r.get("data_fraction") is None else f"{r['data_fraction']:g}",
                     _fmt_seconds(r.get("train_seconds")), _fmt_seconds(r.get("eval_seconds")),
                     r.get("status") or BLANK])
    return columns, rows


def _md_table(columns, rows) -> str:
    esc = lambda t: str(t).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


FACTS = (("spec", "Spec"), ("base", "Base recipe(s)"), ("overrides", "Overrides (every variant)"),
         ("command_line", "Command line (every variant)"), ("grid", "Grid"), ("evaluate", "Evaluation"))


def facts(meta: Mapping, runs) -> list[tuple[str, str]]:
    out = [(label, meta[key] if isinstance(meta[key], str) else json.dumps(meta[key], ensure_ascii=False))
           for key, label in FACTS if meta.get(key)]
    train = [r["train_seconds"] for r in runs if r.get("train_seconds") is not None]
    evals = [r["eval_seconds"] for r in runs if r.get("eval_seconds") is not None]
    if train or evals:
        out.append(("Time (summed over runs)", f"training {_fmt_seconds(sum(train))}, "
                                               f"evaluation {_fmt_seconds(sum(evals))}"))
    return out


def render_markdown(title: str, meta: Mapping, table: dict, runs, plots: dict) -> str:
    out = [f"# {title}", ""]
    if meta.get("description"):
        out += [meta["description"], ""]
    lines = [f"- {label}: `{value}`" if label != "Time (summed over runs)" else f"- {label}: {value}"
             for label, value in facts(meta, runs)]
    out += lines + ([""] if lines else [])
    out += ["## Table 1: step-level static evaluation (%)", "",
            "Plan ACC, Act. EM, Arg. F1, Rouge-L: higher is better; Hallu.: lower is better.", "",
            table["markdown"]]
    if table["notes"]:
        out += [f"[^{i}]: {note}" for i, note in enumerate(table["notes"], 1)] + [""]
    out += ["![metrics](plots/metrics.png)", "", "## Runs", "", _md_table(*run_rows(runs))]
    warnings = [(r["name"], r["warning"]) for r in runs if r.get("warning")]
    if warnings:
        out += [f"- **{n}**: {w}" for n, w in warnings] + [""]
    if plots.get("data_fraction"):
        out += ["## Figure 4: metrics vs fraction of the training data", "",
                "![data fraction](plots/data_fraction.png)", ""]
    out += ["## Figure 5: training loss per span kind", "",
            "Each span kind from the stage that learns it (planner: thought, caller: action, "
            "summarizer: answer; a single-model run: its one stage).", "",
            "![loss by span](plots/loss_by_span.png)", ""]
    for r in runs:
        rel = Path(plots["runs"][r["name"]]).name
        out += [f"### {r['name']}", "", f"![{r['name']}](plots/{rel})", ""]
    return "\n".join(out).rstrip() + "\n"


def render_html(title: str, meta: Mapping, table: dict, runs, plots: dict) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
             "body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
             "td,th{border:1px solid #ccc;padding:4px 8px}td.n{text-align:right;"
             "font-variant-numeric:tabular-nums}th{background:#f3f3f3}img{max-width:100%}"
             "code{background:#f6f6f6}</style></head><body>", f"<h1>{e(title)}</h1>"]
    if meta.get("description"):
        parts.append(f"<p>{e(meta['description'])}</p>")
    items = [f"<li>{e(label)}: <code>{e(value)}</code></li>" for label, value in facts(meta, runs)]
    if items:
        parts.append("<ul>" + "".join(items) + "</ul>")
    parts.append("<h2>Table 1: step-level static evaluation (%)</h2><p>Plan ACC, Act. EM, Arg. F1, "
                 "Rouge-L: higher is better; Hallu.: lower is better.</p><table><tr>")
    parts += [f"<th>{e(c)}</th>" for c in table["columns"]]
    parts.append("</tr>")
    for i, row in enumerate(table["rows"]):
        cells = [f"<td>{e(str(row[0]))}</td>"]
        for j, v in enumerate(row[1:], 1):
            if v is None:
                k = table["cell_notes"].get((i, j))
                note = f"<sup><a href='#note{k}'>{k}</a></sup>" if k else ""
                cells.append(f"<td class='n'>{BLANK}{note}</td>")
            else:
                cells.append(f"<td class='n'>{v:.2f}</td>" if isinstance(v, (int, float))
                             else f"<td>{e(str(v))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    if table["notes"]:
        parts.append("<ol>" + "".join(f"<li id='note{i}'>{e(n)}</li>"
                                      for i, n in enumerate(table["notes"], 1)) + "</ol>")
    parts.append("<img src='plots/metrics.png' alt='metrics'><h2>Runs</h2><table><tr>")
    columns, rows = run_rows(runs)
    parts += [f"<th>{e(c)}</th>" for c in columns]
    parts.append("</tr>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    for r in runs:
        if r.get("warning"):
            parts.append(f"<p><b>{e(r['name'])}</b>: {e(r['warning'])}</p>")
    if plots.get("data_fraction"):
        parts.append("<h2>Figure 4: metrics vs fraction of the training data</h2>"
                     "<img src='plots/data_fraction.png' alt='data fraction'>")
    parts.append("<h2>Figure 5: training loss per span kind</h2><p>Each span kind from the stage "
                 "that learns it (planner: thought, caller: action, summarizer: answer; a "
                 "single-model run: its one stage).</p><img src='plots/loss_by_span.png' alt='loss by span'>")
    for r in runs:
        rel = Path(plots["runs"][r["name"]]).name
        parts.append(f"<h3>{e(r['name'])}</h3><img src='plots/{e(rel)}' alt='{e(r['name'])}'>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ----- W&B ---------------------------------------------------------------------------------------
def log_report_wandb(runs, table: dict, plots: dict, series: Mapping, out_dir: Path, *, title: str,
                     group: str | None = None, project: str | None = None, entity: str | None = None,
                     mode: str | None = None, meta: Mapping | None = None) -> str:
    """One W&B run with the metrics table, the loss curves (table + line_series) and the PNGs."""
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
        for m, label in METRICS:
            xs, ys, keys = [], [], []
            for name, pts in series.items():
                xy = [(f, (r["row"].get("in_domain") or {}).get(m)) for f, r in pts]
                xy = [(f, v) for f, v in xy if v is not None]
                if xy:
                    xs.append([p[0] for p in xy])
                    ys.append([p[1] for p in xy])
                    keys.append(name)
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


# ----- entry point ---------------------------------------------------------------------------------
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
    plots = {"metrics": plot_metrics(runs, plot_dir / "metrics.png"),
             "loss_by_span": plot_loss_by_span(runs, plot_dir / "loss_by_span.png"),
             "runs": {r["name"]: plot_run_losses(r, plot_dir / f"loss_{_safe(r['name'])}.png") for r in runs}}
    series = fraction_series(runs)
    if series:
        plots["data_fraction"] = plot_data_fraction(series, plot_dir / "data_fraction.png")
    md = render_markdown(title, meta, table, runs, plots)
    page = render_html(title, meta, table, runs, plots)
    paths = {"markdown": str(out_dir / "report.md"), "html": str(out_dir / "report.html"),
             "json": str(out_dir / "results.json"), "plots": plots, "wandb": None}
    write_text_atomic(paths["markdown"], md)
    write_text_atomic(paths["html"], page)
    write_text_atomic(paths["json"], json.dumps(
        {"title": title, "columns": table["columns"], "rows": table["rows"],
         "footnotes": table["notes"],
         "blank_cells": [{"row": i, "column": table["columns"][c], "note": k}
                         for (i, c), k in sorted(table["cell_notes"].items())]}, indent=1) + "\n")
    wb = dict(wandb or {})
    if wb.get("enabled", False):
        try:
            paths["wandb"] = log_report_wandb(runs, table, plots, series, out_dir, title=title, group=group,
                                              project=wb.get("project"), entity=wb.get("entity"),
                                              mode=wb.get("mode"), meta=meta)
        except Exception as exc:  # noqa: BLE001 - the files are written; W&B is an extra
            msg = f"W&B logging failed: {type(exc).__name__}: {exc}"
            paths["wandb_error"] = msg
            (log or (lambda m: print(m, file=sys.stderr)))(f"[report] warning: {msg}")
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Report (table + loss / data-fraction plots) for run directories")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (NAME=DIR to rename)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--title", default="Report")
    p.add_argument("--wandb", action="store_true", help="also log to W&B (offline unless WANDB_MODE)")
    args = p.parse_args(argv)
    runs = []
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep or Path(spec).exists():
            name, path = Path(spec).name, spec
        runs.append({"name": name, "run_dir": path})
    try:
        paths = write_report(runs, args.out, title=args.title, wandb={"enabled": args.wandb})
    except EvaluationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(Path(paths["markdown"]).read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
