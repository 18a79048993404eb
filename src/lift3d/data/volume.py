"""Volumes with exact geometry: voxel array + 4x4 affine, read from and written to NIfTI / MetaImage.

Conventions (those of nibabel): ``Volume.array`` is indexed ``[i, j, k]`` in the file's voxel
order, and ``Volume.affine`` maps a voxel index ``(i, j, k, 1)`` to RAS+ world millimetres. A
MetaImage (``.mha``/``.mhd``, LPS world, ``z, y, x`` array order in SimpleITK) is converted on read
and back on write, so any supported file round-trips: voxels exactly, affine to float precision.
"""

from __future__ import annotations

import copy
import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lift3d.constants import LPS_TO_RAS
from lift3d.errors import InputError
from lift3d.utils import atomic_dir, atomic_path, commit_path, exists_error, write_error

NIFTI_SUFFIXES = (".nii", ".nii.gz")
METAIMAGE_SUFFIXES = (".mha", ".mhd")
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + METAIMAGE_SUFFIXES

# RAS <-> LPS: flip the first two world axes.


def image_suffix(path: str | Path) -> str:
    """The image suffix of `path` (``.nii.gz``, ``.nii``, ``.mha``, ``.mhd``) or ``""``."""
    name = str(path).lower()
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd"):
        if name.endswith(suffix):
            return suffix
    return ""


def is_image_path(path: str | Path) -> bool:
    return image_suffix(path) != ""


@dataclass
class Volume:
    """A 3D image: voxels plus the affine that places them in the world.

    Attributes:
        array: (I, J, K) voxels in file order.
        affine: (4, 4) voxel index -> RAS+ mm.
        header: the source NIfTI header, kept so a write reproduces qform/sform codes and units;
            None for volumes that did not come from a NIfTI file.
        path: the file the volume was read from, if any.
    """

    array: np.ndarray
    affine: np.ndarray
    header: Any = field(default=None, repr=False)
    path: Path | None = None

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.array.ndim != 3:
            raise ValueError(f"Volume holds 3D arrays, got shape {self.array.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes (i, j, k)."""
        zooms = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return tuple(float(z) for z in zooms)  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Closest axis codes of the array axes, e.g. ``"RAS"`` or ``"LPS"``."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    def with_array(self, array: np.ndarray) -> Volume:
        """Same geometry (and header), new voxels of the same shape."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} differs from the volume's {self.array.shape}")
        return Volume(array, self.affine.copy(), copy.deepcopy(self.header), None)

    def same_grid(self, other: Volume, atol_mm: float = 1e-3) -> bool:
        """True when both volumes have the same shape and affines equal within `atol_mm`."""
        return self.shape == other.shape and bool(
            np.allclose(self.affine, other.affine, atol=atol_mm, rtol=0)
        )


def nifti_codes(path: str | Path) -> tuple[int, int] | None:
    """(qform_code, sform_code) of a NIfTI file's header (voxels not read); None otherwise."""
    import nibabel as nib

    if image_suffix(path) not in NIFTI_SUFFIXES:
        return None
    header = nib.load(str(path)).header
    return int(header["qform_code"]), int(header["sform_code"])


def with_nifti_codes(volume: Volume, qform_code: int, sform_code: int) -> Volume:
    """`volume` with a NIfTI header that makes `write_volume` store these qform/sform codes
    (e.g. 4, MNI, as in the files a model was trained on) instead of 1 (scanner)."""
    import nibabel as nib

    header = volume.header.copy() if isinstance(volume.header, nib.Nifti1Header) else None
    if header is None:
        header = nib.Nifti1Header()
        header.set_xyzt_units("mm", "sec")
    header["qform_code"], header["sform_code"] = int(qform_code), int(sform_code)
    return Volume(volume.array, volume.affine.copy(), header, volume.path)


def reorient(volume: Volume, axcodes: str = "RAS") -> Volume:
    """Permute/flip array axes so they point along `axcodes`; lossless (no resampling).

    The world position of every voxel is unchanged: the affine is updated to match.
    """
    import nibabel.orientations as nio

    src = nio.io_orientation(volume.affine)
    dst = nio.axcodes2ornt(tuple(axcodes))
    transform = nio.ornt_transform(src, dst)
    array = nio.apply_orientation(volume.array, transform)
    affine = volume.affine @ nio.inv_ornt_aff(transform, volume.array.shape)
    return Volume(np.ascontiguousarray(array), affine, copy.deepcopy(volume.header), volume.path)


def _native(array: np.ndarray) -> np.ndarray:
    """`array` in native byte order (big-endian files read as big-endian arrays otherwise)."""
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


def _squeeze_to_3d(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """Drop trailing singleton dims beyond the third; raise unless exactly 3D remains."""
    shape = tuple(int(s) for s in shape)
    if len(shape) > 3 and all(s == 1 for s in shape[3:]):
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"expected a 3D image, got {len(shape)}D with shape {shape}", path)
    return shape  # type: ignore[return-value]


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    # mmap=False: the voxels are read into memory now, so a truncated or corrupt .nii(.gz) fails
    # here (nibabel is lazy otherwise) and the array is not tied to the file.
    img = nib.load(str(path), mmap=False)
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"not a NIfTI image ({type(img).__name__})", path)
    shape = _squeeze_to_3d(img.shape, path)
    # dataobj keeps the stored dtype when there is no scaling, so voxels round-trip exactly;
    # scaled integers (scl_slope/scl_inter) come back as floats.
    array = _native(np.asarray(np.asanyarray(img.dataobj)).reshape(shape))
    header = img.header.copy()
    # nibabel moves the scaling out of the header on load; keep it so a write can store the
    # same integers with the same scaling (see _write_nifti).
    slope, inter = img.dataobj.slope, img.dataobj.inter
    if (slope, inter) != (1.0, 0.0):
        header.set_slope_inter(slope, inter)
    return Volume(array, img.affine.copy(), header, path)


