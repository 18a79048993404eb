"""lift3d.report: figures, and the HTML page built from a tiny run + evaluation folder."""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lift3d.cli import main
from lift3d.constants import PHANTOM_NOTE as PHANTOM_LABEL
from lift3d.data.volume import Volume, write_volume
from lift3d.errors import InputError
from lift3d.report import figures as F
from lift3d.report.html import build_report

SHAPE = (6, 5, 8)  # (X, Y, Z), RAS
ERROR_Z = 3  # slice with the injected error


class PageParser(HTMLParser):
    """Collects images (alt, src), headings and table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str]] = []
        self.headings: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._tag: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append((attrs.get("alt", ""), attrs.get("src", "")))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        self._tag = tag

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None
        self._tag = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif self._tag in ("h2", "h3"):
            self.headings.append(data.strip())


def write(array: np.ndarray, path: Path, affine=None) -> str:
    write_volume(
        Volume(
            array.astype(np.float32), np.diag([1.0, 1.0, 2.5, 1.0]) if affine is None else affine
        ),
        path,
    )
    return str(path)


def make_eval(root: Path, label: str, error: float, phantom: bool = True) -> Path:
    """An evaluation folder as `lift3d evaluate` writes it, with one case on disk."""
    rng = np.random.default_rng(0)
    ref = rng.random(SHAPE)
    pred = ref.copy()
    pred[:, :, ERROR_Z] += error  # the worst slice along z
    vols = root / "vols" / label
    vols.mkdir(parents=True)
    case = {
        "psnr": 30.0 - error,
        "ssim": 0.9,
        "pred": write(pred, vols / "pred.nii.gz"),
        "ref": write(ref, vols / "ref.nii.gz"),
        "source": write(ref[::-1], vols / "src.nii.gz"),
        "mask": None,
    }
    out = root / label
    out.mkdir()
    summary = {
        "task": "missing",
        "label": label,
        "pred_dir": str(vols),
        "ref_dir": str(vols),
        "data": str(root / "data"),
        "phantom": phantom,
        "machine": "test-host (cpu)",
        "lift3d_version": "0.1.0",
        "cases": {"case-001": case},
        "summary": {"psnr": 30.0 - error, "psnr_std": 0.5, "ssim": 0.9, "n_cases": 1},
    }
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def make_run(root: Path) -> Path:
    run = root / "run"
    (run / "logs").mkdir(parents=True)
    lines = [
        json.dumps({"step": s, "loss": 1.0 / (s + 1), "lr": 1e-3, "seconds": 0.1})
        for s in range(10)
    ]
    (run / "logs" / "translator.jsonl").write_text("\n".join(lines) + '\n{"step": 10, "lo')
    (run / "logs" / "translator_val.jsonl").write_text(json.dumps({"step": 9, "psnr": 21.5}) + "\n")
    (run / "run.json").write_text(
        json.dumps({"task": "translate", "subtask": "missing", "host": "h", "device": "cpu"})
    )
    (run / "config.yaml").write_text("train:\n  max_steps: 10\n")
    return run


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text())
    return parser


def decode_png(src: str) -> np.ndarray:
    import base64

    assert src.startswith("data:image/png;base64,")
    data = base64.b64decode(src.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(data)))


def test_slice_error_profile_and_worst_slices():
    ref = np.zeros(SHAPE)
    pred = ref.copy()
    pred[:, :, ERROR_Z] = 2.0
    pred[1, :, :] += 0.5
    profile = F.slice_error_profile(pred, ref)
    assert profile.shape == (SHAPE[2],) and int(np.argmax(profile)) == ERROR_Z
    assert profile[0] == pytest.approx(0.5 / SHAPE[0])
    assert F.worst_slices(np.abs(pred - ref)) == (1, 0, ERROR_Z)
    mask = np.zeros(SHAPE, bool)
    mask[2:4] = True
    masked = F.slice_error_profile(pred, ref, mask)
    assert masked[0] == 0.0 and masked[ERROR_Z] == 2.0


def test_load_ras_reorients(tmp_path):
    """An LPS file shows in RAS: voxel i = 1 of an LPS x axis of 6 is RAS x = 4."""
    arr = np.zeros(SHAPE, np.float32)
    arr[1] = 1.0
    path = write(arr, tmp_path / "lps.nii.gz", affine=np.diag([-1.0, -1.0, 2.5, 1.0]))
    ras, spacing = F.load_ras(path)
    assert spacing == pytest.approx((1.0, 1.0, 2.5))
    assert F.worst_slices(ras)[0] == SHAPE[0] - 1 - 1


def test_report_from_run_with_two_evaluations(tmp_path):
    run = make_run(tmp_path)
    make_eval(run / "eval", "mixer", error=0.2)
    make_eval(run / "eval", "no-mixer", error=0.6)
    out = build_report(run, tmp_path / "out" / "report.html")
    page = parse(out)
    text = out.read_text()

    # figures: one tri-planar view per variant, the z profile, the training curves
    alts = [alt for alt, _ in page.images]
    assert sum(a.startswith("tri-planar") for a in alts) == 2
    assert "mean error per slice along z" in alts and "training loss curves" in alts
    for _, src in page.images:
        image = decode_png(src)
        assert image.ndim == 3 and image.shape[0] > 50 and image.std() > 0
    pngs = sorted(p.name for p in (tmp_path / "out" / "report_figures").glob("*.png"))
    assert len(pngs) == len(page.images) == 4

    # metric table: variants side by side, mean ± std
    metrics = next(t for t in page.tables if t[0][0] == "metric")
    assert metrics[0] == ["metric", "mixer", "no-mixer"]
    rows = {r[0]: r[1:] for r in metrics[1:]}
    assert rows["psnr"] == ["29.8 ± 0.5", "29.4 ± 0.5"]
    assert rows["n_cases"] == ["1", "1"]
    # provenance: data labelled phantom, machine named; phantom banner shown
    prov = next(t for t in page.tables if t[0][0] == "variant")
    assert any("[PHANTOM]" in r[2] and r[4] == "test-host (cpu)" for r in prov[1:])
    assert PHANTOM_LABEL in text
    # the worst-error slice found is where the error was put
    worst = re.findall(r"worst-error slices = \((\d+), (\d+), (\d+)\)", text)
    assert [int(w[2]) for w in worst] == [ERROR_Z, ERROR_Z]
    assert "Training curves (logs/*.jsonl)" in page.headings
    logs = next(t for t in page.tables if t[0][0] == "log")
    assert ["translator", "10", "9", "0.1"] in logs


def test_run_without_evaluations_still_gets_curves(tmp_path):
    run = make_run(tmp_path)
    out = build_report(run, tmp_path / "r.html")
    page = parse(out)
    assert [alt for alt, _ in page.images] == ["training loss curves"]
    assert "Metrics (lift3d evaluate)" not in page.headings
    assert PHANTOM_LABEL not in out.read_text()


def test_report_rejects_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no summary.json"):
        build_report(tmp_path / "empty", tmp_path / "r.html")


def test_cli_report(tmp_path, capsys):
    ev = make_eval(tmp_path, "only", error=0.3, phantom=False)
    out = tmp_path / "page.html"
    assert main(["report", str(ev), "--out", str(out)]) == 0
    assert "report:" in capsys.readouterr().out
    page = parse(out)
    assert len(page.images) == 2  # tri-planar + z profile
    assert main(["report", str(ev), "--out", str(out)]) == 2  # exists, no --overwrite
    assert main(["report", str(ev), "--out", str(out), "--overwrite"]) == 0
    assert main(["report", str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_missing_modality_eval_uses_sibling_input_and_stored_profile(tmp_path):
    """BraSyn-style summary: no `source`, the input is another modality beside the reference;
    the z profile comes from evaluate's per-case `z_profile`."""
    rng = np.random.default_rng(1)
    case_dir = tmp_path / "data" / "C1"
    case_dir.mkdir(parents=True)
    ref = rng.random(SHAPE)
    paths = {
        m: write(ref * (i + 1), case_dir / f"C1-{m}.nii.gz") for i, m in enumerate(("t1n", "t2f"))
    }
    pred = write(ref + 0.1, tmp_path / "pred.nii.gz")
    profile = [None] + [0.1] * (SHAPE[2] - 1)
    case = {"psnr": 20.0, "pred": pred, "ref": paths["t2f"], "mask": None, "source": None}
    case.update(modality="t2f", z_profile=profile)
    ev = tmp_path / "ev"
    ev.mkdir()
    summary = {"task": "missing", "label": "m", "phantom": False, "cases": {"C1": case}}
    summary["summary"] = {"psnr": 20.0, "n_cases": 1}
    (ev / "summary.json").write_text(json.dumps(summary))
    out = build_report(ev, tmp_path / "r.html")
    text = out.read_text()
    assert "evaluate z_profile" in text
    figs = sorted((tmp_path / "r_figures").glob("triplanar_*.png"))
    assert len(figs) == 1
    # four rows: the input row is the sibling t1n
    from lift3d.report.html import Evaluation, _case_arrays

    panels, _, _ = _case_arrays(Evaluation(ev / "summary.json", "m", summary), "C1")
    assert list(panels) == ["input (t1n)", "output", "target", "|error|"]
    np.testing.assert_allclose(panels["input (t1n)"], ref, rtol=1e-5)


