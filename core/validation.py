"""The check of a composed recipe, run once by core.recipe.validate (after the schema) before
anything is built: every built node against the signature of what builds it (core/build_sites.py),
and the rules that tie one key to another in a stage's completed settings. Constructors trust
what passed here."""
from __future__ import annotations

from typing import Callable, Mapping

from .batch_plan import BatchPlan, BatchSizeError
from .build_sites import SITES, check_node
from .stage_config import SECTIONS, stage_settings
from .strategy_rules import StrategyError, deepspeed_problems, expected_world_size


def check_recipe(recipe: dict, origin: Callable[[str], str]) -> list[str]:
    """Problems of a schema-valid recipe, each naming the key path and the file it came from."""
    problems = check_nodes(recipe, origin) + check_stage_values(recipe, origin)
    if not problems:  # the strategy rules read the completed settings
        problems += check_strategy(recipe)
    return list(dict.fromkeys(problems))


def check_strategy(recipe: dict) -> list[str]:
    """The strategy's rules with each stage's settings, on trainer.devices x num_nodes devices
    (unknown with "auto": then the rules that need it run at stage start)."""
    problems = []
    for name in recipe.get("stages") or {}:
        settings = stage_settings(recipe, name)
        try:
            problems += deepspeed_problems(recipe, settings, expected_world_size(settings))
        except StrategyError as exc:
            problems.append(str(exc))
    return problems


def _where(recipe: Mapping, stage: str | None, section: str) -> Callable[[str], str]:
    """The key path a stage's key was set at: its own override, else the shared section."""
    own = ((recipe.get("stages") or {}).get(stage) or {}).get(section) or {} if stage else {}

    def where(key: str) -> str:
        return f"stages.{stage}.{section}.{key}" if key.partition(".")[0] in own else f"{section}.{key}"
    return where


def check_nodes(recipe: dict, origin: Callable[[str], str]) -> list[str]:
    """Every built node of a recipe (each stage's settings, before the signatures' defaults are
    added) against the signature of what builds it; problems deduplicated, in recipe order."""
    problems: list[str] = []
    stages = recipe.get("stages") or {}
    settings = {name: stage_settings(recipe, name, signatures=False) for name in stages}
    for site in SITES:
        shared = _get(recipe, site.section)
        if shared is None and not any(s.get(site.section) for s in stages.values()):
            continue
        if site.per_stage and site.section in SECTIONS and settings:
            variants = [(name, s[site.section]) for name, s in settings.items()]
        else:
            variants = [(None, shared or {})]
        for stage, node in variants:
            if not isinstance(node, Mapping):
                continue  # e.g. `strategy: ddp`, a name Lightning resolves
            own = (stages[stage].get(site.section) or {}) if stage else {}
            problems += check_node(node, site, _where(recipe, stage, site.section), origin,
                                   stage if "_target_" in own else None)
            for path, sub in nested_nodes({k: v for k, v in node.items() if k != "_target_"}, site.section):
                problems += check_node(sub, None, lambda key, p=path: f"{p}.{key}", origin)
    return list(dict.fromkeys(problems))


def check_stage_values(recipe: dict, origin: Callable[[str], str]) -> list[str]:
    """Cross-key rules, per stage; each problem names the key path, the stages it breaks in and the
    file it came from."""
    found: dict[tuple[str, str], list[str]] = {}  # (key path, what is wrong) -> stages
    for name in recipe.get("stages") or {}:
        settings = stage_settings(recipe, name)
        where = _where(recipe, name, "data")
        data, trainer = settings["data"], settings["trainer"]
        devices, nodes = trainer.get("devices"), trainer.get("num_nodes") or 1
        world = devices * nodes if isinstance(devices, int) and devices > 0 else 1
        try:
            BatchPlan.of(settings, world)
        except BatchSizeError:
            found.setdefault((where("global_batch_size"),
                              f"{data['global_batch_size']} is not a multiple of data.micro_batch_size x "
                              f"devices x num_nodes = {data['micro_batch_size']} x {world}"), []).append(name)
        max_tokens, max_length = (data.get("packing") or {}).get("max_tokens"), data.get("max_length")
        if max_tokens and isinstance(max_length, int) and max_tokens < max_length:
            found.setdefault((where("packing.max_tokens"), f"{max_tokens} is shorter than data.max_length="
                              f"{max_length}, so some examples would not fit a row"), []).append(name)
        stage, model = recipe["stages"][name], settings["model"]
        if model.get("adapter") and stage.get("enabled", True) is not False \
                and not stage.get("init_from") and not model.get("init_from"):
            found.setdefault((_where(recipe, name, "model")("adapter"), "an adapter needs weights to adapt, and "
                              "this stage starts from a random init; give it an init_from (another stage or a "
                              "checkpoint) or set its model.adapter to null"), []).append(name)
    return [f"key '{key}': {what} (stage{'s' * (len(names) > 1)} {', '.join(names)}; from {origin(key)})"
            for (key, what), names in found.items()]


def nested_nodes(value, path: str):
    """(key path, node) of every `_target_` node inside `value` (instantiate builds them first)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            sub = f"{path}.{k}"
            if isinstance(v, Mapping) and "_target_" in v:
                yield sub, v
            yield from nested_nodes(v, sub)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from nested_nodes(v, f"{path}.{i}")


def _get(data: Mapping, path: str):
    for key in path.split("."):
        data = data.get(key) if isinstance(data, Mapping) else None
    return data


