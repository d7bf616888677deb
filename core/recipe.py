"""Recipes: YAML files composed with OmegaConf, validated with jsonschema before anything is built.

A recipe file may list `defaults:` (fragments such as `model/tiny_llama`, resolved against the
recipes folder), which are merged in order before the file's own keys. Several recipe files given
on the command line are merged left to right (a base recipe, then overlays), then `key=value`
overrides. Every leaf remembers the file that last set it, so a validation error names the key
path and its file.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Sequence

import jsonschema
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from core.errors import ProjectError
from core.secrets import redact  # noqa: F401  (the one redaction; imported from here by callers)
from .schema import recipe_schema, section_defaults
from .validation import check_recipe

RECIPES_ROOT = Path(__file__).resolve().parents[1] / "recipes"


class RecipeError(ProjectError, ValueError):
    pass


def _find_fragment(name: str, including: Path) -> Path:
    for base in (including.parent, RECIPES_ROOT):
        for cand in (base / name, base / f"{name}.yaml"):
            if cand.is_file():
                return cand
    raise RecipeError(f"{including}: defaults entry '{name}' not found next to it or under {RECIPES_ROOT}")


def _load_file(path: Path, provenance: dict, stack=()) -> DictConfig:
    if path in stack:
        raise RecipeError(f"{path}: defaults form a cycle: {' -> '.join(map(str, stack + (path,)))}")
    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # yaml errors carry line and column
        raise RecipeError(f"{path}: cannot parse YAML: {exc}") from None
    if not isinstance(node, DictConfig):
        raise RecipeError(f"{path}: a recipe must be a mapping at the top level")
    defaults = node.pop("defaults", [])
    if not isinstance(defaults, (list, ListConfig)):
        raise RecipeError(f"{path}: 'defaults' must be a list of fragment names")
    merged = OmegaConf.create({})
    for entry in defaults:
        frag = _load_file(_find_fragment(str(entry), path), provenance, stack + (path,))
        merged = OmegaConf.merge(merged, frag)
    record_origins(node, str(path), provenance)
    return OmegaConf.merge(merged, node)


def record_origins(node, origin: str, provenance: dict, prefix: str = ""):
    keys = node.keys() if isinstance(node, DictConfig) else []
    for key in keys:
        value = node._get_node(key)
        path = f"{prefix}.{key}" if prefix else str(key)
        provenance[path] = origin
        if isinstance(value, DictConfig):
            record_origins(value, origin, provenance, path)


def compose(files: Sequence[str | Path], overrides: Sequence[str] = ()) -> tuple[DictConfig, dict]:
    """Merge recipe files and dot-list overrides; return (config, provenance)."""
    if not files:
        raise RecipeError("no recipe file given")
    provenance: dict[str, str] = {}
    cfg = OmegaConf.create({})
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {path}")
        cfg = OmegaConf.merge(cfg, _load_file(path.resolve(), provenance))
    for item in overrides:
        if item.startswith("~"):
            _delete(cfg, item[1:], provenance)
            continue
        if "=" not in item:
            raise RecipeError(f"command line: override '{item}' is not of the form key=value or ~key")
        try:
            dot = OmegaConf.from_dotlist([item])
            record_origins(dot, "command line", provenance)
            cfg = OmegaConf.merge(cfg, dot)
        except (OmegaConfBaseException, TypeError) as exc:  # e.g. `a[0].b=1`: lists merge whole
            raise RecipeError(f"command line: cannot apply '{item}' ({str(exc).splitlines()[0]}); a list "
                              "(data.sources) is set whole: put it in an overlay recipe file") from None
    return cfg, provenance


def _delete(cfg: DictConfig, key: str, provenance: dict):
    """`~key` on the command line (Hydra's syntax) removes a key the recipe files set, e.g. the
    AdamW `betas` when a stage swaps in another optimizer."""
    parent_path, _, last = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_path) if parent_path else cfg
    if not last or not isinstance(parent, DictConfig) or last not in parent:
        raise RecipeError(f"command line: cannot remove '~{key}': the recipe has no key '{key}'")
    del parent[last]
    for path in [p for p in provenance if p == key or p.startswith(key + ".")]:
        del provenance[path]


def split_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Command-line words: (recipe files, overrides `key=value` / `~key`)."""
    is_override = [("=" in a or a.startswith("~")) for a in args]
    return ([a for a, o in zip(args, is_override) if not o], [a for a, o in zip(args, is_override) if o])


def origin_of(path: str, provenance: dict) -> str:
    parts = re.sub(r"\[\d+\]", "", path).split(".")
    while parts:
        key = ".".join(parts)
        if key in provenance:
            return provenance[key]
        parts.pop()
    return "the composed recipe"


def validate(cfg: DictConfig, provenance: dict) -> dict:
    """Resolve interpolations and check the recipe against the schema; return it as a dict."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:
        raise RecipeError(f"recipe: cannot resolve interpolation: {exc}") from None
    lines = schema_errors(data, _validator(), provenance, limit=None)
    if not lines:  # the sections have the shape the signature check walks
        lines += check_recipe(data, lambda path: origin_of(path, provenance))
    if lines:
        raise RecipeError("invalid recipe:\n  " + "\n  ".join(lines[:10]))
    _check_stage_graph(data, provenance)
    return data


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    """The schema, with the names it shares with the code filled in from core/vocabulary.py."""
    return jsonschema.Draft202012Validator(recipe_schema())


def schema_errors(data, schema, provenance: dict, limit: int | None = 10) -> list[str]:
    """Where `data` breaks the JSON Schema `schema` (a dict or a validator): one line per error
    (at most `limit`), each naming the key path and the file (from `provenance`) that set it.
    Recipes and sweep specs."""
    validator = schema if isinstance(schema, jsonschema.Draft202012Validator) else jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    return [_explain(e, provenance) for e in errors[:limit]]


def key_error(path: str, message: str, provenance: dict) -> str:
    """The one form of a bad-value message: the key path, what is wrong, where it was set."""
    return f"key '{path or '<root>'}': {message} (from {origin_of(path, provenance)})"


def _key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _explain(err: jsonschema.ValidationError, provenance: dict) -> str:
    path = _key_path(err.absolute_path)
    if err.validator == "additionalProperties":
        extra = [k for k in err.instance if k not in err.schema.get("properties", {})
                 and not any(re.match(p, k) for p in err.schema.get("patternProperties", {}))]
        key = f"{path}.{extra[0]}" if path else extra[0]
        return f"unknown key '{key}' (from {origin_of(key, provenance)})"
    if err.validator == "required":
        missing = err.message.split("'")[1]
        key = f"{path}.{missing}" if path else missing
        if len(err.absolute_path) == 2 and err.absolute_path[0] == "stages" and missing == "role":
            known = sorted(k.split(".")[1] for k in provenance if re.fullmatch(r"stages\.[^.]+\.role", k))
            return (f"unknown stage '{err.absolute_path[1]}' (from {origin_of(path, provenance)}); the "
                    f"recipe's stages are {', '.join(known)} (a new stage needs a role)")
        return f"missing required key '{key}' (in {origin_of(path, provenance) if path else 'the recipe'})"
    hint = err.schema.get("errorMessage") if isinstance(err.schema, dict) else None
    return key_error(path, f"{err.instance!r} {hint}" if hint else err.message, provenance)


def _check_stage_graph(data: dict, provenance: dict):
    stages = _enabled(data["stages"])
    for name, stage in stages.items():
        src = stage.get("init_from")
        if isinstance(src, str) and src.startswith("stage:"):
            dep = src.split(":", 1)[1]
            if dep not in stages:
                raise RecipeError(f"key 'stages.{name}.init_from': stage '{dep}' is not an enabled stage "
                                  f"(from {origin_of(f'stages.{name}.init_from', provenance)})")
    stage_order(stages)


def _enabled(stages: dict) -> dict:
    return {n: s for n, s in stages.items() if s.get("enabled", True)}


def enabled_stages(recipe: dict) -> list[str]:
    """The names of a recipe's enabled stages, in dependency order."""
    return stage_order(_enabled(recipe["stages"]))


def stage_order(stages: dict) -> list[str]:
    """Names in dependency order (a stage after the stage it starts from)."""
    order, state = [], {}

    def visit(name, chain=()):
        if state.get(name) == "done":
            return
        if name in chain:
            raise RecipeError(f"stages: init_from forms a cycle: {' -> '.join(chain + (name,))}")
        src = stages[name].get("init_from")
        if isinstance(src, str) and src.startswith("stage:"):
            visit(src.split(":", 1)[1], chain + (name,))
        state[name] = "done"
        order.append(name)

    for name in stages:
        visit(name)
    return order


def evaluate_defaults() -> dict:
    """The `evaluate:` settings and their defaults, read from the recipe schema (their one
    definition; `enabled` left out)."""
    return {k: v for k, v in section_defaults("evaluate").items() if k != "enabled"}


def load_recipe(files: Sequence[str | Path], overrides: Sequence[str] = ()) -> dict:
    cfg, provenance = compose(files, overrides)
    return validate(cfg, provenance)


def to_yaml(data: dict) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(data))
