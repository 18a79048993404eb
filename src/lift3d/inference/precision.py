"""Inference precision and compilation, shared by translation, generation and `lift3d bench`.

``fp32`` is the reference. ``bf16`` runs the network under `torch.autocast` with bfloat16: the
weights stay float32, convolutions and matmuls run in bf16, and autocast keeps normalisations
and reductions in float32. Callers cast the network output back to float32 before anything
else touches it (clamping, restoring onto the source grid, the NaN check), so written volumes
are float32 whatever the precision.

``auto`` is bf16 on a CUDA device that supports it and fp32 on the CPU. On a CPU with AMX-BF16,
bf16 is faster for every shipped model (a 64^3 volume: `small` translation 0.083 vs 0.129 s since
it mixes two levels, `base` 0.18 vs 0.45 s, sampling the demo's latent generation model 58 vs
128 ms), but it moves outputs by a few HU on average (tens of HU at worst, at sharp edges;
docs/journal/2026-11-27-precision-and-throughput.md), CPUs without bf16 matrix units run it
slower than fp32, and CPU training validates in fp32. So on the CPU bf16 is opt-in
(``--precision bf16``): worth passing on AMX CPUs.

``compile`` (`torch.compile` of the per-slice blocks) is opt-in; the first call pays the
compilation. On CUDA it compiles every translator and slice-generator block; on the CPU only
the z-mixer's blocks (`translation_blocks`, `generation_blocks`), the ones it makes faster there.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")

# Dense (no sparsity) peak TFLOP/s of known devices, for the fraction of peak `lift3d bench`
# reports. Vendor data sheets; tensor-core bf16 and plain fp32 (no TF32).
DEVICE_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"bf16": 989.0, "fp32": 67.0},
    "H100 80GB HBM3": {"bf16": 989.0, "fp32": 67.0},
    "H100 PCIe": {"bf16": 756.0, "fp32": 51.0},
    "H100 NVL": {"bf16": 835.0, "fp32": 60.0},
    "H200": {"bf16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp32": 19.5},
}


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``auto`` | ``fp32`` | ``bf16`` on `device` -> ``fp32`` | ``bf16``.

    Raises:
        ValueError: an unknown value, or bf16 on a CUDA device without bf16 support.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    cuda = torch.device(device).type == "cuda"
    if precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError("this CUDA device does not support bf16; use --precision fp32")
    return precision


def autocast(device: str | torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for a resolved `precision` on `device` (fp32: autocast disabled,
    so an enclosing autocast does not leak in)."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")


# The translator's blocks: plain (small sizes) and residual (base, large) convolution blocks,
# and the z-mixer's blocks, whose LayerNorm / projections / z-taps / GELU are memory-bound
# passes over narrow channels that compiling fuses.
TRANSLATION_BLOCKS = ("ConvBlock", "ResBlock", "ZMixerBlock")
# On the CPU only the mixer blocks: inductor's convolution blocks ran slower than the eager
# oneDNN ones (2-core CPU, 64^3, 32-slice chunks: `small` 175 ms per volume with every block
# compiled vs 147 ms with the mixer blocks only and 195 ms eager; `base` 492 vs 471 vs 489 ms;
# docs/journal/2026-11-28-compiled-mixers.md).
CPU_TRANSLATION_BLOCKS = ("ZMixerBlock",)
# Compiled graphs are cached per forward function, shared by every instance of a block class;
# each level's channel count and each z-chunk's slice count is a new graph, more than
# torch._dynamo's default limit (8) for a U-Net with mixers, past which calls silently run eager.
RECOMPILE_LIMIT = 64


def translation_blocks(device: str | torch.device) -> tuple[str, ...]:
    """The translator block classes `compile_blocks` compiles on `device`."""
    return CPU_TRANSLATION_BLOCKS if torch.device(device).type == "cpu" else TRANSLATION_BLOCKS


# The slice generator's modulated blocks. Not on the CPU: compiled they ran slower there (2-core
# CPU, one 64^3 sample: `small` 0.057 vs 0.041 s eager, `base` 0.081 vs 0.071 s).
GENERATION_BLOCKS = ("_ModBlock",)


def generation_blocks(device: str | torch.device) -> tuple[str, ...]:
    """The generation model's block classes `compile_blocks` compiles on `device`."""
    return () if torch.device(device).type == "cpu" else GENERATION_BLOCKS


def compile_blocks(model: nn.Module, names: tuple[str, ...] = TRANSLATION_BLOCKS) -> int:
    """`torch.compile` each submodule whose class name is in `names`, in place.

    The translator and the slice generator are U-Nets of small convolution blocks driven by
    Python code (z-chunk streaming, the mixers); compiling the blocks fuses convolution,
    GroupNorm and SiLU (and the mixers' pointwise passes) without tracing that code. Raises
    torch._dynamo's recompile limit to `RECOMPILE_LIMIT` (if lower) so that every block shape
    gets its graph. Returns the number of blocks compiled.
    """
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    count = 0
    for module in model.modules():
        if type(module).__name__ in names:
            module.compile()
            count += 1
    log.info("compiled %d block(s) of %s", count, type(model).__name__)
    return count


@contextlib.contextmanager
def inference_mode(device: str | torch.device, precision: str) -> Iterator[None]:
    """``no_grad`` plus the autocast of the resolved `precision`."""
    with torch.no_grad(), autocast(device, precision):
        yield


def peak_tflops(device_name: str, precision: str) -> float | None:
    """Dense peak TFLOP/s of a known GPU at `precision` (fp32 | bf16), else None."""
    for key, peaks in DEVICE_PEAK_TFLOPS.items():
        if all(part in device_name for part in key.split()):
            return peaks.get(precision)
    return None
