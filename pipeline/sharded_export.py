"""Stage handoff: turn a stage's trained weights, however they are sharded, into a Hugging Face
directory that the next stage (or evaluation) loads with `from_pretrained`, with a fresh optimizer.

Called on every rank after `trainer.fit` (pipeline.sharded_export.export_stage, from the stage runner):

  single device / DDP   the module's weights are whole on every rank; rank 0 takes its state dict.
  DeepSpeed ZeRO-2/3    the final state is saved as a sharded DeepSpeed checkpoint
                        (the stage's last checkpoint, every rank writes its shard; skipped when the
                        ModelCheckpoint callback already saved the final step) and rank 0
                        consolidates the fp32 master weights from it with DeepSpeed's
                        zero_to_fp32 (lazily, one tensor at a time), as Lightning's
                        `convert_zero_checkpoint_to_fp32_state_dict` does. The checkpoint directory
                        must be on a filesystem every node writes to and rank 0 reads.
  FSDP                  a full state dict is gathered onto rank 0 (CPU offload, rank0_only).

Rank 0 then casts the weights to the export dtype (`checkpoint.export_dtype` if the recipe has
it, else the stage's `model.dtype`), loads them into a copy of the
model built on the meta device (no second full-size allocation), and writes
`save_pretrained` + tokenizer to `<out>.tmp`, renamed to `<out>` when complete. Every rank waits
at a barrier so the next stage never starts before its init checkpoint exists. Only rank 0 writes.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Mapping

import torch

from core.errors import disk_full_as_error
from core.run_dir import RunDir, StageDir
from core.vocabulary import DTYPES

MODULE_PREFIXES = ("_forward_module.", "model.")  # Lightning wrapper (old), SpanLMModule.model


def export_dtype(settings: Mapping) -> str:
    return settings["checkpoint"]["export_dtype"] or settings["model"]["dtype"]


# ----- resume ------------------------------------------------------------------------------------
def resumable_checkpoint(path: Path) -> str | None:
    """`path` if it is a complete checkpoint Lightning can resume from: a file (single device, DDP,
    FSDP full) or a directory (DeepSpeed: has `latest`; FSDP sharded: has `meta.pt`)."""
    path = Path(path)
    if path.is_file():
        return str(path)
    if path.is_dir() and ((path / "latest").is_file() or (path / "meta.pt").is_file()):
        return str(path)
    return None


# ----- gathering the weights -------------------------------------------------------------------
def _strip(state: Mapping[str, torch.Tensor]) -> dict:
    """Keys of the LightningModule (`model.<hf key>`) -> keys of the HF model."""
    out = {}
    for key, value in state.items():
        for prefix in MODULE_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _is_deepspeed(strategy) -> bool:
    try:
        from lightning.pytorch.strategies import DeepSpeedStrategy
    except ImportError:  # pragma: no cover
        return False
    return isinstance(strategy, DeepSpeedStrategy)


def _is_fsdp(strategy) -> bool:
    from lightning.pytorch.strategies import FSDPStrategy
    return isinstance(strategy, FSDPStrategy)


def final_deepspeed_checkpoint(trainer, sdir: StageDir) -> Path:
    """The sharded DeepSpeed checkpoint of the final step (every rank must call this)."""
    last = sdir.last_checkpoint
    cb = trainer.checkpoint_callback
    saved_step = getattr(cb, "_last_global_step_saved", None) if cb is not None else None
    if saved_step != trainer.global_step or resumable_checkpoint(last) is None:
        trainer.save_checkpoint(last)  # collective: each rank writes its shard, then a barrier
    return last


def consolidate_deepspeed(checkpoint_dir: Path, dtype: torch.dtype) -> dict:
    """fp32 master weights of a ZeRO-2/3 checkpoint directory, cast to `dtype` one tensor at a time
    (rank 0 only; reads every rank's optimizer shard)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    lazy = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), lazy_mode=True)
    out, seen = {}, {}
    for name, tensor in lazy.items():
        if id(tensor) in seen:  # shared (tied) tensors stay shared
            out[name] = out[seen[id(tensor)]]
            continue
        seen[id(tensor)] = name
        t = tensor.contiguous()
        out[name] = t.to(dtype) if t.is_floating_point() else t
        del t
    return _strip(out)


def fsdp_full_state_dict(strategy) -> dict | None:
    """A full state dict gathered onto rank 0's CPU (every rank must call this); None elsewhere."""
    from lightning.fabric.strategies.fsdp import _get_full_state_dict_context
    with _get_full_state_dict_context(strategy.model, world_size=strategy.world_size, rank0_only=True):
        state = strategy.model.state_dict()
    return _strip(state) if strategy.is_global_zero else None


def gather_state_dict(trainer, module, sdir: StageDir, dtype: torch.dtype) -> dict | None:
    """The stage's final weights as an HF state dict on rank 0 (None on other ranks). Collective."""
    strategy = trainer.strategy if trainer is not None else None
    if strategy is not None and _is_deepspeed(strategy):
        last = final_deepspeed_checkpoint(trainer, sdir)
        return consolidate_deepspeed(last, dtype) if trainer.is_global_zero else None
    if strategy is not None and _is_fsdp(strategy):
        return fsdp_full_state_dict(strategy)
    if trainer is not None and not trainer.is_global_zero:
        return None
    return {k: v.detach() for k, v in module.model.state_dict().items()}


# ----- writing the export ------------------------------------------------------------------------
def build_export_model(config, state: Mapping[str, torch.Tensor], dtype: torch.dtype, generation_config=None):
    """A plain (unsharded, CPU) HF model holding `state`, built on the meta device and filled by
    assignment, so no second full-size copy is allocated."""
    from transformers import AutoModelForCausalLM
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
    if is_deepspeed_zero3_enabled():  # would build the export copy under zero.Init
        raise RuntimeError("export: transformers still has a ZeRO-3 config registered")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = {k: (v.to("cpu", dtype) if v.is_floating_point() else v.to("cpu")) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    # Parameters and persistent buffers must all be filled; non-persistent buffers (rotary tables)
    # stay on the meta device: save_pretrained does not write them and from_pretrained rebuilds them.
    persistent = set(model.state_dict())
    still_meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
                  if t.is_meta and n in persistent]
    if still_meta or unexpected:
        raise RuntimeError(f"export: the consolidated weights do not match the model: missing {still_meta[:5]}, "
                           f"unexpected {list(unexpected)[:5]}")
    if generation_config is not None:
        model.generation_config = generation_config
    return model


def write_hf_dir(model, tokenizer, out: Path) -> None:
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    need = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    try:
        with disk_full_as_error(out, need):
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written
        raise
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def export_stage(trainer, module, tokenizer, out: Path, dtype: str) -> None:
    """Every rank: gather/consolidate the final weights; rank 0 writes `out` (the export folder of
    the stage whose folder holds it); then a barrier."""
    out = Path(out)
    torch_dtype = DTYPES[dtype]
    state = gather_state_dict(trainer, module, StageDir(out.parent), torch_dtype)
    if state is not None:
        model = build_export_model(module.model.config, state, torch_dtype,
                                   getattr(module.model, "generation_config", None))
        write_hf_dir(model, tokenizer, out)
        del model, state
    if trainer is not None:
        trainer.strategy.barrier("export_stage")


# ----- offline consolidation (a different world size, or weights for evaluation) ---------------------
def load_checkpoint_state(path: Path, dtype: torch.dtype) -> dict:
    """HF state dict from any checkpoint a stage leaves in checkpoints/: a DeepSpeed directory
    (fp32 master weights), a sharded FSDP directory (torch.distributed.checkpoint) or a file."""
    path = Path(path)
    if path.is_dir() and (path / "latest").is_file():
        return consolidate_deepspeed(path, dtype)
    if path.is_dir() and (path / "meta.pt").is_file():
        from lightning.fabric.utilities.load import _load_distributed_checkpoint
        state = _load_distributed_checkpoint(path)["model"]
    elif path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    else:
        raise FileNotFoundError(f"{path}: not a complete checkpoint (file, DeepSpeed or sharded FSDP directory)")
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in _strip(state).items()}


