import json
import subprocess
import sys
from pathlib import Path

import pytest
from rouge import Rouge

from evaluation import EvaluationError
from evaluation.steps.metrics import arg_f1, load_predictions, score
from evaluation.steps.extract import load_steps

ROOT = Path(__file__).parents[1]
DEV = ROOT / "data/toolbench/dev_conversations.json"
TOOLS = ["A", "B"]


def test_gold_predictions_score_perfectly():
    steps = load_steps(DEV)
    m = score(steps, {s["id"]: s for s in steps})
    assert m["plan_acc"] == m["act_em"] == m["arg_f1"] == 100.0
    assert m["rouge_l"] == pytest.approx(100.0, abs=1e-4)  # the package's F has a 1e-8 epsilon
    assert m["hallu"] == 0.0 and m["hallucinated_names"] == {}
    assert m["counts"]["reference"] == {"call": 121, "conclusion": 35, "give_up": 15}
    assert m["counts"]["predicted"] == m["counts"]["reference"]
    assert m["n_steps"] == 171 and m["n_missing"] == 0


def test_well_formed_counts_the_format_not_correctness():
    steps = [{"id": f"s{i}", "plan": "call", "action": "A", "arguments": "{}", "answer": None,
              "tools": TOOLS} for i in range(5)] + [
             {"id": f"f{i}", "plan": "conclusion", "action": None, "arguments": None, "answer": "ok",
              "tools": TOOLS} for i in range(2)]
    preds = {"s0": {"plan": "call", "action": "Z", "arguments": '{"q": 1}'},  # wrong but well formed
             "s1": {"plan": "call", "action": "A", "arguments": "q=1"},       # arguments not JSON
             "s2": {"plan": "call", "action": "Action: Action:", "arguments": "{}"},  # no name
             "s4": {"plan": None},                                             # no decision
             "s3": {"plan": "conclusion", "answer": "  "},                         # empty answer
             "f0": {"plan": "conclusion", "answer": "wrong answer"},
             # f1 missing: not an output, not counted
             }
    m = score(steps, preds)
    assert m["well_formed"] == {"planner": 500 / 6, "caller": 100 / 3, "summarizer": 50.0}
    assert m["act_em"] == 20.0 and m["hallu"] == pytest.approx(200 / 7)  # s1 names the right tool
    gold = load_steps(DEV)
    assert score(gold, {s["id"]: s for s in gold})["well_formed"] == {
        "planner": 100.0, "caller": 100.0, "summarizer": 100.0}


def test_arg_f1_cases():
    assert arg_f1("{}", "{}") == 1.0
    assert arg_f1("{}", '{"a": 1}') == 0.0
    assert arg_f1("{}", None) == 1.0  # no Action Input means {}
    # wrong value: half a hit; P = R = 0.5 / 1
    assert arg_f1('{"q": "x"}', '{"q": "y"}') == 0.5
    # partial: hit = 1 ("a") + 0.5 ("b"); P = 1.5 / 2 = 0.75, R = 1.5 / 3 = 0.5,
    # F1 = 2 * 0.75 * 0.5 / 1.25 = 0.6
    assert arg_f1('{"a": 1, "b": 2, "c": 3}', '{"a": 1, "b": 9}') == pytest.approx(0.6)
    assert arg_f1('{"q": "x"}', "q=x") == 0.0  # not JSON
    assert arg_f1('{"q": "x"}', '{"z": "x"}') == 0.0
    assert arg_f1('{\n  "q": "x"\n}', '{"q":"x"}') == 1.0  # whitespace does not matter
    assert arg_f1('{"q": "x"}', {"q": "x"}) == 1.0  # already parsed
    assert arg_f1("q=x", " q=x ") == 1.0  # unparseable reference: raw text comparison
    assert arg_f1("q=x", "q=y") == 0.0


def _ref(i, plan, action=None, arguments=None, answer=None):
    return {"id": f"s{i}", "plan": plan, "action": action, "arguments": arguments,
            "answer": answer, "tools": TOOLS}


REFS = [
    _ref(1, "call", "A", '{"q": "x"}'),
    _ref(2, "call", "B", '{"a": 1, "b": 2, "c": 3}'),
    _ref(3, "call", "A", '{"q": "x"}'),
    _ref(4, "conclusion", answer="the weather is sunny today"),
    _ref(5, "give_up"),
    _ref(6, "call", "A", "{}"),
    _ref(7, "conclusion", answer="paris is the capital of france"),
    _ref(8, "call", "B", '{"k": "v"}'),
]
PREDS = {
    "s1": {"plan": "call", "action": "A", "arguments": '{"q": "y"}'},     # wrong value: 0.5
    "s2": {"plan": "call", "action": "B", "arguments": '{"a": 1, "b": 9}'},  # partial: 0.6
    "s3": {"plan": "call", "action": "Z", "arguments": '{"q": "x"}'},     # hallucinated: 0
    "s4": {"plan": "conclusion", "answer": "the weather is sunny"},
    "s5": {"plan": "conclusion", "answer": "I could not do it."},             # wrong plan
    # s6 missing: wrong plan, wrong action, args 0
    "s7": {"plan": "call", "action": "A", "arguments": "{}"},             # not a conclusion: "none"
    "s8": {"plan": "call", "action": "B", "arguments": "k=v"},            # non-JSON args: 0
}


