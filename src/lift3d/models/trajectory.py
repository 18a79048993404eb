"""Trajectory mapper T (LiFT, arXiv 2605.19060; METHOD.md "Components").

T turns one volume-level noise vector (plus optional per-slice noise) into an ordered sequence of
latent codes ``w_1 .. w_D`` for the frozen slice generator G: ``x = stack_k G(w_k, s_k)``.
It is a light sequence model over depth: depth embeddings, a bidirectional GRU, and a
zero-initialised residual head on top of a *base trajectory*. Zero init means training starts
exactly at the base trajectory; the tri-planar drifting loss then shapes how the code moves
along z. The no-mapper ablation (`independent_latents`) draws every ``w_k`` independently.

Base trajectory. With ``path_sigma = 0`` it is the constant code ``w_k = eps``: one code
swept through depth, which gives volumes far smoother along z than real ones. With
``path_sigma > 0`` it is ``w_k = sqrt(mix) eps + sqrt(1 - mix) p_k``, where ``p`` is white noise
smoothed along depth by a Gaussian of width ``path_sigma`` (in normalised depth, so the same
value works for any D) and rescaled so every ``p_k`` is exactly N(0, I). Each code then has G's
training distribution N(0, I) at every depth (per-slice realism of the no-mapper model), while
neighbouring codes are correlated (z-coherence) and ``mix`` sets how much of the code is shared
by the whole volume. Both are stored in the model file, so a saved model samples the same way.
They are parameters that can be trained with the rest of T (`learn_base_path`): the drifting
loss then sets how smooth the trajectory is along depth, which the residual head alone hardly
changes (its updates act mostly as a shift of the codes).
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
        path_sigma: width of the base trajectory's depth smoothing, in normalised depth
            (0: constant base code).
        path_mix: share of the base code's variance that comes from the volume noise.
    """

    def __init__(
        self,
        latent_dim: int = 64,
        num_slices: int = 64,
        hidden: int = 128,
        layers: int = 2,
        slice_noise_dim: int = 8,
        depth_dim: int = 16,
        path_sigma: float = 0.0,
        path_mix: float = 0.5,
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
        # Parameters (frozen unless `learn_base_path`), so an optimiser over T can train them.
        self.path_sigma = nn.Parameter(torch.tensor(float(path_sigma)), requires_grad=False)
        self.path_mix = nn.Parameter(torch.tensor(float(path_mix)), requires_grad=False)
        self.set_base_path(path_sigma, path_mix)

    def set_base_path(self, sigma: float, mix: float) -> None:
        """Set the base trajectory (see the module docstring); sigma 0 = constant code."""
        if sigma < 0 or not 0.0 <= mix <= 1.0:
            raise ValueError(f"need path_sigma >= 0 and 0 <= path_mix <= 1, got {sigma}, {mix}")
        with torch.no_grad():
            self.path_sigma.fill_(float(sigma))
            self.path_mix.fill_(float(mix))

    def learn_base_path(self, flag: bool = True) -> None:
        """Train (or freeze) the base path's width and mix together with T's other weights.

        Needs a moving base path (``path_sigma > 0``); the values are clamped to
        ``sigma >= 1e-3`` and ``0 <= mix <= 1`` where they are used.
        """
        if flag and not self.uses_path:
            raise ValueError("learning the base path needs path_sigma > 0")
        self.path_sigma.requires_grad_(flag)
        self.path_mix.requires_grad_(flag)

    def freeze_head(self) -> None:
        """Freeze the GRU and the residual head (``w_k`` = the base path while the head is at
        its zero init); the base path's parameters keep their own setting."""
        for module in (self.inp, self.gru, self.out):
            for p in module.parameters():
                p.requires_grad_(False)

    @property
    def uses_path(self) -> bool:
        """True when the base trajectory moves along depth (per-slice base noise is drawn)."""
        return float(self.path_sigma.detach()) > 0

    def base_trajectory(self, eps: Tensor, path_noise: Tensor | None) -> Tensor:
        """(B, latent) volume noise + (B, D, latent) white noise -> (B, D, latent) base codes."""
        if path_noise is None or not self.uses_path:
            d = 1 if path_noise is None else path_noise.shape[1]
            return eps[:, None, :].expand(eps.shape[0], d, self.latent_dim)
        d = path_noise.shape[1]
        k = torch.arange(d, device=eps.device, dtype=eps.dtype)
        sigma = self.path_sigma.to(eps.dtype).clamp(min=1e-3) * max(d - 1, 1)
        mix = self.path_mix.to(eps.dtype).clamp(0.0, 1.0)
        kern = torch.exp(-0.5 * ((k[:, None] - k[None, :]) / sigma) ** 2)
        kern = kern / kern.pow(2).sum(dim=1, keepdim=True).sqrt()  # unit rows: N(0, I)
        path = torch.einsum("kj,bjl->bkl", kern, path_noise)
        if mix.requires_grad:  # d sqrt(mix) / d mix is infinite at 0
            mix = mix.clamp(min=1e-6)
        return mix.sqrt() * eps[:, None, :] + (1 - mix).sqrt() * path

    def sample_noise(
        self,
        n: int,
        num_slices: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> tuple[Tensor, Tensor]:
        """Volume noise (n, latent_dim) and per-slice noise (n, D, slice_noise_dim [+ latent_dim]).

        The per-slice noise carries ``latent_dim`` extra channels (the base trajectory's white
        noise) when the base path is on. Drawn on the CPU from `generator` (reproducible across
        devices), then moved.
        """
        d = num_slices or self.num_slices
        eps = torch.randn(n, self.latent_dim, generator=generator)
        extra = self.latent_dim if self.uses_path else 0
        per_slice = torch.randn(n, d, self.slice_noise_dim + extra, generator=generator)
        return eps.to(device), per_slice.to(device)

    def forward(self, eps: Tensor, slice_noise: Tensor) -> Tensor:
        """Map noise to a latent trajectory.

        Args:
            eps: (B, latent_dim) volume noise.
            slice_noise: (B, D, slice_noise_dim [+ latent_dim]) per-slice noise, as drawn by
                `sample_noise`.

        Returns:
            (B, D, latent_dim) codes w_k for depths s_k = k / (D - 1).
        """
        b, d, _ = slice_noise.shape
        s = torch.linspace(0, 1, d, device=eps.device) if d > 1 else eps.new_zeros(1)
        emb = depth_embedding(s, self.depth_dim).to(eps.dtype)  # (D, depth_dim)
        gru_noise = slice_noise[..., : self.slice_noise_dim]
        path_noise = slice_noise[..., self.slice_noise_dim :] if self.uses_path else None
        if path_noise is not None and path_noise.shape[-1] != self.latent_dim:
            raise ValueError(
                f"per-slice noise needs {self.slice_noise_dim + self.latent_dim} channels with "
                f"the base path on, got {slice_noise.shape[-1]}"
            )
        base = self.base_trajectory(eps, path_noise).expand(b, d, self.latent_dim)
        h = torch.cat([base, gru_noise, emb[None].expand(b, d, -1)], dim=2)
        h, _ = self.gru(torch.nn.functional.silu(self.inp(h)))  # (B, D, 2 * hidden)
        return base + self.out(h)  # (B, D, latent)


def independent_latents(
    n: int, num_slices: int, latent_dim: int, generator: torch.Generator | None = None
) -> Tensor:
    """The no-mapper ablation: every slice's code drawn independently, (n, D, latent_dim)."""
    return torch.randn(n, num_slices, latent_dim, generator=generator)
