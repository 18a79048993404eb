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
