"""Evaluation steps of α-UMi test dialogs, read as the official evaluation reads them.

The reference definition: each assistant turn that ends with a "Next: ..." marker is one step; its
context is every turn before it; a call step's action comes from the caller turn that follows it,
a conclusion step's answer from the conclusion turn that follows it. Nothing else about the turn
order is assumed, so a real test dialog is never refused: turns after a conclusion, a conclusion
written "none" followed by an empty observation, a second conclusion, a marker without its caller
turn are all read, and counted in `anomalies` (kind -> count) instead of raised.

Training reads the same files strictly (trajectories.sources.toolbench): for dialogs the strict
loader accepts, the turns built here are the ones it builds, so the steps are identical.
"""
from __future__ import annotations

from collections import Counter

from trajectories.sources.toolbench import CALLER, DECISIONS, MARKER, _strip_wrapper, convert_tools
from trajectories.trajectory import TrajectoryError

IMPLIED = {"caller": "call", "conclusion": "conclusion"}  # decision of an unmarked assistant turn


def dialog_steps(record: dict, file, index: int, prefix: str, anomalies: Counter) -> list[dict]:
    """The steps of one {tools, instruction, conversations} record, with ids f"{prefix}-{k:02d}"."""
    try:
        tools = convert_tools(record.get("tools") or [], file=file, index=index, field="tools")
    except TrajectoryError:
        anomalies["unreadable_tool_list"] += 1
        tools = []
    names = [t["name"] for t in tools]
    instruction, turns, marked = _turns(record, names, anomalies)
    steps = []
    for k in marked:
        turn, follow = turns[k], turns[k + 1] if k + 1 < len(turns) else {}
        plan = turn["decision"]
        step = {"id": f"{prefix}-{len(steps):02d}", "plan": plan, "action": None,
                "arguments": None, "answer": None, "tools": names, "thought": turn["thought"],
                "instruction": instruction, "history": turns[:k], "tool_specs": tools,
                "trajectory_id": prefix}
        if plan == "call":
            if follow.get("role") == "caller":
                step["action"], step["arguments"] = follow["name"], follow["arguments"]
            else:
                anomalies["call_step_without_caller_turn"] += 1
        elif plan == "conclusion":
            if follow.get("role") == "summarizer":
                step["answer"] = follow["answer"]
            else:
                anomalies["conclusion_step_without_conclusion_turn"] += 1
        steps.append(step)
    return steps


def _turns(record: dict, names: list[str], anomalies: Counter) -> tuple[str, list[dict], list[int]]:
    """The instruction (the first user turn), the canonical-shaped turns after it and the indices
    of the marked planner turns."""
    conv = record.get("conversations")
    if not isinstance(conv, list):
        anomalies["no_conversation_list"] += 1
        conv = []
    items = []
    for item in conv:
        if isinstance(item, dict) and isinstance(item.get("from"), str) \
                and isinstance(item.get("value"), str):
            items.append(item)
        else:
            anomalies["unreadable_turn"] += 1
    instruction, turns, marked, concluded = None, [], [], False
    for i, item in enumerate(items):
        who, value = item["from"], item["value"]
        following = items[i + 1]["from"] if i + 1 < len(items) else None
        if concluded and who != "conclusion":
            anomalies["turn_after_conclusion"] += 1
        if who == "user":
            if instruction is None:
                instruction = _strip_wrapper(value)
                continue
            turns.append({"role": "user", "content": value})
        elif who == "assistant":
            marker = MARKER.search(value)
            if marker:
                marked.append(len(turns))
                turns.append({"role": "planner", "thought": value[:marker.start()],
                              "decision": DECISIONS[marker.group(1)]})
            elif following in IMPLIED:  # context only, with the decision the next turn implies
                turns.append({"role": "planner", "thought": value, "decision": IMPLIED[following]})
            else:
                anomalies["assistant_turn_without_marker"] += 1
        elif who == "caller":
            turns.append(_caller(value, names, anomalies))
        elif who == "observation":
            if not value.strip():
                anomalies["empty_observation"] += 1
            if not turns or turns[-1]["role"] != "caller":
                anomalies["observation_without_caller_turn"] += 1
            turns.append({"role": "observation", "content": value})
        elif who == "conclusion":
            if concluded:
                anomalies["repeated_conclusion"] += 1
            if value.strip().lower() in ("", "none"):
                anomalies["empty_conclusion"] += 1
            concluded = True
            turns.append({"role": "summarizer", "answer": value})
        else:
            anomalies["unknown_speaker"] += 1
    if instruction is None:
        anomalies["no_user_turn"] += 1
        instruction = str(record.get("instruction") or "")
    return instruction, turns, marked


def _caller(value: str, names: list[str], anomalies: Counter) -> dict:
    call = CALLER.fullmatch(value)
    if call:
        name, arguments = call.group(1), call.group(2)
    else:
        anomalies["malformed_caller_turn"] += 1
        head, _, arguments = value.partition("Action Input:")
        name = head.partition("Action:")[2].strip().split("\n")[0].strip()
        arguments = arguments.strip() or "{}"
    if name not in names:
        anomalies["call_to_unlisted_tool"] += 1
    return {"role": "caller", "name": name, "arguments": arguments}
