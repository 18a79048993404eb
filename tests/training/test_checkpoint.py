"""Checkpoint files: state encoding, atomic pairs, pruning, weight export and its errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from lift3d.errors import InputError
from lift3d.models.weights import load_weights, save_weights
from lift3d.training import checkpoint as ckpt


class Tied(nn.Module):
    """Two names for one weight (safetensors refuses shared storage unless it is split)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        self.b.weight = self.a.weight
        self.register_buffer("count", torch.tensor(5))


def test_encode_decode_roundtrip():
    state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 2)}},
        "groups": [{"lr": 0.1, "betas": (0.9, 0.99), "params": [0, 1], "fused": None}],
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "__odd": "key",
    }
    tensors: dict[str, torch.Tensor] = {}
    encoded = ckpt.encode_state(state, "s", tensors)
    assert set(tensors) == {"s.state.0.step", "s.state.0.exp_avg"}
    decoded = ckpt.decode_state(encoded, tensors)
    assert list(decoded["state"]) == [0]  # int keys survive JSON
    assert torch.equal(decoded["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    assert decoded["groups"][0]["betas"] == (0.9, 0.99)
    assert decoded["python"] == state["python"]
    np_state = decoded["numpy"]
    assert np_state[0] == "MT19937" and np.array_equal(np_state[1], state["numpy"][1])
    assert np_state[1].dtype == state["numpy"][1].dtype
    with pytest.raises(TypeError, match="object"):
        ckpt.encode_state({"f": object()}, "x", {})


def test_save_list_prune_and_clean(tmp_path):
    for step in (2, 4, 6):
        ckpt.save_checkpoint(tmp_path, step, {"model.w": torch.full((2,), float(step))}, {"a": 1})
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 4, 6]
    meta, tensors = ckpt.load_checkpoint(tmp_path / "step_0000004.json")
    assert (
        meta["step"] == 4
        and meta["a"] == 1
        and torch.equal(tensors["model.w"], torch.full((2,), 4.0))
    )
    assert ckpt.prune_checkpoints(tmp_path, keep_last=2) == [2]
    assert not (tmp_path / "step_0000002.safetensors").exists()
    # A killed run's leftovers: a temp file and weights without their JSON.
    (tmp_path / ".step_0000008.abc.safetensors").write_bytes(b"partial")
    ckpt.save_checkpoint(tmp_path, 8, {"model.w": torch.zeros(2)}, {})
    (tmp_path / "step_0000008.json").unlink()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 6]
    removed = {p.name for p in ckpt.clean_incomplete(tmp_path)}
    assert removed == {".step_0000008.abc.safetensors", "step_0000008.safetensors"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step_0000004.json",
        "step_0000004.safetensors",
        "step_0000006.json",
        "step_0000006.safetensors",
    ]
    assert ckpt.prune_checkpoints(tmp_path, keep_last=0) == []  # 0 keeps all


def test_save_load_weights_roundtrip(tmp_path):
    src, dst = Tied(), Tied()
    path = save_weights(src, tmp_path / "model.safetensors", {"task": "translate", "step": 7})
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left
    meta = load_weights(dst, path)
    assert meta == {"task": "translate", "step": 7}
    for (k, v), w in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(v, w), k
    assert dst.a.weight is dst.b.weight  # loading in place keeps the tie


def test_load_weights_from_step_checkpoint(tmp_path):
    src, dst = nn.Linear(2, 2), nn.Linear(2, 2)
    tensors = {f"model.{k}": v for k, v in src.state_dict().items()} | {"optim.x": torch.ones(1)}
    ckpt.save_checkpoint(tmp_path, 1, tensors, {})
    load_weights(dst, tmp_path / "step_0000001.safetensors")
    assert torch.equal(dst.weight, src.weight)


def test_load_weights_errors(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        load_weights(nn.Linear(2, 2), tmp_path / "missing.safetensors")
    assert err.value.path == tmp_path / "missing.safetensors"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a safetensors file")
    with pytest.raises(InputError, match="not a readable safetensors"):
        load_weights(nn.Linear(2, 2), bad)
    path = save_weights(nn.Linear(2, 2), tmp_path / "lin.safetensors")
    with pytest.raises(InputError, match=r"missing keys \['0.bias', '0.weight'\]"):
        load_weights(nn.Sequential(nn.Linear(2, 2)), path)
    with pytest.raises(
        InputError, match=r"'weight' has shape \(2, 2\), the model expects \(3, 2\)"
    ):
        load_weights(nn.Linear(2, 3), path)
