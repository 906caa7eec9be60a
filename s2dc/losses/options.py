"""The loss options and the names they accept (no torch import: the workflow checks parameters with them at start)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import config as cfgtools

SCOPES = ("volume", "slice")
ASSIGNMENTS = ("dual_softmax", "sinkhorn")
P2P_FORMS = ("positive", "positive_negative")
P2S_FORMS = ("release", "poster")
SPREADS = ("std", "variance")


@dataclass(frozen=True)
class LossConfig:
    weight_global: float = 0.5
    weight_p2p: float = 0.5
    weight_p2s: float = 0.5
    matching: str = "volume"
    assignment: str = "dual_softmax"
    p2p_form: str = "positive_negative"
    match_temperature: float = 1.0
    bin_score: float = 1.0
    sinkhorn_iters: int = 100
    p2s_form: str = "release"
    p2s_spread: str = "std"
    detach_weights: bool = False
    global_temperature: float = 0.9
    global_normalize: bool = True
    queue_size: int = 90

    def __post_init__(self) -> None:
        for name, allowed in [
            ("matching", SCOPES), ("assignment", ASSIGNMENTS), ("p2p_form", P2P_FORMS),
            ("p2s_form", P2S_FORMS), ("p2s_spread", SPREADS),
        ]:
            if getattr(self, name) not in allowed:
                raise ValueError(f"loss.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        for name in ("weight_global", "weight_p2p", "weight_p2s"):
            value = getattr(self, name)
            cfgtools.check(0 <= value < math.inf, f"loss.{name}", "a finite number >= 0", value)
        if self.weight_global + self.weight_p2p + self.weight_p2s == 0:
            raise ValueError("loss weights are all zero: nothing to train")
        for name in ("match_temperature", "global_temperature"):
            value = getattr(self, name)
            cfgtools.check(0 < value < math.inf, f"loss.{name}", "a finite number > 0", value)
        cfgtools.check(math.isfinite(self.bin_score), "loss.bin_score", "a finite number", self.bin_score)
        cfgtools.check(self.sinkhorn_iters >= 1, "loss.sinkhorn_iters", ">= 1", self.sinkhorn_iters)
        cfgtools.check(self.queue_size >= 0, "loss.queue_size", ">= 0", self.queue_size)
