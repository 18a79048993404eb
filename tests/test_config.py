"""Typed configs: YAML files, dotted overrides, key, type and value checks, save/load round trip."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
import yaml

from lift3d.config import (
    DataConfig,
    GenerateConfig,
    TrainConfig,
    TranslateConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
    validate_config,
)
from lift3d.configs import config_path
from lift3d.constants import GENERATION_SIZE_NAMES, TRANSLATION_SIZE_NAMES
from lift3d.errors import InputError
from lift3d.models.generation import GENERATION_SIZES
from lift3d.models.registry import TRANSLATION_SIZES


@dataclass
class MixerSection:
    depth: int = 2
    widths: list[int] = field(default_factory=lambda: [8, 16])
    scale: float | None = None


@dataclass
class TaskConfig:
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mixer: MixerSection = field(default_factory=MixerSection)
    name: str = "task"


def write(tmp_path, text: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file():
    cfg = load_config(TaskConfig)
    assert cfg == TaskConfig()
    assert cfg.train.lr == 2e-4 and cfg.data.shape == [64, 64, 64]


def test_yaml_file_applied_over_defaults(tmp_path):
    path = write(
        tmp_path,
        "train:\n  lr: 1e-4\n  max_steps: 20\ndata:\n  shape: [8, 16, 16]\n  cache: false\n"
        "mixer:\n  scale: 2\n",
    )
    cfg = load_config(TaskConfig, path)
    assert cfg.train.lr == 1e-4  # YAML reads 1e-4 as a string; float fields accept it
    assert isinstance(cfg.train.lr, float)
    assert cfg.train.max_steps == 20 and cfg.train.batch_size == 8  # untouched default kept
    assert cfg.data.shape == [8, 16, 16] and cfg.data.cache is False
    assert cfg.mixer.scale == 2.0 and isinstance(cfg.mixer.scale, float)  # int widened


def test_empty_file_and_empty_section_keep_defaults(tmp_path):
    assert load_config(TaskConfig, write(tmp_path, "")) == TaskConfig()
    assert load_config(TaskConfig, write(tmp_path, "train:\n")) == TaskConfig()


def test_a_partial_section_keeps_the_fields_own_defaults(tmp_path):
    """A section given in part (file or override) keeps the defaults of the field it fills,
    not those of its class: the decoder stage's lr is 2e-4 where StageConfig's is 1e-3."""
    default = GenerateConfig()
    assert default.decoder.lr != type(default.decoder)().lr
    by_flag = load_config(GenerateConfig, overrides=["decoder.steps=7"])
    by_file = load_config(GenerateConfig, write(tmp_path, "decoder:\n  steps: 7\n"))
    for cfg in (by_flag, by_file):
        assert cfg.decoder.steps == 7
        assert cfg.decoder.lr == default.decoder.lr
        assert cfg.decoder.batch_size == default.decoder.batch_size
    assert load_config(GenerateConfig, overrides=["generator.steps=3"]).generator.lr == (
        default.generator.lr
    )


def test_dotted_overrides(tmp_path):
    path = write(tmp_path, "train:\n  lr: 0.5\n")
    cfg = load_config(
        TaskConfig,
        path,
        [
            "train.lr=1e-4",
            "data.shape=[32,32,16]",
            "data.cache=false",
            "data.skip_bad=true",
            "data.spacing_mm=[1, 1, 2.5]",
            "mixer.depth=3",
            "mixer.widths=[4]",
            "name=exp one",
            "data.root=/data/brats.v2",
        ],
    )
    assert cfg.train.lr == 1e-4  # the override wins over the file
    assert cfg.data.shape == [32, 32, 16]
    assert cfg.data.cache is False and cfg.data.skip_bad is True
    assert cfg.data.spacing_mm == [1.0, 1.0, 2.5]
    assert cfg.mixer.depth == 3 and cfg.mixer.widths == [4]
    assert cfg.name == "exp one" and cfg.data.root == "/data/brats.v2"
    assert load_config(TaskConfig, None, ["data.spacing_mm=null"]).data.spacing_mm is None


def test_parse_override():
    assert parse_override("train.lr=1e-4") == (["train", "lr"], 1e-4)
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=yes") == (["a"], True)
    assert parse_override("a.b=") == (["a", "b"], "")
    with pytest.raises(InputError, match="key=value"):
        parse_override("train.lr")
    with pytest.raises(InputError, match="empty key"):
        parse_override("=3")


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lrr=1", "train.lrr"),
        ("trian.lr=1", "trian"),
        ("mixer.depth.x=1", "mixer.depth"),
    ],
)
def test_unknown_keys_named(override, key):
    with pytest.raises(InputError, match=re.escape(f"'{key}'")):
        load_config(TaskConfig, None, [override])


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("train.max_steps=abc", "train.max_steps", "integer"),
        ("train.max_steps=2.5", "train.max_steps", "integer"),
        ("train.lr=fast", "train.lr", "number"),
        ("train.lr=true", "train.lr", "number"),
        ("data.cache=maybe", "data.cache", "true/false"),
        ("data.cache=1", "data.cache", "true/false"),
        ("data.shape=64", "data.shape", "list"),
        ("data.shape=[64, x, 64]", "data.shape[1]", "integer"),
        ("data.layout=[1]", "data.layout", "string"),
        ("train=5", "train", "section"),
        ("mixer.scale=abc", "mixer.scale", "float | None"),
    ],
)
def test_wrong_types_named(override, key, expected):
    with pytest.raises(InputError, match=re.escape(f"'{key}'") + ".*" + re.escape(expected)):
        load_config(TaskConfig, None, [override])


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        load_config(TaskConfig, tmp_path / "missing.yaml")
    assert err.value.path == tmp_path / "missing.yaml"
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(TaskConfig, write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(InputError, match="mapping"):
        load_config(TaskConfig, write(tmp_path, "- a\n- b\n"))
    with pytest.raises(InputError, match="'train.bogus'"):
        load_config(TaskConfig, write(tmp_path, "train:\n  bogus: 1\n"))


def test_save_load_round_trip(tmp_path):
    cfg = load_config(
        TaskConfig, None, ["train.lr=3e-5", "data.spacing_mm=[1, 1, 2]", "mixer.scale=0.5"]
    )
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # atomic, no temp left
    assert yaml.safe_load(path.read_text())["train"]["lr"] == 3e-5
    assert load_config(TaskConfig, path) == cfg
    assert config_from_dict(TaskConfig, config_to_dict(cfg)) == cfg


def test_base_dict_then_file_then_overrides(tmp_path):
    base = {"train": {"lr": 0.1, "seed": 1}}
    path = write(tmp_path, "train:\n  seed: 2\n")
    cfg = load_config(TaskConfig, path, ["train.max_steps=5"], base=base)
    assert (cfg.train.lr, cfg.train.seed, cfg.train.max_steps) == (0.1, 2, 5)
    assert base == {"train": {"lr": 0.1, "seed": 1}}  # the caller's dict is not modified
    with pytest.raises(InputError, match="mapping"):
        config_from_dict(TaskConfig, [1, 2])


# ------------------------------------------------------------------ value checks


@pytest.mark.parametrize(
    "cls, override, key",
    [
        (TranslateConfig, "translator.lr=-1", "translator.lr"),
        (TranslateConfig, "translator.lr=0", "translator.lr"),
        (TranslateConfig, "translator.lr=nan", "translator.lr"),
        (TranslateConfig, "mixer.lr=inf", "mixer.lr"),
        (TranslateConfig, "data.shape=[0,0,0]", "data.shape"),
        (TranslateConfig, "data.shape=[1,2]", "data.shape"),
        (TranslateConfig, "data.spacing_mm=[1,1,-1]", "data.spacing_mm"),
        (TranslateConfig, "data.val_fraction=1.0", "data.val_fraction"),
        (TranslateConfig, "data.val_fraction=-0.1", "data.val_fraction"),
        (TranslateConfig, "data.slice_axis=oblique", "data.slice_axis"),
        (TranslateConfig, "translator.steps=-5", "translator.steps"),
        (TranslateConfig, "mixer.batch_size=0", "mixer.batch_size"),
        (TranslateConfig, "model.size=huge", "model.size"),
        (TranslateConfig, "task=ct2mr", "task"),
        (TranslateConfig, "train.device=tpu", "train.device"),
        (TranslateConfig, "train.precision=fp8", "train.precision"),
        (TranslateConfig, "train.weight_decay=-0.1", "train.weight_decay"),
        (GenerateConfig, "model.size=huge", "model.size"),
        (GenerateConfig, "model.modalities=[]", "model.modalities"),
        (GenerateConfig, "mapper.path_mix=1.5", "mapper.path_mix"),
        (GenerateConfig, "mapper.loss_size=[8,8]", "mapper.loss_size"),
        (GenerateConfig, "mapper.lr_schedule=linear", "mapper.lr_schedule"),
        (GenerateConfig, "encoder.batch_size=0", "encoder.batch_size"),
    ],
)
def test_values_out_of_range_are_named(cls, override, key):
    with pytest.raises(InputError, match=f"config key {re.escape(repr(key))}: must be"):
        load_config(cls, None, [override])


@pytest.mark.parametrize(
    "override",
    ["translator.steps=0", "data.val_fraction=0", "train.device=cuda:1", "data.shape=[8,16,16]"],
)
def test_values_at_the_edge_of_their_range_load(override):
    load_config(TranslateConfig, None, [override])


def test_validate_config_checks_values_set_after_loading():
    cfg = load_config(TranslateConfig)
    validate_config(cfg)
    cfg.train.lr = float("inf")
    with pytest.raises(InputError, match="'train.lr': must be a finite number"):
        validate_config(cfg)
    cfg.train.lr = 1e-3
    cfg.data.shape = [32, 0, 32]
    with pytest.raises(InputError, match="'data.shape'"):
        validate_config(cfg)


def test_size_names_match_the_registries():
    assert set(TRANSLATION_SIZE_NAMES) == set(TRANSLATION_SIZES)
    assert set(GENERATION_SIZE_NAMES) == set(GENERATION_SIZES)


def test_shipped_configs_are_valid():
    for name in ("translate_tiny", "translate_demo", "translate_mr2ct", "translate_missing"):
        load_config(TranslateConfig, config_path(name))
    for name in ("generate_tiny", "generate_demo", "generate_brats"):
        load_config(GenerateConfig, config_path(name))


def test_brats_generation_config_has_the_demo_design_and_a_cheap_loss_grid():
    from lift3d.training.generate import loss_factors

    demo = load_config(GenerateConfig, config_path("generate_demo"))
    brats = load_config(GenerateConfig, config_path("generate_brats"))
    for key in ("generator_tokens", "generator_thumbnail", "generator_edges"):
        assert getattr(brats, key) == getattr(demo, key), key
    assert brats.generator_adversarial == demo.generator_adversarial > 0
    assert brats.decoder.steps > 0 and demo.decoder.steps > 0
    for key in ("decoder_adversarial", "decoder_drifting", "decoder_critic_width"):
        assert getattr(brats, key) == getattr(demo, key) > 0, key
    assert brats.mapper.residual_head is demo.mapper.residual_head is False
    assert brats.model.generator_latent == demo.model.generator_latent > 0
    assert all(s % 16 == 0 for s in brats.data.shape) and brats.data.store == "auto"
    # every second slice decoded and pooled 2x: integer factors, no trilinear resampling
    assert loss_factors(brats.data.shape, brats.mapper.loss_size) == (2, 2, 2)
