"""Translation model sizes: parameter counts, shapes, chunked == whole inference for the sizes
meant for real data, and folders saved with an older size definition."""

from __future__ import annotations

import pytest
import torch

from lift3d.config import TranslateConfig
from lift3d.constants import TRANSLATION_SIZE_NAMES
from lift3d.errors import InputError
from lift3d.model_folder import load_model, save_model
from lift3d.models.registry import TRANSLATION_SIZES, build_translation_model
from lift3d.models.translator import ResBlock, SliceUNet

from .test_translator import randomise_mixers


def translator_params(size: str) -> int:
    return sum(p.numel() for p in build_translation_model(size, 1).translator.parameters())


def test_size_names_are_the_registry_keys():
    assert tuple(TRANSLATION_SIZES) == TRANSLATION_SIZE_NAMES == ("tiny", "small", "base", "large")


def test_parameter_counts():
    counts = {size: translator_params(size) for size in TRANSLATION_SIZE_NAMES}
    # tiny and small are pinned: tests and the CPU demo depend on them
    assert counts["tiny"] == 6553 and counts["small"] == 117393
    assert counts["small"] < counts["base"] < counts["large"]
    assert counts["base"] > 5_000_000  # sized for 240^2 slices, not the 64^3 phantom
    assert counts["large"] >= 20_000_000  # the range of the 2D networks used on SynthRAD/BraSyn


def test_small_sizes_are_plain_and_large_sizes_residual():
    for size, residual in [("tiny", False), ("small", False), ("base", True), ("large", True)]:
        unet = build_translation_model(size, 1).translator
        has_res = any(isinstance(m, ResBlock) for m in unet.modules())
        assert has_res is residual, size


def test_res_blocks_per_level_and_bad_value():
    unet = SliceUNet(2, 1, channels=(4, 8, 16), res_blocks=2)
    assert sum(isinstance(m, ResBlock) for m in unet.modules()) == 2 * 5  # 2 down, 1 mid, 2 up
    assert unet(torch.rand(3, 2, 12, 8)).shape == (3, 1, 12, 8)
    with pytest.raises(ValueError, match="res_blocks"):
        SliceUNet(1, 1, channels=(4, 8), res_blocks=-1)


@pytest.fixture(scope="module", params=["base", "large"])
def real_size_model(request):
    torch.manual_seed(0)
    model = build_translation_model(request.param, 2).eval()
    randomise_mixers(model)  # a trained mixer stand-in: chunking must still be exact
    return model


def test_real_sizes_forward_shapes_and_padding(real_size_model):
    x = torch.rand(1, 2, 3, 20, 24)  # H, W not multiples of 16: padded inside, cut back
    with torch.no_grad():
        y = real_size_model(x)
    assert y.shape == (1, 1, 3, 20, 24) and torch.isfinite(y).all()
    assert real_size_model.translator.multiple == 16  # 240 = 15 * 16: BraTS needs no padding


def test_real_sizes_chunked_equals_whole(real_size_model):
    x = torch.rand(1, 2, 11, 16, 16, generator=torch.Generator().manual_seed(1))
    assert real_size_model.receptive_field() == 8  # more than a chunk: the stream must carry it
    with torch.no_grad():
        whole = real_size_model(x, chunk_size=0)
        chunked = real_size_model(x, chunk_size=3)
        no_mixer = real_size_model(x, use_mixer=False, chunk_size=4)
        no_mixer_whole = real_size_model(x, use_mixer=False, chunk_size=0)
    assert not torch.allclose(whole, no_mixer, atol=1e-4)  # the mixer acts
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(no_mixer, no_mixer_whole, atol=1e-5, rtol=1e-4)


def test_folder_of_the_old_base_definition_is_refused_with_what_to_do(tmp_path):
    cfg = TranslateConfig(task="mr2ct")
    cfg.model.size = "base"
    cfg.data.shape = [8, 16, 16]
    # `base` before 2026-11: a plain U-Net of widths 16..128
    old = build_translation_model("base", 1, channels=(16, 32, 64, 128), res_blocks=0)
    run = save_model(old, cfg, tmp_path / "run")
    with pytest.raises(InputError) as err:
        load_model(run, "translate")
    message = str(err.value)
    assert "\n" not in message
    assert "weights do not fit" in message and "'base'" in message
    assert "retrain with 'lift3d train translate --config" in message
    # a folder of today's base loads
    run2 = save_model(build_translation_model("base", 1), cfg, tmp_path / "run2")
    model, folder = load_model(run2, "translate")
    assert folder.config.model.size == "base"
