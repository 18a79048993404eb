"""Preprocessing to the model grid and its inverse back to the source grid and intensity scale."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import lift3d
from lift3d.data.preprocess import (
    CT_WINDOW_HU,
    MODEL_AXES,
    PreprocessRecord,
    centered_start,
    crop_or_pad,
    denormalize_intensity,
    from_model_space,
    normalize_intensity,
    preprocess_case,
    restore_volume,
    to_model_space,
)
from lift3d.data.volume import Volume, reorient
from lift3d.errors import InputError

KINDS = {"t1": "mr", "ct": "ct", "seg": "label", "body": "mask"}
SOURCE_SHAPE = (20, 18, 14)


def oblique_lps_affine() -> np.ndarray:
    """(4, 4) oblique affine whose axes point roughly L, P, S; 0.9 x 1.1 x 2.5 mm voxels."""
    a, b = 0.2, -0.15
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rot = rot @ np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-0.9, -1.1, 2.5])
    affine[:3, 3] = (91.5, 120.25, -60.75)
    return affine


def make_case(affine: np.ndarray | None = None, seed: int = 0) -> dict[str, Volume]:
    """A small case: MR object off-centre, CT in HU (partly outside the window), labels, mask."""
    rng = np.random.default_rng(seed)
    affine = oblique_lps_affine() if affine is None else affine
    body = np.zeros(SOURCE_SHAPE, bool)
    body[3:15, 5:17, 2:11] = True
    t1 = np.where(body, rng.uniform(20, 400, SOURCE_SHAPE), 0).astype(np.float32)
    ct = rng.uniform(-1200, 3200, SOURCE_SHAPE).astype(np.float32)
    seg = np.where(body, rng.integers(0, 4, SOURCE_SHAPE), 0).astype(np.uint8)
    return {
        "t1": Volume(t1, affine),
        "ct": Volume(ct, affine),
        "seg": Volume(seg, affine),
        "body": Volume(body.astype(np.uint8), affine),
    }


def field_of_view(record: PreprocessRecord) -> np.ndarray:
    """(I, J, K) bool: source voxels that the model grid covers (restored all-ones mask)."""
    fov = restore_volume(np.ones(record.shape, np.float32), record, "body").array
    return fov.astype(bool)


def world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return (affine @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T


# ------------------------------------------------------------------------------ pure functions


@pytest.mark.parametrize("slice_axis", list(MODEL_AXES))
def test_model_space_axes(slice_axis):
    ras = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # (R, A, S)
    dhw = to_model_space(ras, slice_axis)
    depth_axis = {"axial": 2, "coronal": 1, "sagittal": 0}[slice_axis]
    assert dhw.shape[0] == ras.shape[depth_axis]
    np.testing.assert_array_equal(from_model_space(dhw, slice_axis), ras)
    if slice_axis == "axial":  # the ARCHITECTURE.md contract
        np.testing.assert_array_equal(dhw, ras.transpose(2, 1, 0))
    with pytest.raises(ValueError, match="slice_axis"):
        to_model_space(ras, "oblique")


@pytest.mark.parametrize("start", [(2, 1), (-3, 2), (-1, -4), (0, 0)])
def test_crop_or_pad_inverse(start):
    a = np.arange(1, 8 * 6 + 1).reshape(8, 6)
    out = crop_or_pad(a, start, (5, 9), fill=-1)
    assert out.shape == (5, 9)
    back = crop_or_pad(out, [-s for s in start], a.shape, fill=-1)
    covered = back != -1
    np.testing.assert_array_equal(back[covered], a[covered])
    # covered region is exactly the overlap of the window with the array
    rows = np.clip([start[0], start[0] + 5], 0, 8)
    cols = np.clip([start[1], start[1] + 9], 0, 6)
    assert covered.sum() == (rows[1] - rows[0]) * (cols[1] - cols[0])
    assert (out == -1).sum() == out.size - covered.sum()


def test_centered_start():
    mask = np.zeros((30, 10), bool)
    mask[20:26, 2:4] = True
    # crop centred on the box (23, 3), kept inside the array
    assert centered_start(mask.shape, (10, 4), mask) == (18, 1)
    assert centered_start(mask.shape, (10, 8), mask) == (18, 0)
    # pad: the array sits inside the window
    assert centered_start(mask.shape, (40, 16), mask)[1] in range(-6, 1)
    assert centered_start(mask.shape, (30, 10), None) == (0, 0)


def test_normalize_round_trip_and_windows():
    x = np.array([-3000.0, -1024.0, 0.0, 988.0, 3000.0, 5000.0])
    y = normalize_intensity(x, CT_WINDOW_HU)
    np.testing.assert_allclose(y, [0, 0, 1024 / 4024, 0.5, 1, 1], atol=1e-7)
    back = denormalize_intensity(y, CT_WINDOW_HU)
    np.testing.assert_allclose(back[1:5], x[1:5], atol=1e-3)
    assert normalize_intensity(x, None).dtype == np.float32
    np.testing.assert_array_equal(normalize_intensity(np.full(3, 7.0), (7.0, 7.0)), 0)


# ------------------------------------------------------------------- exact inverse, no resampling


@pytest.mark.parametrize("slice_axis", list(MODEL_AXES))
@pytest.mark.parametrize(
    "shape", [(8, 9, 6), (24, 26, 22), (16, 8, 30)], ids=["crop", "pad", "mixed"]
)
def test_exact_inverse_oblique_lps(slice_axis, shape):
    case = make_case()
    assert case["t1"].orientation == "LPS"
    arrays, record = preprocess_case(case, shape=shape, kinds=KINDS, slice_axis=slice_axis)
    fov = field_of_view(record)
    assert fov.any()
    inside_model = np.prod([min(a, b) for a, b in zip(shape, arrays["seg"].shape)])
    assert fov.sum() <= inside_model

    for name, vol in case.items():
        arr = arrays[name]
        assert arr.shape == shape and arr.dtype == np.float32
        restored = restore_volume(arr, record, name)
        assert restored.shape == vol.shape
        np.testing.assert_array_equal(restored.affine, vol.affine)  # identical geometry
        src, out = vol.array, restored.array
        if KINDS[name] in ("label", "mask"):
            assert out.dtype == src.dtype
            np.testing.assert_array_equal(out[fov], src[fov])
            assert not out[~fov].any()
        elif KINDS[name] == "ct":
            assert arr.min() >= 0 and arr.max() <= 1
            in_window = fov & (src >= CT_WINDOW_HU[0]) & (src <= CT_WINDOW_HU[1])
            np.testing.assert_allclose(out[in_window], src[in_window], atol=1e-3, rtol=0)
            np.testing.assert_allclose(out[fov], np.clip(src[fov], *CT_WINDOW_HU), atol=1e-3)
            np.testing.assert_array_equal(out[~fov], CT_WINDOW_HU[0])
        else:
            low, high = record.intensity[name]["window"]
            inside = fov & (src >= low) & (src <= high)
            np.testing.assert_allclose(out[inside], src[inside], rtol=1e-6, atol=1e-4)
            np.testing.assert_array_equal(out[~fov], 0)


@pytest.mark.parametrize("slice_axis", list(MODEL_AXES))
def test_model_affine_places_model_voxels_at_source_positions(slice_axis):
    case = make_case(seed=3)
    vals = np.arange(np.prod(SOURCE_SHAPE), dtype=np.int32).reshape(SOURCE_SHAPE)
    arrays, record = preprocess_case(
        {"ids": Volume(vals, case["t1"].affine)},
        shape=(12, 10, 9),
        kinds={"ids": "label"},
        slice_axis=slice_axis,
    )
    model = arrays["ids"]
    dhw = np.argwhere(np.ones(model.shape, bool))
    ijk = world(np.linalg.inv(record.source_affine), world(record.model_affine, dhw))
    ijk_int = np.rint(ijk).astype(int)
    np.testing.assert_allclose(ijk, ijk_int, atol=1e-6)
    inside = np.all((ijk_int >= 0) & (ijk_int < SOURCE_SHAPE), axis=1)
    assert inside.any()
    np.testing.assert_array_equal(model[tuple(dhw[inside].T)], vals[tuple(ijk_int[inside].T)])
    # model voxel spacing is the source spacing, permuted
    spacing = np.sqrt((record.model_affine[:3, :3] ** 2).sum(axis=0))
    assert sorted(spacing) == pytest.approx(sorted(case["t1"].spacing))


def test_crop_is_centred_on_foreground():
    case = make_case()
    arrays, record = preprocess_case(case, shape=(10, 14, 14), kinds=KINDS)
    # the MR foreground box (12 x 12 x 9 voxels) fits: every foreground voxel is in the model
    assert field_of_view(record)[case["t1"].array != 0].all()
    assert arrays["body"].sum() == case["body"].array.sum()


def test_explicit_foreground_and_returned_mask():
    case = make_case()
    fg = np.zeros(SOURCE_SHAPE, bool)
    fg[15:19, 0:4, 10:14] = True  # a corner, away from the MR object
    arrays, record = preprocess_case(
        case, shape=(6, 6, 6), kinds=KINDS, foreground=fg, with_foreground=True
    )
    assert arrays["foreground"].sum() == fg.sum()
    restored = restore_volume(arrays["foreground"], record, "body").array
    np.testing.assert_array_equal(restored.astype(bool), fg)


def test_mr_normalisation_uses_foreground_percentiles():
    case = make_case()
    arrays, record = preprocess_case(case, shape=(14, 14, 22), kinds=KINDS)
    src = case["t1"].array
    low, high = np.percentile(src[src != 0].astype(np.float64), [0.5, 99.5])
    assert record.intensity["t1"]["window"] == pytest.approx([low, high])
    model = arrays["t1"]
    assert model.min() == 0.0 and model.max() == pytest.approx(1.0)
    ras = reorient(case["t1"], "RAS").array
    expected = (np.clip(ras, low, high) - low) / (high - low)
    np.testing.assert_allclose(
        np.sort(model[model > 0]), np.sort(expected[expected > 0]), atol=1e-6
    )


def test_record_json_round_trip():
    case = make_case()
    arrays, record = preprocess_case(case, shape=(8, 9, 10), kinds=KINDS, spacing_mm=(1.0, 1.5, 2))
    text = json.dumps(record.to_dict())
    again = PreprocessRecord.from_dict(json.loads(text))
    assert again.to_dict() == record.to_dict()
    for name in case:
        a = restore_volume(arrays[name], record, name)
        b = restore_volume(arrays[name], again, name)
        np.testing.assert_array_equal(a.array, b.array)
        np.testing.assert_array_equal(a.affine, b.affine)


def test_restore_accepts_torch_and_checks_shape():
    import torch

    case = make_case()
    arrays, record = preprocess_case(case, shape=(8, 9, 10), kinds=KINDS)
    tensor = torch.from_numpy(arrays["ct"])[None, None]  # (1, 1, D, H, W)
    out = restore_volume(tensor, record, "ct")
    np.testing.assert_array_equal(out.array, restore_volume(arrays["ct"], record, "ct").array)
    with pytest.raises(ValueError, match="shape"):
        restore_volume(np.zeros((8, 9, 11)), record, "ct")
    with pytest.raises(ValueError, match="modality"):
        restore_volume(arrays["ct"], record, "t2")


def test_bad_inputs():
    case = make_case()
    moved = case["ct"].affine.copy()
    moved[0, 3] += 1.0
    case["ct"] = Volume(case["ct"].array, moved, path=Path("case/ct.nii.gz"))
    with pytest.raises(InputError, match="ct.nii.gz"):
        preprocess_case(case, shape=(8, 8, 8), kinds=KINDS)
    good = make_case()
    with pytest.raises(ValueError, match="kind"):
        preprocess_case(good, shape=(8, 8, 8), kinds={**KINDS, "t1": "pet"})
    with pytest.raises(ValueError, match="no kind"):
        preprocess_case(good, shape=(8, 8, 8), kinds={"t1": "mr"})


def test_real_file_restores_on_source_grid(tmp_path):
    path = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    if not path.exists():
        pytest.skip("nibabel test data (anatomical.nii) not installed")
    src = lift3d.read_volume(path)  # real LAS scan, int16
    arrays, record = preprocess_case({"t1": src}, shape=(16, 32, 32), kinds={"t1": "mr"})
    restored = restore_volume(arrays["t1"], record, "t1")
    out = lift3d.write_volume(src.with_array(restored.array), tmp_path / "restored.nii.gz")
    back = lift3d.read_volume(out)
    assert back.shape == src.shape
    np.testing.assert_allclose(back.affine, src.affine, atol=1e-6)
    fov = field_of_view_for(record, "t1")
    low, high = record.intensity["t1"]["window"]
    ok = fov & (src.array >= low) & (src.array <= high)
    assert ok.sum() > 1000
    np.testing.assert_allclose(back.array[ok], src.array[ok], rtol=1e-6, atol=1e-3)


def field_of_view_for(record: PreprocessRecord, modality: str) -> np.ndarray:
    """FOV via a record copy that treats `modality` as a mask."""
    data = record.to_dict()
    data["intensity"] = {modality: {"kind": "mask", "window": None, "dtype": "|u1"}}
    copy = PreprocessRecord.from_dict(data)
    return restore_volume(np.ones(record.shape, np.float32), copy, modality).array.astype(bool)


# ------------------------------------------------------------------------------ resampling


def test_resampling_round_trip_approximate():
    # smooth blob on an anisotropic (0.9 x 1.1 x 2.5 mm) oblique LPS grid -> 1.5 mm iso -> back
    affine = oblique_lps_affine()
    shape = (40, 36, 16)
    ijk = np.argwhere(np.ones(shape, bool))
    xyz = world(affine, ijk)
    centre = world(affine, np.array([[20, 18, 8]]))[0]
    r2 = ((xyz - centre) ** 2).sum(axis=1)
    blob = (1000 * np.exp(-r2 / (2 * 8.0**2))).reshape(shape).astype(np.float32)
    sphere = (r2 < 10.0**2).reshape(shape).astype(np.uint8)
    case = {"t1": Volume(blob, affine), "seg": Volume(sphere, affine)}
    arrays, record = preprocess_case(
        case, shape=(32, 48, 48), kinds={"t1": "mr", "seg": "label"}, spacing_mm=1.5
    )
    spacing = np.sqrt((record.model_affine[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(spacing, 1.5, atol=1e-9)
    t1 = restore_volume(arrays["t1"], record, "t1")
    seg = restore_volume(arrays["seg"], record, "seg")
    assert t1.shape == shape and seg.shape == shape
    np.testing.assert_array_equal(t1.affine, affine)
    # stated tolerance: linear interpolation along an axis of step h errs by at most
    # h^2 / 8 * max|f''|, and |f''| <= peak / sigma^2 for a Gaussian; summed over the axes of
    # both passes (source grid 0.9, 1.1, 2.5 mm, then the 1.5 mm model grid) -> ~29 (2.9% of peak)
    steps = np.array([0.9, 1.1, 2.5, 1.5, 1.5, 1.5])
    bound = (steps**2 / 8).sum() * 1000 / 8.0**2
    low, high = record.intensity["t1"]["window"]
    inside = (blob >= low) & (blob <= high)
    err = np.abs(t1.array - blob)[inside]
    assert err.max() < bound
    assert err.mean() < 0.005 * blob.max()
    # nearest-neighbour labels: Dice > 0.95 for a 10 mm sphere
    dice = 2 * (seg.array & sphere).sum() / (seg.array.sum() + sphere.sum())
    assert dice > 0.95
    # the blob stays where it was in the world: centroid of its half-maximum ball on the
    # 1.5 mm model grid, placed by record.model_affine (one voxel off would be 1.5 mm)
    half = np.argwhere(arrays["t1"] > 0.5)
    centroid = world(record.model_affine, half).mean(axis=0)
    assert np.linalg.norm(centroid - centre) < 0.5
