"""The four-scenario table of one run's GenTool metrics (the results table's GenTool part, across
runs, is evaluation/report/results_table.py)."""
from __future__ import annotations

from trajectories.selection import SCENARIOS

from ..tables import BLANK, Table, to_markdown

COLUMNS = (("selection_acc", "Sel. Acc"), ("top1", "Top-1"), ("ndcg", "NDCG"), ("arg_em", "Arg. EM"),
           ("arg_f1", "Arg. F1"), ("zero_to_one_acc", "0→1 Acc"), ("weak_to_strong_acc", "W→S Acc"))
LABELS = {"seen_query/seen_tool": "seen query, seen tool", "unseen_query/seen_tool": "unseen query, seen tool",
          "seen_query/unseen_tool": "seen query, unseen tool",
          "unseen_query/unseen_tool": "unseen query, unseen tool", "all": "all test", "train": "training examples"}
SCENARIO_SHORT = {"seen_query/seen_tool": "SQ/ST", "unseen_query/seen_tool": "UQ/ST",
                  "seen_query/unseen_tool": "SQ/UT", "unseen_query/unseen_tool": "UQ/UT"}


def cell(v) -> str:
    """A GenTool metric (a fraction) as a percentage with one decimal."""
    return BLANK if v is None else f"{100 * v:.1f}"


def scenario_table(metrics: dict) -> str:
    """Rows: the four scenarios, all test examples, and the training examples when scored."""
    test = metrics.get("test") or {}
    rows = [(s, test.get(s)) for s in (*SCENARIOS, "all")] + [("train", (metrics.get("train") or {}).get("all"))]
    data = [[LABELS[key], str(m["n"])] + [cell(m.get(c)) for c, _ in COLUMNS] for key, m in rows if m]
    return to_markdown(Table(["Scenario", "n"] + [label for _, label in COLUMNS], data, numeric=True))
