r"""The SimpleITK boundary: checked reading of image files and SimpleITK <-> :class:`Image` conversion.

SimpleITK reads some broken files without a word, so :func:`read_sitk_image` checks what it does
not, from the file itself, before ITK reads it:

* **Integrity.** A gzip/zlib stream (``.nii.gz``, ``.img.gz``, gzip-encoded NRRD, compressed
  MetaImage) is decompressed to its end and its CRC/length trailer verified; the voxel data
  must be as long as the header says (``.nii``, ``.hdr``/``.img``, ``.mha``/``.mhd``, NRRD).
  ITK fills a truncated ``.nii.gz`` or ``.nii`` with zeros; here it is an error.
* **Geometry.** The direction matrix must be a rotation (orthonormal columns, possibly a
  reflection). A sheared or scaled one (an ``.mha`` ``TransformMatrix``, NRRD
  ``space directions``, a NIfTI sform) is refused with the matrix: ITK would coerce it when
  writing, and outputs would no longer line up with the input. A direction that is within
  :data:`ORTHONORMAL_TOLERANCE_VOXELS` of a rotation over the whole grid (rounding in a text
  header) is replaced by that rotation. A NIfTI file whose sform disagrees with the placement
  ITK reads (qform or ``pixdim``) gets an :class:`ImageWarning`.

The cost is one extra decompression pass (about 0.1 s for a 12 MB CT on one core).
"""
from __future__ import annotations

import re
import struct
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import SimpleITK as sitk

from ..spatial.geometry import Geometry, GeometryError
from ..spatial.image import Image, ImageError

__all__ = ["Image", "ImageError", "ImageWarning", "from_sitk", "to_sitk", "read_sitk_image",
           "ORTHONORMAL_TOLERANCE_VOXELS"]

#: A direction is accepted (and snapped to the nearest rotation) when no voxel centre of the grid
#: moves by more than this fraction of the smallest voxel size; beyond it the file is refused.
ORTHONORMAL_TOLERANCE_VOXELS = 0.1
_SNAP_BELOW = 1e-6  # |D^T D - I| under this is exact enough: keep the header's bits untouched
_FIX = "re-export or re-copy it"


class ImageWarning(UserWarning):
    """An image is usable but probably not what the user meant (e.g. a label map as intensity)."""


class _Corrupt(Exception):
    """Internal: a compressed stream or data block is broken; the message says how."""


# ------------------------------------------------------------------------------------- conversion
def from_sitk(image: sitk.Image, name: str = "image", dtype=np.float32) -> Image:
    """Convert a 3-D scalar SimpleITK image to an :class:`Image` (array cast to ``dtype``).

    Raises:
        ImageError: for 2-D/4-D or multi-component images.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(
            f"{name}: has {image.GetNumberOfComponentsPerPixel()} components per voxel (a vector/RGB image); "
            "registration needs a scalar (grayscale) volume: convert it to grayscale first"
        )
    if image.GetDimension() != 3:
        raise ImageError(
            f"{name}: is {image.GetDimension()}-D with size {image.GetSize()}; registration needs a 3-D volume"
            + (" (for a time series, extract one 3-D frame first)" if image.GetDimension() == 4 else "")
        )
    array = sitk.GetArrayFromImage(image)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    try:
        geometry = Geometry.from_sitk(image)
    except GeometryError as exc:
        raise ImageError(f"{name}: {exc}") from None
    return Image(array, geometry, name)


def to_sitk(image: Image, dtype=None) -> sitk.Image:
    """Convert an :class:`Image` to SimpleITK (geometry copied; ``dtype`` casts the array first)."""
    array = image.array if dtype is None else image.array.astype(dtype)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    out = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    image.geometry.apply_to_sitk(out)
    return out


# ---------------------------------------------------------------------------------------- reading
def read_sitk_image(path: Path, what: str = "image") -> sitk.Image:
    """Read an image file or a DICOM series folder with SimpleITK, after the checks above.

    Args:
        path: the file, or a folder holding one DICOM series.
        what: what the file should hold, for messages ("image", "displacement field").

    Returns:
        The SimpleITK image (direction snapped to the nearest rotation when within tolerance).

    Raises:
        ImageError: missing, empty, truncated/corrupt or unreadable file, or a sheared or scaled
            direction matrix; the message names the file, the reason and what to do.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file or folder; check the path")
    if path.is_dir():
        return _check_direction(_read_dicom_series(path), path)
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes); it was not written completely: {_FIX}")
    try:
        sform = _check_file(path)
    except _Corrupt as exc:
        raise ImageError(f"{path}: the file is truncated or corrupt: {exc}; {_FIX}") from None
    try:
        with _itk_warnings(sform is None):
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = next((line for line in lines if "ERROR" in line or "Could not" in line or "Unable" in line),
                      lines[-1] if lines else "unknown reason")
        raise ImageError(
            f"{path}: cannot be read as an {what} ({detail}); supported formats are NIfTI (.nii, .nii.gz), "
            "NRRD (.nrrd), MetaImage (.mha, .mhd) and DICOM series folders"
        ) from None
    image = _check_direction(image, path)
    if sform is not None:
        _compare_nifti_placement(path, image, *sform)
    return image


