"""Tri-planar drifting loss: slicing geometry, feature sets, gradient routing."""

from __future__ import annotations

import pytest
import torch

from lift3d.losses.triplanar import (
    cut_slices,
    plane_feature_sets,
    sample_positions,
    triplanar_drifting_loss,
)


def mean_embed(x: torch.Tensor) -> torch.Tensor:
    """A toy encoder: 2x2 average-pooled intensities, (N, C, h, w) -> (N, 4C)."""
    return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def test_cut_slices_planes():
    vol = torch.arange(2 * 1 * 4 * 5 * 6, dtype=torch.float32).view(2, 1, 4, 5, 6)
    pos = torch.tensor([1, 2])
    ax = cut_slices(vol, "axial", pos)
    co = cut_slices(vol, "coronal", pos)
    sa = cut_slices(vol, "sagittal", pos)
    assert (
        ax.shape == (2, 2, 1, 5, 6) and co.shape == (2, 2, 1, 4, 6) and sa.shape == (2, 2, 1, 4, 5)
    )
    assert torch.equal(ax[1, 0, 0], vol[1, 0, 1])
    assert torch.equal(co[0, 1, 0], vol[0, 0, :, 2])
    assert torch.equal(sa[1, 1, 0], vol[1, 0, :, :, 2])
    with pytest.raises(ValueError):
        cut_slices(vol, "oblique", pos)


def test_sample_positions_have_neighbours():
    g = torch.Generator().manual_seed(0)
    for size, num in [(32, 8), (5, 8), (2, 3), (64, 1)]:
        pos = sample_positions(size, num, g)
        assert pos.min() >= 0 and pos.max() + 1 <= size - 1
        assert (pos.diff() > 0).all()
        assert pos.numel() == min(num, size - 1)


def test_feature_sets_shapes_and_increments():
    vol = torch.rand(3, 1, 8, 8, 8)
    # A volume constant along z has zero axial increments.
    flat = vol[:, :, :1].expand(-1, -1, 8, -1, -1).contiguous()
    pos = torch.tensor([0, 2, 4, 6])
    sets = plane_feature_sets(flat, mean_embed, "axial", pos, segments=2)
    assert sets["slice"].shape == (3, 4, 4) and sets["incr"].shape == (3, 4, 4)
    assert sets["traj"].shape == (3, 1, 8)
    assert sets["incr"].abs().max() == 0
    assert plane_feature_sets(vol, mean_embed, "coronal", pos)["incr"].abs().max() > 0


def test_loss_gradients_reach_only_generated_volumes():
    gen = torch.rand(4, 1, 8, 8, 8, requires_grad=True)
    real = torch.rand(5, 1, 8, 8, 8, requires_grad=True)
    loss, logs = triplanar_drifting_loss(gen * 1.0, real, mean_embed, num_positions=3)
    loss.backward()
    assert gen.grad is not None and gen.grad.abs().sum() > 0
    assert real.grad is None
    assert set(logs) == {
        f"{p}_{s}" for p in ("axial", "coronal", "sagittal") for s in ("slice", "incr", "traj")
    }


def test_loss_downsampled_and_shape_checked():
    torch.manual_seed(0)
    gen = torch.rand(4, 1, 8, 8, 8, requires_grad=True)
    real = torch.rand(4, 1, 8, 8, 8)
    small, _ = triplanar_drifting_loss(gen, real, mean_embed, loss_size=(4, 4, 4))
    assert torch.isfinite(small)
    (grad,) = torch.autograd.grad(small, gen)
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError):
        triplanar_drifting_loss(gen, torch.rand(4, 1, 8, 8, 6), mean_embed)


def test_training_with_triplanar_loss_removes_slice_flicker():
    """A two-parameter "generator" mixing a z-constant part and independent per-slice noise,
    trained toward z-constant real volumes, learns to drop the per-slice part (the mechanism the
    mapper relies on)."""
    torch.manual_seed(0)
    real = torch.rand(16, 1, 1, 8, 8).expand(-1, -1, 8, -1, -1)
    mix = torch.tensor([0.5, 0.5], requires_grad=True)  # weights of (shared, per-slice) parts
    opt = torch.optim.Adam([mix], lr=0.02)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        shared = torch.rand(16, 1, 1, 8, 8).expand(-1, -1, 8, -1, -1)
        per_slice = torch.rand(16, 1, 8, 8, 8)
        gen = mix[0] * shared + mix[1] * per_slice
        loss, _ = triplanar_drifting_loss(gen, real, mean_embed, num_positions=4, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert mix[1].abs() < 0.2 and mix[0] > 0.7, mix
