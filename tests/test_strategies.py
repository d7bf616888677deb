"""Strategy fragments, stage-start checks (DeepSpeed settings, launcher world size), sharded-export
helpers and the ZeRO-3 pieces that run without a GPU."""
import json
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import QUICKSTART, RECIPES, STRATEGIES
from core.run_dir import StageDir
from core.recipe import RecipeError, load_recipe
from core.stage_config import stage_settings
from core.strategy_rules import (StrategyError, check_deepspeed, device_count, strategy_kind,
                                 zero_stage)
from pipeline.strategy_checks import check_launch, check_stage, module_classes

FRAGMENTS = {"ddp": ("ddp", 0), "deepspeed_zero2": ("deepspeed", 2), "deepspeed_zero3": ("deepspeed", 3),
             "deepspeed_zero3_offload": ("deepspeed", 3), "fsdp": ("fsdp", 0)}
STAGES = ("backbone", "planner", "caller", "summarizer")


def _settings(recipe):
    return [stage_settings(recipe, s) for s in STAGES]


def test_every_strategy_has_a_fragment():
    assert {p.stem for p in STRATEGIES.glob("*.yaml")} == set(FRAGMENTS)


@pytest.mark.parametrize("name", sorted(FRAGMENTS))
def test_fragment_composes_with_the_quickstart_and_validates(name, tmp_path):
    kind, stage = FRAGMENTS[name]
    as_file = load_recipe([QUICKSTART, STRATEGIES / f"{name}.yaml"])  # extra recipe on the command line
    by_name = tmp_path / "with_defaults.yaml"  # or selected by name in a recipe's defaults
    by_name.write_text(f"defaults: [{QUICKSTART.stem}, strategy/{name}]\n")
    assert load_recipe([by_name]) == as_file
    assert strategy_kind(as_file["strategy"]) == kind and zero_stage(as_file["strategy"]) == stage
    for settings in _settings(as_file):
        check_stage(as_file, settings, env={})
    # the node builds the Lightning strategy (nothing distributed happens before Trainer.fit)
    from core.instantiate import instantiate
    strategy = instantiate(as_file["strategy"])
    assert type(strategy).__name__.lower().startswith(kind)


@pytest.mark.parametrize("name", ["deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload"])
def test_deepspeed_fragments_are_explicit(name):
    r = load_recipe([QUICKSTART, STRATEGIES / f"{name}.yaml"], ["data.micro_batch_size=3"])
    cfg = r["strategy"]["config"]
    assert "auto" not in json.dumps(cfg)
    assert "gradient_accumulation_steps" not in cfg
    assert cfg["train_micro_batch_size_per_gpu"] == 3  # follows data.micro_batch_size
    assert cfg["gradient_clipping"] == r["trainer"]["gradient_clip_val"]
    assert cfg["bf16"] == {"enabled": True} and cfg["managed_gradient_accumulation"] is False
    if name.endswith("offload"):
        zo = cfg["zero_optimization"]
        assert zo["offload_optimizer"]["device"] == zo["offload_param"]["device"] == "cpu"


def test_paper_recipes_compose_with_zero3(tmp_path):
    for recipe in ("llama2_7b_toolbench.yaml", "llama2_13b_toolbench.yaml"):
        r = load_recipe([RECIPES / recipe, STRATEGIES / "deepspeed_zero3.yaml"])
        for settings in _settings(r):
            check_stage(r, settings, env={"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"})


