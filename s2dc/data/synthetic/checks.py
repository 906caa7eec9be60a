"""Parameter checks shared by every twin: a bad parameter is a SynthParamError naming it."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...config import MAX_AXIS


class SynthParamError(ValueError):
    """Invalid generator parameter; ``param`` names it (e.g. ``"cases"``)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


#: The most cases a twin holds; more overflowed the progress bar's count with a traceback.
MAX_CASES = 100_000


def check_shape(shape: Any) -> tuple[int, int, int]:
    ok = isinstance(shape, (list, tuple)) and len(shape) == 3 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and 16 <= s <= MAX_AXIS for s in shape
    )
    if not ok:
        raise SynthParamError("shape", f"shape must be 3 integers in 16..{MAX_AXIS} (voxels), got {shape!r}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def check_seed(seed: Any, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SynthParamError(name, f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


# --------------------------------------------------------------------------- datasets
