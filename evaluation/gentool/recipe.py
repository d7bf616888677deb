"""The `evaluate:` stage of a GenTool recipe: the test split its synthesis wrote (or
`evaluate.references`), scored over the four scenarios, then the table printed."""
from __future__ import annotations

import sys
from pathlib import Path

from core.stage_config import shared_settings
from .evaluate import evaluate_gentool
from .table import scenario_table
from simulators.sources import resolve_simulated_sources


def gentool_sources(recipe: dict) -> list[dict]:
    return [s for s in (recipe.get("data") or {}).get("sources") or []
            if s.get("type") == "simulator" and (s.get("settings") or {}).get("corpus") == "gentool"]


def synthesized_splits(recipe: dict) -> tuple[Path, Path]:
    """(train, test) files of the recipe's GenTool synthesis (run now if not yet done)."""
    data = shared_settings(recipe, "data")
    sources = gentool_sources(recipe)
    if not sources:
        raise ValueError("evaluate.task gentool: no references given and the recipe's data has no "
                         "GenTool source ({type: simulator, settings: {corpus: gentool}})")
    train = Path(resolve_simulated_sources(sources[:1], data["simulator_dir"], data["cache_dir"])[0]["path"])
    return train, train.with_name("test.jsonl")


def evaluate_gentool_recipe(recipe: dict, node: dict, train=None) -> dict:
    """`node`: the `evaluate:` keys; `train`: training examples to score too (default: the
    synthesized training split when the test set is the synthesized one and `include_train`)."""
    if node.get("references"):
        test = Path(node["references"])
    else:
        synth_train, test = synthesized_splits(recipe)
        train = train or synth_train
    metrics = evaluate_gentool(recipe["run"]["dir"], recipe, test, train, node,
                               log=lambda m: print(f"[evaluate] {m}", file=sys.stderr, flush=True))
    print(f"\nGenTool evaluation ({recipe['run']['name']}; percentages):\n" + scenario_table(metrics))
    return metrics
