"""Simulator settings: the recipe YAML's `simulator:` node, merged over the default recipe.

A settings mapping may name another recipe as its `base:`; otherwise the repository's
recipes/simulator/toolalpaca.yaml supplies every key it leaves out.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from core.errors import ProjectError

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "simulator" / "toolalpaca.yaml"
# Keys that change how a run goes, not what it produces, are left out of the settings hash
# (the endpoint too: the model name says what answers, wherever it is served).
NOT_HASHED = ("base", "type", "output", "llm.base_url", "llm.api_key_env", "llm.concurrency", "llm.timeout_s",
              "llm.max_retries", "llm.backoff_base_s", "llm.backoff_max_s", "llm.jitter")
SECRET_WORDS = ("api_key", "apikey", "secret", "password", "authorization")


class SettingsError(ProjectError, ValueError):
    """Bad simulator settings; names the key."""


def read_recipe(path: str | Path) -> DictConfig:
    cfg = OmegaConf.load(path)
    return cfg.simulator if "simulator" in cfg else cfg


def load_settings(settings, overrides: list[str] | None = None) -> DictConfig:
    if isinstance(settings, (str, Path)):
        settings = read_recipe(settings)
    cfg = settings if isinstance(settings, DictConfig) else OmegaConf.create(settings)
    if "simulator" in cfg:
        cfg = cfg.simulator
    base = cfg.get("base") or (DEFAULT_RECIPE if DEFAULT_RECIPE.exists() else None)
    if base:
        cfg = OmegaConf.merge(read_recipe(base), cfg)
    if overrides:
        dotlist = [o.removeprefix("simulator.") for o in overrides]
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))
    _refuse_secrets(OmegaConf.to_container(cfg, resolve=True))
    return cfg


def _refuse_secrets(node, where="simulator"):
    if isinstance(node, dict):
        for key, value in node.items():
            lowered = str(key).lower()
            if any(w in lowered for w in SECRET_WORDS) and not lowered.endswith("_env"):
                raise SettingsError(f"{where}.{key}: secrets do not belong in settings; put the key in "
                                 f"the environment variable named by llm.api_key_env")
            _refuse_secrets(value, f"{where}.{key}")


def settings_hash(cfg) -> str:
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    for dotted in NOT_HASHED:
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]
