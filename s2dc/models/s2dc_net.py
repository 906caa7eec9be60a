"""Student network: Swin encoder + token head + global head; the teacher is its EMA copy."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..views import crop_tokens_to_roi
from .encoder import EncoderConfig, build_encoder
from .heads import ProjectionHead


class S2DCNet(nn.Module):
    """Encoder (``encoder.*`` keys, SwinUNETR-compatible) with a token head and a global head."""

    def __init__(self, cfg: EncoderConfig, hidden_dim: int = 2048, embed_dim: int = 512) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg)
        self.token_head = ProjectionHead(cfg.token_dim, hidden_dim, embed_dim)
        self.global_head = ProjectionHead(cfg.global_dim, hidden_dim, embed_dim)

    def forward(self, crops: torch.Tensor, grid: int, tokens: bool = True, pooled: bool = True):
        """Embed sub-crops.

        Parameters
        ----------
        crops : (B·P², C, cx, cy, cz).
        grid : P, to reassemble crop tokens into ROI tokens.

        Returns
        -------
        tokens : (B, N, E) L2-normalised ROI token embeddings in (z, x, y) order, or None.
        pooled : (B·P², E) global embeddings (not normalised), or None.
        """
        states = self.encoder(crops, normalize=True)
        token_emb = global_emb = None
        if tokens:
            roi_tokens = crop_tokens_to_roi(states[self.cfg.token_stage], grid)  # (B, N, C)
            b, n, c = roi_tokens.shape
            token_emb = F.normalize(self.token_head(roi_tokens.reshape(b * n, c)), dim=-1).view(b, n, -1)
        if pooled:
            global_emb = self.global_head(states[-1].mean(dim=(2, 3, 4)))
        return token_emb, global_emb


def momentum_at(step: int, total_steps: int, base: float, schedule: str) -> float:
    """EMA momentum: ``"constant"`` (release) or ``"cosine"`` from ``base`` to 1 over training."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return 1 - (1 - base) * (math.cos(math.pi * min(step, total_steps) / total_steps) + 1) / 2
    raise ValueError(f"ema.schedule must be 'constant' or 'cosine', got {schedule!r}")


class EMATeacher(nn.Module):
    """Frozen copy of the student, updated as θ_t ← m·θ_t + (1 − m)·θ_s (buffers copied)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.net = copy.deepcopy(student)
        self.net.requires_grad_(False)

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.net(*args, **kwargs)

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        teacher_params = list(self.net.parameters())
        student_params = [p.detach() for p in student.parameters()]
        torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)
        for t, s in zip(self.net.buffers(), student.buffers()):
            t.copy_(s)
