"""Per-slice translator F, TranslationModel (F + mixers) and the registry."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from lift3d.models.registry import TRANSLATION_SIZES, build_translation_model
from lift3d.models.translator import SliceUNet


def randomise_mixers(model) -> None:
    """Stand-in for a trained mixer: random (non-zero) output projections."""
    for mixer in model.mixers:
        for block in mixer.blocks:
            torch.nn.init.normal_(block.proj_out.weight, std=0.2)


def per_slice_reference(model, x):
    """F applied slice by slice, the no-mapper model by definition."""
    b = x.shape[0]
    slices = rearrange(x, "b c d h w -> (b d) c h w")
    return rearrange(model.translator(slices), "(b d) c h w -> b c d h w", b=b)


def test_slice_unet_shapes():
    unet = SliceUNet(3, 1, channels=(4, 8, 16))
    y = unet(torch.rand(5, 3, 16, 24))
    assert y.shape == (5, 1, 16, 24)
    h, skips = unet.encode(torch.rand(2, 3, 16, 24))
    assert h.shape == (2, 16, 4, 6)
    assert [s.shape[1] for s in skips] == [4, 8]
    assert unet.feature_channels() == [16, 8, 4]


def test_slice_unet_is_per_slice():
    torch.manual_seed(0)
    unet = SliceUNet(2, 1, channels=(4, 8)).eval()
    x = torch.rand(4, 2, 8, 8)
    together = unet(x)
    alone = torch.cat([unet(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)  # float rounding only


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_zero_init_model_equals_translator(size):
    torch.manual_seed(0)
    model = build_translation_model(size, in_channels=2).eval()
    x = torch.rand(1, 2, 6, 16, 16)
    with torch.no_grad():
        with_mixer = model(x)
        no_mixer = model(x, use_mixer=False)
        reference = per_slice_reference(model, x)
    assert torch.equal(with_mixer, no_mixer)
    torch.testing.assert_close(no_mixer, reference, atol=1e-6, rtol=0)


def test_no_mixer_ignores_trained_mixer():
    torch.manual_seed(0)
    model = build_translation_model("tiny", in_channels=1).eval()
    randomise_mixers(model)
    x = torch.rand(1, 1, 6, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(model(x), per_slice_reference(model, x), atol=1e-4)
        torch.testing.assert_close(
            model(x, use_mixer=False), per_slice_reference(model, x), atol=1e-6, rtol=0
        )
    ablation = build_translation_model("tiny", in_channels=1, use_mixer=False)
    ablation.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ablation(x), per_slice_reference(model, x), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("size", "inplane"), [("tiny", 0), ("small", 0), ("tiny", 3)])
def test_chunk_size_independence(size, inplane):
    torch.manual_seed(0)
    model = build_translation_model(size, in_channels=2, mixer_inplane=inplane).eval()
    randomise_mixers(model)
    x = torch.rand(2, 2, 23, 12, 20)  # H, W not multiples of the U-Net stride: padded inside
    with torch.no_grad():
        full = model(x)
        assert full.shape == (2, 1, 23, 12, 20)
        for chunk in (1, 4, 9, 22):
            torch.testing.assert_close(model(x, chunk_size=chunk), full, atol=2e-5, rtol=0)
        for chunk in (1, 5):
            torch.testing.assert_close(
                model(x, use_mixer=False, chunk_size=chunk),
                model(x, use_mixer=False),
                atol=2e-5,
                rtol=0,
            )


def test_chunked_output_depends_on_far_slices_only_within_receptive_field():
    torch.manual_seed(0)
    model = build_translation_model("tiny", in_channels=1).eval()
    randomise_mixers(model)
    r = model.receptive_field()
    assert r == sum(m.receptive_field for m in model.mixers) > 0
    x = torch.rand(1, 1, 30, 8, 8)
    x2 = x.clone()
    x2[:, :, 15] = torch.rand(8, 8)
    with torch.no_grad():
        diff = (model(x2, chunk_size=4) - model(x, chunk_size=4)).abs().amax(dim=(0, 1, 3, 4))
    changed = (diff > 0).nonzero().flatten()
    assert changed.min().item() >= 15 - r and changed.max().item() <= 15 + r
    assert diff[15 - 1] > 0 and diff[15 + 1] > 0  # the mixer does look across slices


def test_training_gradients_flow_to_mixer_after_first_step():
    torch.manual_seed(0)
    model = build_translation_model("tiny", in_channels=1)
    x, y = torch.rand(1, 1, 5, 8, 8), torch.rand(1, 1, 5, 8, 8)
    (model(x) - y).abs().mean().backward()
    assert all(p.grad is not None for p in model.translator.parameters())
    assert model.mixers[0].blocks[0].proj_out.weight.grad.abs().sum() > 0


def test_registry():
    assert {"tiny", "small", "base"} <= set(TRANSLATION_SIZES)
    model = build_translation_model("tiny", in_channels=3, z_context=1, mixer_depth=1)
    assert model.receptive_field() == len(model.mixers)
    with pytest.raises(ValueError, match="size"):
        build_translation_model("huge", in_channels=1)
    with pytest.raises(ValueError, match="option"):
        build_translation_model("tiny", in_channels=1, colour="red")


def test_size_names_in_constants_match_the_registries():
    """config.py checks `model.size` against lift3d.constants (it may not import models)."""
    from lift3d.constants import GENERATION_SIZE_NAMES, TRANSLATION_SIZE_NAMES
    from lift3d.models.generation import GENERATION_SIZES
    from lift3d.models.registry import TRANSLATION_SIZES

    assert tuple(TRANSLATION_SIZES) == TRANSLATION_SIZE_NAMES
    assert tuple(GENERATION_SIZES) == GENERATION_SIZE_NAMES
