"""Learning-rate schedules: linear warm-up, then cosine decay to zero (or the peak rate throughout)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def warmup_constant(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based): the same linear warm-up, then 1."""
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


#: ``train.schedule`` of fine-tuning -> its multiplier ``(step, warmup_steps, total_steps) -> float``.
SCHEDULES = {"cosine": warmup_cosine, "constant": warmup_constant}
