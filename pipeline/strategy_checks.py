"""Checks at stage start, on every rank, that the launcher agrees with the recipe, plus small
helpers the strategy fragments refer to. (The DeepSpeed rules run when the recipe is validated:
core/strategy_rules.py.)

    from pipeline.strategy_checks import check_stage
    check_stage(recipe, settings)        # raises StrategyError naming the recipe keys

Launch: WORLD_SIZE (torchrun) or SLURM_NTASKS (srun) must equal `trainer.num_nodes` x
`trainer.devices`, and the per-node count must equal `trainer.devices`.
"""
from __future__ import annotations

import os
from typing import Mapping

from core.instantiate import locate
from core.strategy_rules import StrategyError, check_deepspeed, device_count, expected_world_size


# ----- helpers used by recipes/strategy/*.yaml -------------------------------------------------
def module_classes(paths) -> set[type]:
    """Classes from dotted import paths (FSDP's auto_wrap_policy / activation_checkpointing_policy
    take a set of layer classes)."""
    out = set()
    for path in paths:
        cls = locate(str(path))
        if not isinstance(cls, type):
            raise StrategyError(f"strategy: '{path}' is not a class")
        out.add(cls)
    return out


def launched_world(env: Mapping[str, str] | None = None) -> tuple[str, int, int | None] | None:
    """(launcher, world size, processes per node) when an external launcher started this process."""
    env = os.environ if env is None else env
    if env.get("SLURM_NTASKS") and _slurm_managed(env):
        per_node = env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", "")
        per_node = per_node.split("(")[0].split(",")[0]
        return "srun (SLURM_NTASKS)", int(env["SLURM_NTASKS"]), int(per_node) if per_node.isdigit() else None
    if env.get("WORLD_SIZE"):
        local = env.get("LOCAL_WORLD_SIZE")
        return "torchrun (WORLD_SIZE)", int(env["WORLD_SIZE"]), int(local) if local and local.isdigit() else None
    return None


def _slurm_managed(env: Mapping[str, str]) -> bool:
    """Whether Lightning will take ranks from SLURM (as its SLURMEnvironment.detect does: srun used,
    not an interactive job)."""
    if env is os.environ:
        from lightning.fabric.plugins.environments import SLURMEnvironment
        return SLURMEnvironment.detect()
    return "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def check_launch(settings: Mapping, env: Mapping[str, str] | None = None) -> int | None:
    """Fail when the launcher's world size differs from trainer.num_nodes x trainer.devices; return
    the world size (None when launched by Lightning itself or single-process)."""
    launched = launched_world(env)
    expected = expected_world_size(settings)
    if launched is None:
        return expected
    how, world, per_node = launched
    trainer = settings["trainer"]
    devices, nodes = trainer["devices"], int(trainer["num_nodes"])
    n_dev = device_count(devices)
    if expected is not None and world != expected:
        raise StrategyError(
            f"{how}: the launcher started {world} processes but trainer.num_nodes x trainer.devices = "
            f"{nodes} x {devices} = {expected} (stage {settings.get('name', '?')}); make them match, e.g. "
            f"trainer.num_nodes={max(1, world // (per_node or world))} trainer.devices={per_node or world}")
    if n_dev is not None and per_node is not None and per_node != n_dev:
        raise StrategyError(
            f"{how}: {per_node} processes per node but trainer.devices={devices} "
            f"(stage {settings.get('name', '?')}); set trainer.devices={per_node} "
            f"(torchrun --nproc_per_node / sbatch --ntasks-per-node must equal trainer.devices)")
    return world


def check_stage(recipe: Mapping, settings: Mapping, env: Mapping[str, str] | None = None) -> None:
    """The launcher's world size against the recipe's, at the start of a stage on every rank. The
    DeepSpeed rules ran at validation with trainer.devices x num_nodes; when that was left to
    Lightning ("auto"), they run again here with the launcher's world size."""
    world = check_launch(settings, env)
    if expected_world_size(settings) is None and world is not None:
        check_deepspeed(recipe, settings, world)


# ----- CPU testing of the DeepSpeed code path ------------------------------------------------
from lightning.pytorch.strategies import DDPStrategy as _DDPStrategy  # noqa: E402
from lightning.pytorch.strategies import DeepSpeedStrategy as _DeepSpeedStrategy  # noqa: E402


class CPUDeepSpeedStrategy(_DeepSpeedStrategy):
    """DeepSpeedStrategy without Lightning's CUDA-only guard, to exercise the ZeRO code path on CPU
    (DS_ACCELERATOR=cpu, gloo) in tests. Not for training: use DeepSpeedStrategy on GPUs."""

    def setup_environment(self) -> None:
        _DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:  # without the CUDA device-index validation
        from lightning.fabric.utilities.seed import reset_seed
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        import argparse

        import deepspeed
        params = filter(lambda p: p.requires_grad, model.parameters())
        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank), config=self.config, model=model,
            model_parameters=params, optimizer=optimizer, lr_scheduler=lr_scheduler,
            dist_init_required=False)
        return engine, ds_optimizer

