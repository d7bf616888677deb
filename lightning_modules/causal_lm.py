"""Building the causal LM a stage trains: from a checkpoint (path or hub id) or from a config."""
from __future__ import annotations

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
