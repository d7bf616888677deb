"""Span-masked causal-LM losses: dense and sparse (supervised positions only) per-token
cross-entropy, and per-span-kind sums/counts for step-level normalisation by the training module.

Labels in a batch are aligned with `input_ids` (not pre-shifted): the target at position t+1 is
predicted from logits at position t, so we shift labels left once and index logits as they are.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from core.vocabulary import IGNORE_INDEX, SPAN_KINDS
from lightning_modules.packed_attention import packed_attention_kwargs


class SpanLossSums(NamedTuple):
    """Sums and counts over supervised tokens; divide by a *global* count to normalise a step."""
    loss_sum: torch.Tensor     # scalar, float32, carries the graph
    kind_sums: torch.Tensor    # [num_kinds], float32, carries the graph
    kind_counts: torch.Tensor  # [num_kinds], float32


def shift_labels(labels: torch.Tensor, span_kinds: torch.Tensor,
                 position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift `[..., T]` labels and kinds left by one (end padded with -100 / 0).

    After the shift, position t holds the target for the logits at t. In packed rows this plain
    shift is only correct because the packer sets the label of every example's first token to -100
    (so the last position of one example never targets the next example's first token). Pass the
    packed `position_ids` to check that invariant (costs one device sync).
    """
    if position_ids is not None and bool((labels[position_ids == 0] != IGNORE_INDEX).any()):
        raise ValueError("a packed example's first token is supervised; the packer must set its "
                         "label to -100 so no example predicts the start of the next one")
    end = labels.shape[:-1] + (1,)
    shifted = torch.cat([labels[..., 1:], labels.new_full(end, IGNORE_INDEX)], dim=-1)
    kinds = torch.cat([span_kinds[..., 1:], span_kinds.new_zeros(end)], dim=-1)
    return shifted, kinds


def dense_token_losses(logits: torch.Tensor, shifted_labels: torch.Tensor) -> torch.Tensor:
    """Per-token float32 cross-entropy `[B, T]` from full logits `[B, T, V]`; 0 where ignored."""
    losses = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                             shifted_labels.reshape(-1), ignore_index=IGNORE_INDEX,
                             reduction="none")
    return losses.view(shifted_labels.shape)


def _chunk_losses(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  targets: torch.Tensor) -> torch.Tensor:
    # The matmul runs in the model dtype, as the dense lm_head does; the softmax runs in float32.
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits, targets, reduction="none")


def sparse_span_loss(hidden_states: torch.Tensor, lm_head_weight: torch.Tensor,
                     shifted_labels: torch.Tensor, chunk_size: int,
                     lm_head_bias: torch.Tensor | None = None,
                     recompute: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy at supervised positions only, from final hidden states `[B, T, H]`.

    Gathers the positions whose shifted label is not -100 and projects them onto the vocabulary
    `chunk_size` tokens at a time, so no logits are computed for context tokens. With `recompute`,
    each chunk's logits are recomputed in backward instead of kept (peak memory one chunk x vocab).

    Returns `(losses, indices)`: float32 per-supervised-token losses (1-D) and their indices into
    the flattened `[B*T]` positions. With no supervised token, `losses` is empty but still attached
    to the graph, so `losses.sum()` backpropagates zeros to every input (DDP needs this).
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    flat_labels = shifted_labels.reshape(-1)
    indices = (flat_labels != IGNORE_INDEX).nonzero().squeeze(1)
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1]).index_select(0, indices)
    targets = flat_labels.index_select(0, indices)
    pieces = []
    for start in range(0, max(len(indices), 1), chunk_size):
        args = (hidden[start:start + chunk_size], lm_head_weight, lm_head_bias,
                targets[start:start + chunk_size])
        pieces.append(checkpoint(_chunk_losses, *args, use_reentrant=False) if recompute
                      else _chunk_losses(*args))
    return torch.cat(pieces), indices


def reduce_span_losses(token_losses: torch.Tensor, kinds: torch.Tensor, num_kinds: int = len(SPAN_KINDS),
                       mask: torch.Tensor | None = None) -> SpanLossSums:
    """Sum and count supervised token losses, overall and per span kind.

    For sparse losses pass the kinds gathered at the same indices; for dense `[B, T]` losses pass
    `mask = shifted_labels != -100` so unsupervised positions are not counted.
    """
    if mask is not None:
        token_losses, kinds = token_losses[mask], kinds[mask]
    token_losses = token_losses.reshape(-1).float()
    kinds = kinds.reshape(-1).long()
    kind_sums = token_losses.new_zeros(num_kinds).index_add(0, kinds, token_losses)
    kind_counts = torch.bincount(kinds, minlength=num_kinds).float()
    return SpanLossSums(token_losses.sum(), kind_sums, kind_counts)


def _decoder(model):
    # get_decoder() also works through PEFT wrappers, where `.model` is not the decoder.
    return model.get_decoder() if hasattr(model, "get_decoder") else model.model


def forward_hidden(model, batch: dict) -> torch.Tensor:
    """Final hidden states `[B, T, H]` of a HF causal LM, without computing logits.

    Packed batches (with `cu_seqlens`) get `position_ids` plus the attention kwargs for the
    model's attention implementation; padded batches get `attention_mask` (and `position_ids`).
    """
    decoder = _decoder(model)
    if "cu_seqlens" in batch:
        kwargs = packed_attention_kwargs(batch, model.config._attn_implementation,
                                         mask_dtype=decoder.dtype)
    else:
        kwargs = {k: batch[k] for k in ("attention_mask", "position_ids") if k in batch}
        kwargs["use_cache"] = False
    return decoder(input_ids=batch["input_ids"], **kwargs).last_hidden_state


def lm_head_params(model) -> tuple[torch.Tensor, torch.Tensor | None]:
    head = model.get_output_embeddings()
    return head.weight, getattr(head, "bias", None)


def span_loss_sums(model, batch: dict, chunk_size: int, recompute: bool = False,
                   num_kinds: int = len(SPAN_KINDS)) -> SpanLossSums:
    """forward_hidden -> shift -> sparse_span_loss -> reduce_span_losses for one micro-batch."""
    hidden = forward_hidden(model, batch)
    labels, kinds = shift_labels(batch["labels"], batch["span_kinds"])
    head = model.get_output_embeddings()
    if hasattr(head.weight, "ds_id"):
        # DeepSpeed ZeRO-3: outside lm_head's own forward its weight is an empty partition, and a
        # GatheredParameters block would re-partition it before backward needs it. Call the module
        # instead (supervised positions only) so ZeRO-3's hooks gather the weight for forward and
        # backward and reduce-scatter its gradient. One call per micro-batch, not per chunk: the
        # gather is a collective and every rank must make the same number of calls.
        flat = labels.reshape(-1)
        idx = (flat != IGNORE_INDEX).nonzero().squeeze(1)
        selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, idx)
        losses = F.cross_entropy(head(selected).float(), flat.index_select(0, idx), reduction="none")
    else:
        weight, bias = lm_head_params(model)
        losses, idx = sparse_span_loss(hidden, weight, labels, chunk_size, bias, recompute)
    return reduce_span_losses(losses, kinds.reshape(-1).index_select(0, idx), num_kinds)
