"""Distribution metrics for unconditional 3D generation (LiFT, arXiv 2605.19060; DATA.md).

Generated volumes are compared with held-out real volumes, per plane, in the feature space of
an *evaluation encoder* that was not used in training: the same small convolutional autoencoder
class as the training encoder E (`lift3d.models.encoder.SliceEncoder`) but trained with the
*masked*-autoencoder objective (E is a denoising autoencoder by default) and another seed, on
slices of the reference volumes at evaluation time (or loaded from a file). Its identity
(objective, seed, steps, training data, SHA-256 of its weights) goes into every report.

Metrics (lower is better):

- ``fid_<plane>``: Frechet distance between Gaussian fits of slice features (Heusel et al. 2017).
- ``kid_<plane>``: kernel inception distance, unbiased MMD^2 with the cubic polynomial kernel
  ``k(x, y) = (x.y / F + 1)^3`` averaged over random subsets (Binkowski et al. 2018).
- ``increment_distance_<plane>``: Frechet distance between the distributions of feature
  increments ``f(slice m+1) - f(slice m)`` along the plane's axis, divided by the trace of the
  reference increments' covariance (scale-free); ``increment_distance`` is the mean over planes.
  Stacked independent slices have much larger increments than real anatomy.
- ``histogram_distance``: Wasserstein-1 distance between the foreground intensity histograms
  (64 bins on [0, 1]) of all generated and all reference volumes.

Descriptor and scale: each slice is described by the per-channel spatial mean *and* standard
deviation of every encoder scale (224 features for the default widths; ``descriptor:
"meanstd"`` in the identity). All features are centred on the reference mean and divided by ONE
global scale (the RMS of the centred reference features), so the polynomial kernel sees O(1)
values whatever the encoder's magnitude, while the encoder's own weighting of feature
dimensions is kept. (Earlier builds used the spatial mean only and z-scored every dimension;
the z-scoring blew up low-variance dimensions whose between-subject sampling noise then
dominated KID, and with the default encoder seed neither coronal nor sagittal KID could tell
real volumes from volumes whose axial slices come from different subjects. See
BENCHMARKS.md, "Generation".)

Training length: 600 steps by default (``EVAL_ENCODER_STEPS``; earlier builds: 150). Longer
training separates cross-subject-striped volumes from real ones far more clearly (coronal KID
0.3-0.8 vs 0.08-0.8 at 150 steps). Known bias, not removed: for volumes whose slices are
*blurrier* than the reference, stripes can hide the blur — with some encoder seeds blurred +
striped volumes score better than blurred intact ones (150 steps: 1 of 3 seeds on one phantom
set; 600 steps: 0 of 3 there, 1 of 3 on another). Use several encoder seeds and check with
`benchmarks/metric_sanity_generate.py` (BENCHMARKS.md, "Generation").

Spread: ``kid_*_std`` is the std over KID subsets, ``fid_*_std`` the std over bootstrap
resamples of the generated volumes. Planes are cut on a common evaluation grid: each volume is
reoriented to RAS, put in model space (D=S, H=A, W=R), normalised (0.5/99.5 percentiles of its
non-zero voxels) and resampled to `eval_shape`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lift3d.errors import InputError

log = logging.getLogger(__name__)

PLANES = ("axial", "coronal", "sagittal")
EVAL_ENCODER_STEPS = 600
_PLANE_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}  # of a (D, H, W) array
EVAL_OBJECTIVE = "masked"


# ------------------------------------------------------------------ distances on features


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a (numerically) positive semi-definite matrix via eigh."""
    vals, vecs = np.linalg.eigh((sigma + sigma.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between two Gaussians.

    ``Tr((S1 S2)^(1/2))`` is computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as ``S1 S2``): two ``eigh``
    calls, milliseconds for 112 features, where ``scipy.linalg.sqrtm`` of the non-symmetric
    product takes over a second.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = (
        np.atleast_2d(sigma1).astype(np.float64),
        np.atleast_2d(sigma2).astype(np.float64),
    )
    diff = mu1 - mu2
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean, 0.0))


