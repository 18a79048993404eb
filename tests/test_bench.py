"""lift3d.bench, the cWDM reference stand-in and `lift3d bench`: tiny sizes, consistent fields."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lift3d import bench
from lift3d.cli import main
from lift3d.models.reference import (
    build_reference_unet,
    haar_dwt3d,
    haar_idwt3d,
    linear_betas,
)

TINY_CHANNELS = (8, 8)  # two levels: volume sides divisible by 4


def conv_system(name: str = "conv") -> tuple[bench.System, int]:
    """A single Conv3d on a fixed input, and its analytic FLOP count (2 per multiply-add)."""
    cin, cout, k, shape = 2, 3, 3, (4, 6, 5)

    def build(device):
        conv = nn.Conv3d(cin, cout, k, padding=1).to(device)
        x = torch.rand(1, cin, *shape, device=device)
        return conv, lambda: conv(x)

    out_voxels = shape[0] * shape[1] * shape[2]
    flops = 2 * out_voxels * cout * cin * k**3
    return bench.System(name=name, build=build, shape=shape), flops


def test_measure_conv3d_flops_match_formula_and_fields():
    system, flops = conv_system()
    r = bench.measure(system, repeats=5)
    assert r["flops_per_volume"] == flops
    assert r["params"] == 3 * 2 * 27 + 3
    assert len(r["times_s"]) == 5
    assert r["seconds_per_volume"] == sorted(r["times_s"])[2]  # median of 5
    assert r["peak_bytes"] > 0 and r["peak_bytes"] >= (r["baseline_bytes"] or 0)
    assert r["shape"] == [4, 6, 5]
    assert "steps" not in r


def test_measure_linear_flops_and_steps():
    def build(device):
        lin = nn.Linear(10, 7)
        x = torch.rand(4, 10)
        return lin, lambda: lin(x)

    system = bench.System("lin", build, (1, 1, 4), steps=3, per_step=True)
    r = bench.measure(system, repeats=5)
    assert r["flops_per_step"] == 2 * 4 * 10 * 7
    assert r["flops_per_volume"] == 3 * r["flops_per_step"]
    assert r["seconds_per_volume"] == pytest.approx(3 * r["seconds_per_step"])
    assert r["steps"] == 3


def test_measure_times_a_compiled_system_compiled():
    """The FLOP-counting run (under a dispatch mode) must not leave dynamo skipping the
    compiled module, or the timed runs would be eager (backend "eager": traced by dynamo, no
    C++ compilation)."""
    from torch._dynamo.utils import counters

    class Block(nn.Module):  # a module of the test's own (dynamo skips torch.nn's frames)
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 4)

        def forward(self, x):
            return torch.relu(self.lin(x))

    def build(device):
        mod = Block()
        mod.compile(backend="eager")
        x = torch.rand(3, 5)
        return mod, lambda: mod(x)

    counters.clear()
    r = bench.measure(bench.System("traced", build, (1, 3, 5)), repeats=5)
    assert r["flops_per_volume"] == 2 * 3 * 5 * 4
    assert counters["frames"]["ok"] >= 1  # dynamo traced the forward after the FLOP count
    assert bench._is_compiled(build("cpu")[0]) and not bench._is_compiled(nn.Linear(2, 2))


def test_measure_rejects_few_repeats():
    system, _ = conv_system()
    with pytest.raises(ValueError, match="repeats"):
        bench.measure(system, repeats=2)


def test_peak_memory_is_per_system():
    """A large allocation raises that block's peak; a later small block is not charged for it."""
    big = 200 * 1024**2
    with bench.peak_memory(torch.device("cpu")) as first:
        x = torch.ones(big // 4)
        del x
    with bench.peak_memory(torch.device("cpu")) as second:
        y = torch.ones(1000)
        del y
    assert first["peak_bytes"] - first["baseline_bytes"] >= 0.9 * big
    if second["memory_kind"] in ("rss-hwm", "rss-sampled"):
        assert second["peak_bytes"] - second["baseline_bytes"] < 0.5 * big


def test_haar_round_trip_and_lowpass():
    x = torch.randn(2, 3, 4, 6, 8, dtype=torch.float64)
    w = haar_dwt3d(x)
    assert w.shape == (2, 24, 2, 3, 4)
    torch.testing.assert_close(haar_idwt3d(w), x)
    # orthonormal: energy kept; LLL of channel 0 = sum of each 2x2x2 block / 2^1.5
    torch.testing.assert_close(w.pow(2).sum(), x.pow(2).sum())
    blocks = x[:, 0].reshape(2, 2, 2, 3, 2, 4, 2).sum(dim=(2, 4, 6))
    torch.testing.assert_close(w[:, 0], blocks / 2**1.5)
    with pytest.raises(ValueError, match="even"):
        haar_dwt3d(torch.zeros(1, 1, 3, 4, 4))


def test_reference_unet_configuration():
    net = build_reference_unet(channels=(8, 8, 16), norm_num_groups=4)
    assert net.conv_in.conv.in_channels == 32  # 3 conditions x 8 subbands + 8 noisy subbands
    from monai.networks.blocks import SpatialAttentionBlock

    assert not any(isinstance(m, SpatialAttentionBlock) for m in net.modules())
    assert not any("transformer" in type(m).__name__.lower() for m in net.modules())
    assert all(len(block.resnets) == 2 for block in net.down_blocks)
    x = torch.randn(1, 32, 8, 8, 8)
    assert net(x, torch.tensor([5])).shape == (1, 8, 8, 8, 8)
    betas = linear_betas(1000)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)


