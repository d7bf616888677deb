import json
from collections import Counter
import subprocess
import sys
from pathlib import Path

import pytest

from trajectories.trajectory import write_jsonl_atomic
from evaluation import EvaluationError
from evaluation.steps.extract import load_steps, plan_counts, trajectory_steps

ROOT = Path(__file__).parents[1]
DEV = ROOT / "data/toolbench/dev_conversations.json"


@pytest.fixture(scope="module")
def dev_steps():
    return load_steps(DEV)


def test_dev_step_counts(dev_steps):
    assert len(dev_steps) == 171
    assert plan_counts(dev_steps) == {"call": 121, "conclusion": 35, "give_up": 15}
    assert len({s["id"] for s in dev_steps}) == 171


def test_dev_first_steps(dev_steps):
    dialogs = json.loads(DEV.read_text())
    conv = dialogs[0]["conversations"]
    first = dev_steps[0]
    assert first["id"] == "dev_conversations-0000-00"
    assert first["plan"] == "call"
    assert first["action"] == "list_all_simulations_for_geolocation_simulation_for_mobile_apps"
    assert first["arguments"] == "{}"
    assert first["answer"] is None
    assert first["instruction"] == dialogs[0]["instruction"]
    assert first["history"] == []  # the opening user turn is the instruction
    assert first["tools"] == [t["Name"] for t in dialogs[0]["tools"]]
    assert first["thought"] == conv[1]["value"][:-len(" Next: caller.")]
    second = dev_steps[1]
    assert [t["role"] for t in second["history"]] == ["planner", "caller", "observation"]
    assert second["history"][2]["content"] == conv[3]["value"]


def test_dev_conclusion_and_give_up(dev_steps):
    dialogs = json.loads(DEV.read_text())
    finish = next(s for s in dev_steps if s["plan"] == "conclusion")
    d, _ = (int(x) for x in finish["id"].split("-")[1:])
    conclusion = [c["value"] for c in dialogs[d]["conversations"] if c["from"] == "conclusion"]
    assert finish["answer"] == conclusion[0]
    assert finish["action"] is None and finish["arguments"] is None
    give_up = next(s for s in dev_steps if s["plan"] == "give_up")
    assert give_up["answer"] is None and give_up["action"] is None


def test_dev_multiline_arguments_and_unmarked_turns(dev_steps):
    call = next(s for s in dev_steps if s["action"] == "video_details_for_bing_video_search")
    assert json.loads(call["arguments"]) == {"modules": "relatedVideos", "is_id": "12345"}
    # dialog 0, conversation turn 11 has no marker: not a step, and dropped from the history
    dialog0 = [s for s in dev_steps if s["id"].startswith("dev_conversations-0000-")]
    assert [s["plan"] for s in dialog0] == ["call", "call", "call", "give_up"]
    assert dialog0[-1]["history"][-1]["role"] == "observation"
    assert len(dialog0[-1]["history"]) == len(dialog0[-2]["history"]) + 3


def test_same_steps_as_the_canonical_loader(dev_steps):
    from trajectories.sources import load_trajectories

    trajs = load_trajectories(DEV, format="alpha_umi_conversations").trajectories
    canon = [s for i, t in enumerate(trajs)
             for s in trajectory_steps(t, f"dev_conversations-{i:04d}")]
    keys = ("id", "plan", "action", "arguments", "answer", "tools", "instruction", "history",
            "thought", "tool_specs")
    assert [[s[k] for k in keys] for s in canon] == [[s[k] for k in keys] for s in dev_steps]


def test_training_marker_and_errors(tmp_path):
    dialog = {"tools": [{"Name": "f", "function": "d", "input": {}}], "instruction": "do it",
              "conversations": [
                  {"from": "user", "value": "do it"},
                  {"from": "assistant", "value": "I call f.\n Next: caller."},
                  {"from": "caller", "value": "Action: f\nAction Input: {\"a\": 1}"},
                  {"from": "observation", "value": ""},
                  {"from": "assistant", "value": "Done.\n Next: give up."}]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps([dialog]))
    steps = load_steps(path)
    assert [(s["plan"], s["thought"]) for s in steps] == [("call", "I call f."),
                                                           ("give_up", "Done.")]
    assert steps[0]["arguments"] == '{"a": 1}'
    # an unmarked turn before a caller is no step but implies a call in later histories
    dialog["conversations"][1]["value"] = "I call f."
    path.write_text(json.dumps([dialog]))
    steps = load_steps(path)
    assert [s["plan"] for s in steps] == ["give_up"]
    assert steps[0]["history"][0] == {"role": "planner", "thought": "I call f.",
                                      "decision": "call"}
    dialog["conversations"][1]["value"] = "I call f. Next: caller."
    dialog["conversations"] = dialog["conversations"][:2]
    path.write_text(json.dumps([dialog]))
    anomalies = Counter()
    steps = load_steps(path, anomalies)  # a marker without its caller turn is still a step
    assert [(s["plan"], s["action"]) for s in steps] == [("call", None)]
    assert anomalies == {"call_step_without_caller_turn": 1}


def _canonical():
    tools = [{"name": "weather", "description": "", "parameters": {}},
             {"name": "news", "description": "", "parameters": {}}]
    return [
        {"id": "t1", "tools": tools, "instruction": "Weather in Paris?", "turns": [
            {"role": "planner", "thought": "Ask the weather tool.", "decision": "call"},
            {"role": "caller", "name": "weather", "arguments": "{\"city\": \"Paris\"}"},
            {"role": "observation", "content": "sunny"},
            {"role": "planner", "thought": "Answer.", "decision": "conclusion"},
            {"role": "summarizer", "answer": "It is sunny in Paris."}]},
        {"id": "t2", "tools": tools, "instruction": "News?", "turns": [
            {"role": "planner", "thought": "Cannot.", "decision": "give_up"}]},
    ]


def test_canonical_jsonl(tmp_path):
    path = tmp_path / "canon.jsonl"
    write_jsonl_atomic(path, _canonical())
    steps = load_steps(path)
    assert [(s["id"], s["plan"], s["action"], s["arguments"], s["answer"]) for s in steps] == [
        ("canon-0000-00", "call", "weather", "{\"city\": \"Paris\"}", None),
        ("canon-0000-01", "conclusion", None, None, "It is sunny in Paris."),
        ("canon-0001-00", "give_up", None, None, None)]
    assert [len(s["history"]) for s in steps] == [0, 3, 0]
    assert steps[0]["tools"] == ["weather", "news"]
    assert steps[2]["trajectory_id"] == "t2"


def test_unknown_record(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"foo": 1}\n')
    with pytest.raises(EvaluationError, match="bad.jsonl: record 0"):
        load_steps(path)


def test_cli_steps(tmp_path):
    out = tmp_path / "steps.jsonl"
    proc = subprocess.run([sys.executable, "evaluate.py", "steps", "--references", str(DEV),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"] == {"call": 121, "conclusion": 35, "give_up": 15}
    lines = out.read_text().splitlines()
    assert len(lines) == 171
    first = json.loads(lines[0])
    assert {"id", "plan", "action", "arguments", "answer", "tools", "history",
            "instruction"} <= set(first)
    assert [p.name for p in tmp_path.iterdir()] == ["steps.jsonl"]  # no temp file left
    assert load_steps(out) == load_steps(DEV)  # a steps file reads back as references
    # pinned: the lenient reader of test dialogs gives the strict loader's steps, byte for byte
    import hashlib
    assert hashlib.md5(out.read_bytes()).hexdigest() == "b637ff6425d414f63c344c1f0ae23003"