def _zero3(*overrides):
    return load_recipe([QUICKSTART, STRATEGIES / "deepspeed_zero3.yaml"], list(overrides))


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r["strategy"]["config"].update(gradient_accumulation_steps=1),
     "strategy.config.gradient_accumulation_steps=1: remove it"),
    (lambda r: r["strategy"]["config"].pop("train_micro_batch_size_per_gpu"),
     "strategy.config.train_micro_batch_size_per_gpu is not set; set it to data.micro_batch_size (=1"),
    (lambda r: r["stages"]["planner"].setdefault("data", {}).update(micro_batch_size=2),
     "strategy.config.train_micro_batch_size_per_gpu=1 but data.micro_batch_size=2 (stage planner"),
    (lambda r: r["stages"]["caller"]["trainer"].update(gradient_clip_val=0.5),
     "strategy.config.gradient_clipping=1.0 but trainer.gradient_clip_val=0.5 (stage caller)"),
    (lambda r: r["strategy"]["config"].pop("gradient_clipping"), "strategy.config.gradient_clipping is not set"),
    (lambda r: r["strategy"]["config"]["zero_optimization"].update(reduce_bucket_size="auto"),
     "strategy.config.zero_optimization.reduce_bucket_size: 'auto' is an HF-Trainer placeholder"),
    (lambda r: r["strategy"]["config"].update(optimizer={"type": "AdamW"}), "strategy.config.optimizer: remove it"),
    (lambda r: r["trainer"].update(accumulate_grad_batches=2) or r["strategy"]["config"].pop(
        "managed_gradient_accumulation"), "set strategy.config.managed_gradient_accumulation: false"),
    (lambda r: r.update(strategy={"_target_": "lightning.pytorch.strategies.DeepSpeedStrategy", "stage": 3}),
     "DeepSpeedStrategy without an explicit `config`"),
    (lambda r: r.update(strategy="deepspeed_stage_3"), "use a fragment with explicit values"),
])
def test_deepspeed_misconfigurations_name_the_keys(mutate, message):
    r = _zero3()
    mutate(r)
    with pytest.raises(StrategyError) as err:
        for settings in _settings(r):
            check_deepspeed(r, settings, world_size=2)
    assert message in str(err.value)


def test_schema_rejects_deepspeed_keys_early():
    with pytest.raises(RecipeError, match="strategy.config.gradient_accumulation_steps"):
        _zero3("strategy.config.gradient_accumulation_steps=2")
    with pytest.raises(RecipeError, match="strategy.config.gradient_clipping"):
        _zero3("trainer.gradient_clip_val=null")
    with pytest.raises(RecipeError, match="strategy.config.zero_optimization.stage"):
        _zero3("strategy.config.zero_optimization.stage=4")


def test_ddp_and_fsdp_need_no_deepspeed_settings():
    """Settings DeepSpeed refuses (accumulation without managed_gradient_accumulation: false) pass
    the checks under DDP and FSDP, which have no such config."""
    for name in ("ddp", "fsdp"):
        r = load_recipe([QUICKSTART, STRATEGIES / f"{name}.yaml"], ["trainer.accumulate_grad_batches=4"])
        assert strategy_kind(r["strategy"]) == name
        for settings in _settings(r):
            check_deepspeed(r, settings, world_size=8)
            deepspeed = {"_target_": "lightning.pytorch.strategies.DeepSpeedStrategy",
                         "config": {"train_micro_batch_size_per_gpu": settings["data"]["micro_batch_size"],
                                    "gradient_clipping": settings["trainer"]["gradient_clip_val"]}}
            with pytest.raises(StrategyError, match="managed_gradient_accumulation: false"):
                check_deepspeed({**r, "strategy": deepspeed}, settings, world_size=8)


# ----- launcher / recipe world size --------------------------------------------------------------
def _trainer(devices=8, nodes=1):
    return {"name": "backbone", "trainer": {"devices": devices, "num_nodes": nodes}}


@pytest.mark.parametrize("devices,expected", [(8, 8), ("4", 4), ("0,1,2", 3), ([0, 1], 2), ("auto", None),
                                              (-1, None), ("-1", None)])
def test_device_count(devices, expected):
    assert device_count(devices) == expected


