"""The report page as a list of blocks (headings, paragraphs, facts, tables, footnotes, images),
rendered to Markdown and to HTML by two small renderers; tables through evaluation.tables."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Mapping, Sequence

from ..tables import BLANK, Table, to_html, to_markdown
from .seeds import seed_note, seed_table

FACTS = (("spec", "Spec"), ("base", "Base recipe(s)"), ("overrides", "Overrides (every variant)"),
         ("command_line", "Command line (every variant)"), ("grid", "Grid"), ("evaluate", "Evaluation"))
TABLE1 = "Table 1: step-level static evaluation (%)"
SEEDS = "Seed spread: mean ± std over the seeds of each variant"
TABLE1_NOTE = "Plan ACC, Act. EM, Arg. F1, Rouge-L: higher is better; Hallu.: lower is better."
FIG5_NOTE = ("Each span kind from the stage that learns it (planner: thought, caller: action, "
             "summarizer: answer; a single-model run: its one stage).")
STYLE = ("body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
         "td,th{border:1px solid #ccc;padding:4px 8px}td.n{text-align:right;"
         "font-variant-numeric:tabular-nums}th{background:#f3f3f3}img{max-width:100%}"
         "code{background:#f6f6f6}")


def fmt_seconds(s) -> str:
    if s is None:
        return BLANK
    s = float(s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _stages_text(run: Mapping) -> str:
    return "; ".join(f"{s['name']} ({s.get('role')}) ← {s.get('init_from') or 'base'}"
                     for s in run["stages"]) or BLANK


def runs_table(runs: Sequence[Mapping]) -> Table:
    columns = ["Run", "Overlays", "Variant overrides", "Stages (init)", "Mode", "Data fraction", "Train",
               "Eval", "Status"]
    rows = []
    for r in runs:
        first = next(iter((r["row"].get("sets") or {}).values()), {}).get("steps") or {}
        mode = r.get("mode") or (first.get("inference") or {}).get("mode")
        overlays = [Path(p).stem for p in (r.get("recipes") or [])[1:]]
        rows.append([r["name"], ", ".join(overlays) or BLANK,
                     " ".join(r.get("variant_overrides", r.get("overrides")) or []) or BLANK,
                     _stages_text(r),
                     mode or BLANK, BLANK if r.get("data_fraction") is None else f"{r['data_fraction']:g}",
                     fmt_seconds(r.get("train_seconds")), fmt_seconds(r.get("eval_seconds")),
                     r.get("status") or BLANK])
    return Table(columns, rows)


def facts(meta: Mapping, runs) -> list[tuple[str, str, bool]]:
    """(label, value, shown as code) for the sweep's settings and summed timings."""
    out = [(label, meta[key] if isinstance(meta[key], str) else json.dumps(meta[key], ensure_ascii=False), True)
           for key, label in FACTS if meta.get(key)]
    train = [r["train_seconds"] for r in runs if r.get("train_seconds") is not None]
    evals = [r["eval_seconds"] for r in runs if r.get("eval_seconds") is not None]
    if train or evals:
        out.append(("Time (summed over runs)", f"training {fmt_seconds(sum(train))}, "
                                               f"evaluation {fmt_seconds(sum(evals))}", False))
    return out


def document(title: str, meta: Mapping, table: dict, runs, plots: dict,
             seeds: Mapping | None = None) -> list[tuple]:
    """The page as blocks: (kind, ...) with kind in h1 h2 h3 p facts table notes img warnings."""
    doc: list[tuple] = [("h1", title)]
    if meta.get("description"):
        doc.append(("p", meta["description"]))
    doc += [("facts", facts(meta, runs)), ("h2", TABLE1), ("p", TABLE1_NOTE), ("table", table["table"]),
            ("notes", table["notes"])]
    if seeds:
        doc += [("h2", SEEDS), ("p", seed_note(seeds)), ("table", seed_table(seeds))]
    doc += [("img", "plots/metrics.png", "metrics"),
            ("h2", "Runs"), ("table", runs_table(runs)),
            ("warnings", [(r["name"], r["warning"]) for r in runs if r.get("warning")])]
    if plots.get("data_fraction"):
        doc += [("h2", "Figure 4: metrics vs fraction of the training data"),
                ("img", "plots/data_fraction.png", "data fraction")]
    doc += [("h2", "Figure 5: training loss per span kind"), ("p", FIG5_NOTE),
            ("img", "plots/loss_by_span.png", "loss by span")]
    for r in runs:
        doc += [("h3", r["name"]), ("img", f"plots/{Path(plots['runs'][r['name']]).name}", r["name"])]
    return doc


def render_markdown(doc: Sequence[tuple]) -> str:
    out: list[str] = []
    for kind, *args in doc:
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + args[0], ""]
        elif kind == "p":
            out += [args[0], ""]
        elif kind == "facts" and args[0]:
            out += [f"- {label}: `{value}`" if code else f"- {label}: {value}" for label, value, code in args[0]]
            out.append("")
        elif kind == "table":
            out += [to_markdown(args[0]).rstrip("\n"), ""]
        elif kind == "notes" and args[0]:
            out += [f"[^{i}]: {note}" for i, note in enumerate(args[0], 1)] + [""]
        elif kind == "img":
            out += [f"![{args[1]}]({args[0]})", ""]
        elif kind == "warnings" and args[0]:
            out += [f"- **{name}**: {text}" for name, text in args[0]] + [""]
    return "\n".join(out).rstrip() + "\n"


def render_html(doc: Sequence[tuple]) -> str:
    e = html.escape
    title = next((args[0] for kind, *args in doc if kind == "h1"), "Report")
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
           f"<style>{STYLE}</style></head><body>"]
    for kind, *args in doc:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{e(args[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(args[0])}</p>")
        elif kind == "facts" and args[0]:
            out.append("<ul>" + "".join(f"<li>{e(label)}: <code>{e(value)}</code></li>" if code
                                        else f"<li>{e(label)}: {e(value)}</li>"
                                        for label, value, code in args[0]) + "</ul>")
        elif kind == "table":
            out.append(to_html(args[0]))
        elif kind == "notes" and args[0]:
            out.append("<ol>" + "".join(f"<li id='note{i}'>{e(n)}</li>" for i, n in enumerate(args[0], 1))
                       + "</ol>")
        elif kind == "img":
            out.append(f"<img src='{e(args[0])}' alt='{e(args[1])}'>")
        elif kind == "warnings":
            out += [f"<p><b>{e(name)}</b>: {e(text)}</p>" for name, text in args[0]]
    out.append("</body></html>")
    return "\n".join(out) + "\n"
