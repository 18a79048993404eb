"""The seeded head phantom: determinism, layouts, geometry, contrasts, HU, labels, masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion

from lift3d import InputError, read_volume
from lift3d.data.discovery import discover_cases
from lift3d.data.phantom_realistic import (
    MULTISLICE_DEFAULT,
    _average_down,
    _render_factors,
    make_realistic_phantom,
)
from lift3d.data.phantom_realistic import TISSUES as REAL_TISSUES
from lift3d.data.synthetic import (
    MARKER_NAME,
    MR_MODALITIES,
    TISSUES,
    brats_case_id,
    is_phantom_dataset,
    make_phantom,
    synthrad_case_id,
    write_phantom_dataset,
)
from lift3d.data.volume import reorient

SHAPE = (64, 64, 64)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(7, SHAPE, case=0)


def file_bytes(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def tissue_median(phantom, modality, tissue, interior=True):
    """Median of `modality` over a tissue; `interior` drops its partial-volume boundary voxels."""
    mask = phantom["tissue"] == TISSUES[tissue]
    if interior:
        mask = binary_erosion(mask)
    assert mask.sum() >= 10, tissue
    return float(np.median(phantom[modality][mask]))


@pytest.mark.parametrize("layout", ["brats", "synthrad"])
def test_same_seed_same_bytes_other_seed_differs(tmp_path, layout):
    args = dict(layout=layout, cases=2, shape=(24, 24, 20))
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_phantom_dataset(tmp_path / name, seed=seed, **args)
    a, b, c = (file_bytes(tmp_path / name) for name in "abc")
    assert a == b
    assert set(a) == set(c)
    images = [name for name in a if name.endswith(".nii.gz") and "mask" not in name]
    assert images and all(a[name] != c[name] for name in images)


def test_case_does_not_depend_on_case_count(tmp_path, phantom_brats_dir):
    marker = json.loads((phantom_brats_dir / MARKER_NAME).read_text())
    assert marker["cases"] > 1
    write_phantom_dataset(
        tmp_path / "one", "brats", cases=1, shape=marker["shape"], seed=marker["seed"]
    )
    case = brats_case_id(0)
    for mod in (*MR_MODALITIES, "seg"):
        name = f"{case}/{case}-{mod}.nii.gz"
        assert (tmp_path / "one" / name).read_bytes() == (phantom_brats_dir / name).read_bytes()


def test_brats_layout_names_affine_and_skull_stripping(phantom_brats_dir):
    cases = sorted(p.name for p in phantom_brats_dir.iterdir() if p.is_dir())
    assert (
        cases
        == [brats_case_id(k) for k in range(4)]
        == [f"BraTS-GLI-0000{k}-000" for k in range(4)]
    )
    marker = json.loads((phantom_brats_dir / MARKER_NAME).read_text())
    assert marker["layout"] == "brats" and marker["cases"] == 4 and marker["shape"] == [32, 32, 32]
    case = cases[1]
    vols = {
        m: read_volume(phantom_brats_dir / case / f"{case}-{m}.nii.gz")
        for m in (*MR_MODALITIES, "seg")
    }
    ref = vols["t1n"]
    assert ref.orientation == "LPS"
    assert np.any(np.abs(ref.affine[:3, 3]) > 1)
    for vol in vols.values():
        assert vol.shape == (32, 32, 32)
        np.testing.assert_array_equal(vol.affine, ref.affine)
    # Same subject as make_phantom, flipped into LPS voxel order; MR zero outside the brain.
    expected = make_phantom(marker["seed"], (32, 32, 32), case=1)
    brain = expected["brain"]
    for mod in MR_MODALITIES:
        ras = reorient(vols[mod], "RAS").array
        np.testing.assert_array_equal(ras, np.where(brain, expected[mod], 0))
        assert np.all(ras[brain] > 0) and np.all(ras[~brain] == 0)
    seg = reorient(vols["seg"], "RAS").array
    assert vols["seg"].array.dtype == np.uint8
    assert set(np.unique(seg)) <= {0, 1, 2, 3}
    assert np.all(brain[seg > 0])


def test_synthrad_layout_names_oblique_affine_and_mask(phantom_synthrad_dir):
    root = phantom_synthrad_dir / "Task1" / "brain"
    assert sorted(p.name for p in root.iterdir()) == [synthrad_case_id(k) for k in range(4)]
    assert synthrad_case_id(0) == "1BA001"
    case = root / "1BA002"
    assert sorted(p.name for p in case.iterdir()) == ["ct.nii.gz", "mask.nii.gz", "mr.nii.gz"]
    mr, ct, mask = (read_volume(case / f"{n}.nii.gz") for n in ("mr", "ct", "mask"))
    np.testing.assert_array_equal(mr.affine, ct.affine)
    np.testing.assert_array_equal(mask.affine, ct.affine)
    rot = ct.affine[:3, :3]
    assert np.abs(rot - np.diag(np.diag(rot))).max() > 0.01  # oblique
    assert ct.array.dtype == np.int16 and mask.array.dtype == np.uint8
    body = mask.array > 0
    expected = make_phantom(0, (32, 32, 32), case=1)
    np.testing.assert_array_equal(body, expected["tissue"] > 0)
    np.testing.assert_array_equal(mr.array, expected["t1c"])  # whole head, skull and skin kept
    hu = ct.array
    # Outside the body (beyond the one-voxel partial-volume edge): air.
    assert np.mean(hu[~binary_dilation(body)] < -900) > 0.98
    assert np.mean(hu[body] > -300) > 0.9
    assert np.all((hu >= -1024) & (hu <= 3071))
    # MR signal outside the brain (scalp, fat) is present; background is dark Rician noise.
    scalp = body & ~expected["brain"]
    assert mr.array[scalp].mean() > 5 * mr.array[~body].mean() > 0


def test_is_phantom_dataset(tmp_path):
    root = tmp_path / "data"
    write_phantom_dataset(root, "brats", cases=1, shape=(16, 16, 16))
    case = root / brats_case_id(0)
    assert is_phantom_dataset(root)
    assert is_phantom_dataset(case)
    assert is_phantom_dataset(case / f"{brats_case_id(0)}-t1n.nii.gz")
    assert not is_phantom_dataset(tmp_path)
    deep = root / "a" / "b" / "c" / "d"
    (deep / "e").mkdir(parents=True)
    assert is_phantom_dataset(deep)  # 4 levels below the marker
    assert not is_phantom_dataset(deep / "e")  # 5 levels: beyond the 4 parents checked


def test_mr_contrasts_follow_tissue_physics(phantom):
    tissues = ("csf", "ventricles", "grey_matter", "white_matter", "oedema", "bone")
    med = {m: {t: tissue_median(phantom, m, t) for t in tissues} for m in MR_MODALITIES}
    for m in ("t1n", "t1c"):  # T1: WM > GM > CSF
        assert med[m]["white_matter"] > med[m]["grey_matter"] > med[m]["csf"]
    assert med["t2w"]["csf"] > med["t2w"]["grey_matter"] > med["t2w"]["white_matter"]
    assert med["t2w"]["ventricles"] > med["t2w"]["grey_matter"]
    # FLAIR: CSF suppressed, oedema brightest
    assert med["t2f"]["ventricles"] < 0.3 * med["t2f"]["white_matter"]
    assert med["t2f"]["oedema"] > max(med["t2f"]["grey_matter"], med["t2f"]["white_matter"])
    assert med["t2f"]["oedema"] > 1.3 * med["t1n"]["oedema"]
    # T1c: the enhancing rim is bright with contrast, not without (same voxels)
    rim = phantom["tissue"] == TISSUES["enhancing"]
    assert rim.sum() >= 10
    assert np.median(phantom["t1c"][rim]) > 1.5 * np.median(phantom["t1n"][rim])
    assert np.median(phantom["t1c"][rim]) > med["t1c"]["white_matter"]
    assert all(med[m]["bone"] < med[m]["grey_matter"] for m in MR_MODALITIES)


def test_ct_hounsfield_units(phantom):
    ct, tissue = phantom["ct"], phantom["tissue"]
    assert abs(tissue_median(phantom, "ct", "background") + 1000) < 30
    assert 20 < tissue_median(phantom, "ct", "soft_tissue") < 60
    assert 0 <= tissue_median(phantom, "ct", "ventricles") < 20
    assert 20 < tissue_median(phantom, "ct", "white_matter") < 45
    assert 25 < tissue_median(phantom, "ct", "grey_matter") < 50
    bone = ct[tissue == TISSUES["bone"]]
    assert np.median(bone) > 500 and 1000 < bone.max() <= 1600
    assert ct.min() >= -1024


def test_labels_brain_and_body(phantom):
    seg, tissue = phantom["seg"], phantom["tissue"]
    assert seg.dtype == np.uint8 and set(np.unique(seg)) == {0, 1, 2, 3}
    assert np.all(phantom["brain"][seg > 0])
    np.testing.assert_array_equal(seg == 3, tissue == TISSUES["enhancing"])
    assert np.array_equal(phantom["mask"] > 0, tissue > 0)
    assert np.all(phantom["brain"] <= (phantom["mask"] > 0))
    healthy = make_phantom(7, SHAPE, case=0, tumour=False)
    assert not healthy["seg"].any()
    assert not np.isin(
        healthy["tissue"], [TISSUES["necrotic"], TISSUES["oedema"], TISSUES["enhancing"]]
    ).any()


def test_subjects_differ_and_anatomy_changes_along_z(phantom):
    other = make_phantom(7, SHAPE, case=1)
    a, b = phantom["tissue"] > 0, other["tissue"] > 0
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice < 0.99
    assert not np.array_equal(make_phantom(8, SHAPE, case=0)["tissue"], phantom["tissue"])
    # Through-plane structure: ventricles appear and vanish between axial slices of the brain.
    brain_slices = phantom["brain"].any(axis=(0, 1))
    has_ventricle = (phantom["tissue"] == TISSUES["ventricles"]).any(axis=(0, 1))
    assert has_ventricle[brain_slices].any() and not has_ventricle[brain_slices].all()
    # The head outline changes with depth (skull curvature).
    area = (phantom["tissue"] == TISSUES["bone"]).sum(axis=(0, 1))
    assert area.std() > 0.1 * area.mean()


def test_make_phantom_deterministic_and_float32():
    a, b = make_phantom(3, (24, 20, 16)), make_phantom(3, (24, 20, 16))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert all(
        a[m].dtype == np.float32 and a[m].shape == (24, 20, 16) for m in (*MR_MODALITIES, "ct")
    )
    assert all(np.all(a[m] >= 0) for m in MR_MODALITIES)  # Rician magnitude


@pytest.mark.parametrize(
    "kwargs",
    [dict(layout="nifti"), dict(cases=0), dict(shape=(8, 32, 32)), dict(shape=(32, 32))],
)
def test_bad_arguments_raise_input_error(tmp_path, kwargs):
    with pytest.raises(InputError):
        write_phantom_dataset(tmp_path / "out", **{"cases": 1, "shape": (16, 16, 16), **kwargs})
    assert not (tmp_path / "out").exists()


def test_existing_output_kept_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    write_phantom_dataset(out, "synthrad", cases=3, shape=(16, 16, 16))
    before = file_bytes(out)
    with pytest.raises(InputError, match="already exists"):
        write_phantom_dataset(out, "synthrad", cases=1, shape=(16, 16, 16))
    assert file_bytes(out) == before
    (out / "notes.txt").write_text("mine")
    write_phantom_dataset(out, "synthrad", cases=1, shape=(16, 16, 16), overwrite=True)
    # The earlier run's extra cases are gone; files the phantom did not write are kept.
    assert sorted(p.name for p in (out / "Task1" / "brain").iterdir()) == ["1BA001"]
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / MARKER_NAME).read_text())["cases"] == 1


# --- the realistic kind ---------------------------------------------------------------------

REAL_SHAPE = (48, 48, 48)
MR_DARK = 0.15  # bone and air: below this fraction of the white-matter T1 signal


@pytest.fixture(scope="module")
def realistic():
    return make_realistic_phantom(7, REAL_SHAPE, case=0)


def interior_median(phantom, modality, tissue):
    """Median over a tissue's voxels whose 6 neighbours share it (no partial volume)."""
    mask = binary_erosion(phantom["tissue"] == REAL_TISSUES[tissue])
    assert mask.sum() >= 5, tissue
    return float(np.median(phantom[modality][mask]))


