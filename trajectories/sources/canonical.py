"""The canonical side of every converter: errors with a skip-reason key, field access that names
the offending field, the final record assembly + validation, and the reader for canonical JSONL."""
from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

from trajectories.trajectory import TrajectoryError, validate_trajectory

_MISSING = object()


def fail(kind: str, message: str, *, file, index=None, field=None) -> TrajectoryError:
    """A TrajectoryError carrying `kind`, the short reason key counted by on_error='skip'."""
    err = TrajectoryError(message, file=file, index=index, field=field)
    err.kind = kind
    return err


def reason_of(err: TrajectoryError) -> str:
    """The skip-reason key of an error (errors from validate_trajectory are classified by text)."""
    if getattr(err, "kind", None):
        return err.kind
    if "is a required property" in err.reason:
        return "missing_field"
    if "unknown turn role" in err.reason:
        return "unknown_role"
    if "not in the trajectory's tools" in err.reason:
        return "unknown_tool"
    if "follow" in err.reason:
        return "turn_order"
    if err.reason.startswith("empty "):
        return "empty_target"
    return "invalid_record"


def take(obj, key, typ, *, file, index, field, default=_MISSING):
    """obj[key], checked to be a `typ`; a missing key (or null) raises missing_field unless a
    default is given. `field` is the full path of obj[key], used in the error."""
    if not isinstance(obj, dict):
        parent = field.rpartition(".")[0] or "<record>"
        raise fail("invalid_record", f"expected a JSON object, got {type(obj).__name__}",
                   file=file, index=index, field=parent)
    value = obj.get(key)
    if value is None:
        if default is not _MISSING:
            return default
        raise fail("missing_field", "missing required field", file=file, index=index, field=field)
    if not isinstance(value, typ):
        raise fail("wrong_type", f"expected {_type_name(typ)}, got {type(value).__name__}",
                   file=file, index=index, field=field)
    return value


def _type_name(typ) -> str:
    names = {str: "a string", list: "a list", dict: "an object"}
    types = typ if isinstance(typ, tuple) else (typ,)
    return " or ".join(names.get(t, t.__name__) for t in types)


def as_text(value) -> str:
    """A source value that should be text (arguments, observations): JSON-encode anything else."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def source_records(data):
    """A source file holds one record (an object) or a list of them; `data` may also be an
    iterator over the records (a file read incrementally)."""
    return enumerate([data] if isinstance(data, dict) or not hasattr(data, "__iter__") or
                     isinstance(data, str) else data)


def assemble(*, source: str, file, index: int, tools: list, instruction: str, turns: list,
             origins: list[str], meta: dict | None = None, number: int | None = None) -> dict:
    """Build and validate a canonical record. `origins[k]` is the source field turns[k] came from,
    so that a turn-order error names the source field rather than the canonical one.
    `number` (default: index) numbers the id when one source record yields several trajectories."""
    record = {"id": f"{source}-{Path(file).stem}-{index if number is None else number:05d}",
              "source": source, "tools": tools, "instruction": instruction, "turns": turns}
    if meta:
        record["meta"] = meta
    try:
        return validate_trajectory(record, file=file, index=index)
    except TrajectoryError as err:
        match = re.match(r"turns\[(\d+)\]", err.field or "")
        if not match or int(match.group(1)) >= len(origins):
            raise
        raise fail(reason_of(err), f"{err.reason} (canonical {match.group(0)})", file=file,
                   index=index, field=origins[int(match.group(1))]) from None


# ---- canonical JSONL ---------------------------------------------------------------------------

def jsonl_records(file):
    """Yield a build() per non-blank line; build() decodes, parses and validates it (so a line that
    is not UTF-8 is one bad record, which on_error='skip' skips)."""
    with open(file, "rb") as fh:
        for lineno, raw in enumerate(fh):
            if raw.strip():
                yield partial(_parse_line, raw, file, lineno)


def _parse_line(raw: bytes, file, lineno: int) -> dict:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail("invalid_encoding", f"line {lineno + 1} is not UTF-8 text ({exc.reason} at byte "
                   f"{exc.start}); re-encode the file as UTF-8 or set on_error: skip",
                   file=file, index=lineno) from None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise fail("invalid_json", f"invalid JSON on line {lineno + 1}, column {exc.colno}: "
                   f"{exc.msg}", file=file, index=lineno) from None
    if not isinstance(record, dict):
        raise fail("invalid_record", "a line must hold one JSON object", file=file, index=lineno)
    return validate_trajectory(record, file=file, index=lineno)
