"""Label-ratio subsets: which training cases a run at a label ratio may use; training and validation kept apart."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from .datalist import case_files
from .errors import DataError


def round_half_up(x: float | Fraction) -> int:
    return int(math.floor(x + Fraction(1, 2)))


def subset_size(ratio: float, n: int) -> int:
    """``round(ratio * n)`` half up, at least 1, at most ``n``; on the exact product of the ratio as written (0.29 ×
    50 = 14.5 -> 15, where the floating-point product is 14.499999999999998)."""
    return min(n, max(1, round_half_up(Fraction(str(ratio)) * n)))


def choose_subset(cases: list, ratio: float, seed: int, stratify_by: str | None = None) -> list:
    """The first :func:`subset_size` cases of a permutation drawn by ``numpy.random.default_rng(seed)``, in their
    original order; ``stratify_by`` (a key of each case, e.g. ``"class"``): so drawn within each of its values
    in turn (in sorted order), so that every class keeps its share (and at least one case).

    The same ``(cases, ratio, seed)`` always gives the same subset, and for one seed the subsets are
    nested: every case drawn at a ratio is also drawn at any larger ratio.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"label ratio must be in (0, 1], got {ratio}")
    rng = np.random.default_rng(seed)
    groups = [list(range(len(cases)))]
    if stratify_by is not None:
        values = [case[stratify_by] for case in cases]
        groups = [[i for i, v in enumerate(values) if v == value] for value in sorted(set(values))]
    chosen = []
    for group in groups:
        order = rng.permutation(len(group))
        chosen += [group[j] for j in order[: subset_size(ratio, len(group))]]
    return [cases[i] for i in sorted(chosen)]


def refuse_training_cases_in_validation(train: list[dict], val: list[dict], source: Path, train_key: str,
                                        val_key: str) -> None:
    """Raise DataError naming a validation case (of section ``val_key``) whose image(s) a training case (of
    ``train_key``) lists too: the same case in both sections, or one section given for both; its score would
    measure memory, not generalisation."""
    trained = {case_files(c) for c in train}
    shared = [c for c in val if case_files(c) in trained]
    if shared:
        first = shared[0]["image"][0] if isinstance(shared[0]["image"], list) else shared[0]["image"]
        raise DataError(f"dataset json '{source}': {len(shared)} of the {len(val)} validation cases of section "
                        f"'{val_key}' are training cases of section '{train_key}' too (e.g. "
                        f"'{Path(first).name}'; the same files, whatever the path or link that reaches them); a "
                        "score on them measures memory, not generalisation: list each case in one section only")
