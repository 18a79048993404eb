"""Slice feature encoder E for the drifting loss (LiFT, arXiv 2605.19060; METHOD.md "Components").

No pretrained weights can be downloaded at run time, so the default encoder is a small 2D
convolutional autoencoder trained self-supervised on the dataset's own slices and then frozen:
either a *denoising* autoencoder (reconstruct the clean slice from a noisy one) or a *masked*
autoencoder (reconstruct the slice from one with random patches hidden). The generation model's
E is a denoising one; the evaluation encoder (`lift3d.evaluation.encoder`) is the same class
trained as a masked one with another seed, so the loss and the metric never share a feature
space.

Interface (any local pretrained encoder fits it, see `TorchScriptEncoder`):
``features(x) -> list[(N, C_s, H_s, W_s)]`` multi-scale maps and ``embed(x) -> (N, feat_dim)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lift3d.errors import InputError
from lift3d.models.layers import GroupNorm

OBJECTIVES = ("denoise", "masked")


def group_norm(ch: int) -> GroupNorm:
    """GroupNorm with up to 8 groups (the small 2D networks of E and G's autoencoder)."""
    return GroupNorm(min(8, ch), ch)


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=2, padding=1),
            group_norm(cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
            group_norm(cout),
            nn.SiLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class SliceEncoder(nn.Module):
    """Small multi-scale 2D encoder with a light decoder for its self-supervised objective.

    Args:
        in_channels: slice channels C.
        widths: channels of the scales 1/2, 1/4, 1/8 ...
        pool: spatial grid each scale is average-pooled to in `embed` (2 -> 2x2 cells).
        objective: ``"denoise"`` or ``"masked"``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64),
        pool: int = 2,
        objective: str = "denoise",
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.in_channels = in_channels
        self.widths = tuple(int(w) for w in widths)
        self.pool = pool
        self.objective = objective
        chans = (in_channels, *self.widths)
        self.downs = nn.ModuleList(_Down(a, b) for a, b in zip(chans[:-1], chans[1:]))
        ups = []
        for a, b in zip(reversed(chans[2:]), reversed(chans[1:-1])):
            ups.append(nn.Sequential(nn.Conv2d(a + b, b, 3, padding=1), group_norm(b), nn.SiLU()))
        self.ups = nn.ModuleList(ups)
        self.head = nn.Conv2d(self.widths[0], in_channels, 3, padding=1)

    @property
    def feat_dim(self) -> int:
        return sum(self.widths) * self.pool * self.pool

    def features(self, x: Tensor) -> list[Tensor]:
        """Multi-scale feature maps.

        Args:
            x: (N, C, H, W) slices in [0, 1]; any H, W >= 2**len(widths).

        Returns:
            list of (N, widths[s], ~H / 2**(s+1), ~W / 2**(s+1)).
        """
        feats = []
        h = x
        for down in self.downs:
            h = down(h)
            feats.append(h)
        return feats

    def embed(self, x: Tensor) -> Tensor:
        """One descriptor per slice: every scale average-pooled to ``pool x pool`` cells.

        Args:
            x: (N, C, H, W).

        Returns:
            (N, feat_dim).
        """
        pooled = [F.adaptive_avg_pool2d(f, self.pool).flatten(1) for f in self.features(x)]
        return torch.cat(pooled, dim=1)

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the multi-scale features back to a slice (U-Net style skips), (N, C, H, W)."""
        feats = self.features(x)
        h = feats[-1]
        for up, skip in zip(self.ups, reversed(feats[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = up(torch.cat([h, skip], dim=1))
        h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(h)

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The objective's corruption: Gaussian noise (sigma 0.2) or 50% of 4x4 patches hidden."""
        if self.objective == "denoise":
            noise = torch.randn(x.shape, generator=generator, device="cpu").to(x)
            return x + 0.2 * noise
        n, _, h, w = x.shape
        grid = (max(1, h // 4), max(1, w // 4))
        keep = torch.rand((n, 1, *grid), generator=generator, device="cpu").to(x) > 0.5
        keep = F.interpolate(keep.float(), size=(h, w), mode="nearest")
        return x * keep

    def pretext_loss(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Self-supervised loss: MSE between the clean slice and the reconstruction of its
        corrupted copy. x: (N, C, H, W)."""
        return F.mse_loss(self.reconstruct(self.corrupt(x, generator)), x)


class TorchScriptEncoder(nn.Module):
    """Plug-in for a local pretrained encoder saved with ``torch.jit.save``.

    The scripted module maps (N, C, H, W) slices to either (N, F) vectors or (N, F, h, w) maps
    (average-pooled to vectors). It is frozen.

    Args:
        path: the ``.pt`` TorchScript file.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise InputError("encoder file not found", path)
        try:
            self.module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise InputError(f"not a TorchScript encoder ({exc})", path) from None
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.path = path

    def features(self, x: Tensor) -> list[Tensor]:
        out = self.module(x)
        return [out if out.dim() == 4 else out[:, :, None, None]]

    def embed(self, x: Tensor) -> Tensor:
        out = self.module(x)
        return out.flatten(2).mean(-1) if out.dim() == 4 else out
