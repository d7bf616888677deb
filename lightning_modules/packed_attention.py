"""Attention kwargs that keep packed examples from attending across their boundaries.

flash attention (flash_attention_2/3, HF transformers 5.x): `_flash_attention_forward` takes
`cu_seq_lens_q/k` and `max_length_q/k` through the model's `**kwargs` and calls the varlen
kernel on the flattened `[B*T]` tokens, so no mask is built. `attention_mask` must be None (a
2-D mask sends it down the unpad path instead). Without these kwargs HF can infer them from
`position_ids`, but only when B == 1 and at the cost of a device sync in every layer.

sdpa_varlen (this module's, registered with HF's AttentionInterface; for CPU and GPUs without
flash-attention): the same `cu_seq_lens_*` kwargs, and torch's sdpa runs causally on each packed
example alone, so attention costs sum(len^2) rather than row^2 (a block-diagonal mask over the row
computes every score of the row and masks most of them away). Unpacked batches fall back to sdpa.

sdpa / eager: a 4-D block-diagonal causal mask `[B, 1, T, T]` is passed as `attention_mask`; HF
uses a 4-D mask as given. sdpa takes bool (True = attend); eager *adds* the mask to the scores, so
it needs an additive float mask (a bool mask there is silently wrong).

Always call the model with `use_cache=False` when training on packed rows: a cache wastes memory
and makes HF 5.x skip its own packed-sequence detection from `position_ids`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

SDPA_VARLEN = "sdpa_varlen"


def is_flash(attn_implementation: str) -> bool:
    # flash_attention_2/3/4 and hub kernels such as "kernels-community/flash-attn2"
    return "flash" in attn_implementation


def is_varlen(attn_implementation: str) -> bool:
    """Implementations that take packed examples as `cu_seq_lens_*` rather than a mask."""
    return is_flash(attn_implementation) or attn_implementation == SDPA_VARLEN


def sdpa_varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                          scaling: float | None = None, cu_seq_lens_q=None, **kwargs):
    """HF attention function: causal sdpa within each example of `cu_seq_lens_q` (offsets into
    the flattened [B*T] tokens). query [B, H, T, D], key/value [B, Hkv, T, D] -> [B, T, H, D]."""
    if cu_seq_lens_q is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    b, h, t, d = query.shape
    flat = lambda x: x.transpose(0, 1).reshape(x.shape[1], b * t, d)  # noqa: E731  [H, B*T, D]
    q, k, v = flat(query), flat(key), flat(value)
    bounds = cu_seq_lens_q.tolist()
    out = torch.cat([F.scaled_dot_product_attention(
        q[:, s:e], k[:, s:e], v[:, s:e], is_causal=True, scale=scaling,
        dropout_p=dropout if module.training else 0.0, enable_gqa=k.shape[0] != h)
        for s, e in zip(bounds[:-1], bounds[1:]) if e > s], dim=1)
    return out.reshape(h, b, t, d).permute(1, 2, 0, 3).contiguous(), None


AttentionInterface.register(SDPA_VARLEN, sdpa_varlen_attention)
AttentionMaskInterface.register(SDPA_VARLEN, sdpa_mask)  # unpacked batches: sdpa's padding mask


def segment_ids(seq_lens: list[list[int]], device=None) -> torch.Tensor:
    """`[B, T]` index of the example each token belongs to (rows must have equal total length)."""
    rows = [torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens))
            for lens in seq_lens]
    if len({len(r) for r in rows}) != 1:
        raise ValueError("every row's seq_lens must sum to the same length")
    return torch.stack(rows).to(device)


def block_causal_mask(seq_lens: list[list[int]], dtype: torch.dtype = torch.bool,
                      device=None) -> torch.Tensor:
    """`[B, 1, T, T]` causal mask that is block-diagonal over the packed examples.

    bool: True where attention is allowed; float: 0 there and the dtype's minimum elsewhere.
    """
    seg = segment_ids(seq_lens, device)
    t = seg.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=seg.device).tril()
    allowed = ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None]
    if dtype == torch.bool:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=seg.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)


def packed_attention_kwargs(batch: dict, attn_implementation: str,
                            mask_dtype: torch.dtype = torch.float32) -> dict:
    """Keyword arguments for a HF decoder forward on a packed batch (from `collate_packed`).

    `mask_dtype` is the model's compute dtype, used for eager's additive mask.
    """
    kwargs = {"position_ids": batch["position_ids"], "use_cache": False}
    if is_varlen(attn_implementation):
        cu = batch["cu_seqlens"]
        max_len = int(batch["max_seqlen"])
        kwargs.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                      max_length_q=max_len, max_length_k=max_len)
    elif attn_implementation == "sdpa":
        kwargs["attention_mask"] = block_causal_mask(batch["seq_lens"], torch.bool,
                                                     batch["input_ids"].device)
    elif attn_implementation == "eager":
        kwargs["attention_mask"] = block_causal_mask(batch["seq_lens"], mask_dtype,
                                                     batch["input_ids"].device)
    else:
        raise ValueError(f"packed batches are not supported with attn_implementation="
                         f"{attn_implementation!r}; use sdpa, eager or a flash-attention one")
    return kwargs
