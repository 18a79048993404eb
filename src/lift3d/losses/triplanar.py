"""Tri-planar drifting loss (LiFT, arXiv 2605.19060; our definition in METHOD.md).

For a batch of generated and a batch of real volumes, for each plane p in {axial, coronal,
sagittal}: cut slices along p at a random strided set of positions shared by real and generated,
encode each slice with the frozen encoder E, and form three feature sets per volume:

- ``slice``: the features at each position, compared position by position (depth-aware), (B, M, F);
- ``incr``: increments ``f(p + 1) - f(p)`` between each cut and its neighbour (how structures
  appear, move and vanish between slices), (B, M, F);
- ``traj``: a trajectory descriptor of the ordered sequence: the slice features averaged over
  ``segments`` consecutive runs of positions and concatenated in order, (B, 1, segments * F).

The drifting loss (`lift3d.losses.drifting`) runs on each set; the total is the sum over sets
and planes. Gradients flow through the frozen E (and G) into whatever made the generated
volumes. Memory is bounded by a downsampled loss volume (`loss_size`).

`through_plane_loss` is an optional second term for the mapper (``mapper.zgrad_weight``): it
matches how much the generated volumes change from slice to slice to the real ones' (the
evaluation's zgrad ratio), with the noise the generator does not draw added to its side.

Plane names follow the model axes of a ``(B, C, D, H, W)`` tensor with the default axial slice
axis: axial cuts along D, coronal along H, sagittal along W.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from lift3d.constants import DHW_PLANE_AXIS, FOREGROUND_LEVEL, PLANES
from lift3d.losses.drifting import DEFAULT_TEMPERATURES, drifting_loss_sets

_AXIS = {plane: 2 + axis for plane, axis in DHW_PLANE_AXIS.items()}  # dim of (B, C, D, H, W)


def cut_slices(vol: Tensor, plane: str, positions: Tensor) -> Tensor:
    """Slices of `vol` along `plane` at `positions`.

    Args:
        vol: (B, C, D, H, W).
        plane: axial | coronal | sagittal.
        positions: (M,) integer indices along the plane's axis.

    Returns:
        (B, M, C, h, w): axial (H, W), coronal (D, W), sagittal (D, H).
    """
    if plane not in _AXIS:
        raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
    sel = vol.index_select(_AXIS[plane], positions.to(vol.device))
    if plane == "axial":
        return rearrange(sel, "b c m h w -> b m c h w")
    if plane == "coronal":
        return rearrange(sel, "b c d m w -> b m c d w")
    return rearrange(sel, "b c d h m -> b m c d h")


def sample_positions(size: int, num: int, generator: torch.Generator | None = None) -> Tensor:
    """A strided set of `num` positions in [0, size - 2] with a random offset (each has a
    neighbour at +1 for the increments). Fewer when the axis is short. Returns (M,) int64."""
    if size < 2:
        return torch.zeros(1, dtype=torch.long)
    num = max(1, min(num, size - 1))
    stride = max(1, (size - 1) // num)
    span = stride * (num - 1)
    offset = int(torch.randint(0, max(1, size - 1 - span), (1,), generator=generator))
    return offset + stride * torch.arange(num)


Embed = Callable[[Tensor], Tensor]


def _encode(embed: Embed, slices: Tensor) -> Tensor:
    """(B, M, C, h, w) -> (B, M, F)."""
    b, m = slices.shape[:2]
    feats = embed(rearrange(slices, "b m c h w -> (b m) c h w"))
    return rearrange(feats, "(b m) f -> b m f", b=b, m=m)


def plane_feature_sets(
    vol: Tensor,
    embed: Embed,
    plane: str,
    positions: Tensor,
    segments: int = 4,
) -> dict[str, Tensor]:
    """The three feature sets of one plane.

    Args:
        vol: (B, C, D, H, W).
        embed: slice encoder, (N, C, h, w) -> (N, F).
        plane: axial | coronal | sagittal.
        positions: (M,) cut positions (each with a neighbour at +1).
        segments: runs of positions averaged for the trajectory descriptor.

    Returns:
        {"slice": (B, M, F), "incr": (B, M, F), "traj": (B, 1, S * F)}.
    """
    size = vol.shape[_AXIS[plane]]
    nxt = (positions + 1).clamp(max=size - 1)
    both = torch.cat([positions, nxt])
    feats = _encode(embed, cut_slices(vol, plane, both))  # (B, 2M, F)
    m = positions.numel()
    f, f_next = feats[:, :m], feats[:, m:]
    segs = torch.tensor_split(f, min(segments, m), dim=1)
    traj = torch.cat([s.mean(dim=1) for s in segs], dim=1)[:, None]  # (B, 1, S * F)
    return {"slice": f, "incr": f_next - f, "traj": traj}


def triplanar_drifting_loss(
    gen: Tensor,
    real: Tensor,
    embed: Embed,
    *,
    planes: Sequence[str] = PLANES,
    num_positions: int = 8,
    loss_size: Sequence[int] | None = None,
    segments: int = 4,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Tri-planar drifting loss between generated and real volumes.

    Args:
        gen: (N, C, D, H, W) generated volumes (carry the graph to the trainable model).
        real: (M, C, D, H, W) real volumes (no gradient).
        embed: frozen slice encoder, (n, C, h, w) -> (n, F).
        planes: planes to use.
        num_positions: cuts per plane (shared by real and generated).
        loss_size: (D, H, W) to resample both batches to before cutting (memory), or None.
        segments: runs averaged in the trajectory descriptor.
        temperatures: drifting temperatures.
        generator: RNG for the cut positions.

    Returns:
        (scalar loss, {"<plane>_<set>": energy distance} for logging).
    """
    if gen.dim() != 5 or real.dim() != 5 or gen.shape[1:] != real.shape[1:]:
        raise ValueError(
            f"gen {tuple(gen.shape)} and real {tuple(real.shape)} must be (B, C, D, H, W) alike"
        )
    real = real.detach()
    if loss_size is not None:
        size = tuple(int(s) for s in loss_size)
        if tuple(gen.shape[2:]) != size:
            gen = F.interpolate(gen, size=size, mode="trilinear", align_corners=False)
            real = F.interpolate(real, size=size, mode="trilinear", align_corners=False)
    total: Tensor | None = None
    logs: dict[str, float] = {}
    for plane in planes:
        positions = sample_positions(gen.shape[_AXIS[plane]], num_positions, generator)
        g_sets = plane_feature_sets(gen, embed, plane, positions, segments)
        with torch.no_grad():
            r_sets = plane_feature_sets(real, embed, plane, positions, segments)
        loss, parts = drifting_loss_sets(g_sets, r_sets, temperatures=temperatures)
        logs.update({f"{plane}_{k}": v for k, v in parts.items()})
        total = loss if total is None else total + loss
    assert total is not None, "no planes given"
    return total, logs


