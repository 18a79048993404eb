"""The real-vs-real floor of generation scores: known answers (a set against itself), ratios at
zero and negative floors, equal counts, the montage, the floor block of an evaluation and its
errors."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from matplotlib.image import imread
from PIL import Image

from lift3d.errors import InputError
from lift3d.evaluation.encoder import EvalDescriptor, load_eval_encoder
from lift3d.evaluation.floor import (
    FLOOR_ZERO,
    compare_to_floor,
    floor_metric_names,
    generated_subsets,
    match_counts,
    montage_paths,
    write_montage,
)
from lift3d.evaluation.generation import distribution_metrics, evaluate_generation, set_scores
from lift3d.evaluation.tables import compare_summaries, format_summary
from lift3d.evaluation.volumes import prepare_volume, read_ras, reference_files
from lift3d.models.encoder import SliceEncoder

PLANES = ("axial", "coronal", "sagittal")


def smooth_volumes(n: int, seed: int, size: int = 16) -> list[np.ndarray]:
    """Gaussian blobs at random centres and widths, (size,) * 3 in [0, 1]."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, size)] * 3, indexing="ij")
    out = []
    for _ in range(n):
        c, r = rng.uniform(-0.3, 0.3, 3), rng.uniform(0.4, 0.7)
        blob = np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / r**2)
        out.append(blob.astype(np.float32))
    return out


def write_nifti(array: np.ndarray, path) -> None:
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), str(path))


def test_a_set_against_itself_is_a_zero_floor():
    torch.manual_seed(0)
    enc = EvalDescriptor(SliceEncoder(1, (8, 16), pool=1, objective="masked").eval())
    vols = smooth_volumes(4, 0)
    floor = distribution_metrics(vols, vols, enc, bootstrap=0, kid_subsets=5)
    for plane in PLANES:
        assert floor[f"fid_{plane}"] == pytest.approx(0.0, abs=1e-6)
        assert floor[f"increment_distance_{plane}"] == pytest.approx(0.0, abs=1e-6)
        # Unbiased KID: the within-set means leave the diagonal out, the cross mean keeps it.
        assert floor[f"kid_{plane}"] <= 0
    assert floor["histogram_distance"] == pytest.approx(0.0, abs=1e-12)
    gen = distribution_metrics(smooth_volumes(4, 1), vols, enc, bootstrap=0, kid_subsets=5)
    names = floor_metric_names(gen)
    assert {f"fid_{p}" for p in PLANES} <= set(names) and "histogram_distance" in names
    out = compare_to_floor(gen, floor, names)
    for plane in PLANES:  # no ratio to a zero floor; the difference is the generated score
        assert out["ratio"][f"fid_{plane}"] is None
        assert out["difference"][f"fid_{plane}"] == pytest.approx(gen[f"fid_{plane}"], abs=1e-6)
        assert "ratio has no meaning" in out["notes"][f"fid_{plane}"]


def test_ratios_at_positive_zero_and_negative_floors():
    gen = {
        "fid_axial": 6.0,
        "kid_axial": 0.1,
        "kid_coronal": 0.05,
        "kid_sagittal": 0.04,
        "histogram_distance": 0.5,
        "increment_distance": 0.3,
        "fid_medicalnet": 2.0,
        "mmd_medicalnet_std": 0.1,  # a spread, not a score
        "fid_radimagenet": "needs --radimagenet PATH",  # no weights: no floor
    }
    floor = {
        "fid_axial": 2.0,
        "kid_axial": -0.01,
        "kid_coronal": 0.0,
        "kid_sagittal": 0.02,
        "histogram_distance": 0.5,
        "increment_distance": FLOOR_ZERO / 2,  # float noise of a set against itself
        "fid_medicalnet": 4.0,
    }
    names = floor_metric_names(gen)
    assert "fid_medicalnet" in names and "fid_radimagenet" not in names
    assert not any(n.endswith("_std") for n in names)
    out = compare_to_floor(gen, floor, names)
    ratio, diff, notes = out["ratio"], out["difference"], out["notes"]
    assert ratio["fid_axial"] == pytest.approx(3.0) and ratio["kid_sagittal"] == pytest.approx(2.0)
    assert ratio["histogram_distance"] == pytest.approx(1.0)
    assert ratio["fid_medicalnet"] == pytest.approx(0.5)
    assert ratio["kid_axial"] is None and diff["kid_axial"] == pytest.approx(0.11)
    assert "KID" in notes["kid_axial"] and "< 0" in notes["kid_axial"]
    assert ratio["kid_coronal"] is None and diff["kid_coronal"] == pytest.approx(0.05)
    assert "zero" in notes["kid_coronal"]
    assert ratio["increment_distance"] is None
    assert set(notes) == {"kid_axial", "kid_coronal", "increment_distance"}


