"""Label-ratio subsets: which training cases a run at a label ratio may use."""

from __future__ import annotations

import math

import numpy as np


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def choose_subset(cases: list, ratio: float, seed: int) -> list:
    """The first ``round(ratio * n)`` (>= 1) cases of a permutation drawn by ``numpy.random.default_rng(seed)``,
    in their original order.

    The same ``(cases, ratio, seed)`` always gives the same subset, and for one seed the subsets are
    nested: every case drawn at a ratio is also drawn at any larger ratio.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"label ratio must be in (0, 1], got {ratio}")
    n = len(cases)
    k = min(n, max(1, round_half_up(ratio * n)))
    order = np.random.default_rng(seed).permutation(n)
    return [cases[i] for i in sorted(order[:k].tolist())]
