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
from ..agent.members import PromptFit
from ..agent.setup import evaluate_settings
from .inference import find_gentool_exports, predict
from .metrics import score_selection
from .table import scenario_table

def read_examples(path) -> list[dict]:
    try:
        return load_trajectories(path, format="selection").trajectories
    except (TrajectoryError, FileNotFoundError) as exc:
        raise EvaluationError(str(exc)) from None


def generate_response_name(records: list[dict]) -> str:
    """The special tool's name: the one every example offers, last in its toolset."""
    names = {r["toolset"][-1]["name"] for r in records}
    return names.pop() if len(names) == 1 else "generate_response"


def evaluate_gentool(run_dir, recipe: Mapping, test_path, train_path=None, node: Mapping | None = None,
                     log=None) -> dict:
    """`node`: the `evaluate:` keys (recipe or command line; the schema's defaults fill the rest)."""
    cfg = evaluate_settings(node)
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
        preds = predict(records, exports, template, PromptFit.of_recipe(recipe, cfg["max_prompt_tokens"]),
                        batch_size=cfg["batch_size"], max_new_tokens=cfg["max_new_tokens"],
                        device=cfg["device"], dtype=cfg["dtype"], log=log)
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
