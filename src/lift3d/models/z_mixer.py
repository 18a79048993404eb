"""Bidirectional z-context mixer M of LiFT paired translation (METHOD.md, "Components").

The per-slice features of one volume, ``h`` of shape (B, D, ..., F) (slice axis second, feature
channels last, any in-plane positions between: (B, D, F) vectors or (B, D, h, w, F) maps), are
mixed along depth in both directions: a *forward* (causal) depthwise convolution sees slices
``d - z_context .. d`` and a *backward* (anti-causal) one sees ``d .. d + z_context``. Their outputs
are joined, projected and added back as a zero-initialised residual, ``h'_d = h_d + M(h)_d``: at
initialisation the mixer is exactly the identity, so training starts from the per-slice
translator F.

With ``inplane=k > 0`` each z-tap also has its own k x k in-plane kernel (a directional depthwise
3D convolution, kernel (z_context + 1) x k x k): a slice can then be compared with its neighbours
*at nearby in-plane positions*, which a pointwise tap cannot do, e.g. to undo the in-plane
displacement between the two packages of an interleaved 2D MR stack. Everything else is pointwise
in (d, y, x), and in-plane kernels see whole slices, so the receptive field along z is finite, ``depth * z_context`` slices on each side; that makes overlapping z-chunk inference exact
(`lift3d.models.lift.TranslationModel`). Channels-last layout keeps the pointwise projections
plain matrix products, which is several times faster on CPU than 1x1x1 `Conv3d`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DirectionalZConv(nn.Module):
    """Depthwise 1D convolution along z (dim 1) that sees one direction; zero padding at the ends.

    ``forward=True``: ``out[d] = b + sum_j w_j * x[d - j]``, j = 0..z_context (earlier slices);
    ``forward=False``: ``out[d] = b + sum_j w_j * x[d + j]`` (later slices).
    With ``inplane=k > 0`` each ``w_j`` is a k x k in-plane kernel (zero padding in plane) and
    the input must be per-slice maps (B, D, h, w, E).
    """

    def __init__(self, channels: int, z_context: int, forward: bool, inplane: int = 0) -> None:
        super().__init__()
        if inplane < 0 or (inplane and inplane % 2 == 0):
            raise ValueError(f"in-plane mixer kernel must be 0 or odd, got {inplane}")
        self.z_context = z_context
        self.causal = forward
        self.inplane = inplane
        taps = (z_context + 1, inplane, inplane) if inplane else (z_context + 1,)
        weight = 0.02 * torch.randn(*taps, channels)
        # start near the identity tap; the zero-init projection keeps M(h) = 0
        centre = (0, inplane // 2, inplane // 2) if inplane else (0,)
        weight[centre] += 1.0
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        """(B, D, ..., E) -> (B, D, ..., E)."""
        z, depth = self.z_context, x.shape[1]
        if self.inplane:
            return self._forward_3d(x)
        # Tap 0, then each further tap added in place to the slices it reaches (taps past the
        # ends see zeros and add nothing): no padded copy, one pass per tap.
        out = torch.addcmul(self.bias, x, self.weight[0])
        for j in range(1, min(z, depth - 1) + 1):
            if self.causal:  # out[d] += w_j * x[d - j]
                out[:, j:].addcmul_(x[:, : depth - j], self.weight[j])
            else:  # out[d] += w_j * x[d + j]
                out[:, : depth - j].addcmul_(x[:, j:], self.weight[j])
        return out

    def _forward_3d(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            raise ValueError(
                f"an in-plane mixer kernel needs (B, D, h, w, E) maps, got {x.dim()}-D"
            )
        z, k = self.z_context, self.inplane
        xc = x.permute(0, 4, 1, 2, 3)  # (B, E, D, h, w)
        xc = F.pad(xc, (0, 0, 0, 0, z, 0) if self.causal else (0, 0, 0, 0, 0, z))
        # conv3d correlates: out[d] = sum_t W[t] xp[d + t]; causal xp[d + t] = x[d + t - z], so
        # W[t] = w_{z - t}; anti-causal xp[d + t] = x[d + t], W[t] = w_t
        w = self.weight.flip(0) if self.causal else self.weight  # (z + 1, k, k, E)
        w = w.permute(3, 0, 1, 2).unsqueeze(1)  # (E, 1, z + 1, k, k)
        out = F.conv3d(xc, w, self.bias, padding=(0, k // 2, k // 2), groups=x.shape[-1])
        return out.permute(0, 2, 3, 4, 1)  # (B, D, h, w, E)


class ZMixerBlock(nn.Module):
    """LayerNorm -> in-projection -> forward and backward z-convolutions -> GELU ->
    out-projection (zero-initialised) -> residual. All but the z-convolutions are pointwise."""

    def __init__(self, feat_dim: int, hidden_dim: int, z_context: int, inplane: int = 0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(feat_dim)
        self.proj_in = nn.Linear(feat_dim, hidden_dim)
        self.fwd = DirectionalZConv(hidden_dim, z_context, forward=True, inplane=inplane)
        self.bwd = DirectionalZConv(hidden_dim, z_context, forward=False, inplane=inplane)
        self.proj_out = nn.Linear(2 * hidden_dim, feat_dim)
        # Zero-init output projection: training starts exactly at the per-slice (no-mapper) model.
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, h: Tensor) -> Tensor:
        u = self.proj_in(self.norm(h))  # (B, D, ..., E)
        # proj_out of [gelu(fwd), gelu(bwd)] (B, D, ..., 2E), as two products on the halves of
        # its weight: no concatenated copy (10-15 % faster on the CPU, same function).
        e = u.shape[-1]
        w = self.proj_out.weight
        out = F.linear(F.gelu(self.fwd(u)), w[:, :e], self.proj_out.bias)
        gb = F.gelu(self.bwd(u))
        if out.dtype != h.dtype or out.dtype != w.dtype:  # autocast: h stays in its precision
            return h + out + F.linear(gb, w[:, e:])
        # The second product and the residual accumulate in place into the first product's
        # output: one full-size tensor instead of four.
        out.view(-1, out.shape[-1]).addmm_(gb.reshape(-1, e), w[:, e:].t())
        return out.add_(h)  # (B, D, ..., F)


class BidirectionalZMixer(nn.Module):
    """Stack of `depth` bidirectional z-mixing blocks.

    Args:
        feat_dim: feature channels F (last dim of the input).
        depth: number of blocks.
        z_context: slices seen on each side by one block.
        hidden_dim: width inside a block (default: ``feat_dim``).
        inplane: in-plane kernel of each z-tap (odd; 0: pointwise taps, the plain mixer).
    """

    def __init__(
        self,
        feat_dim: int,
        depth: int = 2,
        z_context: int = 4,
        hidden_dim: int | None = None,
        inplane: int = 0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"mixer depth must be >= 1, got {depth}")
        if z_context < 1:
            raise ValueError(f"z_context must be >= 1, got {z_context}")
        self.feat_dim = feat_dim
        self.depth = depth
        self.z_context = z_context
        hidden = hidden_dim or feat_dim
        self.blocks = nn.ModuleList(
            ZMixerBlock(feat_dim, hidden, z_context, inplane) for _ in range(depth)
        )

    @property
    def receptive_field(self) -> int:
        """Slices on each side that can influence one output slice."""
        return self.depth * self.z_context

    def forward(self, h: Tensor) -> Tensor:
        """Mix per-slice features along z in both directions.

        Args:
            h: (B, D, F) per-slice vectors or (B, D, h, w, F) per-slice maps; slice 0 first.

        Returns:
            Same shape; slice d sees slices d - depth*z_context .. d + depth*z_context.
        """
        if h.dim() < 3 or h.shape[-1] != self.feat_dim:
            raise ValueError(
                f"expected (B, D, ..., {self.feat_dim}) features, got {tuple(h.shape)}"
            )
        for block in self.blocks:
            h = block(h)
        return h
