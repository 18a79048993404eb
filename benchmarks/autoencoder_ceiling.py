"""How close could a latent generation model get if G drew perfect codes? Its slice
autoencoder's reconstructions of real volumes, written like samples, for `lift3d evaluate`.

A latent G draws the slice autoencoder's latent maps and the autoencoder's decoder renders them,
so the autoencoder bounds what any G can reach: real volumes encoded and decoded slice by slice
(along the model's slice axis) are what a G drawing the autoencoder's own codes of real slices
would give. Scored against held-out volumes with the real-vs-real floor, these reconstructions
are the model's *ceiling* (in latent diffusion this is the first stage's reconstruction FID).

For each case of ``--data`` (read and preprocessed exactly as the model's training data were),
each modality is reconstructed, mapped back onto the case's own grid and intensity scale, given
the model's output detail (its calibrated white noise, as `lift3d generate` adds) and, unless
``--no-match``, its foreground histogram matched to the case's own (the best an intensity map
could do). ``--weights`` takes the autoencoder from a stage checkpoint instead of the model's
final weights: the encoder stage's (``checkpoints/generator/final.safetensors`` holds the
autoencoder as the encoder stage left it) against the decoder stage's tuned one.

    python benchmarks/autoencoder_ceiling.py --model RUN --data TRAIN --out RECON \\
        [--weights RUN/checkpoints/generator/final.safetensors]
    lift3d evaluate --task generate --pred RECON --ref HELD_OUT --floor TRAIN --eval-encoder E

Reconstruct the floor set (``--floor``, here TRAIN) so that the ceiling and the floor score
the same volumes. Results: ../BENCHMARKS.md ("Unconditional generation").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from skimage.exposure import match_histograms
from tqdm.auto import tqdm

from lift3d.data.datasets import VolumeDataset
from lift3d.data.discovery import discover_cases
from lift3d.data.preprocess import PreprocessRecord, restore_volume
from lift3d.data.volume import read_volume, write_volume
from lift3d.inference.detail import add_detail, sample_rng, window_width
from lift3d.model_folder import load_model

PREFIX = "generator.autoencoder."  # the autoencoder's keys in G's and the decoder's stage files


def load_autoencoder(model_dir: Path, weights: Path | None) -> tuple[torch.nn.Module, object]:
    """The model's slice autoencoder (its final weights, or those of a stage checkpoint)."""
    model, folder = load_model(model_dir, "generate")
    ae = model.generator.autoencoder
    if ae is None:
        raise SystemExit(f"{model_dir}: G draws pixels (no slice autoencoder)")
    if weights is not None:
        state = {
            k[len(PREFIX) :]: v for k, v in load_file(str(weights)).items() if k.startswith(PREFIX)
        }
        if not state:
            raise SystemExit(f"{weights}: no {PREFIX}* tensors")
        ae.load_state_dict(state)
    return ae.eval(), folder


def reconstruct(ae: torch.nn.Module, volume: np.ndarray, batch: int = 64) -> np.ndarray:
    """(D, H, W) in [0, 1] -> the autoencoder's slice-by-slice reconstruction, (D, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[:, None]
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            part = x[i : i + batch]
            out.append(ae.decode(ae.encode(part), tuple(part.shape[-2:]))[:, 0])
    return torch.cat(out).clamp(0, 1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="a trained generation model folder")
    ap.add_argument("--data", type=Path, required=True, help="real cases (any layout lift3d reads)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the reconstructions")
    ap.add_argument("--weights", type=Path, help="take the autoencoder from this stage file")
    ap.add_argument("--no-detail", action="store_true", help="leave out the output detail")
    ap.add_argument("--no-match", action="store_true", help="no histogram match to the source")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ae, folder = load_autoencoder(args.model, args.weights)
    cfg, ref = folder.config, folder.reference
    modalities = list(ref["modalities"])
    cases = list(discover_cases(args.data, "auto", required=tuple(modalities)))
    volumes = VolumeDataset(
        cases, modalities, tuple(ref["shape"]), cfg.data.slice_axis, cfg.data.spacing_mm
    )
    detail = None if args.no_detail else (ref.get("detail") or {}).get("modalities")
    args.out.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(len(volumes)), desc="reconstruct", unit="case"):
        arrays, record_dict = volumes.load_arrays(i)
        record = PreprocessRecord.from_dict(record_dict)
        source = volumes.cases[i]
        rng = sample_rng(0, i)
        for mod in modalities:
            restored = restore_volume(reconstruct(ae, arrays[mod]), record, mod)
            real = np.asarray(read_volume(source.paths[mod]).array, dtype=np.float32)
            inside = real > 0
            array = np.where(inside, np.maximum(restored.array, 0), 0).astype(np.float32)
            if detail and mod in detail:
                sigma = detail[mod]["sigma_rel"] * window_width(ref["record"], mod)
                array = add_detail(array, sigma, rng)
            if not args.no_match:
                fg = array > 0
                array[fg] = match_histograms(array[fg], real[inside])
            restored.array = array
            name = (
                f"{source.case_id}.nii.gz"
                if len(modalities) == 1
                else f"{source.case_id}-{mod}.nii.gz"
            )
            write_volume(restored, args.out / name, overwrite=True, require_finite=True)
    print(f"wrote {len(volumes)} reconstruction(s) to {args.out}")


if __name__ == "__main__":
    main()
