"""One-step 2D slice generator G(w, s) (LiFT, arXiv 2605.19060; METHOD.md "Components").

G maps a latent code ``w`` and a normalised depth ``s in [0, 1]`` to one slice in one forward
pass. The default is a small convolutional generator (a constant-free StyleGAN-like stack:
the code and a depth embedding set the first feature map and modulate every block) trained with
the drifting objective in the encoder's feature space. Any one-step differentiable generator with
a latent input fits the interface ``generate(noise, cond) -> (N, C, H, W)``.

With ``latent_channels=c > 0`` the stack draws a small latent map (c, H/4, W/4) instead of
pixels, and the decoder of a slice autoencoder (`SliceAutoencoder`, trained beforehand to
reconstruct real slices and then frozen) turns it into the slice: the decoder supplies the
sharp edges and texture it learned from real slices, and the drifting loss only has to place
the small latent (the "autoencoder decoder" generator of METHOD.md, "Components").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lift3d.models.encoder import group_norm
from lift3d.models.layers import GroupNorm, upsample_conv

# The depth embedding's highest frequency (sin(f * pi * s)) unless a model sets its own.
DEPTH_MAX_FREQUENCY = 64.0


def depth_embedding(s: Tensor, dim: int, max_frequency: float = DEPTH_MAX_FREQUENCY) -> Tensor:
    """Sinusoidal embedding of normalised depth.

    Args:
        s: (N,) depths in [0, 1].
        dim: even embedding size.
        max_frequency: the highest component is ``sin(max_frequency * pi * s)``, frequencies
            geometric from 1: at 64 its period is 2/64 of the depth range, two slices of a
            64-slice volume.

    Returns:
        (N, dim).
    """
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, device=s.device, dtype=torch.float32)
        * (math.log(max_frequency) / max(half - 1, 1))
    )
    angles = s.float()[:, None] * freqs[None] * math.pi
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def with_depth_channels(h: Tensor, s: Tensor, dim: int) -> Tensor:
    """(N, C, H, W) maps -> (N, C + dim, H, W): each map with its depth's `depth_embedding`
    as `dim` constant channels."""
    e = depth_embedding(s, dim).to(h.dtype)[:, :, None, None]
    return torch.cat([h, e.expand(-1, -1, *h.shape[-2:])], dim=1)


class _ModBlock(nn.Module):
    """Upsample x2, conv, norm, FiLM from the style vector, SiLU."""

    def __init__(self, cin: int, cout: int, style_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm = GroupNorm(min(8, cout), cout, affine=False)
        self.film = nn.Linear(style_dim, 2 * cout)
        # FiLM starts as identity (scale 1, shift 0).
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: Tensor, style: Tensor, size: tuple[int, int]) -> Tensor:
        h = F.silu(upsample_conv(h, self.conv1, size))  # = conv1(nearest upsampling to size)
        scale, shift = self.film(style)[:, :, None, None].chunk(2, dim=1)
        h = self.norm(self.conv2(h)) * (1 + scale) + shift
        return F.silu(h)


class SliceAutoencoder(nn.Module):
    """Deterministic 2D autoencoder: slice (C, H, W) in [0, 1] <-> latent map (c, ~H/4, ~W/4)
    in [-1, 1] (tanh). Trained with an L1 reconstruction loss (`reconstruction_loss`).

    Args:
        channels: slice channels C.
        latent_channels: c.
        width: channels at full resolution (2x width at 1/2 and 1/4).
    """

    FACTOR = 4

    def __init__(self, channels: int = 1, latent_channels: int = 4, width: int = 32) -> None:
        super().__init__()
        self.channels = channels
        self.latent_channels = latent_channels
        w, w2 = width, 2 * width
        self.enc = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(w, w2, 3, stride=2, padding=1),
            group_norm(w2),
            nn.SiLU(),
            nn.Conv2d(w2, w2, 3, padding=1),
            group_norm(w2),
            nn.SiLU(),
            nn.Conv2d(w2, w2, 3, stride=2, padding=1),
            group_norm(w2),
            nn.SiLU(),
            nn.Conv2d(w2, latent_channels, 1),
        )
        self.dec_low = nn.Sequential(
            nn.Conv2d(latent_channels, w2, 3, padding=1),
            group_norm(w2),
            nn.SiLU(),
            nn.Conv2d(w2, w2, 3, padding=1),
            group_norm(w2),
            nn.SiLU(),
        )
        self.dec_mid = nn.Sequential(
            nn.Conv2d(w2, w, 3, padding=1), group_norm(w), nn.SiLU(), nn.Conv2d(w, w, 3, padding=1)
        )
        self.dec_high = nn.Sequential(
            group_norm(w),
            nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(w, channels, 3, padding=1),
        )

    @staticmethod
    def latent_size(size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the latent map of an (H, W) slice."""
        return tuple(math.ceil(math.ceil(n / 2) / 2) for n in size)  # type: ignore[return-value]

    def encode(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, c, ~H/4, ~W/4) in [-1, 1]."""
        return torch.tanh(self.enc(x))

    def decode(self, z: Tensor, size: tuple[int, int]) -> Tensor:
        """(N, c, h, w) latent maps -> (N, C, H, W) slices in [0, 1]."""
        h = self.dec_low(z)
        mid = (math.ceil(size[0] / 2), math.ceil(size[1] / 2))
        # each upsampling and the 3x3 convolution after it run as one transposed convolution
        # (`upsample_conv`: the same function, never the upsampled map)
        up_conv, mid_norm, mid_act, mid_conv = self.dec_mid
        h = mid_conv(mid_act(mid_norm(upsample_conv(h, up_conv, mid))))
        norm, act, conv, act2, out = self.dec_high
        if tuple(size) == (2 * mid[0], 2 * mid[1]):
            # GroupNorm and SiLU commute with an exact nearest x2 (each value repeated four
            # times keeps every group's mean and variance): run them at half size
            h = upsample_conv(act(norm(h)), conv, size)
        else:
            h = conv(act(norm(F.interpolate(h, size=size, mode="nearest"))))
        return torch.sigmoid(out(act2(h)))

    def reconstruction_loss(self, x: Tensor) -> Tensor:
        """L1 between slices and their reconstruction."""
        return F.l1_loss(self.decode(self.encode(x), tuple(x.shape[-2:])), x)


class SliceGenerator(nn.Module):
    """Convolutional generator from (w, s) to an (C, H, W) slice in [0, 1].

    Args:
        latent_dim: size of w.
        out_channels: C.
        slice_size: (H, W) of the output slice.
        width: channels of the first (coarsest) feature map; halved per block down to 16.
        depth_dim: size of the depth embedding.
        depth_conditioned: feed the depth s (False: G ignores s).
        latent_channels: 0 = the stack draws pixels; c > 0 = it draws a (c, ~H/4, ~W/4)
            latent map that the decoder of ``self.autoencoder`` (a `SliceAutoencoder`, trained
            on real slices before G and frozen with it) turns into the slice.
        autoencoder_width: that autoencoder's channels at full resolution.
        depth_frequency: the highest frequency of the depth embedding (`depth_embedding`).
    """

    def __init__(
        self,
        latent_dim: int = 64,
        out_channels: int = 1,
        slice_size: tuple[int, int] = (64, 64),
        width: int = 128,
        depth_dim: int = 16,
        depth_conditioned: bool = True,
        latent_channels: int = 0,
        autoencoder_width: int = 32,
        depth_frequency: float = DEPTH_MAX_FREQUENCY,
    ) -> None:
        super().__init__()
        self.depth_frequency = float(depth_frequency)
        self.latent_dim = latent_dim
        self.out_channels = out_channels
        self.slice_size = (int(slice_size[0]), int(slice_size[1]))
        self.depth_dim = depth_dim
        self.depth_conditioned = depth_conditioned
        self.latent_channels = latent_channels
        self.autoencoder = (
            SliceAutoencoder(out_channels, latent_channels, autoencoder_width)
            if latent_channels > 0
            else None
        )
        h, w = self.slice_size
        if self.autoencoder is not None:
            h, w = SliceAutoencoder.latent_size(self.slice_size)
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
        self.head = nn.Conv2d(chans[-1], latent_channels or out_channels, 3, padding=1)
        self.chans = chans

    def forward(self, w: Tensor, s: Tensor | None = None) -> Tensor:
        """Generate slices.

        Args:
            w: (N, latent_dim) latent codes (standard normal for the prior).
            s: (N,) normalised depths in [0, 1] (ignored when not depth-conditioned).

        Returns:
            (N, C, H, W) slices in [0, 1].
        """
        h = self._features(w, s)
        if self.autoencoder is not None:
            return self.autoencoder.decode(torch.tanh(self.head(h)), self.slice_size)
        return torch.sigmoid(self.head(h))

    def latent_map(self, w: Tensor, s: Tensor | None = None) -> Tensor:
        """The (N, c, ~H/4, ~W/4) latent maps in [-1, 1] that the decoder turns into slices
        (a latent generator only; arguments as in `forward`)."""
        if self.autoencoder is None:
            raise ValueError("latent_map needs a latent generator (latent_channels > 0)")
        return torch.tanh(self.head(self._features(w, s)))

    def _features(self, w: Tensor, s: Tensor | None) -> Tensor:
        """The last block's feature map, before the head."""
        if self.depth_conditioned:
            if s is None:
                raise ValueError("this generator is depth-conditioned: pass s")
            emb = depth_embedding(s, self.depth_dim, self.depth_frequency)
            w_in = torch.cat([w, emb.to(w.dtype)], dim=1)
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
        return h

    def generate(self, noise: Tensor, cond: Tensor | None = None) -> Tensor:
        """The generic 2D-generator interface: ``noise`` = w, ``cond`` = depth s."""
        return self(noise, cond)


