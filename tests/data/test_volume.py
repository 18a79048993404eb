"""Volume I/O: exact voxels and geometry through NIfTI / MetaImage, real files, bad input."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import lift3d
from lift3d.data.volume import Volume, nifti_codes, reorient, with_nifti_codes
from lift3d.errors import InputError

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
EXTS = (".nii", ".nii.gz", ".mha", ".mhd")


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """(3, 3) rotation about x, then y, then z (radians)."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_affine(spacing=(0.9, 1.2, 2.5), flips=(1, 1, 1), origin=(-101.3, 87.25, -33.7)):
    """(4, 4) oblique RAS affine with anisotropic voxels; `flips` = -1 makes LPS-like axes."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(0.21, -0.13, 0.35) @ np.diag(np.multiply(spacing, flips))
    affine[:3, 3] = origin
    return affine


def real_file(name: str) -> Path:
    path = NIBABEL_DATA / name
    if not path.exists():
        pytest.skip(f"nibabel test data file {name} not installed with this nibabel")
    return path


def assert_same_volume(a: Volume, b: Volume, atol: float = 1e-5) -> None:
    assert a.array.dtype == b.array.dtype
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=atol, rtol=0)


def write_sitk(path: Path, array_zyx: np.ndarray, spacing, direction, origin) -> Path:
    """Write a MetaImage with SimpleITK directly (LPS world), not through lift3d."""
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(d) for d in np.asarray(direction).ravel()])
    img.SetOrigin([float(o) for o in origin])
    sitk.WriteImage(img, str(path), True)
    return path


def philips_oblique_lps() -> nib.Nifti1Image:
    """A real Philips PAR/REC scan (oblique, LPS) shipped with nibabel; first dynamic only."""
    par = nib.load(str(real_file("phantom_EPI_asc_CLEAR_2_1.PAR")))
    raw = np.asarray(par.dataobj.get_unscaled())[..., 0].astype(np.int16)
    return nib.Nifti1Image(raw, par.affine)


# ---------------------------------------------------------------- real files shipped with nibabel


@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz", "reoriented_anat_moved.nii"])
@pytest.mark.parametrize("ext", EXTS)
def test_real_nifti_round_trip(tmp_path, name, ext):
    src = lift3d.read_volume(real_file(name))
    out = lift3d.write_volume(src, tmp_path / f"copy{ext}")
    assert_same_volume(src, lift3d.read_volume(out))
    if ext.startswith(".nii"):
        a, b = nib.load(str(real_file(name))).header, nib.load(str(out)).header
        assert (int(a["qform_code"]), int(a["sform_code"])) == (
            int(b["qform_code"]),
            int(b["sform_code"]),
        )


def test_real_big_endian_file_reads_native(tmp_path):
    # anatomical.nii stores big-endian int16 (LAS); the array comes back native-endian.
    vol = lift3d.read_volume(real_file("anatomical.nii"))
    assert nib.load(str(real_file("anatomical.nii"))).get_data_dtype().byteorder == ">"
    assert vol.array.dtype == np.dtype(np.int16) and vol.array.dtype.isnative
    assert vol.orientation == "LAS"


def test_real_sform_only_file_keeps_codes(tmp_path):
    # standard.nii.gz: qform_code 0, sform_code 2 (aligned), anisotropic 1 x 3 x 2 mm.
    vol = lift3d.read_volume(real_file("standard.nii.gz"))
    assert vol.spacing == pytest.approx((1.0, 3.0, 2.0))
    hdr = nib.load(str(lift3d.write_volume(vol, tmp_path / "s.nii.gz"))).header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (0, 2)


def test_real_float_file_with_nan_round_trips(tmp_path):
    src = lift3d.read_volume(real_file("resampled_anat_moved.nii"))
    assert np.isnan(src.array).any()  # real resampled data with NaN outside the field of view
    for ext in EXTS:
        back = lift3d.read_volume(lift3d.write_volume(src, tmp_path / f"r{ext}"))
        np.testing.assert_array_equal(back.array, src.array)  # NaN == NaN here
        np.testing.assert_allclose(back.affine, src.affine, atol=1e-5, rtol=0)


def test_real_oblique_scanner_volume(tmp_path):
    # example4d.nii.gz: oblique scanner affine; one time point saved with nibabel itself.
    img4d = nib.load(str(real_file("example4d.nii.gz")))
    img = img4d.slicer[..., 0]
    assert not np.allclose(img.affine[:3, :3], np.diag(np.diag(img.affine[:3, :3])))
    nib.save(img, str(tmp_path / "t0.nii.gz"))
    src = lift3d.read_volume(tmp_path / "t0.nii.gz")
    np.testing.assert_allclose(src.affine, img4d.affine, atol=1e-6)
    mha = lift3d.write_volume(src, tmp_path / "t0.mha")
    back = lift3d.read_volume(lift3d.write_volume(lift3d.read_volume(mha), tmp_path / "t1.nii"))
    assert_same_volume(src, back)


def test_real_philips_par_oblique_lps_qform_only_scaled(tmp_path):
    img = philips_oblique_lps()
    assert "".join(nib.aff2axcodes(img.affine)) == "LPS"
    img.set_qform(img.affine, code=1)
    img.set_sform(None, code=0)
    img.header.set_slope_inter(0.25, -3.0)
    nib.save(img, str(tmp_path / "par.nii"))
    src = lift3d.read_volume(tmp_path / "par.nii")
    raw = np.asarray(img.dataobj)
    np.testing.assert_array_equal(src.array, raw * 0.25 - 3.0)
    np.testing.assert_allclose(src.affine, img.affine, atol=1e-4)
    for ext in EXTS:
        back = lift3d.read_volume(lift3d.write_volume(src, tmp_path / f"out{ext}"))
        assert_same_volume(src, back)
    out = nib.load(str(tmp_path / "out.nii"))
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (1, 0)
    # the scaled integers are stored again as int16 with the same scaling
    assert out.get_data_dtype() == np.int16
    assert (out.dataobj.slope, out.dataobj.inter) == (0.25, -3.0)


def test_real_4d_files_raise():
    for name in ("example4d.nii.gz", "functional.nii"):
        path = real_file(name)
        with pytest.raises(InputError, match="3D") as err:
            lift3d.read_volume(path)
        assert str(path) in str(err.value)


# ------------------------------------------------------ files built directly by nibabel / SimpleITK


@pytest.mark.parametrize("flips", [(1, 1, 1), (-1, -1, 1)], ids=["RAS", "LPS"])
@pytest.mark.parametrize("codes", [(1, 0), (0, 1), (1, 1), (2, 4)], ids=str)
def test_nibabel_built_nifti_codes_and_geometry(tmp_path, flips, codes):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 6, 5)).astype(np.float32)
    affine = oblique_affine(flips=flips)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine if codes[0] else None, code=codes[0])
    img.set_sform(affine if codes[1] else None, code=codes[1])
    nib.save(img, str(tmp_path / "in.nii.gz"))
    src = lift3d.read_volume(tmp_path / "in.nii.gz")
    np.testing.assert_allclose(src.affine, affine, atol=1e-5)
    assert src.spacing == pytest.approx((0.9, 1.2, 2.5), abs=1e-5)
    for ext in EXTS:
        assert_same_volume(src, lift3d.read_volume(lift3d.write_volume(src, tmp_path / f"o{ext}")))
    hdr = nib.load(str(tmp_path / "o.nii.gz")).header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == codes


def test_sform_with_shear_round_trips_in_nifti(tmp_path):
    affine = oblique_affine()
    affine[0, 1] += 0.3  # not a rotation: only the sform can hold it
    img = nib.Nifti1Image(np.arange(60, dtype=np.uint16).reshape(3, 4, 5), affine)
    img.set_sform(affine, code=2)
    nib.save(img, str(tmp_path / "shear.nii"))
    src = lift3d.read_volume(tmp_path / "shear.nii")
    np.testing.assert_allclose(src.affine, affine, atol=1e-5)
    assert_same_volume(src, lift3d.read_volume(lift3d.write_volume(src, tmp_path / "o.nii")))


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.float64, np.int32])
@pytest.mark.parametrize("ext", [".mha", ".mhd"])
def test_sitk_built_metaimage_oblique_lps(tmp_path, dtype, ext):
    rng = np.random.default_rng(1)
    array_zyx = (rng.uniform(0, 100, size=(4, 5, 6))).astype(dtype)
    direction = rotation(0.3, 0.1, -0.25)
    spacing, origin = (0.7, 1.1, 3.0), (-120.5, 30.25, 77.125)
    path = write_sitk(tmp_path / f"in{ext}", array_zyx, spacing, direction, origin)
    src = lift3d.read_volume(path)
    assert src.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(src.array, array_zyx.transpose(2, 1, 0))
    assert src.spacing == pytest.approx(spacing)
    # the voxel (1, 2, 3) lies at origin + D @ (S * ijk) in LPS; RAS flips x and y
    lps = np.asarray(origin) + direction @ (np.asarray(spacing) * [1, 2, 3])
    np.testing.assert_allclose((src.affine @ [1, 2, 3, 1])[:3], lps * [-1, -1, 1], atol=1e-9)
    for out_ext in EXTS:
        back = lift3d.read_volume(lift3d.write_volume(src, tmp_path / f"o{out_ext}"))
        assert_same_volume(src, back)
    # and back in SimpleITK's own terms
    img = sitk.ReadImage(str(tmp_path / "o.mha"))
    np.testing.assert_allclose(img.GetDirection(), direction.ravel(), atol=1e-9)
    np.testing.assert_allclose(img.GetOrigin(), origin, atol=1e-9)


def test_cross_format_nii_mha_nii(tmp_path):
    img = philips_oblique_lps()
    nib.save(img, str(tmp_path / "a.nii.gz"))
    src = lift3d.read_volume(tmp_path / "a.nii.gz")
    mid = lift3d.read_volume(lift3d.write_volume(src, tmp_path / "b.mha"))
    assert mid.orientation == "LPS" and mid.header is None
    back = lift3d.read_volume(lift3d.write_volume(mid, tmp_path / "c.nii"))
    assert_same_volume(src, back)


def test_mhd_writes_pair_without_leftovers(tmp_path):
    vol = Volume(np.zeros((3, 4, 5), np.int16), oblique_affine())
    lift3d.write_volume(vol, tmp_path / "v.mhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mhd", "v.zraw"]


def test_4d_with_trailing_singleton_is_squeezed(tmp_path):
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5, 1)
    nib.save(nib.Nifti1Image(data, oblique_affine()), str(tmp_path / "s.nii.gz"))
    vol = lift3d.read_volume(tmp_path / "s.nii.gz")
    assert vol.shape == (3, 4, 5)
    np.testing.assert_array_equal(vol.array, data[..., 0])
    img = sitk.GetImageFromArray(
        data.transpose(3, 2, 1, 0), isVector=False
    )  # (t, z, y, x), 4D image
    assert img.GetDimension() == 4
    sitk.WriteImage(img, str(tmp_path / "s.mha"))
    np.testing.assert_array_equal(lift3d.read_volume(tmp_path / "s.mha").array, data[..., 0])


def test_new_volume_without_header(tmp_path):
    labels = np.random.default_rng(2).integers(0, 4, size=(5, 6, 7))  # int64
    vol = Volume(labels, oblique_affine(flips=(-1, -1, 1)))
    for ext in EXTS:
        back = lift3d.read_volume(lift3d.write_volume(vol, tmp_path / f"l{ext}"))
        assert_same_volume(vol, back)
    mask = Volume(labels > 1, vol.affine)
    back = lift3d.read_volume(lift3d.write_volume(mask, tmp_path / "m.nii.gz"))
    np.testing.assert_array_equal(back.array, labels > 1)
    assert back.array.dtype == np.uint8


def test_scaled_header_does_not_rescale_new_integer_data(tmp_path):
    # A float image read from a scaled-int file; an integer label map written with its header
    # must be stored as given, not multiplied by the source's scl_slope.
    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), oblique_affine())
    img.header.set_slope_inter(2.0, 5.0)
    nib.save(img, str(tmp_path / "scaled.nii"))
    src = lift3d.read_volume(tmp_path / "scaled.nii")
    labels = src.with_array((src.array > 50).astype(np.int16))
    back = lift3d.read_volume(lift3d.write_volume(labels, tmp_path / "lab.nii"))
    assert_same_volume(labels, back)
    # a float result that is not on the integer grid is stored as float, exactly
    soft = src.with_array(src.array.astype(np.float32) / 3)
    assert_same_volume(soft, lift3d.read_volume(lift3d.write_volume(soft, tmp_path / "f.nii")))


# ------------------------------------------------------------------------------ reorientation


@pytest.mark.parametrize("flips", [(1, 1, 1), (-1, -1, 1), (-1, 1, -1)])
def test_reorient_to_ras_and_back_is_lossless(flips):
    rng = np.random.default_rng(3)
    vol = Volume(rng.normal(size=(4, 5, 6)).astype(np.float32), oblique_affine(flips=flips))
    # a permuted volume: array axes (k, i, j)
    perm = Volume(vol.array.transpose(2, 0, 1).copy(), vol.affine[:, [2, 0, 1, 3]])
    for src in (vol, perm):
        ras = reorient(src, "RAS")
        assert ras.orientation == "RAS"
        # every voxel keeps its world position: same set of (world point, value) pairs
        ijk = np.argwhere(np.ones(src.shape, bool))
        world = (src.affine @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T
        ras_ijk = (np.linalg.inv(ras.affine) @ np.c_[world, np.ones(len(world))].T)[:3].T
        ras_ijk = np.rint(ras_ijk).astype(int)
        np.testing.assert_array_equal(ras.array[tuple(ras_ijk.T)], src.array[tuple(ijk.T)])
        back = reorient(ras, src.orientation)
        assert_same_volume(src, back, atol=1e-9)


def test_reoriented_volume_writes_correct_header(tmp_path):
    src = lift3d.read_volume(real_file("anatomical.nii"))  # LAS, qform+sform code 2
    ras = reorient(src, "RAS")
    back = lift3d.read_volume(lift3d.write_volume(ras, tmp_path / "ras.nii"))
    assert_same_volume(ras, back)
    hdr = nib.load(str(tmp_path / "ras.nii")).header
    assert hdr.get_zooms() == pytest.approx(ras.spacing)


# -------------------------------------------------------------------------------- bad input


def expect_input_error(path: Path, match: str) -> None:
    with pytest.raises(InputError, match=match) as err:
        lift3d.read_volume(path)
    assert err.value.path == Path(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    expect_input_error(tmp_path / "nope.nii.gz", "not found")


def test_folder_instead_of_file(tmp_path):
    (tmp_path / "dir.nii.gz").mkdir()
    expect_input_error(tmp_path / "dir.nii.gz", "folder")


def test_unknown_extension(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    expect_input_error(tmp_path / "x.png", "unsupported")
    with pytest.raises(InputError, match="unsupported"):
        lift3d.write_volume(Volume(np.zeros((2, 2, 2)), np.eye(4)), tmp_path / "x.nrrd")


def test_truncated_nii_gz_detected_at_read(tmp_path):
    data = np.random.default_rng(4).normal(size=(20, 20, 20)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "full.nii.gz"))
    raw = (tmp_path / "full.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    expect_input_error(tmp_path / "cut.nii.gz", "cannot read")
    # the header alone is readable (nibabel is lazy) - the voxels must be read too
    assert nib.load(str(tmp_path / "cut.nii.gz")).shape == (20, 20, 20)


def test_truncated_nii_and_mha(tmp_path):
    vol = Volume(np.ones((20, 20, 20), np.float32), np.eye(4))
    for ext in (".nii", ".mha"):
        lift3d.write_volume(vol, tmp_path / f"full{ext}")
        raw = (tmp_path / f"full{ext}").read_bytes()
        (tmp_path / f"cut{ext}").write_bytes(raw[: len(raw) - 100])
        expect_input_error(tmp_path / f"cut{ext}", "cannot read")


@pytest.mark.parametrize("ext", EXTS)
def test_non_image_with_image_extension(tmp_path, ext):
    path = tmp_path / f"notes{ext}"
    path.write_text("patient notes, not an image\n" * 20)
    expect_input_error(path, "cannot read")


def test_gzip_of_non_image(tmp_path):
    with gzip.open(tmp_path / "text.nii.gz", "wb") as f:
        f.write(b"hello" * 100)
    expect_input_error(tmp_path / "text.nii.gz", "cannot read")


def test_2d_files(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), str(tmp_path / "a.nii"))
    expect_input_error(tmp_path / "a.nii", "3D")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.float32)), str(tmp_path / "b.mha"))
    expect_input_error(tmp_path / "b.mha", "3D")


def test_4d_files(tmp_path):
    data = np.zeros((3, 4, 5, 2), np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "a.nii.gz"))
    expect_input_error(tmp_path / "a.nii.gz", "4D")
    sitk.WriteImage(
        sitk.GetImageFromArray(data.transpose(3, 2, 1, 0), isVector=False), str(tmp_path / "b.mha")
    )
    expect_input_error(tmp_path / "b.mha", "4D")


def test_vector_metaimage(tmp_path):
    img = sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.float32), isVector=True)
    sitk.WriteImage(img, str(tmp_path / "rgb.mha"))
    expect_input_error(tmp_path / "rgb.mha", "components")


def test_degenerate_affine(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((3, 4, 5))
    hdr.set_data_dtype(np.float32)
    hdr["sform_code"] = 1
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]
    nib.save(
        nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), None, header=hdr), str(tmp_path / "f.nii")
    )
    expect_input_error(tmp_path / "f.nii", "degenerate")


def test_failed_write_leaves_nothing(tmp_path):
    bad = Volume(np.full((2, 2, 2), "a"), np.eye(4))  # strings: no image format stores them
    for ext in EXTS:
        with pytest.raises(ValueError, match="dtype"):
            lift3d.write_volume(bad, tmp_path / f"x{ext}")
    assert list(tmp_path.iterdir()) == []


def test_read_copy_independent_of_file(tmp_path):
    lift3d.write_volume(Volume(np.ones((3, 3, 3), np.int16), np.eye(4)), tmp_path / "a.nii")
    vol = lift3d.read_volume(tmp_path / "a.nii")
    shutil.copy(tmp_path / "a.nii", tmp_path / "b.nii")
    lift3d.write_volume(vol.with_array(vol.array * 2), tmp_path / "a.nii")
    vol.array[0, 0, 0] = 5  # writable, in memory (not a read-only memory map of the file)
    np.testing.assert_array_equal(lift3d.read_volume(tmp_path / "a.nii").array, 2)


def test_no_orientation_codes_file(tmp_path):
    # qform_code = sform_code = 0 (ANALYZE-like): the affine comes from pixdim alone.
    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), np.diag([2, 3, 4, 1.0]))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    nib.save(img, str(tmp_path / "plain.nii"))
    src = lift3d.read_volume(tmp_path / "plain.nii")
    back = lift3d.read_volume(lift3d.write_volume(src, tmp_path / "o.nii"))
    assert_same_volume(src, back)
    hdr = nib.load(str(tmp_path / "o.nii")).header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (0, 0)
    # once reoriented the pixdim fallback no longer describes it: the affine is stored instead
    ras = reorient(src, "RAS")
    assert_same_volume(ras, lift3d.read_volume(lift3d.write_volume(ras, tmp_path / "r.nii")))


def test_real_nifti2_oblique_volume(tmp_path):
    img = nib.load(str(real_file("example_nifti2.nii.gz"))).slicer[..., 1]  # 3D, NIfTI-2
    assert isinstance(img, nib.Nifti2Image)
    nib.save(img, str(tmp_path / "n2.nii"))
    src = lift3d.read_volume(tmp_path / "n2.nii")
    np.testing.assert_allclose(src.affine, img.affine, atol=1e-6)
    for ext in EXTS:
        assert_same_volume(src, lift3d.read_volume(lift3d.write_volume(src, tmp_path / f"o{ext}")))


def test_write_volume_refuses_non_finite_results(tmp_path):
    vol = Volume(np.ones((3, 3, 3), np.float32), np.eye(4))
    vol.array[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="1 NaN or Inf voxels") as err:
        lift3d.write_volume(vol, tmp_path / "r.nii.gz", require_finite=True)
    assert err.value.path == tmp_path / "r.nii.gz"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ext", [".nii.gz", ".mha", ".mhd"])
def test_write_volume_exclusive_and_umask(tmp_path, ext):
    vol = Volume(np.arange(27, dtype=np.int16).reshape(3, 3, 3), np.eye(4))
    path = tmp_path / f"v{ext}"
    old = os.umask(0o027)
    try:
        lift3d.write_volume(vol, path, overwrite=False)
    finally:
        os.umask(old)
    assert {p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {0o640}
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match="already exists"):
        lift3d.write_volume(vol.with_array(vol.array * 2), path, overwrite=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    lift3d.write_volume(vol.with_array(vol.array * 2), path, overwrite=True)
    np.testing.assert_array_equal(lift3d.read_volume(path).array, vol.array * 2)
    assert sorted(before) == sorted(p.name for p in tmp_path.iterdir())  # no temp left


def test_with_nifti_codes(tmp_path):
    vol = with_nifti_codes(Volume(np.ones((3, 3, 3), np.float32), np.diag([2, 2, 2, 1])), 4, 4)
    path = lift3d.write_volume(vol, tmp_path / "mni.nii.gz")
    header = nib.load(path).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (4, 4)
    assert nifti_codes(path) == (4, 4)
    np.testing.assert_allclose(lift3d.read_volume(path).affine, np.diag([2, 2, 2, 1]))
    assert nifti_codes(tmp_path / "x.mha") is None
