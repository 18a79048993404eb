"""Generation training on tiny phantoms: each stage alone, the whole run, resume, bad input."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from matplotlib import pyplot as plt

from lift3d.config import MAPPER_LR_FINAL_RATIO, DetailConfig, GenerateConfig, load_config
from lift3d.errors import InputError
from lift3d.inference.detail import calibrate_model_folder
from lift3d.model_folder import GENERATION_STAGES
from lift3d.models.registry import generation_model_from_config
from lift3d.models.slice_generator import SliceAutoencoder
from lift3d.training.engine import Engine
from lift3d.training.generate import (
    Previews,
    RealCodes,
    SliceFeatures,
    check_same_grid,
    cosine_factor,
    load_training_data,
    slice_feature_sets,
    train_decoder,
    train_encoder,
    train_generation,
    train_generator,
    train_mapper,
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


def test_generator_feature_sets_shapes():
    from lift3d.models.encoder import SliceEncoder

    enc = SliceEncoder(1, (4, 8, 16))
    sets = slice_feature_sets(enc, torch.rand(6, 1, 32, 32), SliceFeatures(tokens=2, thumbnail=4))
    assert set(sets) == {"scale0", "scale1", "scale2", "pixels"}
    assert sets["scale0"].shape == (6, 4, 4) and sets["pixels"].shape == (6, 1, 16)
    no_thumb = SliceFeatures(thumbnail=0)
    assert "pixels" not in slice_feature_sets(enc, torch.rand(2, 1, 32, 32), no_thumb)
    assert "edges" not in sets


def test_edge_features_see_stripes_that_pooling_hides():
    """Vertical stripes and a flat slice of the same mean: equal thumbnails and 8x8 pooled
    encoder inputs, but the "edges" set tells them apart (and along the right axis)."""
    from lift3d.models.encoder import SliceEncoder

    enc = SliceEncoder(1, (4, 8))
    flat = torch.full((1, 1, 16, 16), 0.5)
    stripes = torch.zeros(1, 1, 16, 16)
    stripes[..., ::2] = 1.0  # columns alternate 1, 0
    spec = SliceFeatures(thumbnail=4, edges=2)
    a = slice_feature_sets(enc, flat, spec)
    b = slice_feature_sets(enc, stripes, spec)
    torch.testing.assert_close(a["pixels"], b["pixels"])
    assert a["edges"].shape == (1, 1, 8) and torch.count_nonzero(a["edges"]) == 0
    dy, dx = b["edges"][0, 0, :4], b["edges"][0, 0, 4:]
    assert torch.all(dy == 0) and torch.allclose(dx, torch.ones(4))


def test_generator_stage_folder_carries_the_output_detail(phantom_brats_dir, tmp_path, monkeypatch):
    """The detail is measured once G is trained and written with the generator-stage folder
    (no-mapper samples drawn while T trains get it); a resumed run keeps it unmeasured again."""
    from lift3d.inference.detail import calibrate_model
    from lift3d.training import generate as gen_module

    cfg = tiny_config(phantom_brats_dir)
    run = tmp_path / "run"
    calls = []

    def calibrate(model, ref):
        calls.append(1)
        return calibrate_model(model, cfg, ref)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(gen_module, "train_mapper", killed)
        with pytest.raises(KeyboardInterrupt):
            train_generation(cfg, run, calibrate=calibrate)
    first = json.loads((run / "reference.json").read_text())["detail"]
    assert calls == [1] and first["modalities"]["t1n"]["sigma_rel"] >= 0
    assert first["modalities"]["t1n"]["level_real_rel"] > 0
    train_generation(cfg, run, resume=True, calibrate=calibrate)
    assert calls == [1]  # G was trained before: not measured again, and kept
    assert json.loads((run / "reference.json").read_text())["detail"] == first
    assert json.loads((run / "run.json").read_text())["stages_done"] == list(GENERATION_STAGES)


def test_mapper_through_plane_term_gets_the_output_detail_noise(
    phantom_brats_dir, tmp_path, monkeypatch
):
    """``mapper.zgrad_weight``: every mapper step adds the term with the noise level the output
    detail measured after G's stage (scaled to the loss volume's 2x2 in-plane pooling), and the
    step log carries the ratio."""
    from lift3d.inference.detail import calibrate_model
    from lift3d.training import generate as gen_module

    cfg = tiny_config(phantom_brats_dir, "mapper.zgrad_weight=2", "mapper.loss_size=[16,16,16]")
    seen = []
    term = gen_module.through_plane_loss

    def spy(gen, real, noise_sigma=0.0, **kw):
        seen.append(list(noise_sigma))
        return term(gen, real, noise_sigma, **kw)

    monkeypatch.setattr(gen_module, "through_plane_loss", spy)
    run = train_generation(cfg, tmp_path / "run", calibrate=lambda m, r: calibrate_model(m, cfg, r))
    sigma = json.loads((run / "reference.json").read_text())["detail"]["modalities"]["t1n"]
    assert sigma["sigma_rel"] > 0 and len(seen) == cfg.mapper.steps
    assert all(s == pytest.approx([sigma["sigma_rel"] / 2]) for s in seen)
    logged = [json.loads(line) for line in (run / "logs" / "mapper.jsonl").read_text().splitlines()]
    assert all(row["zgrad_ratio"] > 0 for row in logged if "loss" in row)


@pytest.mark.parametrize(
    "override, message",
    [
        ("mapper.zgrad_weight=-1", "zgrad_weight"),
        ("mapper.path_mix=1.5", "path_mix"),
        ("mapper.lr_schedule=step", "lr_schedule"),
        ("detail.samples=0", "detail"),
        ("generator_average=4", "generator_average=4 .* train.keep_last >= 4"),
        ("generator_average=3 train.ckpt_every=3", "generator.steps > 2 x train.ckpt_every"),
    ],
)
def test_bad_generate_options_fail_before_training(phantom_brats_dir, tmp_path, override, message):
    with pytest.raises(InputError, match=message):
        train_generation(tiny_config(phantom_brats_dir, *override.split()), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_learn_path_needs_a_moving_base_path(phantom_brats_dir, tmp_path):
    cfg = tiny_config(phantom_brats_dir, "mapper.learn_path=true", "mapper.path_sigma=0")
    with pytest.raises(InputError, match="learn_path"):
        train_generation(cfg, tmp_path / "run")


def test_cosine_factor_endpoints():
    assert cosine_factor(0, 100, 0.05) == pytest.approx(1.0)
    assert cosine_factor(50, 100, 0.05) == pytest.approx(0.525)
    assert cosine_factor(100, 100, 0.05) == pytest.approx(0.05)
    assert cosine_factor(500, 100, 0.05) == pytest.approx(0.05)  # held after the end
    factors = [cosine_factor(i, 100, 0.0) for i in range(101)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def test_cosine_schedules_decay_the_logged_lr_of_each_stage(phantom_brats_dir, tmp_path):
    cfg = tiny_config(
        phantom_brats_dir,
        "encoder.lr_schedule=cosine",
        "generator.lr_schedule=cosine",
        "mapper.lr_schedule=cosine",
        "train.log_every=1",
    )
    run = train_generation(cfg, tmp_path / "run")
    final = MAPPER_LR_FINAL_RATIO
    for stage, sc in (
        ("encoder", cfg.encoder),
        ("generator", cfg.generator),
        ("mapper", cfg.mapper),
    ):
        log = (run / "logs" / f"{stage}.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in log]
        assert [r["step"] for r in rows] == list(range(1, sc.steps + 1))
        for r in rows:  # the lr after step n's update is the factor at n
            expected = sc.lr * cosine_factor(r["step"], sc.steps, final)
            assert r["lr"] == pytest.approx(expected, rel=1e-6), stage
        assert rows[-1]["lr"] == pytest.approx(final * sc.lr)


def test_constant_schedule_keeps_the_generator_lr(tiny_run):
    rows = [
        json.loads(line)
        for line in (tiny_run / "logs" / "generator.jsonl").read_text().splitlines()
    ]
    assert {r["lr"] for r in rows} == {rows[0]["lr"]}


def test_detail_calibration_is_a_step_on_the_finished_folder(tiny_run, phantom_brats_dir, tmp_path):
    """train_generation leaves reference.json["detail"] empty; calibrate_model_folder measures
    the folder's model and training cases and records the result there."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ref = json.loads((run / "reference.json").read_text())
    assert ref["detail"] is None
    record = calibrate_model_folder(
        run, phantom_brats_dir, DetailConfig(cases=2, samples=3, map_samples=4)
    )
    t1n = record["modalities"]["t1n"]
    assert t1n["n_real"] == 2 and t1n["n_generated"] == 3 and t1n["estimator"] == "noise"
    assert t1n["level_real_rel"] > t1n["level_generated_rel"] and t1n["sigma_rel"] > 0
    # A finished folder: each arm's intensity map, from its own 4 samples and the same 2 cases.
    for key in ("intensity_map", "intensity_map_mapper"):
        assert t1n[key]["n_real"] == 2 and t1n[key]["n_generated"] == 4
    assert t1n["intensity_map"]["real"] == t1n["intensity_map_mapper"]["real"]
    after = json.loads((run / "reference.json").read_text())
    assert after["detail"] == record
    assert {k: v for k, v in after.items() if k != "detail"} == {
        k: v for k, v in ref.items() if k != "detail"
    }
    # The same settings measure the same level (own noise seed, the split's first cases).
    again = calibrate_model_folder(run, settings=DetailConfig(cases=2, samples=3, map_samples=4))
    assert again == record


