"""Inference precision: resolution, autocast, peaks, and bf16 / compiled outputs against fp32.

Tolerances (bf16 autocast against fp32 on the same weights and input). bf16 keeps 8 mantissa
bits, a relative rounding of 2^-9 (0.2 %) at every convolution and matmul input; through the
~10 layers of the tiny models the per-voxel output error stays below ~1 % of the output scale
except at a few voxels next to sharp edges. In HU (window -1024..3000, 4024 HU wide): mean
|error| <= 20 HU (0.5 %), 99th percentile <= 100 HU (2.5 %), max <= 200 HU (5 %), for random
tiny models, whose outputs are rougher than a trained model's. MR outputs on the [0, 1] scale:
the same fractions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lift3d.data.preprocess import CT_WINDOW_HU
from lift3d.inference.precision import (
    autocast,
    compile_blocks,
    generation_blocks,
    inference_mode,
    peak_tflops,
    resolve_precision,
    translation_blocks,
)
from lift3d.inference.translate import load_translation_model, translate_volumes
from lift3d.models.registry import build_translation_model

from .test_translate import make_model_dir, oblique_mr

WINDOW = CT_WINDOW_HU[1] - CT_WINDOW_HU[0]
MEAN_TOL, P99_TOL, MAX_TOL = 0.005, 0.025, 0.05  # fractions of the output window


def assert_close_in_window(a: np.ndarray, b: np.ndarray, width: float) -> None:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)) / width
    assert diff.mean() <= MEAN_TOL, diff.mean()
    assert np.percentile(diff, 99) <= P99_TOL, np.percentile(diff, 99)
    assert diff.max() <= MAX_TOL, diff.max()


def test_resolve_precision():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") == "fp32"  # bf16 on the CPU is opt-in
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")


def test_autocast_fp32_switches_an_outer_autocast_off():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
        with autocast("cpu", "fp32"):
            assert (a @ b).dtype == torch.float32
    with inference_mode("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16 and not torch.is_grad_enabled()


def test_peak_tflops_table():
    assert peak_tflops("NVIDIA H200", "bf16") == 989.0
    assert peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == 67.0
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert peak_tflops("Some unknown GPU", "bf16") is None


@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_translation_within_tolerance_of_fp32(tmp_path, seed):
    """CPU bf16 autocast: float32 output on the same grid, within the stated HU tolerance."""
    model_dir = make_model_dir(tmp_path / "m", seed=seed)
    mr = oblique_mr(seed=seed)
    ref = translate_volumes(load_translation_model(model_dir, "cpu", "fp32"), {"mr": mr})
    bundle = load_translation_model(model_dir, "cpu", "bf16")
    assert bundle.precision == "bf16"
    out = translate_volumes(bundle, {"mr": mr})
    assert out.array.dtype == np.float32 and out.array.shape == mr.array.shape
    np.testing.assert_array_equal(out.affine, mr.affine)
    assert np.isfinite(out.array).all()
    assert not np.array_equal(out.array, ref.array)  # bf16 really ran
    assert_close_in_window(out.array, ref.array, WINDOW)


def test_bf16_missing_modality_within_tolerance(tmp_path):
    model_dir = make_model_dir(tmp_path / "m", task="missing")
    mr = oblique_mr()
    volumes = {m: mr.with_array(mr.array * (i + 1)) for i, m in enumerate(["t1c", "t1n", "t2w"])}
    ref = translate_volumes(load_translation_model(model_dir, "cpu", "fp32"), volumes)
    out = translate_volumes(load_translation_model(model_dir, "cpu", "bf16"), volumes)
    assert out.array.dtype == np.float32
    assert_close_in_window(out.array, ref.array, 1.0)


def test_chunk_size_override_matches_whole_volume(tmp_path):
    model_dir = make_model_dir(tmp_path / "m", chunk_size=3)
    mr = oblique_mr()
    chunked = translate_volumes(load_translation_model(model_dir, "cpu"), {"mr": mr}).array
    whole = translate_volumes(load_translation_model(model_dir, "cpu", chunk_size=0), {"mr": mr})
    np.testing.assert_allclose(whole.array, chunked, atol=1e-2)  # HU, float rounding only


def test_bad_precision_and_chunk_are_input_errors(tmp_path):
    from lift3d.errors import InputError

    model_dir = make_model_dir(tmp_path / "m")
    with pytest.raises(InputError, match="precision"):
        load_translation_model(model_dir, "cpu", "fp16")
    with pytest.raises(InputError, match="chunk-size"):
        load_translation_model(model_dir, "cpu", chunk_size=-1)


# ------------------------------------------------------------------ GPU (pytest -m gpu)

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@gpu
def test_cuda_bf16_translation_within_tolerance(tmp_path):
    model_dir = make_model_dir(tmp_path / "m")
    mr = oblique_mr()
    ref = translate_volumes(load_translation_model(model_dir, "cpu", "fp32"), {"mr": mr})
    bundle = load_translation_model(model_dir, "cuda", "auto")
    assert bundle.precision == "bf16"
    out = translate_volumes(bundle, {"mr": mr})
    assert out.array.dtype == np.float32
    assert_close_in_window(out.array, ref.array, WINDOW)


@pytest.mark.gpu
@gpu
def test_cuda_compiled_blocks_match_eager():
    torch.manual_seed(0)
    model = build_translation_model("small", 3, 1, True).cuda().eval()
    x = torch.rand(1, 3, 12, 64, 64, device="cuda")
    with inference_mode("cuda", "bf16"):
        eager = model(x, chunk_size=4).float()
        assert compile_blocks(model) > 0
        compiled = model(x, chunk_size=4).float()
    diff = (compiled - eager).abs()
    assert diff.mean() <= MEAN_TOL and diff.max() <= MAX_TOL


def test_compile_blocks_finds_every_translator_block_kind():
    """Plain blocks (small), residual blocks (base) and the z-mixer's blocks are all compiled
    (counted without running them)."""
    small = build_translation_model("small", 1, 1, True)
    base = build_translation_model("base", 1, 1, True)
    kinds = {type(m).__name__ for m in [*small.modules(), *base.modules()]}
    assert {"ConvBlock", "ResBlock", "ZMixerBlock"} <= kinds
    for model in (small, base):
        expected = sum(
            type(m).__name__ in ("ConvBlock", "ResBlock", "ZMixerBlock") for m in model.modules()
        )
        assert compile_blocks(model) == expected > 0


def test_translation_blocks_per_device_and_recompile_limit():
    """On the CPU only the mixer blocks are compiled (the convolution blocks ran slower
    compiled there); elsewhere every translator and generator block. Compiling raises dynamo's recompile
    limit so that each block shape gets its graph instead of silently running eager."""
    import torch._dynamo.config as dynamo_config

    assert translation_blocks("cpu") == ("ZMixerBlock",)
    assert translation_blocks(torch.device("cuda")) == ("ConvBlock", "ResBlock", "ZMixerBlock")
    assert generation_blocks("cpu") == () and generation_blocks("cuda") == ("_ModBlock",)
    small = build_translation_model("small", 1, 1, True)
    mixers = sum(type(m).__name__ == "ZMixerBlock" for m in small.modules())
    old = dynamo_config.recompile_limit
    try:
        dynamo_config.recompile_limit = 8
        assert compile_blocks(small, translation_blocks("cpu")) == mixers > 0
        assert dynamo_config.recompile_limit >= 64
    finally:
        dynamo_config.recompile_limit = old


@pytest.mark.slow
def test_cpu_compiled_translation_matches_eager():
    """`--compile` on the CPU (convolution and mixer blocks, z-chunks) gives the eager output."""
    torch.manual_seed(0)
    model = build_translation_model("tiny", 1, 1, True).eval()
    for block in model.modules():
        if type(block).__name__ == "ZMixerBlock":  # a non-zero mixer (it starts as the identity)
            torch.nn.init.normal_(block.proj_out.weight, std=0.1)
    x = torch.rand(1, 1, 20, 32, 32)
    with inference_mode("cpu", "fp32"):
        eager = model(x, chunk_size=8)
        assert compile_blocks(model) > 0
        compiled = model(x, chunk_size=8)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