@pytest.mark.parametrize("layout", ["brats", "synthrad"])
def test_realistic_same_seed_same_bytes_and_marker(tmp_path, layout):
    args = dict(layout=layout, cases=2, shape=(24, 24, 20), kind="realistic")
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_phantom_dataset(tmp_path / name, seed=seed, **args)
    a, b, c = (file_bytes(tmp_path / name) for name in "abc")
    assert a == b
    images = [name for name in a if name.endswith(".nii.gz") and "mask" not in name]
    assert images and all(a[name] != c[name] for name in images)
    # Not the basic phantom's images; the marker says which kind.
    write_phantom_dataset(tmp_path / "basic", seed=5, layout=layout, cases=2, shape=(24, 24, 20))
    basic = file_bytes(tmp_path / "basic")
    assert set(basic) == set(a) and all(basic[name] != a[name] for name in images)
    assert json.loads(a[MARKER_NAME])["kind"] == "realistic"
    assert json.loads(basic[MARKER_NAME])["kind"] == "basic"


def test_realistic_bone_and_air_dark_in_mr_apart_in_ct(realistic):
    wm = interior_median(realistic, "t1n", "white_matter")
    for mod in MR_MODALITIES:
        for tissue in ("bone", "air", "background"):
            assert interior_median(realistic, mod, tissue) < MR_DARK * wm, (mod, tissue)
    bone_hu = interior_median(realistic, "ct", "bone")
    air_hu = interior_median(realistic, "ct", "air")
    assert bone_hu > 900 and air_hu < -900 and bone_hu - air_hu > 1000
    # Air sits next to bone (sinus walls, mastoid septa), not only outside the head.
    air = realistic["tissue"] == REAL_TISSUES["air"]
    assert air.sum() >= 20
    near_bone = binary_dilation(realistic["tissue"] == REAL_TISSUES["bone"], iterations=2)
    assert (air & near_bone).sum() > 0.5 * air.sum()


