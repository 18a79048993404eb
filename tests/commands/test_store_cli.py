"""`lift3d store`: the on-disk store built ahead of training is the one training uses."""

from __future__ import annotations

import shutil

from lift3d.cli import main
from lift3d.config import TranslateConfig, load_config
from lift3d.configs import config_path
from lift3d.data import discovery
from lift3d.training.translate import train_translation


def test_store_command_builds_what_training_reads(phantom_brats_dir, tmp_path, monkeypatch, capsys):
    data = tmp_path / "brats"
    shutil.copytree(phantom_brats_dir, data)
    store_dir = tmp_path / "store"
    argv = ["store", "translate", "--task", "missing", "--data", str(data)]
    argv += ["--config", "translate_tiny", "--set", f"data.store={store_dir}"]
    assert main(argv) == 0
    assert "4 cases" in capsys.readouterr().out
    decodes = []
    real = discovery.read_volume
    monkeypatch.setattr(discovery, "read_volume", lambda p: decodes.append(p) or real(p))
    discovery.clear_decode_cache()
    overrides = ["task=missing", "translator.steps=1", "mixer.steps=1", "mixer.z_chunk=8"]
    cfg = load_config(TranslateConfig, config_path("translate_tiny"), overrides)
    cfg.data.root, cfg.data.store = str(data), str(store_dir)
    train_translation(cfg, tmp_path / "run")
    assert decodes == []


def test_store_command_without_store_in_config_uses_auto(phantom_brats_dir, tmp_path, capsys):
    data = tmp_path / "brats"
    shutil.copytree(phantom_brats_dir, data)
    argv = ["store", "generate", "--data", str(data), "--config", "generate_tiny"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "data.store=auto" in out and (tmp_path / "brats.lift3d-store").is_dir()
