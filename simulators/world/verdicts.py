"""Computed verdicts of an episode against its test instance's `meta.world` (no LLM):

- process: the successful calls reach the goal: every gold call (name and arguments, compared as
  JSON values) is among them, each after the calls it depends on; for a task whose right end is
  giving up, the episode gave up;
- answer: the episode concluded and its final answer states every required value (as a whole
  token: 4.2 is not found in 4.25); for a give-up task, it gave up.
Values are "yes" / "no", as the episodes' judge metrics read them (judge_metrics, process_answer)."""
from __future__ import annotations

import json
import re
from typing import Mapping


def termination(trajectory: Mapping) -> str | None:
    term = (trajectory.get("meta") or {}).get("termination")
    if term:
        return term
    last = trajectory["turns"][-1] if trajectory["turns"] else {}
    if last.get("role") == "summarizer":
        return "conclusion"
    return "give_up" if last.get("decision") == "give_up" else None


def successful_calls(turns: list[dict]) -> list[tuple[str, object]]:
    out = []
    for i, turn in enumerate(turns):
        if turn["role"] != "caller":
            continue
        obs = turns[i + 1] if i + 1 < len(turns) else {}
        if obs.get("role") == "observation" and not obs.get("error"):
            out.append((turn["name"], _parse(turn["arguments"])))
    return out


def _parse(text):
    try:
        return json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, str) and isinstance(b, str):
        return a.strip() == b.strip()
    return a == b


def process_ok(gold: Mapping, turns: list[dict]) -> bool:
    made = successful_calls(turns)
    used, at = set(), []
    for call in gold["calls"]:
        earliest = max((at[j] for j in call["after"]), default=-1)
        pos = next((i for i, (name, args) in enumerate(made) if i > earliest and i not in used
                    and name == call["name"] and _same(args, call["arguments"])), None)
        if pos is None:
            return False
        used.add(pos)
        at.append(pos)
    return True


def states(answer: str, value: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(value)}(?!\w|\.\d)", answer) is not None


def verdict(reference: Mapping, trajectory: Mapping) -> dict:
    gold = reference["meta"]["world"]
    term = termination(trajectory)
    if gold["expect"] == "give_up":
        ok = term == "give_up"
        return {"process": _yn(ok), "answer": _yn(ok), "termination": term}
    final = next((t["answer"] for t in reversed(trajectory["turns"]) if t["role"] == "summarizer"), "")
    answer = term == "conclusion" and all(states(final, v) for v in gold["values"])
    return {"process": _yn(process_ok(gold, trajectory["turns"])), "answer": _yn(answer),
            "termination": term}


def _yn(ok: bool) -> str:
    return "yes" if ok else "no"


class WorldJudge:
    """The episodes runner's judge for world test sets: computed verdicts, no LLM calls."""
    kind = "process_answer"

    def verdict(self, reference: Mapping | None, trajectory: Mapping) -> dict:
        if not reference or "world" not in (reference.get("meta") or {}):
            return {"error": f"{trajectory.get('id')}: no meta.world in its test instance"}
        return verdict(reference, trajectory)
