"""Exact mid-epoch resumption: the training loader's position goes into the checkpoint.

The DataModule saves the loader's `state_dict()` in every checkpoint and hands it back to the loader it
builds when a run resumes (see ToolUseDataModule.state_dict). The position is the epoch and the number of
optimizer steps the trainer has finished in it (each item of our loaders is one optimizer step),
read from the trainer rather than counted in the sampler: the loop fetches a step ahead, so the
sampler has always handed out one step more than was trained. On resume the sampler skips the
steps already trained, so the run continues with the first step not yet trained, in the same order
(the order depends only on the seed and the epoch).
"""
from __future__ import annotations

from typing import Callable

from torch.utils.data import DataLoader


class ResumableSteps:
    """Mixin for a batch sampler with `epoch` and `_steps()` (an iterator over this epoch's steps)."""

    _resume: tuple[int, int] | None = None

    def resume_from(self, epoch: int, steps_done: int) -> None:
        self._resume = (int(epoch), int(steps_done))

    def __iter__(self):
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip = self._resume[1]
        self._resume = None  # only the first epoch after a resume starts part-way
        for s, step in enumerate(self._steps()):
            if s >= skip:
                yield step


class StepLoader(DataLoader):
    """The training DataLoader; `steps_trained()` says how many steps of the epoch are trained."""

    def __init__(self, *args, steps_trained: Callable[[], int], **kwargs):
        super().__init__(*args, **kwargs)
        self.steps_trained = steps_trained

    def state_dict(self) -> dict:
        return {"epoch": self.batch_sampler.epoch, "steps_done": int(self.steps_trained())}

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.resume_from(state["epoch"], state["steps_done"])
