"""The mapper step's loss volume: decoding only the slices the loss grid needs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lift3d.losses import triplanar
from lift3d.models.registry import build_generation_model
from lift3d.training.generate import (
    Previews,
    detail_noise,
    encoder_preview,
    generator_preview,
    loss_factors,
    mapper_preview,
    mapper_step,
)


def test_loss_factors():
    assert loss_factors((64, 64, 64), [32, 32, 32]) == (2, 2, 2)
    assert loss_factors((64, 32, 64), [16, 32, 32]) == (4, 1, 2)
    # No loss size, the model grid itself, or an axis that does not divide: no shortcut.
    assert loss_factors((64, 64, 64), None) is None
    assert loss_factors((64, 64, 64), [64, 64, 64]) is None
    assert loss_factors((64, 64, 60), [32, 32, 32]) is None


def test_decode_at_given_depths_matches_the_full_volume():
    torch.manual_seed(0)
    model = build_generation_model("tiny", 1, (8, 16, 16)).eval()
    codes = torch.randn(2, 8, model.generator.latent_dim)
    with torch.no_grad():
        full = model.decode(codes)
        odd = model.decode(codes[:, 1::2], model.depths()[1::2])
    assert odd.shape == (2, 1, 4, 16, 16)
    torch.testing.assert_close(odd, full[:, :, 1::2])


@pytest.mark.parametrize("loss_size", [[4, 8, 8], [5, 8, 8]])
def test_mapper_step_decodes_only_the_loss_grid(monkeypatch, loss_size):
    """With integer factors G decodes every second slice (4 of 8) and generated and real
    volumes reach the loss on the loss grid, pooled the same way; otherwise all 8 slices are
    decoded and the loss resamples both."""
    torch.manual_seed(0)
    model = build_generation_model("tiny", 1, (8, 16, 16))
    model.freeze_for_mapper()
    decoded: list[int] = []
    seen: dict[str, torch.Tensor] = {}
    generator_forward = model.generator.forward

    def counting_forward(w, s):
        decoded.append(w.shape[0])
        return generator_forward(w, s)

    def recording_loss(gen, real, embed, **kw):
        seen["gen"], seen["real"] = gen, real
        return gen.mean() * 0 + real.mean(), {}

    monkeypatch.setattr(model.generator, "forward", counting_forward)
    monkeypatch.setattr("lift3d.training.generate.triplanar_drifting_loss", recording_loss)
    real = torch.rand(3, 1, 8, 16, 16)
    out = mapper_step(
        model.mapper,
        {"t1n": real},
        model=model,
        modalities=["t1n"],
        gen_batch=2,
        num_positions=2,
        loss_size=loss_size,
    )
    out["loss"].backward()
    assert any(p.grad is not None for p in model.mapper.parameters())
    if loss_size == [4, 8, 8]:
        assert decoded == [2 * 4]
        assert seen["gen"].shape == (2, 1, 4, 8, 8) and seen["real"].shape == (3, 1, 4, 8, 8)
        # The real volumes: one phase of every second slice, average-pooled in-plane (up to
        # the random left-right mirror of each volume).
        pooled = [F.avg_pool3d(real[:, :, phase::2], (1, 2, 2)) for phase in (0, 1)]
        mirrored = [p.flip(-1) for p in pooled]
        for i in range(3):
            got = seen["real"][i]
            assert any(torch.allclose(got, c[i]) for c in pooled + mirrored)
    else:
        assert decoded == [2 * 8]
        assert seen["gen"].shape == (2, 1, 8, 16, 16)


def test_triplanar_loss_unchanged_on_the_loss_grid():
    """The loss itself resamples nothing when the volumes already are on the loss grid."""
    gen, real = torch.rand(2, 1, 4, 8, 8), torch.rand(3, 1, 4, 8, 8)
    embed = lambda x: x.mean(dim=(2, 3))  # noqa: E731
    a, _ = triplanar.triplanar_drifting_loss(
        gen, real, embed, loss_size=(4, 8, 8), generator=torch.Generator().manual_seed(0)
    )
    b, _ = triplanar.triplanar_drifting_loss(
        gen, real, embed, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(a, b)


def test_previews_under_bf16_autocast(tmp_path):
    """Stage previews run inside the engine's autocast: bf16 outputs still become PNGs."""
    torch.manual_seed(0)
    model = build_generation_model("tiny", 1, (8, 16, 16)).eval()
    previews = Previews(tmp_path, torch.rand(1, 8, 16, 16), torch.device("cpu"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        encoder_preview(model.encoder, 1, previews=previews)
        generator_preview(model.generator, 1, previews=previews)
        metrics = mapper_preview(model.mapper, 1, model=model, previews=previews)
    assert metrics["zgrad_ratio"] > 0
    assert sorted(p.name.split("_")[0] for p in tmp_path.glob("*.png")) == [
        "encoder",
        "generator",
        "mapper",
    ]


def test_mapper_step_through_plane_term(monkeypatch):
    """With ``zgrad_weight`` the step adds the weighted through-plane term to the drifting loss
    and reports the ratio; without it the loss is the drifting loss alone."""
    seen: dict[str, object] = {}

    def recording_term(gen, real, noise_sigma=0.0, **kw):
        seen["sigma"] = noise_sigma
        return gen.mean() * 0 + 0.5, 0.7

    monkeypatch.setattr(
        "lift3d.training.generate.triplanar_drifting_loss",
        lambda gen, real, embed, **kw: (gen.mean() * 0 + 2.0, {}),
    )
    monkeypatch.setattr("lift3d.training.generate.through_plane_loss", recording_term)
    torch.manual_seed(0)
    model = build_generation_model("tiny", 1, (8, 16, 16))
    model.freeze_for_mapper()
    kw = dict(model=model, modalities=["t1n"], gen_batch=2, num_positions=2, loss_size=[4, 8, 8])
    batch = {"t1n": torch.rand(3, 1, 8, 16, 16)}
    off = mapper_step(model.mapper, batch, **kw)
    assert off["loss"].item() == pytest.approx(2.0) and "zgrad_ratio" not in off
    on = mapper_step(model.mapper, batch, zgrad_weight=3.0, noise_sigma=[0.04], **kw)
    assert on["loss"].item() == pytest.approx(2.0 + 3.0 * 0.5) and on["zgrad_ratio"] == 0.7
    # the detail's noise std, averaged over the 2x2 in-plane pooling of the loss volume
    assert seen["sigma"] == pytest.approx([0.02])


def test_detail_noise_reads_the_output_detail_record():
    detail = {"modalities": {"t1n": {"sigma_rel": 0.03}, "t2w": {"level_real_rel": 0.1}}}
    assert detail_noise(detail, ["t1n", "t2w", "t2f"]) == [0.03, 0.0, 0.0]
    assert detail_noise(None, ["t1n"]) == [0.0]
