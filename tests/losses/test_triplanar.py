"""Tri-planar drifting loss: slicing geometry, feature sets, gradient routing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lift3d.losses.triplanar import (
    cut_slices,
    plane_feature_sets,
    sample_positions,
    through_plane_change,
    through_plane_loss,
    triplanar_drifting_loss,
)
from lift3d.metrics.distribution import zgrad_ratio_sets


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


def test_through_plane_change_is_the_evaluation_statistic():
    """The mapper's term measures what the evaluation's zgrad ratio measures: mean |dz| over
    pairs of foreground voxels (background and half-foreground pairs left out)."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0.1, 1.0, (2, 1, 6, 5, 5)).astype(np.float32)
    b = rng.uniform(0.1, 1.0, (3, 1, 6, 5, 5)).astype(np.float32)
    a[:, :, :, :2] = 0.0  # background rows
    b[:, :, 2, 0] = 0.0  # a hole in one slice
    ratio = float(
        through_plane_change(torch.from_numpy(a)) / through_plane_change(torch.from_numpy(b))
    )
    expected = zgrad_ratio_sets(list(a[:, 0]), list(b[:, 0]))
    assert ratio == pytest.approx(expected, rel=1e-5)
    # a volume constant along depth does not change at all
    flat = torch.full((1, 1, 4, 3, 3), 0.5)
    assert float(through_plane_change(flat)) == 0.0


def test_through_plane_loss_compares_like_with_like():
    """Zero for a batch against itself; a smooth batch against a noisy one is penalised unless
    the noise it lacks is added; the gradient reaches the generated volumes."""
    torch.manual_seed(0)
    smooth = 0.5 + 0.2 * torch.linspace(0, 1, 16)[None, None, :, None, None].expand(4, 1, 16, 8, 8)
    smooth = smooth.contiguous()
    loss, ratio = through_plane_loss(smooth, smooth.clone())
    assert float(loss) == 0.0 and ratio == pytest.approx(1.0)
    noisy = smooth + 0.05 * torch.randn(smooth.shape)
    gen = smooth.clone().requires_grad_(True)
    loss, ratio = through_plane_loss(gen, noisy)
    assert ratio < 0.5 and float(loss.detach()) > 0.4
    loss.backward()
    assert gen.grad is not None and float(gen.grad.abs().sum()) > 0
    # the noise the generated side lacks, added: the ratio close to 1
    g = torch.Generator().manual_seed(1)
    loss, ratio = through_plane_loss(smooth, noisy, noise_sigma=0.05, generator=g)
    assert ratio == pytest.approx(1.0, abs=0.05) and float(loss) < 0.01
    # per channel: a channel without noise stays as it is
    two = torch.cat([smooth, smooth], dim=1)
    _, r_both = through_plane_loss(two, two, noise_sigma=[0.0, 0.05], generator=g)
    _, r_none = through_plane_loss(two, two, noise_sigma=[0.0, 0.0])
    assert r_none == pytest.approx(1.0) and r_both > 1.5