def fid_from_features(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between feature sets (N, F) and (M, F) (sample covariances, ddof=1)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))


def _poly_mmd2(
    x: np.ndarray,
    y: np.ndarray,
    gx: np.ndarray | None = None,
    gy: np.ndarray | None = None,
) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / F + 1)^3.

    `gx` / `gy` give each sample's group (its volume). The within-set means then leave out
    every pair from the same group, not only i = j: slices of one volume are not independent
    draws (neighbouring cuts of a coherent volume are alike), and counting their pairs would
    bias MMD^2 upward the more coherent the volumes are and the fewer volumes there are.
    """
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3

    def within(k: np.ndarray, g: np.ndarray | None) -> float:
        n = k.shape[0]
        if g is None:
            return float((k.sum() - np.trace(k)) / (n * (n - 1)))
        keep = g[:, None] != g[None, :]
        if not keep.any():
            raise ValueError("KID by volume needs samples from at least 2 volumes per set")
        return float(k[keep].mean())

    return float(within(kxx, gx) + within(kyy, gy) - 2 * kxy.mean())


def kid_from_features(
    x: np.ndarray,
    y: np.ndarray,
    subsets: int = 20,
    subset_size: int = 200,
    seed: int = 0,
    x_groups: np.ndarray | None = None,
    y_groups: np.ndarray | None = None,
) -> tuple[float, float]:
    """Kernel inception distance: mean and std of the unbiased polynomial MMD^2 over subsets.

    Args:
        x: (N, F) generated features.
        y: (M, F) reference features.
        subsets: number of random subsets.
        subset_size: samples per subset (capped at min(N, M)).
        seed: subset RNG seed.
        x_groups, y_groups: (N,), (M,) volume index of each sample, or None (independent
            samples); with groups, pairs from one volume are left out of the within-set terms
            (`_poly_mmd2`).

    Returns:
        (mean, std) over subsets.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        ix = rng.choice(x.shape[0], size, replace=False)
        iy = rng.choice(y.shape[0], size, replace=False)
        values.append(
            _poly_mmd2(
                x[ix],
                y[iy],
                None if x_groups is None else np.asarray(x_groups)[ix],
                None if y_groups is None else np.asarray(y_groups)[iy],
            )
        )
    return float(np.mean(values)), float(np.std(values))


def histogram_distance(
    gen: Sequence[np.ndarray], ref: Sequence[np.ndarray], bins: int = 64, threshold: float = 0.02
) -> float:
    """Wasserstein-1 distance between foreground intensity histograms on [0, 1].

    Args:
        gen: volumes with values in [0, 1].
        ref: volumes with values in [0, 1].
        bins: histogram bins.
        threshold: voxels above it count as foreground.
    """

    def cdf(vols: Sequence[np.ndarray]) -> np.ndarray:
        hist = np.zeros(bins)
        for v in vols:
            values = v[v > threshold]
            hist += np.histogram(values, bins=bins, range=(0.0, 1.0))[0]
        return np.cumsum(hist) / max(hist.sum(), 1)

    return float(np.abs(cdf(gen) - cdf(ref)).sum() / bins)


# ------------------------------------------------------------------ volumes on the evaluation grid


def prepare_volume(array_ras: np.ndarray, eval_shape: Sequence[int]) -> np.ndarray:
    """RAS (X, Y, Z) array -> (D=S, H=A, W=R) float32 in [0, 1] on `eval_shape`."""
    from lift3d.data.preprocess import to_model_space
    from lift3d.metrics.image import normalise_mr

    arr = np.ascontiguousarray(to_model_space(np.asarray(array_ras, dtype=np.float32), "axial"))
    arr = normalise_mr(arr, arr != 0).astype(np.float32)
    t = torch.from_numpy(arr)[None, None]
    if tuple(arr.shape) != tuple(eval_shape):
        t = F.interpolate(
            t, size=tuple(int(s) for s in eval_shape), mode="trilinear", align_corners=False
        )
    return t[0, 0].numpy()


