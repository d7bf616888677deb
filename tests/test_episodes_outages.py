"""An outage never becomes a score: an endpoint that fails for good ends `evaluate.py episodes`
with exit 1 and one line naming the role and URL, after writing what finished; errored and
unjudged episodes run again on rerun; a hung server costs its timeout x attempts; replies are
capped; Ctrl-C is one line and a resumable file."""
import json
import socket
import time

import pytest
from fakes.agent_script import JUDGE, rules
from fakes.openai_server import FakeOpenAIServer
from test_episodes import args_for, read

import evaluate
from evaluation.episodes import runner as episodes_runner
from trajectories.sources import load_trajectories
from test_episodes import DATA


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


@pytest.fixture(scope="module")
def references():
    return load_trajectories(DATA, format="toolalpaca_eval").trajectories[:8]


@pytest.fixture(scope="module")
def golden(references):
    return {t["instruction"]: [(c["name"], c["arguments"]) for c in t["turns"] if c["role"] == "caller"]
            for t in references}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: connections are refused


def test_unreachable_endpoint_exits_1_naming_role_and_url_then_rerun_runs_everything(
        tmp_path, golden, capsys):
    down = f"http://127.0.0.1:{_free_port()}/v1"
    assert evaluate.main(args_for(down, tmp_path, "limit=8", in_flight=4)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the planner endpoint {down} failed for good" in err[0]
    assert "rerun the same command" in err[0]
    assert not (tmp_path / "episodes_out" / "metrics.json").exists()  # no score from an outage
    with FakeOpenAIServer(rules(golden)) as server:
        assert evaluate.main(args_for(server.base_url, tmp_path, "limit=8", in_flight=4)) == 0
    recs = read(tmp_path)
    assert len(recs) == 8 and all(r["termination"] == "conclusion" for r in recs)


def test_hung_endpoint_costs_timeout_times_attempts_with_requests_in_parallel(tmp_path, golden, capsys):
    with FakeOpenAIServer([{"match": "Task: ", "delay": 30.0, "reply": "late"}, *rules(golden)]) as server:
        t0 = time.perf_counter()
        rc = evaluate.main(args_for(server.base_url, tmp_path, "limit=8", "endpoint.timeout_s=0.5",
                                    "endpoint.max_retries=1", "endpoint.backoff_base_s=0.1", in_flight=8))
        wall = time.perf_counter() - t0
    assert rc == 1 and "timeouts" in capsys.readouterr().err
    # the batch (1 s: 0.5 s x 2 attempts), then each request alone, all at once (1 s)
    assert wall < 6, wall


def test_errored_and_judge_failed_episodes_run_again_on_rerun(tmp_path, references, golden):
    crash, unjudged = references[1]["instruction"], references[5]["instruction"]
    extra = [{"match": [f"Task: {crash}", "Planner:"], "status": 500, "times": 2},
             {"match": [JUDGE, unjudged], "malformed": "null", "times": 1}]
    with FakeOpenAIServer(rules(golden, extra=extra)) as server:
        assert evaluate.main(args_for(server.base_url, tmp_path, "limit=8", "down_after=3", in_flight=8)) == 0
        first = {r["id"]: r for r in read(tmp_path)}
        assert first[references[1]["id"]]["termination"] == "error"
        assert "error" in first[references[5]["id"]]["verdict"]  # content: null, after the client's retries
        assert evaluate.main(args_for(server.base_url, tmp_path, "limit=8", in_flight=8)) == 0
    summary = json.loads((tmp_path / "episodes_out" / "summary.json").read_text())
    assert summary["run"]["episodes"] == 2 and summary["errors"] == 0
    assert summary["judge"]["verdicts"]["process"] == {"yes": 8}


def test_completions_and_judge_replies_are_capped(tmp_path, references, golden):
    huge = references[2]["instruction"]
    extra = [{"match": [JUDGE, huge], "reply": "Process: Yes\nAnswer: Yes\nReasons: " + "x" * 50_000}]
    with FakeOpenAIServer(rules(golden, extra=extra)) as server:
        assert evaluate.main(args_for(server.base_url, tmp_path, "limit=3", "judge.llm.max_reply_chars=1000",
                                      in_flight=3)) == 0
    rec = {r["id"]: r for r in read(tmp_path)}[references[2]["id"]]
    assert len(rec["verdict"]["raw"]) == 1000 and rec["verdict"]["process"] == "yes"
    summary = json.loads((tmp_path / "episodes_out" / "summary.json").read_text())
    assert summary["judge_llm"]["truncated_replies"] == 1


def test_ctrl_c_is_one_line_and_the_file_resumes(tmp_path, golden, capsys, monkeypatch):
    real = episodes_runner.EpisodeRunner._close
    closed = []

    def interrupt_after_two(self, ep, active, write):
        real(self, ep, active, write)
        closed.append(1)
        if len(closed) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(episodes_runner.EpisodeRunner, "_close", interrupt_after_two)
    with FakeOpenAIServer(rules(golden)) as server:
        assert evaluate.main(args_for(server.base_url, tmp_path, "limit=8", in_flight=1)) == 130
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "interrupted" in err[0] and "rerun the same command" in err[0]
        assert len(read(tmp_path)) == 2
        monkeypatch.setattr(episodes_runner.EpisodeRunner, "_close", real)
        assert evaluate.main(args_for(server.base_url, tmp_path, "limit=8", in_flight=4)) == 0
    assert sorted(r["id"] for r in read(tmp_path)) == sorted({r["id"] for r in read(tmp_path)})
    assert len(read(tmp_path)) == 8
