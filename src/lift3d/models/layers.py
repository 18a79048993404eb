"""Layers shared by the 2D networks (E, G and its autoencoder, the translator)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GroupNorm(nn.GroupNorm):
    """`torch.nn.GroupNorm` with a faster CPU training path for bf16 channels-last maps.

    PyTorch's CPU kernel for the backward of GroupNorm on bf16 channels-last activations is
    about 3.5x slower than on the same activations in NCHW (2.13, one core: 0.19 vs 0.055 s for
    a (128, 32, 64, 64) map), and the thin full-resolution blocks of the slice networks run
    channels-last (their convolutions are faster so). When autograd records a bf16
    channels-last map on the CPU, the norm therefore runs on an NCHW copy and hands back a
    channels-last result: the same function, 12 % off the demo's mapper step
    (BENCHMARKS.md, "Training and demo times"). Everywhere else (fp32, inference, GPU) it is
    the stock module. Same parameters and state-dict keys as `torch.nn.GroupNorm`.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (
            x.dim() == 4
            and x.device.type == "cpu"
            and x.dtype == torch.bfloat16
            and torch.is_grad_enabled()
            and x.requires_grad
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            out = super().forward(x.contiguous())
            return out.contiguous(memory_format=torch.channels_last)
        return super().forward(x)


def _fold_axis(w: Tensor, dim: int) -> Tensor:
    """The 3 taps of a 3x3 kernel along `dim` -> the 4 taps of the stride-2 transposed kernel
    that equals them after a nearest x2 upsampling (see `upsample_conv`)."""
    a, b, c = w.unbind(dim)
    return torch.stack([c, b + c, a + b, a], dim=dim)


def upsample_conv(x: Tensor, conv: nn.Conv2d, size: tuple[int, int]) -> Tensor:
    """``conv(F.interpolate(x, size=size, mode="nearest"))`` for a 3x3, padding-1 `conv`.

    When `size` is exactly twice x's (H, W), nearest x2 followed by the 3x3 convolution is the
    same linear map as one 4x4 transposed convolution with stride 2 and padding 1 on `x`
    itself: output row 2i sees rows i - 1 (tap 0) and i (taps 1 + 2), row 2i + 1 rows i (taps
    0 + 1) and i + 1 (tap 2), and likewise along W. That form never materialises the
    upsampled map and does 16 instead of 36 multiply-adds per input pixel: 1.5-2.3x faster
    forward and backward on the CPU for the decoder's 32-64-channel maps (equal to float
    rounding). The kernel is folded from `conv.weight` on every call, so gradients reach the
    same parameters and a state dict is unchanged. Other sizes take the plain two-step path.
    """
    h, w = x.shape[-2:]
    k = conv.weight
    if (
        tuple(size) != (2 * h, 2 * w)
        or k.shape[-2:] != (3, 3)
        or conv.stride != (1, 1)
        or conv.padding != (1, 1)
        or conv.dilation != (1, 1)
        or conv.groups != 1
        or conv.padding_mode != "zeros"
    ):
        return conv(torch.nn.functional.interpolate(x, size=size, mode="nearest"))
    # (C_out, C_in, 3, 3) -> (C_in, C_out, 4, 4); a transposed convolution with stride 2 and
    # padding 1 adds x[i] * kernel[o - 2i + 1] to output row o
    folded = _fold_axis(_fold_axis(k, 2), 3).transpose(0, 1)
    return torch.nn.functional.conv_transpose2d(x, folded, conv.bias, stride=2, padding=1)
