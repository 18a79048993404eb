"""LiFT models that compose the parts (METHOD.md).

`TranslationModel` (paired translation): the per-slice 2D translator F
(`lift3d.models.translator.SliceUNet`) with bidirectional z-context mixers M
(`lift3d.models.z_mixer.BidirectionalZMixer`) on its bottleneck and, optionally, on the first
decoder stages. With the mixers off (``use_mixer=False``: the *no-mapper ablation*) or at
initialisation (zero-init residuals) the model computes exactly F slice by slice.

2.5D input (``context_slices=k > 0``): F sees each slice with its k neighbouring source slices on
each side as extra channels (`slice_context`, edge slices replicated). The model assembles them
from the (B, C, D, H, W) input itself, by the same function for whole volumes, z-chunks and
training slabs, so every path gives each slice the same input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from lift3d.constants import BRATS_MODALITIES, TRANSLATE_TASKS
from lift3d.errors import InputError
from lift3d.models.translator import SliceUNet
from lift3d.models.z_mixer import BidirectionalZMixer


class TranslationModel(nn.Module):
    """Per-slice translator F + bidirectional z-context mixers M.

    Args:
        translator: the 2D U-Net F.
        mixer_levels: number of feature points mixed along z: 1 = bottleneck only (METHOD.md),
            k > 1 adds the outputs of the first k - 1 decoder stages (coarse to fine).
        mixer_depth: blocks per mixer.
        z_context: slices seen on each side by one mixer block.
        mixer_hidden: mixer block width as a fraction of the feature channels.
        mixer_inplane: in-plane kernel of each mixer z-tap (odd; 0: pointwise taps).
        use_mixer: default for `forward`; False gives the no-mapper ablation.
        chunk_size: default z-chunk (core slices) for `forward`; None processes whole volumes.
        context_slices: k source slices on each side given to F as extra channels (2.5D input);
            F's input channels must be C * (2k + 1). 0: the plain per-slice (2D) input.
    """

    def __init__(
        self,
        translator: SliceUNet,
        mixer_levels: int = 1,
        mixer_depth: int = 2,
        z_context: int = 4,
        mixer_hidden: float = 1.0,
        mixer_inplane: int = 0,
        use_mixer: bool = True,
        chunk_size: int | None = None,
        context_slices: int = 0,
    ) -> None:
        super().__init__()
        if context_slices < 0:
            raise ValueError(f"context_slices must be >= 0, got {context_slices}")
        if translator.in_channels % (2 * context_slices + 1):
            raise ValueError(
                f"translator input channels {translator.in_channels} are not a multiple of "
                f"2 * context_slices + 1 = {2 * context_slices + 1}"
            )
        points = translator.feature_channels()
        if not 1 <= mixer_levels <= len(points):
            raise ValueError(f"mixer_levels must be in 1..{len(points)}, got {mixer_levels}")
        # channels-last convolutions run ~1.5x faster on CPU (oneDNN) and suit tensor cores;
        # the per-slice features then also fold into the mixer's (B, D, h, w, C) layout cheaply.
        self.translator = translator.to(memory_format=torch.channels_last)
        self.mixers = nn.ModuleList(
            BidirectionalZMixer(
                c,
                depth=mixer_depth,
                z_context=z_context,
                hidden_dim=max(1, round(c * mixer_hidden)),
                inplane=mixer_inplane,
            )
            for c in points[:mixer_levels]
        )
        self.use_mixer = use_mixer
        self.chunk_size = chunk_size
        self.context_slices = context_slices

    @property
    def in_channels(self) -> int:
        """Source channels C of the (B, C, D, H, W) input (F sees C * (2k + 1) with context)."""
        return self.translator.in_channels // (2 * self.context_slices + 1)

    def receptive_field(self, use_mixer: bool | None = None) -> int:
        """Slices on each side that can change one output slice (0 without mixer)."""
        use_mixer = self.use_mixer if use_mixer is None else use_mixer
        return sum(m.receptive_field for m in self.mixers) if use_mixer else 0

    def _mix(self, level: int, h: Tensor, batch: int, use_mixer: bool) -> Tensor:
        if not use_mixer or level >= len(self.mixers):
            return h
        h5 = rearrange(h, "(b d) c y x -> b d y x c", b=batch)  # channels last for the mixer
        return rearrange(self.mixers[level](h5), "b d y x c -> (b d) c y x")

    def _forward_full(
        self, x: Tensor, use_mixer: bool, lo: int = 0, hi: int | None = None
    ) -> Tensor:
        """Whole-volume forward: (B, S, D, H, W) -> (B, 1, hi - lo, H, W), H and W padded as
        needed; output slices [lo, hi) (with the mixer: all slices, then cut)."""
        if use_mixer and (lo, hi) != (0, None):
            return self._forward_full(x, use_mixer)[:, :, lo:hi]
        b, _, _, hh, ww = x.shape
        m = self.translator.multiple
        pad_h, pad_w = (-hh) % m, (-ww) % m
        s = rearrange(slice_context(x, self.context_slices, lo, hi), "b c d h w -> (b d) c h w")
        if pad_h or pad_w:
            s = F.pad(s, (0, pad_w, 0, pad_h))
        s = s.contiguous(memory_format=torch.channels_last)
        h, skips = self.translator.encode(s)  # (B*D, C_last, h, w)
        h = self._mix(0, h, b, use_mixer)
        for i in range(self.translator.num_decoder_stages):
            h = self.translator.decode_stage(i, h, self.translator.skip_for_stage(i, skips))
            h = self._mix(i + 1, h, b, use_mixer)
        y = self.translator.head(h)[:, :, :hh, :ww]  # (B*D, 1, H, W)
        return rearrange(y, "(b d) c h w -> b c d h w", b=b)

    def forward(
        self,
        x: Tensor,
        use_mixer: bool | None = None,
        chunk_size: int | None = None,
        slices: tuple[int, int] | None = None,
    ) -> Tensor:
        """Translate a batch of volumes.

        Args:
            x: (B, S, D, H, W) source volumes, intensities in [0, 1].
            use_mixer: override the module default (False: per-slice F only).
            chunk_size: stream over z in chunks of this many output slices (see
                `_forward_streaming`), so memory does not grow with D; the result equals the
                whole-volume forward to float rounding. None: the module default.
            slices: only output slices [lo, hi) of `x` (the others serve as 2.5D context);
                without the mixer F runs on these slices only. None: all slices.

        Returns:
            (B, 1, D, H, W) target in the model's [0, 1] scale (not clamped); (B, 1, hi - lo,
            H, W) with `slices`.
        """
        use_mixer = self.use_mixer if use_mixer is None else use_mixer
        if slices is not None:
            return self._forward_full(x, use_mixer, *slices)
        chunk_size = self.chunk_size if chunk_size is None else chunk_size
        if not chunk_size or chunk_size >= x.shape[2]:
            return self._forward_full(x, use_mixer)
        return self._forward_streaming(x, use_mixer, chunk_size)

    def _forward_streaming(self, x: Tensor, use_mixer: bool, chunk_size: int) -> Tensor:
        """Overlapping z-chunk forward with bounded memory and no repeated per-slice work.

        The feature points (0 = bottleneck, i + 1 = output of decoder stage i) are streams of
        per-slice features. Each per-slice operation runs once per slice; a mixer with
        receptive field R turns the window [a - R, b + R) of its point into exact outputs
        [a, b). Buffers keep only the slices still needed, about ``chunk_size + 2 R`` per point.
        """
        b, _, depth, hh, ww = x.shape
        unet = self.translator
        m = unet.multiple
        pad_h, pad_w = (-hh) % m, (-ww) % m
        n_points = unet.num_decoder_stages + 1
        n_mixed = len(self.mixers) if use_mixer else 0
        radius = [self.mixers[p].receptive_field if p < n_mixed else 0 for p in range(n_points)]
        # buffers: point -> [first slice index, (B, n, h, w, C) features]; channels last, so
        # folding to (B*n, C, h, w) is a channels-last view and the mixer takes them as they are
        pre: list[list] = [[0, None] for _ in range(n_points)]
        skips: list[list] = [[0, None] for _ in range(unet.num_decoder_stages)]
        done = [0] * n_points  # slices [0, done[p]) computed at point p

        def fold(t5: Tensor) -> Tensor:
            return rearrange(t5, "b d y x c -> (b d) c y x")

        def unfold(t4: Tensor) -> Tensor:
            return rearrange(t4, "(b d) c y x -> b d y x c", b=b)

        def append(buf: list, t5: Tensor) -> None:
            buf[1] = t5 if buf[1] is None else torch.cat([buf[1], t5], dim=1)

        def take(buf: list, lo: int, hi: int) -> Tensor:
            return buf[1][:, lo - buf[0] : hi - buf[0]]

        def evict(buf: list, keep_from: int) -> None:
            if buf[1] is not None and keep_from > buf[0]:
                buf[1] = buf[1][:, keep_from - buf[0] :]
                buf[0] = keep_from

        def ensure(p: int, stop: int) -> None:
            """Compute pre-mix features at point p for slices [done[p], stop)."""
            start = done[p]
            if stop <= start:
                return
            if p == 0:
                s = slice_context(x, self.context_slices, start, stop)
                s = rearrange(s, "b c d h w -> (b d) c h w")
                if pad_h or pad_w:
                    s = F.pad(s, (0, pad_w, 0, pad_h))
                s = s.contiguous(memory_format=torch.channels_last)
                h, sk = unet.encode(s)
                append(pre[0], unfold(h))
                for i in range(unet.num_decoder_stages):
                    append(skips[i], unfold(unet.skip_for_stage(i, sk)))
            else:
                i = p - 1
                h = fold(post(i, start, stop))
                sk = fold(take(skips[i], start, stop))
                h = unet.decode_stage(i, h, sk)
                append(pre[p], unfold(h))
                evict(skips[i], stop)
            done[p] = stop

        def post(p: int, lo: int, hi: int) -> Tensor:
            """Mixed features at point p for slices [lo, hi), (B, hi - lo, h, w, C)."""
            r = radius[p]
            ensure(p, min(depth, hi + r))
            if p < n_mixed:
                a, z = max(0, lo - r), min(depth, hi + r)
                out = self.mixers[p](take(pre[p], a, z))[:, lo - a : hi - a]
            else:
                out = take(pre[p], lo, hi)
            evict(pre[p], max(0, hi - r))
            return out

        outs = []
        for lo in range(0, depth, chunk_size):
            hi = min(lo + chunk_size, depth)
            y = unet.head(fold(post(n_points - 1, lo, hi)))[:, :, :hh, :ww]  # (B*n, 1, H, W)
            outs.append(rearrange(y, "(b d) c h w -> b c d h w", b=b))
        return torch.cat(outs, dim=2)

    def translator_parameters(self) -> Sequence[nn.Parameter]:
        return list(self.translator.parameters())

    def mixer_parameters(self) -> Sequence[nn.Parameter]:
        return list(self.mixers.parameters())


def slice_context(x: Tensor, k: int, lo: int = 0, hi: int | None = None) -> Tensor:
    """2.5D input: each slice with its k neighbouring slices on each side as channels.

    Neighbours beyond the volume's ends repeat the edge slice (index clamped to [0, D - 1]), so
    a volume thinner than the context still works; a z-chunk [lo, hi) takes its neighbours from
    the whole `x` and so equals the same slices of the whole volume's result.

    Args:
        x: (B, C, D, H, W) source volume.
        k: context slices on each side (0: `x[:, :, lo:hi]` itself).
        lo: first output slice.
        hi: end of the output slices (exclusive); None: D.

    Returns:
        (B, C * (2k + 1), hi - lo, H, W): channel block j (of C channels) holds slice
        ``clamp(d + j - k, 0, D - 1)`` for output slice d, i.e. offsets -k, ..., 0, ..., +k.
    """
    depth = x.shape[2]
    hi = depth if hi is None else hi
    if k == 0:
        return x[:, :, lo:hi]
    d = torch.arange(lo, hi, device=x.device)
    blocks = [x[:, :, (d + off).clamp(0, depth - 1)] for off in range(-k, k + 1)]
    return torch.cat(blocks, dim=1)


def missing_modality_input(volumes: Tensor, missing: Tensor) -> Tensor:
    """Input of the one-model-for-any-missing-modality translator.

    Args:
        volumes: (B, M, D, H, W) the M modalities in their fixed slot order (BraTS: t1n, t1c,
            t2w, t2f); the missing slot's content is ignored.
        missing: (B,) long, index of the missing modality of each item.

    Returns:
        (B, 2M, D, H, W): the modalities with the missing slot zero-filled, then M constant
        one-hot planes saying which slot is missing.
    """
    b, m = volumes.shape[:2]
    onehot = F.one_hot(missing.long(), m).to(volumes.dtype)  # (B, M)
    present = volumes * (1.0 - onehot)[:, :, None, None, None]
    planes = onehot[:, :, None, None, None].expand(b, m, *volumes.shape[2:])
    return torch.cat([present, planes], dim=1)


# ------------------------------------------------------------------ the paired tasks' tensors


def task_modalities(task: str) -> tuple[list[str], str | None]:
    """(modality slots, fixed target) of a task: mr2ct -> (["mr"], "ct");
    missing -> (the four BraTS modalities, None: any of them)."""
    if task == "mr2ct":
        return ["mr"], "ct"
    if task == "missing":
        return list(BRATS_MODALITIES), None
    raise InputError(f"unknown translation task {task!r}; use one of {', '.join(TRANSLATE_TASKS)}")


def in_channels(task: str) -> int:
    """Model input channels: 1 for mr2ct; 4 slots + 4 one-hot planes for missing."""
    slots, target = task_modalities(task)
    return len(slots) if target is not None else 2 * len(slots)


def make_input(task: str, batch: dict[str, Any], missing: Tensor | None = None) -> Tensor:
    """Model input from a batch of (B, 1, ...) modality tensors.

    mr2ct: (B, 1, ...) MR. missing: (B, 8, ...) with slot `missing` (B,) zero-filled + one-hot.
    Slice batches (B, 1, H, W) get a singleton D axis: (B, C, 1, H, W).
    """
    slots, target = task_modalities(task)
    x = torch.cat([batch[m] for m in slots], dim=1)
    if x.dim() == 4:
        x = x[:, :, None]
    if target is not None:
        return x
    assert missing is not None
    return missing_modality_input(x, missing)


def select_target(task: str, batch: dict[str, Any], missing: Tensor | None = None) -> Tensor:
    """(B, 1, ...) target: CT, or each item's missing modality."""
    slots, target = task_modalities(task)
    if target is not None:
        y = batch[target]
    else:
        stacked = torch.cat([batch[m] for m in slots], dim=1)  # (B, 4, ...)
        idx = missing.view(-1, *([1] * (stacked.dim() - 1))).expand(-1, 1, *stacked.shape[2:])
        y = torch.gather(stacked, 1, idx)
    return y[:, :, None] if y.dim() == 4 else y
