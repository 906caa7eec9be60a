"""Projection heads: MLP with per-feature BatchNorm (batch statistics, as in the release)."""

from __future__ import annotations

from torch import nn


class ProjectionHead(nn.Sequential):
    """in → hidden → hidden → out MLP: Linear, BatchNorm1d, ReLU twice, then Linear. (R, in) -> (R, out).

    BatchNorm normalises each feature over the R rows (tokens or crops). The release applies it to a
    (144, 3, C) tensor, which normalises over the depth axis instead; like the release, it has no
    affine parameters and always uses batch statistics (no running buffers).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 512) -> None:
        def bn():
            return nn.BatchNorm1d(hidden_dim, affine=False, track_running_stats=False)

        super().__init__(
            nn.Linear(in_dim, hidden_dim), bn(), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim), bn(), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
