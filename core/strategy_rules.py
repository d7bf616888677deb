"""The rules a recipe's strategy must follow with each stage's settings, checked with the rest of
the recipe (core/validation.py) before anything is built.

DeepSpeed: the module accumulates micro-batches itself (manual optimization, core/batch_plan.py),
so the DeepSpeed config must not set `gradient_accumulation_steps` (Lightning sets it to 1 from the
Trainer), `train_micro_batch_size_per_gpu` must equal the stage's `data.micro_batch_size`, clipping
must be in the config (`gradient_clipping`, equal to `trainer.gradient_clip_val`: the module does
not clip under DeepSpeed), no HF-Trainer "auto" values, no optimizer/scheduler in the config, and
accumulation over several micro-batches needs `managed_gradient_accumulation: false`.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Mapping

from .batch_plan import BatchPlan
from .errors import ProjectError
from .instantiate import locate
from .schema import default


class StrategyError(ProjectError, ValueError):
    pass


# ----- what a recipe's strategy is -----------------------------------------------------------
def strategy_of(recipe: Mapping) -> Any:
    """The recipe's `strategy` (a name or a node), or the schema's default."""
    return recipe.get("strategy") or default("strategy")


def strategy_kind(strategy: Any) -> str:
    """'deepspeed', 'fsdp', 'ddp' or 'other' for a recipe's `strategy` value (name or node)."""
    if isinstance(strategy, str):
        name = strategy.lower()
        for kind in ("deepspeed", "fsdp", "ddp"):
            if name.startswith(kind):
                return kind
        return "other"
    if isinstance(strategy, Mapping) and "_target_" in strategy:
        try:
            cls = locate(strategy["_target_"])
        except ImportError:
            return "other"
        from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy
        if isinstance(cls, type):
            if issubclass(cls, DeepSpeedStrategy):
                return "deepspeed"
            if issubclass(cls, FSDPStrategy):
                return "fsdp"
            if issubclass(cls, DDPStrategy):
                return "ddp"
    return "other"


def deepspeed_config(strategy: Mapping) -> dict | None:
    """The DeepSpeed config dict of a strategy node (`config:` as a mapping or a JSON path)."""
    cfg = strategy.get("config")
    if cfg is None:
        return None
    if isinstance(cfg, (str, Path)):
        path = Path(cfg)
        if not path.is_file():
            raise StrategyError(f"key 'strategy.config': DeepSpeed config file not found: {path}")
        return json.loads(path.read_text())
    return dict(cfg)


def zero_stage(strategy: Any) -> int:
    if strategy_kind(strategy) != "deepspeed":
        return 0
    if isinstance(strategy, str):
        digits = [c for c in strategy if c.isdigit()]
        return int(digits[0]) if digits else 2
    cfg = deepspeed_config(strategy)
    if cfg is None:
        return int(strategy.get("stage", 2))
    return int((cfg.get("zero_optimization") or {}).get("stage", 0))


def _auto_keys(node, prefix: str):
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _auto_keys(v, f"{prefix}.{k}")
    elif isinstance(node, str) and node == "auto":
        yield prefix


# ----- checks --------------------------------------------------------------------------------
def device_count(devices) -> int | None:
    """Processes per node for a `trainer.devices` value; None when Lightning decides ("auto", -1)."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices > 0 else None
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        s = devices.strip()
        if s in ("auto", "-1", ""):
            return None
        if "," in s:
            return len([p for p in s.split(",") if p.strip()])
        if s.lstrip("-").isdigit():
            n = int(s)
            return n if n > 0 else None
    return None


def expected_world_size(settings: Mapping) -> int | None:
    trainer = settings["trainer"]
    per_node = device_count(trainer["devices"])
    return None if per_node is None else per_node * int(trainer["num_nodes"])


def check_deepspeed(recipe: Mapping, settings: Mapping, world_size: int | None = None) -> None:
    """Raise StrategyError naming every DeepSpeed setting that does not fit the stage's settings."""
    errors = deepspeed_problems(recipe, settings, world_size)
    if errors:
        raise StrategyError("DeepSpeed settings do not fit the recipe:\n  " + "\n  ".join(errors))