def _read_ras(path: Path) -> np.ndarray:
    from lift3d.data.volume import read_volume, reorient

    return reorient(read_volume(path), "RAS").array


def _image_files(folder: Path) -> list[Path]:
    from lift3d.data.volume import is_image_path

    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and is_image_path(p) and not p.name.startswith(".")
    )


def generated_files(pred_dir: Path) -> tuple[list[Path], str | None]:
    """The generated volumes of `pred_dir` (first modality when several were generated).

    Reads ``generation.json`` (written by `lift3d generate`) when present.
    """
    meta_path = pred_dir / "generation.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        modality = meta.get("modalities", [None])[0]
        files = [pred_dir / s["files"][modality] for s in meta.get("samples", [])]
        return [f for f in files if f.is_file()], modality
    return _image_files(pred_dir), None


def generation_info(pred_dir: Path) -> dict[str, Any] | None:
    """How `lift3d generate` made the volumes of `pred_dir` (None without generation.json):
    model, seed, mapper flag and output detail, so a summary says which arm it scored."""
    meta_path = Path(pred_dir) / "generation.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    detail = meta.get("detail") or {}
    return {
        "model": meta.get("model"),
        "seed": meta.get("seed"),
        "use_mapper": meta.get("use_mapper"),
        "n": meta.get("n"),
        "detail": bool(detail.get("applied")),
        "detail_sigma": detail.get("sigma"),
    }


def reference_files(ref_dir: Path, modality: str | None) -> list[tuple[str, Path]]:
    """(case id, file) of the reference volumes: a BraTS/SynthRAD/manifest dataset (its
    `modality`, default t1n / mr) or a plain folder of image files."""
    files = _image_files(ref_dir)
    if files:
        return [(f.name.split(".")[0], f) for f in files]
    from lift3d.data.discovery import discover_cases

    cases = discover_cases(ref_dir, validate="header", required=())
    out = []
    for case in cases:
        mod = (
            modality
            if modality in case.paths
            else next((m for m in ("t1n", "mr") if m in case.paths), None)
        )
        if mod is None:
            raise InputError(
                f"reference case {case.case_id} has no {modality or 't1n/mr'} image", case.root
            )
        out.append((case.case_id, case.paths[mod]))
    return out


# ------------------------------------------------------------------ evaluation encoder


