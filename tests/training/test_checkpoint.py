"""Checkpoint files: state encoding, atomic pairs, pruning, weight export, checksums, errors."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from lift3d.errors import InputError
from lift3d.models.weights import (
    CHECKSUM_KEY,
    load_tensors,
    load_weights,
    read_metadata,
    save_weights,
    tensors_checksum,
)
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


# ------------------------------------------------------------------ checksums


def flip_bit(path, offset: int = -1) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))


def test_weights_carry_a_checksum_that_load_verifies(tmp_path):
    src = nn.Linear(4, 3)
    path = save_weights(src, tmp_path / "w.safetensors", {"task": "translate"})
    _, raw = load_tensors(path)
    assert raw[CHECKSUM_KEY] == tensors_checksum(dict(src.state_dict()))
    assert "sha256" not in read_metadata(path)  # not part of the caller's metadata
    flip_bit(path)  # one bit of the last tensor's data
    with pytest.raises(InputError, match="damaged.*checksum") as err:
        load_weights(nn.Linear(4, 3), path)
    assert err.value.path == path


def test_checksum_sees_values_dtypes_shapes_and_names():
    base = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2, dtype=torch.bfloat16)}
    digest = tensors_checksum(base)
    assert tensors_checksum({k: v.clone() for k, v in base.items()}) == digest
    variants = [
        {**base, "a": base["a"].reshape(3, 2)},
        {**base, "a": base["a"].double()},
        {**base, "b": base["b"] + 1},
        {"c": base["a"], "b": base["b"]},
    ]
    assert len({tensors_checksum(v) for v in variants} | {digest}) == len(variants) + 1


def test_files_without_a_checksum_still_load(tmp_path):
    src, dst = nn.Linear(2, 2), nn.Linear(2, 2)
    path = tmp_path / "old.safetensors"
    save_file(dict(src.state_dict()), str(path), metadata={"task": '"translate"'})
    assert load_weights(dst, path) == {"task": "translate"}
    assert torch.equal(dst.weight, src.weight)


def test_damaged_or_mismatched_checkpoint_pairs_are_refused(tmp_path):
    tensors = {"model.w": torch.randn(3, 3), "optim.x": torch.ones(2)}
    first = ckpt.save_checkpoint(tmp_path, 1, tensors, {})
    second = ckpt.save_checkpoint(tmp_path, 2, {k: v * 2 for k, v in tensors.items()}, {})
    meta, loaded = ckpt.load_checkpoint(second)
    assert meta["weights_sha256"] and torch.equal(loaded["model.w"], tensors["model.w"] * 2)
    # the weight file of another checkpoint under this one's JSON
    shutil.copy(first.with_suffix(".safetensors"), second.with_suffix(".safetensors"))
    with pytest.raises(InputError, match="does not belong"):
        ckpt.load_checkpoint(second)
    flip_bit(first.with_suffix(".safetensors"))
    with pytest.raises(InputError, match="damaged"):
        ckpt.load_checkpoint(first)
    first.write_text("{not json")
    with pytest.raises(InputError, match="unreadable checkpoint metadata"):
        ckpt.load_checkpoint(first)


def test_full_disk_while_saving_weights(tmp_path, monkeypatch):
    """safetensors reports a full disk as its own error; it becomes the one-line InputError."""

    def full(*args, **kwargs):
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr("lift3d.models.weights.save_file", full)
    with pytest.raises(InputError, match=r"cannot write \(No space left on device\)"):
        save_weights(nn.Linear(2, 2), tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []
