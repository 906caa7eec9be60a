"""Label-ratio subsets: which training cases a run at a label ratio may use; training and validation kept apart."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import DataError


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


def refuse_training_cases_in_validation(train: list[dict], val: list[dict], source: Path, train_key: str,
                                        val_key: str) -> None:
    """Raise DataError naming a validation case (of section ``val_key``) whose image(s) a training case (of
    ``train_key``) lists too: the same case in both sections, or one section given for both; its score would
    measure memory, not generalisation."""
    def key(case: dict) -> tuple[str, ...]:
        images = case["image"] if isinstance(case["image"], list) else [case["image"]]
        return tuple(str(Path(i).resolve()) for i in images)

    trained = {key(c) for c in train}
    shared = [c for c in val if key(c) in trained]
    if shared:
        raise DataError(f"dataset json '{source}': {len(shared)} of the {len(val)} validation cases of section "
                        f"'{val_key}' are training cases of section '{train_key}' too (e.g. "
                        f"'{Path(key(shared[0])[0]).name}'); a score on them measures memory, not generalisation: "
                        "list each case in one section only")
