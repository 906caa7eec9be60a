"""Matching scope: the whole 3-D token set (default) or each depth slice on its own (release)."""

from __future__ import annotations

import torch

from .options import SCOPES


def per_slice(q: torch.Tensor, k: torch.Tensor, gt: torch.Tensor, slices: int):
    """Regroup ROI tokens, flattened in (z, x, y) order, into one matching problem per depth slice.

    (B, N, D), (B, N, D), (B, N, N) -> (B·Z, N/Z, D), (B·Z, N/Z, D), (B·Z, N/Z, N/Z); only pairs
    within the same slice are kept.
    """
    b, n, d = q.shape
    per = n // slices
    gt = gt.view(b, slices, per, slices, per).diagonal(dim1=1, dim2=3)  # (B, per, per, Z)
    return (
        q.reshape(b * slices, per, d),
        k.reshape(b * slices, per, d),
        gt.permute(0, 3, 1, 2).reshape(b * slices, per, per),
    )


def scoped(q: torch.Tensor, k: torch.Tensor, gt: torch.Tensor, scope: str, slices: int):
    """Apply the matching scope: identity for ``"volume"``, :func:`per_slice` for ``"slice"``."""
    if scope == "volume":
        return q, k, gt
    if scope == "slice":
        return per_slice(q, k, gt, slices)
    raise ValueError(f"loss.matching must be one of {SCOPES}, got {scope!r}")