def test_retired_options_load_at_their_fixed_value_only(tmp_path):
    """Configs written before options were removed still load when they hold the value the
    code now always uses; another value is refused, naming the key."""
    cfg = load_config(
        GenerateConfig,
        "configs/generate_tiny.yaml",
        [
            "mapper.ema_decay=0.0",
            "mapper.tokens=3",
            "depth_weight=4",
            "model.encoder_objective=denoise",
            "generator_positives=0",
        ],
    )
    assert cfg == load_config(GenerateConfig, "configs/generate_tiny.yaml")
    for override in (
        "mapper.select=true",
        "mapper.path_per_component=true",
        "depth_weight=2",
        "generator_positives=256",
    ):
        with pytest.raises(InputError, match="was removed"):
            load_config(GenerateConfig, "configs/generate_tiny.yaml", [override])


# ------------------------------------------------------------------ each stage alone


def _stage_setup(root, run_dir, *overrides: str):
    cfg = tiny_config(root, *overrides)
    data = load_training_data(cfg)
    engine = Engine(cfg.train, run_dir, full_config=cfg, task="generate")
    model = generation_model_from_config(cfg)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return cfg, data, engine, model, state


def _changed(model, before, part: str) -> bool:
    after = model.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(part + "."))


def test_train_encoder_stage_alone(phantom_brats_dir, tmp_path):
    cfg, data, engine, model, before = _stage_setup(phantom_brats_dir, tmp_path / "run")
    encoder = train_encoder(cfg, engine, model, data.volumes)
    assert encoder is model.encoder
    assert _changed(model, before, "encoder")
    assert not _changed(model, before, "generator") and not _changed(model, before, "mapper")
    assert (tmp_path / "run/checkpoints/encoder/done").exists()
    last = json.loads((tmp_path / "run/logs/encoder.jsonl").read_text().splitlines()[-1])
    assert last["step"] == cfg.encoder.steps and np.isfinite(last["loss"])


