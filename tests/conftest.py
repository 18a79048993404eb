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
