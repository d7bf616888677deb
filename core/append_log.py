"""An append-only JSONL file of records with an `id`, resumable after a kill (used by the
simulators' corpora and the evaluation's episodes)."""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class AppendLog:
    """An append-only JSONL file of records with an `id`; `on_record` sees each one, old and new."""

    def __init__(self, path: Path, on_record):
        self.path, self.on_record = Path(path), on_record
        self.count = 0
        self.fh = None

    def load(self) -> set[str]:
        """Read what is there; a torn last line (a kill mid-write) is cut off, to be redone."""
        data = self.path.read_bytes() if self.path.exists() else b""
        ids, pos = set(), 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            try:
                if end < 0:
                    raise ValueError("no newline")
                record = json.loads(data[pos:end])
            except ValueError:
                if end >= 0 and end + 1 < len(data):
                    raise ValueError(f"{self.path}: corrupt line at byte {pos}") from None
                log.warning("%s: dropping a torn last line (%d bytes)", self.path, len(data) - pos)
                with open(self.path, "r+b") as fh:
                    fh.truncate(pos)
                break
            ids.add(record["id"])
            self.count += 1
            self.on_record(record)
            pos = end + 1
        self.fh = open(self.path, "a", encoding="utf-8")
        return ids

    async def append(self, record: dict):
        self.fh.write(json.dumps(record, ensure_ascii=False) + "\n")  # no await before the flush,
        self.fh.flush()                                                # so lines never interleave
        self.count += 1
        self.on_record(record)
        await asyncio.to_thread(os.fsync, self.fh.fileno())

    def close(self):
        if self.fh:
            self.fh.close()
