"""GenTool metrics over tool-selection examples and predictions, per scenario and overall.

A prediction is {"id", "ranking": [names] or None, "name": str or None, "arguments": text or None}
(ranking from a ranking or joint model, the call from a selection or joint model).
- selection_acc: the called tool is the gold one.
- top1: the first ranked tool is the gold first; ndcg: NDCG at the number of relevant tools, with
  graded gains (the first relevant tool highest).
- arg_em: right tool and the same argument object; arg_f1: F1 over (key, value) pairs, 0 for a
  wrong tool.
- zero_to_one_acc (zero / partial / original examples): generate_response chosen exactly when no
  suitable tool is offered.
- weak_to_strong_acc (original / flipped examples, both versions offered): the strong version for
  an original query, the weak one for a flipped query.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict

from trajectories.selection import SCENARIOS

ZERO_TO_ONE = ("zero", "partial", "original")
WEAK_TO_STRONG = ("original", "flipped")
METRICS = ("selection_acc", "top1", "ndcg", "arg_em", "arg_f1", "zero_to_one_acc", "weak_to_strong_acc")


def parse_arguments(text) -> dict | None:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text) if text and text.strip() else {}
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def argument_f1(pred: dict | None, gold: dict) -> float:
    if pred is None:
        return 0.0
    p = {(k, json.dumps(v, sort_keys=True)) for k, v in pred.items()}
    g = {(k, json.dumps(v, sort_keys=True)) for k, v in gold.items()}
    if not p and not g:
        return 1.0
    hit = len(p & g)
    if not hit:
        return 0.0
    precision, recall = hit / len(p), hit / len(g)
    return 2 * precision * recall / (precision + recall)


def ndcg(ranking: list[str], relevant: list[str]) -> float:
    k = len(relevant)
    gain = {name: k - i for i, name in enumerate(relevant)}
    dcg = sum(gain.get(name, 0) / math.log2(i + 2) for i, name in enumerate(ranking[:k]))
    ideal = sum((k - i) / math.log2(i + 2) for i in range(k))
    return dcg / ideal if ideal else 0.0


def example_scores(rec: dict, pred: dict, generate_response: str) -> dict:
    """Per-example values (None where the metric does not apply or nothing was predicted)."""
    out = dict.fromkeys(METRICS)
    kind, gold = rec["meta"]["kind"], rec["call"]
    if pred.get("ranking") is not None:
        ranking = list(pred["ranking"])
        out["top1"] = float(bool(ranking) and ranking[0] == rec["relevant"][0])
        out["ndcg"] = ndcg(ranking, rec["relevant"])
    if "name" in pred:  # a selection prediction (name None: the output had no tool name)
        name = pred.get("name")
        right = name == gold["name"]
        args, gold_args = parse_arguments(pred.get("arguments")), json.loads(gold["arguments"])
        out["selection_acc"] = float(right)
        out["arg_em"] = float(right and args == gold_args)
        out["arg_f1"] = argument_f1(args, gold_args) if right else 0.0
        if kind in ZERO_TO_ONE:
            out["zero_to_one_acc"] = float((name == generate_response) == (gold["name"] == generate_response))
        if kind in WEAK_TO_STRONG:
            out["weak_to_strong_acc"] = float(right)
    return out


def score_selection(records: list[dict], preds: dict[str, dict], generate_response: str,
                    group_key=lambda r: r["meta"].get("scenario")) -> dict:
    """{"all": {n, metric: mean or None}, <scenario>: {...}} over the records with predictions."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        scores = example_scores(rec, preds.get(rec["id"], {}), generate_response)
        groups["all"].append(scores)
        key = group_key(rec)
        if key:
            groups[key].append(scores)
    order = ["all", *SCENARIOS, *sorted(k for k in groups if k not in SCENARIOS and k != "all")]
    return {g: _means(groups[g]) for g in order if g in groups}


def _means(rows: list[dict]) -> dict:
    out = {"n": len(rows)}
    for m in METRICS:
        vals = [r[m] for r in rows if r[m] is not None]
        out[m] = round(sum(vals) / len(vals), 4) if vals else None
    return out