def _slices_all_planes(vols: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    out = []
    for v in vols:
        t = torch.from_numpy(v)
        for axis in range(3):
            s = t.movedim(axis, 0)[:, None]  # (M, 1, h, w)
            out.append(F.interpolate(s, size=size, mode="bilinear", align_corners=False))
    return torch.cat(out)


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over the module's state_dict tensors (names and float32 bytes, sorted)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


class EvalDescriptor(torch.nn.Module):
    """The evaluation feature of a slice: per-channel spatial mean and std of every scale.

    Args:
        encoder: a `SliceEncoder` (``features``).
        descriptor: ``"meanstd"`` (default) or ``"mean"`` (the encoder's pooled ``embed``,
            as saved by earlier builds).
    """

    def __init__(self, encoder: torch.nn.Module, descriptor: str = "meanstd") -> None:
        super().__init__()
        if descriptor not in ("meanstd", "mean"):
            raise ValueError(f"unknown descriptor {descriptor!r}")
        self.encoder = encoder
        self.descriptor = descriptor

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) slices -> (N, F) descriptors (F = 2 * sum(widths) for meanstd)."""
        if self.descriptor == "mean":
            return self.encoder.embed(x)
        out = []
        for f in self.encoder.features(x):
            out += [f.mean(dim=(2, 3)), f.std(dim=(2, 3))]
        return torch.cat(out, dim=1)


def train_eval_encoder(
    ref_volumes: Sequence[np.ndarray],
    *,
    seed: int = 1234,
    steps: int = EVAL_ENCODER_STEPS,
    batch_size: int = 32,
    lr: float = 2e-3,
    widths: Sequence[int] = (16, 32, 64),
    objective: str = EVAL_OBJECTIVE,
) -> torch.nn.Module:
    """Train the evaluation encoder on slices (all three planes) of the reference volumes.

    Returns the bare `SliceEncoder` (eval mode); wrap it in `EvalDescriptor` for features.
    About 80 s on one idle CPU core at 64^3 (600 steps of 32 slices of 64 x 64).
    """
    from lift3d.models.encoder import SliceEncoder

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = SliceEncoder(1, widths, pool=1, objective=objective)
    shape = ref_volumes[0].shape
    slices = _slices_all_planes(ref_volumes, (max(shape), max(shape)))
    opt = torch.optim.Adam(enc.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, slices.shape[0], (batch_size,), generator=g)
        loss = enc.pretext_loss(slices[idx], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc.eval()


def load_eval_encoder(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load an evaluation encoder saved by `save_eval_encoder` (safetensors + identity).

    Returns:
        (`EvalDescriptor` with the descriptor named in the identity, identity dict).

    Raises:
        InputError: a file is missing or unreadable, or the weights' SHA-256 differs from the
            identity's.
    """
    from lift3d.models.encoder import SliceEncoder
    from lift3d.models.weights import load_weights

    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise InputError("evaluation encoder (.safetensors + .json) not found", path)
    try:
        identity = json.loads(meta_path.read_text())
        enc = SliceEncoder(
            1, identity["widths"], pool=identity.get("pool", 1), objective=identity["objective"]
        )
        load_weights(enc, path)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputError(
            f"not a lift3d evaluation encoder ({exc.__class__.__name__}: {exc})", path
        ) from None
    if identity.get("weights_sha256") not in (None, weights_sha256(enc)):
        raise InputError("evaluation encoder weights do not match their identity JSON", path)
    enc = EvalDescriptor(enc.eval(), identity.get("descriptor", "mean"))
    return enc.eval(), identity


def save_eval_encoder(enc: torch.nn.Module, identity: dict[str, Any], path: str | Path) -> Path:
    """Write the encoder's weights and its identity JSON beside them."""
    from lift3d.models.weights import save_weights
    from lift3d.utils import atomic_write_text

    path = Path(path)
    enc = getattr(enc, "encoder", enc)  # the SliceEncoder inside an EvalDescriptor
    save_weights(enc, path, {"identity": identity})
    atomic_write_text(path.with_suffix(".json"), json.dumps(identity, indent=1))
    return path


# ------------------------------------------------------------------ features


