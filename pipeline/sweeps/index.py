"""The sweep's index, OUT/sweep.json: one entry per variant (run directory, overrides, stages,
status, timings, metrics), rewritten atomically after every step so an interrupted sweep resumes
where it stopped; and the selection of variants (--only)."""
from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import sys
from pathlib import Path
from typing import Sequence

from core.atomic_files import write_text_atomic
from core.recipe import enabled_stages
from core.run_dir import RunDir
from core.secrets import redact, redact_argv
from core.stage_config import resolve_init, stage_settings

from .spec import Sweep, SweepError, Variant

INDEX_NAME = "sweep.json"


def select(sweep: Sweep, only: Sequence[str] | None) -> list[Variant]:
    """Variants named by `only` (full names, spec variant names or glob patterns)."""
    if not only:
        return list(sweep.variants)
    chosen = []
    for pat in only:
        hits = [v for v in sweep.variants if v.name == pat or v.variant == pat or fnmatch.fnmatch(v.name, pat)]
        if not hits:
            raise SweepError(f"--only {pat}: no such variant in {sweep.spec_path} "
                             f"(variants: {', '.join(v.name for v in sweep.variants)})")
        chosen += [v for v in hits if v not in chosen]
    return [v for v in sweep.variants if v in chosen]


def stage_summary(recipe: dict) -> list[dict]:
    out = []
    for name in enabled_stages(recipe):
        s = stage_settings(recipe, name)
        out.append({"name": name, "role": s["role"], "init_from": s["init_from"],
                    "init_path": resolve_init(recipe, s),
                    "instruction_part": s["data"]["instruction_part"],
                    "data_fraction": s["data"]["data_fraction"]})
    return out


def now_local() -> str:
    """The index's timestamps: local time, seconds."""
    return _dt.datetime.now().isoformat(timespec="seconds")


def index_path(sweep: Sweep) -> Path:
    return sweep.out / INDEX_NAME


def load_index(sweep: Sweep) -> dict:
    path = index_path(sweep)
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and isinstance(data.get("variants"), dict):
                return data
        except ValueError:
            pass
        print(f"[sweep] warning: {path} is unreadable; starting a new index", file=sys.stderr)
    return {"variants": {}}


def refresh_index(sweep: Sweep, index: dict) -> dict:
    """Spec-level fields and one entry per variant of the spec (earlier statuses kept)."""
    index.update({"sweep": sweep.name, "spec": str(sweep.spec_path), "description": sweep.description,
                  "out": str(sweep.out), "runs_dir": str(sweep.runs_dir) if sweep.runs_dir else None,
                  "base": sweep.base, "overrides": sweep.overrides,
                  "command_line": sweep.extra_recipes + sweep.cli_overrides, "grid": sweep.grid,
                  "evaluate": sweep.evaluate, "order": [v.name for v in sweep.variants]})
    entries = index.setdefault("variants", {})
    for v in sweep.variants:
        e = entries.setdefault(v.name, {"status": "pending"})
        e.update({"name": v.name, "variant": v.variant, "description": v.description,
                  "run_name": v.recipe["run"]["name"], "run_dir": str(v.run_dir),
                  "recipes": v.recipes, "overrides": v.overrides,
                  "variant_overrides": v.own_overrides, "grid": v.grid,
                  "data_fraction": (v.recipe.get("data") or {}).get("data_fraction"),
                  "stages": stage_summary(v.recipe), "evaluate": v.evaluate})
        if not RunDir(v.run_dir).has_trace(enabled_stages(v.recipe)):
            # nothing of it on disk (new, or its run directory was removed): start afresh
            for key in ("train_seconds", "eval_seconds", "trained_stages", "metrics",
                        "mode", "warning"):
                e.pop(key, None)
            if e.get("status") != "failed":
                e["status"] = "pending"
    return index


def save_index(sweep: Sweep, index: dict) -> None:
    index["updated"] = now_local()
    write_text_atomic(index_path(sweep), json.dumps(safe_index(index), indent=1, default=str) + "\n")


OVERRIDE_LISTS = ("overrides", "variant_overrides", "command_line")


def safe_index(index: dict) -> dict:
    """The index as written: `a.api_key=VALUE` overrides masked, credentials masked anywhere."""
    safe = redact(index)
    for holder in (safe, *safe.get("variants", {}).values()):
        for key in OVERRIDE_LISTS:
            if holder.get(key):
                holder[key] = redact_argv([str(w) for w in holder[key]])
    return safe


def list_variants(sweep: Sweep) -> str:
    index = refresh_index(sweep, load_index(sweep))
    lines = []
    for v in sweep.variants:
        e = index["variants"][v.name]
        stages = ", ".join(f"{s['name']}<-{s['init_from'] or 'base'}" for s in e["stages"])
        lines.append(f"{v.name:<32} {e.get('status', 'pending'):<10} {v.run_dir}  [{stages}]")
    return "\n".join(lines)
