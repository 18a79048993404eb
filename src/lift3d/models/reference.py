"""Cost stand-in for cWDM, the 3D conditional wavelet diffusion model LiFT is compared against.

cWDM (Friedrich et al., "cWDM: Conditional Wavelet Diffusion Models for Cross-Modality 3D Medical
Image Synthesis", 2024) denoises the one-level 3D Haar wavelet transform of a BraTS volume
(224x224x160 -> 8 subbands of 112x112x80) with a 3D U-Net: 32 input channels (3 condition
modalities x 8 subbands + 8 noisy target subbands), 8 outputs, channels (64, 128, 128, 256, 256),
2 residual blocks per level, residual up/down-sampling, no attention, 1000 DDPM steps with a
linear beta schedule. WFM (one-step 3D wavelet flow matching) runs the same kind of network once.

This module rebuilds that *configuration* from MONAI's `DiffusionModelUNet` (whose mid block
always holds a self-attention layer; it is replaced by identity here) so `lift3d bench` can
measure its per-step cost. The weights are random: it is a cost stand-in, not a trained model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

CWDM_CHANNELS: tuple[int, ...] = (64, 128, 128, 256, 256)
CWDM_STEPS = 1000
CWDM_CONDITIONS = 3  # BraSyn: three available modalities condition the missing one
HAAR_SUBBANDS = 8  # one level of 3D Haar DWT


def _haar_butterfly(v: Tensor) -> Tensor:
    """Apply the orthonormal 2-point Haar matrix along the three size-2 axes at dims 2, 3, 4.

    The matrix is symmetric and orthonormal, so the same butterfly inverts itself.
    """
    h = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=v.dtype, device=v.device) / 2.0**0.5
    return torch.einsum("ai,bj,ek,nmijkxyz->nmabexyz", h, h, h, v)


def haar_dwt3d(x: Tensor) -> Tensor:
    """One level of the orthonormal 3D Haar wavelet transform.

    Args:
        x: (B, C, D, H, W) with even D, H, W.

    Returns:
        (B, 8 * C, D/2, H/2, W/2); the 8 subbands of one input channel are adjacent, LLL first
        (band index bits = high-pass along D, H, W).
    """
    b, c, d, h, w = x.shape
    if d % 2 or h % 2 or w % 2:
        raise ValueError(f"haar_dwt3d needs even D, H, W, got {(d, h, w)}")
    v = x.reshape(b, c, d // 2, 2, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 7, 2, 4, 6)
    bands = _haar_butterfly(v)  # (B, C, 2, 2, 2, D/2, H/2, W/2)
    return bands.reshape(b, c * HAAR_SUBBANDS, d // 2, h // 2, w // 2)


def haar_idwt3d(y: Tensor) -> Tensor:
    """Inverse of `haar_dwt3d`.

    Args:
        y: (B, 8 * C, D', H', W') subbands as `haar_dwt3d` orders them.

    Returns:
        (B, C, 2 D', 2 H', 2 W').
    """
    b, c8, d, h, w = y.shape
    if c8 % HAAR_SUBBANDS:
        raise ValueError(f"haar_idwt3d needs a multiple of 8 channels, got {c8}")
    c = c8 // HAAR_SUBBANDS
    v = _haar_butterfly(y.reshape(b, c, 2, 2, 2, d, h, w))  # (B, C, 2, 2, 2, D', H', W')
    return v.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, c, 2 * d, 2 * h, 2 * w)


class _NoAttention(nn.Module):
    """Identity in place of the self-attention of MONAI's mid block (cWDM uses no attention)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


def build_reference_unet(
    channels: Sequence[int] = CWDM_CHANNELS,
    conditions: int = CWDM_CONDITIONS,
    num_res_blocks: int = 2,
    norm_num_groups: int = 32,
) -> nn.Module:
    """The cWDM 3D U-Net: MONAI `DiffusionModelUNet` configured as cWDM, attention removed.

    Args:
        channels: feature channels per level; cWDM's (64, 128, 128, 256, 256). Tests pass
            smaller widths (multiples of `norm_num_groups`).
        conditions: condition modalities, each contributing 8 wavelet subbands.
        num_res_blocks: residual blocks per level.
        norm_num_groups: GroupNorm groups.

    Returns:
        Module with forward(x (B, 8 * (conditions + 1), D', H', W'), timesteps (B,)) ->
        (B, 8, D', H', W'); D', H', W' divisible by 2 ** (len(channels) - 1).
    """
    from monai.networks.nets import DiffusionModelUNet

    net = DiffusionModelUNet(
        spatial_dims=3,
        in_channels=HAAR_SUBBANDS * (conditions + 1),
        out_channels=HAAR_SUBBANDS,
        num_res_blocks=num_res_blocks,
        channels=tuple(channels),
        attention_levels=(False,) * len(channels),
        norm_num_groups=norm_num_groups,
        resblock_updown=True,
    )
    net.middle_block.attention = _NoAttention()
    return net


def linear_betas(steps: int = CWDM_STEPS) -> Tensor:
    """DDPM's linear beta schedule (1e-4 .. 0.02 at 1000 steps, rescaled for other counts)."""
    scale = 1000.0 / steps
    return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)


class WaveletDiffusionReference(nn.Module):
    """cWDM-style conditional sampler: DWT the conditions, run `steps` DDPM steps, inverse DWT.

    Args:
        channels: U-Net widths (see `build_reference_unet`).
        conditions: number of condition modalities.
        steps: DDPM sampling steps (cWDM: 1000; a one-step WFM-like peer: 1).
        norm_num_groups: GroupNorm groups.
    """

    def __init__(
        self,
        channels: Sequence[int] = CWDM_CHANNELS,
        conditions: int = CWDM_CONDITIONS,
        steps: int = CWDM_STEPS,
        norm_num_groups: int = 32,
    ) -> None:
        super().__init__()
        self.unet = build_reference_unet(channels, conditions, norm_num_groups=norm_num_groups)
        self.conditions = conditions
        self.steps = steps
        self.levels = len(channels)
        betas = linear_betas(steps)
        alphas_bar = torch.cumprod(1.0 - betas, 0)
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas_bar", alphas_bar.float(), persistent=False)

    @property
    def multiple(self) -> int:
        """Volume sides must be divisible by this (DWT halves, then len(channels)-1 poolings)."""
        return 2**self.levels

    def step(self, x_t: Tensor, cond_w: Tensor, t: int) -> Tensor:
        """One DDPM ancestral step in wavelet space (what cWDM repeats `steps` times).

        Args:
            x_t: (B, 8, D', H', W') noisy target subbands at step t.
            cond_w: (B, 8 * conditions, D', H', W') condition subbands.
            t: step index, steps - 1 .. 0.

        Returns:
            (B, 8, D', H', W') subbands at step t - 1.
        """
        timesteps = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        eps = self.unet(torch.cat([cond_w, x_t], dim=1), timesteps)  # (B, 8, D', H', W')
        beta, a_bar = self.betas[t], self.alphas_bar[t]
        mean = (x_t - beta / torch.sqrt(1.0 - a_bar) * eps) / torch.sqrt(1.0 - beta)
        if t == 0:
            return mean
        return mean + torch.sqrt(beta) * torch.randn_like(x_t)

    @torch.no_grad()
    def forward(self, cond: Tensor) -> Tensor:
        """Sample the missing modality.

        Args:
            cond: (B, conditions, D, H, W) condition volumes; sides divisible by `multiple`.

        Returns:
            (B, 1, D, H, W) synthesised volume.
        """
        cond_w = haar_dwt3d(cond)  # (B, 8 * conditions, D/2, H/2, W/2)
        x = torch.randn(
            cond_w.shape[0], HAAR_SUBBANDS, *cond_w.shape[2:], device=cond.device, dtype=cond.dtype
        )
        for t in reversed(range(self.steps)):
            x = self.step(x, cond_w, t)
        return haar_idwt3d(x)
