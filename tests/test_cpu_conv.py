"""3-D convolutions of a batch of one on oneDNN (s2dc.models.cpu_conv): the same function and gradients as the
convolution computed independently, taken exactly where PyTorch computes natively, the fine-tuning network converted."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from s2dc.export import swinunetr_for
from s2dc.models.cpu_conv import (
    BatchOfTwoConv3d,
    batch_of_one_convs_on_onednn,
    takes_native_path,
)
from s2dc.models.encoder_config import EncoderConfig


@pytest.mark.parametrize("shape", [(1, 12, 32, 16, 16), (1, 24, 8, 8, 8), (2, 12, 32, 16, 16), (1, 12, 64, 32, 32)])
def test_output_and_gradients_are_the_convolutions_in_float64(shape):
    """Output, input gradient and weight and bias gradients against the same convolution computed in float64 (the
    reference of an independent computation), for batches that take the two-sample path and batches that do not."""
    torch.manual_seed(0)
    conv = batch_of_one_convs_on_onednn(nn.Conv3d(shape[1], shape[1], 3, padding=1))
    x = torch.randn(shape, requires_grad=True)
    grad_out = torch.randn(shape)
    y = conv(x)
    y.backward(grad_out)
    x64 = x.detach().double().requires_grad_()
    w64 = conv.weight.detach().double().requires_grad_()
    b64 = conv.bias.detach().double().requires_grad_()
    y64 = torch.nn.functional.conv3d(x64, w64, b64, padding=1)
    y64.backward(grad_out.double())
    assert y.shape == shape
    for ours, reference in ((y, y64), (x.grad, x64.grad), (conv.weight.grad, w64.grad), (conv.bias.grad, b64.grad)):
        assert torch.allclose(ours.double(), reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())


def _backend(conv: nn.Conv3d, x: torch.Tensor):
    """The kernel PyTorch picks for ``conv(x)`` (its own dispatch, ``at::native::_select_conv_backend``)."""
    return torch._C._select_conv_backend(x, conv.weight, conv.bias, list(conv.stride), list(conv.padding),
                                         list(conv.dilation), False, [0, 0, 0], conv.groups, None)


@pytest.mark.parametrize("kernel, stride", [(3, 1), (3, 2), (2, 2), (1, 1), (1, 2), (5, 1)])
@pytest.mark.parametrize("shape", [(1, 12, 32, 16, 16), (1, 12, 32, 53, 8), (1, 12, 32, 54, 8), (1, 1, 64, 64, 32),
                                   (1, 24, 64, 64, 32), (2, 12, 32, 16, 16)])
def test_the_two_sample_path_is_taken_exactly_where_pytorch_would_compute_natively(shape, kernel, stride):
    """On one thread (the workflow's jobs): a convolution goes through two samples if and only if PyTorch sends the
    input to its native ``slow_conv3d`` and would send two samples of it to oneDNN (at the bound: 12·32·53 = 20,352,
    12·32·54 = 20,736), and float64 never."""
    conv = nn.Conv3d(shape[1], shape[1], kernel, stride=stride, padding=kernel // 2)
    x = torch.zeros(shape)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        native = _backend(conv, x) == torch._C._ConvBackend.Slow3d
        helped = _backend(conv, torch.cat([x, x])) == torch._C._ConvBackend.Mkldnn
    finally:
        torch.set_num_threads(threads)
    assert takes_native_path(conv, x) == (native and helped and shape[0] == 1)
    assert not takes_native_path(conv.double(), x.double())


def test_the_fine_tuning_network_is_converted_and_its_stages_take_the_path():
    """The quick fine-tuning network (feature size 12) on a batch of one 64×64×32 crop: every plain Conv3d converted,
    the state_dict unchanged, and the 3×3×3 convolutions below full resolution (the encoder's use_v2 blocks, the
    decoder's lower stages) are the ones computed on two samples."""
    sizes = EncoderConfig(feature_size=12, num_heads=(1, 2, 3, 4), window_size=4)
    torch.manual_seed(0)
    model = swinunetr_for(sizes, out_channels=3)
    keys = list(model.state_dict())
    plain = [name for name, m in model.named_modules() if type(m) is nn.Conv3d]
    assert batch_of_one_convs_on_onednn(model) is model
    assert [name for name, m in model.named_modules() if isinstance(m, BatchOfTwoConv3d)] == plain
    assert list(model.state_dict()) == keys
    seen = {}

    def record(name):
        def hook(module, args):  # returns None: the input is left as it is
            seen[name] = takes_native_path(module, args[0])
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules()
             if isinstance(m, BatchOfTwoConv3d)]
    with torch.no_grad():
        model(torch.zeros(1, 1, 64, 64, 32))
    for hook in hooks:
        hook.remove()
    two = {name for name, taken in seen.items() if taken}
    assert {"swinViT.layers1c.0.layer.conv1.conv", "encoder2.layer.conv1.conv", "decoder2.conv_block.conv2.conv",
            "swinViT.patch_embed.proj"} <= two, sorted(two)
    assert not two & {"encoder1.layer.conv2.conv", "decoder1.conv_block.conv1.conv", "decoder2.conv_block.conv1.conv",
                       "out.conv.conv"}, sorted(two)  # 12 channels at 64·64, 24 at 32·32: over the bound; 1×1×1