def deepspeed_problems(recipe: Mapping, settings: Mapping, world_size: int | None = None) -> list[str]:
    """What does not fit under a DeepSpeed strategy (none under another); a strategy that cannot
    be checked at all raises StrategyError."""
    strategy = strategy_of(recipe)
    if strategy_kind(strategy) != "deepspeed":
        return []
    stage = settings.get("name", "?")
    micro = int(settings["data"]["micro_batch_size"])
    clip = settings["trainer"]["gradient_clip_val"] or 0.0
    if isinstance(strategy, str):
        raise StrategyError(
            f"key 'strategy': '{strategy}' builds a DeepSpeed config with Lightning's defaults, which "
            f"turn gradient clipping off here (the runner passes no trainer.gradient_clip_val to Lightning) "
            f"and log a wrong micro-batch size; use a fragment with explicit values, e.g. "
            f"`defaults: [..., strategy/deepspeed_zero3]`")
    cfg = deepspeed_config(strategy)
    if cfg is None:
        raise StrategyError(
            "key 'strategy.config': DeepSpeedStrategy without an explicit `config` gets Lightning's "
            "defaults (gradient_clipping 0 because the runner keeps trainer.gradient_clip_val for the "
            "module, train_micro_batch_size_per_gpu guessed); use recipes/strategy/deepspeed_zero*.yaml")
    errors = []
    autos = list(_auto_keys(cfg, "strategy.config"))
    if autos:
        errors.append(f"{', '.join(autos)}: 'auto' is an HF-Trainer placeholder that Lightning does not "
                      f"fill in; give explicit values")
    if "gradient_accumulation_steps" in cfg:
        errors.append(
            f"strategy.config.gradient_accumulation_steps={cfg['gradient_accumulation_steps']}: remove it. "
            f"The module accumulates data.global_batch_size / trainer.accumulate_grad_batches micro-batches "
            f"itself, so DeepSpeed's must be 1, and Lightning sets it (to Trainer(accumulate_grad_batches=1)) "
            f"and refuses it in the config")
    mbs = cfg.get("train_micro_batch_size_per_gpu")
    if mbs is None:
        errors.append(f"strategy.config.train_micro_batch_size_per_gpu is not set; set it to "
                      f"data.micro_batch_size (={micro} for stage {stage})")
    elif int(mbs) != micro:
        errors.append(f"strategy.config.train_micro_batch_size_per_gpu={mbs} but data.micro_batch_size={micro} "
                      f"(stage {stage}; a per-stage stages.{stage}.data.micro_batch_size is not seen by the "
                      f"${{data.micro_batch_size}} interpolation): make them equal")
    if "train_batch_size" in cfg and world_size:
        if int(cfg["train_batch_size"]) != micro * world_size:
            errors.append(f"strategy.config.train_batch_size={cfg['train_batch_size']} must be "
                          f"data.micro_batch_size x world size = {micro} x {world_size} (DeepSpeed steps once "
                          f"per engine.step(); leave it out and DeepSpeed derives it)")
    if "gradient_clipping" not in cfg:
        errors.append(f"strategy.config.gradient_clipping is not set: DeepSpeed clips inside its engine and "
                      f"the module does not clip under DeepSpeed; set it to trainer.gradient_clip_val (={clip})")
    elif float(cfg["gradient_clipping"] or 0.0) != float(clip):
        errors.append(f"strategy.config.gradient_clipping={cfg['gradient_clipping']} but "
                      f"trainer.gradient_clip_val={clip} (stage {stage}): make them equal")
    for key in ("optimizer", "scheduler"):
        if key in cfg:
            errors.append(f"strategy.config.{key}: remove it; the recipe's `{key}` section builds it "
                          f"(SpanLMModule.configure_optimizers)")
    if (cfg.get("fp16") or {}).get("enabled") and (cfg.get("bf16") or {}).get("enabled"):
        errors.append("strategy.config: fp16.enabled and bf16.enabled are both true")
    precision = str(settings["trainer"]["precision"])
    if (cfg.get("bf16") or {}).get("enabled") and precision.startswith("16"):
        errors.append(f"strategy.config.bf16.enabled is true but trainer.precision={precision}")
    n_accum = BatchPlan.of(settings, world_size or 1).accumulation
    if n_accum > 1 and cfg.get("managed_gradient_accumulation", True) is not False:
        errors.append(
            f"stage {stage} accumulates {n_accum} micro-batches per optimizer step (manual optimization): set "
            f"strategy.config.managed_gradient_accumulation: false so engine.step() is the accumulation "
            f"boundary (with DeepSpeed's managed counter and gradient_accumulation_steps=1 every backward "
            f"would be a boundary)")
    if cfg.get("managed_gradient_accumulation") is False and not _deepspeed_knows_unmanaged():
        errors.append("strategy.config.managed_gradient_accumulation: the installed deepspeed does not "
                      "support it (needs a version with DeepSpeedEngine.managed_gradient_accumulation)")
    return errors


def _deepspeed_knows_unmanaged() -> bool:
    try:
        engine = importlib.import_module("deepspeed.runtime.engine")
    except Exception:  # deepspeed missing: Lightning will say so when it builds the strategy
        return True
    return hasattr(engine.DeepSpeedEngine, "managed_gradient_accumulation")