def test_train_generator_stage_alone(phantom_brats_dir, tmp_path):
    """G trains against a frozen E (here untrained: the stage needs none before it)."""
    cfg, data, engine, model, before = _stage_setup(phantom_brats_dir, tmp_path / "run")
    train_generator(cfg, engine, model, data.volumes)
    assert _changed(model, before, "generator")
    assert not _changed(model, before, "encoder") and not _changed(model, before, "mapper")
    assert not any(p.requires_grad for p in model.encoder.parameters())
    last = json.loads((tmp_path / "run/logs/generator.jsonl").read_text().splitlines()[-1])
    assert last["step"] == cfg.generator.steps and "ed_scale0" in last and "ed_pixels" in last


def test_train_mapper_stage_alone_with_previews(phantom_brats_dir, tmp_path):
    """T trains with E and G frozen, learns its base path, and previews every val_every."""
    run = tmp_path / "run"
    cfg, data, engine, model, before = _stage_setup(phantom_brats_dir, run, "train.val_every=2")
    previews = Previews.for_run(run, data, engine)
    train_mapper(cfg, engine, model, data.volumes, previews)
    assert _changed(model, before, "mapper")
    assert not _changed(model, before, "encoder") and not _changed(model, before, "generator")
    assert float(model.mapper.path_sigma.detach()) != pytest.approx(cfg.mapper.path_sigma, abs=1e-7)
    assert sorted(p.name for p in (run / "val").glob("mapper_*.png")) == [
        "mapper_0000002.png",
        "mapper_0000004.png",
    ]
    val = [json.loads(x) for x in (run / "logs/mapper_val.jsonl").read_text().splitlines()]
    assert [r["step"] for r in val] == [2, 4] and all(r["zgrad_ratio"] > 0 for r in val)
    last = json.loads((run / "logs/mapper.jsonl").read_text().splitlines()[-1])
    assert "ed_coronal_incr" in last and np.isfinite(last["loss"])


