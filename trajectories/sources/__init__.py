"""Load any supported source into canonical trajectories (see trajectories/trajectory.py).

    res = load_trajectories(path, format="auto", on_error="raise")   # or on_error="skip"
    res.trajectories, res.skipped, res.skip_reasons, res.path, res.format

Every malformed record raises a TrajectoryError naming the file, record index and field; with
on_error="skip" it is skipped instead and counted under a short reason key in `skip_reasons`
(the errors themselves are kept in `res.errors`). An unreadable or undetectable file always
raises. `path` may be a directory: its *.json files are read in name order.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from trajectories import selection
from trajectories.trajectory import TrajectoryError

from . import canonical, toolalpaca, toolbench
from .canonical import fail, reason_of

__all__ = ["load_trajectories", "LoadResult", "SOURCE_FORMATS", "detect_format"]

_READERS = {
    "toolbench_answer": toolbench.answer_records,
    "alpha_umi_chains": toolbench.chains_records,
    "alpha_umi_conversations": toolbench.conversations_records,
    "toolalpaca": toolalpaca.training_records,
    "toolalpaca_eval": toolalpaca.eval_records,
    "canonical": None,  # JSONL, read line by line
    "selection": None,  # JSONL of tool-selection examples (trajectories/selection_schema.json)
}
SOURCE_FORMATS = ("auto", *_READERS)
# A key that only records of that format have, checked in this order.
_DETECT_KEYS = (("turns", "canonical"), ("answer_generation", "toolbench_answer"),
                ("chains", "alpha_umi_chains"), ("conversations", "alpha_umi_conversations"),
                ("Instances", "toolalpaca"), ("Golden_Answers", "toolalpaca_eval"),
                ("toolset", "selection"))


@dataclass
class LoadResult:
    path: Path
    format: str
    trajectories: list[dict] = field(default_factory=list)
    skipped: int = 0
    skip_reasons: Counter = field(default_factory=Counter)
    errors: list[TrajectoryError] = field(default_factory=list)


def load_trajectories(path, format: str = "auto", on_error: str = "raise") -> LoadResult:
    if format not in SOURCE_FORMATS:
        raise TrajectoryError(f"unknown source format {format!r} (expected one of {', '.join(SOURCE_FORMATS)})", file=path)
    if on_error not in ("raise", "skip"):
        raise TrajectoryError(f"on_error must be 'raise' or 'skip', not {on_error!r}", file=path)
    path = Path(path)
    files = _files(path)
    preloaded = {}
    if all(_is_blank(f) for f in files):
        return LoadResult(path=path, format=format)  # no records: the caller says what that means
    if format == "auto":
        format, preloaded = _detect(files[0])
    result = LoadResult(path=path, format=format)
    for build in _builds(files, format, preloaded):
        try:
            result.trajectories.append(build())
        except TrajectoryError as err:
            if on_error == "raise":
                raise
            result.skipped += 1
            result.skip_reasons[reason_of(err)] += 1
            result.errors.append(err)
    return result


def detect_format(path) -> str:
    """The format `load_trajectories(path, "auto")` would use."""
    return _detect(_files(Path(path))[0])[0]


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".json" and p.is_file())
        if not files:
            raise fail("missing_field", "directory holds no .json files", file=path)
        return files
    if not path.is_file():
        raise FileNotFoundError(f"no such source file or directory: {path}")
    return [path]


def _detect(file: Path) -> tuple[str, dict]:
    """(format, {file: parsed JSON}) from the keys of the first record that has a telling key
    (so that a broken first record does not hide the format); a JSONL file is canonical (or holds
    selection examples)."""
    try:
        data = _read_json(file)
    except TrajectoryError:
        first = _first_line(file)
        if selection.is_selection_record(first):
            return "selection", {}
        if not (isinstance(first, dict) and "turns" in first):
            raise
        return "canonical", {}
    for sample in data if isinstance(data, list) else [data]:
        for key, fmt in _DETECT_KEYS:
            if isinstance(sample, dict) and key in sample:
                return fmt, ({} if fmt in ("canonical", "selection") else {file: data})
    raise fail("unknown_format", "cannot detect the source format (expected a record with one of "
               f"the keys {', '.join(key for key, _ in _DETECT_KEYS)})", file=file)


def _is_blank(file: Path) -> bool:
    with open(file, "rb") as fh:
        return not fh.read(1 << 16).strip() and not fh.read(1)


def _first_line(file: Path):
    with open(file, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return None
    return None


def _builds(files: list[Path], format: str, preloaded: dict):
    """Yield one zero-argument build() per record; build() returns a validated trajectory."""
    for file in files:
        if format in ("canonical", "selection"):
            reader = canonical.jsonl_records if format == "canonical" else selection.jsonl_records
            yield from reader(file)
            continue
        try:
            data = preloaded[file] if file in preloaded else _read_json(file)
        except TrajectoryError as err:
            if len(files) == 1:
                raise
            yield _raiser(err)  # one unreadable file among many: one bad record
            continue
        yield from _READERS[format](data, file)


def _raiser(err: TrajectoryError):
    def build():
        raise err
    return build


def _read_json(file: Path):
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise fail("invalid_json", f"invalid JSON at line {exc.lineno}, column {exc.colno}: "
                   f"{exc.msg}", file=file) from None
    except UnicodeDecodeError as exc:
        raise fail("invalid_json", f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                   file=file) from None