def test_realistic_tissue_contrasts(realistic):
    med = {
        m: {
            t: float(np.median(realistic[m][realistic["tissue"] == REAL_TISSUES[t]]))
            for t in (
                "csf",
                "grey_matter",
                "white_matter",
                "marrow",
                "oedema",
                "necrotic",
                "enhancing",
            )
        }
        for m in (*MR_MODALITIES, "ct")
    }
    # Fatty marrow bright on T1 (its least partial-volumed voxels brighter than grey matter;
    # the diploe is 1-2 voxels thick here) yet bone in CT.
    marrow = realistic["tissue"] == REAL_TISSUES["marrow"]
    assert np.percentile(realistic["t1n"][marrow], 90) > med["t1n"]["grey_matter"]
    assert med["t1n"]["marrow"] > 3 * interior_median(realistic, "t1n", "bone")
    assert med["ct"]["marrow"] > 300
    # CSF dark on T1, bright on T2, suppressed on FLAIR; GM darker than WM on T1.
    assert med["t1n"]["csf"] < 0.4 * med["t1n"]["white_matter"]
    assert med["t2w"]["csf"] > 1.5 * med["t2w"]["white_matter"]
    assert med["t2f"]["csf"] < 0.4 * med["t2f"]["white_matter"]
    assert med["t1n"]["grey_matter"] < med["t1n"]["white_matter"]
    # Tumour compartments: the rim enhances, necrosis does not; oedema brightest on FLAIR.
    assert med["t1c"]["enhancing"] > 1.4 * med["t1n"]["enhancing"]
    assert med["t1c"]["necrotic"] < 0.5 * med["t1c"]["enhancing"]
    assert med["t2w"]["necrotic"] > med["t2w"]["white_matter"]
    assert med["t2f"]["oedema"] > max(med["t2f"]["grey_matter"], med["t2f"]["white_matter"])
    assert med["t1n"]["oedema"] < med["t1n"]["white_matter"]
    assert set(np.unique(realistic["seg"])) == {0, 1, 2, 3}
    np.testing.assert_array_equal(
        realistic["seg"] == 3, realistic["tissue"] == REAL_TISSUES["enhancing"]
    )


