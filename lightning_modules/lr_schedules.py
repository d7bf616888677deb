"""Learning-rate schedules, as LambdaLR multipliers."""
from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR


def cosine_with_warmup(optimizer, total_steps: int, warmup_ratio: float = 0.0,
                       min_lr_ratio: float = 0.0) -> LambdaLR:
    """Linear warm-up over `warmup_ratio` of the steps, then cosine decay to `min_lr_ratio`."""
    warmup = int(math.ceil(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, factor)

