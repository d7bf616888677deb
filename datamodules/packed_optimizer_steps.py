"""Packed optimizer steps: a batch sampler and collator that train on packed rows.

Each epoch, the examples are packed with best-fit-decreasing into rows of at most `max_tokens`
tokens (`packing.best_fit_decreasing`, the packer of `packing.pack_examples`), the rows are grouped
into micro-batches of `rows_per_micro_batch` rows of similar length, and the micro-batches into
optimizer steps of `plan.accumulation` micro-batches per rank. The micro-batch list is padded with blanked
copies of real micro-batches (`packing.equalize_rank_batches`) to a multiple of
`accumulation x world_size`, so every rank runs the same number of steps with the same number of
micro-batches each, and every example appears exactly once per epoch across all ranks.

With `examples_per_step` set (the `examples` batch unit, the default), an optimizer step is instead
a fixed number of examples, as without packing: each step's examples (a contiguous slice of the
epoch's shuffled order) are packed into rows, the rows into micro-batches, and the micro-batches are
dealt to the ranks, so the number of micro-batches varies from step to step while the examples per
step (and the number of steps, which the learning-rate schedule counts) do not.

Every rank computes the same plan from the example lengths (no communication); the sampler yields
this rank's share of one step as a list of `PackedKey`s, which `PackedRows` turns into examples and
`PackedStepCollator` into a list of `collate_packed` micro-batches (the module accumulates them).
"""
from __future__ import annotations

import math
import random
from typing import NamedTuple, Sequence

import torch

from core.batch_plan import BatchPlan
from .packing import (best_fit_decreasing, blank_batch, collate_packed, equalize_rank_batches,
                      pack_examples)

from .resumable import ResumableSteps


class Slot(NamedTuple):
    """An example's place in a packed row of the plan; a filler is a blanked copy (zero loss)."""
    index: int
    filler: bool = False


Row = list[Slot]                 # examples packed into one row
MicroBatch = list[Row]           # rows of one forward pass
StepPlan = list[list[MicroBatch]]  # [rank] -> that rank's micro-batches of one optimizer step


class PackedKey(NamedTuple):
    """One example's place in a step: its index, micro-batch and row within the step, filler flag."""
    index: int
    micro: int
    row: int
    filler: bool = False


class PackedStepSampler(ResumableSteps):
    """Batch sampler: yields this rank's `PackedKey`s of one optimizer step at a time.

    `len()` is the number of optimizer steps per epoch, the same on every rank and every epoch.
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, rows_per_micro_batch: int,
                 plan: BatchPlan, rank: int, seed: int, shuffle: bool = True,
                 examples_per_step: int | None = None):
        if not 0 <= rank < plan.world_size:
            raise ValueError(f"rank {rank} is outside world_size {plan.world_size}")
        self.lengths = [int(n) for n in lengths]
        self.max_tokens, self.rows = int(max_tokens), int(rows_per_micro_batch)
        self.accumulate, self.rank, self.world = plan.accumulation, rank, plan.world_size
        self.seed, self.shuffle = seed, shuffle
        if examples_per_step is not None and examples_per_step < 1:
            raise ValueError(f"examples_per_step must be at least 1, got {examples_per_step}")
        self.examples_per_step = examples_per_step
        self.epoch = 0
        # The row count only depends on the multiset of lengths: compute it once.
        self.num_rows = len(best_fit_decreasing(self.lengths, self.max_tokens)) if self.lengths else 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    @property
    def sampler(self):
        # Lightning calls set_epoch on `dataloader.sampler` and `dataloader.batch_sampler.sampler`,
        # never on the batch sampler itself: exposing it here makes each epoch reshuffle.
        return self

    def __len__(self) -> int:
        if self.examples_per_step:
            return math.ceil(len(self.lengths) / self.examples_per_step)
        micro = math.ceil(self.num_rows / self.rows)
        return math.ceil(micro / (self.accumulate * self.world))

    def plan(self, epoch: int | None = None) -> list[StepPlan]:
        """`steps[s][r]`: rank r's micro-batches in step s. Identical on every rank."""
        epoch = self.epoch if epoch is None else epoch
        rng = random.Random(self.seed + epoch)
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)  # different tie-breaks, so different rows, in each epoch
        if self.examples_per_step:
            return [self._step_plan(order[s:s + self.examples_per_step])
                    for s in range(0, len(order), self.examples_per_step)]
        rows = best_fit_decreasing(self.lengths, self.max_tokens, order)
        tokens = lambda row: sum(self.lengths[i] for i in row)  # noqa: E731
        # Rows of similar length share a micro-batch (it is padded to its longest row).
        rows.sort(key=tokens, reverse=True)
        micro = [[[Slot(i) for i in row] for row in rows[j:j + self.rows]]
                 for j in range(0, len(rows), self.rows)]
        if self.shuffle:
            rng.shuffle(micro)
        per_step = self.accumulate * self.world
        micro = equalize_rank_batches(micro, per_step, blank=_blank_plan)
        steps = []
        for s in range(0, len(micro), per_step):
            chunk = sorted(micro[s:s + per_step], key=lambda mb: -sum(tokens([i for i, _ in r]) for r in mb))
            # Dealt round-robin from the heaviest: ranks get similar token counts.
            steps.append([chunk[r::self.world] for r in range(self.world)])
        return steps

    def _step_plan(self, examples: list[int]) -> StepPlan:
        """One step of the `examples` unit: these examples packed, dealt to the ranks."""
        tokens = lambda row: sum(self.lengths[i] for i in row)  # noqa: E731
        rows = sorted(best_fit_decreasing(self.lengths, self.max_tokens, examples), key=tokens,
                      reverse=True)
        micro = [[[Slot(i) for i in row] for row in rows[j:j + self.rows]]
                 for j in range(0, len(rows), self.rows)]
        micro = equalize_rank_batches(micro, self.world, blank=_blank_plan)
        return [micro[r::self.world] for r in range(self.world)]  # heaviest first, round-robin

    def _steps(self):
        for step in self.plan():
            yield [PackedKey(i, m, r, filler)
                   for m, mb in enumerate(step[self.rank])
                   for r, row in enumerate(mb)
                   for i, filler in row]