def test_latent_generator_autoencoder_trains_with_the_encoder_and_stays_frozen_after(
    phantom_brats_dir, tmp_path
):
    """model.generator_latent: the encoder stage trains E and G's slice autoencoder together
    (its reconstruction loss logged, a preview row), the generator stage trains only G's
    latent stack, and samples decode through the autoencoder."""
    run = tmp_path / "run"
    cfg, data, engine, model, before = _stage_setup(
        phantom_brats_dir,
        run,
        "model.generator_latent=3",
        "train.val_every=2",
    )
    assert model.generator.autoencoder.latent_channels == 3
    previews = Previews.for_run(run, data, engine)
    train_encoder(cfg, engine, model, data.volumes, previews)
    assert _changed(model, before, "encoder") and _changed(model, before, "generator.autoencoder")
    last = json.loads((run / "logs/encoder.jsonl").read_text().splitlines()[-1])
    assert last["recon_l1"] > 0 and last["pretext"] > 0
    val = json.loads((run / "logs/encoder_val.jsonl").read_text().splitlines()[-1])
    assert val["autoencoder_l1"] > 0
    # the preview shows one slice per plane (4 rows x 3 columns of full slices, not strips)
    png = plt.imread(sorted((run / "val").glob("encoder_*.png"))[-1])
    assert png.shape[1] > 400 and png.shape[0] > 600
    after_encoder = {k: v.clone() for k, v in model.state_dict().items()}
    train_generator(cfg, engine, model, data.volumes, previews)
    assert _changed(model, after_encoder, "generator.blocks")
    assert not _changed(model, after_encoder, "generator.autoencoder")
    samples = model.sample(2, torch.Generator().manual_seed(0))
    assert samples.shape == (2, 1, *model.shape) and 0 <= samples.min() <= samples.max() <= 1


