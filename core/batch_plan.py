"""How one optimizer step is made up: the accumulation story in one object.

The module accumulates a step's micro-batches itself (manual optimization), so that the step's loss
is its summed token losses over the supervised tokens of the whole step, all micro-batches and all
devices (token-exact), not a mean of per-micro-batch means. The sampler therefore yields one step
(all its micro-batches) at a time, and Lightning's and DeepSpeed's own accumulation stay at 1.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from .errors import ProjectError


class BatchSizeError(ProjectError, ValueError):
    """data.global_batch_size that the micro-batches and devices cannot make up."""


@dataclass(frozen=True)
class BatchPlan:
    micro_batch_size: int   # examples (or packed rows) per forward pass on one device
    accumulation: int       # micro-batches per optimizer step on one device
    world_size: int         # devices that each run `accumulation` micro-batches per step

    # Lightning's Trainer(accumulate_grad_batches=...) and DeepSpeed's: the module steps itself.
    FRAMEWORK_ACCUMULATION = 1

    @property
    def examples_per_step(self) -> int:
        """Examples (rows) one optimizer step trains on, all devices together."""
        return self.micro_batch_size * self.accumulation * self.world_size

    @property
    def per_device_step(self) -> int:
        """Examples (rows) of one step on one device: what the sampler hands each rank."""
        return self.micro_batch_size * self.accumulation

    def for_validation(self) -> BatchPlan:
        """Validation has no optimizer step: one micro-batch per loader batch."""
        return replace(self, accumulation=1)

    @classmethod
    def of(cls, settings: Mapping, world_size: int) -> BatchPlan:
        """The plan of a stage's completed settings (core.stage_config.stage_settings):
        `data.global_batch_size` when set, else `trainer.accumulate_grad_batches` micro-batches."""
        data, trainer = settings["data"], settings["trainer"]
        micro, gbs = data["micro_batch_size"], data["global_batch_size"]
        if not gbs:
            return cls(micro, int(trainer["accumulate_grad_batches"]), world_size)
        per_pass = micro * world_size
        if gbs % per_pass:
            raise BatchSizeError(f"data.global_batch_size={gbs} is not a multiple of data.micro_batch_size x "
                                 f"world size = {micro} x {world_size}; change one of them")
        return cls(micro, gbs // per_pass, world_size)
