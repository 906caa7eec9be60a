"""FIFO queue of past global keys, identical on every rank under DDP for any world size."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def gather_from_all_ranks(keys: torch.Tensor) -> torch.Tensor:
    """Concatenate (B, D) keys of every rank in rank order -> (world·B, D); identity without DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return keys
    parts = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, keys.contiguous())
    return torch.cat(parts)


class KeyQueue(nn.Module):
    """Fixed-size FIFO of (size, dim) keys. Slots ``[0, count)`` are valid; the oldest key is overwritten first.

    Every rank pushes the keys of all ranks (gathered in rank order), so the queues stay identical.
    Any number of keys per push works (no divisibility assumption); a push larger than the queue
    keeps its newest ``size`` keys. State (keys, ptr, count) is in buffers, hence in checkpoints.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 0:
            raise ValueError(f"loss.queue_size must be >= 0, got {size}")
        self.size = size
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def negatives(self) -> torch.Tensor:
        """Valid keys (count, dim)."""
        return self.keys[: int(self.count)]

    @torch.no_grad()
    def push(self, keys: torch.Tensor, gather: bool = True) -> None:
        """Enqueue (B, dim) keys (from all ranks when ``gather``)."""
        if self.size == 0:
            return
        keys = (gather_from_all_ranks(keys) if gather else keys).detach().to(self.keys.dtype)
        n = keys.shape[0]
        if n > self.size:
            self.ptr.add_(n - self.size).remainder_(self.size)
            keys, n = keys[-self.size :], self.size
        slots = (self.ptr + torch.arange(n, device=self.keys.device)) % self.size
        self.keys[slots] = keys
        self.ptr.add_(n).remainder_(self.size)
        self.count.copy_(torch.clamp(self.count + n, max=self.size))