def test_run_on_phantom_data_is_labelled(tmp_path):
    from lift3d.data.synthetic import MARKER_NAME

    data = tmp_path / "phantom"
    data.mkdir()
    (data / MARKER_NAME).write_text("{}")
    run = make_run(tmp_path)
    (run / "config.yaml").write_text(
        f"data:\n  root: {data}\nmodel:\n  encoder_objective: denoise\n"
    )
    text = build_report(run, tmp_path / "r.html").read_text()
    assert PHANTOM_LABEL in text
    prov = next(t for t in parse(tmp_path / "r.html").tables if t[0][0] == "variant")
    assert prov[1][2].endswith("[PHANTOM]") and prov[1][3] == "model.encoder_objective=denoise"


def test_generation_floor_and_montage_in_the_report(tmp_path):
    """A generation summary with a real-vs-real floor: its table (ratio, or n/a and the
    difference where the floor is below zero) and the montage evaluate wrote beside it."""
    out = tmp_path / "gen_eval"
    out.mkdir()
    fig = F.montage_figure(
        {"real (floor)": [np.zeros((6, 6, 6))], "generated": [np.ones((6, 6, 6))]}
    )
    F.write_png(F.figure_png(fig), out / "real_vs_generated.png")
    summary = {
        "fid_axial": 6.0,
        "kid_axial": 0.1,
        "n_cases": 2,
        "floor": {
            "dir": str(tmp_path / "train"),
            "n": 2,
            "subsampled": {"set": "floor", "from": 5, "to": 2, "seed": 0},
            "scores": {"fid_axial": 2.0, "kid_axial": -0.01},
            "generated_scores": "summary (all generated volumes)",
            "difference": {"fid_axial": 4.0, "kid_axial": 0.11},
            "notes": {"kid_axial": "floor KID -0.01 < 0: read the difference"},
        },
        "ratio_to_floor": {"fid_axial": 3.0, "kid_axial": None},
        # written elsewhere first, then the folder moved: found by name beside the summary
        "montage": {"files": ["/elsewhere/real_vs_generated.png"], "rows": {"generated": ["s0"]}},
    }
    data = {"task": "generate", "label": "lift", "phantom": False, "cases": {}, "summary": summary}
    (out / "summary.json").write_text(json.dumps(data))
    page = parse(build_report(out, tmp_path / "report.html"))
    assert "Real-vs-real floor (lift3d evaluate --floor)" in page.headings
    table = next(
        t for t in page.tables if t and t[0][:4] == ["score", "generated", "floor", "ratio"]
    )
    rows = {r[0]: r for r in table[1:]}
    assert rows["fid_axial"][1:5] == ["6", "2", "3.00×", "4"]
    assert rows["kid_axial"][3] == "n/a" and rows["kid_axial"][4] == "0.11"
    assert "read the difference" in rows["kid_axial"][5]
    assert "Real beside generated slices" in page.headings
    alt, src = next(i for i in page.images if i[0].startswith("real and generated slices"))
    assert decode_png(src).shape[1] > decode_png(src).shape[0]
    assert (tmp_path / "report_figures" / "montage_lift.png").is_file()
