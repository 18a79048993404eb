"""Translation inference: geometry, HU restoration, chunking, mixer ablation, bad inputs."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from lift3d.config import TranslateConfig
from lift3d.data.preprocess import CT_WINDOW_HU
from lift3d.data.volume import Volume, read_volume, write_volume
from lift3d.errors import InputError
from lift3d.inference.translate import (
    TranslationBundle,
    load_translation_model,
    plan_dataset,
    read_inputs,
    translate_volumes,
)
from lift3d.model_folder import save_model
from lift3d.models.registry import translation_model_from_config as build_model


def make_model_dir(path, task="mr2ct", shape=(16, 16, 16), chunk_size=4, seed=0):
    """A model folder holding a random tiny model with non-zero ('trained') mixers."""
    torch.manual_seed(seed)
    cfg = TranslateConfig(task=task)
    cfg.data.shape = list(shape)
    cfg.model.size = "tiny"
    cfg.model.chunk_size = chunk_size
    model = build_model(cfg)
    for mixer in model.mixers:
        for block in mixer.blocks:
            torch.nn.init.normal_(block.proj_out.weight, std=0.3)
    return save_model(model, cfg, path)


class EchoModel(torch.nn.Module):
    """Stand-in translator whose output is its first input channel (known values)."""

    def __init__(self):
        super().__init__()
        self.translator = type("T", (), {"multiple": 1})()

    def forward(self, x, use_mixer=True, chunk_size=None):
        return x[:, :1]


def echo_bundle(shape=(16, 16, 16)):
    cfg = TranslateConfig(task="mr2ct")
    cfg.data.shape = list(shape)
    return TranslationBundle(EchoModel(), cfg, "mr2ct", ["mr"], "ct", "cpu", None)


def oblique_mr(shape=(20, 14, 18), seed=0):
    """An MR volume on an oblique, LPS-ish, anisotropic grid (not the model grid)."""
    rng = np.random.default_rng(seed)
    angle = 0.3
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-1.1, -0.9, 2.5])
    affine[:3, 3] = [12.0, -30.0, 4.0]
    array = rng.uniform(10, 500, size=shape).astype(np.float32)
    return Volume(array, affine)


def test_output_on_input_grid(tmp_path):
    bundle = load_translation_model(make_model_dir(tmp_path / "m"), "cpu")
    mr = oblique_mr()
    write_volume(mr, tmp_path / "mr.nii.gz")
    mr = read_volume(tmp_path / "mr.nii.gz")
    sct = translate_volumes(bundle, {"mr": mr})
    assert sct.shape == mr.shape
    np.testing.assert_allclose(sct.affine, mr.affine, atol=1e-6)
    write_volume(sct, tmp_path / "sct.nii.gz")
    back = read_volume(tmp_path / "sct.nii.gz")
    assert back.same_grid(mr, atol_mm=1e-4)
    assert CT_WINDOW_HU[0] <= back.array.min() and back.array.max() <= CT_WINDOW_HU[1]


def test_input_larger_than_model_grid_is_not_cropped(tmp_path):
    bundle = load_translation_model(make_model_dir(tmp_path / "m", shape=(8, 8, 8)), "cpu")
    mr = oblique_mr((20, 22, 12))
    sct = translate_volumes(bundle, {"mr": mr})
    assert sct.shape == mr.shape
    # the echo of the whole field of view: no voxel is left at the -1024 HU fill outside the grid
    echo = translate_volumes(echo_bundle((8, 8, 8)), {"mr": mr})
    assert (echo.array > CT_WINDOW_HU[0]).mean() > 0.99


def test_hu_restored_exactly():
    mr = oblique_mr()
    sct = translate_volumes(echo_bundle(), {"mr": mr})
    # echo of the normalised MR: [0, 1] -> HU window, voxel by voxel on the source grid
    low, high = np.percentile(mr.array[mr.array != 0], [0.5, 99.5])
    norm = np.clip((mr.array - low) / (high - low), 0, 1)
    expected = CT_WINDOW_HU[0] + norm * (CT_WINDOW_HU[1] - CT_WINDOW_HU[0])
    np.testing.assert_allclose(sct.array, expected, atol=0.05)  # float32 HU


def test_mixer_flag_and_chunk_independence(tmp_path):
    bundle = load_translation_model(make_model_dir(tmp_path / "m", chunk_size=3), "cpu")
    mr = oblique_mr((16, 16, 16))
    with_mixer = translate_volumes(bundle, {"mr": mr}).array
    without = translate_volumes(bundle, {"mr": mr}, use_mixer=False).array
    assert np.abs(with_mixer - without).max() > 1.0  # HU: the trained mixer changes the output
    for chunk in (0, 5):  # 0: the whole volume at once
        bundle.cfg.model.chunk_size = chunk
        other = translate_volumes(bundle, {"mr": mr}).array
        np.testing.assert_allclose(with_mixer, other, atol=0.05)  # HU, float rounding only


def test_missing_model_output_name_and_grid(tmp_path, phantom_brats_dir):
    bundle = load_translation_model(make_model_dir(tmp_path / "m", task="missing"), "cpu")
    case_dir = sorted(p for p in phantom_brats_dir.iterdir() if p.is_dir())[0]
    files = [
        p for p in sorted(case_dir.iterdir()) if not p.name.endswith(("-t2f.nii.gz", "-seg.nii.gz"))
    ]
    volumes = read_inputs(bundle, files)
    assert sorted(volumes) == ["t1c", "t1n", "t2w"]
    out = translate_volumes(bundle, volumes)
    ref = read_volume(case_dir / f"{case_dir.name}-t2f.nii.gz")
    assert out.same_grid(ref)
    assert 0.0 <= out.array.min() and out.array.max() <= 1.0


def test_plan_dataset_missing(tmp_path, phantom_brats_dir):
    bundle = load_translation_model(make_model_dir(tmp_path / "m", task="missing"), "cpu")
    with pytest.raises(InputError, match="all four"):
        plan_dataset(bundle, phantom_brats_dir)
    plan = plan_dataset(bundle, phantom_brats_dir, target="cycle")
    assert [t for _, t in plan] == ["t1n", "t1c", "t2w", "t2f"]
    data = tmp_path / "brats"
    shutil.copytree(phantom_brats_dir, data)
    case = sorted(p for p in data.iterdir() if p.is_dir())[1]
    (case / f"{case.name}-t1c.nii.gz").unlink()
    (case / f"{case.name}-t2w.nii.gz").unlink()
    with pytest.raises(InputError, match="lacks 2"):
        plan_dataset(bundle, data, target="cycle")


def test_bad_model_folders(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_translation_model(tmp_path / "nothing", "cpu")
    model_dir = make_model_dir(tmp_path / "m")
    info = json.loads((model_dir / "run.json").read_text())
    info["task"] = "generate"
    (model_dir / "run.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="generate"):
        load_translation_model(model_dir, "cpu")
    other = make_model_dir(tmp_path / "m2")
    (other / "model.safetensors").unlink()
    with pytest.raises(InputError, match="model.safetensors"):
        load_translation_model(other, "cpu")


def test_bad_inputs(tmp_path):
    bundle = load_translation_model(make_model_dir(tmp_path / "m"), "cpu")
    mr = oblique_mr()
    with pytest.raises(InputError, match="takes"):
        translate_volumes(bundle, {"t1n": mr})
    write_volume(mr, tmp_path / "a.nii.gz")
    with pytest.raises(InputError, match="one MR volume"):
        read_inputs(bundle, [tmp_path / "a.nii.gz", tmp_path / "a.nii.gz"])
    flat = Volume(mr.array, np.diag([1.0, 1.0, 0.0, 1.0]))
    with pytest.raises(InputError, match="geometry"):
        translate_volumes(bundle, {"mr": flat})
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), tmp_path / "4d.nii.gz")
    with pytest.raises(InputError, match="3D"):
        read_inputs(bundle, [tmp_path / "4d.nii.gz"])
    missing = load_translation_model(make_model_dir(tmp_path / "mm", task="missing"), "cpu")
    with pytest.raises(InputError, match="modality from the file name"):
        read_inputs(missing, [tmp_path / "a.nii.gz"])
    with pytest.raises(InputError, match="3 of"):
        translate_volumes(missing, {"t1n": mr, "t1c": mr})