def test_torchrun_world_size_must_match_the_recipe():
    assert check_launch(_trainer(4, 2), env={"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}) == 8
    with pytest.raises(StrategyError) as err:
        check_launch(_trainer(4, 1), env={"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"})
    msg = str(err.value)
    assert "torchrun (WORLD_SIZE)" in msg and "8 processes" in msg
    assert "trainer.num_nodes x trainer.devices = 1 x 4 = 4" in msg
    with pytest.raises(StrategyError, match="4 processes per node but trainer.devices=2"):
        check_launch(_trainer(2, 2), env={"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"})


def test_srun_world_size_must_match_the_recipe():
    env = {"SLURM_NTASKS": "16", "SLURM_NTASKS_PER_NODE": "8", "SLURM_STEP_ID": "0", "SLURM_JOB_NAME": "glpft"}
    assert check_launch(_trainer(8, 2), env=env) == 16
    with pytest.raises(StrategyError, match=r"srun \(SLURM_NTASKS\).*trainer.num_nodes x trainer.devices = 1 x 8"):
        check_launch(_trainer(8, 1), env=env)
    # an interactive allocation is not a launch (Lightning ignores SLURM there too)
    assert check_launch(_trainer(8, 1), env={**env, "SLURM_JOB_NAME": "bash"}) == 8


def test_no_launcher_or_auto_devices_is_not_checked():
    assert check_launch(_trainer(2, 1), env={}) == 2
    assert check_launch(_trainer("auto", 1), env={"WORLD_SIZE": "3"}) == 3


# ----- helpers -------------------------------------------------------------------------------------
def test_module_classes_for_fsdp_wrap_policy():
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer
    assert module_classes(["transformers.models.llama.modeling_llama.LlamaDecoderLayer"]) == {LlamaDecoderLayer}
    with pytest.raises(StrategyError, match="is not a class"):
        module_classes(["pipeline.strategy_checks.module_classes"])


def test_resume_detection_accepts_checkpoint_directories(tmp_path):
    from pipeline.sharded_export import resumable_checkpoint
    f = StageDir(tmp_path / "file").last_checkpoint
    assert resumable_checkpoint(f) is None
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x")
    assert resumable_checkpoint(f) == str(f)
    ds, fsdp, partial = (StageDir(tmp_path / n).last_checkpoint for n in ("ds", "fsdp", "partial"))
    for d in (ds, fsdp, partial):
        d.mkdir(parents=True)
    (ds / "latest").write_text("checkpoint")  # DeepSpeed writes `latest` after every shard
    (fsdp / "meta.pt").write_bytes(b"x")  # Lightning's sharded FSDP metadata, written last
    assert resumable_checkpoint(ds) == str(ds) and resumable_checkpoint(fsdp) == str(fsdp)
    assert resumable_checkpoint(partial) is None


def _tiny(tie=False, seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie))


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_export_from_a_lightning_state_dict(tmp_path, bpe_tokenizer, tie, dtype):
    """Keys of the LightningModule (`model.` prefix, as zero_to_fp32 / FSDP give them) -> an HF
    directory in the export dtype that from_pretrained loads back."""
    from pipeline.sharded_export import DTYPES, _strip, build_export_model, write_hf_dir
    src = _tiny(tie)
    state = {f"model.{k}": v.clone() for k, v in src.state_dict().items()}
    if tie:
        state.pop("model.lm_head.weight")  # zero_to_fp32 keeps one copy of a shared parameter
    model = build_export_model(src.config, _strip(state), DTYPES[dtype])
    out = StageDir(tmp_path).export
    write_hf_dir(model, bpe_tokenizer, out)
    back = LlamaForCausalLM.from_pretrained(out, dtype="auto")
    assert back.dtype == DTYPES[dtype] and json.loads((out / "config.json").read_text())["dtype"] == dtype
    for k, v in src.state_dict().items():
        assert torch.equal(back.state_dict()[k], v.to(DTYPES[dtype])), k
    assert (out / "tokenizer.json").is_file() and not out.with_name(out.name + ".tmp").exists()


def test_export_refuses_incomplete_weights():
    from pipeline.sharded_export import build_export_model
    src = _tiny()
    state = dict(src.state_dict())
    state.pop("model.layers.1.mlp.up_proj.weight")
    with pytest.raises(RuntimeError, match="missing .*up_proj"):
        build_export_model(src.config, state, torch.float32)


def test_export_dtype_defaults_to_the_model_dtype():
    from pipeline.sharded_export import export_dtype
    for over, expected in ((["model.dtype=bfloat16"], "bfloat16"), (["model.dtype=float32"], "float32"),
                           (["~model.dtype"], "float32"),  # build_causal_lm's default
                           (["model.dtype=float32", "checkpoint.export_dtype=bfloat16"], "bfloat16")):
        assert export_dtype(stage_settings(load_recipe([QUICKSTART], over), "backbone")) == expected


def test_single_process_export_without_trainer(tmp_path, bpe_tokenizer):
    from pipeline.sharded_export import export_stage
    module = SimpleNamespace(model=_tiny())
    export_stage(None, module, bpe_tokenizer, StageDir(tmp_path).export, dtype="bfloat16")
    back = LlamaForCausalLM.from_pretrained(StageDir(tmp_path).export)
    assert torch.equal(back.state_dict()["lm_head.weight"],
                       module.model.lm_head.weight.detach().to(torch.bfloat16).to(back.dtype))


# ----- ZeRO-3 pieces that need no GPU ---------------------------------------------------------------
def _zero3_strategy():
    from lightning.pytorch.strategies import DeepSpeedStrategy
    r = _zero3()
    return DeepSpeedStrategy(config=r["strategy"]["config"])


def test_transformers_sees_zero3_only_while_the_model_is_built():
    from transformers.integrations.deepspeed import deepspeed_config, is_deepspeed_zero3_enabled
    from lightning_modules.causal_lm import sharded_build_context
    from lightning.pytorch.strategies import DeepSpeedStrategy
    strategy = _zero3_strategy()
    with sharded_build_context(strategy):
        assert is_deepspeed_zero3_enabled() and deepspeed_config()["zero_optimization"]["stage"] == 3
    assert not is_deepspeed_zero3_enabled()
    with sharded_build_context(DeepSpeedStrategy(config={"zero_optimization": {"stage": 2}})):
        assert not is_deepspeed_zero3_enabled()
    with sharded_build_context(None):
        assert not is_deepspeed_zero3_enabled()


def test_zero3_span_loss_goes_through_the_lm_head_module():
    """Under ZeRO-3 (partitioned params carry `ds_id`) the sparse loss calls lm_head as a module, so
    DeepSpeed's hooks gather its weight; the result equals the weight-reading sparse path."""
    from lightning_modules.span_loss import span_loss_sums
    model = _tiny()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (2, 11), generator=g)
    labels = torch.where(torch.rand(2, 11, generator=g) < 0.5, ids, torch.full_like(ids, -100))
    batch = {"input_ids": ids, "labels": labels, "span_kinds": (labels != -100).long() * 2,
             "attention_mask": torch.ones_like(ids)}
    plain = span_loss_sums(model, batch, chunk_size=3)
    calls = []
    model.lm_head.register_forward_hook(lambda m, a, o: calls.append(a[0].shape))
    model.lm_head.weight.ds_id = 0
    try:
        zero3 = span_loss_sums(model, batch, chunk_size=3)
    finally:
        del model.lm_head.weight.ds_id
    n_sup = int((labels[:, 1:] != -100).sum())
    assert calls == [torch.Size([n_sup, 32])]  # one call, supervised positions only
    assert torch.allclose(plain.loss_sum, zero3.loss_sum) and torch.equal(plain.kind_counts, zero3.kind_counts)
    zero3.loss_sum.backward()
    assert model.lm_head.weight.grad is not None


