"""The four-scenario table of GenTool metrics (Markdown), for one run or across runs."""
from __future__ import annotations

from trajectories.selection import SCENARIOS

COLUMNS = (("selection_acc", "Sel. Acc"), ("top1", "Top-1"), ("ndcg", "NDCG"), ("arg_em", "Arg. EM"),
           ("arg_f1", "Arg. F1"), ("zero_to_one_acc", "0→1 Acc"), ("weak_to_strong_acc", "W→S Acc"))
LABELS = {"seen_query/seen_tool": "seen query, seen tool", "unseen_query/seen_tool": "unseen query, seen tool",
          "seen_query/unseen_tool": "seen query, unseen tool",
          "unseen_query/unseen_tool": "unseen query, unseen tool", "all": "all test", "train": "training examples"}
BLANK = "–"


def _cell(v) -> str:
    return BLANK if v is None else f"{100 * v:.1f}"


def scenario_table(metrics: dict) -> str:
    """Rows: the four scenarios, all test examples, and the training examples when scored."""
    head = "| Scenario | n | " + " | ".join(label for _, label in COLUMNS) + " |"
    lines = [head, "|---|---:" + "|---:" * len(COLUMNS) + "|"]
    test = metrics.get("test") or {}
    rows = [(s, test.get(s)) for s in (*SCENARIOS, "all")] + [("train", (metrics.get("train") or {}).get("all"))]
    for key, m in rows:
        if m:
            lines.append(f"| {LABELS[key]} | {m['n']} | " + " | ".join(_cell(m.get(c)) for c, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def runs_table(rows: list[dict]) -> str:
    """One row per run: selection accuracy per scenario, then the overall test metrics."""
    short = {"seen_query/seen_tool": "SQ/ST", "unseen_query/seen_tool": "UQ/ST",
             "seen_query/unseen_tool": "SQ/UT", "unseen_query/unseen_tool": "UQ/UT"}
    cols = [f"Sel. Acc {short[s]}" for s in SCENARIOS] + [f"{label} (all)" for _, label in COLUMNS]
    lines = ["| Run | " + " | ".join(cols) + " |", "|---" + "|---:" * len(cols) + "|"]
    for row in rows:
        test = (row.get("gentool") or {}).get("test") or {}
        vals = [(test.get(s) or {}).get("selection_acc") for s in SCENARIOS] + \
               [(test.get("all") or {}).get(c) for c, _ in COLUMNS]
        lines.append(f"| {str(row['name']).replace('|', '/')} | " + " | ".join(_cell(v) for v in vals) + " |")
    return "\n".join(lines) + "\n"