def test_adversarial_generator_stage_trains_a_critic_and_resumes(phantom_brats_dir, tmp_path):
    """generator_adversarial > 0: the generator stage trains G's latent stack and a critic on
    its latent maps (both losses logged), leaves the autoencoder frozen, and a run stopped
    after the stage's first checkpoint resumes to the same weights."""
    from safetensors.torch import load_file

    overrides = (
        "model.generator_latent=3",
        "generator_adversarial=0.5",
        "generator_critic_width=16",
        "train.val_every=3",
    )
    full = tmp_path / "full"
    cfg, data, engine, model, before = _stage_setup(phantom_brats_dir, full, *overrides)
    train_encoder(cfg, engine, model, data.volumes)
    after_encoder = {k: v.clone() for k, v in model.state_dict().items()}
    train_generator(cfg, engine, model, data.volumes)
    assert _changed(model, after_encoder, "generator.blocks")
    assert not _changed(model, after_encoder, "generator.autoencoder")
    last = json.loads((full / "logs/generator.jsonl").read_text().splitlines()[-1])
    assert last["critic"] > 0 and np.isfinite(last["adversarial"])
    final = load_file(str(full / "checkpoints/generator/final.safetensors"))
    assert final["discriminator.net.0.bias"].shape == (16,)  # generator_critic_width

    # the same stage, stopped after its first checkpoint (step 2 of 4) and resumed
    part = tmp_path / "part"
    shutil.copytree(full, part)
    shutil.rmtree(part / "checkpoints" / "generator")
    (part / "checkpoints" / "generator").mkdir()
    for f in (full / "checkpoints" / "generator").glob("step_0000002.*"):
        shutil.copy(f, part / "checkpoints" / "generator" / f.name)
    cfg2, data2, engine2, model2, _ = _stage_setup(phantom_brats_dir, part, *overrides)
    model2.load_state_dict(after_encoder)
    train_generator(cfg2, engine2, model2, data2.volumes)
    again = load_file(str(part / "checkpoints/generator/final.safetensors"))
    assert all(torch.allclose(final[k], again[k], atol=1e-6) for k in final)


