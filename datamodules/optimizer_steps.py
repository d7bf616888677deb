"""Unpacked optimizer steps: the sampler (one optimizer step of example indices per rank,
resumable) and the collator that pads its micro-batches."""
from __future__ import annotations

import math
import random

import torch

from core.batch_plan import BatchPlan
from core.vocabulary import IGNORE_INDEX
from .resumable import ResumableSteps


class StepBatchSampler(ResumableSteps):
    """Yields, for this rank, the example indices of one optimizer step at a time
    (`plan.per_device_step` of them). Every rank gets the same number of steps; a short step is
    filled with -1, which the collator turns into a fully masked (zero-loss) example."""

    def __init__(self, lengths, plan: BatchPlan, rank: int, seed: int, group_by_length: bool, shuffle=True):
        self.lengths, self.plan, self.rank, self.seed = lengths, plan, rank, seed
        self.world = plan.world_size
        self.group_by_length, self.shuffle = group_by_length, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    @property
    def sampler(self):
        # Lightning calls set_epoch on `dataloader.batch_sampler.sampler`, not on the batch sampler.
        return self

    def __len__(self):
        return math.ceil(len(self.lengths) / self.plan.examples_per_step)

    def _steps(self):
        order = list(range(len(self.lengths)))
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(order)
        per_step = self.plan.examples_per_step
        order += [-1] * (len(self) * per_step - len(order))
        for s in range(len(self)):
            chunk = order[s * per_step:(s + 1) * per_step]
            if self.group_by_length:
                # Neighbours in length share a micro-batch: less padding, same examples per step.
                chunk.sort(key=lambda i: self.lengths[i] if i >= 0 else -1, reverse=True)
            yield chunk[self.rank::self.world]


class Rows(torch.utils.data.Dataset):
    """Index -1 is a filler: a copy of row 0 with every label masked."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i] if i >= 0 else {**self.ds[0], "filler": True}


class StepCollator:
    def __init__(self, pad_id: int, micro_batch_size: int):
        self.pad_id, self.micro = pad_id, micro_batch_size

    def __call__(self, rows):
        out = []
        for i in range(0, len(rows), self.micro):
            batch = pad_batch(rows[i:i + self.micro], self.pad_id)
            batch["num_examples"] = sum(not r.get("filler") for r in rows[i:i + self.micro])
            out.append(batch)
        return out


def pad_batch(rows, pad_id: int) -> dict:
    """Right-pad to the longest row; padding has label IGNORE_INDEX and attention 0. A filler row
    (from a short final step) keeps its tokens but has every label masked."""
    width = max(len(r["input_ids"]) for r in rows)
    out = {k: torch.full((len(rows), width), v, dtype=torch.long)
           for k, v in (("input_ids", pad_id), ("labels", IGNORE_INDEX), ("span_kinds", 0), ("attention_mask", 0))}
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        out["input_ids"][i, :n] = torch.tensor(r["input_ids"])
        out["attention_mask"][i, :n] = 1
        if not r.get("filler"):
            out["labels"][i, :n] = torch.tensor(r["labels"])
            out["span_kinds"][i, :n] = torch.tensor(r["span_kinds"])
    return out
