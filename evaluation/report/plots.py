"""The report's figures (Agg canvas, no pyplot): per-run loss curves per span kind (the paper's
Figure 5), the loss of each span kind across runs, the metrics as bars, metrics vs data fraction
(Figure 4). Each is written atomically as a PNG."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from core.vocabulary import KIND_OF_ROLE, SPAN_KINDS as ALL_KINDS

from ..steps.metrics import STEP_METRICS as METRICS
from .collect import run_metrics

SPAN_KINDS = ALL_KINDS[1:]  # the supervised kinds, one loss curve each
COLORS = {"thought": "tab:blue", "action": "tab:orange", "answer": "tab:green", "ranking": "tab:purple"}


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


def safe_name(name: str) -> str:
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


def test_sets_of(runs: Sequence[Mapping]) -> list[str]:
    """Every test set with step metrics in some run, in first-seen order."""
    names: list[str] = []
    for r in runs:
        names += [s for s, parts in (r["row"].get("sets") or {}).items()
                  if parts.get("steps") and s not in names]
    return names


def plot_metrics(runs: Sequence[Mapping], path: Path) -> str:
    """The table as grouped bars, one panel per test set (a blank value is drawn as no bar)."""
    import numpy as np
    sets = test_sets_of(runs) or ["(none)"]
    fig = _figure(max(7.0, 2.5 + 0.3 * len(runs) * len(METRICS)), 3.2 * len(sets))
    axes = fig.subplots(len(sets), 1, squeeze=False)[:, 0]
    x = np.arange(len(METRICS))
    width = 0.8 / max(1, len(runs))
    for ax, test_set in zip(axes, sets):
        for i, run in enumerate(runs):
            m = run_metrics(run, test_set)
            pts = [(j, m.get(k)) for j, (k, _) in enumerate(METRICS) if m.get(k) is not None]
            ax.bar([x[j] - 0.4 + width * (i + 0.5) for j, _ in pts], [v for _, v in pts], width,
                   label=run["name"], color=f"C{i % 10}")
        for container in ax.containers:
            ax.bar_label(container, fmt="%.1f", fontsize=6, padding=1)
        top = max([run_metrics(r, test_set).get(k) or 0 for r in runs for k, _ in METRICS] + [0])
        ax.set_ylim(0, max(10.0, 1.15 * top))
        ax.set_xticks(x, [label for _, label in METRICS])
        ax.set_ylabel(f"{test_set} (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("Step-level metrics per test set (Hallu.: lower is better)", fontsize=11)
    return _save(fig, path)


def fraction_series(runs: Sequence[Mapping]) -> dict[str, list[tuple[float, Mapping]]]:
    """{series (variant): [(data fraction, run), ...]} for series with two or more fractions."""
    series: dict[str, list] = {}
    for run in runs:
        frac = run.get("data_fraction")
        if isinstance(frac, (int, float)) and test_sets_of([run]):
            series.setdefault(run.get("variant") or run["name"], []).append((float(frac), run))
    return {k: sorted(v, key=lambda p: p[0]) for k, v in series.items()
            if len({f for f, _ in v}) >= 2}


def plot_data_fraction(series: Mapping[str, list], path: Path) -> str:
    """Figure 4: each metric vs the fraction of training data, one line per variant and test set."""
    sets = test_sets_of([r for pts in series.values() for _, r in pts])
    styles = ("-", "--", ":", "-.")
    fig = _figure(3.2 * len(METRICS), 3.2)
    axes = fig.subplots(1, len(METRICS), squeeze=False)[0]
    for ax, (m, label) in zip(axes, METRICS):
        for name, pts in series.items():
            for k, test_set in enumerate(sets):
                xy = [(f, run_metrics(r, test_set).get(m)) for f, r in pts]
                xy = [(f, v) for f, v in xy if v is not None]
                if xy:
                    ax.plot([p[0] for p in xy], [p[1] for p in xy], styles[k % len(styles)], marker="o",
                            ms=4, label=f"{name} ({test_set})")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("data fraction")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("%")
    axes[0].legend(fontsize=7)
    fig.suptitle("Metrics vs fraction of the training data", fontsize=11)
    return _save(fig, path)
