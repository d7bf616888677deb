"""The recipe schema (core/recipe_schema.json) with the names it shares with the code filled in
from core/vocabulary.py, and the defaults it holds: the home of every default of a key that no
callable's signature configures (sections the code reads itself, keys a build site consumes)."""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Mapping

from .vocabulary import DECISIONS, DTYPES, GENTOOL_ROLES, MULTITASK, TRAINED_ROLES, TURN_KINDS

SCHEMA_PATH = Path(__file__).with_name("recipe_schema.json")


def _closed_map(keys, value: dict) -> dict:
    return {"type": "object", "required": list(keys), "additionalProperties": False,
            "properties": {k: value for k in keys}}


def vocabulary_defs() -> dict:
    """`$defs` of the recipe schema that name roles, turns, decisions and dtypes."""
    turn = {"type": "object", "additionalProperties": False, "required": ["prefix", "body", "suffix"],
            "properties": {k: {"type": "string"} for k in ("prefix", "body", "suffix")}}
    return {"stage_role": {"enum": [*TRAINED_ROLES, MULTITASK, *GENTOOL_ROLES]},
            "system_prompts": _closed_map(TRAINED_ROLES, {"type": "string"}),
            "turns": _closed_map(TURN_KINDS, turn),
            "decision_words": _closed_map(DECISIONS, {"type": "string"}),
            "dtype": {"enum": list(DTYPES)}}


@functools.lru_cache(maxsize=1)
def recipe_schema() -> dict:
    schema = json.loads(SCHEMA_PATH.read_text())
    schema["$defs"].update(vocabulary_defs())
    return schema


def section_properties(section: str) -> dict:
    """The schema's `properties` of a top-level section (its `$ref` followed)."""
    schema = recipe_schema()
    node = schema["properties"].get(section) or {}
    ref = node.get("$ref")
    if ref:
        node = schema["$defs"][ref.rsplit("/", 1)[1]]
    return node.get("properties") or {}


def section_defaults(section: str) -> dict:
    """{key: default} of a section's keys that have a `default` in the schema."""
    return {k: p["default"] for k, p in section_properties(section).items() if "default" in p}


def completed(section: str, node: Mapping) -> dict:
    """`node` with the schema's defaults of the keys it leaves out, nested objects too (the
    node's own keys first)."""
    return _filled(section_properties(section), node)


def _filled(props: dict, node: Mapping) -> dict:
    out = dict(node)
    for key, prop in props.items():
        if "default" in prop:
            out.setdefault(key, copy.deepcopy(prop["default"]))
        sub = prop.get("properties") or {}
        if any("default" in p for p in sub.values()) and isinstance(out.get(key, {}), Mapping):
            out[key] = _filled(sub, out.get(key) or {})
    return out


def default(path: str):
    """The schema default of a top-level key (`strategy`) or of `section.key` (KeyError when it has none)."""
    section, _, key = path.partition(".")
    if not key:
        return recipe_schema()["$defs"][section]["default"]
    return section_defaults(section)[key]
