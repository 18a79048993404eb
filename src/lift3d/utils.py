"""Small shared helpers: atomic writes, output-location checks, seeding, device choice.

Every file lift3d writes goes through `atomic_path`: the data goes to a temporary name beside
the target (``.<name>.lift3d-tmp-<host>-<pid>-<token><suffix>``, created with the process
umask's permissions) and reaches the target name only once complete. A user-facing output is
created exclusively (``overwrite=False``: a second writer of the same path fails) or replaced
on request (``overwrite=True``, logged). A temporary file is removed on every exit path of the
writing process; one left by a killed process is removed by the next `check_output_path` of
that output. An `OSError` while writing (permission, read-only file system, full disk) becomes
an `InputError` naming the target.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import random
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from lift3d.errors import InputError

log = logging.getLogger(__name__)

TEMP_TAG = ".lift3d-tmp-"
# .<base>.lift3d-tmp-<host>-<pid>-<token><suffix>; host: 8 hex digits of the host name's hash.
_TEMP_RE = re.compile(r"^\..*\.lift3d-tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]+")
# A temporary file of another host counts as left behind after this long (its process cannot
# be asked whether it still runs).
STALE_OTHER_HOST_S = 24 * 3600
# errno values of a failed link(2) on file systems without hard links.
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS, errno.EOPNOTSUPP}


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def temp_name(path: Path) -> str:
    """A fresh temporary name for `path`, in its folder, keeping its full suffix.

    ``.nii.gz`` stays ``.nii.gz`` so writers that pick a format from the extension still work.
    """
    base = path.name.split(".")[0] or "out"
    suffix = "".join(path.suffixes) or ".tmp"
    token = secrets.token_hex(4)
    return f".{base}{TEMP_TAG}{_host_tag()}-{os.getpid()}-{token}{suffix}"


def write_error(exc: OSError, path: str | Path) -> InputError:
    """The one-line error for an `OSError` met while writing `path`."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return InputError(f"cannot write ({reason}); nothing was written there", path)


def exists_error(path: str | Path, meanwhile: bool = False) -> InputError:
    """The one-line error for an output that exists (and may not be replaced)."""
    when = " (written by another process meanwhile)" if meanwhile else ""
    return InputError(f"output already exists{when}; pass --overwrite to replace it", path)


def _create_temp(path: Path) -> Path:
    """Create an empty temporary file beside `path` (mode 0666 less the process umask)."""
    for _ in range(100):
        tmp = path.parent / temp_name(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))


def commit_path(tmp: Path, path: Path, overwrite: bool | None = None) -> bool:
    """Move the complete file `tmp` onto `path`; see `atomic_path` for `overwrite`.

    Returns:
        True when an existing `path` was replaced.

    Raises:
        InputError: `overwrite` is False and `path` exists (created meanwhile by another writer).
        OSError: the move failed.
    """
    if overwrite is False:
        try:
            os.link(tmp, path)  # fails if `path` exists: the name is ours or nobody's
        except FileExistsError:
            raise exists_error(path, meanwhile=True) from None
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            # No hard links here: claim the name exclusively, then move the data onto it.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                raise exists_error(path, meanwhile=True) from None
            os.close(fd)
            os.replace(tmp, path)
        else:
            tmp.unlink()
        return False
    replaced = os.path.lexists(path)
    os.replace(tmp, path)
    if replaced and overwrite:
        log.info("replaced the existing %s (--overwrite)", path)
    return replaced


