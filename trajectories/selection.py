"""Tool-selection examples (GenTool): JSON Schema validation, consistency checks and the JSONL reader.

A selection example offers a toolset for one query; the targets are the gold ranking of the whole
toolset and the gold call (see selection_schema.json). Errors are TrajectoryErrors, so the loaders'
skip-and-count machinery treats them like malformed trajectories.
"""
from __future__ import annotations

import json
from functools import lru_cache, partial
from pathlib import Path

import jsonschema

from trajectories.trajectory import TrajectoryError

SCHEMA_PATH = Path(__file__).with_name("selection_schema.json")
SCENARIOS = ("seen_query/seen_tool", "unseen_query/seen_tool", "seen_query/unseen_tool",
             "unseen_query/unseen_tool")


def is_selection_record(record) -> bool:
    return isinstance(record, dict) and "toolset" in record and "turns" not in record


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def _fail(kind: str, message: str, file, index, field) -> TrajectoryError:
    err = TrajectoryError(message, file=file, index=index, field=field)
    err.kind = kind
    return err


def validate_selection(record: dict, *, file=None, index=None) -> dict:
    """Check a record against the schema and the ranking / call rules; return it unchanged."""
    errors = sorted(_validator().iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        field = ".".join(str(p) for p in err.absolute_path) or "<record>"
        kind = "missing_field" if err.validator == "required" else "invalid_record"
        raise _fail(kind, err.message, file, index, field)
    names = [t["name"] for t in record["toolset"]]
    if len(set(names)) != len(names):
        raise _fail("invalid_record", "tool names in the toolset repeat", file, index, "toolset")
    if sorted(record["ranking"]) != sorted(names):
        raise _fail("invalid_record", "the ranking must list every toolset name exactly once",
                    file, index, "ranking")
    relevant = record["relevant"]
    if record["ranking"][:len(relevant)] != relevant:
        raise _fail("invalid_record", "the relevant tools must head the ranking, in its order",
                    file, index, "relevant")
    if record["call"]["name"] != relevant[0]:
        raise _fail("unknown_tool", f"the call names {record['call']['name']!r}, not the most relevant "
                    f"tool {relevant[0]!r}", file, index, "call.name")
    try:
        args = json.loads(record["call"]["arguments"])
    except json.JSONDecodeError as exc:
        raise _fail("invalid_json", f"arguments are not JSON: {exc.msg}", file, index,
                    "call.arguments") from None
    if not isinstance(args, dict):
        raise _fail("invalid_record", "arguments must be a JSON object", file, index, "call.arguments")
    return record


def jsonl_records(file):
    """Yield a build() per non-blank line; build() parses and validates it."""
    with open(file, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh):
            if line.strip():
                yield partial(_parse_line, line, file, lineno)


def _parse_line(line: str, file, lineno: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _fail("invalid_json", f"invalid JSON on line {lineno + 1}, column {exc.colno}: "
                    f"{exc.msg}", file, lineno, None) from None
    if not isinstance(record, dict):
        raise _fail("invalid_record", "a line must hold one JSON object", file, lineno, None)
    return validate_selection(record, file=file, index=lineno)