def test_reference_system_per_step_and_derived_counts():
    system = bench.reference_system(
        (8, 8, 8), steps=1000, channels=TINY_CHANNELS, norm_num_groups=4
    )
    r = bench.measure(system, repeats=5)
    assert r["steps"] == 1000 and r["wavelet_grid"] == [4, 4, 4]
    assert r["flops_per_volume"] == 1000 * r["flops_per_step"] > 0
    assert r["seconds_per_volume"] == pytest.approx(1000 * r["seconds_per_step"])
    one = bench.with_steps(r, 1, "reference-1step")
    assert one["flops_per_volume"] == r["flops_per_step"]
    assert one["seconds_per_volume"] == pytest.approx(r["seconds_per_step"])
    with pytest.raises(ValueError, match="divisible"):
        bench.reference_system((6, 8, 8), channels=TINY_CHANNELS)


def test_run_benchmark_ratios_consistent_with_entries():
    conv, _ = conv_system("lift-stand-in")
    ref = bench.reference_system((8, 8, 8), channels=TINY_CHANNELS, norm_num_groups=4)
    result = bench.run_benchmark([conv, ref], repeats=5, progress=False)
    names = [s["name"] for s in result["systems"]]
    assert names == ["lift-stand-in", "reference-1000step", "reference-2step", "reference-1step"]
    by_name = {s["name"]: s for s in result["systems"]}
    assert set(result["ratios"]) == {f"reference-{n}step / lift-stand-in" for n in (1000, 2, 1)}
    for key, ratio in result["ratios"].items():
        r, s = (by_name[n] for n in key.split(" / "))
        assert ratio["flops"] == pytest.approx(r["flops_per_volume"] / s["flops_per_volume"])
        assert ratio["seconds"] == pytest.approx(r["seconds_per_volume"] / s["seconds_per_volume"])
    for key in ("device_name", "torch_version", "threads", "lift3d_version"):
        assert result[key] not in (None, "")


