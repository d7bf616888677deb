"""What the recipe schema cannot say on its own: the names it shares with the code (roles, turns,
decisions, dtypes, from core/vocabulary.py) and the rules that tie one key to another in a stage's
effective settings (its shared sections with its overrides)."""
from __future__ import annotations

from typing import Callable

from .stage_config import SECTIONS, deep_merge
from .vocabulary import DECISIONS, DTYPES, GENTOOL_ROLES, MULTITASK, TRAINED_ROLES, TRAJECTORY_TURNS


def _closed_map(keys, value: dict) -> dict:
    return {"type": "object", "required": list(keys), "additionalProperties": False,
            "properties": {k: value for k in keys}}


def vocabulary_defs() -> dict:
    """`$defs` of the recipe schema that name roles, turns, decisions and dtypes."""
    turn = {"type": "object", "additionalProperties": False, "required": ["prefix", "body", "suffix"],
            "properties": {k: {"type": "string"} for k in ("prefix", "body", "suffix")}}
    return {"stage_role": {"enum": [*TRAINED_ROLES, MULTITASK, *GENTOOL_ROLES]},
            "system_prompts": _closed_map(TRAINED_ROLES, {"type": "string"}),
            "turns": _closed_map(TRAJECTORY_TURNS, turn),
            "decision_words": _closed_map(DECISIONS, {"type": "string"}),
            "dtype": {"enum": list(DTYPES)}}


def check_stage_values(recipe: dict, origin: Callable[[str], str]) -> list[str]:
    """Cross-key rules, per stage; each problem names the key path, the stages it breaks in and the
    file it came from."""
    found: dict[tuple[str, str], list[str]] = {}  # (key path, what is wrong) -> stages
    for name, stage in (recipe.get("stages") or {}).items():
        eff = {s: deep_merge(recipe.get(s) or {}, stage.get(s) or {}) for s in SECTIONS}

        def path(section, key, stage=stage, name=name):
            head, _, rest = key.partition(".")
            own = stage.get(section) or {}
            return f"stages.{name}.{section}.{key}" if head in own else f"{section}.{key}"

        data, trainer = eff["data"], eff["trainer"]
        gbs, mbs = data.get("global_batch_size"), data.get("micro_batch_size", 1)
        devices, nodes = trainer.get("devices"), trainer.get("num_nodes", 1)
        world = devices * nodes if isinstance(devices, int) and devices > 0 else 1
        if gbs and isinstance(mbs, int) and gbs % (mbs * world):
            key = path("data", "global_batch_size")
            found.setdefault((key, f"{gbs} is not a multiple of data.micro_batch_size x devices x "
                                   f"num_nodes = {mbs} x {world}"), []).append(name)
        packing = data.get("packing") or {}
        max_tokens, max_length = packing.get("max_tokens"), data.get("max_length")
        if max_tokens and isinstance(max_length, int) and max_tokens < max_length:
            key = path("data", "packing.max_tokens")
            found.setdefault((key, f"{max_tokens} is shorter than data.max_length={max_length}, so "
                                   "some examples would not fit a row"), []).append(name)
        if eff["model"].get("adapter") and stage.get("enabled", True) is not False \
                and not stage.get("init_from") and not eff["model"].get("init_from"):
            found.setdefault((path("model", "adapter"), "an adapter needs weights to adapt, and this stage "
                              "starts from a random init; give it an init_from (another stage or a "
                              "checkpoint) or set its model.adapter to null"), []).append(name)
    return [f"key '{key}': {what} (stage{'s' * (len(names) > 1)} {', '.join(names)}; from {origin(key)})"
            for (key, what), names in found.items()]
