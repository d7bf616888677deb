"""Building objects from `_target_` nodes of a recipe (a small subset of Hydra's `instantiate`)."""
from __future__ import annotations

import importlib
from typing import Any, Mapping


def locate(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    try:
        obj = importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"_target_ '{path}': cannot import module '{module}': {exc}") from None
    try:
        return getattr(obj, attr)
    except AttributeError:
        raise ImportError(f"_target_ '{path}': module '{module}' has no attribute '{attr}'") from None


def instantiate(node: Mapping, *args, **extra) -> Any:
    """Call `node['_target_']` with the node's other keys (nested `_target_` nodes built first),
    positional `args` and `extra` keyword arguments."""
    node = dict(node)
    target = node.pop("_target_", None)
    if target is None:
        raise ValueError(f"no _target_ in node with keys {sorted(node)}")
    kwargs = {k: _build(v) for k, v in node.items()}
    kwargs.update(extra)
    return locate(target)(*args, **kwargs)


def _build(value):
    if isinstance(value, Mapping):
        return instantiate(value) if "_target_" in value else {k: _build(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_build(v) for v in value]
    return value
