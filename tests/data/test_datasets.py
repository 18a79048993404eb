"""Volume and slice datasets: model-space items, caching (memory and disk), collation, splits."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lift3d.constants import BRATS_MODALITIES
from lift3d.data import discovery
from lift3d.data.datasets import (
    SliceDataset,
    VolumeDataset,
    collate_volumes,
    split_cases,
)
from lift3d.data.discovery import discover_cases
from lift3d.data.layouts import Case
from lift3d.data.preprocess import PreprocessRecord, restore_volume
from lift3d.data.volume import read_volume
from lift3d.errors import InputError

SHAPE = (16, 24, 20)  # model grid (D, H, W), smaller than the 32^3 phantom: crop + pad


@pytest.fixture
def read_calls(monkeypatch):
    """Count every decode of a source file done by the data layer."""
    calls: list[Path] = []
    real = discovery.read_volume

    def counting(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(discovery, "read_volume", counting)
    discovery.clear_decode_cache()
    return calls


@pytest.fixture
def brats_cases(phantom_brats_dir):
    return discover_cases(phantom_brats_dir, validate=False)


def test_volume_items_in_model_space(brats_cases):
    ds = VolumeDataset(brats_cases[:2], BRATS_MODALITIES, SHAPE)
    assert len(ds) == 2
    item = ds[1]
    assert item["case_id"] == brats_cases[1].case_id
    for mod in (*BRATS_MODALITIES, "mask"):
        assert item[mod].shape == (1, *SHAPE) and item[mod].dtype == torch.float32
    for mod in BRATS_MODALITIES:
        assert 0.0 <= item[mod].min() and item[mod].max() <= 1.0
        assert item[mod].max() > 0.9  # scaled to the 99.5th percentile, so it reaches ~1
    mask = item["mask"]
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    # BraTS has no mask file: the foreground is where any MR modality is non-zero
    any_mr = torch.stack([item[m] for m in BRATS_MODALITIES]).amax(0) > 0
    assert torch.equal(mask > 0, any_mr)


def test_record_restores_source_grid(brats_cases):
    ds = VolumeDataset(brats_cases[:1], ["t1n"], (32, 32, 32))
    item = ds[0]
    record = PreprocessRecord.from_dict(item["record"])
    restored = restore_volume(item["t1n"][0].numpy(), record, "t1n")
    source = read_volume(brats_cases[0].paths["t1n"])
    assert restored.shape == source.shape
    np.testing.assert_allclose(restored.affine, source.affine, atol=1e-5)
    low, high = record.intensity["t1n"]["window"]  # MR clip window (source units)
    inside = (source.array > low) & (source.array < high)
    assert inside.sum() > 1000
    np.testing.assert_allclose(restored.array[inside], source.array[inside], rtol=1e-4)


def test_second_epoch_does_not_decode(brats_cases, read_calls):
    ds = VolumeDataset(brats_cases[:2], BRATS_MODALITIES, SHAPE)
    assert read_calls == []  # construction decodes nothing
    first = [ds[i] for i in range(len(ds))]
    assert len(read_calls) == 2 * 4
    second = [ds[i] for i in range(len(ds))]
    assert len(read_calls) == 2 * 4  # served from memory
    assert torch.equal(first[0]["t2f"], second[0]["t2f"])
    second[0]["t2f"].zero_()  # items are copies: changing one leaves the cache intact
    assert torch.equal(first[0]["t2f"], ds[0]["t2f"])


def test_without_cache_every_epoch_decodes(brats_cases, read_calls):
    ds = VolumeDataset(brats_cases[:1], ["t1n"], SHAPE, cache=False)
    ds[0]
    ds[0]
    assert len(read_calls) == 2


def test_validation_then_first_epoch_decodes_each_file_once(phantom_brats_dir, read_calls):
    cases = discover_cases(phantom_brats_dir)  # full validation decodes every file
    n_files = sum(len(c.paths) for c in cases)
    assert len(read_calls) == n_files
    ds = VolumeDataset(cases, BRATS_MODALITIES, SHAPE)
    for i in range(len(ds)):
        ds[i]
    assert len(read_calls) == n_files  # validation handed the decoded volumes over


def test_disk_cache_reused_by_a_new_dataset(brats_cases, read_calls, tmp_path):
    cache = tmp_path / "cache"
    ds = VolumeDataset(brats_cases[:2], ["t1n", "t2w"], SHAPE, cache_dir=cache)
    first = ds[0]
    assert len(list(cache.glob("*.npz"))) == 1 and len(read_calls) == 2
    again = VolumeDataset(brats_cases[:2], ["t1n", "t2w"], SHAPE, cache_dir=cache)
    item = again[0]
    assert len(read_calls) == 2  # a fresh dataset (e.g. a later run) reads the .npz only
    for key in ("t1n", "t2w", "mask"):
        assert torch.equal(item[key], first[key])
    assert item["record"] == first["record"]
    other = VolumeDataset(brats_cases[:2], ["t1n", "t2w"], (8, 8, 8), cache_dir=cache)
    other[0]
    assert len(read_calls) == 4  # other settings -> other cache entry


def test_disk_cache_invalidated_by_changed_source(phantom_brats_dir, tmp_path, read_calls):
    data = tmp_path / "data"
    shutil.copytree(phantom_brats_dir, data)
    cases = discover_cases(data, validate=False)
    ds = VolumeDataset(cases[:1], ["t1n"], SHAPE, cache_dir=tmp_path / "cache")
    ds[0]
    path = cases[0].paths["t1n"]
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    VolumeDataset(cases[:1], ["t1n"], SHAPE, cache_dir=tmp_path / "cache")[0]
    assert len(read_calls) == 2
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_damaged_disk_cache_is_rebuilt(brats_cases, tmp_path):
    cache = tmp_path / "cache"
    good = VolumeDataset(brats_cases[:1], ["t1n"], SHAPE, cache_dir=cache)[0]
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(b"broken")
    item = VolumeDataset(brats_cases[:1], ["t1n"], SHAPE, cache_dir=cache)[0]
    assert torch.equal(item["t1n"], good["t1n"])
    assert np.load(entry)["a_t1n"].shape == SHAPE  # rewritten


def test_synthrad_mask_file_is_the_foreground(phantom_synthrad_dir):
    cases = discover_cases(phantom_synthrad_dir, validate=False)
    ds = VolumeDataset(cases[:1], ["mr", "ct"], SHAPE)
    item = ds[0]
    assert item["ct"].shape == (1, *SHAPE) and 0 <= item["ct"].min() and item["ct"].max() <= 1
    both = VolumeDataset(cases[:1], ["mr", "mask"], SHAPE)[0]
    assert torch.equal(both["mask"], item["mask"])  # the mask modality itself, cropped
    assert item["record"]["intensity"]["ct"]["window"] == [-1024.0, 3000.0]


def test_missing_modality_rejected_at_construction(brats_cases):
    with pytest.raises(InputError, match="'ct' is missing") as err:
        VolumeDataset(brats_cases, ["t1n", "ct"], SHAPE)
    assert err.value.path.name.endswith("-ct.nii.gz")


def test_collate_volumes_with_dataloader(brats_cases):
    ds = VolumeDataset(brats_cases[:3], ["t1n", "t1c"], SHAPE)
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_volumes)))
    assert batch["t1n"].shape == (3, 1, *SHAPE)
    assert batch["case_id"] == [c.case_id for c in brats_cases[:3]]
    assert isinstance(batch["record"], list) and len(batch["record"]) == 3
    assert batch["record"][2] == ds[2]["record"]


def test_slice_dataset(brats_cases, read_calls):
    vols = VolumeDataset(brats_cases[:2], ["t1n", "t2w"], SHAPE)
    slices = SliceDataset(vols, modalities=["t2w"])
    assert read_calls == []  # nothing loaded at construction
    assert len(slices) == 2 * SHAPE[0]
    first, last = slices[SHAPE[0]], slices[2 * SHAPE[0] - 1]
    assert first["case_id"] == last["case_id"] == brats_cases[1].case_id
    assert (first["index"], first["depth"]) == (0, 0.0)
    assert (last["index"], last["depth"]) == (SHAPE[0] - 1, 1.0)
    assert "t1n" not in first and first["t2w"].shape == (1, SHAPE[1], SHAPE[2])
    mid = slices[SHAPE[0] + 5]
    assert torch.equal(mid["t2w"], vols[1]["t2w"][:, 5])
    assert mid["depth"] == pytest.approx(5 / (SHAPE[0] - 1))
    assert len(read_calls) == 2  # case 1 (t1n + t2w) decoded once across all its slices
    slices[0]
    assert len(read_calls) == 4  # case 0 only when first asked for
    batch = collate_volumes([slices[i] for i in range(4)])
    assert batch["t2w"].shape == (4, 1, SHAPE[1], SHAPE[2])
    assert batch["depth"].dtype == torch.float32 and batch["index"].tolist() == [0, 1, 2, 3]


def test_slice_dataset_other_planes(brats_cases):
    vols = VolumeDataset(brats_cases[:1], ["t1n"], SHAPE)  # axial: (D, H, W) = (S, A, R)
    coronal = SliceDataset(vols, axis="coronal")
    assert len(coronal) == SHAPE[1] and coronal[3]["t1n"].shape == (1, SHAPE[0], SHAPE[2])
    assert torch.equal(coronal[3]["t1n"], vols[0]["t1n"][:, :, 3])
    sagittal = SliceDataset(vols, axis="sagittal")
    assert sagittal.axis == 2 and len(sagittal) == SHAPE[2]
    assert SliceDataset(vols, axis="axial").axis == 0
    with pytest.raises(ValueError):
        SliceDataset(vols, axis=3)
    with pytest.raises(ValueError):
        SliceDataset(vols, modalities=["ct"])


def test_split_cases_deterministic_and_disjoint():
    cases = [Case(f"c{i:02d}", "manifest", Path("."), {}) for i in range(20)]
    train, val = split_cases(cases, 0.25, seed=3)
    assert len(val) == 5 and len(train) == 15
    assert {c.case_id for c in train}.isdisjoint(c.case_id for c in val)
    again = split_cases(list(reversed(cases)), 0.25, seed=3)  # order of discovery irrelevant
    assert [c.case_id for c in again[1]] == [c.case_id for c in val]
    other = split_cases(cases, 0.25, seed=4)
    assert [c.case_id for c in other[1]] != [c.case_id for c in val]
    assert split_cases(cases[:2], 0.1, 0)[1] != []  # at least one validation case
    assert len(split_cases(cases[:2], 0.9, 0)[0]) == 1  # and one training case
    assert split_cases(cases, 0.0, 0) == (sorted(cases, key=lambda c: c.case_id), [])
    with pytest.raises(ValueError):
        split_cases(cases, 1.0, 0)