def _read_dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    try:
        series_ids = reader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as exc:  # pragma: no cover - GDCM failures are rare
        raise ImageError(f"{folder}: cannot scan the folder for DICOM series ({exc})") from None
    if not series_ids:
        raise ImageError(
            f"{folder}: is a folder without a DICOM series; give an image file (.nii.gz, .nrrd, .mha) "
            "or a folder holding the .dcm slices of one series"
        )
    # Several series in one folder: take the one with most slices, as a viewer would show first.
    best = max(series_ids, key=lambda sid: len(reader.GetGDCMSeriesFileNames(str(folder), sid)))
    files = reader.GetGDCMSeriesFileNames(str(folder), best)
    if len(series_ids) > 1:
        warnings.warn(
            f"{folder}: holds {len(series_ids)} DICOM series; reading series {best} ({len(files)} slices), the "
            "largest; put each series in its own folder to choose another",
            ImageWarning, stacklevel=4,
        )
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise ImageError(f"{folder}: the DICOM series {best} cannot be read ({str(exc).strip()[-200:]})") from None


@contextmanager
def _itk_warnings(show: bool) -> Iterator[None]:
    """Silence ITK's console warnings while reading a file whose header problem we report ourselves."""
    before = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(bool(show) and before)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(before)


# ------------------------------------------------------------------------------- direction checks
def _corners(size) -> np.ndarray:
    """(8, 3) continuous indices (x, y, z) of the outermost voxel centres of a grid of ``size``."""
    hi = np.maximum(np.asarray(size, dtype=np.float64) - 1.0, 0.0)
    return np.array([[i, j, k] for i in (0.0, hi[0]) for j in (0.0, hi[1]) for k in (0.0, hi[2])])


def _nearest_rotation(direction: np.ndarray) -> np.ndarray:
    """The orthonormal matrix closest to ``direction`` (polar factor; keeps a reflection)."""
    u, _, vt = np.linalg.svd(direction)
    return u @ vt


def _deviation_mm(direction: np.ndarray, spacing: np.ndarray, size) -> float:
    """Largest distance (mm) a voxel centre moves when ``direction`` is replaced by its nearest rotation."""
    step = (direction - _nearest_rotation(direction)) * spacing
    return float(np.max(np.linalg.norm(_corners(size) @ step.T, axis=1)))


def _format_matrix(m: np.ndarray) -> str:
    return "[" + ", ".join("[" + ", ".join(f"{v:.6g}" for v in row) + "]" for row in np.asarray(m)) + "]"


def _defects(direction: np.ndarray) -> str:
    """Words for what makes ``direction`` no rotation: axis lengths and angles."""
    norms = np.linalg.norm(direction, axis=0)
    words = [f"axis {'xyz'[k]} has length {norms[k]:.6g} instead of 1" for k in range(3) if abs(norms[k] - 1) > 1e-4]
    unit = direction / np.where(norms > 0, norms, 1.0)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        angle = float(np.degrees(np.arccos(np.clip(unit[:, a] @ unit[:, b], -1.0, 1.0))))
        if abs(angle - 90.0) > 1e-3:
            words.append(f"axes {'xyz'[a]} and {'xyz'[b]} meet at {angle:.3g} degrees instead of 90")
    return "; ".join(words) or "it is not orthonormal"


def _refuse_direction(path: Path, direction: np.ndarray, spacing: np.ndarray, size, where: str) -> None:
    """Raise when ``direction`` is further than the tolerance from a rotation over the grid."""
    if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-9:
        raise ImageError(f"{path}: the direction matrix in its header ({where}) is singular or not finite: "
                         f"{_format_matrix(direction)}; the header is corrupt: {_FIX}")
    deviation = _deviation_mm(direction, spacing, size)
    if deviation > ORTHONORMAL_TOLERANCE_VOXELS * float(np.min(spacing)):
        raise ImageError(
            f"{path}: the direction matrix in its header ({where}) is not a rotation: {_defects(direction)}. "
            f"Direction (columns = voxel axes x, y, z): {_format_matrix(direction)}. ITK would coerce it, and "
            f"outputs would be written on a grid up to {deviation:.3g} mm away from the image. Re-export the image "
            "with an orthonormal direction, or resample it onto an orthonormal grid first (e.g. 3D Slicer's "
            "Resample Scalar Volume; for a tilted-gantry CT, load the DICOM series with acquisition geometry "
            "regularization) and give that file"
        )


