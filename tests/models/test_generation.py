"""Generation model parts: encoder, slice generator, trajectory mapper, E+G+T composition."""

from __future__ import annotations

import pytest
import torch

from lift3d.losses.triplanar import triplanar_drifting_loss
from lift3d.models.encoder import SliceEncoder, TorchScriptEncoder
from lift3d.models.generation import build_generation
from lift3d.models.slice_generator import SliceGenerator
from lift3d.models.trajectory import TrajectoryMapper


@pytest.mark.parametrize("objective", ["denoise", "masked"])
def test_encoder_shapes_and_pretext(objective):
    enc = SliceEncoder(2, (8, 16), objective=objective)
    x = torch.rand(3, 2, 16, 12)
    feats = enc.features(x)
    assert [f.shape[1] for f in feats] == [8, 16]
    assert enc.embed(x).shape == (3, enc.feat_dim)
    assert enc.reconstruct(x).shape == x.shape
    corrupted = enc.corrupt(x, torch.Generator().manual_seed(0))
    assert corrupted.shape == x.shape and not torch.equal(corrupted, x)
    loss = enc.pretext_loss(x)
    loss.backward()
    assert all(p.grad is not None for p in enc.parameters())
    # Non-square slices (coronal/sagittal cuts) embed to the same size.
    assert enc.embed(torch.rand(2, 2, 8, 20)).shape == (2, enc.feat_dim)
    with pytest.raises(ValueError):
        SliceEncoder(1, objective="contrastive")


def test_torchscript_encoder_plugin(tmp_path):
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 5, 3), torch.nn.ReLU())
    path = tmp_path / "enc.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    enc = TorchScriptEncoder(path)
    assert enc.embed(torch.rand(4, 1, 10, 10)).shape == (4, 5)
    from lift3d.errors import InputError

    with pytest.raises(InputError):
        TorchScriptEncoder(tmp_path / "missing.pt")


@pytest.mark.parametrize("size", [(16, 16), (24, 20), (240, 240), (7, 9)])
def test_generator_output_shape_and_range(size):
    gen = SliceGenerator(8, 2, size, width=16)
    out = gen(torch.randn(3, 8), torch.rand(3))
    assert out.shape == (3, 2, *size)
    assert out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError):
        gen(torch.randn(3, 8))


def test_generator_depth_changes_output():
    gen = SliceGenerator(8, 1, (16, 16), width=16)
    torch.nn.init.normal_(gen.blocks[0].film.weight, std=0.5)
    w = torch.randn(1, 8).expand(2, -1)
    out = gen(w, torch.tensor([0.0, 1.0]))
    assert not torch.allclose(out[0], out[1])


def test_depth_embedding_top_frequency_is_the_set_one():
    """The embedding's components run geometrically from sin(pi s) to sin(f pi s): at the
    default f = 64 the top one alternates within two slices of a 64-slice volume."""
    from lift3d.models.slice_generator import depth_embedding

    s = torch.linspace(0, 1, 64)
    for f in (64.0, 8.0):
        emb = depth_embedding(s, 16, f)
        assert torch.allclose(emb[:, 0], torch.sin(torch.pi * s), atol=1e-5)
        assert torch.allclose(emb[:, 7], torch.sin(f * torch.pi * s), atol=1e-4)
    top = depth_embedding(s, 16)[:, 7]
    assert (top[1:] - top[:-1]).abs().mean() > 1.0  # the default: changes sign nearly every slice
    assert (depth_embedding(s, 16, 8.0)[:, 7].diff().abs().mean()) < 0.5


def test_generator_depth_frequency_reaches_g_from_the_config():
    from lift3d.config import GenerateConfig, load_config
    from lift3d.models.registry import generation_model_from_config

    cfg = load_config(
        GenerateConfig, "configs/generate_tiny.yaml", ["model.generator_depth_frequency=8"]
    )
    model = generation_model_from_config(cfg)
    assert model.generator.depth_frequency == 8.0
    default = generation_model_from_config(
        load_config(GenerateConfig, "configs/generate_tiny.yaml")
    )
    assert default.generator.depth_frequency == 64.0


@pytest.mark.parametrize("d", [1, 2, 9])
def test_mapper_shapes_and_constant_code_init(d):
    mapper = TrajectoryMapper(8, d, hidden=16, layers=1, slice_noise_dim=4)
    eps, per_slice = mapper.sample_noise(3, generator=torch.Generator().manual_seed(0))
    assert eps.shape == (3, 8) and per_slice.shape == (3, d, 4)
    codes = mapper(eps, per_slice)
    assert codes.shape == (3, d, 8)
    # Zero-init head: training starts at the constant-code trajectory.
    assert torch.allclose(codes, eps[:, None].expand(-1, d, -1))