def test_match_counts_subsamples_the_larger_set_seeded():
    g, f, note = match_counts(4, 4, seed=0)
    assert g == f == [0, 1, 2, 3] and note is None
    g, f, note = match_counts(10, 4, seed=3)
    assert f == [0, 1, 2, 3] and len(g) == 4 and g == sorted(set(g)) and max(g) < 10
    assert note == {"set": "generated", "from": 10, "to": 4, "seed": 3}
    assert match_counts(10, 4, seed=3)[0] == g  # same seed, same subset
    g, f, note = match_counts(3, 7, seed=0)
    assert g == [0, 1, 2] and len(f) == 3 and note["set"] == "floor"


def test_generated_subsets_are_disjoint_and_start_with_the_matched_one():
    first = match_counts(20, 6, seed=1)[0]
    subsets = generated_subsets(20, first, max_subsets=6, seed=1)
    assert subsets[0] == first and len(subsets) == 3  # 20 // 6 fit
    assert all(len(s) == 6 and s == sorted(s) for s in subsets)
    flat = [i for s in subsets for i in s]
    assert len(set(flat)) == len(flat) and max(flat) < 20
    assert generated_subsets(20, first, max_subsets=6, seed=1) == subsets  # seeded
    assert len(generated_subsets(20, first, max_subsets=2, seed=1)) == 2
    assert generated_subsets(6, list(range(6))) == [list(range(6))]


def test_montage_is_written_and_decodes(tmp_path):
    rows = {"real (floor)": smooth_volumes(3, 0), "generated": smooth_volumes(2, 1, size=12)}
    paths = montage_paths(tmp_path / "out", tmp_path / "j" / "gen.json")
    assert [p.name for p in paths] == ["real_vs_generated.png", "gen_real_vs_generated.png"]
    written = write_montage(rows, paths, "title", overwrite=False)
    for path in written:
        with Image.open(path) as img:
            img.load()
            width, height = img.size
        assert width > 2 * height  # 2 rows, 3 planes x 3 volumes
        pixels = imread(path)
        assert pixels.ndim == 3 and pixels.std() > 0.05  # not a blank page
    with pytest.raises(InputError, match="exists"):
        write_montage(rows, paths[:1], "title", overwrite=False)


def folders(tmp_path, n_gen=4, n_ref=4, floor_vols=None):
    """Generated, reference and floor folders of NIfTI volumes (16^3, identity affine)."""
    out = {}
    for name, vols, scale in (
        ("pred", smooth_volumes(n_gen, 1), 500),
        ("ref", smooth_volumes(n_ref, 0), 800),
        ("floor", floor_vols if floor_vols is not None else smooth_volumes(3, 2), 700),
    ):
        out[name] = tmp_path / name
        out[name].mkdir()
        for i, v in enumerate(vols):
            write_nifti(v * scale, out[name] / f"{name}_{i}.nii.gz")
    return out


def test_evaluate_generation_with_floor(tmp_path):
    dirs = folders(tmp_path)  # 4 generated, 3 floor volumes
    enc = tmp_path / "enc.safetensors"
    kw = {"eval_shape": (16, 16, 16), "max_slices": 8, "diversity_pairs": 3}
    montage = [tmp_path / "m" / "real_vs_generated.png"]
    result = evaluate_generation(
        dirs["pred"],
        dirs["ref"],
        floor_dir=dirs["floor"],
        montage=montage,
        encoder_steps=2,
        save_encoder=enc,
        **kw,
    )
    s = result["summary"]
    floor, ratio = s["floor"], s["ratio_to_floor"]
    assert floor["n"] == 3 and floor["n_files"] == 3 and len(floor["generated_cases"]) == 3
    assert floor["subsampled"] == {"set": "generated", "from": 4, "to": 3, "seed": 0, "subsets": 1}
    matched = floor["generated_scores"]  # the ratios use the 3 matched generated volumes
    for name in (*(f"{m}_{p}" for m in ("fid", "kid") for p in PLANES), "histogram_distance"):
        assert name in ratio and name in floor["scores"] and name in matched
        if ratio[name] is None:
            assert name in floor["notes"]
        else:
            assert ratio[name] == pytest.approx(matched[name] / floor["scores"][name])
    assert "increment_distance" in ratio and "msssim_diversity" in ratio
    assert s["montage"]["files"] == [str(montage[0].resolve())]
    assert list(s["montage"]["rows"]) == ["real (floor)", "generated"]
    with Image.open(montage[0]) as img:
        img.load()
    table = format_summary({"summary": s, "label": "x", "task": "generate"})
    assert "ratio to floor" in table and "generated set was subsampled 4 -> 3" in table
    side = compare_summaries({"summary": s}, {"summary": s}, ("a", "b"))
    assert "fid_axial / floor" in side

    # Known answer: a copy of the references as the floor scores FID 0, so no ratio.
    same = tmp_path / "refcopy"
    shutil.copytree(dirs["ref"], same)
    again = evaluate_generation(dirs["pred"], dirs["ref"], floor_dir=same, encoder_path=enc, **kw)[
        "summary"
    ]
    assert again["floor"]["subsampled"] is None
    assert again["floor"]["generated_scores"] == "summary (all generated volumes)"
    for plane in PLANES:
        assert again["floor"]["scores"][f"fid_{plane}"] == pytest.approx(0.0, abs=1e-6)
        assert again["ratio_to_floor"][f"fid_{plane}"] is None
        assert again["floor"]["difference"][f"fid_{plane}"] == pytest.approx(
            again[f"fid_{plane}"], abs=1e-6
        )
        assert again["floor"]["scores"][f"kid_{plane}"] <= 0
        assert again["ratio_to_floor"][f"kid_{plane}"] is None
    assert "montage" not in again  # only written where asked
    assert "Δ" in format_summary({"summary": again, "label": "x", "task": "generate"})


