"""train_generation on tiny phantoms: stages, run folder, resume, reference grid, bad input."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from lift3d.config import load_config
from lift3d.errors import InputError
from lift3d.training.generate import (
    GenerateConfig,
    check_same_grid,
    code_prior_penalty,
    cosine_factor,
    train_generation,
)

TINY = ["train.device=cpu", "train.ckpt_every=2"]


def tiny_config(root, *overrides: str) -> GenerateConfig:
    cfg = load_config(GenerateConfig, "configs/generate_tiny.yaml", [*TINY, *overrides])
    cfg.data.root = str(root)
    return cfg


def train_tiny(root, run_dir, *overrides: str):
    """Train a tiny run; return it and the last logged record of each stage."""
    run = train_generation(tiny_config(root, *overrides), run_dir)
    last = {
        stage: json.loads((run / "logs" / f"{stage}.jsonl").read_text().splitlines()[-1])
        for stage in ("generator", "mapper")
    }
    return run, last


@pytest.fixture(scope="module")
def tiny_run(phantom_brats_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("gen") / "run"
    train_generation(tiny_config(phantom_brats_dir, "train.val_every=3"), run)
    return run


def test_run_folder_contents(tiny_run):
    for name in ("config.yaml", "run.json", "log.txt", "model.safetensors", "reference.json"):
        assert (tiny_run / name).is_file(), name
    run = json.loads((tiny_run / "run.json").read_text())
    assert run["task"] == "generate" and run["subtask"] == "generate"
    for stage in ("encoder", "generator", "mapper"):
        assert (tiny_run / "checkpoints" / stage / "done").exists()
        assert (tiny_run / "logs" / f"{stage}.jsonl").is_file()
        assert list((tiny_run / "val").glob(f"{stage}_*.png")), stage  # periodic previews
    ref = json.loads((tiny_run / "reference.json").read_text())
    assert ref["modalities"] == ["t1n"] and ref["shape"] == [32, 32, 32]
    assert ref["record"]["source_shape"] == [32, 32, 32]


def test_saved_mapper_carries_its_trained_base_path(tiny_run):
    from safetensors.torch import load_file

    weights = load_file(str(tiny_run / "model.safetensors"))
    cfg = GenerateConfig()
    assert cfg.mapper.path_sigma > 0 and cfg.mapper.learn_path  # moving, trained base path
    sigma, mix = float(weights["mapper.path_sigma"]), float(weights["mapper.path_mix"])
    assert sigma > 0 and 0 <= mix <= 1
    assert (sigma, mix) != pytest.approx((cfg.mapper.path_sigma, cfg.mapper.path_mix), abs=1e-7)


def test_fixed_base_path_is_saved_as_configured(phantom_brats_dir, tmp_path):
    from safetensors.torch import load_file

    cfg = tiny_config(phantom_brats_dir, "mapper.learn_path=false", "mapper.path_sigma=0.03")
    run = train_generation(cfg, tmp_path / "run")
    weights = load_file(str(run / "model.safetensors"))
    assert float(weights["mapper.path_sigma"]) == pytest.approx(0.03)
    assert float(weights["mapper.path_mix"]) == pytest.approx(cfg.mapper.path_mix)


def test_finished_run_resumes_to_same_weights(tiny_run, phantom_brats_dir, tmp_path):
    from safetensors.torch import load_file

    before = load_file(str(tiny_run / "model.safetensors"))
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    train_generation(tiny_config(phantom_brats_dir, "train.val_every=3"), copy, resume=True)
    after = load_file(str(copy / "model.safetensors"))
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_interrupted_mapper_stage_resumes(tiny_run, phantom_brats_dir, tmp_path):
    """Kill after the mapper's first checkpoint (step 2 of 4), resume: same final weights."""
    from safetensors.torch import load_file

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    shutil.rmtree(copy / "checkpoints" / "mapper")
    (copy / "model.safetensors").unlink()
    src = tiny_run / "checkpoints" / "mapper"
    (copy / "checkpoints" / "mapper").mkdir()
    for f in src.glob("step_0000002.*"):
        shutil.copy(f, copy / "checkpoints" / "mapper" / f.name)
    train_generation(tiny_config(phantom_brats_dir, "train.val_every=3"), copy, resume=True)
    a = load_file(str(tiny_run / "model.safetensors"))
    b = load_file(str(copy / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_inconsistent_grids_name_the_case(phantom_brats_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantom_brats_dir, data)
    case = sorted(p for p in data.iterdir() if p.is_dir())[2]
    for path in case.glob("*.nii.gz"):
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj)[:, :, :30]
        nib.save(nib.Nifti1Image(arr, img.affine, img.header), str(path))
    with pytest.raises(InputError, match=case.name):
        train_generation(tiny_config(data), tmp_path / "run")
    from lift3d.data.discovery import discover_cases

    with pytest.raises(InputError, match=case.name):
        check_same_grid(list(discover_cases(data, validate=False)), "t1n")


def test_no_data_root_is_bad_input(tmp_path):
    cfg = load_config(GenerateConfig, "configs/generate_tiny.yaml")
    with pytest.raises(InputError):
        train_generation(cfg, tmp_path / "run")


def test_mapper_feature_kinds():
    from lift3d.models.encoder import SliceEncoder
    from lift3d.training.generate import mapper_feature_fn

    enc = SliceEncoder(1, (4, 8, 16))
    x = torch.rand(5, 1, 32, 24)
    assert mapper_feature_fn(enc, "embed") == enc.embed
    feats = mapper_feature_fn(enc, "multiscale", tokens=3, thumbnail=8)(x)
    assert set(feats) == {"scale0", "scale1", "scale2", "pixels"}
    assert feats["scale1"].shape == (5, 8 * 9) and feats["pixels"].shape == (5, 64)
    assert "pixels" not in mapper_feature_fn(enc, "multiscale", thumbnail=0)(x)
    with pytest.raises(InputError, match="mapper.features"):
        mapper_feature_fn(enc, "pixels")


def test_multiscale_mapper_with_weight_average_trains(phantom_brats_dir, tmp_path):
    run, last = train_tiny(
        phantom_brats_dir,
        tmp_path / "run",
        "mapper.features=multiscale",
        "mapper.thumbnail=8",
        "mapper.ema_decay=0.9",
    )
    assert "ed_coronal_incr_pixels" in last["mapper"] and "ed_axial_slice_scale2" in last["mapper"]
    from lift3d.training import checkpoint as ckpt

    _, tensors = ckpt.load_checkpoint(ckpt.list_checkpoints(run / "checkpoints/mapper")[-1][1])
    assert any(k.startswith("ema.") for k in tensors)


def test_depth_grouped_generator_batches(phantom_brats_dir, tmp_path):
    from lift3d.data.datasets import SliceDataset, VolumeDataset
    from lift3d.data.discovery import discover_cases
    from lift3d.training.generate import DepthGroups, slice_feature_sets

    cases = list(discover_cases(phantom_brats_dir, "auto", required=("t1n",)))
    slices = SliceDataset(VolumeDataset(cases, ["t1n"], (32, 32, 32), "axial", cache=True))
    groups = DepthGroups(slices)
    assert len(groups) == 32
    item = groups[5]
    assert item["t1n"].shape == (len(cases), 1, 32, 32)
    assert item["depth"] == pytest.approx(5 / 31)
    for j in range(len(cases)):  # subject j's slice at depth index 5
        assert torch.equal(item["t1n"][j], slices[j * 32 + 5]["t1n"])

    from lift3d.models.encoder import SliceEncoder

    enc = SliceEncoder(1, (4, 8, 16))
    sets = slice_feature_sets(enc, torch.rand(6, 1, 32, 32), tokens=2, thumbnail=4)
    assert set(sets) == {"scale0", "scale1", "scale2", "pixels"}
    assert sets["scale0"].shape == (6, 4, 4) and sets["pixels"].shape == (6, 1, 16)

    _, last = train_tiny(
        phantom_brats_dir,
        tmp_path / "run",
        "generator_batches=depth",
        "generator.batch_size=2",
        "generator_group=4",
    )
    assert "ed_scale1" in last["generator"] and np.isfinite(last["generator"]["loss"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("generator_batches=rows", "generator_batches"),
        ("mapper.features=pixels", "mapper.features"),
        ("mapper.ema_decay=1.0", "ema_decay"),
        ("mapper.path_mix=1.5", "path_mix"),
        ("mapper.lr_schedule=step", "lr_schedule"),
        ("mapper.lr_final_ratio=2", "lr_final_ratio"),
        ("detail.filter_sigma=0", "detail"),
        ("detail.samples=0", "detail"),
        ("detail.estimator=fft", "detail.estimator"),
        ("mapper.prior_weight=-1", "prior_weight"),
    ],
)
def test_bad_generate_options_fail_before_training(phantom_brats_dir, tmp_path, override, message):
    with pytest.raises(InputError, match=message):
        train_generation(tiny_config(phantom_brats_dir, override), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_learn_path_needs_a_moving_base_path(phantom_brats_dir, tmp_path):
    cfg = tiny_config(phantom_brats_dir, "mapper.learn_path=true", "mapper.path_sigma=0")
    with pytest.raises(InputError, match="learn_path"):
        train_generation(cfg, tmp_path / "run")


def test_mapper_selection_keeps_best_validated_step(phantom_brats_dir, tmp_path):
    cfg = tiny_config(
        phantom_brats_dir,
        "mapper.select=true",
        "mapper.select_every=2",
        "mapper.select_samples=3",
        "mapper.select_encoder_steps=3",
    )
    run = train_generation(cfg, tmp_path / "run")
    val = [json.loads(x) for x in (run / "logs/mapper_val.jsonl").read_text().splitlines()]
    assert [r["step"] for r in val] == [2, 4]
    best = min(val, key=lambda r: r["select_kid"])
    ref = json.loads((run / "reference.json").read_text())
    assert ref["mapper_selection"]["selected"]["step"] == best["step"] == val[-1]["best_step"]
    assert all(np.isfinite(r["select_kid_coronal"]) for r in val)


def test_cosine_factor_endpoints():
    assert cosine_factor(0, 100, 0.05) == pytest.approx(1.0)
    assert cosine_factor(50, 100, 0.05) == pytest.approx(0.525)
    assert cosine_factor(100, 100, 0.05) == pytest.approx(0.05)
    assert cosine_factor(500, 100, 0.05) == pytest.approx(0.05)  # held after the end
    factors = [cosine_factor(i, 100, 0.0) for i in range(101)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def test_mapper_cosine_schedule_decays_the_logged_lr(phantom_brats_dir, tmp_path):
    cfg = tiny_config(
        phantom_brats_dir,
        "mapper.lr_schedule=cosine",
        "mapper.lr_final_ratio=0.1",
        "train.log_every=1",
    )
    run = train_generation(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (run / "logs" / "mapper.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, cfg.mapper.steps + 1))
    for r in rows:  # the lr after step n's update is the factor at n
        expected = cfg.mapper.lr * cosine_factor(r["step"], cfg.mapper.steps, 0.1)
        assert r["lr"] == pytest.approx(expected, rel=1e-6)
    assert rows[-1]["lr"] == pytest.approx(0.1 * cfg.mapper.lr)


def test_detail_calibration_can_be_switched_off(phantom_brats_dir, tmp_path):
    run = train_generation(tiny_config(phantom_brats_dir, "detail.enabled=false"), tmp_path / "run")
    assert json.loads((run / "reference.json").read_text())["detail"] is None


def test_code_prior_penalty_measures_distance_from_the_prior():
    g = torch.Generator().manual_seed(0)
    prior = torch.randn(64, 32, 16, generator=g)
    assert code_prior_penalty(prior) < 0.01
    assert code_prior_penalty(1.4 * prior) > 0.5  # variance ~2
    assert code_prior_penalty(prior + 1.0) > 0.9  # mean ~1
    shifted = (1.4 * prior).requires_grad_(True)
    code_prior_penalty(shifted).backward()
    # The gradient shrinks codes that are too spread out.
    assert (shifted.grad * shifted).sum() > 0


def test_mapper_prior_weight_trains_and_logs(phantom_brats_dir, tmp_path):
    _, last = train_tiny(phantom_brats_dir, tmp_path / "run", "mapper.prior_weight=1.0")
    assert np.isfinite(last["mapper"]["code_prior"]) and last["mapper"]["code_prior"] >= 0
