"""What a finished `train.py` run prints last: the stages run and skipped, each stage's loss first
-> last and supervised tokens, the exports, the evaluation table (the five metrics and the
per-plan counts of every test set evaluated, by name) and the W&B sync command. Everything is read back
from the run directory, so a rerun that skipped every stage prints the same numbers.

`quiet_third_party()` trims what dependencies print around it (Lightning's tips and device
banners, deprecation warnings, W&B's notices, Hugging Face's weight-loading bars); the training
progress bars stay."""
from __future__ import annotations

import csv
import logging
import os
import warnings
from pathlib import Path

from core.run_dir import RunDir
from core.stage_config import shared_settings
from evaluation.steps.metrics import STEP_METRICS as METRICS



def quiet_third_party() -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=r".*is deprecated.*")
    warnings.filterwarnings("ignore", message=r"Total length of .* across ranks is zero")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def stage_losses(path: Path) -> dict:
    """The mean train/loss of the first and of the last epoch (one step's loss is too noisy to
    compare at small batch sizes) and the supervised tokens summed over the steps of a CSV log."""
    by_epoch: dict[str, list[float]] = {}
    tokens = 0.0
    if path.is_file():
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("train/loss"):
                    by_epoch.setdefault(row.get("epoch") or "0", []).append(float(row["train/loss"]))
                if row.get("train/supervised_tokens"):
                    tokens += float(row["train/supervised_tokens"])
    means = [sum(v) / len(v) for v in by_epoch.values()]
    return {"first": means[0] if means else None, "last": means[-1] if means else None,
            "epochs": len(means), "supervised_tokens": int(tokens)}


def _read_json(path: Path) -> dict:
    import json
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _num(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def run_summary(recipe: dict, stages: list[str], ran: list[str]) -> str:
    run = RunDir.of(recipe)
    lines = [f"== run {recipe['run']['name']} ({run.path}) =="]
    skipped = [s for s in stages if s not in ran]
    lines.append(f"stages run: {', '.join(ran) or 'none'}"
                 + (f"; skipped (already finished): {', '.join(skipped)}" if skipped else ""))
    for name in stages:
        stage = run.stage(name)
        loss = stage_losses(stage.csv_log)
        lines.append(f"  {name:<11} loss {_num(loss['first'], '{:.3f}')} -> "
                     f"{_num(loss['last'], '{:.3f}')} (epoch 1 -> {loss['epochs']} mean)"
                     f"  supervised tokens {loss['supervised_tokens']:,}"
                     f"  export {stage.export if stage.has_export() else '(none)'}"
                     + (f"  adapter {stage.adapter}" if stage.has_adapter() else ""))
    eval_dir = run.eval((recipe.get("evaluate") or {}).get("out_dir"))
    names = [n for n, f in ((recipe.get("evaluate") or {}).get("test_sets") or {}).items() if f]  # the recipe's order
    names += [n for n in eval_dir.test_sets() if n not in names]
    rows = [(name, eval_dir.read_metrics(name)) for name in names if eval_dir.metrics_file(name).is_file()]
    if rows:
        lines.append(f"evaluation ({eval_dir.path}):")
        head = f"  {'set':<14}{'steps':>6}" + "".join(f"{label:>10}" for _, label in METRICS)
        lines += [head + "   plans: reference -> predicted (call/conclusion/give_up/none)"]
        for name, m in rows:
            ref, pred = m["counts"]["reference"], m["counts"]["predicted"]
            plans = (f"{ref['call']}/{ref['conclusion']}/{ref['give_up']} -> "
                     f"{pred.get('call', 0)}/{pred.get('conclusion', 0)}/{pred.get('give_up', 0)}"
                     f"/{pred.get('none', 0)}")
            hit = sum((m.get("generation_hit_limit") or {}).values())
            lines.append(f"  {name:<14}{m['n_steps']:>6}"
                         + "".join(f"{_num(m.get(k)):>10}" for k, _ in METRICS) + f"   {plans}"
                         + (f"  ({hit} generations hit the length limit)" if hit else ""))
        for name, m in rows:
            formed = m.get("well_formed") or {}
            lines.append(f"  well formed, {name}: " + ", ".join(
                f"{role} {_num(formed.get(role), '{:.0f}')}%" for role in ("planner", "caller", "summarizer"))
                + "  (decision / name + JSON arguments / non-empty answer)")
    for name in names:  # `evaluate.py episodes` pass rates (e.g. the tool world's exact verdicts)
        if eval_dir.episode_metrics_file(name).is_file():
            e = _read_json(eval_dir.episode_metrics_file(name))
            lines.append(f"  episodes, {name}: process {_num(e.get('proc'))}  answer {_num(e.get('ans'))}"
                         f"  both {_num(e.get('both'))}  ({e.get('episodes', 0)} episodes)")
    wandb = shared_settings(recipe, "logger")["wandb"]
    mode = os.environ.get("WANDB_MODE", wandb["mode"])
    if wandb["enabled"] and mode == "offline":
        lines.append(f"W&B (offline): wandb sync {run.path}/*/wandb/offline-run-*")
    return "\n".join(lines)
