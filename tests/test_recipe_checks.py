"""Recipes checked against the code before anything is built: each `_target_` node against its
callable's signature (with what the builders pass themselves), and values by type, range and the
rules that tie keys together; every error names the key path and its file, exit code 2."""
import inspect

import lightning as L
import pytest
import yaml

from conftest import QUICKSTART
from core.build_sites import DATA, MODEL, SCHEDULER, SITES, TOKENIZER, TRAINER
from core.instantiate import locate
from core.recipe import RecipeError, compose, load_recipe
from train import main



def _fails(overrides, files=(QUICKSTART,)) -> str:
    with pytest.raises(RecipeError) as err:
        load_recipe(list(files), list(overrides))
    return str(err.value)


@pytest.mark.parametrize("override,message", [
    ("data.max_lenght=512",
     "unknown key 'data.max_lenght' (from command line): ToolUseDataModule takes no such argument"),
    ("stages.planner.optimizer.betaz=[0.9,0.95]",
     "unknown key 'stages.planner.optimizer.betaz' (from command line): AdamW takes no such argument"),
    ("scheduler.warmup_steps=10",
     "unknown key 'scheduler.warmup_steps' (from command line): cosine_with_warmup takes no such argument"),
    ("model.hidden=64", "unknown key 'model.hidden' (from command line): build_causal_lm takes no such argument"),
    ("trainer.max_epoch=2", "unknown key 'trainer.max_epoch' (from command line): Trainer takes no such argument"),
    ("tokenizer.train_bpe.vocab=512",
     "unknown key 'tokenizer.train_bpe.vocab' (from command line): train_bpe_tokenizer takes no such argument"),
    ("tokenizer.train_bpe.out_dir=/tmp/t", "pipeline.stage_setup.load_tokenizer passes it to train_bpe_tokenizer"),
    ("stages.caller.trainer.gpus=2",
     "unknown key 'stages.caller.trainer.gpus' (from command line): Trainer takes no such argument"),
])
def test_unknown_arguments_name_the_key_and_the_callable(override, message):
    assert message in _fails([override])


@pytest.mark.parametrize("override,message", [
    ("data.role=caller", "key 'data.role' (from command line): pipeline.stage_setup.build_datamodule "
                         "passes it to ToolUseDataModule itself; remove it from the recipe"),
    ("data.accumulate_grad_batches=2", "key 'data.accumulate_grad_batches' (from command line)"),
    ("model.vocab_size=100", "key 'model.vocab_size' (from command line): "
                             "lightning_modules.span_lm_module.SpanLMModule.configure_model passes it"),
    ("scheduler.total_steps=100", "key 'scheduler.total_steps' (from command line)"),
    ("trainer.default_root_dir=/tmp/x", "pipeline.stage_runner.build_trainer passes it to Trainer itself"),
])
def test_arguments_the_builders_pass_are_refused(override, message):
    assert message in _fails([override])


def test_keys_the_builders_consume_are_accepted():
    r = load_recipe([QUICKSTART], ["data.global_batch_size=8", "data.simulator_dir=/tmp/sim",
                                   "trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=0.5",
                                   "stages.planner.optimizer.weight_decay=0.1"])
    assert r["stages"]["planner"]["optimizer"]["weight_decay"] == 0.1


def test_missing_arguments_name_the_key_and_the_file(tmp_path):
    cfg, _ = compose([QUICKSTART])
    recipe = yaml.safe_load(yaml.safe_dump(__import__("omegaconf").OmegaConf.to_container(cfg)))
    del recipe["data"]["sources"]
    del recipe["scheduler"]["_target_"]
    del recipe["tokenizer"]["train_bpe"]["vocab_size"]
    path = tmp_path / "no_sources.yaml"
    path.write_text(yaml.safe_dump(recipe))
    message = _fails([], [path])
    assert f"missing required key 'data.sources' (in {path}): ToolUseDataModule needs it" in message
    assert f"missing required key 'scheduler._target_' (in {path})" in message
    assert f"missing required key 'tokenizer.train_bpe.vocab_size' (in {path}): train_bpe_tokenizer needs it" \
        in message