def test_realistic_rician_background_and_snr(realistic):
    bg = binary_erosion(realistic["tissue"] == 0, iterations=2)
    for mod in MR_MODALITIES:
        values = realistic[mod][bg]
        assert np.all(values > 0)  # Rayleigh magnitude, not zero
        sigma = values.mean() / np.sqrt(np.pi / 2)
        # Rayleigh: std / mean = sqrt(4 / pi - 1) ~ 0.52
        assert 0.45 < values.std() / values.mean() < 0.6
        if mod == "t1n":
            snr = interior_median(realistic, mod, "white_matter") / sigma
            assert 10 < snr < 40
    # CT: Gaussian noise of 6.7-13.4 HU (1 mm slices) in the air around the head.
    air = realistic["ct"][bg & (realistic["ct"] > -1024)]
    assert 5 < air.std() < 16


def test_realistic_ct_noise_scales_with_slice_thickness_and_can_be_left_out():
    noise_sd = {}
    for dz, shape in ((1.0, (24, 24, 40)), (2.5, (24, 24, 16))):
        noisy = make_realistic_phantom(5, shape, spacing=(1.0, 1.0, dz), case=2)
        clean = make_realistic_phantom(5, shape, spacing=(1.0, 1.0, dz), case=2, ct_noise=False)
        for key in noisy:  # only the CT differs
            if key != "ct":
                np.testing.assert_array_equal(noisy[key], clean[key])
        body = noisy["mask"] > 0  # no clipping at -1024 there
        noise_sd[dz] = float((noisy["ct"] - clean["ct"])[body].std())
    # 3-6 HU at 5 mm, times sqrt(5 mm / slice thickness).
    assert 3 * np.sqrt(5) * 0.95 < noise_sd[1.0] < 6 * np.sqrt(5) * 1.05
    assert noise_sd[1.0] / noise_sd[2.5] == pytest.approx(np.sqrt(2.5), rel=0.05)


