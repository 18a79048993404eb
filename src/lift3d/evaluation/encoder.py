"""The evaluation encoder of generation scoring: training, identity, saving, loading.

Generated volumes are compared with held-out real ones in the feature space of an encoder that
was not used in training: the same small convolutional autoencoder class as the training encoder
E (:class:`lift3d.models.encoder.SliceEncoder`) but trained with the *masked*-autoencoder
objective (E is a denoising autoencoder by default) and another seed, on slices of the reference
volumes at evaluation time (or loaded from a file). Its identity (objective, seed, steps,
training data, SHA-256 of its weights) goes into every report.

Descriptor: each slice is described by the per-channel spatial mean *and* standard deviation of
every encoder scale (224 features for the default widths; ``descriptor: "meanstd"`` in the
identity); files saved with ``"mean"`` use the encoder's pooled embedding.

Training length: 600 steps by default (``EVAL_ENCODER_STEPS``). Longer training separates
cross-subject-striped volumes from real ones far more clearly than 150 steps. Known bias, not
removed: for volumes whose slices are *blurrier* than the reference, stripes can hide the blur
with some encoder seeds. Use several encoder seeds and check with
`benchmarks/metric_sanity_generate.py` (docs/journal/2026-11-25-generation-32-evaluator.md).

Sharing (``--eval-encoder FILE``): the first evaluation trains the encoder and saves it, later
ones load it. Evaluations started at the same time take a lock beside the file
(``FILE.lock``, `lift3d.utils.folder_lock` with ``wait=True``) around "load it, or train and
save it", so the second waits for the first and loads its file instead of training a second,
different encoder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lift3d.errors import InputError
from lift3d.models.encoder import SliceEncoder
from lift3d.models.weights import load_weights, save_weights
from lift3d.utils import atomic_write_text, folder_lock, write_error

EVAL_ENCODER_STEPS = 600
EVAL_OBJECTIVE = "masked"
EVAL_ENCODER_SEED = 1234


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


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over the module's state_dict tensors (names and float32 bytes, sorted)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def _slices_all_planes(vols: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """(sum of all three dimensions over volumes, 1, *size) slices of every plane, resized."""
    out = []
    for v in vols:
        t = torch.from_numpy(v)
        for axis in range(3):
            s = t.movedim(axis, 0)[:, None]  # (M, 1, h, w)
            out.append(F.interpolate(s, size=size, mode="bilinear", align_corners=False))
    return torch.cat(out)


def train_eval_encoder(
    ref_volumes: Sequence[np.ndarray],
    *,
    seed: int = EVAL_ENCODER_SEED,
    steps: int = EVAL_ENCODER_STEPS,
    batch_size: int = 32,
    lr: float = 2e-3,
    widths: Sequence[int] = (16, 32, 64),
    objective: str = EVAL_OBJECTIVE,
) -> SliceEncoder:
    """Train the evaluation encoder on slices (all three planes) of the reference volumes.

    Args:
        ref_volumes: (D, H, W) float32 volumes in [0, 1].
        seed: initialisation and batch seed.
        steps: optimiser steps.
        batch_size: slices per step.
        lr: Adam learning rate.
        widths: encoder channel widths per scale.
        objective: pretext objective of the `SliceEncoder`.

    Returns:
        The bare `SliceEncoder` (eval mode); wrap it in `EvalDescriptor` for features.
        About 80 s on one idle CPU core at 64^3 (600 steps of 32 slices of 64 x 64).
    """
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


def eval_encoder_identity(
    base: SliceEncoder,
    descriptor: str,
    *,
    seed: int,
    steps: int,
    ref_dir: Path,
    refs: Sequence[tuple[str, Path]],
    eval_shape: Sequence[int],
) -> dict[str, Any]:
    """What a freshly trained evaluation encoder is: objective, widths, seed, steps, the data it
    was trained on (folder, case count, SHA-256 of ``case:file size`` lines), its grid and the
    SHA-256 of its weights."""
    data_hash = hashlib.sha256(
        "\n".join(f"{c}:{f.stat().st_size}" for c, f in refs).encode()
    ).hexdigest()
    return {
        "name": f"SliceEncoder-{EVAL_OBJECTIVE}-ae",
        "objective": EVAL_OBJECTIVE,
        "widths": list(base.widths),
        "pool": base.pool,
        "descriptor": descriptor,
        "normalisation": "reference mean, one global RMS scale",
        "seed": seed,
        "steps": steps,
        "trained_on": str(Path(ref_dir).resolve()),
        "trained_on_cases": len(refs),
        "trained_on_sha256": data_hash,
        "eval_shape": [int(s) for s in eval_shape],
        "weights_sha256": weights_sha256(base),
    }


def save_eval_encoder(enc: torch.nn.Module, identity: dict[str, Any], path: str | Path) -> Path:
    """Write the encoder's weights (safetensors) and its identity JSON beside them."""
    path = Path(path)
    enc = getattr(enc, "encoder", enc)  # the SliceEncoder inside an EvalDescriptor
    save_weights(enc, path, {"identity": identity})
    atomic_write_text(path.with_suffix(".json"), json.dumps(identity, indent=1))
    return path


