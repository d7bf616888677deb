"""One run per directory, and a full disk survived: a second train.py on a run directory stops
naming the holder; a lock left by kill -9 is taken over; a checkpoint or export write that runs
out of space ends in one line, keeps the previous checkpoint, and the rerun resumes."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import train
from conftest import QUICKSTART, REPO
from core.dir_lock import DirLock, LockHeld
from core.errors import DiskFull
from core.run_dir import RunDir
from pipeline.checkpoints import PREV_SUFFIX, AtomicCheckpointIO

ONE_STAGE = ["stages.planner.enabled=false", "stages.caller.enabled=false", "stages.summarizer.enabled=false",
             "evaluate.enabled=false", "logger.progress_bar=false", "logger.wandb.enabled=false",
             "tokenizer.train_bpe.vocab_size=600", "data.max_length=768", "checkpoint.every_n_train_steps=1",
             "stages.backbone.trainer.max_epochs=1", "data.micro_batch_size=4"]

HOLD = "import sys, time; from core.run_dir import RunDir\nwith RunDir(sys.argv[1]).lock():\n" \
       "    print('held', flush=True); time.sleep(120)"


def _holder(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_on_a_locked_run_dir_stops_naming_the_holder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    proc = _holder(run_dir)
    try:
        assert train.main([str(QUICKSTART), f"run.dir={run_dir}", *ONE_STAGE]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"PID {proc.pid} on {socket.gethostname()}" in err[0]
        assert f"training of {run_dir}" in err[0] and "train.py: error:" in err[0]
        assert not RunDir(run_dir).recipe_file.exists()  # the second run wrote nothing
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_left_by_kill_9_is_taken_over(tmp_path, capsys):
    run_dir = tmp_path / "run"
    proc = _holder(run_dir)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with RunDir(run_dir).lock():
        assert f'"pid": {os.getpid()}' in (run_dir / DirLock.FILE).read_text()
        with pytest.raises(LockHeld, match=f"PID {os.getpid()}"):  # held: a second taker stops
            DirLock(run_dir).__enter__()
    assert f"taking over the lock left by PID {proc.pid}" in capsys.readouterr().err
    with RunDir(run_dir).lock():  # released on exit: no warning the next time
        pass
    assert "taking over" not in capsys.readouterr().err


def test_stage_before_its_init_stage_leaves_no_run_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train.main([str(QUICKSTART), f"run.dir={run_dir}", "--stage", "planner"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--stage planner starts from stage backbone" in err[0] and "run `backbone` first" in err[0]
    assert not run_dir.exists()


def _enospc_save(fail_on):
    real, calls = torch.save, []

    def save(obj, fh, *a, **k):
        calls.append(1)
        if len(calls) in fail_on:
            real(obj, fh, *a, **k)
            fh.truncate(100)
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0: "
                               "PytorchStreamWriter failed writing file data/0: file write failed")
        return real(obj, fh, *a, **k)
    return save


def test_checkpoint_write_on_a_full_disk_is_one_line_and_keeps_the_previous(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)
    monkeypatch.setattr(torch, "save", _enospc_save(fail_on={1}))
    with pytest.raises(DiskFull) as info:
        io.save_checkpoint({"global_step": 2, "w": torch.ones(1000)}, path)
    assert str(info.value).startswith(f"{path}: no space left") and "needs about 3.9 KiB" in str(info.value)
    assert torch.load(path, weights_only=False)["global_step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp file left


def test_disk_full_mid_training_then_export_then_resume(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    args = [str(QUICKSTART), f"run.dir={run_dir}", *ONE_STAGE]
    monkeypatch.setattr(torch, "save", _enospc_save(fail_on={3}))
    assert train.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    last = RunDir(run_dir).stage("backbone").last_checkpoint
    assert err[-1].startswith(f"train.py: error: {last}: no space left") and "Traceback" not in "\n".join(err)
    assert torch.load(last, weights_only=False)["global_step"] == 2  # the one before stays valid
    monkeypatch.undo()

    from transformers import PreTrainedModel
    real = PreTrainedModel.save_pretrained

    def full(self, *a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    assert train.main(args) == 2
    export = RunDir(run_dir).stage("backbone").export
    assert f"{export}: no space left" in capsys.readouterr().err
    assert not export.exists() and not export.with_name("hf.tmp").exists()
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", real)

    assert train.main(args) == 0
    out = capsys.readouterr().out
    assert f"[backbone] resuming from {last}" in out and RunDir(run_dir).stage("backbone").is_done()
