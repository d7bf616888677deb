"""Load any supported source into canonical trajectories (see trajectories/trajectory.py).

    res = load_trajectories(path, format="auto", on_error="raise")   # or on_error="skip"
    res.trajectories, res.skipped, res.skip_reasons, res.path, res.format

    res = LoadResult(path, format)                  # bounded memory: one trajectory at a time
    for trajectory in iter_trajectories(path, format, on_error, res): ...

Sources are read incrementally: a JSON array one element at a time (json_stream), JSONL line by
line, so memory does not grow with the file.

Every malformed record raises a TrajectoryError naming the file, record index and field; with
on_error="skip" it is skipped instead and counted under a short reason key in `skip_reasons`
(the errors themselves are kept in `res.errors`). An unreadable or undetectable file always
raises. `path` may be a directory: its *.json files are read in name order.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from trajectories import selection
from trajectories.trajectory import TrajectoryError

from . import canonical, toolalpaca, toolbench
from .canonical import fail, reason_of
from .json_stream import iter_json_records

__all__ = ["load_trajectories", "iter_trajectories", "LoadResult", "SOURCE_FORMATS",
           "detect_format"]

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
    result = LoadResult(path=Path(path), format=format)
    result.trajectories = list(iter_trajectories(path, format, on_error, result))
    return result


def iter_trajectories(path, format: str = "auto", on_error: str = "raise",
                      result: LoadResult | None = None):
    """Yield validated trajectories one at a time; skips are counted in `result` (its `format`
    is set to the detected one)."""
    if format not in SOURCE_FORMATS:
        raise TrajectoryError(f"unknown source format {format!r} (expected one of {', '.join(SOURCE_FORMATS)})", file=path)
    if on_error not in ("raise", "skip"):
        raise TrajectoryError(f"on_error must be 'raise' or 'skip', not {on_error!r}", file=path)
    path = Path(path)
    result = result if result is not None else LoadResult(path=path, format=format)
    files = _files(path)
    if all(_is_blank(f) for f in files):
        return  # no records: the caller says what that means
    if format == "auto":
        format = _detect(files[0])
    result.format = format
    for build in _builds(files, format, path if path.is_dir() else None):
        try:
            yield build()
        except TrajectoryError as err:
            if on_error == "raise":
                raise
            result.skipped += 1
            result.skip_reasons[reason_of(err)] += 1
            result.errors.append(err)


def detect_format(path) -> str:
    """The format `load_trajectories(path, "auto")` would use."""
    return _detect(_files(Path(path))[0])


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        # recursive: ToolBench's answer folder keeps one subfolder per group (G1_answer, ...)
        files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())
        if not files:
            raise fail("missing_field", "directory holds no .json or .jsonl files (searched recursively)",
                       file=path)
        return files
    if not path.is_file():
        raise FileNotFoundError(f"no such source file or directory: {path}")
    return [path]


def _detect(file: Path) -> str:
    """The format, from the keys of the first record that has a telling key (so that a broken
    first record does not hide the format); a file whose first line is a trajectory (or a
    selection example) is canonical (or selection) JSONL. Reads only as far as the first telling
    record."""
    first = _first_line(file) if _first_char(file) == "{" else None  # not a whole 1-line array
    if isinstance(first, dict) and selection.is_selection_record(first):
        return "selection"
    if isinstance(first, dict) and "turns" in first:
        return "canonical"
    for sample in iter_json_records(file, _read_json):
        for key, fmt in _DETECT_KEYS:
            if isinstance(sample, dict) and key in sample:
                return fmt
    raise fail("unknown_format", "cannot detect the source format (expected a record with one of "
               f"the keys {', '.join(key for key, _ in _DETECT_KEYS)})", file=file)


def _is_blank(file: Path) -> bool:
    with open(file, "rb") as fh:
        return not fh.read(1 << 16).strip() and not fh.read(1)


def _first_char(file: Path) -> str:
    with open(file, "rb") as fh:
        while chunk := fh.read(4096):
            if stripped := chunk.lstrip():
                return chr(stripped[0])
    return ""


def _first_line(file: Path):
    with open(file, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return None
    return None


def _builds(files: list[Path], format: str, root: Path | None = None):
    """Yield one zero-argument build() per record; build() returns a validated trajectory."""
    for file in files:
        folders = file.parent.relative_to(root).parts if root is not None else ()
        for build in _file_builds(file, format, alone=len(files) == 1):
            # ToolBench's G1_answer/10_....json and G2_answer/10_....json: ids stay unique
            yield partial(_qualified, build, file.stem, ".".join((*folders, file.stem))) \
                if folders else build


def _file_builds(file: Path, format: str, alone: bool):
    if format in ("canonical", "selection"):
        reader = canonical.jsonl_records if format == "canonical" else selection.jsonl_records
        yield from reader(file)
        return
    try:
        yield from _READERS[format](iter_json_records(file, _read_json), file)
    except TrajectoryError as err:
        if alone:
            raise
        yield _raiser(err)  # one unreadable file among many: one bad record (the rest of it)


def _qualified(build, stem: str, qualified: str) -> dict:
    trajectory = build()
    trajectory["id"] = trajectory["id"].replace(f"-{stem}-", f"-{qualified}-", 1)
    return trajectory


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
