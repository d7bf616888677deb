"""The paper's step-level metrics (α-UMi, Table 1), computed without any model.

References are steps (see extract.py); a prediction is a dict with the same fields: `plan`
(the decision: call / conclusion / give_up), `action`, `arguments` (JSON text, or an already parsed object) and
`answer`. All metrics are percentages; a metric with no step to average over is None.

- plan_acc: exact match of the plan over all steps (a missing prediction is wrong).
- act_em:   over reference-call steps, the prediction's plan is call and its action equals the
            reference action. A call step of a test dialog without its caller turn (reference
            action None) counts for plan_acc and hallu only; likewise a conclusion step without
            its answer is left out of rouge_l.
- hallu:    share of all steps whose predicted `action` is set and not among the step's tools.
- arg_f1:   over reference-call steps; see `arg_f1`. A wrong action (or no call) scores 0.
- well_formed: the output format alone, right or wrong: planner, the share of predictions that
            carry a decision; caller, of predicted calls, the share with a name that can be a tool
            name (known or not) and arguments that parse as a JSON object; summarizer, of
            predicted conclusions, the share with a non-empty answer. What a model must learn
            first (the quickstart's measure).
- rouge_l:  over reference-conclusion steps, ROUGE-L F of the answer with the `rouge` package
            (`Rouge().get_scores(hyps, refs, avg=True)["rouge-l"]["f"]`). A step whose prediction
            is not a conclusion has the hypothesis "none". The package raises on a text made only of
            dots or empty, so such a text (or one that is just "," or ".") is replaced by "none",
            as the α-UMi inference does; the same guard applies to references.
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter
from contextlib import contextmanager

from rouge import Rouge

from core.vocabulary import DECISION_ALIASES, DECISIONS

from .. import EvaluationError

# The step metrics and their column labels (the paper's Table 1), in the order tables show them.
STEP_METRICS = (("plan_acc", "Plan ACC"), ("act_em", "Act. EM"), ("hallu", "Hallu."),
                ("arg_f1", "Arg. F1"), ("rouge_l", "Rouge-L"))
TOOL_NAME = re.compile(r"\w[\w.\-]*")  # what a tool name can look like (well_formed)


def score(references: list[dict], predictions: dict[str, dict]) -> dict:
    ref_counts, pred_counts, hallucinated = Counter(), Counter(), Counter()
    plan_hits = act_hits = n_hallu = n_missing = n_call = 0
    arg_scores, hyps, refs = [], [], []
    formed = {"planner": [0, 0], "caller": [0, 0], "summarizer": [0, 0]}  # [well formed, outputs]
    for ref in references:
        pred = predictions.get(ref["id"])
        if pred is None:
            n_missing += 1
            pred = {}
        else:
            pred_counts[normalize_plan(pred.get("plan"))] += 1
        plan = normalize_plan(pred.get("plan"))
        action = pred.get("action") or None
        if pred:
            _tally(formed["planner"], plan != "none")
            if plan == "call":
                _tally(formed["caller"], bool(TOOL_NAME.fullmatch(action or ""))
                       and _json_object(pred.get("arguments")))
            elif plan == "conclusion":
                _tally(formed["summarizer"], bool((pred.get("answer") or "").strip()))
        ref_counts[ref["plan"]] += 1
        plan_hits += plan == ref["plan"]
        if action is not None and action not in ref["tools"]:
            n_hallu += 1
            hallucinated[action] += 1
        if ref["plan"] == "call" and ref.get("action") is not None:
            n_call += 1
            same = plan == "call" and action == ref["action"]
            act_hits += same
            arg_scores.append(arg_f1(ref["arguments"], pred.get("arguments")) if same else 0.0)
        elif ref["plan"] == "conclusion" and ref.get("answer") is not None:
            hyps.append(_rouge_text(pred.get("answer") if plan == "conclusion" else None))
            refs.append(_rouge_text(ref["answer"]))
    n = len(references)
    return {
        "plan_acc": _percent(plan_hits, n),
        "act_em": _percent(act_hits, n_call),
        "hallu": _percent(n_hallu, n),
        "arg_f1": _percent(sum(arg_scores), n_call),
        "rouge_l": None if not refs else 100.0 * rouge_l(hyps, refs),
        "counts": {"reference": {p: ref_counts[p] for p in DECISIONS},
                   "predicted": {**{p: 0 for p in DECISIONS}, **pred_counts}},
        "well_formed": {role: _percent(ok, total) for role, (ok, total) in formed.items()},
        "hallucinated_names": dict(hallucinated.most_common()),
        "n_steps": n,
        "n_missing": n_missing,
    }


def _tally(counter: list, ok: bool) -> None:
    counter[0] += bool(ok)
    counter[1] += 1


def _json_object(arguments) -> bool:
    """Arguments written out as a JSON object (a missing Action Input is not)."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return False
    try:
        return isinstance(_parse(arguments), dict)
    except ValueError:
        return False


