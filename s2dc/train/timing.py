"""Opt-in wall-clock timing of the phases of a training step (device-synchronised)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch


class PhaseTimer:
    """``with timer("views"): ...`` adds the phase's seconds to ``timer.totals`` when enabled; no-op otherwise."""

    def __init__(self, enabled: bool = False, device: torch.device | None = None) -> None:
        self.enabled, self.device = enabled, device
        self.totals: dict[str, float] = defaultdict(float)

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def __call__(self, name: str):
        if not self.enabled:
            yield
            return
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.totals[name] += time.perf_counter() - start
