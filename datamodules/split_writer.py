"""Writing one role's tokenized splits to the `datasets` cache in bounded memory.

Two passes, both streamed to Arrow files on disk (memory-mapped when read back):
1. trajectories: the sources are read one record at a time (`iter_trajectories`), each kept
   trajectory is written with its split name as one row of JSON text (`Dataset.from_generator`,
   which writes in batches);
2. token rows: a batched `map` over each split's trajectories, with `num_proc` processes, turns
   each trajectory into its role examples and token rows, in the same order as the trajectories.
Encoding statistics of each map batch go to a small JSON file next to the output and are summed
afterwards (map workers are separate processes).
"""
from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import datasets
import pyarrow as pa
from datasets import Dataset, Features, List, Value
from datasets.exceptions import DatasetGenerationError

from core.vocabulary import GENTOOL_ROLES
from prompting.prompt_template import PromptTemplate
from prompting.text_encoder import TextEncoder
from prompting.selection_template import SelectionTemplate
from trajectories.selection import is_selection_record
from .views import role_view, selection_texts, selection_view
from .span_tokenization import EncodeStats, encode_example
from .step_context import ContextBudget

ROW_FEATURES = Features({"id": Value("string"), "role": Value("string"),
                         "input_ids": List(Value("int32")), "labels": List(Value("int64")),
                         "span_kinds": List(Value("int64"))})
TRAJECTORY_FEATURES = Features({"split": Value("string"), "trajectory": Value("string")})
MAP_BATCH = 64  # trajectories per map batch (and per stats file)
WRITER_BATCH = 128  # token rows held in memory before they are written (each up to max_length x 3)


@dataclass(frozen=True)
class RoleViews:
    """What a stage trains on of a record: its role examples (trajectories) or selection examples
    (GenTool), for each of the stage's roles. Picklable, for map workers."""
    template: PromptTemplate
    selection_template: SelectionTemplate | None
    roles: tuple[str, ...]
    layout: str
    trajectory_role: str | None = None

    def examples(self, record: dict) -> list:
        out = []
        for role in self.roles:
            if is_selection_record(record):
                out += selection_view(self.selection_template, record, role)
                continue
            view = self.trajectory_role if role in GENTOOL_ROLES else role
            if view != "caller" and record.get("meta", {}).get("reference_only"):
                continue
            out += role_view(self.template, record, view, self.layout)
        return out

    def corpus_texts(self, record: dict):
        if is_selection_record(record):
            yield from selection_texts(self.selection_template, record)
            return
        for seg in self.template.render_history("backbone", record):
            if seg.text:
                yield seg.text


def write_splits(tmp: Path, split_trajectories: Callable[[], Iterable[tuple[str, dict]]],
                 views: RoleViews, tokenizer, budget: ContextBudget, add_bos: bool,
                 num_proc: int | None, split_names=("train", "val")) -> dict:
    """Writes each split's Arrow files under `tmp/<split>/` with their order in
    `tmp/<split>/files.json` (or `tmp/<split>.empty`) and returns {split: encode stats}."""
    datasets.disable_progress_bars()
    work = tmp / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        trajectories = Dataset.from_generator(
            _trajectory_rows, gen_kwargs={"source": split_trajectories},
            features=TRAJECTORY_FEATURES, cache_dir=str(work / "generator"),
            fingerprint="trajectories")
    except DatasetGenerationError as err:  # a bad source record: its own message, not datasets'
        raise (err.__cause__ or err) from None
    stats = {}
    for name in split_names:
        part = trajectories.filter(lambda s: [x == name for x in s], input_columns="split",
                                   batched=True, batch_size=1000, keep_in_memory=True)
        stats_dir = work / f"stats-{name}"
        stats_dir.mkdir()
        out_dir = tmp / name
        out_dir.mkdir()
        rows = part.map(
            encode_batch, batched=True, batch_size=MAP_BATCH, with_indices=True,
            remove_columns=part.column_names, features=ROW_FEATURES,
            num_proc=num_proc if num_proc and num_proc > 1 and len(part) > MAP_BATCH else None,
            fn_kwargs={"views": views, "encoder": TextEncoder(tokenizer, add_bos=add_bos),
                       "budget": budget, "stats_dir": str(stats_dir)},
            writer_batch_size=WRITER_BATCH, cache_file_name=str(out_dir / "rows.arrow"),
            load_from_cache_file=False,
            new_fingerprint=f"rows-{name}")
        stats[name] = _sum_stats(stats_dir).as_dict() | {"trajectories": len(part)}
        # The map's own output files are the cache (memory-mapped when loaded; no copy). An empty
        # split is stored as a file of its own: `datasets` cannot reload empty tables.
        if len(rows):
            files = [Path(f["filename"]).name for f in rows.cache_files]
            (out_dir / "files.json").write_text(json.dumps(files))
        else:
            shutil.rmtree(out_dir)
            (tmp / f"{name}.empty").touch()
        del rows, part
    del trajectories
    shutil.rmtree(work, ignore_errors=True)
    return stats


def _trajectory_rows(source):
    for split, trajectory in source():
        yield {"split": split, "trajectory": json.dumps(trajectory, ensure_ascii=False)}


def encode_batch(batch, indices, views, encoder, budget, stats_dir):
    """Token rows of a batch of records (JSON text), in order; stats to a file per batch."""
    stats = EncodeStats()
    out = {k: [] for k in ROW_FEATURES}
    for text in batch["trajectory"]:
        for ex in views.examples(json.loads(text)):
            for row in encode_example(ex, encoder, budget, stats):
                for k in out:
                    out[k].append(row[k])
    if indices:
        path = Path(stats_dir) / f"{indices[0]:012d}.json"
        path.write_text(json.dumps(stats.as_dict()))
    return out


def _sum_stats(stats_dir: Path) -> EncodeStats:
    total = EncodeStats()
    for path in sorted(stats_dir.glob("*.json")):
        part = json.loads(path.read_text())
        for key in ("examples", "sequences", "tokens", "supervised_tokens", "prefix_checked",
                    "prefix_failures"):
            setattr(total, key, getattr(total, key) + part[key])
        total.dropped.update(part["dropped"])
        for turn, n in part.get("max_target_tokens", {}).items():
            total.max_target_tokens[turn] = max(total.max_target_tokens[turn], n)
    return total


def load_split(path: Path) -> Dataset:
    """A split written by `write_splits`, memory-mapped."""
    files = json.loads((path / "files.json").read_text())
    parts = [Dataset.from_file(str(path / f)) for f in files]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def load_cache(root: Path, split_names=("train", "val")) -> tuple[dict, dict] | None:
    """A finished cache entry (`stats.json` and the splits `write_splits` wrote): (stats,
    {split: Dataset, or [] when empty}). A file of it missing, truncated or unreadable, or a split
    with fewer rows than it was built with: one line saying so, the entry removed, and None (the
    caller rebuilds it)."""
    try:
        stats = json.loads((root / "stats.json").read_text())
        splits = {name: [] if (root / f"{name}.empty").exists() else load_split(root / name)
                  for name in split_names}
        for name, rows in splits.items():
            if len(rows) != stats[name]["sequences"]:
                raise ValueError(f"{name} has {len(rows)} of its {stats[name]['sequences']} rows")
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"[data] warning: the tokenized cache {root} is damaged ({reason[:200]}); it is a "
              f"cache: removing and rebuilding it", file=sys.stderr, flush=True)
        shutil.rmtree(root, ignore_errors=True)
        return None
    return stats, splits
