"""Building the causal LM a stage trains: from a checkpoint (path or hub id) or from a config."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Mapping

import torch
from transformers import AutoConfig, AutoModelForCausalLM

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_causal_lm(init_from: str | None = None, config: Mapping | None = None,
                    dtype: str = "float32", attn_implementation: str | None = None,
                    vocab_size: int | None = None, gradient_checkpointing: bool = False,
                    trust_remote_code: bool = False):
    """`init_from` set: `from_pretrained` of a user's checkpoint or hub id. Otherwise a freshly
    initialised model from `config` (a transformers config as a mapping with `model_type`)."""
    kwargs = {"dtype": DTYPES[dtype]}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if init_from:
        model = AutoModelForCausalLM.from_pretrained(init_from, trust_remote_code=trust_remote_code,
                                                     **kwargs)
    else:
        if not config:
            raise ValueError("model: set either 'init_from' (a checkpoint) or 'config' (a model config)")
        cfg = dict(config)
        if vocab_size is not None:
            cfg["vocab_size"] = vocab_size
        model_config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        model = AutoModelForCausalLM.from_config(model_config, **kwargs)
    if vocab_size is not None and model.get_input_embeddings().num_embeddings < vocab_size:
        model.resize_token_embeddings(vocab_size)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def _zero3_config(strategy) -> dict | None:
    try:
        from lightning.pytorch.strategies import DeepSpeedStrategy
    except ImportError:  # pragma: no cover
        return None
    if isinstance(strategy, DeepSpeedStrategy) and isinstance(strategy.config, dict) and strategy.zero_stage_3:
        return strategy.config
    return None


@contextmanager
def sharded_build_context(strategy=None):
    """Wrap the model construction of `configure_model` so pretrained weights really load under the
    stage's strategy.

    DeepSpeed ZeRO-3: Lightning calls `configure_model` inside `deepspeed.zero.Init`, which
    partitions every parameter as soon as its module is built, so a plain `from_pretrained` would
    copy the checkpoint into empty partitions (and `from_config` would skip the model's own weight
    init). Registering the strategy's DeepSpeed config with transformers (`HfDeepSpeedConfig`, as the
    HF Trainer does) turns on transformers' ZeRO-3 path: `from_pretrained` builds under its own
    (nested) `zero.Init`, rank 0 reads the checkpoint and each module's parameters are gathered,
    filled and re-partitioned (`_load_state_dict_into_zero3_model`); `from_config` re-initialises
    weights gathered module by module; `resize_token_embeddings` gathers too. transformers keeps
    only a weakref, so the object is held for the duration and unregistered afterwards (a later
    stage in the same process, or the rank-0 export, must not see ZeRO-3 as enabled).

    FSDP / DDP / single device: nothing to do; every rank loads the full weights on CPU and the
    strategy shards (FSDP) or replicates (DDP) them when it wraps the model.
    """
    config = _zero3_config(strategy)
    if config is None:
        yield None
        return
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config
    hf_config = HfDeepSpeedConfig(config)
    try:
        yield hf_config
    finally:
        unset_hf_deepspeed_config()
