"""Atomic and exclusive writes, output-location checks, leftovers, locks, device choice."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import threading
import time

import pytest

from lift3d import utils
from lift3d.errors import InputError
from lift3d.utils import atomic_path, atomic_write_text, check_output_path, resolve_device


def test_atomic_path_renames_on_success_and_keeps_suffix(tmp_path):
    target = tmp_path / "sub" / "vol.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == target.parent
        assert not target.exists()
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert [p.name for p in target.parent.iterdir()] == ["vol.nii.gz"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_write_text(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"


def test_check_output_path_refuses_existing_without_overwrite(tmp_path):
    out = tmp_path / "pred.nii.gz"
    out.write_bytes(b"x")
    with pytest.raises(InputError, match="--overwrite") as exc:
        check_output_path(out)
    assert str(out) in str(exc.value)
    assert check_output_path(out, overwrite=True) == out


def test_check_output_path_accepts_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert check_output_path(tmp_path / "empty") == tmp_path / "empty"


@pytest.mark.parametrize("rel", ["data", "data/case1/out.nii.gz", "data/sub"])
def test_check_output_path_refuses_inside_input(tmp_path, rel):
    data = tmp_path / "data"
    (data / "case1").mkdir(parents=True)
    with pytest.raises(InputError, match="inside the input"):
        check_output_path(tmp_path / rel, inputs=[data], overwrite=True)


def test_resolve_device_cpu_and_errors():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(InputError):
        resolve_device("tpu")


# ------------------------------------------------------------------ output ownership


def test_atomic_path_exclusive_keeps_a_file_that_appears_meanwhile(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(InputError, match="another process meanwhile") as exc:
        with atomic_path(target, overwrite=False) as tmp:
            tmp.write_bytes(b"mine")
            target.write_bytes(b"theirs")  # another writer finishes first
    assert str(target) in str(exc.value)
    assert target.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        with atomic_path(target, overwrite=False):
            pass


def test_atomic_path_overwrite_replaces_and_says_so(tmp_path, caplog):
    target = tmp_path / "out.json"
    target.write_text("old")
    caplog.set_level("INFO", logger="lift3d.utils")
    atomic_write_text(target, "new", overwrite=True)
    assert target.read_text() == "new"
    assert f"replaced the existing {target}" in caplog.text
    caplog.clear()
    atomic_write_text(target, "newer")  # lift3d's own files: replaced quietly
    assert target.read_text() == "newer" and caplog.text == ""


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_path_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x", overwrite=False)
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_write_errors_become_one_line_input_errors(tmp_path):
    if shutil.which("chattr") is None:
        pytest.skip("no chattr here")
    folder = tmp_path / "locked"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    try:
        with pytest.raises(InputError, match=r"cannot write \(") as exc:
            atomic_write_text(folder / "a.txt", "x")
        assert str(folder / "a.txt") in str(exc.value)
        with pytest.raises(InputError, match="not writable"):
            check_output_path(folder / "b.txt")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert list(folder.iterdir()) == []


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_are_removed_live_ones_kept(tmp_path):
    host = utils._host_tag()
    (tmp_path / "case").mkdir()
    dead = tmp_path / "case" / f".sct{utils.TEMP_TAG}{host}-{dead_pid()}-00ff.nii.gz"
    live = tmp_path / f".sct{utils.TEMP_TAG}{host}-{os.getpid()}-00ff.nii.gz"
    other_old = tmp_path / f".a{utils.TEMP_TAG}00000000-123-00ff.json"
    other_new = tmp_path / f".b{utils.TEMP_TAG}00000000-123-00ff.json"
    users = tmp_path / ".sct.abcdefgh.nii.gz"  # not one of ours: never touched
    for p in (dead, live, other_old, other_new, users):
        p.write_bytes(b"x")
    old = time.time() - utils.STALE_OTHER_HOST_S - 60
    os.utime(other_old, (old, old))
    removed = utils.clean_stale_temps(tmp_path)
    assert sorted(removed) == sorted([dead, other_old])
    assert live.exists() and other_new.exists() and users.exists()
    # check_output_path cleans the output's folder the same way
    dead2 = tmp_path / f".x{utils.TEMP_TAG}{host}-{dead_pid()}-00ff.nii.gz"
    dead2.write_bytes(b"x")
    check_output_path(tmp_path / "new.nii.gz")
    assert not dead2.exists()


def test_folder_lock_is_exclusive(tmp_path):
    with utils.folder_lock(tmp_path) as lock:
        assert lock.exists()
        code = (
            "import sys; from lift3d.utils import folder_lock\n"
            "from lift3d.errors import InputError\n"
            "try:\n"
            "    with folder_lock(sys.argv[1]): sys.exit(0)\n"
            "except InputError as exc:\n"
            "    print(exc); sys.exit(3)\n"
        )
        other = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True
        )
        assert other.returncode == 3 and "another lift3d process" in other.stdout
    assert not lock.exists()
    with utils.folder_lock(tmp_path):  # free again once released
        pass


def test_folder_lock_wait_blocks_until_released_and_keeps_the_file(tmp_path):
    order: list[str] = []
    held = threading.Event()

    def holder() -> None:
        with utils.folder_lock(tmp_path, wait=True, name=".build.lock"):
            held.set()
            time.sleep(0.3)
            order.append("holder done")

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    with utils.folder_lock(tmp_path, wait=True, name=".build.lock") as lock:
        order.append("waiter in")
    t.join()
    assert order == ["holder done", "waiter in"]
    assert lock.exists()  # kept: a waiter and a newcomer must lock the same file


# A child process that allocates, touches and frees a 64 MB tensor ten times and prints its
# minor page faults (glibc maps and unmaps such a block each time unless tuned).
_FAULTS_CHILD = """
import resource, sys
import torch
from lift3d.utils import tune_allocator
print(tune_allocator())
for _ in range(6):  # the heap grows to its working size first (not counted)
    torch.ones(16 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    a = torch.ones(16 << 20)
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_child(env: dict[str, str]) -> tuple[str, int]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "LIFT3D_"))}
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_CHILD],
        env={**keep, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_tune_allocator_reuses_freed_blocks_instead_of_faulting_them_in_again():
    applied, tuned = _faults_child({})
    assert applied == "True"
    kept, default = _faults_child({"LIFT3D_MALLOC": "default"})
    assert kept == "False"
    pages = (64 << 20) // 4096  # one block's pages
    assert default >= 9 * pages  # every new block faults in again ...
    assert tuned < pages // 10  # ... a tuned heap reuses the same pages
    # the user's own glibc settings win
    assert _faults_child({"MALLOC_ARENA_MAX": "2"})[0] == "False"


def test_tune_allocator_choice_comes_from_the_environment(monkeypatch):
    for key in [k for k in os.environ if k.startswith("MALLOC_") or k == "LIFT3D_MALLOC"]:
        monkeypatch.delenv(key)
    assert utils.tune_allocator(reuse_by_default=False) is False  # inference keeps glibc's
    monkeypatch.setenv("LIFT3D_MALLOC", "default")
    assert utils.tune_allocator(reuse_by_default=True) is False
    monkeypatch.setenv("LIFT3D_MALLOC", "fast")
    with pytest.raises(InputError, match="LIFT3D_MALLOC='fast': use one of reuse, default"):
        utils.tune_allocator()


def test_cli_refuses_an_unknown_allocator_choice_in_one_line(monkeypatch, capsys):
    from lift3d.cli import main

    monkeypatch.setenv("LIFT3D_MALLOC", "fast")
    assert main(["inspect", "nowhere"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LIFT3D_MALLOC='fast'" in err[0]