def test_lift_systems_take_builders():
    calls = []

    class Fake(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(3, 1, 1)

        def forward(self, x):
            return self.conv(x)

        def sample(self, n, generator=None, use_mapper=True):
            calls.append(use_mapper)
            return self.conv(torch.zeros(n, 3, 2, 4, 4))

    def make_translation(size, in_channels, out_channels=1, use_mixer=True):
        calls.append((size, in_channels, out_channels, use_mixer))
        return Fake()

    t = bench.measure(bench.lift_translation_system((2, 4, 4), "tiny", builder=make_translation))
    assert calls[0] == ("tiny", 3, 1, True)
    assert t["flops_per_volume"] == 2 * 3 * 32
    g = bench.measure(bench.lift_generation_system((2, 4, 4), "tiny", builder=lambda *a: Fake()))
    assert g["name"] == "lift-generate" and True in calls


def test_reference_shape_rounds_up():
    assert bench.reference_shape_for((155, 240, 240)) == (160, 256, 256)
    assert bench.reference_shape_for((10, 32, 33)) == (32, 32, 64)


def test_cli_bench_tiny_json(tmp_path, monkeypatch, capsys):
    """`lift3d bench` end to end, with the sizes shrunk so it runs in a second."""
    monkeypatch.setitem(bench.SIZES, "quick", {"lift": (8, 8, 8), "reference": (8, 8, 8)})
    real_reference = bench.reference_system

    def tiny_reference(shape, steps=1000, channels=None, norm_num_groups=32, name="r", **kw):
        return real_reference(shape, steps, TINY_CHANNELS, 4, name, **kw)

    monkeypatch.setattr(bench, "reference_system", tiny_reference)
    out = tmp_path / "b.json"
    code = main(["bench", "--size", "quick", "--model-size", "tiny", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    names = {s["name"] for s in data["systems"]}
    assert {"reference-1000step", "reference-2step", "reference-1step"} <= names
    for s in data["systems"]:
        assert {
            "name",
            "seconds_per_volume",
            "flops_per_volume",
            "peak_bytes",
            "params",
            "shape",
        } <= set(s)
    assert "cost ratios" in capsys.readouterr().out
    # refuses to overwrite without --overwrite
    assert main(["bench", "--size", "quick", "--json", str(out)]) == 2
    assert main(["bench", "--repeats", "2"]) == 2


def test_bench_bf16_runs_every_system_in_bf16_and_reports_rates():
    conv, flops = conv_system()
    ref = bench.reference_system((8, 8, 8), channels=TINY_CHANNELS, norm_num_groups=4)
    result = bench.run_benchmark([conv, ref], repeats=5, progress=False, precision="bf16")
    assert result["precision"] == "bf16" and result["peak_tflops"] is None  # CPU: no peak
    for s in result["systems"]:
        assert s["precision"] == "bf16" and "peak_fraction" not in s
        per = s.get("flops_per_step", s["flops_per_volume"])
        sec = s.get("seconds_per_step", s["seconds_per_volume"])
        assert s["tflops_per_s"] == pytest.approx(per / sec / 1e12)
    assert result["systems"][0]["flops_per_volume"] == flops  # FLOPs do not depend on precision
    for r in result["ratios"].values():
        assert r["efficiency"] == pytest.approx(r["seconds"] / r["flops"])
    with pytest.raises(ValueError, match="precision"):
        bench.measure(conv, precision="fp16")


def test_bench_records_translation_chunk_size():
    system = bench.lift_translation_system((6, 8, 8), "tiny", chunk_size=2)
    r = bench.measure(system, repeats=5)
    whole = bench.measure(bench.lift_translation_system((6, 8, 8), "tiny"), repeats=5)
    assert r["chunk_size"] == 2 and "2-slice z-chunks" in r["note"]
    assert whole["chunk_size"] == 0 and "whole volume" in whole["note"]
    # chunks repeat only the mixers' overlap windows, never F
    assert whole["flops_per_volume"] <= r["flops_per_volume"] <= 1.2 * whole["flops_per_volume"]


def test_format_table_reads_json_written_before_precision():
    from lift3d.commands.bench import format_table

    old = {
        "device_name": "cpu",
        "device": "cpu",
        "threads": 2,
        "torch_version": "2",
        "lift3d_version": "0",
        "systems": [
            {
                "name": "lift-translate",
                "shape": [1, 2, 2],
                "seconds_per_volume": 2.0,
                "flops_per_volume": 4e12,
                "peak_bytes": 1,
                "baseline_bytes": 0,
                "params": 3,
                "memory_kind": "rss-hwm",
            }
        ],
        "ratios": {"r / lift-translate": {"flops": 10.0, "seconds": 4.0}},
    }
    text = format_table(old)
    assert "fp32" in text and "efficiency  0.40" in text and "2" in text


def test_bench_bf16_generation_system_with_the_mapper():
    """The mapper's GRU under bf16 autocast (FLOPs are counted in fp32, the same count)."""
    system = bench.lift_generation_system((4, 16, 16), "tiny")
    fp32 = bench.measure(system, repeats=5)
    bf16 = bench.measure(system, repeats=5, precision="bf16")
    assert bf16["flops_per_volume"] == fp32["flops_per_volume"] > 0
    assert bf16["precision"] == "bf16" and bf16["tflops_per_s"] > 0


def test_bench_generation_row_is_the_shipped_generator():
    """`lift-generate` measures the G that the shipped generation configs train (latent map +
    the slice autoencoder's decoder), not the pixel G no config uses."""
    from lift3d.config import GenerateConfig, load_config
    from lift3d.configs import config_path

    for name in ("generate_demo", "generate_brats"):
        model = load_config(GenerateConfig, config_path(name)).model
        assert model.generator_latent == bench.SHIPPED_GENERATOR["generator_latent"], name
        assert model.autoencoder_width == bench.SHIPPED_GENERATOR["autoencoder_width"], name
    built = bench.shipped_generation_model("tiny", 1, (4, 16, 16))
    assert built.generator.autoencoder is not None
    assert built.generator.latent_channels == bench.SHIPPED_GENERATOR["generator_latent"]


@pytest.mark.parametrize("name", ["generate_demo", "generate_brats"])
def test_generation_stage_benchmark_overrides_pass_the_config_checks(name):
    """`benchmarks/bench_generate_stages.py` trains a shipped config for a few steps with its
    own overrides; they must keep passing the checks `lift3d train generate` runs first."""
    import importlib.util
    from pathlib import Path

    from lift3d.config import GenerateConfig, load_config
    from lift3d.configs import config_path
    from lift3d.training.generate import check_generate_config

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_generate_stages.py"
    spec = importlib.util.spec_from_file_location("bench_generate_stages", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = load_config(GenerateConfig, config_path(name))
    stages = module.config_stages(shipped)
    assert "decoder" in stages  # both shipped configs tune the decoder
    sets = module.timing_overrides(6, 2, stages)
    cfg = load_config(GenerateConfig, config_path(name), overrides=sets)
    check_generate_config(cfg)
    assert cfg.generator.steps == cfg.encoder.steps == cfg.mapper.steps == cfg.decoder.steps == 6
    # a config without the decoder stage is timed without it (a pixel G cannot run it)
    tiny = load_config(GenerateConfig, config_path("generate_tiny"))
    assert "decoder" not in module.config_stages(tiny)


def test_autoencoder_ceiling_writes_reconstructions_on_each_source_grid(
    phantom_brats_dir, tmp_path, monkeypatch
):
    """`benchmarks/autoencoder_ceiling.py` writes each case's slice-autoencoder reconstruction
    on the case's own grid (shape and affine of the LPS source), finite, zero outside the
    source's foreground, its foreground histogram matched to the source's; ``reconstruct`` is
    the autoencoder applied slice by slice; a stage file's autoencoder replaces the final one."""
    import importlib.util
    import sys
    from pathlib import Path

    import nibabel as nib
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from lift3d.config import GenerateConfig, load_config
    from lift3d.training.generate import train_generation

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "autoencoder_ceiling.py"
    spec = importlib.util.spec_from_file_location("autoencoder_ceiling", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    cfg = load_config(
        GenerateConfig,
        "configs/generate_tiny.yaml",
        ["train.device=cpu", "model.generator_latent=3", "model.modalities=[t1n]"],
    )
    cfg.data.root = str(phantom_brats_dir)
    run = train_generation(cfg, tmp_path / "run")
    ae, _ = module.load_autoencoder(run, None)
    vol = torch.rand(5, 32, 32).numpy()
    got = module.reconstruct(ae, vol, batch=2)
    with torch.no_grad():
        x = torch.from_numpy(vol)[:, None]
        want = ae.decode(ae.encode(x), (32, 32))[:, 0].clamp(0, 1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)

    # a stage file with other autoencoder weights is what --weights loads
    other = {f"generator.autoencoder.{k}": v * 0 for k, v in ae.state_dict().items()}
    save_file(other, str(tmp_path / "stage.safetensors"))
    zeroed, _ = module.load_autoencoder(run, tmp_path / "stage.safetensors")
    assert all(float(v.abs().sum()) == 0 for v in zeroed.state_dict().values())

    out = tmp_path / "recon"
    argv = ["autoencoder_ceiling.py", "--model", str(run), "--data", str(phantom_brats_dir)]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    module.main()
    sources = sorted(phantom_brats_dir.glob("*/*-t1n.nii.gz"))
    written = sorted(out.glob("*.nii.gz"))
    assert [p.name for p in written] == [p.name.replace("-t1n", "") for p in sources]
    for src, rec in zip(sources, written, strict=True):
        a, b = nib.load(src), nib.load(rec)
        assert b.shape == a.shape and np.allclose(b.affine, a.affine)
        real, r = a.get_fdata(), b.get_fdata()
        assert np.isfinite(r).all() and (r[real <= 0] == 0).all()
        np.testing.assert_allclose(
            np.percentile(r[r > 0], [10, 50, 90]),
            np.percentile(real[real > 0], [10, 50, 90]),
            rtol=0.05,
        )
