"""A trained run as evaluation sees it: its recipe, the export of each role, the mode they allow,
and the command-line flags that point at them."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from core.run_dir import RunDir, StageDir
from core.vocabulary import TRAINED_ROLES, TEAM_ROLES

from .. import EvaluationError

MODES = ("auto", "alpha_umi", "single")


def training_overlap(recipe: Mapping, test_set) -> list[str]:
    """The run's training sources (`data.sources[i]: path`) that are, contain, or lie inside
    `test_set`: a test set the run trained on scores what it memorized, not what it learned."""
    from core.repo_paths import resolve_data_path
    test = resolve_data_path(test_set).resolve()
    hits = []
    for i, source in enumerate(((recipe.get("data") or {}).get("sources")) or []):
        path = source.get("path") if isinstance(source, Mapping) else None
        if not path:
            continue
        src = resolve_data_path(path).resolve()
        if src == test or test in src.parents or src in test.parents:
            hits.append(f"data.sources[{i}]: {path}")
    return hits


def warn_training_overlap(recipe: Mapping, test_set, log) -> list[str]:
    hits = training_overlap(recipe, test_set)
    if hits and log:
        log(f"warning: {test_set} is also training data of this run ({'; '.join(hits)}); "
            "its scores are not held out")
    return hits


def load_run_recipe(run_dir, recipe_files: Sequence[str] | None = None,
                    overrides: Sequence[str] = ()) -> dict:
    """The recipe (at least its `template`) for a run: composed from `recipe_files` when given
    (a full recipe or just a template fragment), else the recipe saved in the run directory."""
    from omegaconf import OmegaConf

    from core.recipe import RecipeError, compose
    saved = RunDir(run_dir).recipe_file
    try:
        if recipe_files:
            cfg, _ = compose(list(recipe_files), list(overrides))
            data = OmegaConf.to_container(cfg, resolve=True)
        elif saved.is_file():
            data = RunDir(run_dir).load_recipe()
        else:
            raise EvaluationError(f"{run_dir}: no {saved.name} in the run directory; give the "
                                  "recipe the run was trained with (--recipe FILE)")
    except (RecipeError, ValueError) as exc:
        if isinstance(exc, EvaluationError):
            raise
        raise EvaluationError(f"cannot load the recipe: {exc}") from None
    if not isinstance(data, dict) or "template" not in data:
        raise EvaluationError(f"{recipe_files or saved}: the recipe has no 'template' node")
    return data


def find_exports(run_dir, recipe: Mapping | None = None) -> dict[str, str]:
    """Export folder of each role found in the run: {role: path}; a stage's adapter folder when it
    has one (the team loads each base once, evaluation.agent.adapters). A `multitask` stage's export
    (one model trained on the planner, caller and summarizer data) serves each of the three roles
    that has no export of its own, with that role's system prompt (alpha_umi mode)."""
    run = RunDir(run_dir)
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
            role, export = stages[name].get("role"), run.stage(name).model_export()
            if role in TRAINED_ROLES and export:
                found[role] = str(export)
            elif role == "multitask" and export:
                multitask = str(export)
    if run.path.is_dir():
        for stage in run.done_stages():
            done = stage.read_done()
            if done is None:
                continue
            role, export = done.get("role"), stage.model_export()
            if role in TRAINED_ROLES and role not in found and export:
                found[role] = str(export)
            elif role == "multitask" and multitask is None and export:
                multitask = str(export)
    for role in TRAINED_ROLES:
        if role not in found and run.stage(role).model_export():
            found[role] = str(run.stage(role).model_export())
    if multitask is None and run.stage("multitask").model_export():
        multitask = str(run.stage("multitask").model_export())
    if multitask is not None:
        for role in TEAM_ROLES:
            found.setdefault(role, multitask)
    return found


def resolve_mode(mode: str, exports: Mapping[str, str], run_dir="the run") -> str:
    if mode not in MODES:
        raise EvaluationError(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")
    have_team = all(r in exports for r in TEAM_ROLES)
    if mode == "auto":
        mode = "alpha_umi" if have_team else "single"
    need = TEAM_ROLES if mode == "alpha_umi" else ("backbone",)
    missing = [r for r in need if r not in exports]
    if missing:
        raise EvaluationError(f"{run_dir}: mode {mode} needs exports for {', '.join(missing)}; "
                              f"found {', '.join(sorted(exports)) or 'none'}")
    return mode


def longest_target(export: str | None, turn: str | None) -> int | None:
    """The longest target that `turn` produced (tokens, EOS included) in the training split of the
    stage that wrote `export` (its DONE.json); `turn` None: the longest of any. None when unknown."""
    if not export:
        return None
    try:
        done = StageDir(Path(export).parent).read_done()
        longest = done["data"]["train"]["max_target_tokens"]
        return int(max(longest.values()) if turn is None else longest[turn])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def generation_lengths(requested, exports: Mapping[str, str], mode: str) -> tuple[dict, dict]:
    """({turn: max_new_tokens}, {turn: longest training target}) for planner, caller and
    summarizer. `requested`: one length for all, {turn: length or None}, or None; a turn without
    one gets its longest training target, so generation is never shorter than what was taught.
    An export with no training record (not trained by this repo) needs a requested length."""
    longest, lengths = {}, {}
    for turn in TEAM_ROLES:
        export = exports.get(turn if mode == "alpha_umi" else "backbone")
        longest[turn] = longest_target(export, turn)
        n = requested.get(turn) if isinstance(requested, Mapping) else requested
        if not n and not longest[turn]:
            raise EvaluationError(f"{export}: no training record says how long a {turn} output may "
                                  "be; give the generation length (evaluate.max_new_tokens, or "
                                  "--max-new-tokens)")
        lengths[turn] = int(n) if n else longest[turn]
    return lengths, longest
