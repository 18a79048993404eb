"""Case discovery (BraTS, SynthRAD, manifest) and validation of every bad-input kind."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lift3d.constants import BRATS_MODALITIES
from lift3d.data import discovery
from lift3d.data.discovery import (
    check_case,
    check_volume_data,
    discover_cases,
    load_case,
    read_checked,
    validate_case,
)
from lift3d.data.layouts import detect_layout
from lift3d.data.volume import Volume, read_volume, write_volume
from lift3d.errors import InputError

SHAPE = (8, 9, 10)
AFFINE = np.array(
    [[-1.0, 0, 0, 10.0], [0, -1.0, 0, 20.0], [0, 0, 1.5, -5.0], [0, 0, 0, 1]]
)  # LPS-like, anisotropic


def tiny_array(seed: int, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    array = rng.uniform(10, 100, size=shape).astype(np.float32)
    array[0] = 0  # some background
    return array


def write_image(path: Path, array: np.ndarray | None = None, affine=AFFINE, seed: int = 0) -> Path:
    array = tiny_array(seed) if array is None else array
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        return write_volume(Volume(array, affine), path)
    nib.save(nib.Nifti1Image(array, affine), str(path))  # 2D/4D: Volume refuses them
    return path


def make_brats(root: Path, n: int = 2, tag: str = "GLI", seg: bool = True, ext=".nii.gz") -> Path:
    for c in range(n):
        case = f"BraTS-{tag}-{c:05d}-000"
        for m, mod in enumerate(BRATS_MODALITIES):
            write_image(root / case / f"{case}-{mod}{ext}", seed=10 * c + m)
        if seg:
            labels = np.zeros(SHAPE, np.uint8)
            labels[3:5, 3:5, 3:5] = 2
            write_image(root / case / f"{case}-seg{ext}", labels)
    return root


def make_synthrad(root: Path, regions=("brain", "pelvis"), ext=".nii.gz") -> Path:
    for region in regions:
        case = f"1{region[0].upper()}A001"
        folder = root / "Task1" / region / case
        write_image(folder / f"mr{ext}", seed=1)
        write_image(folder / f"ct{ext}", tiny_array(2) * 10 - 1000)
        mask = np.zeros(SHAPE, np.uint8)
        mask[2:6, 2:6, 2:6] = 1
        write_image(folder / f"mask{ext}", mask)
    return root


def brats_file(root: Path, case: int, mod: str) -> Path:
    name = f"BraTS-GLI-{case:05d}-000"
    return root / name / f"{name}-{mod}.nii.gz"


# ------------------------------------------------------------------ layouts


@pytest.mark.parametrize("tag", ["GLI", "MEN", "PED", "SSA", "MET"])
def test_brats_any_cohort(tmp_path, tag):
    make_brats(tmp_path, n=2, tag=tag)
    assert detect_layout(tmp_path) == "brats"
    cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == [f"BraTS-{tag}-00000-000", f"BraTS-{tag}-00001-000"]
    assert set(cases[0].paths) == {*BRATS_MODALITIES, "seg"}
    assert cases[0].layout == "brats" and cases.skipped == []


def test_brats_seg_optional_and_single_case_folder(tmp_path):
    make_brats(tmp_path, n=1, seg=False)
    case_dir = tmp_path / "BraTS-GLI-00000-000"
    (cases,) = discover_cases(case_dir)  # root = one case folder
    assert set(cases.paths) == set(BRATS_MODALITIES)
    assert cases.root == case_dir


def test_brasyn_case_missing_one_modality_allowed_by_required(tmp_path):
    make_brats(tmp_path, n=1)
    brats_file(tmp_path, 0, "t2f").unlink()
    with pytest.raises(InputError, match="t2f"):
        discover_cases(tmp_path)
    (case,) = discover_cases(tmp_path, required=("t1n", "t1c", "t2w"))
    assert "t2f" not in case.paths


@pytest.mark.parametrize("ext", [".nii.gz", ".mha"])
@pytest.mark.parametrize("level", ["dataset", "task1", "region", "case"])
def test_synthrad_roots_and_formats(tmp_path, ext, level):
    make_synthrad(tmp_path, ext=ext)
    root = {
        "dataset": tmp_path,
        "task1": tmp_path / "Task1",
        "region": tmp_path / "Task1" / "pelvis",
        "case": tmp_path / "Task1" / "pelvis" / "1PA001",
    }[level]
    assert detect_layout(root) == "synthrad"
    cases = discover_cases(root)
    expected = ["1BA001", "1PA001"] if level in ("dataset", "task1") else ["1PA001"]
    assert [c.case_id for c in cases] == expected
    assert cases[-1].region == "pelvis"
    assert set(cases[-1].paths) == {"mr", "ct", "mask"}
    volumes = load_case(cases[-1], ["mr", "ct"])
    np.testing.assert_allclose(volumes["mr"].affine, AFFINE, atol=1e-5)


def test_synthrad_ignores_overview_folder_but_reports_empty_case(tmp_path):
    make_synthrad(tmp_path, regions=("brain",))
    overview = tmp_path / "Task1" / "brain" / "overview"
    overview.mkdir()
    (overview / "1BA001_train.png").write_bytes(b"png")  # shipped with SynthRAD2023
    assert [c.case_id for c in discover_cases(tmp_path)] == ["1BA001"]
    (tmp_path / "Task1" / "brain" / "1BA002").mkdir()  # a case folder with nothing in it
    with pytest.raises(InputError, match="required modality 'mr' is missing") as err:
        discover_cases(tmp_path)
    assert err.value.path == tmp_path / "Task1" / "brain" / "1BA002" / "mr.nii.gz"


def test_manifest_csv_relative_paths(tmp_path):
    make_synthrad(tmp_path, regions=("brain",))
    case = "Task1/brain/1BA001"
    (tmp_path / "manifest.csv").write_text(
        f"case_id,mr,ct\nsubject-a,{case}/mr.nii.gz,{case}/ct.nii.gz\n"
    )
    assert detect_layout(tmp_path) == "manifest"  # a manifest wins over the folder structure
    for root in (tmp_path, tmp_path / "manifest.csv"):
        (c,) = discover_cases(root)
        assert c.case_id == "subject-a" and c.layout == "manifest"
        assert c.paths["mr"] == tmp_path / case / "mr.nii.gz"


@pytest.mark.parametrize("wrapped", [True, False])
def test_manifest_json(tmp_path, wrapped):
    make_brats(tmp_path / "data", n=2, seg=False)
    entries = [
        {
            "case_id": f"c{c}",
            "t1n": f"data/{brats_file(Path(), c, 't1n')}",
            "t2w": f"data/{brats_file(Path(), c, 't2w')}",
        }
        for c in range(2)
    ]
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"cases": entries} if wrapped else entries))
    cases = discover_cases(path)
    assert [c.case_id for c in cases] == ["c0", "c1"]
    assert set(cases[1].paths) == {"t1n", "t2w"}


def test_manifest_missing_file_named(tmp_path):
    make_brats(tmp_path / "d", n=1, seg=False)
    (tmp_path / "manifest.csv").write_text("case_id,t1n\nx,d/nope.nii.gz\n")
    with pytest.raises(InputError, match="nope.nii.gz: file not found"):
        discover_cases(tmp_path)


@pytest.mark.parametrize(
    "text, match",
    [
        ("id,t1n\na,b.nii.gz\n", "case_id"),
        ("case_id,t1n\n", "no cases"),
        ("case_id,t1n\na,x.nii.gz\na,y.nii.gz\n", "listed twice"),
    ],
)
def test_bad_manifest_csv(tmp_path, text, match):
    (tmp_path / "manifest.csv").write_text(text)
    with pytest.raises(InputError, match=match) as err:
        discover_cases(tmp_path)
    assert "manifest.csv" in str(err.value)


def test_bad_manifest_json(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="manifest.json: invalid JSON"):
        discover_cases(tmp_path)


# ------------------------------------------------------------------ bad input (library)


def test_missing_modality_names_expected_file(tmp_path):
    make_brats(tmp_path, n=1)
    brats_file(tmp_path, 0, "t1c").unlink()
    with pytest.raises(InputError, match="required modality 't1c'") as err:
        discover_cases(tmp_path)
    assert err.value.path == brats_file(tmp_path, 0, "t1c")


def test_shape_mismatch(tmp_path):
    make_brats(tmp_path, n=1)
    write_image(brats_file(tmp_path, 0, "t2w"), tiny_array(0, (8, 9, 11)))
    with pytest.raises(InputError, match="shape") as err:
        discover_cases(tmp_path)
    assert err.value.path == brats_file(tmp_path, 0, "t2w")


def test_affine_mismatch_beyond_tolerance(tmp_path):
    make_brats(tmp_path, n=1)
    shifted = AFFINE.copy()
    shifted[0, 3] += 5e-4  # within 1e-3 mm: accepted
    write_image(brats_file(tmp_path, 0, "t2w"), affine=shifted)
    assert len(discover_cases(tmp_path)) == 1
    shifted[0, 3] += 0.01
    write_image(brats_file(tmp_path, 0, "t2w"), affine=shifted)
    with pytest.raises(InputError, match="affine differs") as err:
        discover_cases(tmp_path)
    assert err.value.path == brats_file(tmp_path, 0, "t2w")


@pytest.mark.parametrize("shape", [(8, 9), (8, 9, 10, 2), (8, 9, 1)])
def test_not_3d(tmp_path, shape):
    make_brats(tmp_path, n=1)
    write_image(brats_file(tmp_path, 0, "t1n"), np.ones(shape, np.float32))
    with pytest.raises(InputError, match="3D") as err:
        discover_cases(tmp_path)
    assert err.value.path == brats_file(tmp_path, 0, "t1n")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_voxels(tmp_path, value):
    make_brats(tmp_path, n=1)
    array = tiny_array(3)
    array[4, 4, 4] = value
    write_image(brats_file(tmp_path, 0, "t2f"), array)
    with pytest.raises(InputError, match="1 voxels are NaN or Inf") as err:
        discover_cases(tmp_path)
    assert err.value.path == brats_file(tmp_path, 0, "t2f")
    # header-only validation passes; the data check then happens in load_case
    (case,) = discover_cases(tmp_path, validate="header")
    with pytest.raises(InputError, match="NaN or Inf"):
        load_case(case, ["t2f"])


@pytest.mark.parametrize("value, match", [(0.0, "all voxels are zero"), (7.0, "same value")])
def test_constant_volume(tmp_path, value, match):
    make_brats(tmp_path, n=1)
    write_image(brats_file(tmp_path, 0, "t1n"), np.full(SHAPE, value, np.float32))
    with pytest.raises(InputError, match=match) as err:
        discover_cases(tmp_path)
    assert err.value.path == brats_file(tmp_path, 0, "t1n")


def test_all_zero_seg_is_valid(tmp_path):
    make_brats(tmp_path, n=1)
    write_image(brats_file(tmp_path, 0, "seg"), np.zeros(SHAPE, np.uint8))
    assert len(discover_cases(tmp_path)) == 1


def test_truncated_gz(tmp_path):
    make_brats(tmp_path, n=1)
    path = brats_file(tmp_path, 0, "t1c")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot read") as err:
        discover_cases(tmp_path)
    assert err.value.path == path


@pytest.mark.parametrize(
    "content",
    [b"hello, not an image\n", gzip.compress(b"x" * 400, mtime=0)],
    ids=["text", "gzip-of-text"],
)
def test_non_image_with_image_extension(tmp_path, content):
    make_brats(tmp_path, n=1)
    path = brats_file(tmp_path, 0, "t2w")
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        discover_cases(tmp_path)
    assert err.value.path == path
    assert "\n" not in str(err.value)


def test_non_image_mha(tmp_path):
    make_synthrad(tmp_path, regions=("brain",), ext=".mha")
    path = tmp_path / "Task1" / "brain" / "1BA001" / "ct.mha"
    path.write_text("ObjectType = Image\nnonsense\n")
    with pytest.raises(InputError, match="not a readable image") as err:
        discover_cases(tmp_path)
    assert err.value.path == path


def test_empty_and_missing_folder(tmp_path):
    with pytest.raises(InputError, match="folder is empty") as err:
        discover_cases(tmp_path)
    assert err.value.path == tmp_path
    with pytest.raises(InputError, match="no such file or folder"):
        discover_cases(tmp_path / "nope")


def test_unknown_layout(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "subject1").mkdir()
    with pytest.raises(InputError, match="unknown dataset layout") as err:
        discover_cases(tmp_path)
    assert err.value.path == tmp_path
    with pytest.raises(InputError, match="unknown layout 'nifti'"):
        discover_cases(tmp_path, layout="nifti")
    with pytest.raises(InputError, match="no BraTS case folders"):
        discover_cases(tmp_path, layout="brats")


# ------------------------------------------------------------------ skip_bad, reports, loading


def test_skip_bad_keeps_good_cases_and_reports(tmp_path, caplog):
    make_brats(tmp_path, n=4)
    brats_file(tmp_path, 1, "t1c").unlink()
    write_image(brats_file(tmp_path, 3, "t1n"), np.zeros(SHAPE, np.float32))
    with caplog.at_level("WARNING", logger="lift3d.data.discovery"):
        cases = discover_cases(tmp_path, skip_bad=True)
    assert [c.case_id for c in cases] == ["BraTS-GLI-00000-000", "BraTS-GLI-00002-000"]
    assert [cid for cid, _ in cases.skipped] == ["BraTS-GLI-00001-000", "BraTS-GLI-00003-000"]
    text = caplog.text
    assert "BraTS-GLI-00001-000" in text and "skipped 2 of 4" in text


def test_skip_bad_with_no_valid_case_fails(tmp_path):
    make_brats(tmp_path, n=1)
    brats_file(tmp_path, 0, "t1c").unlink()
    with pytest.raises(InputError, match="no valid cases"):
        discover_cases(tmp_path, skip_bad=True)


def test_check_case_lists_every_problem(tmp_path):
    make_brats(tmp_path, n=1)
    brats_file(tmp_path, 0, "t1c").unlink()
    write_image(brats_file(tmp_path, 0, "t2w"), np.zeros(SHAPE, np.float32))
    (case,) = discover_cases(tmp_path, validate=False)
    report = check_case(case)
    paths = {p.path.name for p in report.problems}
    assert paths == {"BraTS-GLI-00000-000-t1c.nii.gz", "BraTS-GLI-00000-000-t2w.nii.gz"}
    info = report.files["t1n"]
    assert info.shape == SHAPE and info.orientation == "LPS"
    np.testing.assert_allclose(info.spacing, (1.0, 1.0, 1.5))
    assert info.min == 0 and 10 < info.max <= 100  # background slice is 0


def test_validation_then_load_decodes_once(tmp_path, monkeypatch):
    make_brats(tmp_path, n=2)
    calls = []
    real = discovery.read_volume
    monkeypatch.setattr(discovery, "read_volume", lambda p: calls.append(Path(p)) or real(p))
    cases = discover_cases(tmp_path)
    assert len(calls) == 10  # 2 cases x 5 files, decoded once by validation
    volumes = load_case(cases[0])
    assert len(calls) == 10  # handed over, not decoded again
    assert set(volumes) == {*BRATS_MODALITIES, "seg"}
    load_case(cases[0], ["t1n"])  # a second load decodes again (nothing kept for ever)
    assert len(calls) == 11


def test_load_case_missing_modality(tmp_path):
    make_brats(tmp_path, n=1, seg=False)
    (case,) = discover_cases(tmp_path, validate=False)
    with pytest.raises(InputError, match="'seg' is missing") as err:
        load_case(case, ["t1n", "seg"])
    assert err.value.path.name == "BraTS-GLI-00000-000-seg.nii.gz"


def test_validate_case_raises_first_problem(tmp_path):
    make_brats(tmp_path, n=1)
    (case,) = discover_cases(tmp_path, validate=False)
    validate_case(case)
    with pytest.raises(InputError, match="required modality 'ct' is missing"):
        validate_case(case, required=("t1n", "ct"))


# ------------------------------------------------------------------ one check for every path


@pytest.mark.parametrize(
    "array, modality, match",
    [
        (np.ones((1, 1, 1), np.float32), "t1n", "single voxel"),
        (np.arange(20, dtype=np.float32).reshape(5, 4, 1), "t1n", "single slice"),
        (np.zeros((4, 4, 4), np.uint8), "mask", r"all voxels are zero \(empty mask\)"),
        (np.full((4, 4, 4), 3.0, np.float32), "t1n", "same value"),
    ],
)
def test_check_volume_data_and_read_checked(tmp_path, array, modality, match):
    path = tmp_path / "v.nii.gz"
    write_image(path, array)
    with pytest.raises(InputError, match=match) as err:
        read_checked(path, modality)
    assert err.value.path == path
    with pytest.raises(InputError, match=match):
        check_volume_data(read_volume(path), modality)


def test_read_checked_accepts_labels_and_full_masks(tmp_path):
    write_image(tmp_path / "seg.nii.gz", np.zeros((4, 4, 4), np.uint8))
    write_image(tmp_path / "mask.nii.gz", np.ones((4, 4, 4), np.uint8))
    assert read_checked(tmp_path / "seg.nii.gz", "seg").shape == (4, 4, 4)  # no tumour: fine
    assert read_checked(tmp_path / "mask.nii.gz", "mask").array.all()


def test_a_one_voxel_volume_is_refused_by_discovery_and_loading(tmp_path):
    make_brats(tmp_path, n=1)
    write_image(brats_file(tmp_path, 0, "t2w"), np.ones((1, 1, 1), np.float32))
    with pytest.raises(InputError, match="single voxel") as err:
        discover_cases(tmp_path)
    assert err.value.path == brats_file(tmp_path, 0, "t2w")
    (case,) = discover_cases(tmp_path, validate=False)
    with pytest.raises(InputError, match="single voxel"):
        load_case(case, ["t2w"])
