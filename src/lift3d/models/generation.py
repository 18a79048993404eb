"""Unconditional LiFT generation model: encoder E, slice generator G, trajectory mapper T.

(LiFT, arXiv 2605.19060; METHOD.md variant 1.) A volume is ``stack_k G(w_k, s_k)`` with the
codes ``w_1 .. w_D`` from the trajectory mapper T (or, in the no-mapper ablation, drawn
independently). E is only needed for training (the drifting losses live in its feature space)
but travels with the model so a run folder is self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from lift3d.models.encoder import SliceEncoder
from lift3d.models.slice_generator import DEPTH_MAX_FREQUENCY, SliceGenerator
from lift3d.models.trajectory import TrajectoryMapper, independent_latents

GENERATION_SIZES: dict[str, dict[str, object]] = {
    # name: encoder widths, generator width, latent size, mapper hidden / layers
    "tiny": {"widths": (8, 16, 32), "width": 64, "latent": 32, "hidden": 64, "layers": 1},
    "small": {"widths": (16, 32, 64), "width": 128, "latent": 64, "hidden": 128, "layers": 2},
    "base": {"widths": (32, 64, 128), "width": 256, "latent": 128, "hidden": 256, "layers": 2},
}


class GenerationModel(nn.Module):
    """E + G + T for unconditional volumes of shape (C, D, H, W).

    Args:
        encoder: slice encoder E (frozen after its stage).
        generator: slice generator G(w, s).
        mapper: trajectory mapper T.
        shape: (D, H, W) model grid.
        slice_batch: slices decoded per G call when sampling (bounds memory; 16 keeps a
            240 x 240 full-resolution activation in cache-friendly ~60 MB pieces: 3x faster
            on CPU than 64).
    """

    def __init__(
        self,
        encoder: SliceEncoder,
        generator: SliceGenerator,
        mapper: TrajectoryMapper,
        shape: Sequence[int],
        slice_batch: int = 16,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.generator = generator
        self.mapper = mapper
        self.shape = tuple(int(s) for s in shape)
        self.channels = generator.out_channels
        self.slice_batch = slice_batch
        if generator.slice_size != self.shape[1:]:
            raise ValueError(
                f"generator slice size {generator.slice_size} != grid {self.shape[1:]}"
            )

    def freeze_for_mapper(self) -> None:
        """Freeze E and G (no grads, eval mode) so only T trains (METHOD.md: G, E frozen)."""
        for part in (self.encoder, self.generator):
            part.eval()
            for p in part.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> GenerationModel:
        """Like nn.Module.train, but frozen parts (no trainable parameter) stay in eval mode."""
        super().train(mode)
        for part in (self.encoder, self.generator, self.mapper):
            if not any(p.requires_grad for p in part.parameters()):
                part.eval()
        return self

    @property
    def num_slices(self) -> int:
        return self.shape[0]

    def depths(self, device: torch.device | str = "cpu") -> Tensor:
        """(D,) normalised depths s_k = k / (D - 1)."""
        d = self.num_slices
        return torch.linspace(0, 1, d, device=device) if d > 1 else torch.zeros(1, device=device)

    def decode(self, codes: Tensor, depths: Tensor | None = None) -> Tensor:
        """Stack G(w_k, s_k) over k.

        Args:
            codes: (B, D, latent) trajectories.
            depths: (D,) the normalised depth of each code, or None: all of the model's
                slices (`depths`), D = ``num_slices``.

        Returns:
            (B, C, D, H, W) volumes in [0, 1].
        """
        b, d, _ = codes.shape
        if depths is None:
            depths = self.depths(codes.device)
        s = depths.to(codes.device).repeat(b)  # (B * D,)
        flat = rearrange(codes, "b d l -> (b d) l")
        if flat.requires_grad or flat.shape[0] <= self.slice_batch:
            slices = self.generator(flat, s)
        else:
            slices = torch.cat(
                [
                    self.generator(flat[i : i + self.slice_batch], s[i : i + self.slice_batch])
                    for i in range(0, flat.shape[0], self.slice_batch)
                ]
            )
        return rearrange(slices, "(b d) c h w -> b c d h w", b=b, d=d)

    def trajectories(
        self, n: int, generator: torch.Generator | None = None, use_mapper: bool = True
    ) -> Tensor:
        """(n, D, latent) codes: from T, or independent per slice (no-mapper ablation)."""
        device = next(self.parameters()).device
        if not use_mapper:
            codes = independent_latents(n, self.num_slices, self.generator.latent_dim, generator)
            return codes.to(device)
        eps, per_slice = self.mapper.sample_noise(n, self.num_slices, generator, device)
        return self.mapper(eps, per_slice)

    @torch.inference_mode()
    def sample(
        self, n: int, generator: torch.Generator | None = None, use_mapper: bool = True
    ) -> Tensor:
        """Sample n volumes, one at a time.

        Args:
            n: number of volumes.
            generator: CPU RNG for the noise (reproducible across devices).
            use_mapper: False gives the no-mapper ablation.

        Returns:
            (n, C, D, H, W) volumes in [0, 1].
        """
        vols = [self.decode(self.trajectories(1, generator, use_mapper)) for _ in range(n)]
        return torch.cat(vols, dim=0)


def build_generation(
    size: str,
    channels: int,
    shape: Sequence[int],
    encoder_objective: str = "denoise",
    generator_latent: int = 0,
    autoencoder_width: int = 32,
    generator_depth_frequency: float = DEPTH_MAX_FREQUENCY,
) -> GenerationModel:
    """Build E, G, T for a size name (see `GENERATION_SIZES`); ``generator_latent=c > 0``: G
    draws c-channel latent maps for a slice autoencoder's decoder (`SliceGenerator`)."""
    if size not in GENERATION_SIZES:
        raise ValueError(
            f"unknown generation model size {size!r}; one of {sorted(GENERATION_SIZES)}"
        )
    spec = GENERATION_SIZES[size]
    d, h, w = (int(s) for s in shape)
    encoder = SliceEncoder(channels, spec["widths"], objective=encoder_objective)  # type: ignore[arg-type]
    generator = SliceGenerator(
        spec["latent"],  # type: ignore[arg-type]
        channels,
        (h, w),
        width=spec["width"],  # type: ignore[arg-type]
        latent_channels=generator_latent,
        autoencoder_width=autoencoder_width,
        depth_frequency=generator_depth_frequency,
    )
    mapper = TrajectoryMapper(spec["latent"], d, hidden=spec["hidden"], layers=spec["layers"])  # type: ignore[arg-type]
    return GenerationModel(encoder, generator, mapper, (d, h, w))
