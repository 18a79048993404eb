"""Trajectory mapper T (LiFT, arXiv 2605.19060; METHOD.md "Components").

T turns one volume-level noise vector (plus optional per-slice noise) into an ordered sequence of
latent codes ``w_1 .. w_D`` for the frozen slice generator G: ``x = stack_k G(w_k, s_k)``.
It is a light sequence model over depth: depth embeddings, a bidirectional GRU, and a
zero-initialised residual head on top of a base code taken from the volume noise. Zero init means
training starts from the *constant-code* trajectory ``w_k = eps`` (a volume of one code swept
through depth) rather than from noise; the tri-planar drifting loss then shapes how the code
moves along z. The no-mapper ablation (`independent_latents`) draws every ``w_k`` independently.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lift3d.models.slice_generator import depth_embedding


class TrajectoryMapper(nn.Module):
    """Volume noise -> per-slice latent trajectory.

    Args:
        latent_dim: size of each w_k (G's latent).
        num_slices: default D (any D works at call time).
        hidden: GRU hidden size per direction.
        layers: GRU layers.
        slice_noise_dim: per-slice noise size (0 disables per-slice noise).
        depth_dim: depth-embedding size.
    """

    def __init__(
        self,
        latent_dim: int = 64,
        num_slices: int = 64,
        hidden: int = 128,
        layers: int = 2,
        slice_noise_dim: int = 8,
        depth_dim: int = 16,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.num_slices = num_slices
        self.slice_noise_dim = slice_noise_dim
        self.depth_dim = depth_dim
        self.inp = nn.Linear(latent_dim + slice_noise_dim + depth_dim, hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, latent_dim)
        # Zero-init residual head: training starts at the constant-code trajectory w_k = eps.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def sample_noise(
        self,
        n: int,
        num_slices: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> tuple[Tensor, Tensor]:
        """Volume noise (n, latent_dim) and per-slice noise (n, D, slice_noise_dim).

        Drawn on the CPU from `generator` (reproducible across devices), then moved.
        """
        d = num_slices or self.num_slices
        eps = torch.randn(n, self.latent_dim, generator=generator)
        per_slice = torch.randn(n, d, self.slice_noise_dim, generator=generator)
        return eps.to(device), per_slice.to(device)

    def forward(self, eps: Tensor, slice_noise: Tensor) -> Tensor:
        """Map noise to a latent trajectory.

        Args:
            eps: (B, latent_dim) volume noise.
            slice_noise: (B, D, slice_noise_dim) per-slice noise.

        Returns:
            (B, D, latent_dim) codes w_k for depths s_k = k / (D - 1).
        """
        b, d, _ = slice_noise.shape
        s = torch.linspace(0, 1, d, device=eps.device) if d > 1 else eps.new_zeros(1)
        emb = depth_embedding(s, self.depth_dim).to(eps.dtype)  # (D, depth_dim)
        base = eps[:, None, :].expand(b, d, self.latent_dim)  # (B, D, latent)
        h = torch.cat([base, slice_noise, emb[None].expand(b, d, -1)], dim=2)
        h, _ = self.gru(torch.nn.functional.silu(self.inp(h)))  # (B, D, 2 * hidden)
        return base + self.out(h)  # (B, D, latent)


def independent_latents(
    n: int, num_slices: int, latent_dim: int, generator: torch.Generator | None = None
) -> Tensor:
    """The no-mapper ablation: every slice's code drawn independently, (n, D, latent_dim)."""
    return torch.randn(n, num_slices, latent_dim, generator=generator)
