"""Sequence packing, padding collators, length bucketing and per-rank batch equalisation.

An example is a dict with `input_ids`, `labels` (aligned with input_ids, -100 = unsupervised) and
`span_kinds` (0 none, 1 thought, 2 action, 3 answer). A packed row concatenates whole examples;
`position_ids` restart at 0 for each one and `seq_lens` records the boundaries.
"""
from __future__ import annotations

import bisect
import copy
import random
from typing import Callable, Sequence

import torch

from core.vocabulary import IGNORE_INDEX


def pack_examples(examples: Sequence[dict], max_len: int, seed: int | None = None) -> list[dict]:
    """Best-fit-decreasing packing of whole examples into rows of at most `max_len` tokens.

    Longest examples are placed first (ties in input order), each into the open row whose free space
    is smallest but still sufficient. The label (and span kind) of each example's first token is
    cleared: nothing before it belongs to the same example, so it is never a valid target, and
    clearing it means a plain left shift of the row's labels never asks the last position of one
    example to predict the first token of the next. With `seed`, the row order is shuffled.
    """
    if max_len <= 0:
        raise ValueError(f"max_len must be positive, got {max_len}")
    lengths = [len(ex["input_ids"]) for ex in examples]
    for i, n in enumerate(lengths):
        if n > max_len:
            raise ValueError(f"example {i} has {n} tokens, more than max_len={max_len}; "
                             "truncate or split it before packing")
        if n == 0:
            raise ValueError(f"example {i} is empty")

    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (free space, bin id)
    for i in sorted(range(len(examples)), key=lambda i: -lengths[i]):
        pos = bisect.bisect_left(free, (lengths[i], -1))
        if pos == len(free):
            bins.append([i])
            space, b = max_len - lengths[i], len(bins) - 1
        else:
            space, b = free.pop(pos)
            bins[b].append(i)
            space -= lengths[i]
        bisect.insort(free, (space, b))

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


def collate_padded(examples: Sequence[dict], pad_id: int, pad_to_multiple_of: int | None = None,
                   padding_side: str = "right") -> dict:
    """Dynamic padding to the longest example (rounded up to `pad_to_multiple_of`).

    `position_ids` count only real tokens, so left padding gets the same positions as right padding.
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    width = max(len(ex["input_ids"]) for ex in examples)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    out = {k: [] for k in ("input_ids", "attention_mask", "labels", "span_kinds", "position_ids")}
    for ex in examples:
        n = len(ex["input_ids"])
        pad = width - n
        fields = {
            "input_ids": (list(ex["input_ids"]), pad_id),
            "attention_mask": ([1] * n, 0),
            "labels": (list(ex["labels"]), IGNORE_INDEX),
            "span_kinds": ([0] * n if ex.get("span_kinds") is None else list(ex["span_kinds"]), 0),
            "position_ids": (list(range(n)), 0),
        }
        for k, (vals, fill) in fields.items():
            out[k].append(vals + [fill] * pad if padding_side == "right" else [fill] * pad + vals)
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


def length_bucketed_order(lengths: Sequence[int], batch_size: int, seed: int,
                          bucket_batches: int = 50) -> list[list[int]]:
    """Batches of example indices whose lengths are similar, for the padded path.

    Indices are shuffled, cut into buckets of `bucket_batches * batch_size`, sorted by length
    inside each bucket and split into batches; the batch order is then shuffled, so batches are
    length-homogeneous yet the epoch stays random. The last batch may be smaller.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    bucket = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start:start + bucket], key=lambda i: -lengths[i])
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    # Keep a partial batch last so every other batch has `batch_size` items.
    full = [b for b in batches if len(b) == batch_size]
    rest = [i for b in batches if len(b) < batch_size for i in b]
    rng.shuffle(full)
    return full + [rest[j:j + batch_size] for j in range(0, len(rest), batch_size)]


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


def shard_for_rank(items: Sequence, rank: int, world_size: int,
                   blank: Callable = blank_batch) -> list:
    """This rank's strided share of `items` after `equalize_rank_batches`; equal lengths."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    return equalize_rank_batches(items, world_size, blank)[rank::world_size]