def test_a_target_that_does_not_import_is_named():
    message = _fails(["optimizer._target_=torch.optim.AdamX"])
    assert "key 'optimizer._target_': _target_ 'torch.optim.AdamX': module 'torch.optim' has no " \
           "attribute 'AdamX' (from command line)" in message


def test_a_stage_that_swaps_the_target_is_checked_against_its_own_callable():
    ok = load_recipe([QUICKSTART], ["stages.planner.optimizer._target_=torch.optim.Adam"])
    assert ok["stages"]["planner"]["optimizer"]["_target_"] == "torch.optim.Adam"
    # SGD has no `betas`: the shared AdamW keys break for that stage, which is named
    message = _fails(["stages.planner.optimizer._target_=torch.optim.SGD", "optimizer.betas=[0.9,0.99]"])
    assert "unknown key 'optimizer.betas' (from command line): SGD (stage planner) takes no such argument" \
        in message
    assert "momentum" not in message and "backbone" not in message


def test_literal_annotations_are_enforced():
    assert "key 'trainer.precision': 'bf17' is not one of" in _fails(["trainer.precision=bf17"])
    assert load_recipe([QUICKSTART], ["trainer.precision=bf16-mixed"])["trainer"]["precision"] == "bf16-mixed"
    assert "key 'data.layout': 'per_stp' is not one of ['folded', 'per_step'] (from command line)" in \
        _fails(["data.layout=per_stp"])
    assert "key 'stages.planner.data.instruction_part': 'loca' is not one of ['all', 'global', 'local']" in \
        _fails(["stages.planner.data.instruction_part=loca"])


def test_every_declared_argument_is_a_parameter_of_the_default_callable():
    """A declaration that names an argument the callable does not take would let a typo pass."""
    defaults = {DATA: "datamodules.tool_use_datamodule.ToolUseDataModule",
                MODEL: "lightning_modules.causal_lm.build_causal_lm",
                SCHEDULER: "lightning_modules.lr_schedules.cosine_with_warmup", TRAINER: "lightning.pytorch.Trainer",
                TOKENIZER: "prompting.bpe_tokenizer.train_bpe_tokenizer"}
    for site, target in defaults.items():
        params = inspect.signature(locate(target)).parameters
        assert set(site.injected) <= set(params), site.section
    assert locate(TRAINER.default_target) is L.Trainer
    assert TOKENIZER.default_target == defaults[TOKENIZER]
    assert {s.section for s in SITES} == {"data", "model", "optimizer", "scheduler", "trainer", "strategy",
                                          "tokenizer.train_bpe"}


def test_a_builder_passing_other_arguments_than_declared_is_stopped():
    node = {"_target_": "lightning_modules.lr_schedules.cosine_with_warmup"}
    with pytest.raises(TypeError, match=r"must pass 1 positional argument\(s\) and \['total_steps'\]"):
        SCHEDULER.build(node, None, total_steps=3, warmup_steps=1)
    with pytest.raises(TypeError, match="core/build_sites.py"):
        DATA.build({"_target_": "builtins.dict"}, role="caller")