def _blank_plan(micro_batch: MicroBatch) -> MicroBatch:
    return [[Slot(slot.index, filler=True) for slot in row] for row in micro_batch]


class PackedRows(torch.utils.data.Dataset):
    """Wraps a tokenized split so a `PackedKey` fetches the example with its key attached."""

    FIELDS = ("input_ids", "labels", "span_kinds")

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key: PackedKey) -> dict:
        ex = self.ds[int(key.index)]
        return {**{k: ex[k] for k in self.FIELDS if k in ex}, "key": PackedKey(*key)}

    def __getitems__(self, keys: list) -> list[dict]:
        # One columnar read for the whole step (HF datasets), instead of one per example.
        if not hasattr(self.ds, "column_names"):
            return [self[k] for k in keys]
        cols = [k for k in self.FIELDS if k in self.ds.column_names]
        data = self.ds.select_columns(cols)[[int(k.index) for k in keys]]
        return [{**{c: data[c][j] for c in cols}, "key": PackedKey(*k)} for j, k in enumerate(keys)]


class PackedStepCollator:
    """Examples of one step (with their `PackedKey`s) -> list of `collate_packed` micro-batches.

    Besides `collate_packed`'s keys, each micro-batch has `example_lens`: per row, the lengths of
    its real examples (the padding segment of `seq_lens` excluded), for token and FLOP counts, and
    `num_examples`: its examples that are not fillers.
    """

    def __init__(self, pad_id: int, pad_to: int | None = None):
        self.pad_id, self.pad_to = pad_id, pad_to

    def __call__(self, items: list[dict]) -> list[dict]:
        grouped: dict[int, dict[int, list[dict]]] = {}
        for ex in items:
            key = ex["key"]
            grouped.setdefault(key.micro, {}).setdefault(key.row, []).append(ex)
        batches = []
        for m in sorted(grouped):
            rows = []
            for r in sorted(grouped[m]):
                exs = grouped[m][r]
                (row,) = pack_examples(exs, max_len=sum(len(e["input_ids"]) for e in exs))
                rows.append(blank_batch(row) if exs[0]["key"].filler else row)
            batch = collate_packed(rows, self.pad_id, self.pad_to)
            batch["example_lens"] = [list(r["seq_lens"]) for r in rows]
            batch["num_examples"] = sum(not ex["key"].filler for r in grouped[m].values() for ex in r)
            batches.append(batch)
        return batches
