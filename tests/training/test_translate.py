"""Two-stage translation training: inputs, losses, stages, frozen translator, resume, outputs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lift3d.config import TranslateConfig, load_config
from lift3d.configs import config_path
from lift3d.errors import InputError
from lift3d.losses.translation import l1_loss, ssim_2d, volume_loss, zgrad_l1_loss
from lift3d.models.lift import in_channels, make_input, missing_modality_input, select_target
from lift3d.training.translate import train_translation


def tiny_config(data_dir, task="mr2ct", **extra):
    overrides = ["translator.steps=3", "mixer.steps=2", f"task={task}"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    cfg = load_config(TranslateConfig, config_path("translate_tiny"), overrides)
    cfg.data.root = str(data_dir)
    return cfg


def test_missing_modality_input():
    vols = torch.rand(2, 4, 3, 5, 5) + 1.0
    x = missing_modality_input(vols, torch.tensor([1, 3]))
    assert x.shape == (2, 8, 3, 5, 5)
    assert torch.all(x[0, 1] == 0) and torch.all(x[1, 3] == 0)  # missing slot zero-filled
    assert torch.equal(x[0, [0, 2, 3]], vols[0, [0, 2, 3]])
    assert torch.all(x[0, 4:] == torch.tensor([0.0, 1, 0, 0])[:, None, None, None])
    assert torch.all(x[1, 4:] == torch.tensor([0.0, 0, 0, 1])[:, None, None, None])
    assert in_channels("missing") == 8 and in_channels("mr2ct") == 1


def test_make_input_and_target_pick_the_missing_modality():
    batch = {
        m: torch.full((2, 1, 4, 4), float(i + 1))
        for i, m in enumerate(["t1n", "t1c", "t2w", "t2f"])
    }
    missing = torch.tensor([2, 0])
    x = make_input("missing", batch, missing)
    y = select_target("missing", batch, missing)
    assert x.shape == (2, 8, 1, 4, 4) and y.shape == (2, 1, 1, 4, 4)
    assert torch.all(y[0] == 3.0) and torch.all(y[1] == 1.0)
    assert torch.all(x[0, 2] == 0) and torch.all(x[1, 0] == 0)


def test_losses():
    a = torch.rand(1, 1, 6, 8, 8)
    assert l1_loss(a, a) == 0 and zgrad_l1_loss(a, a) == 0
    # a constant offset costs L1 but no through-plane error; flicker costs both
    assert zgrad_l1_loss(a + 0.1, a) < 1e-6
    flicker = a.clone()
    flicker[:, :, ::2] += 0.1
    assert zgrad_l1_loss(flicker, a) > 0.09
    out = volume_loss(flicker, a, zgrad_weight=2.0)
    torch.testing.assert_close(out["loss"], out["l1"] + 2.0 * out["zgrad"])
    s = torch.rand(2, 1, 16, 16)
    assert ssim_2d(s, s).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim_2d(s, torch.rand(2, 1, 16, 16)).item() < 0.5


def test_train_mr2ct_two_stages(tmp_path, phantom_synthrad_dir):
    run = train_translation(tiny_config(phantom_synthrad_dir), tmp_path / "run")
    for name in ("model.safetensors", "config.yaml", "run.json", "metrics.json", "log.txt"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["task"] == "translate" and info["subtask"] == "mr2ct"
    assert sorted(p.name for p in (run / "val").glob("*.png")) == [
        "mixer_step0000002.png",
        "translator_step0000003.png",
    ]
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"psnr_mixer", "psnr_no_mixer", "zgrad_error_mixer"} <= set(metrics["mixer"])
    stage1 = load_file(run / "checkpoints/translator/final.safetensors")
    final = load_file(run / "model.safetensors")
    # stage 1 leaves the zero-init mixers untouched; stage 2 trains them with F frozen
    for key, value in stage1.items():
        if key.startswith("translator."):
            assert torch.equal(final[key], value), key
        elif key.endswith("proj_out.weight"):
            assert torch.all(value == 0) and final[key].abs().sum() > 0, key
    # resume of a finished run: both stages skipped, same weights
    train_translation(tiny_config(phantom_synthrad_dir), run, resume=True)
    again = load_file(run / "model.safetensors")
    assert all(torch.equal(again[k], final[k]) for k in final)


def test_train_missing_task(tmp_path, phantom_brats_dir):
    run = train_translation(
        tiny_config(phantom_brats_dir, task="missing", **{"mixer.steps": 1, "mixer.z_chunk": 8}),
        tmp_path / "run",
    )
    assert json.loads((run / "run.json").read_text())["subtask"] == "missing"
    weights = load_file(run / "model.safetensors")
    assert weights["translator.down_blocks.0.body.0.weight"].shape[1] == 8  # 4 slots + 4 one-hot


def test_config_errors(phantom_synthrad_dir, tmp_path):
    cfg = tiny_config(phantom_synthrad_dir)
    cfg.model.size = "huge"
    with pytest.raises(InputError, match="model.size"):
        train_translation(cfg, tmp_path / "r1")
    cfg = tiny_config(phantom_synthrad_dir, task="missing")  # a SynthRAD folder has no t1n
    with pytest.raises(InputError):
        train_translation(cfg, tmp_path / "r2")
