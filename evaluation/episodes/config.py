"""An episodes config (recipes/eval/*.yaml): the `episodes:` node over the file its `defaults:`
names, with `key=value` overrides, checked against episodes_schema.json."""
from __future__ import annotations

import json
from pathlib import Path

from core.recipe import record_origins, schema_errors

from .. import EvaluationError

SCHEMA_PATH = Path(__file__).with_name("episodes_schema.json")


def episodes_schema() -> dict:
    """episodes_schema.json with the names it shares with the code filled in."""
    from simulators.settings import SCHEMA_PATH as SIMULATOR_SCHEMA
    from trajectories.sources import SOURCE_FORMATS

    from ..agent.loop import TERMINATIONS
    from ..agent.members import PROMPT_AS
    from .executors import EXECUTOR_TYPES
    from .judge import JUDGE_KINDS
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    llm = json.loads(SIMULATOR_SCHEMA.read_text(encoding="utf-8"))["$defs"]["llm"]
    endpoint = {**llm, "properties": {**llm["properties"], "prompt_as": {"enum": list(PROMPT_AS)}}}
    schema["$defs"].update(llm=llm, endpoint=endpoint, termination={"enum": list(TERMINATIONS)},
                           judge_kind={"enum": list(JUDGE_KINDS)}, executor_type={"enum": list(EXECUTOR_TYPES)},
                           format={"enum": [*SOURCE_FORMATS, None]})
    return schema


def load_episodes_config(path, overrides=()) -> dict:
    """The `episodes:` node of an episodes config, over the file its `defaults:` names (relative
    to it), with `key=value` overrides relative to `episodes`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    provenance: dict = {}

    def read(p: Path, seen=()):
        if p in seen:
            raise EvaluationError(f"{p}: `defaults` chain loops")
        try:
            cfg = OmegaConf.load(p)
        except (OSError, OmegaConfBaseException, ValueError) as exc:
            raise EvaluationError(f"{p}: cannot read the episodes config: {exc}") from None
        base = cfg.pop("defaults", None) if "defaults" in cfg else None
        merged = OmegaConf.merge(read(p.parent / str(base), seen + (p,)), cfg) if base else cfg
        record_origins(cfg, str(p), provenance)  # after its base's: this file's keys win
        return merged

    cfg = read(Path(path))
    if "episodes" not in cfg:
        raise EvaluationError(f"{path}: no `episodes:` node")
    node = cfg.episodes
    for item in overrides:
        if "=" not in item:
            raise EvaluationError(f"override {item!r}: expected key=value")
    try:
        dot = OmegaConf.from_dotlist([f"episodes.{o.removeprefix('episodes.')}" for o in overrides])
        record_origins(dot, "command line", provenance)
        node = OmegaConf.merge(node, dot.episodes) if overrides else node
        data = OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as exc:
        raise EvaluationError(f"{path}: {exc}") from None
    from simulators.settings import _refuse_secrets
    try:
        _refuse_secrets(data, "episodes")
    except ValueError as exc:
        raise EvaluationError(f"{path}: {exc}") from None
    lines = schema_errors({"episodes": data}, episodes_schema_wrapped(), provenance)
    if lines:
        raise EvaluationError(f"invalid episodes config {path}:\n  " + "\n  ".join(lines))
    return data


def episodes_schema_wrapped() -> dict:
    """The schema of a whole config file: errors then name keys as `episodes.in_flight`."""
    schema = episodes_schema()
    defs = schema.pop("$defs")
    return {"$defs": defs, "type": "object", "required": ["episodes"], "properties": {"episodes": schema}}