def test_decoder_stage_tunes_only_the_decoder_and_the_mapper_trains_on_it(
    phantom_brats_dir, tmp_path
):
    """decoder.steps > 0: after G's stage only the autoencoder's decoder changes (its L1
    reconstruction, the patch critic's and the drifting losses logged), G's stack and the
    autoencoder's encoder stay as G's stage left them, a resumed run loads the tuned decoder,
    and the final folder holds it."""
    from safetensors.torch import load_file

    overrides = (
        "model.generator_latent=3",
        "decoder.steps=4",
        "decoder.batch_size=8",
        "decoder_critic_width=8",
        "decoder_critic_depth=4",
        "decoder_drifting=0.1",
    )
    run = tmp_path / "run"
    cfg, data, engine, model, _ = _stage_setup(phantom_brats_dir, run, *overrides)
    train_encoder(cfg, engine, model, data.volumes)
    train_generator(cfg, engine, model, data.volumes)
    after_g = {k: v.clone() for k, v in model.state_dict().items()}
    train_decoder(cfg, engine, model, data.volumes)
    for part in ("dec_low", "dec_mid", "dec_high"):
        assert _changed(model, after_g, f"generator.autoencoder.{part}")
    assert not _changed(model, after_g, "generator.autoencoder.enc")
    for part in ("stem", "style", "blocks", "head"):
        assert not _changed(model, after_g, f"generator.{part}")
    assert not _changed(model, after_g, "encoder")
    assert not any(p.requires_grad for p in model.generator.parameters())
    last = json.loads((run / "logs/decoder.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 4 and last["recon_l1"] > 0 and last["critic"] > 0
    assert np.isfinite(last["adversarial"]) and last["drifting"] > 0
    final = load_file(str(run / "checkpoints/decoder/final.safetensors"))
    assert final["critic.net.0.bias"].shape == (8,)  # decoder_critic_width
    assert final["critic.net.2.parametrizations.weight.original"].shape[1] == 8 + 4  # its depth
    tuned = {k: v.clone() for k, v in model.state_dict().items()}

    # the whole run: a resumed run loads the tuned decoder instead of training it again
    whole = train_generation(tiny_config(phantom_brats_dir, *overrides), tmp_path / "whole")
    stamp = (whole / "checkpoints/decoder/final.safetensors").stat().st_mtime_ns
    train_generation(tiny_config(phantom_brats_dir, *overrides), whole, resume=True)
    assert (whole / "checkpoints/decoder/final.safetensors").stat().st_mtime_ns == stamp
    weights = load_file(str(whole / "model.safetensors"))
    dec = load_file(str(whole / "checkpoints/decoder/final.safetensors"))
    key = "generator.autoencoder.dec_high.4.weight"
    assert torch.equal(weights[key], dec[key])
    assert not torch.equal(tuned[key], after_g[key])


def test_decoder_stage_needs_a_latent_generator(phantom_brats_dir, tmp_path):
    with pytest.raises(InputError, match="decoder.steps > 0 needs a latent generator"):
        train_generation(tiny_config(phantom_brats_dir, "decoder.steps=2"), tmp_path / "run")


@pytest.mark.parametrize(("drifting", "depth_dim"), [(0.0, 0), (0.5, 0), (0.0, 4)])
def test_decoder_step_trains_against_an_updated_critic(drifting, depth_dim):
    """`decoder_step`: the critic takes its own Adam step on real slices vs the decoder's
    renderings of G's maps; the returned loss is L1 reconstruction + weight x the critic's
    term (+ drifting x G's drifting loss in E's features), and its gradient reaches the
    decoder only."""
    from lift3d.models.generation import build_generation
    from lift3d.models.slice_generator import SliceCritic
    from lift3d.training.generate import decoder_step

    torch.manual_seed(0)
    model = build_generation("tiny", 1, (6, 16, 16), generator_latent=2, autoencoder_width=8)
    g = model.generator
    for p in model.parameters():
        p.requires_grad_(False)
    for part in (g.autoencoder.dec_low, g.autoencoder.dec_mid, g.autoencoder.dec_high):
        for p in part.parameters():
            p.requires_grad_(True)
    critic = SliceCritic(1, width=4, depth_dim=depth_dim)
    for p in critic.parameters():
        p.requires_grad_(False)
    critic_before = {k: v.clone() for k, v in critic.state_dict().items()}
    batch = {"t1n": torch.rand(6, 1, 16, 16), "depth": torch.linspace(0, 1, 6)}
    pair = torch.nn.ModuleDict({"generator": g, "critic": critic})
    out = decoder_step(
        pair,
        batch,
        modalities=["t1n"],
        weight=0.5,
        drifting=drifting,
        encoder=model.encoder.eval(),
        features=SliceFeatures(tokens=2, thumbnail=4, edges=4),
    )
    assert int(critic.adam_step) == 1
    assert any(not torch.equal(critic_before[k], v) for k, v in critic.state_dict().items())
    expected = out["recon_l1"] + 0.5 * out["adversarial"]
    if drifting:
        assert out["drifting"] > 0
        expected = expected + drifting * out["drifting"]
    else:
        assert "drifting" not in out
    assert torch.allclose(out["loss"].detach(), expected)
    out["loss"].backward()
    assert g.autoencoder.dec_high[4].weight.grad is not None
    assert g.autoencoder.enc[0].weight.grad is None and g.head.weight.grad is None
    assert all(p.grad is None for p in critic.parameters())
    assert all(p.grad is None for p in model.encoder.parameters())


def test_adversarial_generator_needs_a_latent_generator(phantom_brats_dir, tmp_path):
    with pytest.raises(InputError, match="generator_adversarial needs a latent generator"):
        train_generation(
            tiny_config(phantom_brats_dir, "generator_adversarial=0.5"), tmp_path / "run"
        )


def test_sampling_defaults_need_the_detail_calibration(phantom_brats_dir, tmp_path):
    for option in ("detail.sample_detail=true", "detail.sample_intensity_map=true"):
        cfg = tiny_config(phantom_brats_dir, option, "detail.enabled=false")
        with pytest.raises(InputError, match="need detail.enabled: true"):
            train_generation(cfg, tmp_path / "run")
        assert not (tmp_path / "run").exists()  # refused before a run folder exists


def test_mapper_without_residual_head_trains_only_the_base_path(phantom_brats_dir, tmp_path):
    cfg, data, engine, model, before = _stage_setup(
        phantom_brats_dir, tmp_path / "run", "mapper.residual_head=false"
    )
    train_mapper(cfg, engine, model, data.volumes)
    assert not _changed(model, before, "mapper.gru") and not _changed(model, before, "mapper.out")
    sigma = float(model.mapper.path_sigma.detach())
    assert sigma != cfg.mapper.path_sigma and sigma != float(before["mapper.path_sigma"])
    eps, per_slice = model.mapper.sample_noise(2, model.num_slices)
    with torch.no_grad():
        base = model.mapper.base_trajectory(eps, per_slice[..., model.mapper.slice_noise_dim :])
        assert torch.equal(model.mapper(eps, per_slice), base)
    with pytest.raises(InputError, match="leaves nothing to train"):
        train_generation(
            tiny_config(phantom_brats_dir, "mapper.residual_head=false", "mapper.learn_path=false"),
            tmp_path / "run2",
        )


def _slice_batch(vols: torch.Tensor, cases: list[int], slices: list[int]) -> dict:
    ci, si = torch.tensor(cases), torch.tensor(slices)
    return {"x": vols[ci, si][:, None], "case_index": ci, "index": si}


def test_real_codes_encode_each_slice_once_and_match_the_autoencoder():
    torch.manual_seed(0)
    ae = SliceAutoencoder(1, 3, width=8).eval()
    vols = torch.rand(3, 5, 12, 12)
    codes = RealCodes(ae, num_cases=3, num_slices=5, slice_size=(12, 12))
    calls = []
    ae.enc.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    first = _slice_batch(vols, [0, 2, 1], [4, 0, 3])
    got = codes(first["x"], first)
    with torch.no_grad():
        want = ae.encode(first["x"])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # a repeated slice is looked up, a new one encoded: one pass over the single new slice
    again = _slice_batch(vols, [2, 1, 0], [0, 2, 4])
    got = codes(again["x"], again)
    with torch.no_grad():
        want = ae.encode(again["x"])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert calls == [3, 3, 1, 3]  # test's own encodes: 3 and 3; the cache's: 3, then 1
    # with no room for the cache every call encodes
    uncached = RealCodes(ae, num_cases=3, num_slices=5, slice_size=(12, 12), limit=0)
    assert uncached.codes is None
    torch.testing.assert_close(uncached(again["x"], again), want, rtol=1e-5, atol=1e-6)


def test_autoencoder_width_reaches_the_model_and_bad_widths_are_refused(tmp_path):
    cfg = tiny_config(tmp_path, "model.generator_latent=2", "model.autoencoder_width=8")
    ae = generation_model_from_config(cfg).generator.autoencoder
    assert ae.enc[0].out_channels == 8 and ae.dec_low[0].out_channels == 16
    default = generation_model_from_config(tiny_config(tmp_path, "model.generator_latent=2"))
    assert default.generator.autoencoder.enc[0].out_channels == 32  # older models' width
    with pytest.raises(InputError, match="autoencoder_width"):
        tiny_config(tmp_path, "model.autoencoder_width=0")


def test_generator_average_is_the_mean_of_the_newest_checkpoints_and_resumes(
    phantom_brats_dir, tmp_path
):
    """generator_average=N: after its stage G holds the mean of its newest N step checkpoints
    (not the last iterate), and a finished stage resumed gives the same weights."""
    from lift3d.models.weights import load_weights

    overrides = ("generator_average=2",)  # tiny: 6 G steps, checkpoints at 2, 4, 6
    run = tmp_path / "run"
    cfg, data, engine, model, _ = _stage_setup(phantom_brats_dir, run, *overrides)
    train_generator(cfg, engine, model, data.volumes)
    averaged = {k: v.clone() for k, v in model.generator.state_dict().items()}

    stage = run / "checkpoints" / "generator"
    iterates = []
    for step in (4, 6):
        g = generation_model_from_config(cfg).generator
        load_weights(g, stage / f"step_{step:07d}.safetensors")
        iterates.append(g.state_dict())
    moved = False
    for k, v in averaged.items():
        mean = (iterates[0][k].double() + iterates[1][k].double()) / 2
        assert torch.allclose(v.double(), mean, atol=1e-7), k
        moved |= not torch.equal(v, iterates[1][k])
    assert moved  # not the last iterate

    cfg2, data2, engine2, model2, _ = _stage_setup(phantom_brats_dir, run, *overrides)
    train_generator(cfg2, engine2, model2, data2.volumes)  # finished: loaded, averaged again
    assert all(torch.equal(averaged[k], v) for k, v in model2.generator.state_dict().items())
