"""What makes a stage safe to kill: atomic checkpoint files with one previous copy kept, a resume
that falls back past a corrupt `last.ckpt`, and a CSV log that a resumed run appends to.

Checkpoint files are written to a temporary file in the checkpoint's own directory, fsynced and
renamed over the old one (a rename within one filesystem is atomic; Lightning's default writes
through the system temp dir, which is not atomic when `run.dir` is on another filesystem). The file
being replaced is kept as `<name>.prev` (a second name for it, so `<name>` never goes missing), so a
checkpoint that later turns out unreadable
(a disk that lied, a copy cut short) still has a good predecessor.
"""
from __future__ import annotations

import csv
import os
import sys
import zipfile
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from core.atomic_files import atomic_open
from core.errors import disk_full_as_error

PREV_SUFFIX = ".prev"


def keep_previous(path: Path, prev: Path) -> None:
    """`prev` becomes a second name of `path` (a hard link), so a kill at any moment leaves `path`
    whole; where links are not supported it is renamed (a kill then leaves only `prev`)."""
    prev.unlink(missing_ok=True)
    try:
        os.link(path, prev)
    except OSError:
        os.replace(path, prev)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("storage_options are not supported by AtomicCheckpointIO")
        path = Path(path)
        # a full disk leaves the previous checkpoint in place and stops with one line (DiskFull)
        with disk_full_as_error(path, tensor_bytes(checkpoint)), atomic_open(path, "wb") as fh:
            torch.save(checkpoint, fh)  # temp file beside `path`, fsync, then rename
            if path.is_file():  # keep the one being replaced as .prev; `path` stays until the rename
                keep_previous(path, path.with_name(path.name + PREV_SUFFIX))

    def remove_checkpoint(self, path) -> None:
        super().remove_checkpoint(path)
        Path(str(path) + PREV_SUFFIX).unlink(missing_ok=True)


def tensor_bytes(obj) -> int:
    """Bytes of the tensors in a (nested) checkpoint: about what torch.save writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint file cannot be resumed from (None if it looks whole). torch.save writes a
    zip archive whose directory is at the end: a truncated file has none."""
    try:
        if path.stat().st_size == 0:
            return "it is empty"
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile:
        return "it is truncated or corrupt (not a complete torch.save archive)"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return "it has no data.pkl (not a torch checkpoint)"
    return None


def pick_resume_checkpoint(last: Path, resumable, repair: bool = True) -> str | None:
    """`last` if it is whole, else its previous copy (with a warning), else None (the stage starts
    over, with a warning). With `repair` (rank 0 only: every rank makes the same choice, one moves
    files) a bad file is renamed to `<name>.corrupt`, so it never blocks a rerun.
    `resumable(path)` is the strategy-aware check for directories (DeepSpeed, sharded FSDP)."""
    last = Path(last)
    if last.is_dir():
        return resumable(last)
    bad_seen = False
    for i, path in enumerate([last, last.with_name(last.name + PREV_SUFFIX)]):
        if not path.is_file():
            continue
        problem = checkpoint_problem(path)
        if problem is None:
            if i > 0:
                _warn(f"{last}: resuming from the previous checkpoint ({path.name}) instead")
            return str(path)
        bad_seen = True
        if repair:
            bad = path.with_name(path.name + ".corrupt")
            os.replace(path, bad)
            _warn(f"{path}: {problem}; moved to {bad.name}")
    if bad_seen and repair:
        _warn(f"{last.parent}: no readable checkpoint left; the stage starts over")
    return None


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; this one continues it, keeping the
    columns it already has, and rewrites it (for a new column) through a temporary file."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                header = next(csv.reader(fh), [])
            self.metrics_keys = sorted(set(header))

    def _rewrite_with_new_header(self, fieldnames) -> None:
        with open(self.metrics_file_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        with atomic_open(self.metrics_file_path) as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


class AppendingCSVLogger(CSVLogger):
    """logs/metrics.csv of a stage: a resumed run appends its rows, never truncates the file. Rows
    are flushed with every checkpoint, so the file holds every step up to the one a rerun resumes
    from; rows of steps after that checkpoint (trained again by the rerun, to the same values) are
    replaced by the rerun's, so each step has one row (see ResumeCSV)."""

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self.save()

    def drop_rows_from(self, step: int) -> None:
        path = self.experiment.metrics_file_path
        if not os.path.isfile(path):
            return
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields, rows = reader.fieldnames or [], list(reader)
        kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
        if len(kept) < len(rows):
            with atomic_open(path) as fh:
                writer = csv.DictWriter(fh, fieldnames=fields)
                writer.writeheader()
                writer.writerows(kept)


class ResumeCSV(Callback):
    """When training (re)starts at step N, the CSV log keeps its rows of steps before N."""

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_step > 0 and trainer.is_global_zero:
            for lg in trainer.loggers:
                if isinstance(lg, AppendingCSVLogger):
                    lg.drop_rows_from(trainer.global_step)