def consolidate_stage(recipe: dict, stage: str, out: Path | None = None, dtype: str | None = None,
                      checkpoint: Path | None = None) -> Path:
    """Write a stage's latest checkpoint (however sharded) as an HF directory, on one process."""
    from transformers import AutoConfig

    from core.stage_config import resolve_init, stage_settings
    from pipeline.stage_setup import load_tokenizer
    settings = stage_settings(recipe, stage)
    sdir = RunDir.of(recipe).stage(stage)
    checkpoint = Path(checkpoint or sdir.last_checkpoint)
    dtype = dtype or export_dtype(settings)
    init_path = resolve_init(recipe, settings)
    tokenizer = load_tokenizer(recipe, settings, init_path)
    if init_path:
        config = AutoConfig.from_pretrained(init_path, trust_remote_code=settings["model"]["trust_remote_code"])
    else:
        cfg = dict(settings["model"]["config"])
        config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    config.vocab_size = max(config.vocab_size, len(tokenizer))
    state = load_checkpoint_state(checkpoint, DTYPES[dtype])
    out = Path(out or sdir.consolidated)
    write_hf_dir(build_export_model(config, state, DTYPES[dtype]), tokenizer, out)
    return out


def main(argv=None) -> int:
    """python -m pipeline.sharded_export RECIPE.yaml [more.yaml] [key=value] --stage NAME [--out DIR]"""
    import argparse

    from core.recipe import load_recipe, split_args
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("args", nargs="*", help="recipe files, then key=value overrides (as for train.py)")
    parser.add_argument("--stage", required=True)
    parser.add_argument("--checkpoint", help="default: the stage's last checkpoint (RunDir)")
    parser.add_argument("--out", help="default: the stage's consolidated/ folder")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: the stage's export dtype")
    ns = parser.parse_intermixed_args(argv)
    recipe = load_recipe(*split_args(ns.args))
    out = consolidate_stage(recipe, ns.stage, ns.out, ns.dtype, ns.checkpoint)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
