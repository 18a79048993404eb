"""Per-slice 2D translator F of LiFT paired translation (MR -> CT, missing MR modality).

A 2D U-Net, own implementation (no MONAI dependency), that maps the S source channels of one
slice to one target channel. Each level holds either one plain block of two convolutions
(`ConvBlock`, the small sizes) or a stack of residual blocks (`ResBlock`, ``res_blocks > 0``: the
sizes for real data, wide and deep enough to be trained without vanishing gradients, as in
MONAI's ``UNet(num_res_units=...)`` and ``DynUNet(res_block=True)``). It exposes its stages separately -- `encode` (skips + bottleneck),
`decode_stage` and `head` -- so `lift3d.models.lift.TranslationModel` can run the bidirectional
z-context mixer on the bottleneck (and optionally decoder) features of a whole stack of slices.

Every operation is per slice (2D convolutions, GroupNorm over each sample's own channels), so a
slice's output never depends on which other slices share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lift3d.models.layers import GroupNorm


def _groups(channels: int, max_groups: int = 8) -> int:
    """Largest divisor of `channels` not above `max_groups` (GroupNorm needs exact division)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by GroupNorm and SiLU; a 1x1 shortcut when needed."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            GroupNorm(_groups(out_channels), out_channels),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            GroupNorm(_groups(out_channels), out_channels),
            nn.SiLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)  # (N, C_out, H, W)


class ResBlock(nn.Module):
    """Residual block: two 3x3 convolutions with GroupNorm (up to 32 groups) and SiLU, added to
    the input (a 1x1 projection when the width changes), then SiLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            GroupNorm(_groups(out_channels, 32), out_channels),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            GroupNorm(_groups(out_channels, 32), out_channels),
        )
        self.shortcut = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )
        self.act = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))  # (N, C_out, H, W)


def level_block(in_channels: int, out_channels: int, res_blocks: int) -> nn.Module:
    """One U-Net level's convolutions: a plain `ConvBlock` (``res_blocks == 0``) or
    ``res_blocks`` chained `ResBlock`s."""
    if res_blocks == 0:
        return ConvBlock(in_channels, out_channels)
    widths = [in_channels] + [out_channels] * res_blocks
    return nn.Sequential(*(ResBlock(a, b) for a, b in zip(widths[:-1], widths[1:])))


class SliceUNet(nn.Module):
    """2D U-Net translator F: (N, S, H, W) source slices -> (N, 1, H, W) target slices.

    Args:
        in_channels: number of source channels S.
        out_channels: number of target channels (1 for CT or one MR modality).
        channels: feature width per level, finest first; ``len(channels) - 1`` downsamplings,
            so H and W must be divisible by ``2 ** (len(channels) - 1)`` (`TranslationModel` pads).
        res_blocks: 0 = one plain `ConvBlock` per level; n > 0 = n `ResBlock`s per level
            (encoder, bottleneck and decoder alike).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128),
        res_blocks: int = 0,
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"SliceUNet needs at least 2 levels, got channels={tuple(channels)}")
        if res_blocks < 0:
            raise ValueError(f"res_blocks must be >= 0, got {res_blocks}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = tuple(int(c) for c in channels)
        self.res_blocks = res_blocks
        c = self.channels
        self.down_blocks = nn.ModuleList()
        prev = in_channels
        for width in c[:-1]:
            self.down_blocks.append(level_block(prev, width, res_blocks))
            prev = width
        self.pool = nn.AvgPool2d(2)
        self.bottleneck = level_block(c[-2], c[-1], res_blocks)
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level in range(len(c) - 2, -1, -1):  # coarse to fine
            self.ups.append(nn.ConvTranspose2d(c[level + 1], c[level], 2, stride=2))
            self.up_blocks.append(level_block(2 * c[level], c[level], res_blocks))
        self.out = nn.Conv2d(c[0], out_channels, 1)

    @property
    def multiple(self) -> int:
        """H and W must be multiples of this."""
        return 2 ** (len(self.channels) - 1)

    @property
    def num_decoder_stages(self) -> int:
        return len(self.up_blocks)

    def feature_channels(self) -> list[int]:
        """Channels of the mixable feature points: bottleneck, then each decoder stage output."""
        return [self.channels[-1]] + [
            self.channels[lv] for lv in range(len(self.channels) - 2, -1, -1)
        ]

    def encode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Encoder path.

        Args:
            x: (N, S, H, W) source slices.

        Returns:
            bottleneck (N, C_last, H / 2^L, W / 2^L) and the skip features, finest first.
        """
        skips = []
        h = x
        for block in self.down_blocks:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        return self.bottleneck(h), skips

    def skip_for_stage(self, i: int, skips: list[Tensor]) -> Tensor:
        """The skip feature that decoder stage `i` (0 = coarsest) joins."""
        return skips[len(skips) - 1 - i]

    def decode_stage(self, i: int, h: Tensor, skip: Tensor) -> Tensor:
        """Decoder stage `i` (0 = coarsest): upsample `h`, join `skip`, convolve."""
        h = self.ups[i](h)
        return self.up_blocks[i](torch.cat([h, skip], dim=1))

    def head(self, h: Tensor) -> Tensor:
        """(N, C_0, H, W) finest decoder features -> (N, out_channels, H, W) target in [0, 1] scale."""
        return self.out(h)

    def forward(self, x: Tensor) -> Tensor:
        """Translate slices independently: (N, S, H, W) -> (N, out_channels, H, W)."""
        h, skips = self.encode(x)
        for i in range(self.num_decoder_stages):
            h = self.decode_stage(i, h, self.skip_for_stage(i, skips))
        return self.head(h)
