"""`lift3d phantom`: writes the layouts, refuses existing output and bad arguments (exit 2)."""

from __future__ import annotations

import numpy as np
import pytest

from lift3d import read_volume
from lift3d.cli import main
from lift3d.data.synthetic import MARKER_NAME, is_phantom_dataset


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_writes_synthrad_layout_and_says_where(tmp_path, capsys):
    out = tmp_path / "ph"
    args = ["phantom", "--layout", "synthrad", "--cases", "2", "--shape", "24", "24", "20"]
    assert main([*args, "--seed", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed
    for case in ("1BA001", "1BA002"):
        for name in ("mr", "ct", "mask"):
            assert read_volume(out / "Task1" / "brain" / case / f"{name}.nii.gz").shape == (
                24,
                24,
                20,
            )
    assert is_phantom_dataset(out)


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "ph"
    args = ["phantom", "--cases", "1", "--shape", "16", "16", "16", "--out", str(out)]
    assert main(args) == 0
    before = snapshot(out)
    assert main([*args, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and str(out) in err and len(err.strip().splitlines()) == 1
    assert snapshot(out) == before
    assert main([*args, "--seed", "1", "--overwrite"]) == 0
    after = snapshot(out)
    assert set(after) == set(before) and after != before


def test_no_tumour_gives_empty_segmentation(tmp_path):
    out = tmp_path / "ph"
    assert (
        main(
            [
                "phantom",
                "--cases",
                "1",
                "--shape",
                "32",
                "32",
                "32",
                "--no-tumour",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    seg = read_volume(next(out.rglob("*-seg.nii.gz")))
    assert not np.any(seg.array)
    assert '"tumour": false' in (out / MARKER_NAME).read_text()


@pytest.mark.parametrize(
    "bad",
    [
        ["--cases", "0"],
        ["--cases", "-3"],
        ["--cases", "two"],
        ["--shape", "8", "32", "32"],
        ["--shape", "32", "32"],
        ["--layout", "nifti"],
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, capsys, bad):
    out = tmp_path / "ph"
    with pytest.raises(SystemExit) as exc:
        main(["phantom", "--out", str(out), *bad])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err
    assert not out.exists()


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["phantom", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "example:" in text and "lift3d phantom --layout" in text and "--no-tumour" in text
    assert "--kind" in text and "--spacing" in text


def test_kind_realistic_with_thick_slices(tmp_path, capsys):
    out = tmp_path / "ph"
    args = ["phantom", "--kind", "realistic", "--layout", "synthrad", "--cases", "1"]
    args += ["--shape", "24", "24", "16", "--spacing", "1", "1", "2.5", "--out", str(out)]
    assert main(args) == 0
    assert "realistic" in capsys.readouterr().out
    ct = read_volume(out / "Task1" / "brain" / "1BA001" / "ct.nii.gz")
    assert ct.shape == (24, 24, 16)
    np.testing.assert_allclose(np.linalg.norm(ct.affine[:3, :3], axis=0), (1.0, 1.0, 2.5))
    marker = (out / MARKER_NAME).read_text()
    assert '"kind": "realistic"' in marker and "2.5" in marker


def test_kind_defaults_to_realistic_and_basic_by_name(tmp_path):
    argv = ["phantom", "--cases", "1", "--shape", "16", "16", "16", "--out"]
    assert main([*argv, str(tmp_path / "a")]) == 0
    assert '"kind": "realistic"' in (tmp_path / "a" / MARKER_NAME).read_text()
    assert main([*argv, str(tmp_path / "b"), "--kind", "basic"]) == 0
    assert '"kind": "basic"' in (tmp_path / "b" / MARKER_NAME).read_text()


@pytest.mark.parametrize(
    "bad", [["--kind", "fancy"], ["--spacing", "1", "0", "1"], ["--spacing", "1", "1"]]
)
def test_bad_kind_or_spacing_exit_2(tmp_path, capsys, bad):
    out = tmp_path / "ph"
    with pytest.raises(SystemExit) as exc:
        main(["phantom", "--out", str(out), *bad])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err
    assert not out.exists()


def test_multislice_none_and_its_errors(tmp_path, capsys):
    import json

    base = ["phantom", "--cases", "1", "--shape", "16", "16", "16", "--kind", "realistic"]
    assert main([*base, "--multislice", "none", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / MARKER_NAME).read_text())["multislice"] == []
    capsys.readouterr()
    for bad in (
        ["--multislice", "t3w"],  # not a sequence
        ["--multislice", "t1n", "--kind", "basic"],  # the basic phantom has no motion
    ):
        out = tmp_path / "bad"
        assert main([*base, *bad, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "multislice" in err, err
        assert not out.exists()
