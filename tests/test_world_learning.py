"""The learning regression guard: the quickstart's model trained briefly on the tool world (a single
LLM: the backbone stage alone, recipes/checks/world_guard.yaml), evaluated on APIs it never saw.
It must keep what it learns there: the decision (call / conclusion / give up: Plan ACC), answers in
the world's form (Rouge-L), and no more hallucinated API names than measured. It does not yet copy
an unseen API's name (bench/world_learning.md), so Act. EM and Arg. F1 have no floor; add one when
a change makes them show.

The floors are the measured values less the stated margin. A change that breaks what is learned
(templates, span labels, the loss, tokenization, inference parsing, the world's prompts) drops
below them."""
from conftest import ABLATIONS, RECIPES
from core.recipe import load_recipe
from core.run_dir import RunDir
from pipeline.stage_runner import run_recipe

WORLD_QUICKSTART = RECIPES / "quickstart.yaml"
GUARD = RECIPES / "checks" / "world_guard.yaml"
# metric: (measured, margin) -> floor = measured - margin; CEILINGS: measured + margin.
# Measured (600 tasks x 2 epochs, 2x128, 40 unseen-API steps, seed 42): Plan ACC 92.5 (always
# saying "call" scores 57.5), Rouge-L 38.45 (answers in the world's form), Hallu. 50.0 (the model
# does not yet copy unseen names: bench/world_learning.md); 7 min 43 s wall, 5 min 27 s CPU on a
# shared 2-core machine (load 4-7); 52 s in pytest once the load fell to ~2.
MEASURED = {"plan_acc": (92.5, 12.5), "rouge_l": (38.45, 10.0)}
CEILINGS = {"hallu": (50.0, 15.0)}


def test_short_world_run_generalizes_to_unseen_apis(tmp_path):
    recipe = load_recipe([WORLD_QUICKSTART, ABLATIONS / "single_llm.yaml", GUARD],
                         ["logger.progress_bar=false", "logger.wandb.enabled=false",
                          f"run.dir={tmp_path / 'run'}"])
    run_recipe(recipe)
    m = RunDir(tmp_path / "run").eval().read_metrics("unseen-apis")
    for key, (measured, margin) in MEASURED.items():
        assert m[key] >= measured - margin, (key, m[key], measured, margin)
    for key, (measured, margin) in CEILINGS.items():
        assert m[key] <= measured + margin, (key, m[key], measured, margin)
