"""The CPU-friendly GroupNorm computes what torch.nn.GroupNorm computes."""

import torch
from torch import nn

from lift3d.models.layers import GroupNorm


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
