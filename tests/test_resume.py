"""A kill anywhere resumes exactly: same batches in the same order, CSV rows kept, a truncated
last.ckpt replaced by its previous copy; checkpoint writes never leave a half-written file."""
import csv
import errno
import os
import subprocess
import sys

import pytest
import torch
from transformers import LlamaForCausalLM

from conftest import QUICKSTART, REPO, kill_training_at
from core.run_dir import RunDir
from core.recipe import load_recipe
from pipeline.checkpoints import PREV_SUFFIX, AtomicCheckpointIO, pick_resume_checkpoint
from pipeline.sharded_export import resumable_checkpoint
from pipeline.stage_runner import run_recipe

ARGS = ["data.max_length=768", "data.val_fraction=0.2", "tokenizer.train_bpe.vocab_size=600",
        "logger.progress_bar=false", "logger.wandb.enabled=false", "evaluate.enabled=false",
        "checkpoint.every_n_train_steps=1", "stages.backbone.trainer.max_epochs=2",
        "data.micro_batch_size=4"]


def _metrics_rows(run_dir):
    with open(RunDir(run_dir).stage("backbone").csv_log, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("train/loss")]


def test_kill_mid_epoch_resumes_on_the_next_batch_and_matches_an_uninterrupted_run(tmp_path):
    ref_dir = tmp_path / "uninterrupted"
    run_recipe(load_recipe([QUICKSTART], ARGS + [f"run.dir={ref_dir}"]), only="backbone")
    ref_rows = _metrics_rows(ref_dir)
    steps_per_epoch = len(ref_rows) // 2

    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "train.py", str(QUICKSTART), *ARGS, f"run.dir={run_dir}", "--stage", "backbone"]
    last = RunDir(run_dir).stage("backbone").last_checkpoint
    at_kill = kill_training_at(cmd, last, lambda step: step >= 3 and step % steps_per_epoch, 240)
    assert not RunDir(run_dir).stage("backbone").done_file.exists()  # a killed stage is not done
    rows_at_kill = _metrics_rows(run_dir)
    assert rows_at_kill and int(rows_at_kill[-1]["step"]) >= at_kill - 2  # flushed with each checkpoint
    # ... and the disk filled up while the next checkpoint was written: last.ckpt is cut short.
    prev = last.with_name(last.name + PREV_SUFFIX)
    assert prev.is_file()
    prev_step = torch.load(prev, map_location="cpu", weights_only=False)["global_step"]
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])

    out = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "last.ckpt: it is truncated or corrupt" in out.stderr
    assert "resuming from the previous checkpoint" in out.stderr
    assert f"[backbone] resuming from {prev}" in out.stdout  # resumed, not started over
    assert "not resumable" not in out.stderr  # Lightning sees a resumable loader

    a = LlamaForCausalLM.from_pretrained(RunDir(ref_dir).stage("backbone").export).state_dict()
    b = LlamaForCausalLM.from_pretrained(RunDir(run_dir).stage("backbone").export).state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    # every step is in the CSV once, the rows from before the kill included, with the same losses
    rows = _metrics_rows(run_dir)
    assert [int(r["step"]) for r in rows] == [int(r["step"]) for r in ref_rows]
    for before in rows_at_kill[:prev_step]:
        assert {k: v for k, v in before.items() if v} in [{k: v for k, v in r.items() if v} for r in rows]
    for r, ref in zip(rows, ref_rows):
        assert float(r["train/loss"]) == pytest.approx(float(ref["train/loss"]), abs=1e-5), r["step"]
    steps = RunDir(run_dir).stage("backbone").read_done()["global_step"]
    assert steps == RunDir(ref_dir).stage("backbone").read_done()["global_step"] == int(rows[-1]["step"]) + 1


def test_checkpoint_write_is_atomic_and_keeps_the_previous_one(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    io.save_checkpoint({"global_step": 2, "w": torch.ones(3)}, path)
    assert torch.load(path, weights_only=False)["global_step"] == 2
    assert torch.load(str(path) + PREV_SUFFIX, weights_only=False)["global_step"] == 1

    real_save = torch.save

    def disk_full(obj, fh, *a, **k):
        real_save(obj, fh, *a, **k)
        fh.truncate(10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        io.save_checkpoint({"global_step": 3}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False)["global_step"] == 2  # untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt", "last.ckpt" + PREV_SUFFIX]


def test_unreadable_checkpoints_are_moved_aside_and_the_stage_starts_over(tmp_path, capsys):
    last = tmp_path / "last.ckpt"
    last.write_bytes(b"PK\x03\x04 cut short")
    assert pick_resume_checkpoint(last, resumable_checkpoint, repair=False) is None
    assert last.exists()  # ranks other than 0 choose the same, but move nothing
    assert pick_resume_checkpoint(last, resumable_checkpoint) is None
    assert (tmp_path / "last.ckpt.corrupt").is_file() and not last.exists()
    assert "starts over" in capsys.readouterr().err
