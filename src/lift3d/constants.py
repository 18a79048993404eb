"""Names and numbers shared across lift3d's layers, each defined once.

Only plain values live here (no imports from the package), so every layer may import it.
"""

from __future__ import annotations

import numpy as np

# ------------------------------------------------------------------ planes and axes
PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")
# Axis of each plane's normal in a RAS-ordered (R, A, S) array.
RAS_PLANE_AXIS: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}
# ... and in a model-space (D, H, W) array of an axially sliced volume (D = S, H = A, W = R).
DHW_PLANE_AXIS: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}

# MetaImage stores LPS+ physical coordinates; nibabel's affine is RAS+.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# ------------------------------------------------------------------ intensities
# MR: clipped to these percentiles of the foreground, then scaled to [0, 1] (SynthRAD/BraSyn).
MR_PERCENTILES: tuple[float, float] = (0.5, 99.5)
# CT: the SynthRAD HU window, scaled to [0, 1] in model space.
HU_MIN = -1024.0
HU_MAX = 3000.0
CT_WINDOW_HU: tuple[float, float] = (HU_MIN, HU_MAX)
# Model-space voxels above this count as foreground in the distribution metrics and the
# mapper's through-plane term (intensities in [0, 1]; the background is 0).
FOREGROUND_LEVEL = 0.02

# ------------------------------------------------------------------ datasets and tasks
BRATS_MODALITIES: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")
# Paired-translation tasks: SynthRAD MR->CT, BraSyn missing MR modality.
TRANSLATE_TASKS: tuple[str, ...] = ("mr2ct", "missing")
# What `lift3d evaluate --task` scores: the paired tasks and unconditional generation.
EVALUATE_TASKS: tuple[str, ...] = (*TRANSLATE_TASKS, "generate")
# `lift3d train <kind>`: the two model families.
TRAIN_KINDS: tuple[str, ...] = ("translate", "generate")

# A translated CT is written as CASE/sct.nii.gz (SynthRAD's submission name).
SCT_STEM = "sct"
SCT_FILE = f"{SCT_STEM}.nii.gz"

PHANTOM_NOTE = "PHANTOM data (synthetic; shows a mechanism works, not clinical quality)"

# ------------------------------------------------------------------ model sizes
# Size names of the model registries (lift3d.models.registry / .generation), so a config can be
# checked before anything is built.
TRANSLATION_SIZE_NAMES: tuple[str, ...] = ("tiny", "small", "base", "large")
GENERATION_SIZE_NAMES: tuple[str, ...] = ("tiny", "small", "base")

# ``evaluate --task generate --floor``: disjoint generated subsets (at the floor's count) whose
# mean score the ratios to the floor use, at most (`lift3d.evaluation.floor.generated_subsets`).
FLOOR_SUBSETS = 6