def test_hand_made_predictions():
    m = score(REFS, PREDS)
    assert m["plan_acc"] == pytest.approx(100 * 5 / 8)        # s1 s2 s3 s4 s8
    assert m["act_em"] == pytest.approx(100 * 3 / 5)          # s1 s2 s8 of s1 s2 s3 s6 s8
    assert m["arg_f1"] == pytest.approx(100 * (0.5 + 0.6) / 5)
    assert m["hallu"] == pytest.approx(100 * 1 / 8)
    assert m["hallucinated_names"] == {"Z": 1}
    # s4: LCS 4, P = 4/4, R = 4/5, F = 0.8889; s7: "none" scores 0; mean 0.4444
    expected = Rouge().get_scores(["the weather is sunny", "none"],
                                  ["the weather is sunny today", "paris is the capital of france"],
                                  avg=True)["rouge-l"]["f"]
    assert m["rouge_l"] == pytest.approx(100 * expected)
    assert m["rouge_l"] == pytest.approx(100 * 4 / 9, abs=1e-4)
    assert m["counts"] == {"reference": {"call": 5, "conclusion": 2, "give_up": 1},
                           "predicted": {"call": 5, "conclusion": 2, "give_up": 0}}
    assert m["n_steps"] == 8 and m["n_missing"] == 1


def test_empty_and_degenerate_answers():
    refs = [_ref(1, "conclusion", answer="the answer is 42"), _ref(2, "conclusion", answer="yes")]
    m = score(refs, {"s1": {"plan": "conclusion", "answer": ""},
                     "s2": {"plan": "conclusion", "answer": "..."}})
    assert m["rouge_l"] == 0.0  # both scored as "none" instead of crashing the package
    assert m["act_em"] is None and m["arg_f1"] is None  # no reference call step
    long = " ".join(f"w{i}" for i in range(700))  # deeper than the default recursion limit
    m = score([_ref(1, "conclusion", answer=long)], {"s1": {"plan": "conclusion", "answer": long}})
    assert m["rouge_l"] == pytest.approx(100.0, abs=1e-4)


def test_no_predictions():
    m = score(REFS, {})
    assert m["plan_acc"] == m["act_em"] == m["arg_f1"] == m["rouge_l"] == m["hallu"] == 0.0
    assert m["n_missing"] == 8


def test_unknown_id_names_file_and_line(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text('{"id": "s1", "plan": "call"}\n{"id": "nope", "plan": "call"}\n')
    with pytest.raises(EvaluationError, match=r"preds.jsonl, line 2: unknown step id 'nope'"):
        load_predictions(path, [r["id"] for r in REFS])
    path.write_text('{"id": "s1"}\n{"id": "s1"}\n')
    with pytest.raises(EvaluationError, match="line 2.*twice"):
        load_predictions(path, ["s1"])


def _run(*args):
    return subprocess.run([sys.executable, "evaluate.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


def test_cli_score(tmp_path):
    steps = tmp_path / "steps.jsonl"
    assert _run("steps", "--references", DEV, "--out", steps).returncode == 0
    out = tmp_path / "scores" / "metrics.json"
    proc = _run("score", "--references", DEV, "--predictions", steps, "--out", out)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed == json.loads(out.read_text())
    assert printed["plan_acc"] == printed["act_em"] == printed["arg_f1"] == 100.0
    assert printed["hallu"] == 0.0 and printed["n_missing"] == 0

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "dev_conversations-0000-00", "plan": "call"}\n{"id": "x"}\n')
    proc = _run("score", "--references", DEV, "--predictions", bad)
    assert proc.returncode == 2
    assert f"{bad}, line 2: unknown step id 'x'" in proc.stderr


def test_other_spellings_of_a_decision_are_read_as_it():
    """Predictions written with the α-UMi release's plan label ("finish") or a decision word."""
    refs = [_ref(1, "conclusion", answer="done"), _ref(2, "give_up"), _ref(3, "call", action="A")]
    m = score(refs, {"s1": {"plan": "finish", "answer": "done"}, "s2": {"plan": "give up"},
                     "s3": {"plan": "caller", "action": "A", "arguments": "{}"}})
    assert m["plan_acc"] == 100.0 and m["counts"]["predicted"] == {"call": 1, "conclusion": 1, "give_up": 1}
