"""3-D convolutions of a batch of one computed by oneDNN on the CPU, as a batch of two.

PyTorch 2.13 computes a float32 3-D convolution of a batch of one on the CPU with its native ``slow_conv3d``
unless N·C·D·H > 20,480 (``ConvParams::use_mkldnn``); the stages of a fine-tuned SwinUNETR below full resolution
take that path (at the quick crop of 64×64×32 and feature size 12: every 3×3×3 convolution of the encoder's
``use_v2`` blocks and of the decoder but the full-resolution ones), about 5× slower per sample than oneDNN with a
batch of two (``bench/bench_cpu_kernels.py``). :class:`BatchOfTwoConv3d` computes such a convolution on the input
and a sample of zeros and keeps the first output: the same function (samples are computed independently, and the
zero sample adds nothing to the gradients: its input is zero and its output's gradient too), with other rounding.
"""

from __future__ import annotations

import torch
from torch import nn

#: PyTorch's bound: a batch of one whose N·C·D·H is at most this goes to the native kernel (``use_mkldnn``).
NATIVE_UP_TO = 20_480


def takes_native_path(conv: nn.Conv3d, x: torch.Tensor) -> bool:
    """Whether PyTorch computes ``conv(x)`` with its native kernel where it would take oneDNN for a batch of two: a
    float32 batch of one ``x`` (N, C, D, H, W) on the CPU with N·C·D·H at most :data:`NATIVE_UP_TO`, one group, a
    kernel not larger than 3×3 in its last two dimensions (those go to oneDNN with one sample), and not a 1×1
    kernel of stride 1 without dilation (which stays native with two samples on one thread: faster there)."""
    kernel = conv.kernel_size[-2:]
    plain_1x1 = kernel == (1, 1) and all(s == 1 for s in conv.stride) and all(d == 1 for d in conv.dilation)
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 5 and x.shape[0] == 1
            and x.shape[1] * x.shape[2] * x.shape[3] <= NATIVE_UP_TO
            and conv.groups == 1 and not (kernel[0] > 3 and kernel[1] > 3) and not plain_1x1
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


class BatchOfTwoConv3d(nn.Conv3d):
    """``nn.Conv3d`` that computes a batch of one PyTorch would send to its native kernel as a batch of two (the
    input and zeros) on oneDNN, and returns the first sample's output; other inputs as ``nn.Conv3d``."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if takes_native_path(self, x):
            return super()._conv_forward(torch.cat([x, torch.zeros_like(x)]), weight, bias)[:1]
        return super()._conv_forward(x, weight, bias)


def batch_of_one_convs_on_onednn(model: nn.Module) -> nn.Module:
    """Turn every ``nn.Conv3d`` of ``model`` (not its subclasses) into a :class:`BatchOfTwoConv3d`, in place: the
    same parameters, state_dict keys and function. Returns ``model``."""
    for module in model.modules():
        if type(module) is nn.Conv3d:
            module.__class__ = BatchOfTwoConv3d
    return model