@torch.no_grad()
def plane_features(
    enc: torch.nn.Module, vols: Sequence[np.ndarray], plane: str, max_slices: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Slice features and increments along one plane.

    Args:
        enc: evaluation encoder (``embed``).
        vols: (D, H, W) volumes in [0, 1].
        plane: axial | coronal | sagittal.
        max_slices: evenly spaced cut positions per volume (each with its +1 neighbour).

    Returns:
        (features (V * M, F), increments (V * M, F)).
    """
    feats, incs = [], []
    for v in vols:
        t = torch.from_numpy(np.ascontiguousarray(v)).movedim(_PLANE_AXIS[plane], 0)[
            :, None
        ]  # (S, 1, h, w)
        n = t.shape[0]
        pos = np.unique(np.linspace(0, n - 2, min(max_slices, n - 1)).round().astype(int))
        f = enc.embed(t[pos]).numpy()
        f_next = enc.embed(t[pos + 1]).numpy()
        feats.append(f)
        incs.append(f_next - f)
    return np.concatenate(feats), np.concatenate(incs)


def _volume_index(features: np.ndarray, n_volumes: int) -> np.ndarray:
    """Volume index of each row of `plane_features` output (equal cuts per volume)."""
    per = features.shape[0] // n_volumes
    if per * n_volumes != features.shape[0]:
        raise ValueError("every volume must give the same number of cuts")
    return np.repeat(np.arange(n_volumes), per)


def increment_distance(gen_inc: np.ndarray, ref_inc: np.ndarray) -> float:
    """Frechet distance of increment distributions / trace of the reference covariance."""
    ref_cov = np.cov(np.asarray(ref_inc, np.float64), rowvar=False)
    return fid_from_features(gen_inc, ref_inc) / max(float(np.trace(np.atleast_2d(ref_cov))), 1e-12)


def distribution_metrics(
    gen: Sequence[np.ndarray],
    ref: Sequence[np.ndarray],
    enc: torch.nn.Module,
    *,
    max_slices: int = 32,
    kid_subsets: int = 20,
    kid_subset_size: int = 200,
    bootstrap: int = 10,
    seed: int = 0,
    kid_by_volume: bool = True,
) -> dict[str, float]:
    """All generation metrics between generated and reference volumes on one grid.

    KID leaves pairs of slices from the same volume out of its within-set terms
    (`kid_by_volume`, `_poly_mmd2`); False gives the textbook estimator over all slice pairs.

    Returns:
        {"fid_<plane>", "fid_<plane>_std", "kid_<plane>", "kid_<plane>_std",
        "increment_distance_<plane>", "increment_distance", "histogram_distance"}.
    """
    if len(gen) < 2 or len(ref) < 2:
        raise InputError(
            f"need at least 2 generated and 2 reference volumes, got {len(gen)} and {len(ref)}"
        )
    out: dict[str, float] = {}
    rng = np.random.default_rng(seed)
    incs = []
    for plane in PLANES:
        gf, gi = plane_features(enc, gen, plane, max_slices)
        rf, ri = plane_features(enc, ref, plane, max_slices)
        mu = rf.mean(0)
        scale = float(np.sqrt(((rf - mu) ** 2).mean())) + 1e-12  # one global scale
        gf, rf = (gf - mu) / scale, (rf - mu) / scale
        out[f"fid_{plane}"] = fid_from_features(gf, rf)
        per_vol = gf.reshape(len(gen), -1, gf.shape[1])
        boots = [
            fid_from_features(
                per_vol[rng.integers(0, len(gen), len(gen))].reshape(-1, gf.shape[1]), rf
            )
            for _ in range(bootstrap)
        ]
        out[f"fid_{plane}_std"] = float(np.std(boots)) if boots else 0.0
        out[f"kid_{plane}"], out[f"kid_{plane}_std"] = kid_from_features(
            gf,
            rf,
            kid_subsets,
            kid_subset_size,
            seed,
            *((_volume_index(gf, len(gen)), _volume_index(rf, len(ref))) if kid_by_volume else ()),
        )
        out[f"increment_distance_{plane}"] = increment_distance(gi, ri)
        incs.append(out[f"increment_distance_{plane}"])
    out["increment_distance"] = float(np.mean(incs))
    out["histogram_distance"] = histogram_distance(gen, ref)
    return out


def evaluate_generation(
    pred_dir: str | Path,
    ref_dir: str | Path,
    *,
    eval_shape: Sequence[int] | None = None,
    encoder_path: str | Path | None = None,
    encoder_seed: int = 1234,
    encoder_steps: int = EVAL_ENCODER_STEPS,
    save_encoder: str | Path | None = None,
    eval_encoder: str | Path | None = None,
    max_slices: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Score generated volumes against held-out real ones (``lift3d evaluate --task generate``).

    Args:
        pred_dir: folder of generated volumes (``lift3d generate`` output).
        ref_dir: held-out reference dataset (BraTS/SynthRAD/manifest) or folder of images.
        eval_shape: common evaluation grid (D, H, W); None: the first reference volume's
            (S, A, R) shape, each axis capped at 64.
        encoder_path: a saved evaluation encoder; None trains one on the reference volumes.
        encoder_seed: seed of a freshly trained evaluation encoder.
        encoder_steps: its training steps.
        save_encoder: write the trained evaluation encoder here (reuse via `encoder_path`).
        eval_encoder: load the evaluation encoder from this file when it exists, else train
            one and save it there (``lift3d evaluate --eval-encoder``); so several evaluations
            share one feature space.
        max_slices: cuts per volume and plane.
        seed: RNG seed of KID subsets and bootstrap.

    Returns:
        ``{"cases": {sample: {"pred", "ref", "mask", "source", "mean_abs_dz"}}, "summary": {...
        metrics, "n_cases", "eval_encoder": identity}, "eval_encoder": identity}``.

    Raises:
        InputError: missing or empty folders, fewer than 2 volumes on either side.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    for folder, what in ((pred_dir, "generated"), (ref_dir, "reference")):
        if not folder.is_dir():
            raise InputError(f"{what} folder not found", folder)
    files, modality = generated_files(pred_dir)
    if not files:
        raise InputError("no generated volumes (.nii.gz, .nii, .mha) found", pred_dir)
    refs = reference_files(ref_dir, modality)
    if eval_shape is None:
        from lift3d.data.preprocess import to_model_space

        first = to_model_space(_read_ras(refs[0][1]), "axial").shape
        eval_shape = tuple(min(int(s), 64) for s in first)
    gen = [prepare_volume(_read_ras(f), eval_shape) for f in files]
    ref = [prepare_volume(_read_ras(f), eval_shape) for _, f in refs]
    if eval_encoder is not None:
        if Path(eval_encoder).exists() or Path(eval_encoder).with_suffix(".json").exists():
            encoder_path = eval_encoder
        else:
            save_encoder = eval_encoder
    if encoder_path is not None:
        enc, identity = load_eval_encoder(encoder_path)
        trained = identity.get("eval_shape")
        if trained is not None and [int(s) for s in trained] != [int(s) for s in eval_shape]:
            raise InputError(
                f"evaluation encoder was trained on the {tuple(trained)} grid but this "
                f"evaluation runs on {tuple(int(s) for s in eval_shape)}; use the same "
                "--eval-shape or another --eval-encoder file",
                encoder_path,
            )
        identity = {**identity, "loaded_from": str(Path(encoder_path).resolve())}
    else:
        base = train_eval_encoder(ref, seed=encoder_seed, steps=encoder_steps)
        enc = EvalDescriptor(base, "meanstd")
        data_hash = hashlib.sha256(
            "\n".join(f"{c}:{f.stat().st_size}" for c, f in refs).encode()
        ).hexdigest()
        identity = {
            "name": f"SliceEncoder-{EVAL_OBJECTIVE}-ae",
            "objective": EVAL_OBJECTIVE,
            "widths": list(base.widths),
            "pool": base.pool,
            "descriptor": enc.descriptor,
            "normalisation": "reference mean, one global RMS scale",
            "seed": encoder_seed,
            "steps": encoder_steps,
            "trained_on": str(ref_dir.resolve()),
            "trained_on_cases": len(refs),
            "trained_on_sha256": data_hash,
            "eval_shape": [int(s) for s in eval_shape],
        }
        identity["weights_sha256"] = weights_sha256(base)
        if save_encoder is not None:
            save_eval_encoder(base, identity, save_encoder)
            identity = {**identity, "saved_to": str(Path(save_encoder).resolve())}
    summary: dict[str, Any] = distribution_metrics(gen, ref, enc, max_slices=max_slices, seed=seed)
    summary["n_cases"] = len(gen)
    summary["n_reference"] = len(ref)
    summary["eval_encoder"] = identity
    info = generation_info(pred_dir)
    if info is not None:  # (a None would read as a missing metric in the tables)
        summary["generation"] = info
    cases = {
        f.name.split(".")[0]: {
            "pred": str(f.resolve()),
            "ref": None,
            "mask": None,
            "source": None,
            "mean_abs_dz": float(np.abs(np.diff(v, axis=0)).mean()),
        }
        for f, v in zip(files, gen)
    }
    return {"cases": cases, "summary": summary, "eval_encoder": identity}
