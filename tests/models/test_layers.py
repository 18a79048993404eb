"""The shared 2D layers compute what the stock modules compute: the CPU-friendly GroupNorm,
nearest upsampling and a 3x3 convolution as one transposed convolution."""

import pytest
import torch
from torch import nn

from lift3d.models.layers import GroupNorm, upsample_conv


def _pair(channels: int = 16, groups: int = 4) -> tuple[nn.GroupNorm, GroupNorm]:
    stock = nn.GroupNorm(groups, channels)
    with torch.no_grad():
        stock.weight.uniform_(0.5, 1.5)
        stock.bias.uniform_(-0.5, 0.5)
    ours = GroupNorm(groups, channels)
    ours.load_state_dict(stock.state_dict())
    return stock, ours


def test_same_state_dict_keys_as_stock():
    stock, ours = _pair()
    assert list(ours.state_dict()) == list(stock.state_dict())


def test_bf16_channels_last_training_path_matches_stock_values_and_gradients():
    torch.manual_seed(0)
    stock, ours = _pair()
    stock, ours = stock.to(torch.bfloat16), ours.to(torch.bfloat16)
    base = torch.randn(3, 16, 12, 10).to(torch.bfloat16)
    grad_out = torch.randn(3, 16, 12, 10).to(torch.bfloat16)
    results = []
    for module in (stock, ours):
        x = base.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        y = module(x)
        y.backward(grad_out.contiguous(memory_format=torch.channels_last))
        results.append((y.float(), x.grad.float(), module.weight.grad.float()))
        module.zero_grad()
    (y0, gx0, gw0), (y1, gx1, gw1) = results
    assert torch.allclose(y0, y1, atol=0.03)
    assert torch.allclose(gx0, gx1, atol=0.05, rtol=0.05)
    assert torch.allclose(gw0, gw1, atol=0.1, rtol=0.05)


def test_training_path_hands_back_channels_last():
    _, ours = _pair()
    ours = ours.to(torch.bfloat16)
    x = torch.randn(2, 16, 8, 8).to(torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = ours(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()


def test_fp32_and_inference_are_the_stock_module_bit_for_bit():
    torch.manual_seed(1)
    stock, ours = _pair()
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    assert torch.equal(stock(x), ours(x))
    with torch.no_grad():
        xb = x.to(torch.bfloat16)
        assert torch.equal(stock.to(torch.bfloat16)(xb), ours.to(torch.bfloat16)(xb))


def _two_step(x, conv, size):
    return conv(torch.nn.functional.interpolate(x, size=size, mode="nearest"))


@pytest.mark.parametrize(
    "shape,size",
    [
        ((3, 5, 4, 6), (8, 12)),
        ((2, 4, 1, 1), (2, 2)),
        ((2, 3, 5, 3), (9, 6)),
        ((1, 2, 3, 3), (4, 3)),
    ],
)
def test_upsample_conv_equals_nearest_upsampling_then_the_convolution(shape, size):
    """Values and gradients (input, weight, bias) as the two-step path, for exact x2 sizes
    (the transposed-convolution form) and others (the plain path)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(shape[1], 7, 3, padding=1)
    x = torch.randn(*shape, requires_grad=True)
    grad_out = torch.randn(shape[0], 7, *size)
    results = []
    for fn in (_two_step, upsample_conv):
        conv.zero_grad()
        x.grad = None
        y = fn(x, conv, size)
        y.backward(grad_out)
        results.append(
            (y.detach(), x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone())
        )
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_upsample_conv_channels_last_and_bf16_autocast():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 4, 3, padding=1)
    x = torch.randn(2, 8, 6, 5).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(upsample_conv(x, conv, (12, 10)), _two_step(x, conv, (12, 10)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, plain = upsample_conv(x, conv, (12, 10)), _two_step(x, conv, (12, 10))
    assert fast.dtype == plain.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), plain.float(), rtol=0.05, atol=0.05)


def test_upsample_conv_takes_the_plain_path_for_other_convolutions():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 4, 4)
    for conv in (
        nn.Conv2d(3, 2, 5, padding=2),
        nn.Conv2d(3, 2, 3, padding=1, padding_mode="reflect"),
    ):
        torch.testing.assert_close(upsample_conv(x, conv, (8, 8)), _two_step(x, conv, (8, 8)))
