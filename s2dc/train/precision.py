"""Mixed precision: one place that turns an ``amp`` option into an autocast context."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch


def precision_for(device: torch.device, amp: str, key: str) -> str:
    """The precision the forward passes compute in, ``"bf16"`` or ``"fp32"``.

    ``amp``: ``"auto"`` (bf16 on CUDA, fp32 elsewhere), ``"bf16"`` or ``"off"``; ``key`` names the
    option in errors. bf16 on the CPU is refused: PyTorch's oneDNN bf16 ``conv3d`` returns wrong,
    run-to-run different weight gradients when a feature map has 1-2 voxels per axis (seen with
    torch 2.13.0 on an AVX512-bf16 CPU: relative error 2 to inf, then NaN losses within a few steps),
    which is exactly SwinUNETR's last stage at small ROIs.
    """
    if amp not in ("auto", "bf16", "off"):
        raise ValueError(f"{key} must be 'auto', 'bf16' or 'off', got {amp!r}")
    if amp == "bf16" and device.type == "cpu":
        raise ValueError(f"{key}=bf16 is not supported on the CPU (PyTorch's oneDNN bf16 conv3d gives wrong "
                         "weight gradients for small feature maps); use 'auto' or 'off' there")
    return "bf16" if amp == "bf16" or (amp == "auto" and device.type == "cuda") else "fp32"


def autocast_for(device: torch.device, amp: str, key: str) -> Callable[[], ContextManager]:
    """Context factory for the forward passes: bf16 autocast or nothing (:func:`precision_for`)."""
    if precision_for(device, amp, key) == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext
