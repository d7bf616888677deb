"""GenTool end to end on CPU at toy size: synthesis -> selection stage -> four-scenario evaluation.
The chain learns what it is taught: the trained selector picks the right tool on (nearly) all of
its training examples; held-out scenarios are only reported."""
import json

import pytest

from conftest import ABLATIONS, RECIPES
from core.recipe import load_recipe
from core.run_dir import RunDir
from evaluation.report.results_table import load_runs, results_table
from pipeline.stage_runner import run_recipe

RECIPE = RECIPES / "gentool.yaml"
ONLY_SELECTION = ABLATIONS / "gentool_selection_only.yaml"
TOY_DATA = """
data:
  sources:
    - type: simulator
      settings: {corpus: gentool, seed: 0, max_tools: 4, queries_per_tool: 1, flipped_per_pair: 1,
                 toolset: {k: 2}, split: {heldout_tool_fraction: 0.25}}
"""
TOY = ["data.micro_batch_size=4", "tokenizer.train_bpe.vocab_size=1000", "logger.progress_bar=false",
       "logger.wandb.enabled=false", "stages.selection.trainer.max_epochs=60",
       "stages.selection.optimizer.lr=3.0e-3", "evaluate.max_new_tokens=24"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("gentool") / "run"
    toy = run_dir.parent / "toy.yaml"
    toy.write_text(TOY_DATA)
    recipe = load_recipe([RECIPE, ONLY_SELECTION, toy], TOY + [f"run.dir={run_dir}"])
    assert run_recipe(recipe) == ["selection"]
    return recipe, run_dir


def test_selector_learns_its_training_examples_and_the_table_is_written(toy_run):
    recipe, run_dir = toy_run
    metrics = json.loads((RunDir(run_dir).eval().gentool_metrics_file()).read_text())
    train = metrics["train"]["all"]
    assert train["n"] >= 4
    assert train["selection_acc"] >= 0.9, train
    assert set(metrics["test"]) >= {"all", "seen_query/seen_tool"}
    assert metrics["test"]["all"]["top1"] is None  # no ranking stage in this ablation
    table = (RunDir(run_dir).eval().gentool_table_file()).read_text()
    assert "| training examples |" in table and "| all test |" in table
    joined = results_table(load_runs([str(run_dir)]))
    assert "Sel. Acc SQ/ST" in joined and "Plan ACC" not in joined
    # a rerun skips the finished stage and the finished evaluation
    assert run_recipe(recipe) == []
