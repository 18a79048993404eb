"""One-step 2D slice generator G(w, s) (LiFT, arXiv 2605.19060; METHOD.md "Components").

G maps a latent code ``w`` and a normalised depth ``s in [0, 1]`` to one slice in one forward
pass. The default is a small convolutional generator (a constant-free StyleGAN-like stack:
the code and a depth embedding set the first feature map and modulate every block) trained with
the drifting objective in the encoder's feature space. Any one-step differentiable generator with
a latent input fits the interface ``generate(noise, cond) -> (N, C, H, W)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def depth_embedding(s: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of normalised depth.

    Args:
        s: (N,) depths in [0, 1].
        dim: even embedding size.

    Returns:
        (N, dim).
    """
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, device=s.device, dtype=torch.float32)
        * (math.log(64.0) / max(half - 1, 1))
    )
    angles = s.float()[:, None] * freqs[None] * math.pi
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _ModBlock(nn.Module):
    """Upsample x2, conv, norm, FiLM from the style vector, SiLU."""

    def __init__(self, cin: int, cout: int, style_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm = nn.GroupNorm(min(8, cout), cout, affine=False)
        self.film = nn.Linear(style_dim, 2 * cout)
        # FiLM starts as identity (scale 1, shift 0).
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: Tensor, style: Tensor, size: tuple[int, int]) -> Tensor:
        h = F.interpolate(h, size=size, mode="nearest")
        h = F.silu(self.conv1(h))
        scale, shift = self.film(style)[:, :, None, None].chunk(2, dim=1)
        h = self.norm(self.conv2(h)) * (1 + scale) + shift
        return F.silu(h)


class SliceGenerator(nn.Module):
    """Convolutional generator from (w, s) to an (C, H, W) slice in [0, 1].

    Args:
        latent_dim: size of w.
        out_channels: C.
        slice_size: (H, W) of the output slice.
        width: channels of the first (coarsest) feature map; halved per block down to 16.
        depth_dim: size of the depth embedding.
        depth_conditioned: feed the depth s (False: G ignores s).
    """

    def __init__(
        self,
        latent_dim: int = 64,
        out_channels: int = 1,
        slice_size: tuple[int, int] = (64, 64),
        width: int = 128,
        depth_dim: int = 16,
        depth_conditioned: bool = True,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.out_channels = out_channels
        self.slice_size = (int(slice_size[0]), int(slice_size[1]))
        self.depth_dim = depth_dim
        self.depth_conditioned = depth_conditioned
        h, w = self.slice_size
        # Blocks until the coarsest map is <= 4 on its shorter side.
        n_up = max(1, int(math.floor(math.log2(max(min(h, w), 4) / 4))))
        self.sizes = [
            (max(1, math.ceil(h / 2 ** (n_up - i))), max(1, math.ceil(w / 2 ** (n_up - i))))
            for i in range(n_up)
        ]
        self.sizes.append((h, w))
        style_dim = latent_dim + (depth_dim if depth_conditioned else 0)
        self.style = nn.Sequential(
            nn.Linear(style_dim, 2 * latent_dim),
            nn.SiLU(),
            nn.Linear(2 * latent_dim, 2 * latent_dim),
        )
        chans = [max(16, width // 2**i) for i in range(n_up + 1)]
        h0, w0 = self.sizes[0]
        self.stem = nn.Linear(2 * latent_dim, chans[0] * h0 * w0)
        self.blocks = nn.ModuleList(
            _ModBlock(chans[i], chans[i + 1], 2 * latent_dim) for i in range(n_up)
        )
        self.head = nn.Conv2d(chans[-1], out_channels, 3, padding=1)
        self.chans = chans

    def forward(self, w: Tensor, s: Tensor | None = None) -> Tensor:
        """Generate slices.

        Args:
            w: (N, latent_dim) latent codes (standard normal for the prior).
            s: (N,) normalised depths in [0, 1] (ignored when not depth-conditioned).

        Returns:
            (N, C, H, W) slices in [0, 1].
        """
        if self.depth_conditioned:
            if s is None:
                raise ValueError("this generator is depth-conditioned: pass s")
            w_in = torch.cat([w, depth_embedding(s, self.depth_dim).to(w.dtype)], dim=1)
        else:
            w_in = w
        style = self.style(w_in)  # (N, 2 * latent)
        h0, w0 = self.sizes[0]
        h = self.stem(style).view(w.shape[0], self.chans[0], h0, w0)
        # channels_last: the oneDNN convolutions of the thin full-resolution blocks run about
        # 3x faster on CPU than with NCHW activations (same values).
        h = h.contiguous(memory_format=torch.channels_last)
        for block, size in zip(self.blocks, self.sizes[1:]):
            h = block(h, style, size)
        return torch.sigmoid(self.head(h))

    def generate(self, noise: Tensor, cond: Tensor | None = None) -> Tensor:
        """The generic 2D-generator interface: ``noise`` = w, ``cond`` = depth s."""
        return self(noise, cond)
