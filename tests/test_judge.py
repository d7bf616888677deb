"""The judge's verdict parsing and metrics, and the ToolEval-style pass rate over a ToolBench test
set (tools replayed) from the same machinery, with the scripted loopback server."""
import json
from pathlib import Path

import pytest
from fakes.agent_script import agent_reply
from fakes.openai_server import FakeOpenAIServer

import evaluate
from evaluation.episodes.judge import Judge, judge_metrics
from trajectories.sources import load_trajectories

REPO = Path(__file__).resolve().parents[1]
DEV = REPO / "data/toolbench/dev_conversations.json"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def judge(kind):
    cfg = {"kind": kind, "prompts": {kind: "{{instruction}}", "fix": "again"},
           "llm": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout_s": 1, "max_retries": 0,
                   "concurrency": 1, "backoff_base_s": 0.1, "backoff_max_s": 0.1}}
    return Judge(cfg)


@pytest.mark.parametrize("text, expected", [
    ("Process: Yes\nAnswer: No\nReasons: x", {"process": "yes", "answer": "no"}),
    ("**Process correctness:** uncertain\n- Answer: YES", {"process": "uncertain", "answer": "yes"}),
    ("Process: Yes", None),                      # one of two verdicts missing
    ("The process looks right.", None),
])
def test_verdict_parsing(text, expected):
    assert judge("process_answer").parse(text) == expected


def test_metrics_count_every_instance():
    recs = [{"api": "A", "verdict": {"process": "yes", "answer": "yes"}},
            {"api": "A", "verdict": {"process": "yes", "answer": "no"}},
            {"api": "B", "verdict": {"process": "unparseable", "answer": "yes"}},
            {"api": "B", "verdict": None},                      # crashed or hit max_steps
            {"api": "B", "verdict": {"error": "LLMError: ..."}}]  # the judge itself failed
    m = judge_metrics(recs, "process_answer")
    assert (m["proc"], m["ans"], m["both"]) == (40.0, 40.0, 20.0)
    assert m["per_api"]["A"] == {"n": 2, "proc": 100.0, "ans": 50.0, "both": 50.0}
    assert m["verdicts"]["process"] == {"judge_error": 1, "not_judged": 1, "unparseable": 1, "yes": 2}
    solved = [{"verdict": {"solved": v}} for v in ("yes", "uncertain", "no", "yes")]
    assert judge_metrics(solved, "pass_rate")["pass_rate"] == 50.0
    assert judge_metrics(solved, "pass_rate", uncertain_credit=0.5)["pass_rate"] == 62.5


def test_toolbench_pass_rate_with_replayed_tools(tmp_path):
    refs = load_trajectories(DEV).trajectories[:6]
    golden = {t["instruction"]: [(c["name"], c["arguments"]) for c in t["turns"] if c["role"] == "caller"]
              for t in refs}
    solved = {refs[0]["instruction"], refs[1]["instruction"], refs[2]["instruction"]}

    def verdict(body):
        text = body["messages"][0]["content"]
        return "Solved: Yes" if any(i in text for i in solved) else "Solved: No"
    rules = [{"match": "You check whether an assistant", "reply": verdict},
             {"match": "Task: ", "reply": agent_reply(golden)}]
    with FakeOpenAIServer(rules) as server:
        rc = evaluate.main(["episodes", str(REPO / "recipes/eval/toolbench_pass_rate.yaml"), "limit=6",
                            "progress=false", f"judge.llm.base_url={server.base_url}",
                            "--run", str(tmp_path / "run"), "--recipe", str(REPO / "recipes/template/glpft.yaml"),
                            "--endpoint", f"all={server.base_url}", "--max-new-tokens", "128",
                            "--out", str(tmp_path / "episodes_out")])
    assert rc == 0
    recs = [json.loads(line) for line in (tmp_path / "episodes_out/episodes.jsonl").read_text().splitlines()]
    assert len(recs) == 6 and {r["termination"] for r in recs} == {"conclusion"}
    # the replayed observations are the recorded ones
    first = next(r for r in recs if r["id"] == refs[0]["id"])["trajectory"]
    recorded = [t["content"] for t in refs[0]["turns"] if t["role"] == "observation"]
    assert [t["content"] for t in first["turns"] if t["role"] == "observation"] == recorded
    assert json.loads((tmp_path / "episodes_out/metrics.json").read_text())["pass_rate"] == 50.0
