"""Inference-cost benchmark: LiFT against a cWDM-configured 3D wavelet diffusion reference.

Method context: LiFT (Zhang et al., arXiv 2605.19060) synthesises a volume with D one-step 2D
passes plus one light pass along z; cWDM repeats a 3D U-Net over the wavelet volume ~1000 times.
`measure` runs one system on one device and reports, side by side with the others:

- ``seconds_per_volume``: median wall time of ``repeats`` (>= 5) timed runs after a warm-up run
  (``torch.cuda.synchronize`` around each timed run on GPU);
- ``flops_per_volume``: `torch.utils.flop_counter.FlopCounterMode` over the warm-up run, which
  counts 2 FLOPs per multiply-add of matmuls / convolutions / attention (element-wise ops and
  normalisation are not counted, for any system);
- ``peak_bytes``: on CPU the peak resident set size of the process while this system was built and
  run (the kernel's high-water mark VmHWM, reset through ``/proc/self/clear_refs`` before the
  system is built, so each system gets its own peak); on GPU the allocator peak
  (`torch.cuda.max_memory_allocated`). ``baseline_bytes`` is what the process held before;
- ``params``: parameter count;
- ``tflops_per_s``: achieved TFLOP/s, FLOPs / seconds (per step and per volume alike) and, on a
  GPU of known peak (`lift3d.inference.precision.DEVICE_PEAK_TFLOPS`), ``peak_fraction``.

Every system runs in one precision (``fp32``, or ``bf16`` autocast with float32 weights, as
`lift3d.inference` runs it), the reference included; the FLOP count does not depend on it.
``efficiency`` compares a LiFT system with the one-step reference: its seconds ratio divided
by its FLOP ratio, i.e. LiFT's achieved FLOP/s over the reference's (1 = equally efficient).

A system whose unit of work is one sampling step (the reference) reports ``seconds_per_step`` and
``flops_per_step``; its per-volume numbers are per-step x ``steps``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import platform
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lift3d.inference.precision import (
    autocast,
    compile_blocks,
    generation_blocks,
    peak_tflops,
    translation_blocks,
)
from lift3d.models.reference import (
    CWDM_CHANNELS,
    CWDM_CONDITIONS,
    HAAR_SUBBANDS,
    WaveletDiffusionReference,
)
from lift3d.models.registry import build_generation_model, build_translation_model
from lift3d.version import __version__

log = logging.getLogger(__name__)

MIN_REPEATS = 5

# A builder gets the device and returns (module for the parameter count, zero-argument callable
# doing one unit of work: one volume, or one sampling step when `System.steps` > 1).
Builder = Callable[[torch.device], tuple[nn.Module, Callable[[], Any]]]


@dataclass
class System:
    """One thing to measure.

    Args:
        name: row name, e.g. ``"lift-translate"``.
        build: see `Builder`; called once, inside the memory window.
        shape: (D, H, W) volume the system produces (model space).
        steps: units per volume; > 1 (or `per_step`) means the unit is one sampling step.
        per_step: report per-step fields (``seconds_per_step``, ``flops_per_step``, ``steps``).
        note: a short remark printed beside the row and stored in the JSON.
    """

    name: str
    build: Builder
    shape: tuple[int, int, int]
    steps: int = 1
    per_step: bool = False
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# memory


def _read_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def current_rss_bytes() -> int | None:
    """Resident set size of this process now (Linux), else None."""
    kb = _read_status_kb("VmRSS")
    return None if kb is None else kb * 1024


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _release_freed_memory(full: bool = False) -> None:
    """Collect garbage and hand freed heap back to the OS so the next baseline is honest.

    A full collection costs ~0.3 s once MONAI is imported; young generations are enough for the
    acyclic model graphs measured here, and `run_benchmark` does a full one between systems.
    """
    gc.collect() if full else gc.collect(1)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _RssSampler:
    """Fallback when the high-water mark cannot be reset: sample VmRSS from a thread."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss_bytes() or 0)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_bytes() or 0)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Measure the peak memory of the enclosed block; fills the yielded dict on exit.

    Keys: ``peak_bytes``, ``baseline_bytes``, ``memory_kind`` ("rss-hwm", "rss-sampled",
    "rss-process-max" or "cuda-allocator").
    """
    result: dict[str, Any] = {}
    _release_freed_memory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        result["baseline_bytes"] = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result["peak_bytes"] = torch.cuda.max_memory_allocated(device)
        result["memory_kind"] = "cuda-allocator"
        return
    result["baseline_bytes"] = current_rss_bytes()
    if _reset_rss_peak() and _read_status_kb("VmHWM") is not None:
        yield result
        result["peak_bytes"] = _read_status_kb("VmHWM") * 1024
        result["memory_kind"] = "rss-hwm"
    elif current_rss_bytes() is not None:
        with _RssSampler() as sampler:
            yield result
        result["peak_bytes"] = sampler.peak
        result["memory_kind"] = "rss-sampled"
    else:  # not Linux: the process-wide maximum, monotonic across systems
        import resource

        yield result
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result["peak_bytes"] = maxrss if platform.system() == "Darwin" else maxrss * 1024
        result["memory_kind"] = "rss-process-max"


# ---------------------------------------------------------------------------------------------
# measurement


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Run `fn` once under `FlopCounterMode`; returns (FLOPs, fn's result). 2 FLOPs per MAC."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = fn()
    return int(counter.get_total_flops()), out


def _is_compiled(module: nn.Module) -> bool:
    """Whether `module` or a submodule was compiled in place (``nn.Module.compile``)."""
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in module.modules())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    system: System,
    device: str | torch.device = "cpu",
    repeats: int = MIN_REPEATS,
    warmup: int = 1,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Measure one system: wall time, FLOPs, peak memory and parameters for one volume.

    The first warm-up run is counted for FLOPs (in fp32; a bf16 measurement, or a compiled
    system, then warms up again); then `repeats` runs are timed.

    Args:
        system: what to run.
        device: torch device.
        repeats: timed runs (at least 5); the median is reported.
        warmup: untimed runs before timing (at least 1).
        precision: ``fp32`` | ``bf16`` (autocast around every run, weights float32).

    Returns:
        ``name, shape, seconds_per_volume, flops_per_volume, peak_bytes, baseline_bytes,
        memory_kind, params, times_s, note, precision, tflops_per_s`` and, for per-step
        systems, ``seconds_per_step, flops_per_step, steps``.
    """
    if repeats < MIN_REPEATS:
        raise ValueError(f"repeats must be >= {MIN_REPEATS}, got {repeats}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    device = torch.device(device)
    warmup = max(1, warmup)
    with torch.no_grad(), peak_memory(device) as memory:
        module, fn = system.build(device)
        module.eval()
        params = sum(p.numel() for p in module.parameters())
        # FLOPs do not depend on the precision; counted in fp32 because the counter's
        # decompositions (the mapper's GRU) mix dtypes under autocast.
        with autocast(device, "fp32"):
            flops, out = count_flops(fn)
        del out
        compiled = _is_compiled(module)
        if compiled:
            # A frame first met under FlopCounterMode (a dispatch mode) is marked for dynamo
            # to skip: without this reset the compiled system would be timed eager. The
            # compilation then happens in the warm-up below.
            torch._dynamo.reset()
        with autocast(device, precision):
            for _ in range(warmup - 1 if precision == "fp32" and not compiled else warmup):
                fn()
            times = []
            for _ in range(repeats):
                _sync(device)
                start = time.perf_counter()
                fn()
                _sync(device)
                times.append(time.perf_counter() - start)
        del module, fn
    unit_seconds = statistics.median(times)
    result: dict[str, Any] = {
        "name": system.name,
        "shape": list(system.shape),
        "seconds_per_volume": unit_seconds * system.steps,
        "flops_per_volume": flops * system.steps,
        "peak_bytes": memory["peak_bytes"],
        "baseline_bytes": memory["baseline_bytes"],
        "memory_kind": memory["memory_kind"],
        "params": params,
        "times_s": times,
        "note": system.note,
        "precision": precision,
        "tflops_per_s": flops / max(unit_seconds, 1e-12) / 1e12,
        **system.extra,
    }
    if system.per_step or system.steps > 1:
        result.update(seconds_per_step=unit_seconds, flops_per_step=flops, steps=system.steps)
    return result


def with_steps(result: dict[str, Any], steps: int, name: str, note: str = "") -> dict[str, Any]:
    """The same per-step measurement at another step count (per-volume = per-step x steps)."""
    out = dict(result)
    out.update(
        name=name,
        steps=steps,
        seconds_per_volume=result["seconds_per_step"] * steps,
        flops_per_volume=result["flops_per_step"] * steps,
        note=note or result["note"],
    )
    return out


def cost_ratios(
    references: Sequence[dict[str, Any]], systems: Sequence[dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """``{"<ref> / <system>": {"flops": x, "seconds": y, "efficiency": y / x}}`` for every
    reference x system pair; ``efficiency`` is the system's achieved FLOP/s over the
    reference's (the parity target is >= 0.5 against the one-step reference)."""
    ratios = {}
    for ref in references:
        for sys_ in systems:
            flops = ref["flops_per_volume"] / max(sys_["flops_per_volume"], 1)
            seconds = ref["seconds_per_volume"] / max(sys_["seconds_per_volume"], 1e-12)
            ratios[f"{ref['name']} / {sys_['name']}"] = {
                "flops": flops,
                "seconds": seconds,
                "efficiency": seconds / max(flops, 1e-12),
            }
    return ratios


# ---------------------------------------------------------------------------------------------
# systems


def reference_system(
    volume_shape: Sequence[int],
    steps: int = 1000,
    channels: Sequence[int] | None = None,
    norm_num_groups: int = 32,
    name: str = "reference-1000step",
    compile: bool = False,
) -> System:
    """The cWDM-configured reference, measured per sampling step at `volume_shape`.

    Args:
        volume_shape: (D, H, W) image volume; the network runs on the wavelet grid (halved), so
            each side must be divisible by 2 ** len(channels) (32 for cWDM's widths).
        steps: sampling steps per volume (cWDM: 1000).
        channels: U-Net widths; None = cWDM's (64, 128, 128, 256, 256). Tests pass tiny widths.
        norm_num_groups: GroupNorm groups (must divide every width).
        name: row name.
        compile: `torch.compile` the U-Net (one fixed-shape graph).
    """
    channels = tuple(channels or CWDM_CHANNELS)
    shape = tuple(int(s) for s in volume_shape)
    multiple = 2 ** len(channels)
    if any(s % multiple for s in shape):
        raise ValueError(f"reference volume sides must be divisible by {multiple}, got {shape}")
    grid = tuple(s // 2 for s in shape)

    def build(device: torch.device) -> tuple[nn.Module, Callable[[], Any]]:
        model = WaveletDiffusionReference(channels, steps=steps, norm_num_groups=norm_num_groups)
        model = model.to(device).eval()
        if compile:
            model.unet.compile()
        cond_w = torch.randn(1, HAAR_SUBBANDS * CWDM_CONDITIONS, *grid, device=device)
        x_t = torch.randn(1, HAAR_SUBBANDS, *grid, device=device)
        t = steps // 2
        return model, lambda: model.step(x_t, cond_w, t)

    return System(
        name=name,
        build=build,
        shape=shape,  # type: ignore[arg-type]
        steps=steps,
        per_step=True,
        note=(
            f"cWDM-configured stand-in (random weights); per-volume = measured per-step cost"
            f" x {steps} steps on the wavelet grid {grid}"
        ),
        extra={"wavelet_grid": list(grid), "channels": list(channels)},
    )


def lift_translation_system(
    shape: Sequence[int],
    size: str,
    in_channels: int = 3,
    use_mixer: bool = True,
    builder: Callable[..., nn.Module] | None = None,
    name: str | None = None,
    chunk_size: int = 0,
    compile: bool = False,
) -> System:
    """LiFT translation (F + z-mixer, or F alone) synthesising one volume of `shape`.

    Args:
        shape: (D, H, W).
        size: registry size name.
        in_channels: input modalities (BraSyn missing-modality: 3).
        use_mixer: include the z-mixer.
        builder: ``build_translation_model(size, in_channels, out_channels, use_mixer)``;
            None = `lift3d.models.registry.build_translation_model`.
        name: row name; default ``lift-translate`` / ``lift-translate-no-mixer``.
        chunk_size: z-chunk in output slices, as `lift3d translate` streams a volume (0: the
            whole volume in one slice batch).
        compile: `torch.compile` the convolution blocks.
    """
    shape = tuple(int(s) for s in shape)

    def build(device: torch.device) -> tuple[nn.Module, Callable[[], Any]]:
        make = builder or build_translation_model
        model = make(size, in_channels, 1, use_mixer).to(device).eval()
        if compile:
            compile_blocks(model, translation_blocks(device))
        x = torch.rand(1, in_channels, *shape, device=device)
        if chunk_size:
            return model, lambda: model(x, chunk_size=chunk_size)
        return model, lambda: model(x)

    chunks = f"{chunk_size}-slice z-chunks" if chunk_size else "whole volume"
    return System(
        name=name or ("lift-translate" if use_mixer else "lift-translate-no-mixer"),
        build=build,
        shape=shape,  # type: ignore[arg-type]
        note=("F + z-mixer" if use_mixer else "F alone (no mixer)") + f", {chunks}",
        extra={"model_size": size, "chunk_size": chunk_size},
    )


# G's design in the shipped generation configs (generate_demo.yaml, generate_brats.yaml)
SHIPPED_GENERATOR = {"generator_latent": 4, "autoencoder_width": 32}


def shipped_generation_model(size: str, channels: int, shape: Sequence[int]) -> nn.Module:
    """`build_generation_model` with the shipped configs' G (`SHIPPED_GENERATOR`)."""
    return build_generation_model(size, channels, tuple(shape), **SHIPPED_GENERATOR)


def lift_generation_system(
    shape: Sequence[int],
    size: str,
    channels: int = 1,
    use_mapper: bool = True,
    builder: Callable[..., nn.Module] | None = None,
    name: str | None = None,
    compile: bool = False,
) -> System:
    """LiFT generation (G + trajectory mapper) sampling one volume of `shape`.

    The default builder is the design the shipped generation configs train (`generate_demo`,
    `generate_brats`): G draws a 4-channel latent map that its slice autoencoder's decoder
    (width 32) turns into the slice (`SHIPPED_GENERATOR`).

    Args:
        shape: (D, H, W).
        size: registry size name.
        channels: image channels.
        use_mapper: include the trajectory mapper.
        builder: ``build_generation_model(size, channels, shape)``; None = the registry's with
            `SHIPPED_GENERATOR`.
        name: row name; default ``lift-generate`` / ``lift-generate-no-mapper``.
        compile: `torch.compile` G's convolution blocks.
    """
    shape = tuple(int(s) for s in shape)

    def build(device: torch.device) -> tuple[nn.Module, Callable[[], Any]]:
        make = builder or shipped_generation_model
        model = make(size, channels, shape).to(device).eval()
        if compile:
            compile_blocks(model, generation_blocks(device))
        return model, lambda: model.sample(1, use_mapper=use_mapper)

    return System(
        name=name or ("lift-generate" if use_mapper else "lift-generate-no-mapper"),
        build=build,
        shape=shape,  # type: ignore[arg-type]
        note="G + mapper" if use_mapper else "G alone (no mapper)",
        extra={"model_size": size},
    )


# ---------------------------------------------------------------------------------------------
# environment


def device_name(device: str | torch.device) -> str:
    """Human-readable name of the device: GPU model, or CPU model and logical core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            match = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        if match:
            model = match.group(1).strip()
    return f"{model} ({os.cpu_count()} logical cores)"


def environment(device: str | torch.device) -> dict[str, Any]:
    """Device, software and load facts stored with every benchmark JSON."""

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "device": str(torch.device(device)),
        "device_name": device_name(device),
        "host": platform.node(),
        "torch_version": torch.__version__,
        "lift3d_version": __version__,
        "python_version": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_1m_start": None if load is None else round(load[0], 2),
    }


# ---------------------------------------------------------------------------------------------
# the whole benchmark

# (D, H, W) in model space (D = axial slice axis). brats: cWDM crops/pads BraTS 240x240x155 to
# 224x224x160 and runs its U-Net on the 112x112x80 wavelet grid; LiFT runs on the native grid.
SIZES: dict[str, dict[str, tuple[int, int, int]]] = {
    "quick": {"lift": (64, 64, 64), "reference": (64, 64, 64)},
    "brats": {"lift": (155, 240, 240), "reference": (160, 224, 224)},
}
REFERENCE_STEPS = (1000, 2, 1)  # cWDM; the same network run twice / once ~ one-step WFM
LIFT_NAMES = ("lift-translate", "lift-translate-no-mixer", "lift-generate")


def reference_shape_for(shape: Sequence[int], multiple: int = 32) -> tuple[int, int, int]:
    """Round each side up to `multiple` (the reference pads the volume, as cWDM pads 155 -> 160)."""
    return tuple(max(multiple, -(-int(s) // multiple) * multiple) for s in shape)  # type: ignore[return-value]


def default_systems(
    lift_shape: Sequence[int],
    reference_shape: Sequence[int],
    model_size: str = "base",
    reference_channels: Sequence[int] | None = None,
    reference_groups: int = 32,
    translate_builder: Callable[..., nn.Module] | None = None,
    generate_builder: Callable[..., nn.Module] | None = None,
    chunk_size: int = 0,
    compile: bool = False,
) -> tuple[list[System], list[str]]:
    """The systems `lift3d bench` measures, and the names of those it had to skip (with why).

    LiFT builders default to `lift3d.models.registry`; a missing builder skips that system.
    `chunk_size` is LiFT translation's z-chunk (0: whole volume); `compile` compiles every
    system, the reference included.
    """
    systems: list[System] = []
    skipped: list[str] = []
    translate_builder = translate_builder or build_translation_model
    generate_builder = generate_builder or shipped_generation_model
    if translate_builder is not None:
        for use_mixer in (True, False):
            systems.append(
                lift_translation_system(
                    lift_shape,
                    model_size,
                    use_mixer=use_mixer,
                    builder=translate_builder,
                    chunk_size=chunk_size,
                    compile=compile,
                )
            )
    if generate_builder is not None:
        systems.append(
            lift_generation_system(
                lift_shape, model_size, builder=generate_builder, compile=compile
            )
        )
    systems.append(
        reference_system(
            reference_shape,
            steps=REFERENCE_STEPS[0],
            channels=reference_channels,
            norm_num_groups=reference_groups,
            name=f"reference-{REFERENCE_STEPS[0]}step",
            compile=compile,
        )
    )
    return systems, skipped


def run_benchmark(
    systems: Sequence[System],
    device: str | torch.device = "cpu",
    repeats: int = MIN_REPEATS,
    progress: bool = True,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Measure `systems` one after the other on one device, all in one `precision`; return the
    benchmark JSON.

    Per-step systems are also reported at the other `REFERENCE_STEPS` counts (same measurement).
    On a GPU of known peak every system also gets ``peak_fraction`` (achieved / peak TFLOP/s).

    Returns:
        ``{**environment, "precision", "peak_tflops", "repeats", "systems": [...],
        "ratios": {...}, "skipped": [...]}``.
    """
    from tqdm import tqdm

    env = environment(device)
    peak = peak_tflops(env["device_name"], precision) if env["device"].startswith("cuda") else None
    results: list[dict[str, Any]] = []
    bar = tqdm(systems, desc="bench", unit="system", disable=not progress)
    for system in bar:
        bar.set_postfix_str(system.name)
        log.info("measuring %s %s", system.name, tuple(system.shape))
        _release_freed_memory(full=True)
        result = measure(system, device=device, repeats=repeats, precision=precision)
        if peak:
            result["peak_fraction"] = result["tflops_per_s"] / peak
        results.append(result)
        if system.per_step:
            base = system.name.rsplit("-", 1)[0]
            for steps in REFERENCE_STEPS:
                if steps == system.steps:
                    continue
                note = (
                    f"same network run {steps}x: cost of a one-step 3D wavelet flow-matching "
                    f"model (WFM-like); per-volume = per-step x {steps}"
                )
                results.append(with_steps(result, steps, f"{base}-{steps}step", note))
    references = [r for r in results if "steps" in r]
    others = [r for r in results if "steps" not in r]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        **env,
        "loadavg_1m_end": None if load is None else round(load[0], 2),
        "precision": precision,
        "peak_tflops": peak,
        "repeats": repeats,
        "flops_counter": "torch.utils.flop_counter.FlopCounterMode (2 FLOPs per multiply-add)",
        "systems": results,
        "ratios": cost_ratios(references, others),
    }