def test_realistic_partial_volume_and_spacing():
    a = np.arange(4 * 2 * 5, dtype=np.float32).reshape(4, 2, 5)
    np.testing.assert_allclose(_average_down(a, (2, 2, 5)), [[[a[:2].mean()]], [[a[2:].mean()]]])
    assert _render_factors((1.0, 1.0, 1.0)) == (2, 2, 2)
    assert _render_factors((1.0, 1.0, 2.5)) == (2, 2, 5)
    thick = make_realistic_phantom(3, (32, 32, 16), spacing=(1.0, 1.0, 2.5))
    np.testing.assert_allclose(np.diag(thick["affine"])[:3], (1.0, 1.0, 2.5))
    # Partial volume: the skull mixes with its neighbours, so CT takes values between soft
    # tissue and cortical bone that no single tissue has.
    ct, body = thick["ct"], thick["mask"] > 0
    assert np.mean((ct[body] > 150) & (ct[body] < 450)) > 0.01


def test_realistic_anatomy_varies_between_cases(realistic):
    other = make_realistic_phantom(7, REAL_SHAPE, case=1)
    a, b = realistic["mask"] > 0, other["mask"] > 0
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) < 0.97
    bone = [(p["tissue"] == REAL_TISSUES["bone"]).sum() for p in (realistic, other)]
    assert bone[0] != bone[1]
    again = make_realistic_phantom(7, REAL_SHAPE, case=0)
    for key in realistic:
        np.testing.assert_array_equal(realistic[key], again[key])


@pytest.mark.parametrize("layout", ["brats", "synthrad"])
def test_realistic_layouts_are_discovered(tmp_path, layout):
    write_phantom_dataset(
        tmp_path / "d",
        layout,
        cases=2,
        shape=(24, 24, 16),
        kind="realistic",
        spacing=(1.0, 1.0, 2.5),
    )
    cases = discover_cases(tmp_path / "d")
    assert len(cases) == 2 and {c.layout for c in cases} == {layout}
    vol = read_volume(next(iter(cases[0].paths.values())))
    assert vol.shape == (24, 24, 16)
    np.testing.assert_allclose(np.linalg.norm(vol.affine[:3, :3], axis=0), (1.0, 1.0, 2.5))