def _check_direction(image: sitk.Image, path: Path) -> sitk.Image:
    """Refuse a sheared/scaled direction of an image ITK has read; snap a nearly orthonormal one."""
    if image.GetDimension() != 3:
        return image  # from_sitk refuses it with its own message
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    _refuse_direction(path, direction, spacing, image.GetSize(), "as read by ITK")
    if np.max(np.abs(direction.T @ direction - np.eye(3))) > _SNAP_BELOW:
        image.SetDirection([float(v) for v in _nearest_rotation(direction).reshape(-1)])
    return image


# ------------------------------------------------------------------------------- streams and sizes
def _inflate(path: Path, offset: int = 0, head: int = 0) -> tuple[int, bytes]:
    """Decompress the gzip/zlib stream(s) of ``path`` from byte ``offset`` to the end.

    Returns:
        (uncompressed length, first ``head`` uncompressed bytes).

    Raises:
        _Corrupt: the stream ends early, or a CRC/length check or the data itself is bad.
    """
    total, first = 0, b""
    decomp = zlib.decompressobj(32 + zlib.MAX_WBITS)  # 32: accept a gzip or a zlib header
    with open(path, "rb") as stream:
        stream.seek(offset)
        try:
            while True:
                chunk = stream.read(1 << 20)
                if not chunk:
                    break
                while chunk:
                    out = decomp.decompress(chunk)
                    total += len(out)
                    if len(first) < head:
                        first += out[: head - len(first)]
                    if not decomp.eof:
                        break
                    chunk = decomp.unused_data  # next gzip member, or trailing bytes
                    if not chunk.startswith(b"\x1f\x8b"):
                        return total, first
                    decomp = zlib.decompressobj(32 + zlib.MAX_WBITS)
        except zlib.error as exc:
            raise _Corrupt(f"the compressed data is damaged (zlib: {exc})") from None
    if not decomp.eof:
        raise _Corrupt(f"the compressed data ends early (after {total} uncompressed bytes, without its end marker)")
    return total, first


def _need(have: int, need: int, what: str) -> None:
    if have < need:
        raise _Corrupt(f"the header describes {need} bytes of {what} but the file holds only {have}")