def test_mapper_base_path_has_unit_marginals_and_depth_correlation():
    """Base path: every code N(0, I) at every depth; correlation falls with depth distance
    towards the volume code's share `mix`; the zero-init head returns the base path."""
    d, mix = 33, 0.25
    mapper = TrajectoryMapper(16, d, hidden=8, layers=1, slice_noise_dim=2)
    mapper.set_base_path(0.05, mix)
    eps, per_slice = mapper.sample_noise(1000, generator=torch.Generator().manual_seed(0))
    assert per_slice.shape == (1000, d, 2 + 16)
    with torch.no_grad():
        codes = mapper(eps, per_slice)
    assert codes.shape == (1000, d, 16)
    assert torch.allclose(codes, mapper.base_trajectory(eps, per_slice[..., 2:]))
    var = codes.var(dim=0).mean(dim=1)  # (D,)
    assert torch.allclose(var, torch.ones(d), atol=0.15)
    assert codes.mean(dim=(0, 2)).abs().max() < 0.1

    def corr(a: int, b: int) -> float:
        return float((codes[:, a] * codes[:, b]).mean())

    near, far = corr(16, 17), corr(0, d - 1)
    assert 0.8 < near < 0.999  # neighbours similar, not identical
    assert abs(far - mix) < 0.1  # far apart: only the volume code is shared
    # Different volumes get different paths.
    assert not torch.allclose(codes[0], codes[1])


def test_mapper_base_path_is_saved_and_zero_width_is_the_constant_code():
    mapper = TrajectoryMapper(8, 5, hidden=8, layers=1, slice_noise_dim=2, path_sigma=0.1)
    state = mapper.state_dict()
    fresh = TrajectoryMapper(8, 5, hidden=8, layers=1, slice_noise_dim=2)
    assert not fresh.uses_path
    fresh.load_state_dict(state)
    assert fresh.uses_path and float(fresh.path_sigma) == pytest.approx(0.1)
    fresh.set_base_path(0.0, 0.5)  # zero width: one code swept through depth
    assert not fresh.uses_path
    eps, per_slice = fresh.sample_noise(2, generator=torch.Generator().manual_seed(0))
    assert per_slice.shape == (2, 5, 2)
    assert torch.allclose(fresh(eps, per_slice), eps[:, None].expand(-1, 5, -1))
    with pytest.raises(ValueError):
        fresh.set_base_path(0.1, 1.5)
    with pytest.raises(ValueError):
        fresh.set_base_path(-0.1, 0.5)


def test_mapper_learns_base_path_width_and_mix():
    """With learn_base_path the path width and mix get gradients and an optimiser moves them
    (here toward a smoother path: a loss on the codes' depth increments); frozen by default."""
    mapper = TrajectoryMapper(8, 17, hidden=8, layers=1, slice_noise_dim=2, path_sigma=0.02)
    assert not mapper.path_sigma.requires_grad and not mapper.path_mix.requires_grad
    mapper.learn_base_path(True)
    opt = torch.optim.Adam([mapper.path_sigma, mapper.path_mix], lr=0.01)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        eps, per_slice = mapper.sample_noise(64, generator=g)
        loss = mapper(eps, per_slice).diff(dim=1).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        assert mapper.path_sigma.grad is not None and mapper.path_mix.grad is not None
        opt.step()
    assert mapper.path_sigma.item() > 0.1  # smoother
    state = mapper.state_dict()
    assert {"path_sigma", "path_mix"} <= set(state)
    with pytest.raises(ValueError, match="path_sigma > 0"):
        TrajectoryMapper(8, 5, path_sigma=0.0).learn_base_path(True)


def test_generation_model_sample_and_ablation():
    model = build_generation("tiny", 2, (6, 16, 16)).eval()
    torch.nn.init.normal_(model.mapper.out.weight, std=0.1)
    g = torch.Generator().manual_seed(0)
    vols = model.sample(2, g)
    assert vols.shape == (2, 2, 6, 16, 16)
    again = model.sample(2, torch.Generator().manual_seed(0))
    assert torch.equal(vols, again)
    codes = model.trajectories(2, torch.Generator().manual_seed(0), use_mapper=False)
    assert codes.shape == (2, 6, model.generator.latent_dim)
    # Independent codes: neighbouring slices' codes are uncorrelated.
    corr = torch.nn.functional.cosine_similarity(codes[:, 1:], codes[:, :-1], dim=-1)
    assert corr.abs().mean() < 0.5
    assert model.sample(1, g, use_mapper=False).shape == (1, 2, 6, 16, 16)
    with pytest.raises(ValueError):
        build_generation("huge", 1, (4, 8, 8))


def test_chunked_decode_matches_single_pass():
    model = build_generation("tiny", 1, (10, 16, 16)).eval()
    codes = torch.randn(2, 10, model.generator.latent_dim)
    with torch.no_grad():
        full = model.decode(codes)
        model.slice_batch = 3
        chunked = model.decode(codes)
    assert torch.allclose(full, chunked, atol=1e-6)