@pytest.mark.parametrize("kwargs", [dict(kind="fancy"), dict(spacing=(1.0, 0.0, 1.0))])
def test_bad_kind_or_spacing_raise_input_error(tmp_path, kwargs):
    with pytest.raises(InputError):
        write_phantom_dataset(tmp_path / "out", cases=1, shape=(16, 16, 16), **kwargs)
    assert not (tmp_path / "out").exists()


def test_realistic_multislice_moves_and_dims_the_second_package_only():
    """Interleaved 2D stacks (t1n, t2w, t2f by default): every second slice cuts a displaced
    head with 2-8 % less signal; the first package, the 3D t1c, the CT and the labels are the
    bytes of an all-3D acquisition."""
    moved = make_realistic_phantom(7, REAL_SHAPE, case=1)
    still = make_realistic_phantom(7, REAL_SHAPE, case=1, multislice=())
    assert MULTISLICE_DEFAULT == ("t1n", "t2w", "t2f")
    for key in ("t1c", "ct", "tissue", "seg", "brain", "mask"):
        np.testing.assert_array_equal(moved[key], still[key])
    body = moved["mask"] > 0
    for mod in MULTISLICE_DEFAULT:
        np.testing.assert_array_equal(moved[mod][:, :, 0::2], still[mod][:, :, 0::2])
        assert not np.array_equal(moved[mod][:, :, 1::2], still[mod][:, :, 1::2])
        # cross-talk: the second package's total signal 2-8 % lower (plus the noise floor)
        ratio = moved[mod][:, :, 1::2].sum() / still[mod][:, :, 1::2].sum()
        assert 0.9 < ratio < 0.985, (mod, ratio)
        # motion: neighbouring slices disagree more than in a 3D acquisition, relative to the
        # in-plane differences
        dz = [np.abs(np.diff(p[mod], axis=2))[body[:, :, 1:]].mean() for p in (moved, still)]
        dx = [np.abs(np.diff(p[mod], axis=0))[body[1:]].mean() for p in (moved, still)]
        assert dz[0] / dx[0] > 1.05 * dz[1] / dx[1], (mod, dz, dx)


def test_realistic_multislice_choice_and_bad_names(tmp_path):
    spin_echo = make_realistic_phantom(3, (24, 24, 20), case=0, multislice=("t1c",))
    gradient_echo = make_realistic_phantom(3, (24, 24, 20), case=0, multislice=())
    assert not np.array_equal(spin_echo["t1c"], gradient_echo["t1c"])
    np.testing.assert_array_equal(spin_echo["t2w"], gradient_echo["t2w"])
    with pytest.raises(InputError, match="t3w"):
        make_realistic_phantom(3, (24, 24, 20), multislice=("t3w",))
    # The dataset writer: the marker records the choice (the synthrad MR is the t1c, so only
    # its MR changes); the basic kind has no motion.
    for name, choice in (("se", ("t1c",)), ("ge", None)):
        write_phantom_dataset(
            tmp_path / name,
            "synthrad",
            cases=1,
            shape=(24, 24, 20),
            kind="realistic",
            multislice=choice,
        )
    se, ge = file_bytes(tmp_path / "se"), file_bytes(tmp_path / "ge")
    assert json.loads(se[MARKER_NAME])["multislice"] == ["t1c"]
    assert json.loads(ge[MARKER_NAME])["multislice"] == list(MULTISLICE_DEFAULT)
    case = f"Task1/brain/{synthrad_case_id(0)}"
    assert se[f"{case}/mr.nii.gz"] != ge[f"{case}/mr.nii.gz"]
    assert se[f"{case}/ct.nii.gz"] == ge[f"{case}/ct.nii.gz"]
    with pytest.raises(InputError, match="--kind realistic"):
        write_phantom_dataset(tmp_path / "b", cases=1, shape=(16, 16, 16), multislice=("t1n",))
    with pytest.raises(InputError, match="t3w"):
        write_phantom_dataset(
            tmp_path / "c", cases=1, shape=(16, 16, 16), kind="realistic", multislice=("t3w",)
        )
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
