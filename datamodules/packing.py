"""Sequence packing (best-fit-decreasing), the packed-row collator and per-rank batch equalisation.

The padded (unpacked) path is `optimizer_steps.pad_batch`.

An example is a dict with `input_ids`, `labels` (aligned with input_ids, IGNORE_INDEX = unsupervised)
and `span_kinds` (indices into core.vocabulary.SPAN_KINDS: 0 none, then thought, action, answer,
ranking). A packed row concatenates whole examples; `position_ids` restart at 0 for each one and
`seq_lens` records the boundaries.
"""
from __future__ import annotations

import bisect
import copy
import random
from typing import Callable, Sequence

import torch

from core.vocabulary import IGNORE_INDEX


def best_fit_decreasing(lengths: Sequence[int], max_len: int,
                        order: Sequence[int] | None = None) -> list[list[int]]:
    """Best-fit-decreasing bins of example indices, from lengths alone.

    Longest first, ties in `order` (default: index order); each example goes into the open bin with
    the least free space that still fits it. The number of bins does not depend on `order`.
    """
    if max_len <= 0:
        raise ValueError(f"max_len must be positive, got {max_len}")
    order = range(len(lengths)) if order is None else order
    too_long = [i for i in order if lengths[i] > max_len]
    if too_long:
        raise ValueError(f"{len(too_long)} example(s) are longer than a packed row of max_tokens={max_len} "
                         f"(e.g. example {too_long[0]} has {lengths[too_long[0]]} tokens); raise "
                         "data.packing.max_tokens to at least data.max_length")
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (free space, bin id)
    for i in sorted(order, key=lambda i: -lengths[i]):  # stable: ties keep `order`
        n = lengths[i]
        if n == 0:
            raise ValueError(f"example {i} is empty")
        pos = bisect.bisect_left(free, (n, -1))
        if pos == len(free):
            bins.append([i])
            space, b = max_len - n, len(bins) - 1
        else:
            space, b = free.pop(pos)
            bins[b].append(i)
            space -= n
        bisect.insort(free, (space, b))
    return bins


def pack_examples(examples: Sequence[dict], max_len: int, seed: int | None = None) -> list[dict]:
    """Whole examples packed into rows of at most `max_len` tokens (`best_fit_decreasing`).

    The label (and span kind) of each example's first token is cleared: nothing before it belongs to
    the same example, so it is never a valid target, and clearing it means a plain left shift of the
    row's labels never asks the last position of one example to predict the first token of the
    next. With `seed`, the row order is shuffled.
    """
    bins = best_fit_decreasing([len(ex["input_ids"]) for ex in examples], max_len)
    rows = [_make_row([examples[i] for i in ids], ids) for ids in bins]
    if seed is not None:
        random.Random(seed).shuffle(rows)
    return rows


def _make_row(examples: list[dict], ids: list[int]) -> dict:
    row = {"input_ids": [], "labels": [], "span_kinds": [], "position_ids": [], "seq_lens": [],
           "example_ids": list(ids)}
    for ex in examples:
        n = len(ex["input_ids"])
        kinds = ex.get("span_kinds")
        labels, kinds = list(ex["labels"]), [0] * n if kinds is None else list(kinds)
        if len(labels) != n or len(kinds) != n:
            raise ValueError("input_ids, labels and span_kinds must have the same length")
        labels[0], kinds[0] = IGNORE_INDEX, 0
        row["input_ids"] += list(ex["input_ids"])
        row["labels"] += labels
        row["span_kinds"] += kinds
        row["position_ids"] += list(range(n))
        row["seq_lens"].append(n)
    return row


def collate_packed(rows: Sequence[dict], pad_id: int, pad_to: int | None = None) -> dict:
    """Stack packed rows into `[B, T]` tensors (T = longest row, or `pad_to`).

    Each row's padding tail is treated as one more (dummy, unsupervised) example with its own
    restarting positions, so `cu_seqlens` tiles every row completely; it is flattened over the
    batch (int32, length = number of segments + 1) as flash-attn's varlen kernels expect for
    `[B*T]` flattened tokens. `seq_lens` is a per-row list including the dummy pad segment.
    """
    width = max(len(r["input_ids"]) for r in rows)
    if pad_to is not None:
        if pad_to < width:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest row ({width})")
        width = pad_to
    out = {k: [] for k in ("input_ids", "labels", "span_kinds", "position_ids")}
    seq_lens = []
    for r in rows:
        pad = width - len(r["input_ids"])
        out["input_ids"].append(list(r["input_ids"]) + [pad_id] * pad)
        out["labels"].append(list(r["labels"]) + [IGNORE_INDEX] * pad)
        out["span_kinds"].append(list(r["span_kinds"]) + [0] * pad)
        out["position_ids"].append(list(r["position_ids"]) + list(range(pad)))
        seq_lens.append(list(r["seq_lens"]) + ([pad] if pad else []))
    batch = {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
    flat = [n for lens in seq_lens for n in lens]
    batch["cu_seqlens"] = torch.tensor([0] + flat, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    batch["max_seqlen"] = max(flat)
    batch["seq_lens"] = seq_lens
    return batch


def blank_batch(batch):
    """A copy of a row, example, collated batch or list of those with no supervised token.

    Used as filler for ranks that run short: same shapes and compute as real data, zero loss weight.
    """
    if isinstance(batch, (list, tuple)):
        return [blank_batch(b) for b in batch]
    out = copy.copy(batch)
    for key, fill in (("labels", IGNORE_INDEX), ("span_kinds", 0)):
        if key not in out:
            continue
        v = out[key]
        out[key] = torch.full_like(v, fill) if torch.is_tensor(v) else [fill] * len(v)
    return out


def equalize_rank_batches(batches: Sequence, world_size: int,
                          blank: Callable = blank_batch) -> list:
    """Pad the batch list to a multiple of `world_size` with blanked copies of real batches.

    Nothing is dropped, and every rank runs the same number of steps (so no rank waits forever in a
    collective); filler batches carry no supervised tokens and contribute zero to the loss sums.
    """
    batches = list(batches)
    if world_size <= 0:
        raise ValueError(f"world_size must be positive, got {world_size}")
    if not batches:
        return batches
    short = -len(batches) % world_size
    return batches + [blank(batches[i % len(batches)]) for i in range(short)]
