"""Pretrained feature extractors of the published generation scores: MedicalNet 3D FID and MAISI
2.5D FID (RadImageNet), with MMD on the same features.

The user names the weights files (``lift3d evaluate --medicalnet PATH --radimagenet PATH``);
nothing downloads. Each extractor's identity (network, protocol, file, SHA-256 of the file) goes
into the summary beside the scores it made; without a file its scores read
``"needs --medicalnet PATH"`` (or ``--radimagenet``) instead of a number.

- **MedicalNet 3D FID** (WDM / cWDM / LiFT tables): every volume on the evaluation grid
  (D=S, H=A, W=R) whole, one channel, normalised to zero mean and unit std per volume
  (``(v - mean) / (std + 1e-5)``, MONAI's generative-model recipe), through MONAI's 3D
  ``resnet50`` with MedicalNet's layout (:func:`lift3d.models.pretrained.medicalnet_resnet50`);
  the feature is the global average of the last block (2048). ``fid_medicalnet``: FID between
  the generated and the reference volumes' features; ``mmd_medicalnet``: MMD (linear kernel).
- **MAISI 2.5D FID** (RadImageNet): every slice of a volume along each plane, the volume's
  slices min-max scaled together to [0, 1], repeated to 3 channels (BGR) minus the ImageNet
  means (0.406, 0.456, 0.485), through RadImageNet's 2D ResNet-50
  (:class:`lift3d.models.pretrained.RadImageNetResNet50`), spatially averaged (2048).
  ``fid_radimagenet_<plane>`` per plane, ``fid_radimagenet`` their mean; ``mmd_radimagenet_*``
  likewise.

FID is MONAI's ``FIDMetric`` and MMD MONAI's ``MMDMetric``
(:mod:`lift3d.metrics.distribution`). FID values from different extractors, grids or sample
counts are not comparable with each other (README, "Comparing with published numbers").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lift3d.constants import DHW_PLANE_AXIS, PLANES
from lift3d.metrics.distribution import fid_from_features, mmd_from_features
from lift3d.models.pretrained import (
    FEATURE_DIM,
    MEDICALNET_HEADS,
    RadImageNetResNet50,
    load_pretrained,
    medicalnet_resnet50,
)

IMAGENET_BGR_MEAN = (0.406, 0.456, 0.485)  # subtracted per channel (RadImageNet, MAISI)
MMD_SUBSETS = 20
MEDICALNET_SCORES = ("fid_medicalnet", "mmd_medicalnet")
RADIMAGENET_SCORES = (
    *(f"fid_radimagenet_{p}" for p in PLANES),
    "fid_radimagenet",
    *(f"mmd_radimagenet_{p}" for p in PLANES),
    "mmd_radimagenet",
)
NEEDS = {"medicalnet": "needs --medicalnet PATH", "radimagenet": "needs --radimagenet PATH"}


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class Extractor:
    """A loaded pretrained network and what it is.

    Attributes:
        kind: ``"medicalnet"`` or ``"radimagenet"``.
        net: the network in eval mode (``forward`` -> (N, 2048)).
        identity: name, network, protocol, file, its SHA-256 and size.
    """

    kind: str
    net: torch.nn.Module
    identity: dict[str, Any] = field(default_factory=dict)


def _file_identity(path: Path) -> dict[str, Any]:
    return {
        "file": str(path.resolve()),
        "file_sha256": file_sha256(path),
        "file_bytes": path.stat().st_size,
    }


def load_medicalnet(path: str | Path) -> Extractor:
    """MedicalNet ResNet-50 from a released weights file (e.g. ``resnet_50_23dataset.pth``).

    Raises:
        InputError: a missing, unreadable or truncated file, or another network's weights.
    """
    path = Path(path)
    net = load_pretrained(
        medicalnet_resnet50, path, "MedicalNet ResNet-50", ignore=MEDICALNET_HEADS
    )
    identity = {
        "name": "MedicalNet ResNet-50",
        "network": "monai.networks.nets.resnet50(spatial_dims=3, n_input_channels=1, "
        "conv1_t_stride=2, shortcut_type='B', bias_downsample=False, feed_forward=False)",
        "input": "whole volume on the evaluation grid (D=S, H=A, W=R), 1 channel, "
        "(v - mean) / (std + 1e-5) per volume",
        "features": FEATURE_DIM,
        "scores": list(MEDICALNET_SCORES),
        **_file_identity(path),
    }
    return Extractor("medicalnet", net, identity)


def load_radimagenet(path: str | Path) -> Extractor:
    """RadImageNet ResNet-50 from its PyTorch weights file (``RadImageNet-ResNet50_notop.pth``).

    Raises:
        InputError: a missing, unreadable or truncated file, or another network's weights.
    """
    path = Path(path)
    net = load_pretrained(RadImageNetResNet50, path, "RadImageNet ResNet-50")
    identity = {
        "name": "RadImageNet ResNet-50",
        "network": "ResNet-50 2D, Keras layout (RadImageNet-ResNet50_notop)",
        "input": "every slice of each plane; a volume's slices min-max scaled together to "
        "[0, 1], 3 channels (BGR) minus ImageNet means (0.406, 0.456, 0.485); spatial average",
        "features": FEATURE_DIM,
        "scores": list(RADIMAGENET_SCORES),
        **_file_identity(path),
    }
    return Extractor("radimagenet", net, identity)


def load_extractors(
    medicalnet: str | Path | None = None, radimagenet: str | Path | None = None
) -> dict[str, Extractor]:
    """The extractors whose weights were given, by kind (one-line InputError on a bad file)."""
    out: dict[str, Extractor] = {}
    if medicalnet is not None:
        out["medicalnet"] = load_medicalnet(medicalnet)
    if radimagenet is not None:
        out["radimagenet"] = load_radimagenet(radimagenet)
    return out


# ------------------------------------------------------------------ features


@torch.no_grad()
def medicalnet_features(
    net: torch.nn.Module, vols: Sequence[np.ndarray], batch: int = 4
) -> np.ndarray:
    """(V, 2048) MedicalNet features of (D, H, W) volumes (whole volumes, z-scored each)."""
    out = []
    for start in range(0, len(vols), batch):
        t = torch.stack(
            [torch.from_numpy(np.asarray(v, np.float32)) for v in vols[start : start + batch]]
        )
        t = t[:, None]  # (B, 1, D, H, W)
        mean = t.mean(dim=(2, 3, 4), keepdim=True)
        std = t.std(dim=(2, 3, 4), keepdim=True)
        out.append(net((t - mean) / (std + 1e-5)).double())
    return torch.cat(out).numpy()


@torch.no_grad()
def radimagenet_plane_features(
    net: torch.nn.Module, vols: Sequence[np.ndarray], plane: str, batch: int = 64
) -> np.ndarray:
    """(V * S, 2048) RadImageNet features of every slice of each volume along `plane`.

    A volume's slices are min-max scaled together to [0, 1] (MAISI's
    ``radimagenet_intensity_normalisation`` of one volume's slice stack), repeated to three
    channels and the ImageNet BGR means subtracted.
    """
    mean = torch.tensor(IMAGENET_BGR_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    out = []
    for v in vols:
        t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        s = t.movedim(DHW_PLANE_AXIS[plane], 0)[:, None]  # (S, 1, h, w)
        s = (s - s.min()) / (s.max() - s.min() + 1e-10)
        s = s.expand(-1, 3, -1, -1) - mean
        for start in range(0, s.shape[0], batch):
            out.append(net(s[start : start + batch].contiguous()).double())
    return torch.cat(out).numpy()


# ------------------------------------------------------------------ scores


def pretrained_scores(
    gen: Sequence[np.ndarray],
    ref: Sequence[np.ndarray],
    extractors: dict[str, Extractor],
    *,
    mmd_subsets: int = MMD_SUBSETS,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """MedicalNet 3D FID / MMD and RadImageNet 2.5D FID / MMD, or what they need.

    Args:
        gen: (D, H, W) generated volumes in [0, 1] on the evaluation grid.
        ref: (D, H, W) reference volumes on the same grid.
        extractors: from :func:`load_extractors`; a missing kind gives ``"needs ..."`` rows.
        mmd_subsets: MMD subsets (:func:`lift3d.metrics.distribution.mmd_from_features`).
        seed: MMD subset seed.

    Returns:
        (scores, identities): scores ``fid_medicalnet``, ``mmd_medicalnet`` (+ ``_std``),
        ``fid_radimagenet[_<plane>]``, ``mmd_radimagenet[_<plane>]`` (+ ``_std``), each a
        number or ``"needs --<kind> PATH"``; identities by kind, with ``samples``
        ([generated, reference] feature rows per FID).
    """
    scores: dict[str, Any] = {}
    identities: dict[str, dict[str, Any]] = {}
    mn = extractors.get("medicalnet")
    if mn is None:
        scores.update({k: NEEDS["medicalnet"] for k in MEDICALNET_SCORES})
        identities["medicalnet"] = {"name": "MedicalNet ResNet-50", "status": NEEDS["medicalnet"]}
    else:
        gf, rf = medicalnet_features(mn.net, gen), medicalnet_features(mn.net, ref)
        scores["fid_medicalnet"] = fid_from_features(gf, rf)
        scores["mmd_medicalnet"], scores["mmd_medicalnet_std"] = mmd_from_features(
            gf, rf, mmd_subsets, seed
        )
        identities["medicalnet"] = {**mn.identity, "samples": [len(gf), len(rf)]}
    rn = extractors.get("radimagenet")
    if rn is None:
        scores["fid_radimagenet"] = scores["mmd_radimagenet"] = NEEDS["radimagenet"]
        identities["radimagenet"] = {
            "name": "RadImageNet ResNet-50",
            "status": NEEDS["radimagenet"],
        }
    else:
        fid, mmd, samples = {}, {}, []
        for plane in PLANES:
            gf = radimagenet_plane_features(rn.net, gen, plane)
            rf = radimagenet_plane_features(rn.net, ref, plane)
            fid[plane] = fid_from_features(gf, rf)
            mmd[plane] = mmd_from_features(gf, rf, mmd_subsets, seed)
            samples.append([len(gf), len(rf)])
        scores.update({f"fid_radimagenet_{p}": fid[p] for p in PLANES})
        scores["fid_radimagenet"] = float(np.mean(list(fid.values())))
        for p in PLANES:
            scores[f"mmd_radimagenet_{p}"], scores[f"mmd_radimagenet_{p}_std"] = mmd[p]
        scores["mmd_radimagenet"] = float(np.mean([m for m, _ in mmd.values()]))
        identities["radimagenet"] = {**rn.identity, "samples": samples}
    return scores, identities
