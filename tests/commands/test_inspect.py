"""`lift3d inspect`: facts about both layouts and manifests, every bad-input kind via the CLI."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lift3d.cli import main
from lift3d.data.volume import Volume, read_volume, write_volume

CASE0 = "BraTS-GLI-00000-000"
CASE1 = "BraTS-GLI-00001-000"


def brats_file(root: Path, case: str, mod: str) -> Path:
    return root / case / f"{case}-{mod}.nii.gz"


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with size and mtime, to show a command wrote nothing."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def replace_array(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    affine = read_volume(path).affine if affine is None else affine
    if array.ndim == 3:
        write_volume(Volume(array, affine), path)
    else:  # 2D / 4D: Volume holds 3D only, so write them with nibabel
        nib.save(nib.Nifti1Image(array, affine), str(path))


def make_bad(root: Path, kind: str) -> Path:
    """Break a copy of the BraTS phantom in one way; returns the file the error must name."""
    t1c = brats_file(root, CASE1, "t1c")
    source = read_volume(t1c)
    if kind == "missing modality":
        t1c.unlink()
    elif kind == "shape mismatch":
        replace_array(t1c, np.ones((32, 32, 31), np.float32) + np.arange(31))
    elif kind == "affine mismatch":
        affine = source.affine.copy()
        affine[:3, 3] += 0.5
        replace_array(t1c, source.array, affine)
    elif kind == "2D file":
        replace_array(t1c, source.array[:, :, 5].astype(np.float32))
    elif kind == "4D file":
        replace_array(t1c, np.stack([source.array] * 2, axis=-1).astype(np.float32))
    elif kind in ("NaN voxels", "Inf voxels"):
        array = source.array.astype(np.float32)
        array[10, 10, 10] = np.nan if kind == "NaN voxels" else -np.inf
        replace_array(t1c, array)
    elif kind == "all-zero volume":
        replace_array(t1c, np.zeros(source.shape, np.float32))
    elif kind == "truncated gz":
        data = t1c.read_bytes()
        t1c.write_bytes(data[: len(data) * 2 // 3])
    elif kind == "non-image file":
        t1c.write_bytes(gzip.compress(b"<html>this is a web page, not an image</html>"))
    else:
        raise AssertionError(kind)
    return t1c


BAD_KINDS = [
    "missing modality",
    "shape mismatch",
    "affine mismatch",
    "2D file",
    "4D file",
    "NaN voxels",
    "Inf voxels",
    "all-zero volume",
    "truncated gz",
    "non-image file",
]


@pytest.fixture
def brats_copy(phantom_brats_dir, tmp_path):
    root = tmp_path / "brats"
    shutil.copytree(phantom_brats_dir, root)
    return root


def test_clean_brats_text(phantom_brats_dir, capsys):
    assert main(["inspect", str(phantom_brats_dir)]) == 0
    out = capsys.readouterr().out
    assert "layout        brats" in out
    assert "cases         4 (4 valid, 0 with problems)" in out
    assert "PHANTOM data" in out
    assert "32x32x32 (20 files)" in out and "1x1x1 (20 files)" in out
    assert "LPS (20 files)" in out
    assert "problems      none" in out
    for mod in ("t1n", "t1c", "t2w", "t2f", "seg"):
        assert f"  {mod} " in out


def test_clean_brats_json(phantom_brats_dir, capsys):
    assert main(["inspect", str(phantom_brats_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # stdout is pure JSON
    assert summary["layout"] == "brats" and summary["phantom"] is True
    assert summary["num_cases"] == 4 and summary["problems"] == []
    assert summary["modalities"] == {m: 4 for m in ("seg", "t1c", "t1n", "t2f", "t2w")}
    assert summary["required"] == ["t1n", "t1c", "t2w", "t2f"]
    seg = summary["intensity"]["seg"]
    assert seg["min"] == 0 and seg["max"] == 3  # BraTS labels 0..3 in the tumour phantom
    t1n = summary["intensity"]["t1n"]
    assert t1n["min"] < t1n["max"]
    assert t1n["case_max_range"][0] <= t1n["case_max_range"][1] == t1n["max"]
    case = summary["cases"][0]
    assert case["case_id"] == CASE0 and case["files"]["t1n"]["shape"] == [32, 32, 32]


def test_synthrad_json(phantom_synthrad_dir, capsys):
    assert main(["inspect", str(phantom_synthrad_dir / "Task1"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "synthrad" and summary["regions"] == {"brain": 4}
    assert summary["phantom"] is True  # marker found in a parent folder
    assert summary["intensity"]["ct"]["min"] == -1024
    assert summary["modalities"] == {"ct": 4, "mask": 4, "mr": 4}


def test_manifest(phantom_synthrad_dir, tmp_path, capsys):
    cases = sorted((phantom_synthrad_dir / "Task1" / "brain").iterdir())[:2]
    rows = [f"{c.name},{c / 'mr.nii.gz'},{c / 'ct.nii.gz'}" for c in cases]
    (tmp_path / "manifest.csv").write_text("case_id,mr,ct\n" + "\n".join(rows) + "\n")
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "manifest" and summary["num_cases"] == 2
    assert summary["phantom"] is False  # the marker is beside the data, not the manifest
    assert summary["modalities"] == {"ct": 2, "mr": 2}


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_via_cli(brats_copy, capsys, kind):
    bad = make_bad(brats_copy, kind)
    before = tree_state(brats_copy)
    assert main(["inspect", str(brats_copy)]) == 2
    captured = capsys.readouterr()
    assert str(bad) in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert str(bad) in captured.out  # also listed with the report
    assert tree_state(brats_copy) == before  # nothing written


@pytest.mark.parametrize("kind", ["empty folder", "no such folder", "unknown layout"])
def test_bad_dataset_folder_via_cli(tmp_path, capsys, kind):
    root = tmp_path / "data"
    if kind != "no such folder":
        root.mkdir()
    if kind == "unknown layout":
        (root / "scan.nii.gz").write_bytes(b"")
        (root / "notes").mkdir()
    before = tree_state(tmp_path)
    assert main(["inspect", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lift3d inspect: error: {root}:") and "\n" not in err
    assert {"empty folder": "empty", "no such folder": "no such", "unknown layout": "unknown"}[
        kind
    ] in err
    assert tree_state(tmp_path) == before


def test_every_problem_listed_and_skip_bad(brats_copy, capsys):
    zero = make_bad(brats_copy, "all-zero volume")
    brats_file(brats_copy, "BraTS-GLI-00003-000", "t2f").unlink()
    assert main(["inspect", str(brats_copy), "--json"]) == 2
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["num_bad"] == 2 and summary["num_valid"] == 2
    paths = [p["path"] for p in summary["problems"]]
    assert paths == [str(zero), str(brats_file(brats_copy, "BraTS-GLI-00003-000", "t2f"))]
    assert "2 problem(s) in 2 of 4 cases" in captured.err
    assert main(["inspect", str(brats_copy), "--skip-bad"]) == 0
    assert "would be skipped" in capsys.readouterr().err


def test_required_for_brasyn_style_cases(brats_copy, capsys):
    for case in (CASE0, CASE1):
        brats_file(brats_copy, case, "t2f").unlink()
    assert main(["inspect", str(brats_copy)]) == 2
    capsys.readouterr()
    assert main(["inspect", str(brats_copy), "--required", "t1n", "t1c", "t2w"]) == 0


def test_header_only_skips_voxel_checks(brats_copy, capsys):
    make_bad(brats_copy, "NaN voxels")
    assert main(["inspect", str(brats_copy), "--header-only"]) == 0
    assert "not read (--header-only)" in capsys.readouterr().out


def test_help_has_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "--help"])
    assert exit_info.value.code == 0
    assert "example:\n  lift3d inspect " in capsys.readouterr().out
