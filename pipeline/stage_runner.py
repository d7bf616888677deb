"""Runs a recipe's stage graph: each stage trains one role and leaves a Hugging Face export.

The run directory (`run.dir`) is laid out by core.run_dir.RunDir: per stage its checkpoints
(resume), CSV log, W&B run (offline unless the recipe or WANDB_MODE says otherwise), HF export and
the DONE marker written last (a finished stage is skipped on rerun).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

from lightning_modules.span_lm_module import SpanLMModule
from lightning_modules.throughput import build_throughput_callback
from core.batch_plan import BatchPlan
from core.build_sites import STRATEGY, TRAINER
from core.errors import DiskFull, ProjectError
from core.recipe import RecipeError, enabled_stages, redact, to_yaml
from core.run_dir import RunDir, StageDir, now
from core.secrets import redacted_argv
from core.stage_config import resolve_init, shared_settings, stage_settings
from core.strategy_rules import strategy_of
from pipeline.adapter_export import base_pointer, export_adapter_stage, merge_wanted
from pipeline.checkpoints import AppendingCSVLogger, AtomicCheckpointIO, ResumeCSV, pick_resume_checkpoint
from pipeline.preflight import preflight
from pipeline.serving import make_servable
from pipeline.sharded_export import export_dtype, export_stage, resumable_checkpoint
from pipeline.stage_setup import build_datamodule, launch_rank, load_tokenizer
from pipeline.strategy_checks import check_stage


class StageInterrupted(ProjectError):
    exit_code = 130


def is_done(recipe: dict, name: str) -> bool:
    return RunDir.of(recipe).stage(name).is_done()


def build_loggers(recipe: dict, settings: dict, sdir: StageDir):
    cfg = shared_settings(recipe, "logger")
    loggers = []
    if cfg["csv"]["enabled"]:
        loggers.append(AppendingCSVLogger(str(sdir.logs.parent), name=sdir.logs.name, version=""))
    wb = cfg["wandb"]
    if wb["enabled"]:
        mode = os.environ.get("WANDB_MODE", wb["mode"])
        sdir.wandb.mkdir(parents=True, exist_ok=True)
        names = redact({"name": f"{recipe['run']['name']}/{settings['name']}", "tags": wb["tags"],
                        "group": recipe["run"].get("group") or recipe["run"]["name"]})
        logger = WandbLogger(project=wb["project"], entity=wb["entity"],
                             name=names["name"], group=names["group"], job_type=settings["role"],
                             tags=names["tags"], save_dir=str(sdir.wandb.parent), mode=mode,
                             log_model=wb["log_model"], id=_wandb_run_id(sdir), resume="allow")
        loggers.append(logger)
    return loggers


def _wandb_run_id(sdir: StageDir) -> str | None:
    """The same W&B run id across resumes of a stage (rank 0 logs; other ranks need none)."""
    if launch_rank() != 0:
        return None
    path = sdir.wandb_run_id_file
    if not path.exists():
        import uuid
        path.write_text(uuid.uuid4().hex[:12])
    return path.read_text().strip()


# The module steps the optimizer itself; a checkpoint holding the state after the step is exactly
# what resuming needs, so Lightning's advice to save the pre-step state does not apply.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")


def build_trainer(recipe: dict, settings: dict, sdir: StageDir) -> L.Trainer:
    """The stage's Trainer; Lightning's own accumulation and clipping stay off: the module
    accumulates the BatchPlan's micro-batches (token-exact) and clips itself."""
    strategy = strategy_of(recipe)
    strategy = STRATEGY.build(strategy) if isinstance(strategy, dict) else strategy
    ckpt = settings["checkpoint"]
    callbacks = [ModelCheckpoint(dirpath=str(sdir.checkpoints), save_last=True, save_top_k=0,
                                 every_n_train_steps=ckpt["every_n_train_steps"],
                                 save_weights_only=ckpt["save_weights_only"]),
                 build_throughput_callback(recipe.get("telemetry")), ResumeCSV()]
    return TRAINER.build(settings["trainer"], strategy=strategy, logger=build_loggers(recipe, settings, sdir),
                         callbacks=callbacks, plugins=[AtomicCheckpointIO()], use_distributed_sampler=False,
                         accumulate_grad_batches=BatchPlan.FRAMEWORK_ACCUMULATION,
                         enable_progress_bar=shared_settings(recipe, "logger")["progress_bar"],
                         default_root_dir=str(sdir.path))


