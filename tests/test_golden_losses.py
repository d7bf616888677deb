"""Golden values (torchtune style): the per-step training losses of the first steps of each
quickstart stage, seeded, on CPU, pinned. A change to the numerics (data, template, tokenizer,
truncation, loss, optimizer, initialisation) shows up here, not in a user's run; a deliberate
change re-pins them (run this file with GOLDEN_PRINT=1 to print the new values) and says so in
its commit message. Re-pinned after the template's natural token boundaries (one segment per span
kind, the space after a generated turn's header in its body) and the new quickstart settings;
re-pinned after the whole text is tokenized at once (prompting/text_encoder.py); re-pinned after
budget cuts keep turn boundaries and cut rows are tokenized again from their text."""
import csv
import os

import pytest

from conftest import QUICKSTART
from core.run_dir import RunDir
from core.recipe import load_recipe
from pipeline.stage_runner import run_recipe

STEPS = 3
STAGES = ("backbone", "planner", "caller", "summarizer")
GOLDEN = {
    "backbone": [8.329252, 8.273781, 8.143502],
    "planner": [8.113923, 7.948011, 8.102232],
    "caller": [7.900077, 7.817123, 7.869315],
    "summarizer": [8.236119, 8.222559, 8.187078],
}


@pytest.fixture(scope="module")
def first_steps(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("golden") / "quickstart"
    overrides = [f"run.dir={run_dir}", "logger.progress_bar=false", "logger.wandb.enabled=false",
                 "evaluate.enabled=false"] + [f"stages.{s}.trainer.max_steps={STEPS}" for s in STAGES]
    run_recipe(load_recipe([QUICKSTART], overrides))
    losses = {}
    for stage in STAGES:
        with RunDir(run_dir).stage(stage).csv_log.open(newline="") as fh:
            losses[stage] = [float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")]
    if os.environ.get("GOLDEN_PRINT"):
        print({s: [round(x, 6) for x in v] for s, v in losses.items()})
    return losses


@pytest.mark.parametrize("stage", STAGES)
def test_first_step_losses_match_the_golden_values(first_steps, stage):
    assert len(first_steps[stage]) == STEPS
    assert first_steps[stage] == pytest.approx(GOLDEN[stage], rel=1e-4, abs=1e-5)
