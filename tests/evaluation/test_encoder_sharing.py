"""One shared evaluation encoder file (--eval-encoder) for evaluations started at the same time."""

from __future__ import annotations

import threading
import time

import numpy as np

from lift3d.evaluation.encoder import (
    eval_encoder_for,
    eval_encoder_identity,
    save_eval_encoder,
    train_eval_encoder,
)
from lift3d.utils import folder_lock

SHAPE = (16, 16, 16)


def _refs(tmp_path):
    rng = np.random.default_rng(0)
    vols = [rng.random(SHAPE, dtype=np.float32) for _ in range(2)]
    files = []
    for i in range(2):
        f = tmp_path / f"case{i}.nii.gz"
        f.write_bytes(b"x" * (10 + i))  # only its size goes into the identity
        files.append((f"case{i}", f))
    return vols, files


def _shared(vols, refs, tmp_path, path, results, key):
    _, identity = eval_encoder_for(
        vols, ref_dir=tmp_path, refs=refs, eval_shape=SHAPE, eval_encoder=path, steps=3
    )
    results[key] = identity


def test_a_held_lock_makes_the_second_evaluation_wait_then_load(tmp_path):
    vols, refs = _refs(tmp_path)
    path = tmp_path / "eval" / "eval_encoder.safetensors"
    path.parent.mkdir()
    results: dict = {}
    with folder_lock(path.parent, wait=True, name=f"{path.name}.lock"):
        waiter = threading.Thread(target=_shared, args=(vols, refs, tmp_path, path, results, "w"))
        waiter.start()
        time.sleep(0.5)
        # It neither trained nor saved while the first holder works.
        assert waiter.is_alive() and not path.exists()
        base = train_eval_encoder(vols, steps=3)
        identity = eval_encoder_identity(
            base, "meanstd", seed=1234, steps=3, ref_dir=tmp_path, refs=refs, eval_shape=SHAPE
        )
        save_eval_encoder(base, identity, path)
    waiter.join(timeout=60)
    assert not waiter.is_alive()
    assert results["w"]["loaded_from"] == str(path.resolve())
    assert results["w"]["weights_sha256"] == identity["weights_sha256"]


def test_two_evaluations_at_once_share_one_encoder(tmp_path):
    vols, refs = _refs(tmp_path)
    path = tmp_path / "eval" / "eval_encoder.safetensors"  # its folder does not exist yet
    results: dict = {}
    threads = [
        threading.Thread(target=_shared, args=(vols, refs, tmp_path, path, results, k))
        for k in ("a", "b")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    a, b = results["a"], results["b"]
    assert a["weights_sha256"] == b["weights_sha256"]
    # One trained and saved it, the other loaded that file.
    assert sorted(("saved_to" in a, "saved_to" in b)) == [False, True]
    assert sorted(("loaded_from" in a, "loaded_from" in b)) == [False, True]
