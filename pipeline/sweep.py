"""Sweeps: train and evaluate a list of recipes (or a recipe x overrides grid), then report.

A sweep spec is YAML with one top-level key, `sweep`:

    sweep:
      name: quickstart-ablations            # required; also names the runs (run.name = NAME/VARIANT)
      description: ...                      # optional, shown in the report
      base: [recipes/quickstart.yaml]       # required: recipe file(s) every variant starts from
      overrides: [key=value, ...]           # applied to every variant (after its recipes)
      variants:                             # optional (default: one variant, "base")
        alpha_umi: {recipes: [recipes/ablations/alpha_umi.yaml], overrides: [], description: ...,
                    evaluate: {...}}        # all keys optional; evaluate merges onto the sweep's
        single_llm: {recipes: [recipes/ablations/single_llm.yaml]}
      grid: {data.data_fraction: [0.25, 0.5, 1.0]}   # optional: cross product with the variants
      evaluate: {references: data/toolbench/dev_conversations.json, ood_references: null,
                 limit: null, batch_size: 8, max_new_tokens: 96}   # evaluate_run's keys; enabled
                                            # (merged over each recipe's own `evaluate:` node)
      out: runs/sweeps/${sweep.name}        # sweep.json, report.md / report.html, plots/, wandb/
      runs_dir: ${sweep.out}/runs           # each variant's run.dir is RUNS_DIR/VARIANT; null: the
                                            # recipe's own run.dir (runs/${run.name})
      report: {enabled: true, title: null, wandb: {enabled: true, project: null, entity: null,
               mode: offline}}

Each variant (and grid point) is its own run directory and W&B group: its recipe is the base
files, the variant's recipes, extra files from the command line, then the sweep's overrides, the
variant's, the grid point's and the command line's, then `run.name` / `run.group` (NAME/VARIANT)
and `run.dir`. A grid point's name is VARIANT-KEY_VALUE (KEY: the last part of the dotted key).

Evaluation: the recipe's own `evaluate:` node, then the sweep's `evaluate:`, then the variant's
(a layer that is given turns evaluation on unless it says `enabled: false`) become the variant
recipe's `evaluate` node, which the stage runner runs after training (evaluate_run writes
RUN_DIR/eval/metrics.json, and metrics_ood.json for ood_references).

Every variant's recipe is composed and validated before anything trains. Variants run one after
the other; finished stages are skipped (DONE.json), and so is an evaluation whose metrics files
are newer than the stages' DONE.json and were made with the same references, limit, decoding
length and mode (otherwise the sweep evaluates again, without retraining). `OUT/sweep.json` (variant -> run dir, overrides, status, timings, metrics) is
rewritten atomically after each step, so an interrupted sweep resumes where it stopped. A variant
that fails is recorded as failed and the sweep goes on (unless fail_fast).
"""
from __future__ import annotations

import copy
import datetime as _dt
import fnmatch
import json
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from core.atomic_files import write_text_atomic
from core.errors import ProjectError
from core.recipe import RecipeError, load_recipe, redact, stage_order
from core.repo_paths import REPO_ROOT
from core.stage_config import resolve_init, stage_dir, stage_settings

SPEC_KEYS = ("name", "description", "base", "overrides", "variants", "grid", "evaluate", "out",
             "runs_dir", "report")
VARIANT_KEYS = ("recipes", "overrides", "evaluate", "description")
REPORT_KEYS = ("enabled", "title", "wandb")
WANDB_KEYS = ("enabled", "project", "entity", "mode")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
INDEX_NAME = "sweep.json"
# parts of a recipe that do not change what a run trains (no warning when only they differ)
NOT_TRAINING_KEYS = ("logger", "telemetry", "evaluate", "run.group", "run.name", "data.num_workers")


class SweepError(ProjectError, ValueError):
    """A bad sweep spec or command line; the message names the key and the file."""