def test_zero_micro_step_hook_marks_each_micro_batch():
    from lightning_modules.causal_lm import register_zero_micro_step_hook
    from lightning_modules.span_loss import forward_hidden
    strategy, seen = _zero3_strategy(), []
    strategy.model = SimpleNamespace(optimizer=SimpleNamespace(clear_backward_seen_flag=lambda: seen.append(1)))
    model = _tiny()
    register_zero_micro_step_hook(model, strategy)
    register_zero_micro_step_hook(model, strategy)  # configure_model may run twice: one hook
    batch = {"input_ids": torch.randint(0, 97, (1, 5))}
    forward_hidden(model, batch)
    forward_hidden(model, batch)
    assert len(seen) == 2
    with torch.no_grad():
        forward_hidden(model, batch)
    assert len(seen) == 2
    other = _tiny()
    register_zero_micro_step_hook(other, None)
    assert not getattr(other, "_zero_micro_step_hook", False)


def test_deepspeed_rules_run_when_the_recipe_is_validated():
    """Before anything is built (train.py --validate too), not at stage start."""
    with pytest.raises(RecipeError, match=r"train_micro_batch_size_per_gpu=2 but data.micro_batch_size=1"):
        load_recipe([QUICKSTART, STRATEGIES / "deepspeed_zero3.yaml"], ["strategy.config.train_micro_batch_size_per_gpu=2"])
    with pytest.raises(RecipeError, match=r"accumulates 4 micro-batches per optimizer step"):
        load_recipe([QUICKSTART, STRATEGIES / "deepspeed_zero3.yaml"],
                    ["trainer.accumulate_grad_batches=4", "~strategy.config.managed_gradient_accumulation"])
