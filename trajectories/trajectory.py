"""The canonical trajectory: JSON Schema validation, turn-order checks and JSONL I/O.

Every data source is converted into this one form; everything downstream (role reformatting,
evaluation, the simulator) reads only this form.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import jsonschema

from core.errors import ProjectError
from core.vocabulary import TURN_KINDS

from core.atomic_files import atomic_open

SCHEMA_PATH = Path(__file__).with_name("trajectory_schema.json")
ROLES = TURN_KINDS


class TrajectoryError(ProjectError, ValueError):
    """A malformed record: names the file, the record index and the offending field."""

    def __init__(self, message: str, *, file: str | os.PathLike | None = None,
                 index: int | None = None, field: str | None = None):
        self.file, self.index, self.field, self.reason = file, index, field, message
        where = []
        if file is not None:
            where.append(str(file))
        if index is not None:
            where.append(f"record {index}")
        if field:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join(where) + ': ' if where else ''}{message}")


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def _field_path(path: Iterable) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_trajectory(record: dict, *, file=None, index=None) -> dict:
    """Check a record against the JSON Schema and the turn-order rules; return it unchanged."""
    errors = sorted(_validator().iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        # oneOf failures on a turn: report the turn and its role, not the whole union.
        field = _field_path(err.absolute_path) or "<record>"
        message = err.message
        if err.validator == "oneOf" and isinstance(err.instance, dict):
            role = err.instance.get("role")
            message = (f"unknown turn role {role!r} (expected one of {', '.join(ROLES)})"
                       if role not in ROLES else f"invalid {role} turn: {_best_match(err)}")
        raise TrajectoryError(message, file=file, index=index, field=field)
    check_turn_order(record, file=file, index=index)
    return record


def _best_match(err: jsonschema.ValidationError) -> str:
    role = err.instance.get("role")
    for sub in err.context:
        if sub.schema_path and sub.validator != "const" and _branch_role(err, sub) == role:
            return sub.message
    return err.message


def _branch_role(err, sub) -> str | None:
    branch = err.schema["oneOf"][sub.schema_path[0]]
    return branch["properties"]["role"]["const"]


def check_turn_order(record: dict, *, file=None, index=None) -> None:
    """A caller answers a planner's `call`; a summarizer answers a `conclusion`; an observation
    answers a caller; called tools must be among the offered ones; nothing follows a give-up;
    a summarizer's answer is not empty."""
    tool_names = {t["name"] for t in record["tools"]}
    prev = None
    for i, turn in enumerate(record["turns"]):
        field = f"turns[{i}]"
        role = turn["role"]

        def fail(msg):
            raise TrajectoryError(msg, file=file, index=index, field=field)

        if prev is not None and prev["role"] == "planner" and prev["decision"] == "give_up":
            fail("no turn may follow a planner's give_up")
        if role == "caller":
            if not (prev and prev["role"] == "planner" and prev["decision"] == "call"):
                fail("a caller turn must follow a planner turn whose decision is 'call'")
            if tool_names and turn["name"] not in tool_names:
                fail(f"call to tool {turn['name']!r}, which is not in the trajectory's tools")
        elif role == "observation" and not (prev and prev["role"] == "caller"):
            fail("an observation must follow a caller turn")
        elif role == "summarizer" and not (prev and prev["role"] == "planner"
                                           and prev["decision"] == "conclusion"):
            fail("a summarizer turn must follow a planner turn whose decision is 'conclusion'")
        if role == "summarizer" and not turn["answer"].strip():
            # (an empty planner thought is kept: the planner's decision is still its target)
            field = f"turns[{i}].answer"
            fail("empty summarizer answer (training on it teaches the summarizer to answer nothing); "
                 "fill it in or set on_error: skip")
        if prev is not None and prev["role"] == "planner" and prev["decision"] == "call" \
                and role != "caller":
            fail("a planner's 'call' decision must be followed by a caller turn")
        if prev is not None and prev["role"] == "planner" and prev["decision"] == "conclusion" \
                and role != "summarizer":
            fail("a planner's 'conclusion' decision must be followed by a summarizer turn")
        prev = turn


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line index, record) from a JSONL file; a bad line raises with file and line."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TrajectoryError(f"line {lineno + 1} is not UTF-8 text ({exc.reason} at byte "
                                      f"{exc.start})", file=path, index=lineno) from None
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrajectoryError(f"invalid JSON on line {lineno + 1}: {exc.msg}",
                                      file=path, index=lineno) from None


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write all records to `path` through a temporary file and a rename: never half-written."""
    count = 0
    with atomic_open(path) as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            count += 1
    return count
