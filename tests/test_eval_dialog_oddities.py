"""α-UMi test dialogs with real-world oddities: evaluation reads every one as the reference
definition says (each assistant turn with a "Next:" marker is one step; its action comes from the
caller turn after it, its answer from the conclusion turn after it), counts the oddity and never
refuses the file. Training still rejects such dialogs."""
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from evaluation.steps.metrics import score
from evaluation.steps.extract import load_steps
from trajectories.sources import load_trajectories
from trajectories.trajectory import TrajectoryError

ROOT = Path(__file__).resolve().parents[1]
TOOLS = [{"Name": "f", "function": "find things", "input": {"q": "string, query"}},
         {"Name": "g", "function": "get things", "input": {}}]


def dialog(*turns):
    return {"tools": TOOLS, "instruction": "do it",
            "conversations": [{"from": "user", "value": "do it"}]
            + [{"from": who, "value": value} for who, value in turns]}


CALL = ("assistant", "I look it up. Next: caller.")
CALLER = ("caller", 'Action: f\nAction Input: {"q": "x"}')
OBS = ("observation", "found x")
FINISH = ("assistant", "I can answer. Next: conclusion.")
ANSWER = ("conclusion", "It is x.")

# (name, dialog, [(plan, action, answer)], anomalies)
CASES = [
    ("turns after a conclusion, empty observation, repeated conclusion",
     dialog(CALL, CALLER, OBS, FINISH, ("conclusion", "none"), ("observation", ""),
            ("assistant", "Let me try g. Next: caller."), ("caller", "Action: g\nAction Input: {}"),
            OBS, FINISH, ANSWER),
     [("call", "f", None), ("conclusion", None, "none"), ("call", "g", None), ("conclusion", None, "It is x.")],
     {"empty_conclusion": 1, "turn_after_conclusion": 5, "empty_observation": 1,
      "observation_without_caller_turn": 1, "repeated_conclusion": 1}),
    ("a call marker without its caller turn",
     dialog(CALL, OBS, FINISH, ANSWER),
     [("call", None, None), ("conclusion", None, "It is x.")],
     {"call_step_without_caller_turn": 1, "observation_without_caller_turn": 1}),
    ("a conclusion marker at the end of the dialog",
     dialog(CALL, CALLER, OBS, FINISH),
     [("call", "f", None), ("conclusion", None, None)],
     {"conclusion_step_without_conclusion_turn": 1}),
    ("an unmarked assistant turn with nothing implied, an unknown speaker",
     dialog(("assistant", "Hmm."), ("system", "x"), CALL, CALLER, OBS,
            ("assistant", "No way. Next: give up.")),
     [("call", "f", None), ("give_up", None, None)],
     {"assistant_turn_without_marker": 1, "unknown_speaker": 1}),
    ("a malformed caller turn and a call to an unlisted tool",
     dialog(CALL, ("caller", "Action: h"), OBS, CALL, ("caller", "Action:f\nAction Input:"), OBS),
     [("call", "h", None), ("call", "f", None)],
     {"malformed_caller_turn": 2, "call_to_unlisted_tool": 1}),
]


@pytest.mark.parametrize("name,record,expected,anomalies", CASES, ids=[c[0] for c in CASES])
def test_oddity_steps_follow_the_reference_definition(tmp_path, name, record, expected, anomalies):
    path = tmp_path / "test.json"
    path.write_text(json.dumps([record]))
    counted = Counter()
    steps = load_steps(path, counted)
    assert [(s["plan"], s["action"], s["answer"]) for s in steps] == expected
    assert dict(counted) == anomalies
    assert [s["id"] for s in steps] == [f"test-0000-{k:02d}" for k in range(len(expected))]
    # each step's context is every readable turn before it
    marked = [i for i, t in enumerate(record["conversations"])
              if t["from"] == "assistant" and "Next:" in t["value"]]
    assert len(marked) == len(steps)


def test_turns_after_a_conclusion_are_context_of_later_steps(tmp_path):
    record = CASES[0][1]
    path = tmp_path / "test.json"
    path.write_text(json.dumps([record]))
    steps = load_steps(path)
    last = steps[-1]["history"]
    assert [t["role"] for t in last] == ["planner", "caller", "observation", "planner", "summarizer",
                                        "observation", "planner", "caller", "observation"]
    assert last[4] == {"role": "summarizer", "answer": "none"}
    assert last[5] == {"role": "observation", "content": ""}


def test_training_still_rejects_the_odd_dialog(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([CASES[0][1]]))
    with pytest.raises(TrajectoryError):
        load_trajectories(path, format="alpha_umi_conversations")


def test_scoring_skips_missing_reference_parts_but_counts_the_plan(tmp_path):
    path = tmp_path / "test.json"
    path.write_text(json.dumps([CASES[1][1]]))
    steps = load_steps(path)
    preds = {steps[0]["id"]: {"plan": "call", "action": None},
             steps[1]["id"]: {"plan": "conclusion", "answer": "It is x."}}
    m = score(steps, preds)
    assert m["plan_acc"] == 100.0
    assert m["act_em"] is None and m["arg_f1"] is None  # no reference action to compare with
    assert m["rouge_l"] == pytest.approx(100.0)


def test_cli_reports_anomalies_and_takes_every_dialog(tmp_path):
    path = tmp_path / "test.json"
    path.write_text(json.dumps([c[1] for c in CASES]))
    out = tmp_path / "steps.jsonl"
    proc = subprocess.run([sys.executable, "evaluate.py", "steps", "--references", str(path),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["n_steps"] == sum(len(c[2]) for c in CASES)
    total = Counter()
    for c in CASES:
        total.update(c[3])
    assert report["anomalies"] == dict(sorted(total.items()))
