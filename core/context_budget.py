"""The context budget of training rows and inference prompts alike (datamodules/step_context.py)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContextBudget:
    max_length: int  # tokens of a training row: a prompt plus its generation
    reserve: int     # the room a prompt leaves for what the model writes (data.context_reserve)

    def __post_init__(self):
        if not 0 < self.reserve < self.max_length // 2:
            raise ValueError(f"data.context_reserve={self.reserve} must be positive and less than "
                             f"half of data.max_length={self.max_length}")

    @classmethod
    def of(cls, max_length: int, reserve: int | None = None) -> ContextBudget:
        """The budget of `data.max_length` and `data.context_reserve` (None: a quarter of the length)."""
        return cls(max_length, max_length // 4 if reserve is None else reserve)
