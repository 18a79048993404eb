"""Does the per-plane KID of `lift3d evaluate --task generate` reward coherence?

Controlled corruptions of *real* volumes, each scored against held-out real volumes with the
evaluation encoders used for the generation ablation:

- ``real``: the volumes as they are (KID ~ 0 expected);
- ``striped``: every axial slice replaced by the slice at the same depth from a random other
  subject (what sampling each slice independently gives);
- ``blurred``: each volume downsampled by 2 and back (trilinear), then Gaussian-blurred in-plane
  (sigma ``--blur`` voxels) — slices as soft as a small 2D generator's;
- ``blur+striped``: the blurred volumes, striped.

A metric that measures through-plane coherence ranks ``real < striped`` and
``blurred < blur+striped`` in the coronal and sagittal planes, for every evaluation encoder.

    python benchmarks/metric_sanity_generate.py --data TRAIN_DIR --ref HELD_OUT_DIR \\
        --eval-encoder enc_1234.safetensors enc_99.safetensors enc_7.safetensors

Encoder files that do not exist are trained on ``--ref`` and saved (as ``lift3d evaluate
--eval-encoder`` does). Prints a Markdown table; results: ../BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from lift3d.constants import PLANES
from lift3d.evaluation.encoder import eval_encoder_for
from lift3d.evaluation.generation import plane_features, prepare_volume, read_ras, reference_files
from lift3d.metrics.distribution import kid_from_features, reference_scaled


def striped(vols: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for v in vols:
        w = v.copy()
        for z in range(v.shape[0]):
            w[z] = vols[int(rng.integers(len(vols)))][z]
        out.append(w)
    return out


def blurred(vols: list[np.ndarray], sigma: float) -> list[np.ndarray]:
    out = []
    for v in vols:
        t = torch.from_numpy(v)[None, None]
        half = [max(2, s // 2) for s in v.shape]
        t = F.interpolate(
            F.interpolate(t, size=half, mode="trilinear"), size=v.shape, mode="trilinear"
        )
        out.append(gaussian_filter(t[0, 0].numpy(), (0, sigma, sigma)).astype(np.float32))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="real volumes to corrupt")
    ap.add_argument("--ref", type=Path, required=True, help="held-out real volumes")
    ap.add_argument("--eval-encoder", type=Path, nargs="+", required=True)
    ap.add_argument("--encoder-seeds", type=int, nargs="+", default=[1234, 99, 7])
    ap.add_argument("--modality", default="t1n")
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 64, 64])
    ap.add_argument("--blur", type=float, default=1.2, help="in-plane Gaussian sigma (voxels)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    shape = tuple(args.shape)
    real = [
        prepare_volume(read_ras(f), shape) for _, f in reference_files(args.data, args.modality)
    ]
    refs = reference_files(args.ref, args.modality)
    ref = [prepare_volume(read_ras(f), shape) for _, f in refs]
    rng = np.random.default_rng(args.seed)
    variants = {"real": real, "striped": striped(real, rng), "blurred": blurred(real, args.blur)}
    variants["blur+striped"] = striped(variants["blurred"], rng)
    print(f"| encoder | plane | {' | '.join(variants)} | real<striped | blurred<blur+striped |")
    print("|---|---|" + "---:|" * (len(variants) + 2))
    for i, path in enumerate(args.eval_encoder):
        enc, identity = eval_encoder_for(
            ref,
            ref_dir=args.ref,
            refs=refs,
            eval_shape=shape,
            eval_encoder=path,
            seed=args.encoder_seeds[i % len(args.encoder_seeds)],
        )
        for plane in PLANES:
            rf, _ = plane_features(enc, ref, plane)
            kid = {}
            for name, vols in variants.items():
                gf, _ = plane_features(enc, vols, plane)
                scaled_rf, scaled_gf = reference_scaled(rf, gf)
                kid[name] = kid_from_features(scaled_gf, scaled_rf)[0]
            if plane == "axial":  # axial slices are real slices in every variant
                ok1 = ok2 = "n/a"
            else:
                ok1 = "yes" if kid["real"] < kid["striped"] else "**no**"
                ok2 = "yes" if kid["blurred"] < kid["blur+striped"] else "**no**"
            cells = " | ".join(f"{v:.3f}" for v in kid.values())
            print(
                f"| {identity.get('seed', path.name)} | {plane} | {cells} | {ok1} | {ok2} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
