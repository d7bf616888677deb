"""GenTool metric values on hand-made predictions."""
import math

import pytest

from evaluation.gentool.metrics import argument_f1, ndcg, score_selection
from evaluation.gentool.table import scenario_table

GR = "generate_response"


def rec(i, kind, call, relevant, args="{}", scenario="seen_query/seen_tool"):
    return {"id": str(i), "query": "q", "toolset": [], "ranking": relevant + ["other"], "relevant": relevant,
            "call": {"name": call, "arguments": args}, "meta": {"kind": kind, "scenario": scenario}}


RECORDS = [
    rec(0, "zero", GR, [GR]),
    rec(1, "partial", "weak", ["weak", GR], '{"a": 1}'),
    rec(2, "original", "strong", ["strong", "weak", GR], '{"a": 1, "b": "x"}', "unseen_query/unseen_tool"),
    rec(3, "flipped", "weak", ["weak", "strong", GR], '{"a": 2}', "unseen_query/unseen_tool"),
]
PREDS = {
    "0": {"name": GR, "arguments": "{}", "ranking": [GR, "other"]},                  # all right
    "1": {"name": "strong", "arguments": '{"a": 1}', "ranking": [GR, "weak", "other"]},  # wrong tool, not GR
    "2": {"name": "strong", "arguments": '{"a": 1, "b": "y"}', "ranking": ["strong", "weak", GR]},
    "3": {"name": "strong", "arguments": '{"a": 2}', "ranking": ["strong", "weak", GR]},  # failed the flip
}


def test_values_on_hand_made_predictions():
    m = score_selection(RECORDS, PREDS, GR)
    a = m["all"]
    assert a["n"] == 4
    assert a["selection_acc"] == 0.5                 # 0 and 2
    assert a["arg_em"] == 0.25                       # only 0 (2 has b: y)
    assert a["arg_f1"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert a["zero_to_one_acc"] == 1.0               # GR chosen exactly for the zero example
    assert a["weak_to_strong_acc"] == 0.5            # 2 right, 3 wrong
    assert a["top1"] == 0.5                          # 0 and 2
    # example 1: GR (gain 1) first, 'weak' (gain 2) second
    ndcg1 = (1 / math.log2(2) + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    dcg3 = (2 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(4)) / (3 + 2 / math.log2(3) + 1 / math.log2(4))
    assert a["ndcg"] == pytest.approx((1 + ndcg1 + 1 + dcg3) / 4, abs=1e-4)
    assert m["seen_query/seen_tool"]["n"] == 2 and m["unseen_query/unseen_tool"]["selection_acc"] == 0.5


def test_missing_predictions_leave_metrics_blank_and_unparseable_calls_count_wrong():
    m = score_selection(RECORDS, {"2": {"name": None, "arguments": ""}}, GR)["all"]
    assert m["top1"] is None and m["ndcg"] is None
    assert m["selection_acc"] == 0.0 and m["weak_to_strong_acc"] == 0.0


def test_argument_f1_and_ndcg_edges():
    assert argument_f1({}, {}) == 1.0 and argument_f1(None, {"a": 1}) == 0.0
    assert argument_f1({"a": 1, "b": 2}, {"a": 1}) == pytest.approx(2 / 3)
    assert ndcg(["a", "b"], ["a", "b"]) == 1.0 and ndcg(["c", "d"], ["a", "b"]) == 0.0


def test_scenario_table_lists_each_scenario_and_the_training_examples():
    m = {"test": score_selection(RECORDS, PREDS, GR), "train": score_selection(RECORDS[:1], PREDS, GR)}
    table = scenario_table(m)
    assert "| seen query, seen tool | 2 | 50.0 |" in table
    assert "| unseen query, unseen tool | 2 | 50.0 |" in table
    assert "| training examples | 1 | 100.0 |" in table
    assert "unseen query, seen tool" not in table
