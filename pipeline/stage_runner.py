"""Runs a recipe's stage graph: each stage trains one role and leaves a Hugging Face export.

Layout of a run directory (`run.dir`):
    tokenizer/                the tokenizer trained on the corpus (embedded default only)
    <stage>/checkpoints/      Lightning checkpoints (last.ckpt resumes an interrupted stage)
    <stage>/logs/             CSV metrics (per-span losses, lr, grad norm, tokens/s)
    <stage>/wandb/            the W&B run (offline unless the recipe or WANDB_MODE says otherwise)
    <stage>/hf/               save_pretrained of model and tokenizer
    <stage>/DONE.json         written last: a finished stage is skipped on rerun
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from lightning_modules.span_lm_module import SpanLMModule
from lightning_modules.throughput import build_throughput_callback
from core.atomic_files import write_json_atomic, write_text_atomic
from core.instantiate import instantiate
from core.recipe import redact, stage_order, to_yaml
from core.stage_config import export_dir, resolve_init, stage_dir, stage_settings
from pipeline.serving import make_servable
from pipeline.sharded_export import export_dtype, export_stage, resumable_checkpoint
from pipeline.stage_setup import build_datamodule, launch_rank, load_tokenizer
from pipeline.strategy_checks import check_stage


def enabled_stages(recipe: dict) -> list[str]:
    return stage_order({n: s for n, s in recipe["stages"].items() if s.get("enabled", True)})


def is_done(recipe: dict, name: str) -> bool:
    return (stage_dir(recipe, name) / "DONE.json").is_file()


def build_loggers(recipe: dict, settings: dict, sdir: Path):
    cfg = recipe.get("logger", {})
    loggers = []
    if cfg.get("csv", {}).get("enabled", True):
        loggers.append(CSVLogger(str(sdir), name="logs", version=""))
    wb = cfg.get("wandb", {})
    if wb.get("enabled", True):
        mode = os.environ.get("WANDB_MODE", wb.get("mode", "offline"))
        (sdir / "wandb").mkdir(parents=True, exist_ok=True)
        logger = WandbLogger(project=wb.get("project", "alpha-umi-glpft"), entity=wb.get("entity"),
                             name=f"{recipe['run']['name']}/{settings['name']}",
                             group=recipe["run"].get("group") or recipe["run"]["name"],
                             job_type=settings["role"], tags=wb.get("tags", []), save_dir=str(sdir),
                             mode=mode, log_model=wb.get("log_model", False),
                             id=_wandb_id(sdir), resume="allow")
        logger.log_hyperparams({"recipe": redact(recipe), "stage": redact(settings)})
        loggers.append(logger)
    return loggers


def _wandb_id(sdir: Path) -> str | None:
    """The same W&B run id across resumes of a stage (rank 0 logs; other ranks need none)."""
    if launch_rank() != 0:
        return None
    path = sdir / "wandb_id.txt"
    if not path.exists():
        import uuid
        path.write_text(uuid.uuid4().hex[:12])
    return path.read_text().strip()


# The module steps the optimizer itself; a checkpoint holding the state after the step is exactly
# what resuming needs, so Lightning's advice to save the pre-step state does not apply.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")


def build_trainer(recipe: dict, settings: dict, sdir: Path) -> L.Trainer:
    kwargs = dict(settings["trainer"])
    kwargs.pop("accumulate_grad_batches", None)  # the module accumulates (exact token normalisation)
    kwargs.pop("gradient_clip_val", None)  # the module clips (manual optimization)
    strategy = recipe.get("strategy", "auto")
    strategy = instantiate(strategy) if isinstance(strategy, dict) else strategy
    ckpt = settings.get("checkpoint", {})
    callbacks = [ModelCheckpoint(dirpath=str(sdir / "checkpoints"), save_last=True, save_top_k=0,
                                 every_n_train_steps=ckpt.get("every_n_train_steps", 50),
                                 save_weights_only=ckpt.get("save_weights_only", False)),
                 build_throughput_callback(recipe.get("telemetry"))]
    return L.Trainer(strategy=strategy, logger=build_loggers(recipe, settings, sdir), callbacks=callbacks,
                     use_distributed_sampler=False, accumulate_grad_batches=1,
                     enable_progress_bar=recipe.get("logger", {}).get("progress_bar", True),
                     default_root_dir=str(sdir), **kwargs)


def run_stage(recipe: dict, name: str) -> dict:
    settings = stage_settings(recipe, name)
    check_stage(recipe, settings)  # world size vs num_nodes x devices, DeepSpeed config rules
    sdir = stage_dir(recipe, name)
    sdir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(recipe["run"].get("seed", 42), workers=True)
    init_path = resolve_init(recipe, settings)
    if settings["init_from"] and settings["init_from"].startswith("stage:") and not Path(init_path).is_dir():
        raise FileNotFoundError(f"stage {name}: its init_from {settings['init_from']} has no export at {init_path}")
    tokenizer = load_tokenizer(recipe, settings, init_path)
    trainer = build_trainer(recipe, settings, sdir)
    dm = build_datamodule(recipe, settings, tokenizer, trainer.world_size)
    model_cfg = {**settings["model"], "init_from": init_path,
                 "special_token_ids": {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}}
    module = SpanLMModule(model=model_cfg, optimizer=settings["optimizer"], scheduler=settings["scheduler"],
                          loss=settings.get("loss"), vocab_size=len(tokenizer),
                          gradient_clip_val=settings["trainer"].get("gradient_clip_val", 1.0))
    last = sdir / "checkpoints" / "last.ckpt"
    resume = resumable_checkpoint(last)  # a file, or a directory (DeepSpeed / sharded FSDP)
    if resume:
        print(f"[{name}] resuming from {resume}")
    trainer.fit(module, datamodule=dm, ckpt_path=resume)
    if trainer.interrupted:  # never export or mark done a stage that did not finish
        raise RuntimeError(f"stage {name} was interrupted; rerun to resume from {last}")
    summary = {"stage": name, "role": settings["role"], "init_from": init_path,
               "global_step": trainer.global_step, "data": dm.stats,
               "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}}
    make_servable(module.model, tokenizer, max_length=settings["data"].get("max_length"),
                  chat_template=(recipe.get("tokenizer") or {}).get("chat_template"))
    export_stage(trainer, module, tokenizer, export_dir(recipe, name), dtype=export_dtype(settings))
    if trainer.is_global_zero:
        write_json_atomic(sdir / "DONE.json", summary)
    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.finish()
    return summary


def run_recipe(recipe: dict, only: str | None = None) -> list[str]:
    """Run every enabled stage in dependency order, skipping finished ones; return those run."""
    names = enabled_stages(recipe)
    run_dir = Path(recipe["run"]["dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    if launch_rank() == 0:  # what this run was trained with (evaluation reads it)
        write_text_atomic(run_dir / "recipe.yaml", to_yaml(redact(recipe)))
    if only is not None:
        if only not in names:
            raise ValueError(f"--stage {only}: not an enabled stage of this recipe ({', '.join(names)})")
        names = [only]
    ran = []
    for name in names:
        if is_done(recipe, name):
            print(f"[{name}] already finished ({stage_dir(recipe, name) / 'DONE.json'}); skipping")
            continue
        run_stage(recipe, name)
        ran.append(name)
    if only is None:
        run_evaluation(recipe)
    return ran


def run_evaluation(recipe: dict) -> dict | None:
    """The recipe's `evaluate:` stage (static, teacher-forced) after training; skipped when done."""
    cfg = recipe.get("evaluate") or {}
    if not cfg.get("enabled", False) or launch_rank() != 0:
        return None
    metrics = Path(cfg.get("out_dir") or Path(recipe["run"]["dir"]) / "eval") / "metrics.json"
    if metrics.is_file():
        print(f"[evaluate] already finished ({metrics}); skipping")
        return json.loads(metrics.read_text())
    from evaluation.static_inference import evaluate_run  # inference code only when evaluating
    return evaluate_run(recipe, cfg)