@contextlib.contextmanager
def atomic_path(path: str | Path, *, overwrite: bool | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds.

    Args:
        path: the file to write.
        overwrite: None (default) for lift3d's own bookkeeping files (run.json, checkpoints,
            logs): an existing file is replaced. False for a user-facing output: the file is
            created exclusively, so if `path` exists (or another writer creates it before this
            one finishes) this one fails and the other's file stays. True: an existing file is
            replaced, and the replacement is logged.

    Raises:
        InputError: `path` exists and `overwrite` is False; an `OSError` while writing
            (permission, read-only file system, full disk), naming `path`.

    Nothing is left behind on failure: the temporary file is removed on every exit path.
    """
    path = Path(path)
    if overwrite is False and os.path.lexists(path):
        raise exists_error(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temp(path)
    except OSError as exc:
        raise write_error(exc, path) from None
    try:
        try:
            yield tmp
            commit_path(tmp, path, overwrite)
        except OSError as exc:
            raise write_error(exc, path) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside `path` (named like `atomic_path`'s files), removed at exit."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / temp_name(path)
        tmp.mkdir()
    except OSError as exc:
        raise write_error(exc, path) from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str, *, overwrite: bool | None = None) -> None:
    """Write text to `path` through a temporary file and a rename (`atomic_path`)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """True for a temporary file or folder of `atomic_path` whose writer is gone.

    On this host: its process no longer runs. From another host (a shared file system): it is
    older than `STALE_OTHER_HOST_S`.
    """
    m = _TEMP_RE.match(path.name)
    if m is None:
        return False
    pid = int(m.group("pid"))
    if m.group("host") == _host_tag():
        return pid != os.getpid() and not _pid_alive(pid)
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    return age > STALE_OTHER_HOST_S


