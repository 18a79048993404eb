"""Losses of LiFT paired translation (METHOD.md: translator F and z-mixer M).

Stage 1 (F on slices): L1, optionally + (1 - SSIM). Stage 2 (M on volumes): L1 on slices plus a
through-plane term, L1 between the z-differences of prediction and target, which penalises
slice-to-slice flicker the per-slice loss cannot see.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def l1_loss(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean |pred - target|, optionally weighted (weights broadcast to `pred`)."""
    err = (pred - target).abs()
    if weight is None:
        return err.mean()
    weight = weight.expand_as(err)
    return (err * weight).sum() / weight.sum().clamp_min(1e-8)


def zgrad_l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Through-plane term: mean |dz(pred) - dz(target)| for (B, C, D, H, W) volumes.

    dz is the difference of neighbouring slices along D; zero when D == 1.
    """
    if pred.shape[2] < 2:
        return pred.sum() * 0.0
    dp = pred[:, :, 1:] - pred[:, :, :-1]
    dt = target[:, :, 1:] - target[:, :, :-1]
    return (dp - dt).abs().mean()


def _gaussian_window(size: int, sigma: float, device, dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, size, size)


def ssim_2d(pred: Tensor, target: Tensor, data_range: float = 1.0, window: int = 7) -> Tensor:
    """Mean 2D SSIM of (N, C, H, W) images (Gaussian window, sigma 1.5; Wang et al. 2004).

    Differentiable; used as ``1 - ssim`` in the slice loss.
    """
    c = pred.shape[1]
    win = _gaussian_window(window, 1.5, pred.device, pred.dtype).expand(c, 1, window, window)
    pad = window // 2

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.pad(t, (pad,) * 4, mode="replicate"), win, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_p, mu_t = blur(pred), blur(target)
    var_p = blur(pred * pred) - mu_p**2
    var_t = blur(target * target) - mu_t**2
    cov = blur(pred * target) - mu_p * mu_t
    num = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
    den = (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    return (num / den).mean()


def slice_loss(pred: Tensor, target: Tensor, ssim_weight: float = 0.0) -> Tensor:
    """Stage-1 loss on (N, C, H, W) slices: L1 + ssim_weight * (1 - SSIM)."""
    loss = l1_loss(pred, target)
    if ssim_weight > 0:
        loss = loss + ssim_weight * (1.0 - ssim_2d(pred, target))
    return loss


def volume_loss(pred: Tensor, target: Tensor, zgrad_weight: float = 1.0) -> dict[str, Tensor]:
    """Stage-2 loss on (B, C, D, H, W) volumes: L1 + zgrad_weight * through-plane L1.

    Returns:
        ``{"loss", "l1", "zgrad"}`` scalars.
    """
    l1 = l1_loss(pred, target)
    zg = zgrad_l1_loss(pred, target)
    return {"loss": l1 + zgrad_weight * zg, "l1": l1.detach(), "zgrad": zg.detach()}
