"""Checks run before a training run writes anything: model config keys, a writable run directory
with room for the checkpoints. Each failure is one line naming the key or the path."""
from __future__ import annotations

import inspect
import shutil
import tempfile
from pathlib import Path

from core.errors import RunDirError, human_size
from core.recipe import RecipeError
from core.stage_config import resolve_init, shared_settings, stage_settings
from core.vocabulary import DTYPES
from pipeline.sharded_export import export_dtype

ADAM_STATE_BYTES = 8  # two fp32 moments per parameter
MARGIN = 1.1


def preflight(recipe: dict, stages: list[str]) -> None:
    check_model_configs(recipe, stages)
    check_embedded_settings(recipe)
    if not stages:
        return
    run_dir = Path(recipe["run"]["dir"])
    check_writable(run_dir)
    if shared_settings(recipe, "run")["check_disk_space"]:
        check_free_space(recipe, stages, run_dir)


def check_embedded_settings(recipe: dict) -> None:
    """Simulator and GenTool settings a data source embeds, checked against their schema
    (simulators/settings_schema.json) with the recipe's key path in the message."""
    from simulators.corpus import corpus_kind
    from simulators.gentool import load_gentool_settings
    from simulators.settings import load_settings
    for i, src in enumerate((recipe.get("data") or {}).get("sources") or []):
        if isinstance(src, dict) and src.get("type") == "simulator":
            settings, where = src.get("settings") or {}, f"data.sources[{i}].settings"
            if corpus_kind(settings) == "world":
                from simulators.world import WorldSettings
                WorldSettings.load(settings)  # its errors name the key (simulator.KEY)
                continue
            load = load_gentool_settings if corpus_kind(settings) == "gentool" else load_settings
            load(settings, where=where)


# ----- model.config ------------------------------------------------------------------------------
def check_model_configs(recipe: dict, stages: list[str] | None = None) -> None:
    """A free-form `model.config` key that is not a setting of the model's config class would be
    written into the export's config.json (a secret there leaks); refuse it by name."""
    for name in stages if stages is not None else list(recipe["stages"]):
        cfg = (stage_settings(recipe, name)["model"] or {}).get("config")
        if not cfg:
            continue
        where = f"stages.{name}.model.config" if (recipe["stages"][name].get("model") or {}).get("config") \
            else "model.config"
        unknown = sorted(set(cfg) - {"model_type"} - config_keys(cfg.get("model_type"), where))
        if unknown:
            raise RecipeError(f"key '{where}.{unknown[0]}': not a setting of the "
                              f"'{cfg.get('model_type')}' model config (it would be written into the "
                              f"export's config.json); remove it"
                              + (f" (also: {', '.join(unknown[1:])})" if unknown[1:] else ""))


def config_keys(model_type, where: str) -> set[str]:
    from transformers import AutoConfig, PretrainedConfig
    try:
        cls = AutoConfig.for_model(model_type).__class__
    except (ValueError, KeyError):
        raise RecipeError(f"key '{where}.model_type': unknown model type {model_type!r}") from None
    keys = set(cls().to_dict()) | set(PretrainedConfig().to_dict()) | set(getattr(cls, "attribute_map", {}))
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            keys |= {p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "kwargs")}
    return keys


# ----- run directory -----------------------------------------------------------------------------
def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check_writable(run_dir: Path) -> None:
    base = _existing_ancestor(run_dir)
    if not base.is_dir():
        raise RunDirError(f"run.dir {run_dir}: {base} is not a directory; choose another run.dir")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as exc:
        raise RunDirError(f"run.dir {run_dir}: cannot write in {base} ({exc.strerror or exc}); "
                          "fix its permissions or choose another run.dir") from None


def parameter_count(recipe: dict, settings: dict) -> int | None:
    """Parameters of the stage's model: built on the meta device from its config, or read from the
    size of a local checkpoint's weight files; None when unknown (a hub id not yet downloaded)."""
    model = settings["model"]
    init = resolve_init(recipe, settings)
    if init and settings["init_from"] and settings["init_from"].startswith("stage:"):
        init = None  # the previous stage's export: same model as that stage's config
        model = stage_settings(recipe, settings["init_from"].split(":", 1)[1])["model"]
    if init:
        files = [p for p in Path(init).glob("*") if p.suffix in (".safetensors", ".bin", ".pt")] \
            if Path(init).is_dir() else []
        return sum(p.stat().st_size for p in files) // 2 or None  # 16-bit weights on disk, roughly
    if not model.get("config"):
        return None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = dict(model["config"])
    vocab = (recipe.get("tokenizer", {}).get("train_bpe") or {}).get("vocab_size")
    if vocab:
        cfg["vocab_size"] = vocab
    with torch.device("meta"):
        built = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
    return sum(p.numel() for p in built.parameters())


def expected_bytes(recipe: dict, name: str) -> int:
    """Checkpoint (weights + optimizer state) twice (last and its previous copy) plus the export."""
    settings = stage_settings(recipe, name)
    params = parameter_count(recipe, settings)
    if not params:
        return 0
    weight = DTYPES[settings["model"]["dtype"]].itemsize
    per_ckpt = params * (weight + (0 if settings["checkpoint"]["save_weights_only"] else ADAM_STATE_BYTES + 4))
    export = params * DTYPES[export_dtype(settings)].itemsize
    return int(MARGIN * (2 * per_ckpt + export))


def check_free_space(recipe: dict, stages: list[str], run_dir: Path) -> None:
    need = sum(expected_bytes(recipe, n) for n in stages)
    base = _existing_ancestor(run_dir)
    free = shutil.disk_usage(base).free
    if need > free:
        raise RunDirError(f"run.dir {run_dir}: {human_size(free)} free on its disk, the checkpoints and exports "
                          f"of {', '.join(stages)} need about {human_size(need)}; free space, choose another "
                          "run.dir, or set run.check_disk_space=false")