class SelfUpdatingCritic(nn.Module):
    """A critic that takes its own Adam steps (`update`) inside another module's training step,
    before that module's loss is formed. Its Adam moments are buffers, so they are checkpointed
    with its weights and a resumed run continues exactly; subclasses call `init_moments` once
    their parameters exist."""

    def init_moments(self) -> None:
        for i, param in enumerate(self.parameters()):
            self.register_buffer(f"adam_m{i}", torch.zeros_like(param))
            self.register_buffer(f"adam_v{i}", torch.zeros_like(param))
        self.register_buffer("adam_step", torch.zeros((), dtype=torch.long))

    def hinge_update(self, real: tuple[Tensor, ...], fake: tuple[Tensor, ...], lr: float) -> Tensor:
        """One Adam step (`update`) on the hinge loss ``relu(1 - critic(*real)).mean() +
        relu(1 + critic(*fake)).mean()``; the parameters take gradients for this step only
        (their flags are restored). Pass detached inputs. Returns the loss, detached."""
        params = list(self.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        try:
            loss = F.relu(1 - self(*real)).mean() + F.relu(1 + self(*fake)).mean()
            self.update(loss, lr)
        finally:
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)
        return loss.detach()

    def update(
        self,
        loss: Tensor,
        lr: float,
        betas: tuple[float, float] = (0.5, 0.99),
        eps: float = 1e-8,
    ) -> None:
        """One Adam step of the critic's parameters on `loss` (its gradients only: the graph
        behind `loss` is not kept and nothing else receives gradients). Across processes the
        gradients are averaged first, so every rank's critic stays the same."""
        params = list(self.parameters())
        grads = torch.autograd.grad(loss, params)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            for g in grads:
                torch.distributed.all_reduce(g)
                g.div_(world)
        b1, b2 = betas
        with torch.no_grad():
            self.adam_step += 1
            t = int(self.adam_step)
            for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                m, v = getattr(self, f"adam_m{i}"), getattr(self, f"adam_v{i}")
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v / (1 - b2**t)).sqrt_().add_(eps)
                p.addcdiv_(m, denom, value=-lr / (1 - b1**t))


