"""Building the causal LM a stage trains: from a checkpoint (path or hub id) or from a config."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Mapping

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from core.vocabulary import DTYPES
from . import packed_attention  # noqa: F401  registers attn_implementation "sdpa_varlen"



def build_causal_lm(init_from: str | None = None, config: Mapping | None = None,
                    dtype: str = "float32", attn_implementation: str | None = None,
                    vocab_size: int | None = None, gradient_checkpointing: bool = False,
                    trust_remote_code: bool = False, special_token_ids: Mapping | None = None,
                    adapter=None, quantization=None):
    """`init_from` set: `from_pretrained` of a user's checkpoint or hub id. Otherwise a freshly
    initialised model from `config` (a transformers config as a mapping with `model_type`).
    `special_token_ids` ({bos,eos,pad}_token_id of the tokenizer) are written into the model's
    config and generation config, so an export generates and stops like the training data.
    `adapter` (a peft config, e.g. `peft.LoraConfig`): only the adapter trains, on the frozen
    weights of `init_from`. `quantization` (a `transformers.BitsAndBytesConfig`: QLoRA) loads
    those weights quantized; it needs an adapter and a GPU."""
    kwargs = {"dtype": DTYPES[dtype]}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if adapter is not None and not init_from:
        raise ValueError("model.adapter: an adapter needs weights to adapt; give the stage an "
                         "init_from (another stage's export or a checkpoint), or set model.adapter=null")
    if quantization is not None:
        if adapter is None:
            raise ValueError("model.quantization: a quantized model trains only through an adapter; "
                             "add recipes/adapter/lora.yaml (model.adapter)")
        kwargs["quantization_config"] = quantization
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
    resized = vocab_size is not None and model.get_input_embeddings().num_embeddings < vocab_size
    if resized:
        model.resize_token_embeddings(vocab_size)
    for key, value in (special_token_ids or {}).items():
        if value is not None:
            setattr(model.config, key, value)
            if model.generation_config is not None:
                setattr(model.generation_config, key, value)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if adapter is not None:
        model = with_adapter(model, adapter, quantization is not None, resized, gradient_checkpointing)
    return model


def import_model_classes(init_from: str | None = None, config: Mapping | None = None,
                         trust_remote_code: bool = False, **_) -> None:
    """Import the modeling module of the model `build_causal_lm` will build. Call it before
    DeepSpeed's `zero.Init`: a class first defined inside it gets its `__init__` restored on exit to
    the one from before its decorators (transformers' hub-kernel `__init__`), and its modules then
    fail on their first forward ('LlamaAttention' object has no attribute '_kernel_funcs')."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
    if init_from:
        cfg = AutoConfig.from_pretrained(init_from, trust_remote_code=trust_remote_code)
    elif config:
        node = dict(config)
        cfg = AutoConfig.for_model(node.pop("model_type"), **node)
    else:
        return
    if type(cfg) in MODEL_FOR_CAUSAL_LM_MAPPING:  # remote code defines its classes itself
        MODEL_FOR_CAUSAL_LM_MAPPING[type(cfg)]


def with_adapter(model, adapter, quantized: bool, resized: bool, recomputed: bool):
    """`model` wrapped by peft with a fresh adapter; every other weight frozen."""
    import peft
    if resized and not adapter.modules_to_save:
        raise ValueError("model.adapter: the tokenizer has more tokens than the checkpoint's "
                         "embeddings, which an adapter alone cannot train; add "
                         "model.adapter.modules_to_save=[embed_tokens,lm_head]")
    if quantized:
        model = peft.prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=recomputed)
    elif recomputed:
        model.enable_input_require_grads()  # frozen embeddings: recomputed blocks still need grads
    model = peft.get_peft_model(model, adapter)
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
    if is_deepspeed_zero3_enabled():
        _init_adapter_under_zero3(model)
    return model


def _init_adapter_under_zero3(model) -> None:
    """Under deepspeed.zero.Init each new LoRA weight is partitioned as it is built, so peft's
    initialisation (B = 0: the adapter starts as the identity) touched empty partitions. Redo it on
    the gathered weights; rank 0's values are kept."""
    import deepspeed
    from peft.tuners.lora import LoraLayer
    for module in model.modules():
        if isinstance(module, LoraLayer):
            params = [p for n, p in module.named_parameters() if "lora_" in n]
            with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
                for name in list(module.lora_A):
                    module.reset_lora_parameters(name, True)


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


def register_zero_micro_step_hook(model, strategy) -> None:
    """DeepSpeed ZeRO: make each micro-batch a DeepSpeed micro-step.

    The module accumulates several micro-batches inside one training_step, i.e. inside ONE call of
    DeepSpeedEngine.forward, but ZeRO counts micro-steps at the start of each engine forward
    (`optimizer.clear_backward_seen_flag()`): without this ZeRO-3 overwrites instead of
    accumulating each micro-batch's gradient partition, so only the last micro-batch of a step
    counts (measured on CPU: 1 rank x 2 micro-batches diverged from 1 rank x 1 micro-batch of twice
    the size; with the hook they match to the last digit). A forward pre-hook on the decoder (called
    once per micro-batch by forward_hidden) does what the engine forward does; for ZeRO-1/2 that is
    the same per-forward bookkeeping (no change measured). Idempotent for the first micro-batch; a
    no-op without gradients (validation) and for other strategies.
    """
    try:
        from lightning.pytorch.strategies import DeepSpeedStrategy
    except ImportError:  # pragma: no cover
        return
    if not isinstance(strategy, DeepSpeedStrategy) or getattr(model, "_zero_micro_step_hook", False):
        return

    def pre_forward(_module, _args):
        if not torch.is_grad_enabled():
            return
        optimizer = getattr(getattr(strategy, "model", None), "optimizer", None)
        if optimizer is not None and hasattr(optimizer, "clear_backward_seen_flag"):
            optimizer.clear_backward_seen_flag()

    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    decoder.register_forward_pre_hook(pre_forward)
    model._zero_micro_step_hook = True
