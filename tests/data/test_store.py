"""The preprocessed on-disk store: build, reuse, invalidation, atomic build, bounded memory."""

from __future__ import annotations

import errno
import json
import mmap
import os
import shutil
import tracemalloc

import numpy as np
import pytest
import torch

from lift3d.config import TranslateConfig, load_config
from lift3d.configs import config_path
from lift3d.constants import BRATS_MODALITIES
from lift3d.data import discovery, store
from lift3d.data.datasets import SliceDataset, VolumeDataset
from lift3d.data.discovery import discover_cases
from lift3d.errors import InputError
from lift3d.training.translate import train_translation

SHAPE = (16, 24, 20)  # model grid (D, H, W)
MODS = ("t1n", "t2f")


@pytest.fixture
def data_dir(phantom_brats_dir, tmp_path):
    """A private copy of the phantom (the tests change files)."""
    out = tmp_path / "brats"
    shutil.copytree(phantom_brats_dir, out)
    return out


@pytest.fixture
def decodes(monkeypatch):
    """Every decode of a source file by the data layer."""
    calls = []
    real = discovery.read_volume

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(discovery, "read_volume", counting)
    discovery.clear_decode_cache()
    return calls


def stored(data_dir, store_dir, modalities=MODS, shape=SHAPE, **kwargs):
    cases = discover_cases(data_dir, validate=False)
    return VolumeDataset(cases, modalities, shape, store_dir=store_dir, **kwargs)


def settings_folders(store_dir):
    return sorted(p for p in store_dir.iterdir() if p.is_dir())


def test_store_items_equal_in_memory_items(data_dir, tmp_path):
    cases = discover_cases(data_dir, validate=False)
    plain = VolumeDataset(cases, MODS, SHAPE)
    ds = stored(data_dir, tmp_path / "store")
    assert len(ds) == len(plain) == 4
    for i in (0, 3):
        a, b = plain[i], ds[i]
        assert a["case_id"] == b["case_id"] and a["record"] == b["record"]
        for mod in (*MODS, "mask"):
            assert b[mod].dtype == torch.float32 and torch.equal(a[mod], b[mod]), mod
    slices_a, slices_b = SliceDataset(plain, context=1), SliceDataset(ds, context=1)
    for i in (0, 17, len(slices_a) - 1):
        for mod in (*MODS, "mask"):
            assert torch.equal(slices_a[i][mod], slices_b[i][mod])
    # masks are stored as uint8 (exact), images as float32
    arrays, _ = ds.load_arrays(0)
    assert arrays["mask"].dtype == np.uint8 and arrays["t1n"].dtype == np.float32


def test_reuse_never_decodes_again(data_dir, tmp_path, decodes):
    stored(data_dir, tmp_path / "store")
    assert len(decodes) == 4 * (len(MODS) + 0)  # the phantom's BraTS cases have no mask file
    decodes.clear()
    ds = stored(data_dir, tmp_path / "store")
    ds[0], SliceDataset(ds)[5]
    assert decodes == []
    (folder,) = settings_folders(tmp_path / "store")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["cases"]) == 4
    assert json.loads((folder / "settings.json").read_text())["shape"] == list(SHAPE)


def test_changed_source_is_rebuilt(data_dir, tmp_path, decodes):
    ds = stored(data_dir, tmp_path / "store")
    before = ds[1]["t1n"].clone()
    path = ds.cases[1].paths["t1n"]
    # rewrite one source with other content (same file name)
    shutil.copyfile(ds.cases[2].paths["t1n"], path)
    decodes.clear()
    again = stored(data_dir, tmp_path / "store")
    assert len(decodes) == len(MODS)  # only case 1, all its modalities (shared foreground)
    assert not torch.equal(again[1]["t1n"], before)
    # touched only (same bytes, new mtime): rebuilt too, never trusted on the old identity
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    decodes.clear()
    stored(data_dir, tmp_path / "store")
    assert len(decodes) == len(MODS)
    # the replaced case's old files are gone: 4 cases x (2 modalities + mask)
    (folder,) = settings_folders(tmp_path / "store")
    assert len(list((folder / "cases").glob("*.npy"))) == 4 * 3


def test_other_settings_build_another_store(data_dir, tmp_path, decodes):
    stored(data_dir, tmp_path / "store")
    decodes.clear()
    other = stored(data_dir, tmp_path / "store", shape=(16, 24, 24))
    assert len(decodes) == 4 * len(MODS) and other[0]["t1n"].shape == (1, 16, 24, 24)
    decodes.clear()
    stored(data_dir, tmp_path / "store", modalities=("t1n",))  # foreground from t1n alone
    assert len(decodes) == 4
    cases = discover_cases(data_dir, validate=False)
    VolumeDataset(cases, MODS, SHAPE, slice_axis="coronal", store_dir=tmp_path / "store")
    assert len(settings_folders(tmp_path / "store")) == 4


