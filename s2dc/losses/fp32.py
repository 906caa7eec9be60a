"""Losses run in fp32 (or fp64) whatever the caller's precision."""

from __future__ import annotations

import functools

import torch


def in_fp32(loss):
    """Decorator: cast fp16/bf16 tensor arguments to fp32 (fp64 stays) and turn autocast off inside ``loss``.

    In fp16/bf16 the release form's clamp at 1 − 1e-6 rounds to 1, so −log(1 − M̂) is Inf; the
    training path casts before calling, and with this the public functions do too.
    """

    @functools.wraps(loss)
    def wrapper(*args, **kwargs):
        def up(x):
            return x.float() if torch.is_tensor(x) and x.is_floating_point() and x.element_size() < 4 else x

        args, kwargs = [up(a) for a in args], {k: up(v) for k, v in kwargs.items()}
        device = next((x.device.type for x in [*args, *kwargs.values()] if torch.is_tensor(x)), "cpu")
        with torch.autocast(device_type=device, enabled=False):
            return loss(*args, **kwargs)

    return wrapper