def clean_stale_temps(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Remove the temporary files of interrupted lift3d writers under `folder` (logged).

    Returns:
        The removed paths. Files that cannot be removed are reported and kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = f".*{TEMP_TAG}*"
    found = folder.rglob(pattern) if recursive else folder.glob(pattern)
    removed = []
    for path in sorted(found):
        if not is_stale_temp(path):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            log.warning("cannot remove %s, left by an interrupted run (%s)", path, exc.strerror)
            continue
        log.warning("removed %s, left by an interrupted run", path)
        removed.append(path)
    return removed


LOCK_NAME = ".lift3d.lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path, *, wait: bool = False, name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold an exclusive advisory lock on `folder` (``folder/<name>``) for the block.

    ``wait=False``, for outputs written over a long time by one process (a training run
    folder): a second lift3d process that asks for the same folder fails at once instead of
    writing into it, and the lock file is removed on release. ``wait=True``, for work a second
    process should reuse rather than redo (a data store): it waits for the holder, and the lock
    file is kept (removing it would let a waiter and a newcomer both hold a lock, on two
    different files). The lock goes with the process, so a killed run leaves no lock behind.

    Raises:
        InputError: ``wait=False`` and another process holds the lock; the folder cannot be
            written.
    """
    folder = Path(folder)
    path = folder / name
    try:
        import fcntl
    except ImportError:  # no flock on this platform: no lock
        yield path
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise write_error(exc, path) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise InputError(
                    "another lift3d process is writing into this folder; wait for it to finish "
                    "or choose another output",
                    folder,
                ) from None
            log.info("waiting for another lift3d process working in %s", folder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        if wait:
            yield path
            return
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
    finally:
        os.close(fd)


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _check_writable(out: Path) -> None:
    """Raise InputError unless the folder that will hold `out` can be written."""
    folder = out if out.is_dir() else out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # created later by the writer; the nearest existing one decides
    if not folder.is_dir():
        raise InputError("output folder is not writable (this is a file, not a folder)", folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError("output folder is not writable (permission denied or read-only)", folder)


def check_output_path(
    out: str | Path,
    *,
    inputs: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> Path:
    """Validate an output location before any work starts.

    Also removes temporary files left there by an interrupted lift3d run (`clean_stale_temps`;
    inside `out` when it is a folder, beside it otherwise).

    Args:
        out: file or folder the command will write.
        inputs: input files or dataset folders; `out` may not lie inside (or be) any of them,
            so inputs are never overwritten.
        overwrite: allow replacing an existing output.

    Returns:
        `out` as a Path.

    Raises:
        InputError: the output lies inside an input, exists and `overwrite` is False, or its
            folder is not writable.
    """
    out = Path(out)
    for inp in inputs:
        inp = Path(inp)
        if out.resolve() == inp.resolve() or (inp.is_dir() and _is_within(out, inp)):
            raise InputError(f"output path lies inside the input {inp}; choose another", out)
    if out.is_dir():
        clean_stale_temps(out)
    else:
        clean_stale_temps(out.parent, recursive=False)
    if out.exists() and not overwrite:
        if out.is_dir() and not any(out.iterdir()):
            _check_writable(out)
            return out
        raise exists_error(out)
    _check_writable(out)
    return out


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> str:
    """Map ``auto|cpu|cuda|cuda:N`` to a concrete torch device string.

    Raises:
        InputError: CUDA was asked for but is not available.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA device is available")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise InputError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where it cannot be read: not Linux)."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            flags = re.search(r"^flags\s*:(.*)$", f.read(), re.MULTILINE)
        if flags:
            return frozenset(flags.group(1).split())
    return frozenset()


def cpu_has_amx_bf16() -> bool:
    """True when the CPU has AMX-BF16 tile units, where bf16 matrix products run several times
    faster than fp32. AVX512-BF16 alone is not enough: on such a host (2 cores, torch
    2.13.0+cpu) a 1024^2 bf16 matmul ran at 75 GFLOP/s against 132 in fp32, and the demo's
    generation stages trained 10-20 % slower in bf16 than in fp32."""
    return "amx_bf16" in cpu_flags()


# mallopt(3) parameters of glibc (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
ALLOCATOR_ENV = "LIFT3D_MALLOC"
ALLOCATOR_CHOICES = ("reuse", "default")


def tune_allocator(reuse_by_default: bool = True) -> bool:
    """Keep freed tensor memory in the process heap instead of handing it back to the kernel.

    glibc serves every allocation above its mmap threshold (at most 32 MB; a batch of 64
    slices of 64^2 with 32 channels is 33.5 MB) with a fresh mmap and unmaps it on free, so a
    loop that makes and drops the same tensors every step page-faults through all of them
    again. With mmap off and no trimming a freed block is reused by the next step. Measured on
    a 2-core x86 CPU (BENCHMARKS.md, "Memory allocator"): a short `generate_demo` training run
    24 M -> 0.36 M minor faults, 18 % less wall time, the same weights to the bit, peak RSS
    +13 %; BraTS-size translation 2.3x faster but peak RSS +32-41 % (freed blocks of many
    sizes stay in the heap). Preloading jemalloc or tcmalloc, as PyTorch's CPU tuning guide advises,
    does the same; this needs nothing installed.

    ``LIFT3D_MALLOC=reuse`` applies it, ``LIFT3D_MALLOC=default`` keeps glibc's policy; unset,
    `reuse_by_default` decides (the CLI: training and the demo reuse, inference keeps the
    lower peak). Never applied when the user set glibc's own ``MALLOC_*`` / ``GLIBC_TUNABLES``
    variables, nor off Linux with glibc. Settings apply to allocations made afterwards in this
    process and the processes it forks (DataLoader workers).

    Returns:
        True when the settings were applied.

    Raises:
        InputError: LIFT3D_MALLOC is set to something else.
    """
    choice = os.environ.get(ALLOCATOR_ENV, "").strip().lower()
    if choice and choice not in ALLOCATOR_CHOICES:
        raise InputError(
            f"{ALLOCATOR_ENV}={os.environ[ALLOCATOR_ENV]!r}: use one of {', '.join(ALLOCATOR_CHOICES)}"
        )
    if choice == "default" or (not choice and not reuse_by_default):
        return False
    if any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in os.environ):
        return False
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = (
            libc.mallopt(_M_MMAP_MAX, 0)
            and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
            and libc.mallopt(_M_TOP_PAD, 64 << 20)
        )
    except (OSError, AttributeError):
        return False
    if ok:
        log.debug(
            "allocator: freed memory is kept for reuse (%s=default to turn off)", ALLOCATOR_ENV
        )
    return bool(ok)
