"""The 2.5D input (`model.context_slices`): assembly, edges, chunked == whole, training slabs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lift3d.config import TranslateConfig
from lift3d.data.datasets import SliceDataset
from lift3d.models.lift import slice_context
from lift3d.models.registry import build_translation_model, translation_model_from_config


def ramp(depth: int, channels: int = 1) -> torch.Tensor:
    """(1, C, D, 2, 3) volume whose slice d of channel c holds the value 10 c + d."""
    d = torch.arange(depth, dtype=torch.float32)[None, None, :, None, None]
    c = torch.arange(channels, dtype=torch.float32)[None, :, None, None, None]
    return (10 * c + d).expand(1, channels, depth, 2, 3).clone()


def test_slice_context_orders_offsets_and_replicates_edges():
    out = slice_context(ramp(4), 1)  # (1, 3, 4, 2, 3): offsets -1, 0, +1
    assert out.shape == (1, 3, 4, 2, 3)
    np.testing.assert_array_equal(
        out[0, :, :, 0, 0].numpy(), [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 3]]
    )
    two = slice_context(ramp(3, channels=2), 2)  # 5 blocks of the 2 channels
    assert two.shape == (1, 10, 3, 2, 3)
    # slice 0: offsets -2..2 -> slices 0 0 0 1 2; channel 1 adds 10
    np.testing.assert_array_equal(two[0, :, 0, 0, 0].numpy(), [0, 10, 0, 10, 0, 10, 1, 11, 2, 12])


def test_slice_context_zero_is_the_input_and_chunks_match_the_whole():
    x = torch.rand(2, 2, 7, 4, 5)
    assert torch.equal(slice_context(x, 0), x)
    whole = slice_context(x, 2)
    chunks = torch.cat([slice_context(x, 2, lo, min(lo + 3, 7)) for lo in range(0, 7, 3)], dim=2)
    assert torch.equal(chunks, whole)


def test_volume_thinner_than_the_context_repeats_its_only_slice():
    x = torch.rand(1, 1, 1, 4, 4)
    out = slice_context(x, 3)
    assert out.shape == (1, 7, 1, 4, 4)
    assert all(torch.equal(out[:, j : j + 1], x) for j in range(7))


@pytest.fixture(scope="module")
def model25():
    torch.manual_seed(0)
    model = build_translation_model("tiny", 2, context_slices=2).eval()
    with torch.no_grad():  # a mixer that is not the identity (zero-init residuals)
        for p in model.mixers.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("use_mixer", [False, True])
def test_chunked_inference_equals_whole_volume(model25, use_mixer):
    x = torch.rand(1, 2, 11, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model25(x, use_mixer=use_mixer, chunk_size=0)
        chunked = model25(x, use_mixer=use_mixer, chunk_size=3)
    assert whole.shape == (1, 1, 11, 12, 12)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_context_changes_the_output_and_thin_volumes_translate(model25):
    x = torch.rand(1, 2, 5, 8, 8, generator=torch.Generator().manual_seed(2))
    y = x.clone()
    y[:, :, 3] = 0  # change slice 3 only: slice 1 (2 away) sees it, slice 0 (3 away) does not
    with torch.no_grad():
        a, b = model25(x, use_mixer=False), model25(y, use_mixer=False)
        thin = model25(x[:, :, :1], chunk_size=1)
    assert not torch.allclose(a[:, :, 1], b[:, :, 1])
    assert torch.equal(a[:, :, 0], b[:, :, 0])
    assert thin.shape == (1, 1, 1, 8, 8) and torch.isfinite(thin).all()


def test_training_slab_gives_the_same_slice_as_the_whole_volume(model25):
    """SliceDataset(context=k) slabs + forward(slices=(k, k+1)) == whole-volume slice d."""

    class Volumes:
        modalities = ("a", "b")
        shape = (6, 8, 8)
        cache = True
        arrays = {
            m: np.random.default_rng(i).random((6, 8, 8), np.float32) for i, m in enumerate("ab")
        }
        arrays["mask"] = np.ones((6, 8, 8), np.float32)
        cases = [type("Case", (), {"case_id": "c0"})()]

        def __len__(self):
            return 1

        def load_arrays(self, index):
            return self.arrays, {}

    vols = Volumes()
    slices = SliceDataset(vols, context=2)
    x = torch.from_numpy(np.stack([vols.arrays["a"], vols.arrays["b"]]))[None]
    with torch.no_grad():
        whole = model25(x, use_mixer=False)
        for d in (0, 1, 3, 5):
            item = slices[d]
            assert item["a"].shape == (1, 5, 8, 8) and item["mask"].shape == (1, 8, 8)
            slab = torch.cat([item["a"], item["b"]])[None]
            one = model25(slab, use_mixer=False, slices=(2, 3))
            torch.testing.assert_close(one, whole[:, :, d : d + 1], atol=1e-5, rtol=1e-5)


def test_context_zero_is_exactly_the_old_model():
    """Default config: same parameter count, input width and output as a plain build."""
    cfg = TranslateConfig(task="mr2ct")
    cfg.model.size = "tiny"
    torch.manual_seed(3)
    new = translation_model_from_config(cfg)
    torch.manual_seed(3)
    old = build_translation_model("tiny", 1)  # the build without any context option
    n = sum(p.numel() for p in new.parameters())
    assert n == sum(p.numel() for p in old.parameters()) == 7801  # tiny mr2ct before 2.5D
    assert new.translator.in_channels == 1 and new.in_channels == 1
    x = torch.rand(1, 1, 5, 16, 16)
    with torch.no_grad():
        assert torch.equal(new(x), old(x))
    cfg.model.context_slices = 1
    wide = translation_model_from_config(cfg)
    assert wide.translator.in_channels == 3 and wide.in_channels == 1
    assert sum(p.numel() for p in wide.parameters()) > n


# ------------------------------------------------------------------ bad input and thin volumes


def test_context_slices_negative_or_not_below_the_slice_count_names_the_key():
    from lift3d.config import load_config
    from lift3d.errors import InputError

    with pytest.raises(InputError, match=r"'model\.context_slices'.*at least 0"):
        load_config(TranslateConfig, overrides=["model.context_slices=-1"])
    cfg = TranslateConfig(task="mr2ct")
    cfg.model.size = "tiny"
    cfg.data.shape = [6, 16, 16]
    for k in (-1, 6, 40):
        cfg.model.context_slices = k
        with pytest.raises(InputError, match=r"'model\.context_slices'.*0\.\.5") as err:
            translation_model_from_config(cfg)
        assert "\n" not in str(err.value)
    cfg.model.context_slices = 5  # every other slice of the grid as context: allowed
    assert translation_model_from_config(cfg).translator.in_channels == 11


@pytest.mark.parametrize("argv", [["model.context_slices=-2"], ["model.context_slices=32"]])
def test_cli_refuses_bad_context_slices_in_one_line(argv, phantom_synthrad_dir, tmp_path, capsys):
    from lift3d.cli import main

    out = tmp_path / "run"
    args = ["train", "translate", "--task", "mr2ct", "--data", str(phantom_synthrad_dir)]
    args += ["--out", str(out), "--config", "translate_demo", "--set", *argv]
    args += ["data.shape=[32,32,32]", "translator.steps=1", "mixer.steps=0"]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "model.context_slices" in err[0], err
    assert not out.exists()  # a run refused before training leaves nothing behind


def test_cli_checks_context_slices_before_reading_the_data(tmp_path, capsys):
    """The check runs before data discovery: an empty data folder is not reached."""
    from lift3d.cli import main

    data = tmp_path / "empty"
    data.mkdir()
    out = tmp_path / "run"
    args = ["train", "translate", "--task", "mr2ct", "--data", str(data), "--out", str(out)]
    args += ["--config", "translate_tiny", "--set", "model.context_slices=16"]
    args += ["data.shape=[16,16,16]"]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "model.context_slices" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_volume_thinner_than_the_mixer_context_translates(depth, context):
    """Two mixed points of receptive field 2 * 3 each (12 slices on each side), volumes of 1-3
    slices: the z-convs
    zero-pad past the ends, so whole and chunked outputs agree."""
    torch.manual_seed(0)
    model = build_translation_model(
        "tiny", 1, mixer_depth=2, z_context=3, context_slices=context
    ).eval()
    with torch.no_grad():
        for p in model.mixers.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert model.receptive_field() == 12
    x = torch.rand(1, 1, depth, 12, 12, generator=torch.Generator().manual_seed(depth))
    with torch.no_grad():
        whole = model(x, chunk_size=0)
        chunked = model(x, chunk_size=1)
        plain = model(x, use_mixer=False)
    assert whole.shape == (1, 1, depth, 12, 12) and torch.isfinite(whole).all()
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    if depth > 1:
        assert not torch.allclose(whole, plain, atol=1e-5)  # the mixer still mixes what there is
