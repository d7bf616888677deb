"""Seed spread: runs that differ only in their seed (a sweep's grid key ending in `seed`) form a
group; per group and test set, each metric's mean ± sample standard deviation over the seeds, and
which differences from the reference group exceed two standard deviations.

The rule: a group's mean differs from the reference's when |Δ| > 2σ, σ the pooled seed-to-seed
standard deviation of the two groups, sqrt((s_a² + s_b²) / 2); both groups need two seeds or more.
It is the spread of one run, not of a mean: with three seeds per group a marked difference is also
more than 2.4 standard errors of the difference.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from ..steps.metrics import STEP_METRICS
from ..tables import BLANK, Table
from .collect import run_metrics
from .results_table import EPISODE_METRICS

MARK = "*"


def is_seed_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1].endswith("seed")


def group_label(run: Mapping) -> str:
    """The run's variant and its grid point without the seed keys (the run's name without a
    variant)."""
    if not run.get("variant"):
        return run["name"]
    rest = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in (run.get("grid") or {}).items() if not is_seed_key(k)]
    return " ".join([run["variant"], *rest])


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def exceeds_two_sigma(a: Mapping, b: Mapping) -> bool | None:
    """Whether two cells ({mean, std, n}) differ by more than two pooled standard deviations;
    None when either has fewer than two seeds."""
    if a["mean"] is None or b["mean"] is None or a["n"] < 2 or b["n"] < 2:
        return None
    sigma = math.sqrt((a["std"] ** 2 + b["std"] ** 2) / 2)
    return abs(a["mean"] - b["mean"]) > 2 * sigma


def seed_summary(runs: Sequence[Mapping], reference: str | None = None) -> dict | None:
    """{reference, metrics, groups: [{group, runs, sets: {test set: {metric: {mean, std, n, delta,
    beyond_2sigma}}}}]} over gathered runs (each with its metrics row), or None when no group has
    two runs. `reference`: a group label or variant name (default: the first group)."""
    groups: dict[str, list[Mapping]] = {}
    for r in runs:
        groups.setdefault(group_label(r), []).append(r)
    if max(len(g) for g in groups.values()) < 2:
        return None
    parts = {m: "steps" for m, _ in STEP_METRICS} | {m: "episodes" for m, _ in EPISODE_METRICS}
    metrics = list(parts)
    out = []
    for label, members in groups.items():
        sets: dict[str, dict] = {}
        names = [s for r in members for s in (r["row"].get("sets") or {})]
        for test_set in dict.fromkeys(names):
            cells = {}
            for m in metrics:
                vals = [v for r in members if (v := run_metrics(r, test_set, parts[m]).get(m)) is not None]
                mean, std = mean_std(vals)
                cells[m] = {"mean": mean, "std": std, "n": len(vals)}
            sets[test_set] = cells
        out.append({"group": label, "runs": [r["name"] for r in members], "sets": sets})
    ref = next((g for g in out if g["group"] == reference), None) or \
        next((g for g in out if reference and g["group"].split(" ")[0] == reference), None) or out[0]
    for g in out:
        for test_set, cells in g["sets"].items():
            for m, cell in cells.items():
                other = (ref["sets"].get(test_set) or {}).get(m)
                if g is ref or other is None or cell["mean"] is None or other["mean"] is None:
                    cell.update(delta=None, beyond_2sigma=None)
                    continue
                cell.update(delta=cell["mean"] - other["mean"], beyond_2sigma=exceeds_two_sigma(cell, other))
    used = [m for m in metrics if any(c[m]["n"] for g in out for c in g["sets"].values())]
    return {"reference": ref["group"], "metrics": used, "groups": out}


def cell_text(cell: Mapping) -> str:
    if cell["mean"] is None:
        return BLANK
    text = f"{cell['mean']:.2f}" + ("" if cell["std"] is None else f" ± {cell['std']:.2f}")
    return text + (f" {MARK}" if cell.get("beyond_2sigma") else "")


def seed_table(summary: Mapping) -> Table:
    """One line per group and test set: the number of seeds, then mean ± std per metric, marked
    where it differs from the reference group by more than two standard deviations."""
    labels = dict(STEP_METRICS) | dict(EPISODE_METRICS)
    columns = ["Variant", "Test set", "Seeds"] + [labels[m] for m in summary["metrics"]]
    rows = []
    for g in summary["groups"]:
        for test_set, cells in g["sets"].items():
            rows.append([g["group"], test_set, str(len(g["runs"]))]
                        + [cell_text(cells[m]) for m in summary["metrics"]])
    return Table(columns, rows, numeric=True)


def seed_note(summary: Mapping) -> str:
    return (f"Mean ± sample standard deviation over the seeds. {MARK}: differs from "
            f"{summary['reference']} by more than two standard deviations (|Δ| > 2σ, σ the pooled "
            "seed-to-seed standard deviation of the two; Hallu.: lower is better, the others: higher).")