def _read_metaimage(path: Path) -> Volume:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"expected a scalar image, got {img.GetNumberOfComponentsPerPixel()} components", path
        )
    ndim = img.GetDimension()
    size = tuple(int(s) for s in img.GetSize())  # (x, y, z, ...)
    shape = _squeeze_to_3d(size, path)
    array = sitk.GetArrayFromImage(img).reshape(shape[::-1]).transpose(2, 1, 0)  # -> (i, j, k)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(ndim, ndim)[:3, :3]
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(img.GetSpacing()[:3])
    lps[:3, 3] = img.GetOrigin()[:3]
    return Volume(_native(array), LPS_TO_RAS @ lps, None, path)


def read_volume(path: str | Path) -> Volume:
    """Read a 3D NIfTI-1/2 (``.nii``, ``.nii.gz``) or MetaImage (``.mha``, ``.mhd``) file.

    Args:
        path: the image file.

    Returns:
        The volume, with its affine in RAS+ mm.

    Raises:
        InputError: missing file, unsupported extension, unreadable/truncated file, not 3D.
    """
    path = Path(path)
    suffix = image_suffix(path)
    if not suffix:
        raise InputError(
            f"unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)})", path
        )
    if not path.exists():
        raise InputError("file not found", path)
    if path.is_dir():
        raise InputError("expected an image file, found a folder", path)
    try:
        volume = _read_nifti(path) if suffix in NIFTI_SUFFIXES else _read_metaimage(path)
    except InputError:
        raise
    except Exception as exc:  # nibabel/SimpleITK/zlib raise many types for corrupt files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read image ({reason[:200]})", path) from None
    if not np.all(np.isfinite(volume.affine)):
        raise InputError("image geometry (affine) is not finite", path)
    if abs(np.linalg.det(volume.affine[:3, :3])) < 1e-12:
        raise InputError("image geometry (affine) is degenerate (zero voxel size?)", path)
    return volume


def _storable(array: np.ndarray) -> np.ndarray:
    """`array` in a dtype both formats store: bool -> uint8, float16 -> float32, native order."""
    if array.dtype.kind not in "biuf":
        raise ValueError(f"cannot store voxels of dtype {array.dtype} (need bool, int or float)")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    return _native(np.asarray(array))


def _scaled_integers(array: np.ndarray, header: Any) -> tuple[np.ndarray, float, float] | None:
    """The source's stored integers when float `array` is exactly ``raw * slope + inter``.

    A scaled-integer file (``scl_slope`` != 1) reads as floats; writing those floats back as the
    same integers with the same scaling reproduces the file, not a 4x larger float copy.
    """
    slope, inter = header.get_slope_inter()
    dtype = header.get_data_dtype().newbyteorder("=")
    if slope is None or array.dtype.kind != "f" or dtype.kind not in "iu":
        return None
    inter = 0.0 if inter is None else inter
    raw = np.rint((array.astype(np.float64) - inter) / slope)
    info = np.iinfo(dtype)
    if raw.size and (raw.min() < info.min or raw.max() > info.max):
        return None
    raw = raw.astype(dtype)
    # nibabel's read scaling: raw * slope + inter in float64, cast to the read dtype.
    if not np.array_equal((raw * np.float64(slope) + inter).astype(array.dtype), array):
        return None
    return raw, float(slope), float(inter)