def _check_file(path: Path) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Integrity and header-geometry checks by format.

    Returns:
        A NIfTI sform (matrix (3, 3), origin (3,), LPS) whose scales ITK will complain about (the
        caller silences ITK and compares the placement itself), else None.

    Raises:
        _Corrupt / ImageError: see :func:`read_sitk_image`. A header this module cannot parse
        is left to ITK.
    """
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz", ".hdr", ".img", ".img.gz")):
            return _check_nifti(path)
        if name.endswith((".mha", ".mhd")):
            _check_metaimage(path)
        elif name.endswith((".nrrd", ".nhdr")):
            _check_nrrd(path)
        elif name.endswith(".gz"):
            _inflate(path)
    except (ValueError, struct.error, IndexError, OSError) as exc:
        if isinstance(exc, ImageError):
            raise
    return None


# ------------------------------------------------------------------------------------------ NIfTI
def _nifti_parts(path: Path) -> tuple[Path, Optional[Path]]:
    """(header file, separate data file or None) of a NIfTI-1/Analyze image."""
    name = path.name.lower()
    if name.endswith((".img", ".img.gz")):
        stem = path.name[: -len(".img.gz")] if name.endswith(".gz") else path.name[:-4]
        return path.with_name(stem + ".hdr"), path
    if name.endswith(".hdr"):
        for ext in (".img", ".img.gz"):
            if path.with_name(path.name[:-4] + ext).exists():
                return path, path.with_name(path.name[:-4] + ext)
        return path, None
    return path, None


def _read_head(path: Path, n: int) -> tuple[bytes, int]:
    """First ``n`` bytes and the total (uncompressed, verified) length of a plain or gzip file."""
    with open(path, "rb") as stream:
        magic = stream.read(2)
    if magic == b"\x1f\x8b":
        total, first = _inflate(path, head=n)
        return first, total
    with open(path, "rb") as stream:
        return stream.read(n), path.stat().st_size


def _check_nifti(path: Path) -> Optional[tuple[np.ndarray, np.ndarray]]:
    header_path, data_path = _nifti_parts(path)
    if not header_path.exists():
        return None  # ITK says what is missing
    raw, length = _read_head(header_path, 348)
    endian = next((e for e in "<>" if len(raw) >= 4 and struct.unpack_from(e + "i", raw, 0)[0] == 348), None)
    if endian is None:
        return None  # not NIfTI-1/Analyze: ITK decides
    _need(len(raw), 348, "NIfTI header")
    dim = struct.unpack_from(endian + "8h", raw, 40)
    bitpix = struct.unpack_from(endian + "h", raw, 72)[0]
    pixdim = np.asarray(struct.unpack_from(endian + "8f", raw, 76), dtype=np.float64)
    vox_offset = int(struct.unpack_from(endian + "f", raw, 108)[0])
    sform_code = struct.unpack_from(endian + "h", raw, 254)[0]
    if not 1 <= dim[0] <= 7 or bitpix <= 0:
        return None
    n_bytes = int(np.prod([max(int(d), 1) for d in dim[1:dim[0] + 1]], dtype=np.int64)) * bitpix // 8
    if data_path is not None:
        length = _read_head(data_path, 0)[1]
    elif raw[344:347] != b"n+1":
        return None  # two-file header read alone: ITK finds (or misses) the data file
    _need(length, vox_offset + n_bytes, f"voxel data ({'x'.join(str(d) for d in dim[1:dim[0] + 1])} voxels of "
                                        f"{bitpix} bits from byte {vox_offset})")
    if sform_code <= 0 or dim[0] < 3:
        return None
    srow = np.asarray(struct.unpack_from(endian + "12f", raw, 280), dtype=np.float64).reshape(3, 4)
    matrix, size = srow[:, :3], [max(int(d), 1) for d in dim[1:4]]
    norms = np.linalg.norm(matrix, axis=0)
    if not np.all(norms > 0):
        return None
    _refuse_nifti_sform(path, matrix / norms, norms, size)
    if not np.any(np.abs(norms - pixdim[1:4]) > 1e-3):  # ITK's test for "unexpected scales in sform"
        return None
    flip = np.array([-1.0, -1.0, 1.0])  # RAS (NIfTI) -> LPS (ITK)
    return flip[:, None] * matrix, flip * srow[:, 3]


def _refuse_nifti_sform(path: Path, direction: np.ndarray, spacing: np.ndarray, size) -> None:
    try:
        _refuse_direction(path, direction, spacing, size, "NIfTI sform, RAS")
    except ImageError as exc:
        raise ImageError(
            f"{exc}. ITK and 3D Slicer ignore a sheared sform (they use the qform when there is one); if the qform "
            "is the placement you want, set sform_code to 0 in the header"
        ) from None


def _compare_nifti_placement(path: Path, image: sitk.Image, sform_matrix: np.ndarray,
                             sform_origin: np.ndarray) -> None:
    """Warn when the placement ITK read differs from the NIfTI sform (LPS) by more than the tolerance."""
    geometry = Geometry.from_sitk(image)
    corners = _corners(image.GetSize())
    itk_points = geometry.index_to_physical(corners)
    sform_points = corners @ sform_matrix.T + sform_origin
    gap = float(np.max(np.linalg.norm(itk_points - sform_points, axis=1)))
    if gap > ORTHONORMAL_TOLERANCE_VOXELS * float(np.min(geometry.spacing)):
        warnings.warn(
            f"{path.name}: its NIfTI header holds two placements that differ by up to {gap:.3g} mm: the sform "
            f"(voxel size {np.round(np.linalg.norm(sform_matrix, axis=0), 4).tolist()} mm) and the qform/pixdim "
            f"(voxel size {np.round(geometry.spacing, 4).tolist()} mm), which ITK, 3D Slicer and AD-RegNet use. "
            "If the image looks stretched or misplaced, fix the header so that both agree",
            ImageWarning, stacklevel=4,
        )


# ------------------------------------------------------------------------------- MetaImage, NRRD
_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def _text_header(path: Path, end: "re.Pattern[bytes]") -> tuple[dict[str, str], int]:
    """Key/value lines of a text header and the byte offset where the data starts."""
    with open(path, "rb") as stream:
        blob = stream.read(1 << 16)
    match = end.search(blob)
    stop = match.end() if match is not None else len(blob)
    fields = {}
    for line in blob[:stop].decode("latin-1").splitlines():
        key, sep, value = line.partition("=" if "=" in line and ":" not in line.split("=")[0] else ":")
        if sep and not line.startswith("#"):
            fields[key.strip().lower()] = value.strip()
    return fields, stop


def _numbers(text: str) -> np.ndarray:
    return np.asarray([float(v) for v in re.findall(r"[-+0-9.eE]+", text)], dtype=np.float64)


def _check_metaimage(path: Path) -> None:
    fields, offset = _text_header(path, re.compile(rb"ElementDataFile\s*=[^\n]*\n"))
    try:
        size = [int(v) for v in fields.get("dimsize", "").split()]
        spacing = _numbers(fields.get("elementspacing", fields.get("elementsize", "1 1 1")))
        matrix = next((_numbers(fields[k]) for k in ("transformmatrix", "rotation", "orientation") if k in fields),
                      None)
    except ValueError:
        return  # unreadable numbers: ITK's own message is clearer than a guess
    if len(size) == 3 and len(spacing) == 3:
        if not np.all(spacing > 0):
            raise ImageError(f"{path}: the header gives voxel size {spacing.tolist()} mm (ElementSpacing); every "
                             "voxel size must be positive: fix the header")
        if matrix is not None and matrix.size == 9:  # MetaIO lists the direction column by column
            _refuse_direction(path, matrix.reshape(3, 3).T, spacing, size, "TransformMatrix")
    data_file = fields.get("elementdatafile", "")
    item = _MET_BYTES.get(fields.get("elementtype", ""))
    if not size or item is None or data_file.upper() == "LIST" or "%" in data_file or " " in data_file:
        return
    n_bytes = int(np.prod(size, dtype=np.int64)) * item * int(fields.get("elementnumberofchannels", "1") or 1)
    target = path if data_file.upper() == "LOCAL" else path.parent / data_file
    if target != path:
        offset = 0
        if not target.exists():
            raise ImageError(f"{path}: its data file {target.name} (ElementDataFile) is missing; copy it next to "
                             "the header")
    header_size = int(float(fields.get("headersize", "0") or 0))
    if fields.get("compresseddata", "false").lower() == "true":
        _need(_inflate(target, offset)[0], n_bytes, "uncompressed voxel data")
    elif header_size >= 0:
        _need(target.stat().st_size - offset - header_size, n_bytes, "voxel data")


_NRRD_BYTES = {1: ("char", "int8", "uchar", "uint8"), 2: ("short", "int16", "ushort", "uint16"),
               4: ("int", "int32", "uint", "uint32", "float"), 8: ("longlong", "long long", "int64", "uint64",
                                                                   "ulonglong", "ulong long", "double")}


def _nrrd_item_bytes(kind: str) -> Optional[int]:
    text = kind.lower().replace("unsigned ", "u").replace("signed ", "").replace("_t", "").replace(" int", "").strip()
    return next((n for n, names in _NRRD_BYTES.items() if text in names), None)


def _check_nrrd(path: Path) -> None:
    with open(path, "rb") as stream:
        if not stream.read(4) == b"NRRD":
            return
    fields, offset = _text_header(path, re.compile(rb"\r?\n\r?\n"))
    directions = [_numbers(v) for v in re.findall(r"\(([^)]*)\)", fields.get("space directions", ""))]
    sizes = [int(v) for v in fields.get("sizes", "").split() if v.isdigit()]
    domain = [n for n, kind in zip(sizes, (fields.get("kinds", "") or "domain " * len(sizes)).split())
              if kind.lower() in ("domain", "space")]
    if len(directions) == 3 and all(d.size == 3 for d in directions) and len(domain) == 3:
        matrix = np.stack(directions, axis=1)  # columns = axis steps including the voxel size
        norms = np.linalg.norm(matrix, axis=0)
        if np.all(norms > 0):
            _refuse_direction(path, matrix / norms, norms, domain, "space directions")
    data_file = fields.get("data file", fields.get("datafile", ""))
    item = _nrrd_item_bytes(fields.get("type", ""))
    if not sizes or item is None or " " in data_file or "%" in data_file or "line skip" in fields:
        return
    target = path.parent / data_file if data_file else path
    if data_file:
        offset = 0
        if not target.exists():
            raise ImageError(f"{path}: its data file {target.name} (data file:) is missing; copy it next to the header")
    n_bytes = int(np.prod(sizes, dtype=np.int64)) * item
    skip = int(fields.get("byte skip", "0") or 0)
    encoding = fields.get("encoding", "raw").lower()
    if encoding in ("gzip", "gz"):
        _need(_inflate(target, offset)[0] - max(skip, 0), n_bytes, "uncompressed voxel data")
    elif encoding == "raw" and skip >= 0:
        _need(target.stat().st_size - offset - skip, n_bytes, "voxel data")