def test_mapper_training_keeps_encoder_and_generator_frozen():
    torch.manual_seed(0)
    model = build_generation("tiny", 1, (8, 16, 16))
    model.freeze_for_mapper()
    model.train()
    assert not model.encoder.training and not model.generator.training and model.mapper.training
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("mapper.")}
    mapper_before = [p.clone() for p in model.mapper.parameters()]
    opt = torch.optim.Adam(model.mapper.parameters(), lr=1e-2)
    real = torch.rand(4, 1, 8, 16, 16)
    for _ in range(2):
        gen = model.decode(model.trajectories(4))
        loss, _ = triplanar_drifting_loss(gen, real, model.encoder.embed, num_positions=3)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, p in model.named_parameters():
        if not name.startswith("mapper."):
            assert p.grad is None and not p.requires_grad, name
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(a, b) for a, b in zip(mapper_before, model.mapper.parameters()))


@pytest.mark.parametrize("size", [(16, 16), (60, 62), (7, 9)])
def test_slice_autoencoder_shapes_and_latent_range(size):
    from lift3d.models.slice_generator import SliceAutoencoder

    ae = SliceAutoencoder(2, latent_channels=3, width=8)
    x = torch.rand(4, 2, *size)
    z = ae.encode(x)
    assert z.shape == (4, 3, *SliceAutoencoder.latent_size(size))
    assert z.abs().max() <= 1
    rec = ae.decode(z, size)
    assert rec.shape == x.shape and 0 <= rec.min() <= rec.max() <= 1
    ae.reconstruction_loss(x).backward()
    assert all(p.grad is not None for p in ae.parameters())


def test_latent_generator_decodes_through_its_autoencoder():
    torch.manual_seed(0)
    gen = SliceGenerator(8, 1, (32, 32), width=16, latent_channels=4)
    assert gen.sizes[-1] == (8, 8)  # the stack draws the (32 / 4)^2 latent map
    w, s = torch.randn(3, 8), torch.rand(3)
    out = gen(w, s)
    assert out.shape == (3, 1, 32, 32) and 0 <= out.min() <= out.max() <= 1
    with torch.no_grad():  # another decoder, another slice from the same latent map
        gen.autoencoder.dec_high[-1].bias.add_(1.0)
    assert not torch.allclose(gen(w, s), out)
    assert SliceGenerator(8, 1, (32, 32), width=16).autoencoder is None


def test_latent_critic_update_is_adam():
    """`LatentDiscriminator.update` takes the steps torch's Adam takes on the same loss."""
    from lift3d.models.slice_generator import LatentDiscriminator

    torch.manual_seed(0)
    critic = LatentDiscriminator(3, width=8)
    twin = LatentDiscriminator(3, width=8)
    twin.load_state_dict(critic.state_dict())
    opt = torch.optim.Adam(twin.parameters(), lr=1e-2, betas=(0.5, 0.99))
    z, s = torch.randn(4, 3, 16, 16), torch.rand(4)
    for _ in range(3):
        critic.update(critic(z, s).square().mean(), 1e-2)
        opt.zero_grad()
        twin(z, s).square().mean().backward()
        opt.step()
    # float32 rounding only (the bias corrections are applied in another order); each step
    # moves the weights by about 1e-2
    for a, b in zip(critic.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert int(critic.adam_step) == 3


def test_slice_critic_sees_depth_only_when_asked():
    """A `SliceCritic` with a depth embedding scores the same slice differently at another
    depth and needs the depths; without one the scores are one per patch and depth-free."""
    from lift3d.models.slice_generator import SliceCritic

    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)
    plain = SliceCritic(1, width=4)
    assert plain(x).shape == (2, 4, 4)
    conditioned = SliceCritic(1, width=4, depth_dim=6)
    low, high = conditioned(x, torch.zeros(2)), conditioned(x, torch.ones(2))
    assert low.shape == (2, 4, 4) and not torch.allclose(low, high)
    with pytest.raises(ValueError, match="pass the slices' depths"):
        conditioned(x)
    # the depth joins after the first convolution: its weights keep their names and shapes
    assert plain.net[0].weight.shape == conditioned.net[0].weight.shape


@pytest.mark.parametrize("size", [(32, 32), (30, 26), (7, 9)])
def test_slice_autoencoder_decoder_equals_its_plain_form(size):
    """The decoder's upsampling runs as transposed convolutions with GroupNorm and SiLU at half
    size where the upsampling is an exact x2: the same values as upsampling first."""
    import torch.nn.functional as F

    from lift3d.models.slice_generator import SliceAutoencoder

    torch.manual_seed(0)
    ae = SliceAutoencoder(1, latent_channels=4, width=8)
    for p in ae.parameters():  # away from the zero/one init of the norms
        with torch.no_grad():
            p.add_(0.1 * torch.randn_like(p))
    z = torch.tanh(torch.randn(3, 4, *SliceAutoencoder.latent_size(size)))
    mid = tuple(-(-n // 2) for n in size)
    plain = ae.dec_mid(F.interpolate(ae.dec_low(z), size=mid, mode="nearest"))
    plain = torch.sigmoid(ae.dec_high(F.interpolate(plain, size=size, mode="nearest")))
    torch.testing.assert_close(ae.decode(z, size), plain, rtol=1e-5, atol=1e-5)
