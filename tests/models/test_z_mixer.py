"""Bidirectional z-context mixer: shapes, zero-init identity, finite receptive field, direction."""

from __future__ import annotations

import pytest
import torch

from lift3d.models.z_mixer import BidirectionalZMixer, DirectionalZConv


def randomise_output(mixer: BidirectionalZMixer) -> None:
    """Give the zero-initialised output projections random weights (a 'trained' mixer)."""
    for block in mixer.blocks:
        torch.nn.init.normal_(block.proj_out.weight, std=0.2)
        torch.nn.init.normal_(block.proj_out.bias, std=0.1)


@pytest.mark.parametrize("depth_slices", [1, 2, 7])
@pytest.mark.parametrize("shape", [(), (3, 5)])
def test_shape_preserved(depth_slices, shape):
    mixer = BidirectionalZMixer(feat_dim=16, depth=1, z_context=2)
    h = torch.randn(2, depth_slices, *shape, 16)
    assert mixer(h).shape == h.shape


def test_zero_init_is_exact_identity():
    torch.manual_seed(0)
    mixer = BidirectionalZMixer(feat_dim=12, depth=2, z_context=3)
    h = torch.randn(2, 9, 4, 4, 12)
    assert torch.equal(mixer(h), h)


def test_trained_mixer_mixes_along_z():
    torch.manual_seed(0)
    mixer = BidirectionalZMixer(feat_dim=8, depth=1, z_context=2)
    randomise_output(mixer)
    h = torch.randn(1, 10, 8)
    h2 = h.clone()
    h2[:, 5] += torch.randn(8)  # not a constant shift: LayerNorm would remove that
    diff = (mixer(h2) - mixer(h)).abs().amax(dim=-1)[0]  # (D,)
    # slice 5 influences exactly slices 3..7 (z_context 2 on each side), in both directions
    assert torch.all(diff[3:8] > 0)
    assert torch.all(diff[:3] == 0) and torch.all(diff[8:] == 0)


def test_receptive_field_grows_with_depth():
    torch.manual_seed(0)
    mixer = BidirectionalZMixer(feat_dim=8, depth=3, z_context=2)
    randomise_output(mixer)
    assert mixer.receptive_field == 6
    h = torch.randn(1, 20, 8)
    h2 = h.clone()
    h2[:, 10] += torch.randn(8)
    changed = ((mixer(h2) - mixer(h)).abs().amax(dim=-1)[0] > 0).nonzero().flatten()
    assert changed.min().item() == 4 and changed.max().item() == 16


def test_directional_conv_sees_one_side_only():
    conv = DirectionalZConv(channels=1, z_context=2, forward=True)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0], [10.0], [100.0]]))
    x = torch.zeros(1, 6, 1)
    x[0, 2, 0] = 1.0
    out = conv(x)[0, :, 0]
    assert out.tolist() == [0.0, 0.0, 1.0, 10.0, 100.0, 0.0]  # impulse at 2 reaches 2, 3, 4
    conv.causal = False
    out = conv(x)[0, :, 0]
    assert out.tolist() == [100.0, 10.0, 1.0, 0.0, 0.0, 0.0]


def test_gradients_reach_all_parameters_after_first_step():
    torch.manual_seed(0)
    mixer = BidirectionalZMixer(feat_dim=8, depth=1, z_context=1)
    h = torch.randn(2, 5, 8)
    mixer(h).square().mean().backward()
    # zero-init output: only the output projection gets gradient at the very first step
    assert mixer.blocks[0].proj_out.weight.grad.abs().sum() > 0
    assert mixer.blocks[0].proj_in.weight.grad.abs().sum() == 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        BidirectionalZMixer(8, depth=0)
    with pytest.raises(ValueError):
        BidirectionalZMixer(8, z_context=0)
    with pytest.raises(ValueError, match="features"):
        BidirectionalZMixer(8)(torch.randn(1, 4, 7))


@pytest.mark.parametrize("forward", [True, False])
def test_inplane_taps_of_size_one_equal_pointwise_taps(forward):
    torch.manual_seed(0)
    pointwise = DirectionalZConv(channels=5, z_context=3, forward=forward)
    spatial = DirectionalZConv(channels=5, z_context=3, forward=forward, inplane=1)
    with torch.no_grad():
        spatial.weight.copy_(pointwise.weight[:, None, None, :])
        spatial.bias.copy_(torch.randn(5))
        pointwise.bias.copy_(spatial.bias)
    x = torch.randn(2, 9, 4, 6, 5)
    torch.testing.assert_close(spatial(x), pointwise(x), atol=1e-6, rtol=1e-6)


def test_inplane_tap_reaches_neighbouring_positions_of_the_chosen_slices_only():
    conv = DirectionalZConv(channels=1, z_context=1, forward=True, inplane=3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[1, 1, 2, 0] = 1.0  # the previous slice, one voxel to the right
    x = torch.zeros(1, 5, 7, 7, 1)
    x[0, 2, 3, 4, 0] = 1.0  # slice 2, (y, x) = (3, 4)
    out = conv(x)[0, ..., 0]
    assert out[3, 3, 3] == 1.0  # slice 3 sees slice 2 at x + 1
    assert out.abs().sum() == 1.0  # nothing else: not the current slice, not the next one


def test_inplane_mixer_is_identity_at_init_and_needs_maps():
    torch.manual_seed(0)
    mixer = BidirectionalZMixer(feat_dim=6, depth=2, z_context=2, inplane=3)
    h = torch.randn(1, 8, 5, 5, 6)
    assert torch.equal(mixer(h), h)
    with pytest.raises(ValueError, match="maps"):
        mixer(torch.randn(1, 8, 6))
    with pytest.raises(ValueError, match="odd"):
        BidirectionalZMixer(feat_dim=6, inplane=2)


def test_block_equals_its_textbook_form():
    """h + proj_out([gelu(fwd(u)), gelu(bwd(u))]) with u = proj_in(norm(h)): values and
    gradients, whatever order the block accumulates its products in."""
    import torch.nn.functional as F

    from lift3d.models.z_mixer import ZMixerBlock

    torch.manual_seed(0)
    block = ZMixerBlock(8, 6, 3)
    torch.nn.init.normal_(block.proj_out.weight, std=0.3)
    torch.nn.init.normal_(block.proj_out.bias, std=0.3)

    def textbook(h):
        u = block.proj_in(block.norm(h))
        return h + block.proj_out(torch.cat([F.gelu(block.fwd(u)), F.gelu(block.bwd(u))], -1))

    h = torch.randn(2, 9, 5, 4, 8, requires_grad=True)
    grad_out = torch.randn(2, 9, 5, 4, 8)
    results = []
    for fn in (textbook, block):
        block.zero_grad()
        h.grad = None
        y = fn(h)
        y.backward(grad_out)
        results.append([y.detach(), h.grad.clone(), *(p.grad.clone() for p in block.parameters())])
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_block_under_bf16_autocast_keeps_the_residual_precision():
    from lift3d.models.z_mixer import ZMixerBlock

    torch.manual_seed(0)
    block = ZMixerBlock(8, 6, 3)
    torch.nn.init.normal_(block.proj_out.weight, std=0.3)
    h = torch.randn(1, 5, 3, 3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(h)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, block(h), rtol=0.05, atol=0.05)
