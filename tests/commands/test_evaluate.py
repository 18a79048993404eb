"""`lift3d evaluate`: pairing, per-case metrics, CSV/JSON contract, tables, bad input."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from lift3d import evaluation as ev
from lift3d.cli import main
from lift3d.data.discovery import discover_cases
from lift3d.data.volume import Volume, read_volume, write_volume
from lift3d.metrics import image

COHERENCE = ev.COHERENCE_METRICS


def write_sct(pred_dir, case, noise=50.0, seed=0):
    ct = read_volume(case.paths["ct"])
    rng = np.random.default_rng(seed)
    sct = ct.array.astype(np.float32) + rng.normal(0, noise, ct.shape).astype(np.float32)
    return write_volume(ct.with_array(sct), pred_dir / case.case_id / "sct.nii.gz")


@pytest.fixture(scope="module")
def synthrad_cases(phantom_synthrad_dir):
    return discover_cases(phantom_synthrad_dir, validate=False)


@pytest.fixture(scope="module")
def brats_cases(phantom_brats_dir):
    return discover_cases(phantom_brats_dir, validate=False)


def test_mr2ct_end_to_end(tmp_path, phantom_synthrad_dir, synthrad_cases, capsys):
    pred = tmp_path / "pred"
    for n, case in enumerate(synthrad_cases[:3]):
        write_sct(pred, case, noise=20.0 * (n + 1), seed=n)
    out, js = tmp_path / "eval", tmp_path / "extra" / "e.json"
    argv = ["evaluate", "--task", "mr2ct", "--pred", str(pred), "--ref", str(phantom_synthrad_dir)]
    argv += ["--out", str(out), "--json", str(js), "--label", "mixer"]
    # the fourth reference case has no prediction: an error, nothing written ...
    absent = synthrad_cases[3].case_id
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "1 reference case(s) have no prediction" in err and absent in err
    assert "--allow-missing" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not js.exists()
    # ... unless asked for: the others are scored and the summary lists the missing case
    assert main([*argv, "--allow-missing"]) == 0
    printed = capsys.readouterr().out
    assert "PHANTOM data" in printed and "mae" in printed and "±" in printed
    assert f"1 reference case(s) without a prediction, not scored: {absent}" in printed
    # the evaluation's report is built and its path printed at the end
    assert printed.strip().splitlines()[-1] == f"report: {out / 'report.html'}"
    assert "<img" in (out / "report.html").read_text()
    result = json.loads((out / "summary.json").read_text())
    assert json.loads(js.read_text()) == result
    for key in (
        "task",
        "label",
        "pred_dir",
        "ref_dir",
        "data",
        "phantom",
        "machine",
        "lift3d_version",
        "cases",
        "summary",
    ):
        assert key in result, key
    assert result["task"] == "mr2ct" and result["label"] == "mixer" and result["phantom"] is True
    assert set(result["cases"]) == {c.case_id for c in synthrad_cases[:3]}
    for case in synthrad_cases[:3]:
        entry = result["cases"][case.case_id]
        # the metrics are those of this case's own ct/mask: pairing is right
        sct = read_volume(pred / case.case_id / "sct.nii.gz").array
        ct = read_volume(case.paths["ct"]).array
        mask = read_volume(case.paths["mask"]).array
        direct = image.synthrad_metrics(sct, ct, mask)
        for k in ("mae", "psnr", "ssim"):
            assert entry[k] == pytest.approx(direct[k], rel=1e-9)
        for k in COHERENCE:
            assert np.isfinite(entry[k])
        assert entry["ref"] == str(case.paths["ct"].resolve())
        assert entry["mask"] == str(case.paths["mask"].resolve())
        assert entry["source"] == str(case.paths["mr"].resolve())
        assert len(entry["z_profile"]) == ct.shape[2]  # phantom grid: axial = k
    # noisier predictions score worse
    maes = [result["cases"][c.case_id]["mae"] for c in synthrad_cases[:3]]
    assert maes == sorted(maes)
    summary = result["summary"]
    assert summary["n_cases"] == 3
    assert summary["missing_predictions"] == [absent] and summary["extra_predictions"] == []
    assert summary["mae"] == pytest.approx(np.mean(maes))
    assert summary["mae_std"] == pytest.approx(np.std(maes, ddof=1))
    rows = list(csv.DictReader((out / "cases.csv").open()))
    assert [r["case_id"] for r in rows] == sorted(result["cases"])
    assert float(rows[0]["psnr"]) == pytest.approx(result["cases"][rows[0]["case_id"]]["psnr"])


def test_user_data_is_not_labelled_phantom(tmp_path, phantom_synthrad_dir, synthrad_cases, capsys):
    case = synthrad_cases[0]
    ref = tmp_path / "data" / "Task1" / "brain" / case.case_id
    shutil.copytree(case.root, ref)  # without lift3d_phantom.json
    write_sct(tmp_path / "pred", case)
    assert (
        main(
            [
                "evaluate",
                "--task",
                "mr2ct",
                "--pred",
                str(tmp_path / "pred"),
                "--ref",
                str(tmp_path / "data"),
            ]
        )
        == 0
    )
    assert "PHANTOM" not in capsys.readouterr().out
    result = ev.evaluate_folder("mr2ct", tmp_path / "pred", tmp_path / "data", progress=False)
    assert result["phantom"] is False and result["data"] == "user data"


def run_bad(args, capsys):
    code = main(["evaluate", *map(str, args)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    return err


def test_bad_folders(tmp_path, phantom_synthrad_dir, synthrad_cases, capsys):
    base = ["--task", "mr2ct", "--out", tmp_path / "out"]
    err = run_bad([*base, "--pred", tmp_path / "nope", "--ref", phantom_synthrad_dir], capsys)
    assert "nope" in err and "not found" in err
    (tmp_path / "empty").mkdir()
    err = run_bad([*base, "--pred", tmp_path / "empty", "--ref", phantom_synthrad_dir], capsys)
    assert "empty" in err
    write_sct(tmp_path / "pred", synthrad_cases[0])
    err = run_bad([*base, "--pred", tmp_path / "pred", "--ref", tmp_path / "noref"], capsys)
    assert "noref" in err
    other = tmp_path / "other" / "1BZ999"
    other.mkdir(parents=True)
    (other / "sct.nii.gz").write_bytes(
        (tmp_path / "pred" / synthrad_cases[0].case_id / "sct.nii.gz").read_bytes()
    )
    err = run_bad([*base, "--pred", tmp_path / "other", "--ref", phantom_synthrad_dir], capsys)
    assert "no case in common" in err
    err = run_bad(["--task", "mr2ct", "--pred", tmp_path / "pred"], capsys)
    assert "--ref" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change", ["affine", "shape"])
def test_prediction_off_grid(tmp_path, phantom_synthrad_dir, synthrad_cases, capsys, change):
    pred = tmp_path / "pred"
    write_sct(pred, synthrad_cases[0])
    bad = read_volume(write_sct(pred, synthrad_cases[1]))
    if change == "affine":
        affine = bad.affine.copy()
        affine[0, 3] += 0.01  # 10 micrometres off: beyond the 1e-3 mm tolerance
        bad_vol = type(bad)(bad.array, affine)
    else:
        bad_vol = type(bad)(bad.array[:, :, :-1], bad.affine)
    bad_path = pred / synthrad_cases[1].case_id / "sct.nii.gz"
    write_volume(bad_vol, bad_path)
    err = run_bad(
        [
            "--task",
            "mr2ct",
            "--pred",
            pred,
            "--ref",
            phantom_synthrad_dir,
            "--out",
            tmp_path / "out",
            "--json",
            tmp_path / "e.json",
            "--allow-missing",
        ],
        capsys,
    )
    assert str(bad_path) in err and ("grid" in err or "shape" in err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "e.json").exists()


def test_existing_output_needs_overwrite(tmp_path, phantom_synthrad_dir, synthrad_cases, capsys):
    write_sct(tmp_path / "pred", synthrad_cases[0])
    (tmp_path / "e.json").write_text("{}")
    args = [
        "--task",
        "mr2ct",
        "--pred",
        tmp_path / "pred",
        "--ref",
        phantom_synthrad_dir,
        "--json",
        tmp_path / "e.json",
        "--allow-missing",
    ]
    assert "--overwrite" in run_bad(args, capsys)
    assert main(["evaluate", *map(str, args), "--overwrite"]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["summary"]["n_cases"] == 1


def test_compare_summaries_known_values(tmp_path, capsys):
    a = {
        "label": "mixer",
        "phantom": True,
        "summary": {
            "zgrad_error": 1.0,
            "zgrad_error_std": 0.1,
            "psnr_axial": 30.0,
            "zgrad_ratio": 1.05,
            "kid_coronal": 0.5,
            "kid_coronal_std": 0.0,
            "n_cases": 4,
            "n_reference": 3,
        },
    }
    b = {
        "label": "no-mixer",
        "phantom": True,
        "summary": {
            "zgrad_error": 2.0,
            "zgrad_error_std": 0.2,
            "psnr_axial": 30.1,
            "zgrad_ratio": 1.6,
            "kid_coronal": 0.25,
            "kid_coronal_std": 0.0,
            "n_cases": 4,
            "n_reference": 3,
        },
    }
    rows = {r["metric"]: r for r in ev.comparison_rows(a, b, ("mixer", "no-mixer"))}
    assert set(rows) == {"zgrad_error", "psnr_axial", "zgrad_ratio", "kid_coronal"}
    assert rows["zgrad_error"]["diff"] == pytest.approx(1.0)
    assert rows["zgrad_error"]["rel_percent"] == pytest.approx(100.0)
    assert rows["zgrad_error"]["better"] == "mixer"  # lower is better
    assert rows["psnr_axial"]["better"] == "no-mixer"  # higher is better
    assert rows["zgrad_ratio"]["better"] == "mixer"  # closer to 1 is better
    table = ev.compare_summaries(a, b)
    assert "PHANTOM data" in table and "no-mixer - mixer" in table and "+100.0%" in table
    assert "1.000 ± 0.1000" in table and "0.5000 ±" not in table and "n_reference" not in table
    for name, data in (("a.json", a), ("b.json", b)):
        (tmp_path / name).write_text(json.dumps(data))
    assert main(["evaluate", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert "zgrad_error" in capsys.readouterr().out
    run_bad(["--compare", tmp_path / "a.json", tmp_path / "missing.json"], capsys)


def test_mask_name(tmp_path, phantom_brats_dir, brats_cases, capsys):
    case = brats_cases[0]
    ref = read_volume(case.paths["t2w"])
    noisy = ref.array + np.random.default_rng(2).normal(0, 40, ref.shape)
    write_volume(
        ref.with_array(noisy.astype(np.float32)),
        tmp_path / "pred" / case.case_id / f"{case.case_id}-t2w.nii.gz",
    )
    kw = {"progress": False, "allow_missing": True}
    whole = ev.evaluate_folder("missing", tmp_path / "pred", phantom_brats_dir, **kw)
    seg = ev.evaluate_folder("missing", tmp_path / "pred", phantom_brats_dir, mask_name="seg", **kw)
    entry = seg["cases"][case.case_id]
    assert entry["mask"] == str(case.paths["seg"].resolve())
    assert entry["mse"] != pytest.approx(whole["cases"][case.case_id]["mse"])
    err = run_bad(
        [
            "--task",
            "missing",
            "--pred",
            tmp_path / "pred",
            "--ref",
            phantom_brats_dir,
            "--mask-name",
            "nosuch",
            "--allow-missing",
        ],
        capsys,
    )
    assert "nosuch" in err


def test_generate_with_floor_end_to_end(tmp_path, phantom_brats_dir, brats_cases, capsys):
    """--floor on tiny phantoms: the floor and ratio blocks, the printed table, the montage
    beside the JSON and in the report, and one-line errors for a bad floor folder."""
    from PIL import Image

    from lift3d.data.synthetic import write_phantom_dataset
    from lift3d.evaluation.encoder import eval_encoder_for
    from lift3d.evaluation.volumes import prepare_volume, read_ras, reference_files

    pred = tmp_path / "generated"  # 4 noisy copies of the reference t1n: 'generated' volumes
    for n, case in enumerate(brats_cases):
        t1n = read_volume(case.paths["t1n"])
        noisy = t1n.array + np.random.default_rng(n).normal(0, 40, t1n.shape)
        write_volume(t1n.with_array(noisy.astype(np.float32)), pred / f"sample_{n:04d}.nii.gz")
    floor = tmp_path / "train"  # a second real set of 3 on the same grid
    write_phantom_dataset(floor, "brats", cases=3, shape=(32, 32, 32), seed=1)
    # A briefly trained evaluation encoder (the default trains for minutes).
    shape = (16, 16, 16)
    refs = reference_files(phantom_brats_dir, "t1n")
    vols = [prepare_volume(read_ras(f), shape) for _, f in refs]
    enc = tmp_path / "enc.safetensors"
    eval_encoder_for(
        vols, ref_dir=phantom_brats_dir, refs=refs, eval_shape=shape, steps=2, save_encoder=enc
    )
    out, js = tmp_path / "eval", tmp_path / "json" / "floor.json"
    base = ["evaluate", "--task", "generate", "--pred", str(pred), "--ref", str(phantom_brats_dir)]
    base += ["--eval-encoder", str(enc), "--eval-shape", "16", "16", "16", "--diversity-pairs", "3"]
    assert main([*base, "--floor", str(floor), "--out", str(out), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    assert "ratio to floor" in printed and "generated set was subsampled 4 -> 3" in printed
    row = next(line for line in printed.splitlines() if line.startswith("fid_coronal "))
    assert row.rstrip().endswith(("×", "n/a")) or "Δ" in row
    result = json.loads((out / "summary.json").read_text())
    summary = result["summary"]
    assert summary["floor"]["dir"] == str(floor.resolve()) and summary["floor"]["n"] == 3
    assert summary["floor"]["subsampled"]["set"] == "generated"
    assert len(summary["floor"]["floor_cases"]) == 3
    for plane in ("axial", "coronal", "sagittal"):
        for m in ("fid", "kid"):
            assert f"{m}_{plane}" in summary["ratio_to_floor"]
            assert np.isfinite(summary["floor"]["scores"][f"{m}_{plane}"])
    for path in (out / "real_vs_generated.png", js.parent / "floor_real_vs_generated.png"):
        assert str(path.resolve()) in summary["montage"]["files"] and f"wrote {path}" in printed
        with Image.open(path) as img:
            img.load()
    report = (out / "report.html").read_text()
    assert "Real-vs-real floor" in report and "Real beside generated slices" in report
    assert "real and generated slices" in report  # the montage, embedded

    # Bad floors: one line naming the path, exit 2, nothing written.
    bad = [*base, "--out", str(tmp_path / "bad")]
    err = run_bad([*bad[1:], "--floor", tmp_path / "nope"], capsys)
    assert "nope" in err and "floor folder not found" in err
    (tmp_path / "empty").mkdir()
    assert "floor folder is empty" in run_bad([*bad[1:], "--floor", tmp_path / "empty"], capsys)
    other = tmp_path / "other"
    other.mkdir()
    for n in range(2):  # real volumes on another grid
        t1n = read_volume(brats_cases[n].paths["t1n"])
        cut = Volume(np.ascontiguousarray(t1n.array[:, :, :24]), t1n.affine)
        write_volume(cut, other / f"o{n}.nii.gz")
    err = run_bad([*bad[1:], "--floor", other], capsys)
    assert str(other) in err and "grid" in err
    err = run_bad([*bad[1:], "--floor", phantom_brats_dir], capsys)
    assert "second real set" in err
    paired = ["--task", "mr2ct", "--pred", pred, "--ref", phantom_brats_dir, "--floor", floor]
    assert "--floor only applies to --task generate" in run_bad(paired, capsys)
    assert not (tmp_path / "bad").exists()
