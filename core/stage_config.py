"""One stage's effective settings: the recipe's shared sections with the stage's overrides."""
from __future__ import annotations

import copy

from core.run_dir import RunDir

from core.errors import ProjectError


class BatchSizeError(ProjectError, ValueError):
    """data.global_batch_size that the micro-batches and devices cannot make up."""

SECTIONS = ("model", "data", "trainer", "optimizer", "scheduler", "loss", "checkpoint")


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def stage_settings(recipe: dict, name: str) -> dict:
    stage = recipe["stages"][name]
    out = {"name": name, "role": stage["role"], "init_from": stage.get("init_from")}
    for section in SECTIONS:
        out[section] = deep_merge(recipe.get(section) or {}, stage.get(section) or {})
    return out


def resolve_init(recipe: dict, settings: dict) -> str | None:
    """The checkpoint a stage starts from: another stage's export, a path/hub id, or the base model."""
    src = settings["init_from"]
    if src is None:
        return settings["model"].get("init_from")
    if src.startswith("stage:"):
        return str(RunDir.of(recipe).stage(src.split(":", 1)[1]).export)
    return src


def accumulation(settings: dict, world_size: int) -> int:
    """Micro-batches per optimizer step: from data.global_batch_size when set, else the trainer's."""
    data, trainer = settings["data"], settings["trainer"]
    gbs = data.get("global_batch_size")
    if not gbs:
        return int(trainer.get("accumulate_grad_batches", 1))
    per_pass = data.get("micro_batch_size", 1) * world_size
    if gbs % per_pass:
        raise BatchSizeError(f"data.global_batch_size={gbs} is not a multiple of micro_batch_size x "
                         f"world size = {per_pass}")
    return gbs // per_pass
