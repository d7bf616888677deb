"""A trained run as evaluation sees it: its recipe, the export of each role, the mode they allow,
and the command-line flags that point at them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

from core.vocabulary import TRAINED_ROLES, TURN_ROLES

from . import EvaluationError

MODES = ("auto", "alpha_umi", "single")


def load_run_recipe(run_dir, recipe_files: Sequence[str] | None = None,
                    overrides: Sequence[str] = ()) -> dict:
    """The recipe (at least its `template`) for a run: composed from `recipe_files` when given
    (a full recipe or just a template fragment), else the run's saved `recipe.yaml`."""
    from omegaconf import OmegaConf

    from core.recipe import RecipeError, compose
    saved = Path(run_dir) / "recipe.yaml"
    try:
        if recipe_files:
            cfg, _ = compose(list(recipe_files), list(overrides))
            data = OmegaConf.to_container(cfg, resolve=True)
        elif saved.is_file():
            data = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
        else:
            raise EvaluationError(f"{run_dir}: no recipe.yaml in the run directory; give the "
                                  "recipe the run was trained with (--recipe FILE)")
    except (RecipeError, ValueError) as exc:
        if isinstance(exc, EvaluationError):
            raise
        raise EvaluationError(f"cannot load the recipe: {exc}") from None
    if not isinstance(data, dict) or "template" not in data:
        raise EvaluationError(f"{recipe_files or saved}: the recipe has no 'template' node")
    return data


def _is_export(path: Path) -> bool:
    return (path / "config.json").is_file()


def find_exports(run_dir, recipe: Mapping | None = None) -> dict[str, str]:
    """Export folder of each role found in the run: {role: path}. A `multitask` stage's export
    (one model trained on the planner, caller and summarizer data) serves each of the three roles
    that has no export of its own, with that role's system prompt (alpha_umi mode)."""
    run_dir = Path(run_dir)
    found: dict[str, str] = {}
    multitask: str | None = None
    stages = (recipe or {}).get("stages") or {}
    if stages:
        try:
            from core.recipe import enabled_stages
            names = enabled_stages({"stages": stages})
        except Exception:  # noqa: BLE001 - a partial recipe: keep the file order
            names = [n for n, s in stages.items() if s.get("enabled", True)]
        for name in names:  # a later stage of the same role wins
            role, path = stages[name].get("role"), run_dir / name / "hf"
            if role in TRAINED_ROLES and _is_export(path):
                found[role] = str(path)
            elif role == "multitask" and _is_export(path):
                multitask = str(path)
    if run_dir.is_dir():
        for done in sorted(run_dir.glob("*/DONE.json")):
            try:
                role = json.loads(done.read_text()).get("role")
            except (OSError, ValueError):
                continue
            path = done.parent / "hf"
            if role in TRAINED_ROLES and role not in found and _is_export(path):
                found[role] = str(path)
            elif role == "multitask" and multitask is None and _is_export(path):
                multitask = str(path)
    for role in TRAINED_ROLES:
        path = run_dir / role / "hf"
        if role not in found and _is_export(path):
            found[role] = str(path)
    if multitask is None and _is_export(run_dir / "multitask" / "hf"):
        multitask = str(run_dir / "multitask" / "hf")
    if multitask is not None:
        for role in TURN_ROLES:
            found.setdefault(role, multitask)
    return found


def resolve_mode(mode: str, exports: Mapping[str, str], run_dir="the run") -> str:
    if mode not in MODES:
        raise EvaluationError(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")
    have_team = all(r in exports for r in TURN_ROLES)
    if mode == "auto":
        mode = "alpha_umi" if have_team else "single"
    need = TURN_ROLES if mode == "alpha_umi" else ("backbone",)
    missing = [r for r in need if r not in exports]
    if missing:
        raise EvaluationError(f"{run_dir}: mode {mode} needs exports for {', '.join(missing)}; "
                              f"found {', '.join(sorted(exports)) or 'none'}")
    return mode


def role_map(items, what: str) -> dict:
    """ROLE=VALUE pairs from the command line; ROLE 'all' sets every role."""
    out = {}
    for item in items or []:
        role, sep, value = item.partition("=")
        if not sep or not value:
            raise EvaluationError(f"{what} {item!r}: expected ROLE=VALUE")
        for r in (TRAINED_ROLES if role == "all" else (role,)):
            if r not in TRAINED_ROLES:
                raise EvaluationError(f"{what} {item!r}: unknown role {r!r} "
                                      f"(expected one of {', '.join(TRAINED_ROLES)} or all)")
            out[r] = value
    return out


def add_run_args(p) -> None:
    """Options shared by `evaluate.py static` and `evaluate.py agent`."""
    # dest run_dir: evaluate.py keeps the subcommand function in args.run
    p.add_argument("--run", dest="run_dir", metavar="RUN", required=True,
                   help="run directory (runs/NAME) holding the stage exports")
    p.add_argument("--recipe", nargs="+", metavar="FILE",
                   help="recipe (or template fragment) the run was trained with; "
                        "default: RUN/recipe.yaml")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="auto: alpha_umi when planner, caller and summarizer exports exist, else single")
    p.add_argument("--model", action="append", metavar="ROLE=PATH",
                   help="export to use for a role (planner, caller, summarizer, backbone or all)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--max-prompt-tokens", type=int,
                   help="cut longer prompts (history from the left, header kept); default: the "
                        "recipe's data.max_length or the model's positions, less --max-new-tokens")


