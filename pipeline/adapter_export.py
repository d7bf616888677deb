"""An adapter stage's exports: the adapter in PEFT format beside a pointer to its base export
(`base_model_name_or_path` in adapter_config.json, which peft and vLLM read), and, when asked (or
when another stage starts from this one), the merged full model, built the way a user would build
it: the base export plus the adapter, merged by peft.

Called on every rank after `trainer.fit`. The weights are gathered as for a full export
(pipeline.sharded_export.gather_state_dict: whole, consolidated from ZeRO shards, or gathered from
FSDP); rank 0 writes each folder to `<name>.tmp` and renames it; then every rank waits at a barrier.
"""
from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import torch

from core.recipe import enabled_stages
from core.run_dir import StageDir
from core.vocabulary import DTYPES
from pipeline.sharded_export import gather_state_dict, write_hf_dir

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def base_pointer(init_path: str) -> str:
    """A local base export by its absolute path (the adapter then loads from any working
    directory); a hub id as it is."""
    path = Path(init_path)
    return str(path.resolve()) if path.is_dir() else init_path


def merge_wanted(recipe: dict, settings: dict) -> bool:
    """checkpoint.merge_adapter, or another enabled stage starts from this one (it needs full weights)."""
    feeds = any(recipe["stages"][n].get("init_from") == f"stage:{settings['name']}" for n in enabled_stages(recipe))
    return bool(settings["checkpoint"].get("merge_adapter")) or feeds


def export_adapter_stage(trainer, module, tokenizer, sdir: StageDir, base: str, dtype: str,
                         merge: bool) -> None:
    torch_dtype = DTYPES[dtype]
    state = gather_state_dict(trainer, module, sdir, torch_dtype)
    if state is not None:
        write_adapter(module.model, state, tokenizer, sdir.adapter, base, torch_dtype)
        if merge:
            write_merged(sdir.adapter, tokenizer, sdir.export, torch_dtype,
                         getattr(module.model, "generation_config", None))
        del state
    if trainer is not None:
        trainer.strategy.barrier("export_adapter_stage")


def write_adapter(model, state: dict, tokenizer, out: Path, base: str, dtype: torch.dtype) -> None:
    """The adapter's weights out of `state` (the PeftModel's full state dict), saved as
    `PeftModel.save_pretrained` saves them, with `base` as the base model."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file
    weights = get_peft_model_state_dict(model, state_dict=state, save_embedding_layers=False)
    weights = {k: (v.to("cpu", dtype) if v.is_floating_point() else v.cpu()).contiguous()
               for k, v in weights.items()}
    config = copy.deepcopy(model.peft_config["default"])
    config.base_model_name_or_path, config.inference_mode = base, True
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(weights, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def write_merged(adapter_dir: Path, tokenizer, out: Path, dtype: torch.dtype, generation_config=None) -> None:
    """base + adapter merged in float32 by peft, written in `dtype` as a plain HF export."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM
    base_path = PeftConfig.from_pretrained(str(adapter_dir)).base_model_name_or_path
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().to(dtype)
    if generation_config is not None:
        model.generation_config = generation_config
    write_hf_dir(model, tokenizer, out)
