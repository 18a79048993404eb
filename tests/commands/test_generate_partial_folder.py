"""The generation model folder written after the generator stage (mapper not trained yet)."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from lift3d.cli import main
from lift3d.config import GenerateConfig, load_config
from lift3d.errors import InputError
from lift3d.model_folder import load_model, read_model_folder
from lift3d.training import generate


def _config(root) -> GenerateConfig:
    cfg = load_config(
        GenerateConfig, "configs/generate_tiny.yaml", ["train.device=cpu", "train.ckpt_every=2"]
    )
    cfg.data.root = str(root)
    return cfg


@pytest.fixture(scope="module")
def runs(phantom_brats_dir, tmp_path_factory):
    """(final run, a copy of the same run taken when the mapper stage began)."""
    base = tmp_path_factory.mktemp("partial")
    run, partial = base / "run", base / "partial"
    real_train_mapper = generate.train_mapper
    seen = {}

    def snapshot_then_train(cfg, engine, model, volumes, previews=None, detail=None):
        seen["stages"] = json.loads((run / "run.json").read_text())["stages_done"]
        shutil.copytree(run, partial)
        return real_train_mapper(cfg, engine, model, volumes, previews, detail)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(generate, "train_mapper", snapshot_then_train)
        generate.train_generation(_config(phantom_brats_dir), run)
    assert seen["stages"] == ["encoder", "generator"]
    return run, partial


def _sample(model, out, *extra) -> list[np.ndarray]:
    argv = ["generate", "--model", str(model), "--n", "2", "--seed", "1", "--out", str(out)]
    assert main([*argv, *extra]) == 0
    return [nib.load(str(f)).get_fdata() for f in sorted(out.glob("sample_*.nii.gz"))]


def test_the_folder_after_the_generator_stage_samples_the_final_no_mapper_arm(runs, tmp_path):
    run, partial = runs
    assert json.loads((partial / "run.json").read_text())["stages_done"] == [
        "encoder",
        "generator",
    ]
    assert json.loads((run / "run.json").read_text())["stages_done"] == [
        "encoder",
        "generator",
        "mapper",
    ]
    # G and E are frozen during the mapper stage: the same no-mapper samples at one seed.
    early = _sample(partial, tmp_path / "early", "--no-mapper")
    final = _sample(run, tmp_path / "final", "--no-mapper")
    assert len(early) == len(final) == 2
    assert all(np.array_equal(a, b) for a, b in zip(early, final, strict=True))
    info = json.loads((tmp_path / "early" / "generation.json").read_text())
    assert info["use_mapper"] is False and info["model_stages"] == ["encoder", "generator"]
    # The final folder samples with the mapper.
    assert len(_sample(run, tmp_path / "lift")) == 2


def test_the_mapper_of_an_unfinished_folder_is_refused_in_one_line(runs, tmp_path, capsys):
    _, partial = runs
    out = tmp_path / "samples"
    assert main(["generate", "--model", str(partial), "--n", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(partial) in err and "mapper stage is not trained yet" in err
    assert "--no-mapper" in err and "--resume" in err
    assert not out.exists()  # refused before the output is touched
    # The library readers refuse it too, unless asked for the no-mapper arm.
    with pytest.raises(InputError, match="mapper stage is not trained yet"):
        load_model(partial, "generate")
    model, folder = load_model(partial, "generate", use_mapper=False)
    assert folder.stages_done == ["encoder", "generator"] and not folder.mapper_trained
    with pytest.raises(InputError, match="mapper stage is not trained yet"):
        from lift3d.inference.generate import generate_volumes

        generate_volumes(partial, 1, tmp_path / "lib")


def test_unfinished_generator_stage_and_older_folders(runs, tmp_path):
    run, _ = runs
    old = tmp_path / "old"
    shutil.copytree(run, old)
    info = json.loads((old / "run.json").read_text())
    del info["stages_done"]  # written before the field existed: a finished folder
    (old / "run.json").write_text(json.dumps(info))
    assert read_model_folder(old, "generate").mapper_trained
    info["stages_done"] = ["encoder"]
    (old / "run.json").write_text(json.dumps(info))
    for use_mapper in (True, False):
        with pytest.raises(InputError, match="not finished its generator stage"):
            read_model_folder(old, "generate", use_mapper=use_mapper)


def test_training_resumed_from_the_generator_stage_folder_finishes_it(
    runs, phantom_brats_dir, tmp_path
):
    from safetensors.torch import load_file

    run, partial = runs
    copy = tmp_path / "run"
    shutil.copytree(partial, copy)
    generate.train_generation(_config(phantom_brats_dir), copy, resume=True)
    assert read_model_folder(copy, "generate").mapper_trained
    a, b = load_file(str(run / "model.safetensors")), load_file(str(copy / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
