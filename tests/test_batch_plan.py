"""The accumulation story in one object: BatchPlan, built once per stage from its settings, makes up
the sampler's steps and keeps Lightning's own accumulation off."""
import pytest

from conftest import QUICKSTART
from core.batch_plan import BatchPlan, BatchSizeError
from core.recipe import load_recipe
from core.stage_config import stage_settings
from datamodules.optimizer_steps import Rows, StepBatchSampler, StepCollator


def _settings(micro, gbs, accumulate=1):
    return {"data": {"micro_batch_size": micro, "global_batch_size": gbs},
            "trainer": {"accumulate_grad_batches": accumulate}}


@pytest.mark.parametrize("micro,gbs,world,accumulation", [(1, 8, 1, 8), (4, 8, 1, 2), (2, 8, 2, 2),
                                                          (6, 48, 8, 1), (3, 12, 2, 2)])
def test_global_batch_size_sets_the_accumulation(micro, gbs, world, accumulation):
    plan = BatchPlan.of(_settings(micro, gbs), world)
    assert plan == BatchPlan(micro, accumulation, world)
    assert plan.examples_per_step == gbs and plan.per_device_step == micro * accumulation


def test_without_a_global_batch_size_the_trainer_accumulation_counts():
    plan = BatchPlan.of(_settings(2, None, accumulate=3), world_size=2)
    assert (plan.accumulation, plan.examples_per_step) == (3, 12)
    assert plan.for_validation() == BatchPlan(2, 1, 2)


def test_a_global_batch_the_devices_cannot_make_up_is_refused():
    with pytest.raises(BatchSizeError, match=r"global_batch_size=10 is not a multiple of .* = 4 x 1"):
        BatchPlan.of(_settings(4, 10), 1)


@pytest.mark.parametrize("world", [1, 2])
def test_the_sampler_yields_the_plans_steps(world):
    plan = BatchPlan(micro_batch_size=2, accumulation=3, world_size=world)
    lengths = list(range(5, 5 + 3 * plan.examples_per_step - 1))  # last step one short
    steps = [list(StepBatchSampler(lengths, plan, rank, seed=0, group_by_length=True)) for rank in range(world)]
    assert {len(s) for s in steps} == {3} == {len(StepBatchSampler(lengths, plan, 0, 0, True))}
    assert all(len(step) == plan.per_device_step for s in steps for step in s)
    real = sorted(i for s in steps for step in s for i in step if i >= 0)
    assert real == list(range(len(lengths)))  # every example once per epoch
    rows = Rows([{"input_ids": [1] * n, "labels": [1] * n, "span_kinds": [1] * n} for n in lengths])
    micro_batches = StepCollator(pad_id=0, micro_batch_size=plan.micro_batch_size)([rows[i] for i in steps[0][0]])
    assert [len(b["input_ids"]) for b in micro_batches] == [2] * plan.accumulation


def test_the_trainer_does_not_accumulate(tmp_path):
    """The module steps itself once per sampler step: Lightning's accumulation stays at 1 whatever
    the recipe's trainer.accumulate_grad_batches."""
    from core.run_dir import RunDir
    from pipeline.stage_runner import build_trainer
    recipe = load_recipe([QUICKSTART], [f"run.dir={tmp_path}", "trainer.accumulate_grad_batches=4",
                                        "logger.wandb.enabled=false"])
    settings = stage_settings(recipe, "backbone")
    assert BatchPlan.of(settings, 1).accumulation == 4
    trainer = build_trainer(recipe, settings, RunDir.of(recipe).stage("backbone"))
    assert trainer.accumulate_grad_batches == BatchPlan.FRAMEWORK_ACCUMULATION == 1
