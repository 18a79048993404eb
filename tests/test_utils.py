"""Atomic writes, output-location checks and device choice (lift3d.utils)."""

from __future__ import annotations

import pytest

from lift3d.errors import InputError
from lift3d.utils import atomic_path, atomic_write_text, check_output_path, resolve_device


def test_atomic_path_renames_on_success_and_keeps_suffix(tmp_path):
    target = tmp_path / "sub" / "vol.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == target.parent
        assert not target.exists()
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert [p.name for p in target.parent.iterdir()] == ["vol.nii.gz"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_write_text(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"


def test_check_output_path_refuses_existing_without_overwrite(tmp_path):
    out = tmp_path / "pred.nii.gz"
    out.write_bytes(b"x")
    with pytest.raises(InputError, match="--overwrite") as exc:
        check_output_path(out)
    assert str(out) in str(exc.value)
    assert check_output_path(out, overwrite=True) == out


def test_check_output_path_accepts_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert check_output_path(tmp_path / "empty") == tmp_path / "empty"


@pytest.mark.parametrize("rel", ["data", "data/case1/out.nii.gz", "data/sub"])
def test_check_output_path_refuses_inside_input(tmp_path, rel):
    data = tmp_path / "data"
    (data / "case1").mkdir(parents=True)
    with pytest.raises(InputError, match="inside the input"):
        check_output_path(tmp_path / rel, inputs=[data], overwrite=True)


def test_resolve_device_cpu_and_errors():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(InputError):
        resolve_device("tpu")
