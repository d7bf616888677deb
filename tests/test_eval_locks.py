"""One evaluation per output folder: a second `evaluate.py episodes` on the same episodes folder,
or `evaluate.py static` on a test set's folder another process writes, stops with one line naming
the holder (the one DirLock of core/dir_lock.py) and writes nothing."""
import os
import socket

import pytest
from test_episodes import TEMPLATE, args_for

import evaluate
from core.dir_lock import DirLock
from test_static_inference import DEV


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"PID {os.getpid()} on {socket.gethostname()}" in err[0] and "wait for it to finish" in err[0]
    return err[0]


def test_second_episodes_run_on_one_folder_stops_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "episodes_out"
    with DirLock(out, what="evaluate.py episodes"):
        assert evaluate.main(args_for("http://127.0.0.1:9/v1", tmp_path, "limit=2")) == 2
    line = _one_line(capsys)
    assert line.startswith("evaluate.py episodes: error:") and f"{out} is in use by evaluate.py episodes" in line
    assert not (out / "episodes.jsonl").exists()


def test_static_on_a_test_set_folder_in_use_stops_naming_the_holder(tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "eval"
    run.mkdir()
    with DirLock(out / "dev", what="a static evaluation of dev"):
        assert evaluate.main(["static", "--run", str(run), "--recipe", str(TEMPLATE), "--references",
                              f"dev={DEV}", "--limit", "1", "--out", str(out)]) == 2
    assert f"{out / 'dev'} is in use by a static evaluation of dev" in _one_line(capsys)
    assert not (out / "dev" / "predictions.jsonl").exists()
