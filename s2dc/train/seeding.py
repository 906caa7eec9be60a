"""Random draws as a function of ``(seed, step, rank, stream)``: a run resumed at any step draws what the
uninterrupted run drew, however many loader processes make the batches."""

from __future__ import annotations

import numpy as np
import torch


def step_seed(seed: int, step: int, rank: int, stream: int = 0) -> int:
    """A 63-bit seed for the random draws of one step on one rank (``stream`` separates uses)."""
    state = np.random.SeedSequence([seed, step, rank, stream]).generate_state(2, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def step_generator(seed: int, step: int, rank: int, stream: int = 0) -> torch.Generator:
    """CPU generator seeded with :func:`step_seed`."""
    return torch.Generator().manual_seed(step_seed(seed, step, rank, stream))
