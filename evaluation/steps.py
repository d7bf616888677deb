"""Step extraction: every planner turn with a decision becomes one evaluation step.

A step is the gold context before that planner turn (`instruction`, canonical `history`, offered
`tools`) plus the reference: `plan` (call / finish / give_up); for a call, the `action` and
`arguments` of the caller turn that follows; for a finish, the `answer` of the conclusion
(summarizer) turn that follows. Ids are f"{file_stem}-{dialog:04d}-{step:02d}". For inference a
step also carries the gold planner `thought`, the canonical `tool_specs` and `trajectory_id`.

Inputs, told apart per record: the α-UMi conversation form (a JSON list of
{tools, instruction, conversations}), parsed here directly; canonical trajectories (JSONL or a
JSON list); or a steps file written by `write_steps`.

α-UMi quirks handled: the decision marker " Next: caller." / " Next: conclusion." /
" Next: give up." ends a planner turn after a space (test set) or "\\n " (training data). Assistant
turns without a marker are never steps. As in datamodules.sources.toolbench they are dropped from
histories (the canonical form has no marker-less planner turn; the α-UMi inference prompt showed
them as "assistant: TEXT"), unless a caller or conclusion turn follows, which implies the decision.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from datamodules.sources.toolbench import convert_tools
from datamodules.trajectory import read_jsonl, validate_trajectory, write_jsonl_atomic

from . import EvaluationError

PLANS = ("call", "finish", "give_up")
PLAN_OF_DECISION = {"call": "call", "conclusion": "finish", "give_up": "give_up"}
MARKER = re.compile(r"\s*Next: (caller|conclusion|give up)\.\s*$")
DECISION_OF_MARKER = {"caller": "call", "conclusion": "conclusion", "give up": "give_up"}
IMPLIED_DECISION = {"caller": "call", "conclusion": "conclusion"}  # of an unmarked turn


def load_steps(path) -> list[dict]:
    """All evaluation steps of a test set: α-UMi conversations, canonical trajectories or steps."""
    path = Path(path)
    stem = path.stem
    steps = []
    for index, record in _records(path):
        where = f"{path}: record {index}"
        if not isinstance(record, dict):
            raise EvaluationError(f"{where}: expected a JSON object")
        if "conversations" in record:
            traj, step_turns = alpha_umi_trajectory(record, f"{stem}-{index:04d}", path, index)
            names = [t["Name"] for t in record["tools"]]  # as the α-UMi evaluation reads them
            steps += trajectory_steps(traj, f"{stem}-{index:04d}", step_turns, where, names)
        elif "turns" in record:
            traj = validate_trajectory(record, file=path, index=index)
            steps += trajectory_steps(traj, f"{stem}-{index:04d}", None, where)
        elif "plan" in record and "id" in record:
            if record["plan"] not in PLANS:
                raise EvaluationError(f"{where}: plan {record['plan']!r} is not one of {PLANS}")
            steps.append(record)
        else:
            raise EvaluationError(f"{where}: neither an α-UMi dialog (conversations), "
                                  "a canonical trajectory (turns) nor a step (id, plan)")
    seen = Counter(s["id"] for s in steps)
    dup = [i for i, n in seen.items() if n > 1]
    if dup:
        raise EvaluationError(f"{path}: duplicate step id {dup[0]!r}")
    return steps


def _records(path: Path):
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            return list(enumerate(json.loads(text)))
        except json.JSONDecodeError as exc:
            raise EvaluationError(f"{path}: invalid JSON: {exc}") from None
    return [(i, rec) for i, (_, rec) in enumerate(read_jsonl(path))]


def alpha_umi_trajectory(record: dict, traj_id: str, file=None, index=None) -> tuple[dict, set]:
    """A canonical trajectory and the indices of its marked planner turns (the steps)."""
    where = f"{file}: record {index}"
    # tool docs converted as for training; load_steps scores against the raw names
    specs = convert_tools(record["tools"], file=file, index=index, field="tools")
    conv = record["conversations"]
    instruction = record["instruction"]
    if conv and conv[0]["from"] == "user" and conv[0]["value"] == instruction:
        conv = conv[1:]
    turns, steps = [], set()
    for j, msg in enumerate(conv):
        who, text = msg["from"], msg["value"]
        if who == "user":
            turns.append({"role": "user", "content": text})
        elif who == "assistant":
            m = MARKER.search(text)
            implied = IMPLIED_DECISION.get(conv[j + 1]["from"] if j + 1 < len(conv) else None)
            if m:
                steps.add(len(turns))
                turns.append({"role": "planner", "thought": text[:m.start()],
                              "decision": DECISION_OF_MARKER[m.group(1)]})
            elif implied:
                turns.append({"role": "planner", "thought": text, "decision": implied})
        elif who == "caller":
            name, arguments = parse_caller(text, f"{where}, conversation turn {j}")
            turns.append({"role": "caller", "name": name, "arguments": arguments})
        elif who == "observation":
            turns.append({"role": "observation", "content": text})
        elif who == "conclusion":
            turns.append({"role": "summarizer", "answer": text})
        else:
            raise EvaluationError(f"{where}, conversation turn {j}: unknown speaker {who!r}")
    traj = {"id": traj_id, "source": "alpha_umi_conversations", "tools": specs,
            "instruction": instruction, "turns": turns}
    return traj, steps


def parse_caller(text: str, where: str = "") -> tuple[str, str]:
    """("NAME", "ARGS") from "Action: NAME\\nAction Input: ARGS"; no input means "{}"."""
    if "Action:" not in text:
        raise EvaluationError(f"{where}: caller turn without 'Action:': {text[:80]!r}")
    head, _, arguments = text.partition("Action Input:")
    name = head[head.index("Action:") + len("Action:"):].strip()
    return name, arguments.strip() or "{}"


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
        plan = PLAN_OF_DECISION[turn["decision"]]
        follow = turns[i + 1] if i + 1 < len(turns) else {}
        step = {"id": f"{prefix}-{len(steps):02d}", "plan": plan, "action": None,
                "arguments": None, "answer": None, "tools": names, "thought": turn["thought"],
                "instruction": traj["instruction"], "history": turns[:i],
                "tool_specs": traj["tools"], "trajectory_id": traj["id"]}
        if plan == "call":
            _expect(follow, "caller", where, i)
            step["action"], step["arguments"] = follow["name"], follow["arguments"]
        elif plan == "finish":
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
    return {p: counts.get(p, 0) for p in PLANS}