@dataclass
class Variant:
    name: str                      # unique: VARIANT or VARIANT-KEY_VALUE...
    variant: str                   # the spec's variant name
    description: str | None
    recipes: list[str]             # recipe files, merged left to right
    overrides: list[str]           # key=value, in order (without the run naming ones)
    own_overrides: list[str]       # the variant's and its grid point's (not the sweep-wide ones)
    grid: dict                     # this grid point {dotted key: value}
    evaluate: dict | None          # evaluate_run settings; None: no evaluation
    eval_layer: dict | None = None  # the variant's own `evaluate:` (over the sweep's)
    recipe: dict = field(repr=False, default_factory=dict)  # composed and validated

    @property
    def run_dir(self) -> Path:
        return Path(self.recipe["run"]["dir"])


@dataclass
class Sweep:
    name: str
    spec_path: Path
    description: str | None
    base: list[str]
    overrides: list[str]
    grid: dict
    evaluate: dict | None
    out: Path
    runs_dir: Path | None
    report: dict
    variants: list[Variant]
    cli_overrides: list[str] = field(default_factory=list)   # recipe overrides from the command line
    extra_recipes: list[str] = field(default_factory=list)   # overlays from the command line


# ----- loading and validating the spec ----------------------------------------------------
def split_args(args: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Command-line words after the spec: (sweep.* overrides, recipe overrides, recipe files)."""
    spec_ov, recipe_ov, files = [], [], []
    for a in args:
        if "=" in a:
            (spec_ov if a.split("=", 1)[0].strip().startswith("sweep.") else recipe_ov).append(a)
        else:
            files.append(a)
    return spec_ov, recipe_ov, files


def resolve_file(name: str, spec_path: Path, where: str) -> str:
    """A recipe or data file: absolute, else relative to the working directory, the spec's folder
    or the repository root (in that order)."""
    p = Path(name)
    cands = [p] if p.is_absolute() else [p, spec_path.parent / p, REPO_ROOT / p]
    for c in cands:
        if c.is_file():
            return str(c)
    raise SweepError(f"{where}: file not found: {name}")


def load_sweep(spec_path, overrides: Sequence[str] = (), recipe_files: Sequence[str] = ()) -> Sweep:
    """Parse, validate and expand a sweep spec; compose and validate every variant's recipe.
    `overrides`: `sweep.KEY=VALUE` change the spec, any other `KEY=VALUE` applies to every
    variant's recipe (last); `recipe_files` are overlays merged into every variant."""
    spec_path = Path(spec_path)
    if not spec_path.is_file():
        raise SweepError(f"sweep spec not found: {spec_path}")
    spec_ov, recipe_ov, stray = split_args(overrides)
    if stray:
        raise SweepError(f"command line: {stray[0]!r} is not of the form key=value")
    try:
        node = OmegaConf.load(spec_path)
    except Exception as exc:  # noqa: BLE001 - yaml errors carry line and column
        raise SweepError(f"{spec_path}: cannot parse YAML: {exc}") from None
    if not isinstance(node, DictConfig) or "sweep" not in node:
        raise SweepError(f"{spec_path}: a sweep spec is a mapping with the top-level key 'sweep'")
    extra = [k for k in node.keys() if k != "sweep"]
    if extra:
        raise SweepError(f"{spec_path}: unknown top-level key '{extra[0]}' (only 'sweep')")
    from_cli: set[str] = set()
    for item in spec_ov:
        key = item.split("=", 1)[0].strip()
        try:
            node = OmegaConf.merge(node, OmegaConf.from_dotlist([item]))
        except Exception as exc:  # noqa: BLE001
            raise SweepError(f"command line: cannot apply {item!r}: {exc}") from None
        from_cli.add(key)
    if not isinstance(node.sweep, DictConfig):
        raise SweepError(f"{spec_path}: key 'sweep' must be a mapping")
    if node.sweep.get("name") is None:
        origin = "the command line" if "sweep.name" in from_cli else spec_path
        raise SweepError(f"key 'sweep.name' (in {origin}): required, a name of letters, digits and _ . + -")
    for key, default in (("out", "runs/sweeps/${sweep.name}"), ("runs_dir", "${sweep.out}/runs")):
        if key not in node.sweep:
            node.sweep[key] = default
    try:
        data = OmegaConf.to_container(node, resolve=True)["sweep"]
    except Exception as exc:  # noqa: BLE001
        raise SweepError(f"{spec_path}: cannot resolve an interpolation: {exc}") from None

    def where(key: str) -> str:
        hit = any(k == f"sweep.{key}" or k.startswith(f"sweep.{key}.") or key.startswith(k[6:] + ".")
                  for k in from_cli)
        return f"key 'sweep.{key}' (in {'the command line' if hit else spec_path})"

    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        raise SweepError(f"{where(unknown[0])}: unknown key (known: {', '.join(SPEC_KEYS)})")
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SweepError(f"{where('name')}: required, a name of letters, digits and _ . + - "
                         f"(got {name!r})")
    description = _opt_str(data.get("description"), where("description"))
    base = _str_list(data.get("base"), where("base"), required=True)
    base = [resolve_file(f, spec_path, _at(where('base'), i)) for i, f in enumerate(base)]
    extra_files = [resolve_file(f, spec_path, f"command line: recipe {f!r}") for f in recipe_files]
    sweep_ov = _overrides(data.get("overrides"), where("overrides"))
    evaluate = _evaluate(data.get("evaluate"), where("evaluate"), spec_path)
    grid = _grid(data.get("grid"), where("grid"))
    report = _report(data.get("report"), where)
    out = Path(_req_str(data.get("out"), where("out")))
    runs_dir = data.get("runs_dir")
    if runs_dir is not None:
        runs_dir = Path(_req_str(runs_dir, where("runs_dir")))

    raw_variants = data.get("variants")
    if raw_variants is None:
        raw_variants = {"base": {}}
    if not isinstance(raw_variants, dict) or not raw_variants:
        raise SweepError(f"{where('variants')}: a non-empty mapping of variant name -> "
                         f"{{recipes, overrides, evaluate, description}}")
    variants: list[Variant] = []
    for vname, vspec in raw_variants.items():
        vkey = f"variants.{vname}"
        if not NAME_RE.match(str(vname)):
            raise SweepError(f"{where(vkey)}: a variant name is letters, digits and _ . + -")
        vspec = {} if vspec is None else vspec
        if not isinstance(vspec, dict):
            raise SweepError(f"{where(vkey)}: a mapping with keys {', '.join(VARIANT_KEYS)}")
        bad = [k for k in vspec if k not in VARIANT_KEYS]
        if bad:
            raise SweepError(f"{where(f'{vkey}.{bad[0]}')}: unknown key (known: {', '.join(VARIANT_KEYS)})")
        vfiles = _str_list(vspec.get("recipes"), where(f"{vkey}.recipes"))
        vfiles = [resolve_file(f, spec_path, _at(where(f'{vkey}.recipes'), i)) for i, f in enumerate(vfiles)]
        v_ov = _overrides(vspec.get("overrides"), where(f"{vkey}.overrides"))
        v_eval = _evaluate(vspec.get("evaluate"), where(f"{vkey}.evaluate"), spec_path)
        for point in _grid_points(grid):
            suffix = "".join(f"-{_short(k)}_{_fmt_value(v)}" for k, v in point.items())
            variants.append(Variant(
                name=f"{vname}{suffix}", variant=str(vname),
                description=_opt_str(vspec.get("description"), where(f"{vkey}.description")),
                recipes=base + vfiles + extra_files,
                overrides=sweep_ov + v_ov + [f"{k}={_yaml_value(v)}" for k, v in point.items()] + list(recipe_ov),
                own_overrides=v_ov + [f"{k}={_yaml_value(v)}" for k, v in point.items()],
                grid=point, evaluate=None, eval_layer=v_eval))

    sweep = Sweep(name=name, spec_path=spec_path, description=description, base=base,
                  overrides=sweep_ov, grid=grid, evaluate=evaluate, out=out, runs_dir=runs_dir,
                  report=report, variants=variants, cli_overrides=list(recipe_ov),
                  extra_recipes=extra_files)
    _compose_variants(sweep, raw_variants, where)
    return sweep


def _compose_variants(sweep: Sweep, raw_variants: dict, where: Callable[[str], str]) -> None:
    origins: dict[str, str] = {}
    for i, ov in enumerate(sweep.overrides):
        origins[ov.split("=", 1)[0]] = _at(where('overrides'), i)
    seen_dirs: dict[str, str] = {}
    for v in sweep.variants:
        vo = dict(origins)
        for i, ov in enumerate(raw_variants[v.variant] and raw_variants[v.variant].get("overrides") or []):
            vo[ov.split("=", 1)[0]] = _at(where(f'variants.{v.variant}.overrides'), i)
        for k in v.grid:
            vo[k] = where(f"grid.{k}")
        for ov in sweep.cli_overrides:
            vo.pop(ov.split("=", 1)[0], None)  # a key the command line set last stays "command line"
        naming = [f"run.name={sweep.name}/{v.name}", f"run.group={sweep.name}/{v.name}"]
        if sweep.runs_dir is not None:
            naming.append(f"run.dir={(sweep.runs_dir / v.name).as_posix()}")
        try:
            recipe = load_recipe(v.recipes, v.overrides + naming)
        except RecipeError as exc:
            msg = str(exc)
            for key, origin in vo.items():
                origin = origin.replace("key ", "", 1).replace(" (in ", " in ", 1)[:-1]
                msg = re.sub(rf"('{re.escape(key)}(\.[^']*)?'[^\n]*?)\(from command line\)",
                             lambda m: f"{m.group(1)}(from {origin})", msg)
            raise SweepError(f"{sweep.spec_path}: variant '{v.name}': {msg}") from None
        wandb_cfg = (recipe.get("logger") or {}).get("wandb")
        if isinstance(wandb_cfg, dict):  # W&B tags to filter the stage runs by sweep and variant
            tags = list(wandb_cfg.get("tags") or [])
            wandb_cfg["tags"] = tags + [t for t in (f"sweep:{sweep.name}", f"variant:{v.variant}")
                                        if t not in tags]
        _merge_evaluate(sweep, v, recipe, where)
        v.recipe = recipe
        rd = str(Path(recipe["run"]["dir"]).resolve())
        if rd in seen_dirs:
            raise SweepError(f"{sweep.spec_path}: variants '{seen_dirs[rd]}' and '{v.name}' would share "
                             f"the run directory {recipe['run']['dir']} (set sweep.runs_dir, or give "
                             "each a different run.name)")
        seen_dirs[rd] = v.name


def _merge_evaluate(sweep: Sweep, v: Variant, recipe: dict, where: Callable[[str], str]) -> None:
    """The variant's evaluation: the recipe's `evaluate:` node, then the sweep's, then the
    variant's (a layer that is given switches it on unless it says `enabled: false`). The result
    is the recipe's `evaluate` node (what the stage runner evaluates after training, and what
    recipe.yaml records) and `v.evaluate` (None: no evaluation)."""
    node = dict(recipe.get("evaluate") or {})
    origin = f"the recipe's evaluate node ({', '.join(map(str, v.recipes))})"
    for layer, key in ((sweep.evaluate, "evaluate"), (v.eval_layer, f"variants.{v.variant}.evaluate")):
        if layer is not None:
            node.update({"enabled": True, **layer})
            origin = where(key)
    if not node.get("enabled", False):
        if "evaluate" in recipe:
            recipe["evaluate"] = {**node, "enabled": False}
        v.evaluate = None
        return
    if not node.get("references"):
        raise SweepError(f"{sweep.spec_path}: variant '{v.name}': evaluation is enabled but no test "
                         f"set is given: set 'references' ({origin})")
    for key in ("references", "ood_references"):
        if node.get(key):
            node[key] = str(Path(resolve_file(str(node[key]), sweep.spec_path, f"{origin}: {key}")).resolve())
    recipe["evaluate"] = node
    v.evaluate = {k: val for k, val in node.items() if k != "enabled"}


def _at(where: str, index: int) -> str:
    """"key 'sweep.X' (in F)" -> "key 'sweep.X[i]' (in F)"."""
    return where.replace("' (", f"[{index}]' (", 1)


def _sub(where: str, key: str) -> str:
    return where.replace("' (", f".{key}' (", 1)


def _opt_str(value, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise SweepError(f"{where}: must be a string")
    return value


def _req_str(value, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SweepError(f"{where}: required, a non-empty string")
    return value


def _str_list(value, where: str, required: bool = False) -> list[str]:
    if value is None:
        if required:
            raise SweepError(f"{where}: required (a recipe file or a list of them)")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value) \
            or (required and not value):
        raise SweepError(f"{where}: must be a file name or a list of file names")
    return list(value)


def _overrides(value, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SweepError(f"{where}: must be a list of key=value strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or "=" not in item or not item.split("=", 1)[0].strip():
            raise SweepError(f"{_at(where, i)}: {item!r} is not of the form key=value")
    return list(value)


def _grid(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{where}: a mapping of dotted recipe key -> list of values")
    out = {}
    for key, values in _flatten_grid(value).items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{where}: '{key}' must be a non-empty list of values (got {values!r})")
        if len({_yaml_value(v) for v in values}) != len(values):
            raise SweepError(f"{where}: '{key}' lists a value twice")
        out[key] = values
    return out


def _flatten_grid(value: dict, prefix: str = "") -> dict:
    """`{data.data_fraction: [...]}` or nested `{data: {data_fraction: [...]}}`."""
    out = {}
    for k, v in value.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten_grid(v, key + "."))
        else:
            out[key] = v
    return out


def _grid_points(grid: dict) -> list[dict]:
    points = [{}]
    for key, values in grid.items():
        points = [{**p, key: v} for p in points for v in values]
    return points


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _fmt_value(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "x"


def _yaml_value(value) -> str:
    """A grid value as the right-hand side of a dot-list override (JSON is YAML)."""
    return json.dumps(value)


def _evaluate(value, where: str, spec_path: Path) -> dict | None:
    """A validated `evaluate:` layer (None: not given); test-set paths made absolute."""
    from evaluation.static_inference import EVAL_DEFAULTS
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SweepError(f"{where}: a mapping of evaluate_run settings "
                         f"({', '.join(EVAL_DEFAULTS)}, enabled)")
    bad = [k for k in value if k not in EVAL_DEFAULTS and k != "enabled"]
    if bad:
        raise SweepError(f"{where}: unknown key '{bad[0]}' (known: enabled, {', '.join(EVAL_DEFAULTS)})")
    cfg = dict(value)
    if not isinstance(cfg.get("enabled", True), bool):
        raise SweepError(f"{_sub(where, 'enabled')}: true or false")
    for key in ("references", "ood_references"):
        if cfg.get(key):
            cfg[key] = str(Path(resolve_file(str(cfg[key]), spec_path, _sub(where, key))).resolve())
    if cfg.get("mode") not in (None, "auto", "alpha_umi", "single"):
        raise SweepError(f"{_sub(where, 'mode')}: one of auto, alpha_umi, single (got {cfg['mode']!r})")
    for key in ("limit", "batch_size", "max_new_tokens"):
        v = cfg.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise SweepError(f"{_sub(where, key)}: must be a positive integer{' or null' if key == 'limit' else ''}")
    return cfg


def _report(value, where: Callable[[str], str]) -> dict:
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise SweepError(f"{where('report')}: a mapping ({', '.join(REPORT_KEYS)})")
    bad = [k for k in value if k not in REPORT_KEYS]
    if bad:
        raise SweepError(f"{where('report.' + bad[0])}: unknown key (known: {', '.join(REPORT_KEYS)})")
    wb = value.get("wandb") or {}
    if not isinstance(wb, dict):
        raise SweepError(f"{where('report.wandb')}: a mapping ({', '.join(WANDB_KEYS)})")
    bad = [k for k in wb if k not in WANDB_KEYS]
    if bad:
        raise SweepError(f"{where('report.wandb.' + bad[0])}: unknown key (known: {', '.join(WANDB_KEYS)})")
    if wb.get("mode") not in (None, "offline", "online", "disabled"):
        raise SweepError(f"{where('report.wandb.mode')}: one of offline, online, disabled")
    return {"enabled": value.get("enabled", True), "title": value.get("title"),
            "wandb": {"enabled": wb.get("enabled", True), "project": wb.get("project"),
                      "entity": wb.get("entity"), "mode": wb.get("mode")}}


# ----- selection, index --------------------------------------------------------------------
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


def enabled_stages(recipe: dict) -> list[str]:
    return stage_order({n: s for n, s in recipe["stages"].items() if s.get("enabled", True)})


def stage_summary(recipe: dict) -> list[dict]:
    out = []
    for name in enabled_stages(recipe):
        s = stage_settings(recipe, name)
        out.append({"name": name, "role": s["role"], "init_from": s["init_from"],
                    "init_path": resolve_init(recipe, s),
                    "instruction_part": s["data"].get("instruction_part"),
                    "data_fraction": s["data"].get("data_fraction")})
    return out


def _now() -> str:
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
        if not any((stage_dir(v.recipe, n) / "DONE.json").is_file() for n in enabled_stages(v.recipe)) \
                and not (v.run_dir / "recipe.yaml").is_file():
            # nothing of it on disk (new, or its run directory was removed): start afresh
            for key in ("train_seconds", "eval_seconds", "trained_stages", "metrics", "metrics_ood",
                        "mode", "warning"):
                e.pop(key, None)
            if e.get("status") != "failed":
                e["status"] = "pending"
    return index


def save_index(sweep: Sweep, index: dict) -> None:
    index["updated"] = _now()
    write_text_atomic(index_path(sweep), json.dumps(index, indent=1, default=str) + "\n")


# ----- running -------------------------------------------------------------------------------
def _all_done(recipe: dict) -> bool:
    return all((stage_dir(recipe, n) / "DONE.json").is_file() for n in enabled_stages(recipe))


def eval_is_current(recipe: dict, cfg: dict) -> bool:
    """Metrics files exist, are newer than every stage's DONE.json, and were made with these
    references, limit, decoding length and mode."""
    out = _eval_dir(recipe, cfg)
    done_times = [(stage_dir(recipe, n) / "DONE.json").stat().st_mtime for n in enabled_stages(recipe)
                  if (stage_dir(recipe, n) / "DONE.json").is_file()]
    for refs, suffix in ((cfg.get("references"), ""), (cfg.get("ood_references"), "_ood")):
        if not refs:
            continue
        path = out / f"metrics{suffix}.json"
        if not path.is_file() or any(t > path.stat().st_mtime for t in done_times):
            return False
        try:
            inf = json.loads(path.read_text()).get("inference") or {}
        except ValueError:
            return False
        decoding = inf.get("decoding") or {}
        from evaluation.static_inference import EVAL_DEFAULTS
        want_tokens = cfg.get("max_new_tokens", EVAL_DEFAULTS["max_new_tokens"])
        if (inf.get("references") != str(refs) or inf.get("limit") != cfg.get("limit")
                or decoding.get("max_new_tokens") != want_tokens
                or bool(decoding.get("do_sample")) != bool(cfg.get("do_sample"))):
            return False
        mode = cfg.get("mode") or "auto"
        if mode != "auto" and inf.get("mode") != mode:
            return False
    return True


def recipe_drift(recipe: dict) -> list[str]:
    """Keys where the run directory's saved recipe.yaml differs from `recipe` (training keys)."""
    saved = Path(recipe["run"]["dir"]) / "recipe.yaml"
    if not saved.is_file():
        return []
    try:
        old = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
    except Exception:  # noqa: BLE001
        return ["recipe.yaml (unreadable)"]
    diffs: list[str] = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        elif a != b and not any(path == p or path.startswith(p + ".") for p in NOT_TRAINING_KEYS):
            diffs.append(path)

    walk(old, redact(recipe), "")
    return diffs


def run_variant(v: Variant, entry: dict, save: Callable[[], None], log=print) -> None:
    """Train (unfinished stages) and evaluate (unless current) one variant, updating `entry`."""
    recipe = v.recipe
    stages = enabled_stages(recipe)
    entry.update(error=None, started=_now())
    if _all_done(recipe):
        drift = recipe_drift(recipe)
        if drift:
            msg = (f"the recipe differs from the one {v.run_dir} was trained with at "
                   f"{', '.join(drift[:5])}{' ...' if len(drift) > 5 else ''}; the finished stages "
                   "are kept (remove the run directory to retrain)")
            log(f"[sweep] {v.name}: warning: {msg}")
            entry["warning"] = msg
        else:
            entry.pop("warning", None)
        log(f"[sweep] {v.name}: all {len(stages)} stage(s) finished; not training")
    else:
        entry["status"] = "training"
        save()
        from pipeline.stage_runner import run_recipe  # heavy imports only when training
        log(f"[sweep] {v.name}: training {', '.join(stages)} in {v.run_dir}")
        before = _eval_stamps(recipe, v.evaluate)
        t0 = time.perf_counter()
        eval_s = 0.0
        try:
            # the stage runner trains, then runs the recipe's `evaluate` node (the sweep's settings)
            ran = run_recipe(recipe)
        finally:  # summed over invocations: an interrupted variant resumes its stages
            eval_s = _eval_seconds_since(recipe, v.evaluate, before)
            entry["train_seconds"] = round((entry.get("train_seconds") or 0)
                                           + time.perf_counter() - t0 - eval_s, 1)
        if eval_s:
            entry["eval_seconds"] = round(eval_s, 1)
        entry["trained_stages"] = ran
    entry["status"] = "trained"
    save()
    cfg = v.evaluate
    if cfg is None:
        entry["status"] = "done"
        entry["finished"] = _now()
        return
    if eval_is_current(recipe, cfg):
        log(f"[sweep] {v.name}: evaluation is up to date ({_eval_dir(recipe, cfg)}); skipping")
    else:
        from evaluation.static_inference import evaluate_run
        entry["status"] = "evaluating"
        save()
        limit = "" if cfg.get("limit") is None else f" (first {cfg['limit']} steps)"
        log(f"[sweep] {v.name}: evaluating on {cfg['references']}{limit}")
        t0 = time.perf_counter()
        res = evaluate_run(recipe, cfg)
        entry["eval_seconds"] = round(time.perf_counter() - t0, 1)
        entry["mode"] = res["mode"]
    _record_metrics(recipe, cfg, entry)
    entry["status"] = "done"
    entry["finished"] = _now()


def _eval_dir(recipe: dict, cfg: dict) -> Path:
    return Path(cfg.get("out_dir") or Path(recipe["run"]["dir"]) / "eval")


def _eval_stamps(recipe: dict, cfg: dict | None) -> dict:
    if cfg is None:
        return {}
    out = _eval_dir(recipe, cfg)
    return {p: p.stat().st_mtime_ns for p in (out / "metrics.json", out / "metrics_ood.json") if p.is_file()}


def _eval_seconds_since(recipe: dict, cfg: dict | None, before: dict) -> float:
    """Inference seconds of the metrics files (re)written since `before` (by the stage runner)."""
    total = 0.0
    for path, stamp in _eval_stamps(recipe, cfg).items():
        if before.get(path) != stamp:
            try:
                total += float((json.loads(path.read_text()).get("inference") or {}).get("seconds") or 0)
            except ValueError:
                pass
    return total


def _record_metrics(recipe: dict, cfg: dict, entry: dict) -> None:
    from evaluation.results_table import METRICS
    out = _eval_dir(recipe, cfg)
    for suffix, key in (("", "metrics"), ("_ood", "metrics_ood")):
        path = out / f"metrics{suffix}.json"
        if path.is_file():
            data = json.loads(path.read_text())
            entry[key] = {m: data.get(m) for m, _ in METRICS} | {"n_steps": data.get("n_steps")}
            entry.setdefault("mode", (data.get("inference") or {}).get("mode"))


def run_sweep(sweep: Sweep, only: Sequence[str] | None = None, report_only: bool = False,
              fail_fast: bool = False, log=print) -> int:
    """Run the (selected) variants one after the other, then write the report. Returns 0 when
    every selected variant finished, 1 when some failed."""
    chosen = select(sweep, only)
    sweep.out.mkdir(parents=True, exist_ok=True)
    index = refresh_index(sweep, load_index(sweep))
    save = lambda: save_index(sweep, index)  # noqa: E731
    save()
    failed = []
    t_all = time.perf_counter()
    if not report_only:
        for i, v in enumerate(chosen, 1):
            entry = index["variants"][v.name]
            log(f"[sweep] ({i}/{len(chosen)}) {v.name}")
            try:
                run_variant(v, entry, save, log)
            except KeyboardInterrupt:
                entry["status"] = "interrupted"
                save()
                raise
            except Exception as exc:  # noqa: BLE001 - recorded; the sweep goes on
                entry.update(status="failed", error=f"{type(exc).__name__}: {exc}", finished=_now())
                tb = sweep.out / "logs" / f"{v.name}.traceback.txt"
                write_text_atomic(tb, traceback.format_exc())
                entry["traceback"] = str(tb)
                log(f"[sweep] {v.name}: FAILED: {type(exc).__name__}: {exc} (traceback: {tb})")
                failed.append(v.name)
                if fail_fast:
                    save()
                    break
            save()
        index["last_run"] = {"finished": _now(), "seconds": round(time.perf_counter() - t_all, 1),
                             "variants": [v.name for v in chosen], "failed": failed}
        save()
    if sweep.report.get("enabled", True):
        write_sweep_report(sweep, index, log=log)
    return 1 if failed else 0


def write_sweep_report(sweep: Sweep, index: dict, log=print) -> dict:
    from evaluation.report import write_report
    runs = [copy.deepcopy(index["variants"][v.name]) for v in sweep.variants]
    title = sweep.report.get("title") or f"Sweep {sweep.name}"
    wb = dict(sweep.report.get("wandb") or {})
    if wb.get("enabled", True) and not wb.get("project"):
        wb["project"] = ((sweep.variants[0].recipe.get("logger") or {}).get("wandb") or {}).get("project")
    meta = {"sweep": sweep.name, "spec": str(sweep.spec_path), "description": sweep.description,
            "base": sweep.base, "overrides": sweep.overrides,
            "command_line": sweep.extra_recipes + sweep.cli_overrides, "grid": sweep.grid,
            "evaluate": sweep.evaluate, "last_run": index.get("last_run")}
    paths = write_report(runs, sweep.out, title=title, meta=meta, wandb=wb, group=sweep.name, log=log)
    log(f"[sweep] report: {paths['markdown']} and {paths['html']}")
    return paths


def list_variants(sweep: Sweep) -> str:
    index = refresh_index(sweep, load_index(sweep))
    lines = []
    for v in sweep.variants:
        e = index["variants"][v.name]
        stages = ", ".join(f"{s['name']}<-{s['init_from'] or 'base'}" for s in e["stages"])
        lines.append(f"{v.name:<32} {e.get('status', 'pending'):<10} {v.run_dir}  [{stages}]")
    return "\n".join(lines)
