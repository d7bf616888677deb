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
from core.recipe import record_origins, schema_errors

SCHEMA_PATH = Path(__file__).with_name("settings_schema.json")
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


def load_settings(settings, overrides: list[str] | None = None, where: str = "") -> DictConfig:
    """Settings merged over their base, checked against settings_schema.json ($defs.toolalpaca).
    `where`: the key path of an embedding recipe's node, named in error messages."""
    origin = str(settings) if isinstance(settings, (str, Path)) else (where or "the settings")
    if isinstance(settings, (str, Path)):
        settings = read_recipe(settings)
    cfg = settings if isinstance(settings, DictConfig) else OmegaConf.create(settings)
    if "simulator" in cfg:
        cfg = cfg.simulator
    base = cfg.get("base") or (DEFAULT_RECIPE if DEFAULT_RECIPE.exists() else None)
    layers = [(read_recipe(base), str(base))] if base else []
    layers.append((cfg, origin))
    if overrides:
        layers.append((OmegaConf.from_dotlist([o.removeprefix("simulator.") for o in overrides]), "command line"))
    return merge_checked(layers, "toolalpaca", where)


def merge_checked(layers, kind: str, where: str = "") -> DictConfig:
    """Merge (node, origin) layers in order and check the result against $defs.`kind` of
    settings_schema.json; a bad value stops with its key path and the file that set it."""
    provenance: dict = {}
    for node, origin in layers:
        record_origins(node, origin, provenance)
    cfg = OmegaConf.merge(*[node for node, _ in layers])
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # noqa: BLE001 - a bad interpolation
        raise SettingsError(f"{where or 'simulator'}: cannot resolve the settings: {exc}") from None
    _refuse_secrets(data, where or "simulator")  # before the schema: a key there is named as a secret
    schema = {**json.loads(SCHEMA_PATH.read_text(encoding="utf-8")), "$ref": f"#/$defs/{kind}"}
    lines = schema_errors(data, schema, provenance)
    if lines:
        if where:  # name the key as the embedding recipe spells it
            lines = [line.replace("key '", f"key '{where}.", 1) for line in lines]
        raise SettingsError(f"invalid {kind} settings:\n  " + "\n  ".join(lines))
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