def through_plane_change(vol: Tensor, threshold: float = FOREGROUND_LEVEL) -> Tensor:
    """Mean ``|v[k+1] - v[k]|`` along depth over the differences whose two voxels are both
    foreground (above `threshold`), pooled over the batch and channels: the statistic of
    `lift3d.metrics.distribution.zgrad_ratio_sets`, differentiable. (B, C, D, H, W) -> ()."""
    both = ((vol[:, :, 1:] > threshold) & (vol[:, :, :-1] > threshold)).detach()
    change = (vol[:, :, 1:] - vol[:, :, :-1]).abs()
    return (change * both).sum() / both.sum().clamp(min=1)


def through_plane_loss(
    gen: Tensor,
    real: Tensor,
    noise_sigma: Sequence[float] | float = 0.0,
    threshold: float = FOREGROUND_LEVEL,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, float]:
    """``log(c_gen / c_real)^2`` of the two batches' `through_plane_change`: how much more or
    less the generated volumes change from slice to slice than the real ones.

    Scans carry acquisition noise, which adds to every voxel difference; a generator's decoder
    draws almost none (the output detail adds it at sampling time,
    `lift3d.inference.detail`). So white noise of `noise_sigma` (per channel, in the volumes'
    units and at their resolution) is added to the generated foreground first, and the two sides
    compare like with like.

    Args:
        gen: (N, C, D, H, W) generated volumes (carry the graph).
        real: (M, C, D, H, W) real volumes (no gradient).
        noise_sigma: std of the noise the generated volumes lack, per channel or one for all.
        threshold: foreground level.
        generator: RNG for the noise.

    Returns:
        (scalar loss, the ratio c_gen / c_real for logging).
    """
    sigma = torch.as_tensor(noise_sigma, dtype=gen.dtype, device=gen.device).reshape(-1)
    if bool((sigma > 0).any()):
        device = gen.device if generator is None else generator.device
        noise = torch.randn(gen.shape, generator=generator, dtype=gen.dtype, device=device)
        noise = noise.to(gen.device)
        noise = noise * sigma.expand(gen.shape[1])[None, :, None, None, None]
        gen = gen + noise * (gen.detach() > threshold)
    with torch.no_grad():
        c_real = through_plane_change(real.detach(), threshold)
    ratio = through_plane_change(gen, threshold) / c_real.clamp(min=1e-8)
    return torch.log(ratio.clamp(min=1e-8)) ** 2, float(ratio.detach())