def normalize_plan(plan) -> str:
    if plan is None:
        return "none"
    return DECISION_ALIASES.get(plan, plan)


def _percent(hits: float, n: int) -> float | None:
    return None if n == 0 else 100.0 * hits / n


def arg_f1(reference, prediction) -> float:
    """Key-level F1 of predicted against reference call arguments (JSON text or parsed).

    Reference `{}`: 1 only if the prediction is `{}`. Otherwise a key with an equal value counts 1
    and a key present with a different value 0.5, for both precision (over predicted keys) and
    recall (over reference keys). Unparseable predicted arguments score 0; missing ones (None)
    mean `{}`, as in the α-UMi evaluation. A reference that does not parse is compared with the
    prediction as raw (stripped) text: 1 if equal, else 0.
    """
    try:
        ref = _parse(reference)
    except ValueError:
        return float(str(reference).strip() == str(prediction).strip())
    try:
        pred = _parse(prediction)
    except ValueError:
        return 0.0
    if not isinstance(ref, dict) or not ref or not isinstance(pred, dict):
        return float(ref == pred)
    hit = sum(1.0 if pred[k] == v else 0.5 for k, v in ref.items() if k in pred)
    if hit == 0:
        return 0.0
    precision, recall = hit / len(pred), hit / len(ref)
    return 2 * precision * recall / (precision + recall)


def _parse(arguments):
    if arguments is None:
        return {}
    if isinstance(arguments, str):
        return json.loads(arguments)  # JSONDecodeError is a ValueError
    return arguments


def _rouge_text(text: str | None) -> str:
    if text is None or not text.strip().strip(".,"):
        return "none"
    return text


def rouge_l(hyps: list[str], refs: list[str]) -> float:
    """Mean ROUGE-L F (0-1) of the `rouge` package; only rouge-l is computed (same number)."""
    longest = max(len(t.split()) for t in hyps + refs)
    with _recursion_limit(2 * longest + 1000):  # the package's LCS backtrack recurses per word
        return Rouge(metrics=["rouge-l"]).get_scores(hyps, refs, avg=True)["rouge-l"]["f"]


@contextmanager
def _recursion_limit(depth: int):
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(old + depth)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def load_predictions(path, step_ids) -> dict[str, dict]:
    """Predictions JSONL keyed by step id; unknown or repeated ids are errors naming the line."""
    known = set(step_ids)
    preds = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvaluationError(f"{where}: invalid JSON: {exc.msg}") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
                raise EvaluationError(f"{where}: a prediction must be an object with a string 'id'")
            if rec["id"] not in known:
                raise EvaluationError(f"{where}: unknown step id {rec['id']!r} "
                                      f"(not among the {len(known)} reference steps)")
            if rec["id"] in preds:
                raise EvaluationError(f"{where}: step id {rec['id']!r} predicted twice")
            for key in ("plan", "action", "answer"):
                if not isinstance(rec.get(key), (str, type(None))):
                    raise EvaluationError(f"{where}: '{key}' must be a string or null")
            preds[rec["id"]] = rec
    return preds
