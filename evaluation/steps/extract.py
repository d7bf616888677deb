"""Step extraction: every planner turn with a decision becomes one evaluation step.

A step is the gold context before that planner turn (`instruction`, canonical `history`, offered
`tools`) plus the reference: `plan` (the planner's decision: call / conclusion / give_up); for a
call, the `action` and `arguments` of the caller turn that follows; for a conclusion, the `answer`
of the summarizer turn that follows. Ids are f"{file_stem}-{dialog:04d}-{step:02d}". For inference a
step also carries the gold planner `thought`, the canonical `tool_specs` and `trajectory_id`.

Inputs, told apart per record: the α-UMi conversation form (a JSON list of
{tools, instruction, conversations}), read leniently as the official evaluation reads it
(alpha_umi_dialogs.py: any turn order, oddities counted in `anomalies`); canonical trajectories
(JSONL or a JSON list); or a steps file written by `write_steps`.

α-UMi quirks handled: the decision marker " Next: caller." / " Next: conclusion." /
" Next: give up." ends a planner turn after a space (test set) or "\\n " (training data). Assistant
turns without a marker are never steps. As in trajectories.sources.toolbench they are dropped from
histories (the canonical form has no marker-less planner turn; the α-UMi inference prompt showed
them as "assistant: TEXT"), unless a caller or conclusion turn follows, which implies the decision.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from trajectories.trajectory import read_jsonl, validate_trajectory, write_jsonl_atomic

from core.vocabulary import DECISION_ALIASES, DECISIONS

from .. import EvaluationError, check_test_set
from .alpha_umi_dialogs import dialog_steps


def load_steps(path, anomalies: Counter | None = None) -> list[dict]:
    """All evaluation steps of a test set: α-UMi conversations, canonical trajectories or steps.
    Oddities of α-UMi dialogs are counted into `anomalies` (kind -> count), never raised."""
    path = Path(path)
    stem = path.stem
    anomalies = Counter() if anomalies is None else anomalies
    steps, numbers = [], []  # numbers: the record each step comes from
    for index, record in _records(path):
        numbers += [index - 1] * (len(steps) - len(numbers))
        where = f"{path}: record {index}"
        if not isinstance(record, dict):
            raise EvaluationError(f"{where}: expected a JSON object")
        if "conversations" in record:
            steps += dialog_steps(record, path, index, f"{stem}-{index:04d}", anomalies)
        elif "turns" in record:
            traj = validate_trajectory(record, file=path, index=index)
            steps += trajectory_steps(traj, f"{stem}-{index:04d}", None, where)
        elif "plan" in record and "id" in record:
            plan = DECISION_ALIASES.get(record["plan"], record["plan"])
            if plan not in DECISIONS:
                raise EvaluationError(f"{where}: plan {record['plan']!r} is not one of {DECISIONS}")
            steps.append({**record, "plan": plan})
        else:
            raise EvaluationError(f"{where}: neither an α-UMi dialog (conversations), "
                                  "a canonical trajectory (turns) nor a step (id, plan)")
    if steps:
        numbers += [index] * (len(steps) - len(numbers))
    check_test_set([(s["id"], n) for s, n in zip(steps, numbers)], path, "step")
    return steps


def _records(path: Path):
    raw = path.read_bytes()
    if not raw.lstrip().startswith(b"["):
        return [(i, rec) for i, (_, rec) in enumerate(read_jsonl(path))]  # names a bad line
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvaluationError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return list(enumerate(json.loads(text)))
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"{path}: invalid JSON: {exc}") from None


def trajectory_steps(traj: dict, prefix: str, step_turns: set | None = None,
                     where: str = "", names: list[str] | None = None) -> list[dict]:
    """Steps of one canonical trajectory; `step_turns` limits which planner turns count and
    `names` overrides the offered tool names."""
    turns = traj["turns"]
    names = names if names is not None else [t["name"] for t in traj["tools"]]
    steps = []
    for i, turn in enumerate(turns):
        if turn["role"] != "planner" or (step_turns is not None and i not in step_turns):
            continue
        plan = turn["decision"]
        follow = turns[i + 1] if i + 1 < len(turns) else {}
        step = {"id": f"{prefix}-{len(steps):02d}", "plan": plan, "action": None,
                "arguments": None, "answer": None, "tools": names, "thought": turn["thought"],
                "instruction": traj["instruction"], "history": turns[:i],
                "tool_specs": traj["tools"], "trajectory_id": traj["id"]}
        if plan == "call":
            _expect(follow, "caller", where, i)
            step["action"], step["arguments"] = follow["name"], follow["arguments"]
        elif plan == "conclusion":
            _expect(follow, "summarizer", where, i)
            step["answer"] = follow["answer"]
        steps.append(step)
    return steps


def _expect(turn: dict, role: str, where: str, i: int) -> None:
    if turn.get("role") != role:
        raise EvaluationError(f"{where}: planner turn {i} is not followed by a {role} turn")


def write_steps(path, steps: list[dict]) -> int:
    return write_jsonl_atomic(path, steps)


def plan_counts(steps: list[dict]) -> dict:
    counts = Counter(s["plan"] for s in steps)
    return {p: counts.get(p, 0) for p in DECISIONS}