def run_stage(recipe: dict, name: str) -> dict:
    settings = stage_settings(recipe, name)
    check_stage(recipe, settings)  # world size vs num_nodes x devices, DeepSpeed config rules
    started = now()
    sdir = RunDir.of(recipe).stage(name)
    sdir.path.mkdir(parents=True, exist_ok=True)
    L.seed_everything(settings["seed"], workers=True)
    init_path = resolve_init(recipe, settings)
    if settings["init_from"] and settings["init_from"].startswith("stage:") and not Path(init_path).is_dir():
        raise FileNotFoundError(f"stage {name}: its init_from {settings['init_from']} has no export at {init_path}")
    tokenizer = load_tokenizer(recipe, settings, init_path)
    trainer = build_trainer(recipe, settings, sdir)
    dm = build_datamodule(recipe, settings, tokenizer, trainer.world_size)
    module = SpanLMModule(model={**settings["model"], "init_from": init_path}, optimizer=settings["optimizer"],
                          scheduler=settings["scheduler"], loss=settings["loss"], vocab_size=len(tokenizer),
                          special_token_ids={k: getattr(tokenizer, k)
                                             for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
                          gradient_clip_val=settings["trainer"]["gradient_clip_val"])
    if launch_rank() == 0:  # bad data stops here, before a W&B run exists
        dm.prepare_data()
    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            with redacted_argv():  # W&B records the command line when the run starts (here)
                lg.log_hyperparams({"recipe": redact(recipe), "stage": redact(settings)})
    last = sdir.last_checkpoint
    # a file (falling back to its previous copy if it is corrupt), or a directory (DeepSpeed / sharded FSDP)
    resume = pick_resume_checkpoint(last, resumable_checkpoint, repair=launch_rank() == 0)
    if resume:
        print(f"[{name}] resuming from {resume}")
    trainer.fit(module, datamodule=dm, ckpt_path=resume)
    if trainer.interrupted:  # never export or mark done a stage that did not finish
        raise StageInterrupted(f"stage {name} was interrupted; rerun the same command to resume from {last}")
    summary = {"stage": name, "role": settings["role"], "init_from": init_path,
               "global_step": trainer.global_step, "data": dm.stats,
               "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}}
    make_servable(module.model, tokenizer, max_length=settings["data"]["max_length"],
                  chat_template=(recipe.get("tokenizer") or {}).get("chat_template"))
    if settings["model"].get("adapter"):  # the adapter on its base (PEFT), and the merged model if asked
        export_adapter_stage(trainer, module, tokenizer, sdir, base_pointer(init_path), export_dtype(settings),
                             merge=merge_wanted(recipe, settings))
    else:
        export_stage(trainer, module, tokenizer, sdir.export, dtype=export_dtype(settings))
    if trainer.is_global_zero:
        sdir.write_done(redact(summary), started=started)
    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.finish()
    return summary


def run_recipe(recipe: dict, only: str | None = None) -> list[str]:
    """Run every enabled stage in dependency order, skipping finished ones; return those run."""
    names = enabled_stages(recipe)
    if only is not None and only not in names:
        raise RecipeError(f"--stage {only}: not an enabled stage of this recipe ({', '.join(names)})")
    if only is not None:
        refuse_unready_init(recipe, only)
    preflight(recipe, [n for n in ([only] if only else names) if not is_done(recipe, n)])
    run_dir = RunDir.of(recipe)
    refuse_drift(recipe, run_dir, names)
    fresh = not run_dir.path.exists()
    run_dir.path.mkdir(parents=True, exist_ok=True)
    # one process per run directory (the ranks of one launch share it: rank 0 holds the lock)
    with run_dir.lock() if launch_rank() == 0 else contextlib.nullcontext():
        return _run_locked(recipe, run_dir, names, only, fresh)


def _run_locked(recipe: dict, run_dir: RunDir, names: list[str], only: str | None, fresh: bool) -> list[str]:
    if launch_rank() == 0:  # what this run was trained with (evaluation reads it)
        run_dir.save_recipe(to_yaml(redact(recipe)))
    if only is not None:
        names = [only]
    ran = []
    try:
        for name in names:
            if is_done(recipe, name):
                print(f"[{name}] already finished ({run_dir.stage(name).done_file}); skipping")
                continue
            run_stage(recipe, name)
            ran.append(name)
    except ProjectError as exc:
        if fresh and not ran and launch_rank() == 0 and not isinstance(exc, (StageInterrupted, DiskFull)) \
                and not any(run_dir.path.rglob("*.ckpt*")):
            shutil.rmtree(run_dir.path, ignore_errors=True)  # bad input before any training: leave nothing
        raise
    if only is None:
        run_evaluation(recipe)
    return ran


def refuse_unready_init(recipe: dict, name: str) -> None:
    """`--stage NAME` needs the stage it starts from finished; say so before anything is written."""
    init = stage_settings(recipe, name)["init_from"]
    if init and init.startswith("stage:") and not is_done(recipe, init.split(":", 1)[1]):
        first = init.split(":", 1)[1]
        raise RecipeError(f"--stage {name} starts from stage {first}, which has not finished in "
                          f"{RunDir.of(recipe).path}; run `{first}` first (or the whole recipe, without --stage)")


def refuse_drift(recipe: dict, run_dir: RunDir, names: list[str]) -> None:
    """Finished stages are reused only with the recipe they were trained with: a changed recipe
    pointed at an old run directory would otherwise report the old models' numbers as its own.
    Changing the settings of a stage that has not finished is fine."""
    done = [n for n in names if is_done(recipe, n)]
    if not done:
        return
    pending = [n for n in names if n not in done]
    drift = [k for k in run_dir.recipe_drift(recipe)
             if not any(k.startswith(f"stages.{n}.") or k == f"stages.{n}" for n in pending)]
    if drift:
        more = f" (and {len(drift) - 5} more)" if len(drift) > 5 else ""
        raise RecipeError(
            f"{run_dir.path} holds stages trained with a different recipe ({', '.join(done)}); this "
            f"one differs at {', '.join(drift[:5])}{more}.\nGive this run its own directory "
            f"(run.name=... or run.dir=...), or remove {run_dir.path} to retrain.")


def run_evaluation(recipe: dict) -> dict | None:
    """The recipe's `evaluate:` stage after training: each test set not yet evaluated (static,
    teacher-forced), or GenTool's evaluation."""
    cfg = shared_settings(recipe, "evaluate")
    if not cfg["enabled"] or launch_rank() != 0:
        return None
    eval_dir = RunDir.of(recipe).eval(cfg["out_dir"])
    if cfg["task"] == "gentool":
        if eval_dir.gentool_metrics_file().is_file():
            print(f"[evaluate] already finished ({eval_dir.gentool_metrics_file()}); skipping")
            return None
        from evaluation.gentool.recipe import evaluate_gentool_recipe
        return evaluate_gentool_recipe(recipe, cfg)
    pending = [n for n, f in cfg["test_sets"].items() if f and not eval_dir.metrics_file(n).is_file()]
    if not pending:
        print(f"[evaluate] already finished ({eval_dir.path}); skipping")
        return None
    from evaluation.steps.teacher_forced import evaluate_run  # inference code only when evaluating
    return evaluate_run(recipe, only=pending)