def test_manifest_of_other_settings_is_not_trusted(data_dir, tmp_path, decodes):
    ds = stored(data_dir, tmp_path / "store")
    folder = ds.store.folder
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["settings"]["shape"] = [8, 8, 8]  # e.g. copied over from elsewhere
    (folder / "manifest.json").write_text(json.dumps(manifest))
    decodes.clear()
    stored(data_dir, tmp_path / "store")
    assert len(decodes) == 4 * len(MODS)


def test_truncated_file_is_rebuilt(data_dir, tmp_path, decodes):
    ds = stored(data_dir, tmp_path / "store")
    name = ds.store.entries[2]["files"]["t2f"]["name"]
    path = ds.store.folder / "cases" / name
    path.write_bytes(path.read_bytes()[:-100])
    decodes.clear()
    again = stored(data_dir, tmp_path / "store")
    assert len(decodes) == len(MODS)
    assert again[2]["t2f"].shape == (1, *SHAPE)


def test_failed_build_leaves_nothing_trusted(data_dir, tmp_path, monkeypatch, decodes):
    real_save = np.save
    calls = []

    def full_disk(file, array, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # case 1's second array: the disk is full
            file.write(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(file, array, **kwargs)

    monkeypatch.setattr(store.np, "save", full_disk)
    with pytest.raises(InputError, match="No space left|full"):
        stored(data_dir, tmp_path / "store")
    monkeypatch.setattr(store.np, "save", real_save)
    (folder,) = settings_folders(tmp_path / "store")
    names = [p.name for p in (folder / "cases").iterdir()]
    assert not [n for n in names if n.startswith(".")]  # no temporary file left
    assert not (folder / "manifest.json").exists()  # nothing listed: nothing trusted
    decodes.clear()
    ds = stored(data_dir, tmp_path / "store")
    assert len(decodes) == 4 * len(MODS)  # every case built again, none reused
    assert len(json.loads((folder / "manifest.json").read_text())["cases"]) == 4
    assert ds[1]["t2f"].shape == (1, *SHAPE)


def test_bad_case_fails_or_is_skipped(data_dir, tmp_path):
    cases = discover_cases(data_dir, validate=False)
    bad = cases[2].paths["t2f"]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated .nii.gz
    with pytest.raises(InputError):
        stored(data_dir, tmp_path / "store")
    ds = stored(data_dir, tmp_path / "store", skip_bad=True)
    assert len(ds) == 3 and cases[2].case_id not in [c.case_id for c in ds.cases]


def test_read_only_complete_store_opens_without_writing(data_dir, tmp_path, decodes):
    ds = stored(data_dir, tmp_path / "store")
    folder = ds.store.folder
    for path in (folder, folder / "cases"):
        path.chmod(0o555)
    try:
        decodes.clear()
        assert stored(data_dir, tmp_path / "store")[0]["t1n"].shape == (1, *SHAPE)
        assert decodes == []
    finally:
        for path in (folder, folder / "cases"):
            path.chmod(0o755)


def test_dataset_holds_no_per_case_arrays(data_dir, tmp_path):
    ds = stored(data_dir, tmp_path / "store", modalities=BRATS_MODALITIES)
    slices = SliceDataset(ds, context=1)
    arrays, _ = ds.load_arrays(0)
    assert all(isinstance(a.base, mmap.mmap) for a in arrays.values())  # memory maps
    case_bytes = sum(a.nbytes for a in arrays.values())
    del arrays
    tracemalloc.start()
    try:
        for _epoch in range(2):
            for i in range(len(slices)):
                slices[i]
            for i in range(len(ds)):
                ds[i]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one whole case at a time (the volume items), never the dataset's 4 cases
    assert peak < 2.5 * case_bytes
    assert ds._memory == {} and slices._last is None

    def ndarrays(obj):
        return [k for k, v in vars(obj).items() if isinstance(v, np.ndarray | torch.Tensor)]

    assert ndarrays(ds) == [] and ndarrays(slices) == [] and ndarrays(ds.store) == []


def test_resolve_store_dir(tmp_path):
    assert store.resolve_store_dir("", tmp_path / "data") is None
    auto = store.resolve_store_dir("auto", tmp_path / "data")
    assert auto == (tmp_path / "data.lift3d-store").resolve()
    assert store.resolve_store_dir(str(tmp_path / "s"), tmp_path / "data") == tmp_path / "s"


def test_train_through_the_store(phantom_brats_dir, tmp_path, decodes):
    data = tmp_path / "brats"
    shutil.copytree(phantom_brats_dir, data)
    overrides = ["translator.steps=3", "mixer.steps=1", "mixer.z_chunk=8", "task=missing"]
    cfg = load_config(
        TranslateConfig, config_path("translate_tiny"), [*overrides, "data.store=auto"]
    )
    cfg.data.root = str(data)
    run = train_translation(cfg, tmp_path / "run")
    assert (run / "model.safetensors").is_file()
    assert (tmp_path / "brats.lift3d-store").is_dir()
    # a second run on the same data and settings decodes nothing
    decodes.clear()
    train_translation(cfg, tmp_path / "run2")
    assert decodes == []