def _write_nifti(volume: Volume, path: Path) -> None:
    import nibabel as nib

    array = _storable(volume.array)
    affine = volume.affine
    source = volume.header if isinstance(volume.header, nib.Nifti1Header) else None
    if source is None:
        img = nib.Nifti1Image(array, affine, dtype=array.dtype)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
        nib.save(img, str(path))
        return
    qcode, scode = int(source["qform_code"]), int(source["sform_code"])
    scaled = _scaled_integers(array, source)
    data = array if scaled is None else scaled[0]
    # The constructor copies the header (units, descrip, intent ...) and drops its scaling.
    img = nib.Nifti1Image(data, affine, header=source, dtype=data.dtype)
    if qcode == 0 and scode == 0:
        # No orientation in the source: keep it that way only if the fallback (pixdim) affine
        # still describes the voxels; otherwise record the affine as scanner coordinates.
        img.set_qform(affine, code=0)
        if not np.allclose(img.header.get_base_affine(), affine, atol=1e-5, rtol=0):
            qcode = scode = 1
    # Keep the source's qform/sform codes (a qform-only file stays qform-only). A code-0 form
    # still gets the affine written, so pixdim (voxel sizes) stays right after a reorientation.
    img.set_qform(affine, code=qcode)
    img.set_sform(affine, code=scode)
    if scaled is not None:
        img.header.set_slope_inter(scaled[1], scaled[2])
    nib.save(img, str(path))


def _write_metaimage(volume: Volume, path: Path) -> None:
    import SimpleITK as sitk

    array = _storable(volume.array)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    lps = LPS_TO_RAS @ volume.affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    direction = lps[:3, :3] / spacing
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(d) for d in direction.ravel()])
    img.SetOrigin([float(o) for o in lps[:3, 3]])
    try:
        sitk.WriteImage(img, str(path), useCompression=True)
    except RuntimeError as exc:  # SimpleITK reports I/O failures (full disk ...) this way
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = lines[-1][:200] if lines else str(exc)
        raise OSError(errno.EIO, f"image writer failed: {reason}") from None


def _write_mhd(volume: Volume, path: Path, overwrite: bool | None) -> None:
    """Write a ``.mhd`` + ``.zraw`` pair: both into a temporary folder, data file moved first."""
    with atomic_dir(path) as tmp_dir:
        try:
            _write_metaimage(volume, tmp_dir / path.name)
            header = tmp_dir / path.name
            for part in sorted(tmp_dir.iterdir()):
                if part != header:
                    commit_path(part, path.parent / part.name, overwrite)
            commit_path(header, path, overwrite)
        except OSError as exc:
            raise write_error(exc, path) from None


def check_finite_output(volume: Volume, path: str | Path) -> None:
    """Raise InputError if a volume about to be written as a result has NaN or Inf voxels."""
    array = volume.array
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputError(
            f"the result has {bad} NaN or Inf voxels (damaged model weights, or an input far "
            "outside the training range); nothing was written",
            path,
        )


def write_volume(
    volume: Volume,
    path: str | Path,
    *,
    overwrite: bool | None = None,
    require_finite: bool = False,
) -> Path:
    """Write `volume` to `path` (format from the extension), atomically.

    The file appears only once complete (temporary name, then rename), with the permissions
    the process umask gives. A ``.mhd`` writes its ``.raw``/``.zraw`` companion beside it.

    Args:
        volume: the volume.
        path: output file.
        overwrite: as in `lift3d.utils.atomic_path`: None replaces an existing file, False
            creates the file exclusively (an existing one is an error), True replaces it and
            says so.
        require_finite: refuse NaN/Inf voxels (results of a model must never hold them).

    Returns:
        The written path.

    Raises:
        InputError: unsupported suffix, the file exists (``overwrite=False``), non-finite voxels
            (``require_finite``), or the file cannot be written (permission, full disk ...).
    """

    path = Path(path)
    suffix = image_suffix(path)
    if not suffix:
        raise InputError(
            f"unsupported output type (expected one of {', '.join(SUPPORTED_SUFFIXES)})", path
        )
    if require_finite:
        check_finite_output(volume, path)
    if overwrite is False and path.exists():
        raise exists_error(path)
    if suffix == ".mhd":  # header + data file pair: SimpleITK names the data file itself
        _write_mhd(volume, path, overwrite)
        return path
    with atomic_path(path, overwrite=overwrite) as tmp:
        if suffix in NIFTI_SUFFIXES:
            _write_nifti(volume, tmp)
        else:
            _write_metaimage(volume, tmp)
    return path
