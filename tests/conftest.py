"""Shared fixtures: tiny synthetic data; no test downloads anything."""

from __future__ import annotations

import os

import pytest

# Keep tests predictable on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(1)
    yield


# Phantom datasets (lift3d.data.synthetic): written once per session, 4 cases at 32^3. Treat the
# folders as read-only; copy them (shutil.copytree) before modifying files.
PHANTOM_CASES = 4
PHANTOM_SHAPE = (32, 32, 32)
PHANTOM_SEED = 0


@pytest.fixture(scope="session")
def phantom_brats_dir(tmp_path_factory):
    """A BraTS-layout phantom dataset: 4 cases, t1n/t1c/t2w/t2f/seg at 32^3 (LPS affine)."""
    from lift3d.data.synthetic import write_phantom_dataset

    out = tmp_path_factory.mktemp("phantom") / "brats"
    write_phantom_dataset(out, "brats", cases=PHANTOM_CASES, shape=PHANTOM_SHAPE, seed=PHANTOM_SEED)
    return out


@pytest.fixture(scope="session")
def phantom_synthrad_dir(tmp_path_factory):
    """A SynthRAD-layout phantom dataset: 4 cases under Task1/brain, mr/ct/mask at 32^3."""
    from lift3d.data.synthetic import write_phantom_dataset

    out = tmp_path_factory.mktemp("phantom") / "synthrad"
    write_phantom_dataset(
        out, "synthrad", cases=PHANTOM_CASES, shape=PHANTOM_SHAPE, seed=PHANTOM_SEED
    )
    return out