# ----- values: types, ranges and cross-key rules (issue 16: validation before anything is built) ------
@pytest.mark.parametrize("override,message", [
    ("stages.backbone.optimizer.lr=fast", "key 'stages.backbone.optimizer.lr': 'fast' is not of type 'number'"),
    ("optimizer.lr=-1e-3", "key 'optimizer.lr': -0.001 is less than the minimum of 0"),
    ("optimizer.weight_decay=-0.1", "key 'optimizer.weight_decay': -0.1 is less than the minimum of 0"),
    ("optimizer.betas=[0.9,1.5]", "key 'optimizer.betas[1]': 1.5 is greater than or equal to the maximum of 1"),
    ("optimizer.eps=0", "key 'optimizer.eps': 0 is less than or equal to the minimum of 0"),
    ("scheduler.warmup_ratio=1.5", "key 'scheduler.warmup_ratio': 1.5 is greater than the maximum of 1"),
    ("stages.planner.scheduler.min_lr_ratio=-1", "key 'stages.planner.scheduler.min_lr_ratio': -1 is less than"),
    ("data.val_fraction=1.5", "key 'data.val_fraction': 1.5 is greater than the maximum of 1"),
    ("data.data_fraction=0", "key 'data.data_fraction': 0 is less than or equal to the minimum of 0"),
    ("data.micro_batch_size=0", "key 'data.micro_batch_size': 0 is less than the minimum of 1"),
    ("stages.caller.data.micro_batch_size=2.5", "key 'stages.caller.data.micro_batch_size': 2.5 is not of type 'integer'"),
    ("data.global_batch_size=0", "key 'data.global_batch_size': 0 is less than the minimum of 1"),
    ("data.max_length=8", "key 'data.max_length': 8 is less than the minimum of 16"),
    ("data.packing.rows_per_micro_batch=0", "key 'data.packing.rows_per_micro_batch': 0 is less than the minimum of 1"),
    ("data.num_workers=-1", "key 'data.num_workers': -1 is less than the minimum of 0"),
    ("trainer.max_epochs=0", "key 'trainer.max_epochs': 0 is less than the minimum of 1"),
    ("stages.summarizer.trainer.max_epochs=two", "key 'stages.summarizer.trainer.max_epochs': 'two' is not of type 'integer'"),
    ("trainer.accumulate_grad_batches=0", "key 'trainer.accumulate_grad_batches': 0 is less than the minimum of 1"),
    ("trainer.gradient_clip_val=-1", "key 'trainer.gradient_clip_val': -1 is less than the minimum of 0"),
    ("trainer.log_every_n_steps=0", "key 'trainer.log_every_n_steps': 0 is less than the minimum of 1"),
    ("loss.chunk_size=0", "key 'loss.chunk_size': 0 is less than the minimum of 1"),
    ("checkpoint.every_n_train_steps=0", "key 'checkpoint.every_n_train_steps': 0 is less than the minimum of 1"),
    ("model.dtype=float8", "key 'model.dtype': 'float8' is not one of ['float32', 'bfloat16', 'float16']"),
    ("stages.planner.role=critic", "key 'stages.planner.role': 'critic' is not one of ['backbone', 'planner'"),
    ("data.micro_batch_size=4 data.global_batch_size=10", "key 'data.global_batch_size': 10 is not a multiple of data.micro_batch_size x "
                                  "devices x num_nodes = 4 x 1 (stages backbone, planner, caller, summarizer; "
                                  "from command line)"),
    ("data.packing.max_tokens=64", "key 'data.packing.max_tokens': 64 is shorter than data.max_length=1024"),
])
def test_bad_values_stop_validate_with_the_key(override, message, capsys):
    assert message in _fails(override.split())
    assert main([str(QUICKSTART), *override.split(), "--validate"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cross_key_rules_follow_stage_overrides():
    # a stage's own micro-batch size makes the shared global batch size indivisible for it alone
    message = _fails(["data.global_batch_size=8", "stages.caller.data.micro_batch_size=3"])
    assert "key 'data.global_batch_size': 8 is not a multiple of data.micro_batch_size x devices x " \
           "num_nodes = 3 x 1 (stage caller; from command line)" in message
    assert "backbone" not in message
    ok = load_recipe([QUICKSTART], ["data.global_batch_size=8", "stages.caller.data.micro_batch_size=2"])
    assert ok["data"]["global_batch_size"] == 8


def test_the_template_names_follow_the_vocabulary():
    assert "key 'template.turns.observation': None is not of type 'object'" in \
        _fails(["template.turns.observation=null"])
    assert "unknown key 'template.decision_words.maybe'" in _fails(["template.decision_words.maybe=Next: maybe."])


def test_tilde_removes_an_inherited_key_so_a_stage_can_swap_its_optimizer(capsys):
    swap = ["optimizer._target_=torch.optim.SGD", "~optimizer.betas", "~optimizer.eps"]
    r = load_recipe([QUICKSTART], swap)
    assert "betas" not in r["optimizer"] and r["optimizer"]["_target_"] == "torch.optim.SGD"
    assert "SGD takes no such argument" in _fails(swap[:2])  # eps is still there
    assert "cannot remove '~optimizer.momentum': the recipe has no key 'optimizer.momentum'" in \
        _fails(["~optimizer.momentum"])
    assert main([str(QUICKSTART), *swap, "--print-config"]) == 0
    assert "torch.optim.SGD" in capsys.readouterr().out
