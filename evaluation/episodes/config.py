"""An episodes config (recipes/eval/*.yaml): the `episodes:` node over the file its `defaults:`
names, with `key=value` overrides."""
from __future__ import annotations

from pathlib import Path

from .. import EvaluationError


def load_episodes_config(path, overrides=()) -> dict:
    """The `episodes:` node of an episodes config, over the file its `defaults:` names (relative
    to it), with `key=value` overrides relative to `episodes`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    def read(p: Path, seen=()):
        if p in seen:
            raise EvaluationError(f"{p}: `defaults` chain loops")
        try:
            cfg = OmegaConf.load(p)
        except (OSError, OmegaConfBaseException, ValueError) as exc:
            raise EvaluationError(f"{p}: cannot read the episodes config: {exc}") from None
        base = cfg.pop("defaults", None) if "defaults" in cfg else None
        if base:
            cfg = OmegaConf.merge(read(p.parent / str(base), seen + (p,)), cfg)
        return cfg

    cfg = read(Path(path))
    if "episodes" not in cfg:
        raise EvaluationError(f"{path}: no `episodes:` node")
    node = cfg.episodes
    for item in overrides:
        if "=" not in item:
            raise EvaluationError(f"override {item!r}: expected key=value")
    try:
        node = OmegaConf.merge(node, OmegaConf.from_dotlist([o.removeprefix("episodes.")
                                                             for o in overrides]))
        data = OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as exc:
        raise EvaluationError(f"{path}: {exc}") from None
    for key in ("test_set", "max_steps", "in_flight", "executor", "judge"):
        if key not in data:
            raise EvaluationError(f"{path}: episodes.{key} is missing")
    from simulators.settings import _refuse_secrets
    try:
        _refuse_secrets(data, "episodes")
    except ValueError as exc:
        raise EvaluationError(f"{path}: {exc}") from None
    return data
