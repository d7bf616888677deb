"""A sweep spec: parsed, validated against sweep_schema.json (through core.recipe's validator, so
errors read like a recipe's: key path and file), expanded into variants, each variant's recipe
composed and validated before anything trains."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from core.errors import ProjectError
from core.schema import SCHEMA_PATH as RECIPE_SCHEMA_PATH
from core.recipe import RecipeError, key_error, load_recipe, origin_of, record_origins, schema_errors
from core.repo_paths import REPO_ROOT
from core.vocabulary import VAL_SPLIT

SCHEMA_PATH = Path(__file__).with_name("sweep_schema.json")
SPEC_DEFAULTS = {"out": "runs/sweeps/${sweep.name}", "runs_dir": "${sweep.out}/runs"}


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
    provenance: dict = field(repr=False, default_factory=dict)  # spec key -> file / command line


def spec_schema() -> dict:
    """sweep_schema.json with the recipe schema's `evaluate` node (or null) as $defs.evaluate."""
    schema = json.loads(SCHEMA_PATH.read_text())
    evaluate = json.loads(RECIPE_SCHEMA_PATH.read_text())["properties"]["evaluate"]
    schema["$defs"]["evaluate"] = {**evaluate, "type": ["object", "null"]}
    return schema


def split_args(args: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Command-line words after the spec: (sweep.* overrides, recipe overrides, recipe files)."""
    spec_ov, recipe_ov, files = [], [], []
    for a in args:
        if "=" in a:
            (spec_ov if a.split("=", 1)[0].strip().startswith("sweep.") else recipe_ov).append(a)
        else:
            files.append(a)
    return spec_ov, recipe_ov, files


def find_file(name: str, spec_path: Path) -> str | None:
    """A recipe or data file: absolute, else relative to the working directory, the spec's folder
    or the repository root (in that order)."""
    p = Path(name)
    cands = [p] if p.is_absolute() else [p, spec_path.parent / p, REPO_ROOT / p]
    return next((str(c) for c in cands if c.is_file()), None)


def spec_file(name: str, spec_path: Path, key: str, prov: dict) -> str:
    """find_file, or an error naming the spec key (and the file or command line that set it)."""
    found = find_file(name, spec_path)
    if found is None:
        raise SweepError(f"{spec_path}: " + key_error(key, f"file not found: {name}", prov))
    return found


def _files(value) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _read_spec(spec_path: Path, spec_ov: Sequence[str]) -> tuple[dict, dict]:
    """The spec with `sweep.*` overrides applied, interpolations resolved, validated against the
    schema; and its provenance (key -> the spec file or "command line")."""
    try:
        node = OmegaConf.load(spec_path)
    except Exception as exc:  # noqa: BLE001 - yaml errors carry line and column
        raise SweepError(f"{spec_path}: cannot parse YAML: {exc}") from None
    if not isinstance(node, DictConfig) or "sweep" not in node:
        raise SweepError(f"{spec_path}: a sweep spec is a mapping with the top-level key 'sweep'")
    provenance: dict[str, str] = {}
    record_origins(node, str(spec_path), provenance)
    for item in spec_ov:
        try:
            dot = OmegaConf.from_dotlist([item])
            node = OmegaConf.merge(node, dot)
        except Exception as exc:  # noqa: BLE001
            raise SweepError(f"command line: cannot apply {item!r}: {exc}") from None
        record_origins(dot, "command line", provenance)
    if isinstance(node.sweep, DictConfig):
        if node.sweep.get("name") is None:  # the defaults below interpolate it
            raise SweepError(f"{spec_path}: invalid sweep spec:\n  missing required key 'sweep.name' "
                             f"(in {provenance.get('sweep.name', spec_path)})")
        for key, default in SPEC_DEFAULTS.items():
            node.sweep.setdefault(key, default)
    try:
        data = OmegaConf.to_container(node, resolve=True)
    except Exception as exc:  # noqa: BLE001
        raise SweepError(f"{spec_path}: cannot resolve an interpolation: {exc}") from None
    lines = schema_errors(data, spec_schema(), provenance)
    if lines:
        raise SweepError(f"{spec_path}: invalid sweep spec:\n  " + "\n  ".join(lines))
    return data["sweep"], provenance


def _report(value: dict | None) -> dict:
    """The `report:` node with the schema's defaults filled in."""
    props = spec_schema()["properties"]["sweep"]["properties"]["report"]["properties"]
    value, wb = value or {}, (value or {}).get("wandb") or {}
    out = {k: value.get(k, p.get("default")) for k, p in props.items() if k != "wandb"}
    out["wandb"] = {k: wb.get(k, p.get("default")) for k, p in props["wandb"]["properties"].items()}
    return out


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
    data, prov = _read_spec(spec_path, spec_ov)
    base = [spec_file(f, spec_path, f"sweep.base[{i}]", prov) for i, f in enumerate(_files(data["base"]))]
    extra_files = []
    for f in recipe_files:
        extra_files.append(find_file(f, spec_path))
        if extra_files[-1] is None:
            raise SweepError(f"command line: recipe {f!r}: file not found")
    grid = _flatten_grid(data.get("grid") or {})
    sweep_eval = _evaluate_layer(data.get("evaluate"), "sweep.evaluate", spec_path, prov)
    raw_variants = data.get("variants") or {"base": {}}
    variants: list[Variant] = []
    for vname, vspec in raw_variants.items():
        vspec, vkey = vspec or {}, f"sweep.variants.{vname}"
        vfiles = [spec_file(f, spec_path, f"{vkey}.recipes[{i}]", prov)
                  for i, f in enumerate(_files(vspec.get("recipes")))]
        v_ov = list(vspec.get("overrides") or [])
        v_eval = _evaluate_layer(vspec.get("evaluate"), f"{vkey}.evaluate", spec_path, prov)
        for point in _grid_points(grid):
            suffix = "".join(f"-{_short(k)}_{_fmt_value(v)}" for k, v in point.items())
            point_ov = [f"{k}={_yaml_value(v)}" for k, v in point.items()]
            variants.append(Variant(
                name=f"{vname}{suffix}", variant=str(vname), description=vspec.get("description"),
                recipes=base + vfiles + extra_files,
                overrides=list(data.get("overrides") or []) + v_ov + point_ov + list(recipe_ov),
                own_overrides=v_ov + point_ov, grid=point, evaluate=None, eval_layer=v_eval))
    runs_dir = data.get("runs_dir")
    sweep = Sweep(name=data["name"], spec_path=spec_path, description=data.get("description"), base=base,
                  overrides=list(data.get("overrides") or []), grid=grid, evaluate=sweep_eval,
                  out=Path(data["out"]), runs_dir=Path(runs_dir) if runs_dir is not None else None,
                  report=_report(data.get("report")), variants=variants,
                  cli_overrides=list(recipe_ov), extra_recipes=extra_files, provenance=prov)
    _compose_variants(sweep, raw_variants)
    return sweep


def _origin(key: str, sweep: Sweep) -> str:
    """"'KEY' in FILE": where a spec key was set (for a recipe error caused by it)."""
    return f"'{key}' in {origin_of(key, sweep.provenance)}"


def _compose_variants(sweep: Sweep, raw_variants: dict) -> None:
    origins = {ov.split("=", 1)[0]: _origin(f"sweep.overrides[{i}]", sweep)
               for i, ov in enumerate(sweep.overrides)}
    seen_dirs: dict[str, str] = {}
    for v in sweep.variants:
        vo = dict(origins)
        for i, ov in enumerate((raw_variants[v.variant] or {}).get("overrides") or []):
            vo[ov.split("=", 1)[0]] = _origin(f"sweep.variants.{v.variant}.overrides[{i}]", sweep)
        for k in v.grid:
            vo[k] = _origin(f"sweep.grid.{k}", sweep)
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
                msg = re.sub(rf"('{re.escape(key)}(\.[^']*)?'[^\n]*?)\(from command line\)",
                             lambda m: f"{m.group(1)}(from {origin})", msg)
            raise SweepError(f"{sweep.spec_path}: variant '{v.name}': {msg}") from None
        wandb_cfg = (recipe.get("logger") or {}).get("wandb")
        if isinstance(wandb_cfg, dict):  # W&B tags to filter the stage runs by sweep and variant
            tags = list(wandb_cfg.get("tags") or [])
            wandb_cfg["tags"] = tags + [t for t in (f"sweep:{sweep.name}", f"variant:{v.variant}")
                                        if t not in tags]
        _merge_evaluate(sweep, v, recipe)
        v.recipe = recipe
        rd = str(Path(recipe["run"]["dir"]).resolve())
        if rd in seen_dirs:
            raise SweepError(f"{sweep.spec_path}: variants '{seen_dirs[rd]}' and '{v.name}' would share "
                             f"the run directory {recipe['run']['dir']} (set sweep.runs_dir, or give "
                             "each a different run.name)")
        seen_dirs[rd] = v.name


def _evaluate_layer(value: dict | None, key: str, spec_path: Path, prov: dict) -> dict | None:
    """An `evaluate:` layer of the spec (None: not given), test-set paths made absolute."""
    if value is None:
        return None
    cfg = dict(value)
    if cfg.get("test_sets"):
        cfg["test_sets"] = {n: f if f in (VAL_SPLIT, None) else
                            str(Path(spec_file(str(f), spec_path, f"{key}.test_sets.{n}", prov)).resolve())
                            for n, f in cfg["test_sets"].items()}
    return cfg


def _merge_evaluate(sweep: Sweep, v: Variant, recipe: dict) -> None:
    """The variant's evaluation: the recipe's `evaluate:` node, then the sweep's, then the
    variant's (a layer that is given switches it on unless it says `enabled: false`). The result
    is the recipe's `evaluate` node (what the stage runner evaluates after training, and what the
    run directory's saved recipe records) and `v.evaluate` (None: no evaluation)."""
    node = dict(recipe.get("evaluate") or {})
    origin = f"the recipe's evaluate node ({', '.join(map(str, v.recipes))})"
    for layer, key in ((sweep.evaluate, "sweep.evaluate"), (v.eval_layer, f"sweep.variants.{v.variant}.evaluate")):
        if layer is not None:
            node.update({"enabled": True, **layer})
            origin = f"key '{key}' from {origin_of(key, sweep.provenance)}"
    if not node.get("enabled", False):
        if "evaluate" in recipe:
            recipe["evaluate"] = {**node, "enabled": False}
        v.evaluate = None
        return
    node["test_sets"] = {n: f for n, f in (node.get("test_sets") or {}).items() if f is not None}
    if not node["test_sets"]:
        raise SweepError(f"{sweep.spec_path}: variant '{v.name}': evaluation is enabled but no test "
                         f"set is given: set 'test_sets' ({origin})")
    sets = {}
    for name, test_set in node["test_sets"].items():
        found = test_set if test_set == VAL_SPLIT else find_file(str(test_set), sweep.spec_path)
        if found is None:
            raise SweepError(f"{sweep.spec_path}: variant '{v.name}': {origin}: test_sets.{name}: "
                             f"file not found: {test_set}")
        sets[name] = found if found == VAL_SPLIT else str(Path(found).resolve())
    node["test_sets"] = sets
    recipe["evaluate"] = node
    v.evaluate = {k: val for k, val in node.items() if k != "enabled"}


def _flatten_grid(value: dict, prefix: str = "") -> dict:
    """`{data.data_fraction: [...]}` or nested `{data: {data_fraction: [...]}}` -> dotted keys."""
    out = {}
    for k, v in value.items():
        if isinstance(v, dict):
            out.update(_flatten_grid(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
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
