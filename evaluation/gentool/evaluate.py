"""Evaluate a run's GenTool models on a test split (and its training examples): writes
gentool_predictions.jsonl, gentool_metrics.json and gentool_table.md under the output folder."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

from core.atomic_files import write_text_atomic
from core.run_dir import RunDir
from prompting.prompt_template import TemplateError
from prompting.selection_template import SelectionTemplate
from trajectories.sources import load_trajectories
from trajectories.trajectory import TrajectoryError, write_jsonl_atomic

from .. import EvaluationError
from .inference import find_gentool_exports, predict
from .metrics import score_selection
from .table import scenario_table

DEFAULTS = {"references": None, "include_train": False, "limit": None, "batch_size": 8,
            "max_new_tokens": 96, "device": None, "dtype": None, "max_prompt_tokens": None,
            "out_dir": None}


def read_examples(path) -> list[dict]:
    try:
        return load_trajectories(path, format="selection").trajectories
    except (TrajectoryError, FileNotFoundError) as exc:
        raise EvaluationError(str(exc)) from None


def generate_response_name(records: list[dict]) -> str:
    """The special tool's name: the one every example offers, last in its toolset."""
    names = {r["toolset"][-1]["name"] for r in records}
    return names.pop() if len(names) == 1 else "generate_response"


def evaluate_gentool(run_dir, recipe: Mapping, test_path, train_path=None, cfg: Mapping | None = None,
                     log=None) -> dict:
    cfg = {**DEFAULTS, **{k: v for k, v in dict(cfg or {}).items() if k not in ("enabled", "task")}}
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise EvaluationError(f"evaluate: unknown key(s) {', '.join(unknown)} for task gentool "
                              f"(known: {', '.join(DEFAULTS)})")
    try:
        template = SelectionTemplate((recipe.get("template") or {}).get("gentool"))
    except TemplateError as exc:
        raise EvaluationError(f"recipe template: {exc}") from None
    run_dir = Path(run_dir)
    exports = find_gentool_exports(run_dir, recipe)
    sets = {"test": read_examples(test_path)}
    if cfg["include_train"] and train_path is not None:
        sets["train"] = read_examples(train_path)
    if cfg["limit"]:
        sets = {k: v[:int(cfg["limit"])] for k, v in sets.items()}
    gr = generate_response_name(sets["test"])
    out = RunDir(run_dir).eval(cfg["out_dir"])
    t0 = time.perf_counter()
    metrics, all_preds = {}, []
    for name, records in sets.items():
        preds = predict(records, exports, template,
                        add_bos=(recipe.get("tokenizer") or {}).get("add_bos", True),
                        batch_size=cfg["batch_size"], max_new_tokens=cfg["max_new_tokens"],
                        device=cfg["device"], dtype=cfg["dtype"], max_prompt_tokens=cfg["max_prompt_tokens"],
                        max_length=(recipe.get("data") or {}).get("max_length"),
                        context_reserve=(recipe.get("data") or {}).get("context_reserve"), log=log)
        metrics[name] = score_selection(records, preds, gr)
        all_preds += [{**p, "set": name} for p in preds.values()]
    metrics["inference"] = {"run": str(run_dir), "models": exports, "references": str(test_path),
                            "train": str(train_path) if "train" in sets else None,
                            "max_new_tokens": cfg["max_new_tokens"], "seconds": round(time.perf_counter() - t0, 3)}
    table = scenario_table(metrics)
    write_jsonl_atomic(out.gentool_predictions_file(), all_preds)
    write_text_atomic(out.gentool_metrics_file(), json.dumps(metrics, indent=2) + "\n")
    write_text_atomic(out.gentool_table_file(), table)
    return metrics


# ----- command line (evaluate.py gentool) ----------------------------------------------------
def add_gentool_args(p) -> None:
    p.add_argument("--run", required=True, dest="run_dir", help="run directory (with recipe.yaml and <stage>/hf)")
    p.add_argument("--references", help="test examples (selection JSONL); default: the split the "
                                        "run's GenTool synthesis wrote")
    p.add_argument("--train", help="also score these training examples (default with no "
                                   "--references: the synthesized training split)")
    p.add_argument("--recipe", nargs="+", help="recipe files (default: RUN/recipe.yaml)")
    p.add_argument("--out", help="output folder (default: RUN/eval)")
    p.add_argument("--limit", type=int, help="only the first N examples of each set")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--device")
    p.add_argument("--dtype")
