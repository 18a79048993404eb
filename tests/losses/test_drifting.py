"""Drifting objective: drift field properties, gradient routing, toy 2D convergence."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lift3d.losses import drift_field, drifting_loss
from lift3d.losses.drifting import drifting_loss_sets, energy_distance


def swiss_roll(n: int, g: torch.Generator) -> torch.Tensor:
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 10
    return x + 0.03 * torch.randn(n, 2, generator=g)


def checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    x1 = torch.rand(n, generator=g) * 4 - 2
    x2 = torch.rand(n, generator=g) - torch.randint(0, 2, (n,), generator=g) * 2
    return torch.stack([x1, x2 + torch.floor(x1) % 2], 1)


def gaussian_mixture(n: int, g: torch.Generator) -> torch.Tensor:
    angle = torch.randint(0, 8, (n,), generator=g) * 2 * math.pi / 8
    centres = 2 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return centres + 0.15 * torch.randn(n, 2, generator=g)


def toy_energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Two-sample energy distance (0 iff the distributions agree), unnormalised."""
    d = 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()
    return float(d)


def train_toy(sampler, steps: int, batch: int, seed: int = 0) -> tuple[float, float, float]:
    """Train a small MLP generator with the drifting loss; energy distances before/after/floor."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    net = nn.Sequential(
        nn.Linear(16, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 2)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    held_out = sampler(2000, g)
    with torch.no_grad():
        before = toy_energy_distance(net(torch.randn(2000, 16)), held_out)
    for _ in range(steps):
        loss = drifting_loss(net(torch.randn(batch, 16)), sampler(batch, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = toy_energy_distance(net(torch.randn(2000, 16)), held_out)
    floor = toy_energy_distance(sampler(2000, g), held_out)
    return before, after, floor


def test_drift_zero_when_positives_equal_negatives():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 32, 8, generator=g)
    y = torch.randn(1, 40, 8, generator=g)
    for tau in (0.02, 0.05, 0.2, 1.0):
        v = drift_field(x, y, y.clone(), tau, mask_self=False)
        assert v.abs().max() < 1e-5


def test_drift_small_when_distributions_coincide():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 512, 4, generator=g)
    same = torch.randn(1, 512, 4, generator=g)
    shifted = same + torch.tensor([2.0, 0, 0, 0])
    v_same = drift_field(x, same, x, 1.0).norm(dim=-1).mean()
    v_shift = drift_field(x, shifted, x, 1.0).norm(dim=-1).mean()
    assert v_same < 0.2 * v_shift


def test_drift_attracts_toward_positives():
    x = torch.zeros(1, 4, 2) + torch.randn(1, 4, 2) * 0.01
    pos = torch.tensor([3.0, 0.0]) + 0.1 * torch.randn(1, 16, 2)
    v = drift_field(x, pos, x, 1.0)
    cos = torch.nn.functional.cosine_similarity(v[0], torch.tensor([[1.0, 0.0]]), dim=-1)
    assert (cos > 0.9).all()


def test_gradients_reach_only_generated_features():
    gen_param = torch.randn(16, 3, 5, requires_grad=True)
    pos = torch.randn(20, 3, 5, requires_grad=True)
    loss = drifting_loss(gen_param * 2.0, pos)
    loss.backward()
    assert gen_param.grad is not None and gen_param.grad.abs().sum() > 0
    assert pos.grad is None


def test_shapes_and_scale_invariance():
    g = torch.Generator().manual_seed(0)
    gen = torch.randn(12, 6, generator=g)
    pos = torch.randn(10, 6, generator=g) + 1
    flat = drifting_loss(gen, pos)
    tokens = drifting_loss(gen[:, None], pos[:, None])
    assert torch.allclose(flat, tokens)
    # Step 1 makes the loss blind to a global feature scale.
    assert torch.allclose(drifting_loss(7.0 * gen, 7.0 * pos), flat, rtol=1e-4)
    # Normalised drift: exactly 1 per temperature.
    assert flat.item() == pytest.approx(3.0, rel=1e-4)
    with pytest.raises(ValueError):
        drifting_loss(gen, torch.randn(10, 5))
    with pytest.raises(ValueError):
        drifting_loss(torch.randn(2, 3, 4, 5), pos)


def test_loss_sets_weighted_sum():
    gen = {"a": torch.randn(8, 2, 4), "b": torch.randn(8, 1, 3)}
    pos = {"a": torch.randn(9, 2, 4), "b": torch.randn(9, 1, 3)}
    total, parts = drifting_loss_sets(gen, pos, weights={"a": 2.0, "b": 0.5})
    expected = 2.0 * drifting_loss(gen["a"], pos["a"]) + 0.5 * drifting_loss(gen["b"], pos["b"])
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(parts) == {"a", "b"} and all(v > 0 for v in parts.values())


def test_energy_distance_monitor():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    near = energy_distance(x, torch.randn(256, 4, generator=g))
    far = energy_distance(x, torch.randn(256, 4, generator=g) + 1.0)
    assert near < 0.1 * far


@pytest.mark.parametrize("sampler", [swiss_roll, checkerboard, gaussian_mixture])
def test_toy_convergence_2d(sampler):
    before, after, _ = train_toy(sampler, steps=150, batch=128)
    assert after < 0.08 * before, (before, after)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", [swiss_roll, checkerboard, gaussian_mixture])
def test_toy_convergence_2d_long(sampler):
    before, after, floor = train_toy(sampler, steps=1500, batch=256)
    assert after < 0.015 * before, (before, after)
    assert after < 15 * max(floor, 1e-3), (after, floor)