def test_floor_note_warns_when_the_references_are_few():
    from lift3d.evaluation.tables import FEW_REFERENCES, floor_lines

    summary = {"floor": {"n": 16, "dir": "train"}, "ratio_to_floor": {"fid_axial": 2.0}}
    few = floor_lines({**summary, "n_reference": 12})
    assert f"few references (12 < {FEW_REFERENCES})" in few[1]
    enough = floor_lines({**summary, "n_reference": 48})
    assert len(enough) == 1 and "48 references" in enough[0]
    assert not any("few references" in line for line in enough)


def test_floor_ratio_uses_the_mean_over_disjoint_generated_subsets(tmp_path):
    dirs = folders(tmp_path, n_gen=7)  # 7 generated, 3 floor volumes: 2 subsets of 3
    enc = tmp_path / "enc.safetensors"
    kw = {"eval_shape": (16, 16, 16), "max_slices": 8, "diversity_pairs": 3}
    s = evaluate_generation(
        dirs["pred"], dirs["ref"], floor_dir=dirs["floor"], encoder_steps=2, save_encoder=enc, **kw
    )["summary"]
    floor = s["floor"]
    assert floor["subsampled"]["subsets"] == 2
    subsets = floor["generated_subsets"]
    assert len(subsets) == 2 and subsets[0] == floor["generated_cases"]
    assert not set(subsets[0]) & set(subsets[1]) and all(len(x) == 3 for x in subsets)
    # The same numbers from the subsets scored one by one.
    model, _ = load_eval_encoder(enc)
    ref = [prepare_volume(read_ras(f), (16, 16, 16)) for _, f in reference_files(dirs["ref"], None)]
    per = []
    for names in subsets:
        vols = [prepare_volume(read_ras(dirs["pred"] / f"{n}.nii.gz"), (16, 16, 16)) for n in names]
        per.append(set_scores(vols, ref, model, {}, seed=0, max_slices=8, diversity_pairs=3))
    for name in ("fid_axial", "fid_sagittal", "histogram_distance"):
        mean = (per[0][name] + per[1][name]) / 2
        assert floor["generated_scores"][name] == pytest.approx(mean, rel=1e-6)
        assert floor["generated_scores_std"][name] == pytest.approx(
            abs(per[0][name] - per[1][name]) / 2, rel=1e-6, abs=1e-12
        )
        assert s["ratio_to_floor"][name] == pytest.approx(mean / floor["scores"][name], rel=1e-6)
    # Diversity (costly, steadier) from the first subset only.
    assert floor["generated_scores"]["msssim_diversity"] == pytest.approx(
        per[0]["msssim_diversity"], rel=1e-6
    )
    assert "msssim_diversity" not in floor["generated_scores_std"]
    table = format_summary({"summary": s, "label": "x", "task": "generate"})
    assert "2 disjoint subsets of 3" in table


def test_floor_errors_name_the_folder(tmp_path):
    dirs = folders(tmp_path)
    kw = {"eval_shape": (16, 16, 16), "encoder_steps": 1}
    run = lambda floor: evaluate_generation(dirs["pred"], dirs["ref"], floor_dir=floor, **kw)  # noqa: E731
    with pytest.raises(InputError, match="floor folder not found") as exc:
        run(tmp_path / "nope")
    assert exc.value.path == tmp_path / "nope"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="floor folder is empty"):
        run(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("no volumes")
    with pytest.raises(InputError, match="--floor") as exc:
        run(tmp_path / "text")
    assert "text" in str(exc.value)
    with pytest.raises(InputError, match="second real set, not the reference"):
        run(dirs["ref"])
    one = tmp_path / "one"
    one.mkdir()
    write_nifti(smooth_volumes(1, 5)[0], one / "a.nii.gz")
    with pytest.raises(InputError, match="at least 2"):
        run(one)
    small = tmp_path / "small"
    small.mkdir()
    for i, v in enumerate(smooth_volumes(2, 5, size=12)):
        write_nifti(v, small / f"s{i}.nii.gz")
    with pytest.raises(InputError, match=r"grid") as exc:
        run(small)
    assert exc.value.path.parent == small