class LatentDiscriminator(SelfUpdatingCritic):
    """Tells a latent G's maps from the autoencoder's codes of real slices at the same depth.

    Spectrally normalised convolutions (two stride-2 stages) over the latent map with the depth
    embedding as extra channels, pooled to 4 x 4 cells and a linear score (hinge loss,
    `lift3d.training.generate.adversarial_generator_step`). The drifting loss compares pooled
    encoder features, which do not see how sharply the codes change from cell to cell; real
    codes change sharply and G's smooth codes decode to a grid
    (docs/journal/2026-11-28-latent-generator-grid.md), which this critic sees at once.

    Args:
        latent_channels: c of the latent maps.
        depth_dim: size of the depth embedding.
        width: channels of the first convolution (2x and 4x after each stride-2 stage).
    """

    def __init__(self, latent_channels: int, depth_dim: int = 16, width: int = 64) -> None:
        super().__init__()
        from torch.nn.utils.parametrizations import spectral_norm

        self.depth_dim = depth_dim
        w = width
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(latent_channels + depth_dim, w, 3, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(w, 2 * w, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * w, 2 * w, 3, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * w, 4 * w, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
        )
        self.fc = spectral_norm(nn.Linear(4 * w * 16, 1))

        self.init_moments()

    def forward(self, z: Tensor, s: Tensor) -> Tensor:
        """(N, c, h, w) latent maps and (N,) depths -> (N,) scores (real: high)."""
        h = self.net(with_depth_channels(z, s, self.depth_dim))
        return self.fc(F.adaptive_avg_pool2d(h, 4).flatten(1))[:, 0]


class SliceCritic(SelfUpdatingCritic):
    """Tells real slices from slices decoded from a latent G's maps, patch by patch.

    Trains against the slice autoencoder's decoder in its tuning stage
    (`lift3d.training.generate.train_decoder`): the decoder learned to render the encoder's
    codes of real slices, which change sharply from cell to cell, and renders G's smoother maps
    as a grid of its upsampling blocks (docs/journal/2026-11-28-latent-generator-grid.md). A
    grid, or any other texture real slices do not have, is what a patch critic sees at once.
    Spectrally normalised stride-2 convolutions (receptive field 22 voxels, about a quarter of
    a 64-voxel slice), one score per patch (hinge loss, mean over patches).

    With ``depth_dim > 0`` the critic also sees each slice's depth (its embedding joins the
    first convolution's output as extra channels), so a patch is judged against real slices
    from the same level of the head (a ventricle belongs in the middle slices, not the top
    ones) rather than against every depth's slices at once.

    Args:
        channels: slice channels C.
        width: channels of the first convolution (2x and 4x after it).
        depth_dim: size of the depth embedding (0: the critic does not see depth).
    """

    def __init__(self, channels: int = 1, width: int = 32, depth_dim: int = 0) -> None:
        super().__init__()
        from torch.nn.utils.parametrizations import spectral_norm

        w = width
        self.depth_dim = depth_dim
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, w, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(w + depth_dim, 2 * w, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * w, 4 * w, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(4 * w, 1, 3, padding=1)),
        )
        self.init_moments()

    def forward(self, x: Tensor, s: Tensor | None = None) -> Tensor:
        """(N, C, H, W) slices in [0, 1] (and (N,) depths in [0, 1] when the critic sees
        depth) -> (N, h, w) patch scores (real: high)."""
        h = self.net[:2](x * 2 - 1)
        if self.depth_dim:
            if s is None:
                raise ValueError("this critic sees depth: pass the slices' depths")
            h = with_depth_channels(h, s, self.depth_dim)
        return self.net[2:](h)[:, 0]