def load_eval_encoder(path: str | Path) -> tuple[EvalDescriptor, dict[str, Any]]:
    """Load an evaluation encoder saved by `save_eval_encoder` (safetensors + identity).

    Returns:
        (`EvalDescriptor` with the descriptor named in the identity, identity dict).

    Raises:
        InputError: a file is missing or unreadable, or the weights' SHA-256 differs from the
            identity's.
    """
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
    desc = EvalDescriptor(enc.eval(), identity.get("descriptor", "mean"))
    return desc.eval(), identity


def eval_encoder_for(
    ref_volumes: Sequence[np.ndarray],
    *,
    ref_dir: Path,
    refs: Sequence[tuple[str, Path]],
    eval_shape: Sequence[int],
    encoder_path: str | Path | None = None,
    save_encoder: str | Path | None = None,
    eval_encoder: str | Path | None = None,
    seed: int = EVAL_ENCODER_SEED,
    steps: int = EVAL_ENCODER_STEPS,
) -> tuple[EvalDescriptor, dict[str, Any]]:
    """The evaluation encoder of one evaluation: loaded from a file, or trained on the references.

    Args:
        ref_volumes: the reference volumes on the evaluation grid (training data).
        ref_dir: the reference folder (recorded in the identity).
        refs: (case id, file) of the reference volumes (hashed into the identity).
        eval_shape: the evaluation grid (D, H, W); a loaded encoder must have been trained on it.
        encoder_path: load this file.
        save_encoder: write a freshly trained encoder here.
        eval_encoder: load this file when it (or its JSON) exists, else train and save it there;
            so several evaluations share one feature space.
        seed: seed of a freshly trained encoder.
        steps: its training steps.

    Returns:
        (encoder, identity): the identity also says ``loaded_from`` or ``saved_to``.

    Raises:
        InputError: a loaded encoder is unreadable or was trained on another grid; the shared
            file's folder cannot be written.
    """
    kwargs = {
        "ref_volumes": ref_volumes,
        "ref_dir": ref_dir,
        "refs": refs,
        "eval_shape": eval_shape,
        "encoder_path": encoder_path,
        "save_encoder": save_encoder,
        "seed": seed,
        "steps": steps,
    }
    if eval_encoder is None:
        return _eval_encoder(**kwargs)
    shared = Path(eval_encoder)
    try:
        shared.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, shared.parent) from None
    # One process trains and saves, the others wait here and then load its file.
    with folder_lock(shared.parent, wait=True, name=f"{shared.name}.lock"):
        if shared.exists() or shared.with_suffix(".json").exists():
            kwargs["encoder_path"] = shared
        else:
            kwargs["save_encoder"] = shared
        return _eval_encoder(**kwargs)


def _eval_encoder(
    ref_volumes: Sequence[np.ndarray],
    *,
    ref_dir: Path,
    refs: Sequence[tuple[str, Path]],
    eval_shape: Sequence[int],
    encoder_path: str | Path | None,
    save_encoder: str | Path | None,
    seed: int,
    steps: int,
) -> tuple[EvalDescriptor, dict[str, Any]]:
    """`eval_encoder_for` once the shared file is resolved: load `encoder_path`, or train (and
    save to `save_encoder`)."""
    shape = [int(s) for s in eval_shape]
    if encoder_path is not None:
        enc, identity = load_eval_encoder(encoder_path)
        trained = identity.get("eval_shape")
        if trained is not None and [int(s) for s in trained] != shape:
            raise InputError(
                f"evaluation encoder was trained on the {tuple(trained)} grid but this "
                f"evaluation runs on {tuple(shape)}; use the same "
                "--eval-shape or another --eval-encoder file",
                encoder_path,
            )
        return enc, {**identity, "loaded_from": str(Path(encoder_path).resolve())}
    base = train_eval_encoder(ref_volumes, seed=seed, steps=steps)
    enc = EvalDescriptor(base, "meanstd")
    identity = eval_encoder_identity(
        base,
        enc.descriptor,
        seed=seed,
        steps=steps,
        ref_dir=ref_dir,
        refs=refs,
        eval_shape=shape,
    )
    if save_encoder is not None:
        save_eval_encoder(base, identity, save_encoder)
        identity = {**identity, "saved_to": str(Path(save_encoder).resolve())}
    return enc, identity
