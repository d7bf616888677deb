"""What a stage needs before training, shared by the runner, the export tool and the preview:
the launcher's rank, the tokenizer (trained on the corpus for the embedded default) and the
DataModule (with simulated sources built first: simulators/sources.py)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from transformers import AutoTokenizer

from core.build_sites import DATA, TOKENIZER
from core.recipe import RecipeError
from core.run_dir import RunDir
from core.batch_plan import BatchPlan
from core.stage_config import shared_settings


def launch_rank() -> int:
    """This process's global rank as the launcher set it (torchrun, srun, Lightning's own), known
    before any process group exists; 0 when not launched distributed."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    return int(os.environ.get("NODE_RANK", 0)) * 1000 + int(os.environ.get("LOCAL_RANK", 0))


def wait_for(path: Path, what: str, timeout_s: float = 3600.0) -> None:
    """Ranks other than 0 wait for a file that rank 0 writes atomically."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {launch_rank()}: waited {timeout_s:.0f}s for {what} at {path}")
        time.sleep(1.0)


def load_tokenizer(recipe: dict, settings: dict, init_path: str | None):
    tok_cfg = recipe.get("tokenizer", {})
    source = tok_cfg.get("from_pretrained") or init_path
    if source:
        tok = AutoTokenizer.from_pretrained(source)
    else:
        path = RunDir.of(recipe).tokenizer
        if launch_rank() != 0:
            wait_for(path / "tokenizer.json", "the tokenizer rank 0 trains")
        if (path / "tokenizer.json").is_file():
            tok = AutoTokenizer.from_pretrained(path)
        else:
            if "train_bpe" not in tok_cfg:
                raise RecipeError("tokenizer: no checkpoint to take it from; set tokenizer.from_pretrained "
                                 "or tokenizer.train_bpe")
            dm = build_datamodule(recipe, settings, tokenizer=None)
            tok = TOKENIZER.build(tok_cfg["train_bpe"], dm.corpus_texts(), out_dir=path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_datamodule(recipe: dict, settings: dict, tokenizer, world_size: int = 1):
    """The stage's DataModule, with the stage's BatchPlan on `world_size` devices."""
    from simulators.sources import resolve_simulated_sources  # the simulators load only when used
    data = dict(settings["data"])
    data["sources"] = resolve_simulated_sources(data["sources"], data["simulator_dir"], data["cache_dir"])
    return DATA.build(data, role=settings["role"], template=recipe["template"], tokenizer=tokenizer,
                      batch_plan=BatchPlan.of(settings, world_size),
                      add_bos=shared_settings(recipe, "tokenizer")["add_bos"])
