"""The model folder: saved once, rebuilt from the config in the weights header alone."""

from __future__ import annotations

import json

import pytest
import torch

from lift3d.config import GenerateConfig, TranslateConfig
from lift3d.errors import InputError
from lift3d.model_folder import (
    CONFIG_FILE,
    FORMAT_VERSION,
    REFERENCE_FILE,
    WEIGHTS_FILE,
    build_model,
    load_model,
    read_model_folder,
    save_model,
)
from lift3d.models.weights import load_tensors, save_tensors


def tiny_translate(task: str = "missing") -> TranslateConfig:
    cfg = TranslateConfig(task=task)
    cfg.model.size = "tiny"
    cfg.model.chunk_size = 4
    cfg.data.shape = [8, 16, 16]
    return cfg


def tiny_generate() -> GenerateConfig:
    cfg = GenerateConfig()
    cfg.model.size = "tiny"
    cfg.model.modalities = ["t1n", "t2w"]
    cfg.data.shape = [6, 16, 16]
    return cfg


def test_translation_model_is_rebuilt_from_the_weights_header_alone(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_translate()
    model = build_model("translate", cfg)
    save_model(model, cfg, tmp_path / "run")
    (tmp_path / "run" / CONFIG_FILE).unlink()  # the header, not config.yaml, rebuilds it
    loaded, folder = load_model(tmp_path / "run", "translate")
    assert folder.task == "translate" and folder.subtask == "missing"
    assert folder.config == cfg
    assert json.loads((tmp_path / "run" / "run.json").read_text())["subtask"] == "missing"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not loaded.training


def test_a_folder_keeps_the_mixer_levels_it_was_trained_with(tmp_path):
    """A folder saved with the registry's default (``mixer_levels`` null) loads with the level
    count its weights hold, also after the registry's default changed (small: 3 -> 2)."""
    torch.manual_seed(0)
    cfg = TranslateConfig(task="mr2ct")
    cfg.model.size = "small"
    cfg.data.shape = [8, 16, 16]
    assert cfg.model.mixer_levels is None
    today = build_model("translate", cfg)
    assert len(today.mixers) == 2  # today's default
    from lift3d.models.registry import build_translation_model

    three = build_translation_model("small", 1, 1, mixer_levels=3)
    save_model(three, cfg, tmp_path / "three")  # as trained when the default was 3
    loaded, folder = load_model(tmp_path / "three", "translate")
    assert len(loaded.mixers) == 3 and folder.config.model.mixer_levels is None
    for key, value in three.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    save_model(today, cfg, tmp_path / "two")
    assert len(load_model(tmp_path / "two", "translate")[0].mixers) == 2


def test_generation_folder_needs_its_reference_and_rebuilds_channels_and_grid(tmp_path):
    cfg = tiny_generate()
    model = build_model("generate", cfg)
    run = save_model(model, cfg, tmp_path / "gen", reference={"shape": cfg.data.shape})
    loaded, folder = load_model(run, "generate")
    assert folder.reference == {"shape": [6, 16, 16]}
    assert loaded.sample(1).shape == (1, 2, 6, 16, 16)
    (run / REFERENCE_FILE).unlink()
    with pytest.raises(InputError, match="lacks reference.json"):
        read_model_folder(run, "generate")


def test_a_folder_of_the_other_task_is_refused_with_the_command_to_run(tmp_path):
    cfg = tiny_translate("mr2ct")
    save_model(build_model("translate", cfg), cfg, tmp_path / "tr")
    with pytest.raises(InputError, match=r"from task 'translate' \(mr2ct\).*lift3d train generate"):
        read_model_folder(tmp_path / "tr", "generate")


def test_older_and_newer_formats_get_one_line_errors(tmp_path):
    cfg = tiny_translate("mr2ct")
    run = save_model(build_model("translate", cfg), cfg, tmp_path / "tr")
    tensors, meta = load_tensors(run / WEIGHTS_FILE)
    # A folder from before the format header: only task/subtask in the weights metadata.
    save_tensors(tensors, run / WEIGHTS_FILE, {"task": '"translate"', "subtask": '"mr2ct"'})
    with pytest.raises(InputError, match="older lift3d.*retrain it with 'lift3d train translate"):
        read_model_folder(run, "translate")
    save_tensors(tensors, run / WEIGHTS_FILE, {**meta, "format": str(FORMAT_VERSION + 1)})
    with pytest.raises(InputError, match="newer than this lift3d reads"):
        read_model_folder(run, "translate")


def test_missing_folder_and_unfinished_training(tmp_path):
    with pytest.raises(InputError, match="model folder not found"):
        read_model_folder(tmp_path / "nothing", "translate")
    (tmp_path / "run").mkdir()
    with pytest.raises(InputError, match="no run.json"):
        read_model_folder(tmp_path / "run", "translate")
    (tmp_path / "run" / "run.json").write_text(json.dumps({"task": "translate"}))
    with pytest.raises(InputError, match="lacks model.safetensors"):
        read_model_folder(tmp_path / "run", "translate")
