"""One stage's settings, completed once: the recipe's shared sections with the stage's overrides,
then every key the recipe leaves out from its one home, the signature of what the key configures
(core/build_sites.py) or the recipe schema's `default` (core/schema.py). The code downstream reads
the completed settings and states no default of its own."""
from __future__ import annotations

import copy
from typing import Mapping

from .build_sites import SITES
from .run_dir import RunDir
from .schema import completed

SECTIONS = ("model", "data", "trainer", "optimizer", "scheduler", "loss", "checkpoint")
_SITE_OF = {site.section: site for site in SITES if site.per_stage and site.section in SECTIONS}


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def run_seed(recipe: Mapping) -> int:
    """`run.seed`: what the trainer seeds every process with, and `data.seed` when not set."""
    return completed("run", recipe.get("run") or {})["seed"]


def complete_section(recipe: Mapping, section: str, node: Mapping, signatures: bool = True) -> dict:
    """`node` (a section's merged settings) with the defaults of the keys it leaves out:
    `data.seed` is `run.seed`; the schema's defaults; then (`signatures`) those of the callable
    that builds the section."""
    out = dict(node)  # the recipe's keys first, then the ones filled in
    if section == "data":
        out.setdefault("seed", run_seed(recipe))
    out = completed(section, out)
    site = _SITE_OF.get(section)
    if signatures and site is not None:
        for key, value in site.defaults(out).items():
            out.setdefault(key, value)
    return out


def stage_settings(recipe: Mapping, name: str, signatures: bool = True) -> dict:
    """The completed settings of stage `name` ({name, role, init_from, seed, <section>: {...}});
    `signatures=False` leaves out the defaults read from signatures (what the recipe check sees)."""
    stage = recipe["stages"][name]
    out = {"name": name, "role": stage["role"], "init_from": stage.get("init_from"), "seed": run_seed(recipe)}
    for section in SECTIONS:
        merged = deep_merge(recipe.get(section) or {}, stage.get(section) or {})
        out[section] = complete_section(recipe, section, merged, signatures)
    return out


def shared_settings(recipe: Mapping, section: str) -> dict:
    """A section's completed settings without any stage's overrides (e.g. the data evaluation
    reads the held-in dialogs from, or `logger`, `run`, `tokenizer`)."""
    return complete_section(recipe, section, dict(recipe.get(section) or {}))


def resolve_init(recipe: dict, settings: dict) -> str | None:
    """The checkpoint a stage starts from: another stage's export, a path/hub id, or the base model."""
    src = settings["init_from"]
    if src is None:
        return settings["model"].get("init_from")
    if src.startswith("stage:"):
        return str(RunDir.of(recipe).stage(src.split(":", 1)[1]).export)
    return src
