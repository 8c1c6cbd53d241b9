r"""Checks of an image file against its own header, before SimpleITK reads it (:func:`io.image.read_sitk_image`).

* **Integrity**: a gzip/zlib stream is decompressed to its end and its CRC/length trailer verified; the voxel
  data must be as long as the header says (NIfTI, Analyze, MetaImage, NRRD); NaN and infinite float voxels
  of NIfTI files are counted in the file itself (ITK reads them as 0).
* **Geometry**: a direction matrix that is not a rotation (sheared or scaled), zero, negative or NaN voxel
  sizes in MetaImage / NRRD headers, and a NIfTI sform that disagrees with ``pixdim``.
"""
from __future__ import annotations

import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..spatial.geometry import Geometry
from ..spatial.image import ImageError
from .numbers import whole_number_problem

__all__ = ["ImageWarning", "ORTHONORMAL_TOLERANCE_VOXELS", "check_file", "compare_sform", "nearest_rotation",
           "refuse_direction", "snap_needed", "Corrupt"]

#: A direction is accepted (and snapped to the nearest rotation) when no voxel centre of the grid
#: moves by more than this fraction of the smallest voxel size; beyond that the file is refused.
ORTHONORMAL_TOLERANCE_VOXELS = 0.1
_SNAP_ABOVE = 1e-6  # max |D^T D - I| below this is exact enough: the header's values are kept as they are
_FLIP = np.array([-1.0, -1.0, 1.0])  # RAS (NIfTI) <-> LPS (ITK)


class ImageWarning(UserWarning):
    """An image is usable but probably not what the user meant (e.g. a label map as intensity)."""


class Corrupt(Exception):
    """A compressed stream or data block is broken; the message says how (internal to the io package)."""


def snap_needed(direction: np.ndarray) -> bool:
    """True when ``direction`` is far enough from orthonormal to be replaced by its nearest rotation."""
    return float(np.max(np.abs(direction.T @ direction - np.eye(3)))) > _SNAP_ABOVE


# ------------------------------------------------------------------------------- direction checks
def _corners(size) -> np.ndarray:
    """(8, 3) continuous indices (x, y, z) of the outermost voxel centres of a grid of ``size``."""
    hi = np.maximum(np.asarray(size, dtype=np.float64) - 1.0, 0.0)
    return np.array([[i, j, k] for i in (0.0, hi[0]) for j in (0.0, hi[1]) for k in (0.0, hi[2])])


def nearest_rotation(direction: np.ndarray) -> np.ndarray:
    """The orthonormal matrix closest to ``direction`` (its polar factor; keeps a reflection)."""
    u, _, vt = np.linalg.svd(direction)
    return u @ vt


def _defects(direction: np.ndarray) -> str:
    """Words for what keeps ``direction`` from being a rotation: axis lengths and angles."""
    norms = np.linalg.norm(direction, axis=0)
    words = [f"axis {'xyz'[k]} has length {norms[k]:.6g} instead of 1" for k in range(3) if abs(norms[k] - 1) > 1e-4]
    unit = direction / np.where(norms > 0, norms, 1.0)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        angle = float(np.degrees(np.arccos(np.clip(unit[:, a] @ unit[:, b], -1.0, 1.0))))
        if abs(angle - 90.0) > 1e-3:
            words.append(f"axes {'xyz'[a]} and {'xyz'[b]} meet at {angle:.4g} degrees instead of 90")
    return "; ".join(words) or "its columns are not orthonormal"


def refuse_direction(path: Path, direction: np.ndarray, spacing: np.ndarray, size, where: str,
                      hint: str = "") -> None:
    """Raise when a voxel centre moves by more than the tolerance if ``direction`` became a rotation."""
    spacing = np.asarray(spacing, dtype=np.float64)
    if not (np.all(np.isfinite(direction)) and np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
        return  # ITK or Geometry refuses non-finite values and zero spacing with their own message
    step = (direction - nearest_rotation(direction)) * spacing
    deviation = float(np.max(np.linalg.norm(_corners(size) @ step.T, axis=1)))
    if deviation > ORTHONORMAL_TOLERANCE_VOXELS * float(np.min(spacing)):
        raise ImageError(
            f"{path}: the direction matrix in its header ({where}) is not a rotation: {_defects(direction)}. "
            f"Direction (columns = voxel axes x, y, z): {(np.round(direction, 6) + 0.0).tolist()}. ITK would coerce "
            f"it, and outputs would be written on a grid up to {deviation:.3g} mm away from the image. Re-export the "
            "image with an orthonormal direction, or resample it onto an orthonormal grid first (e.g. 3D Slicer's "
            "Resample Scalar Volume; for a tilted-gantry CT, load the DICOM series with acquisition geometry "
            f"regularization) and give that file{hint}"
        )


# -------------------------------------------------------------------------------- file integrity
class _NonFinite:
    """Counts NaN and infinite values among ``count`` floats of ``dtype`` that start at byte ``start``
    of a stream fed to it chunk by chunk."""

    def __init__(self, dtype: np.dtype, start: int, count: int):
        self.dtype, self.start, self.left = np.dtype(dtype), start, count
        self.position, self.carry, self.found = 0, b"", 0

    def __call__(self, chunk: bytes) -> None:
        begin, self.position = max(self.start - self.position, 0), self.position + len(chunk)
        if self.left <= 0 or begin >= len(chunk):
            return
        data = self.carry + chunk[begin:]
        usable = min(len(data) // self.dtype.itemsize, self.left)
        values = np.frombuffer(data, dtype=self.dtype, count=usable)
        self.found += usable - int(np.count_nonzero(np.isfinite(values)))
        self.left -= usable
        self.carry = data[usable * self.dtype.itemsize:]


def _inflate(path: Path, offset: int = 0, head: int = 0, sink=None) -> tuple[int, bytes]:
    """Decompress the gzip/zlib stream(s) of ``path`` from byte ``offset`` to the end
    (``sink(chunk)``, when given, sees every decompressed chunk in order).

    Returns:
        (uncompressed length, first ``head`` uncompressed bytes).

    Raises:
        Corrupt: the stream ends early, or a CRC/length check or the data itself is bad.
    """
    total, first = 0, b""
    decomp = zlib.decompressobj(32 + zlib.MAX_WBITS)  # 32 + 15: a gzip or a zlib header
    with open(path, "rb") as stream:
        stream.seek(offset)
        try:
            while chunk := stream.read(1 << 20):
                while chunk:
                    out = decomp.decompress(chunk)
                    if sink is not None:
                        sink(out)
                    total += len(out)
                    first += out[: max(head - len(first), 0)]
                    if not decomp.eof:
                        break
                    chunk = decomp.unused_data  # another gzip member, or trailing bytes (ignored)
                    if not chunk.startswith(b"\x1f\x8b"):
                        return total, first
                    decomp = zlib.decompressobj(32 + zlib.MAX_WBITS)
        except zlib.error as exc:
            raise Corrupt(f"its compressed data is damaged (zlib: {exc})") from None
    if not decomp.eof:
        raise Corrupt(f"its compressed data stops after {total} bytes, before the end of the stream")
    return total, first


def _need(have: int, need: int, what: str) -> None:
    if have < need:
        raise Corrupt(f"the header describes {need} bytes of {what} but the file holds only {max(have, 0)}")


def _read_head(path: Path, n: int, sink=None) -> tuple[bytes, int]:
    """First ``n`` bytes and the whole (uncompressed, verified) length of a plain or gzip file
    (``sink(chunk)``, when given, sees all its uncompressed bytes in order)."""
    with open(path, "rb") as stream:
        head = stream.read(max(n, 2))
        if head[:2] == b"\x1f\x8b":
            total, first = _inflate(path, head=n, sink=sink)
            return first, total
        if sink is not None:
            stream.seek(0)
            while chunk := stream.read(1 << 22):
                sink(chunk)
    return head[:n], path.stat().st_size


def _peek(path: Path, n: int) -> bytes:
    """The first ``n`` (uncompressed) bytes of a plain or gzip file, without reading the rest."""
    with open(path, "rb") as stream:
        head = stream.read(1 << 16)
    if head[:2] != b"\x1f\x8b":
        return head[:n]
    try:
        return zlib.decompressobj(32 + zlib.MAX_WBITS).decompress(head, n)
    except zlib.error as exc:
        raise Corrupt(f"its compressed data is damaged (zlib: {exc})") from None


def check_file(path: Path) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Integrity and header-geometry checks by format (a header that cannot be parsed is left to ITK).

    Returns:
        A NIfTI sform (matrix (3, 3), origin (3,), LPS) whose scales differ from ``pixdim``, else None.
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
    except ImageError:
        raise
    except (ValueError, struct.error, IndexError, OSError):
        pass  # ITK reads it or says what is wrong
    return None


# ------------------------------------------------------------------------------------------ NIfTI
def _check_nifti(path: Path) -> Optional[tuple[np.ndarray, np.ndarray]]:
    lower = path.name.lower()
    stem = path.name[: len(path.name) - (7 if lower.endswith(".img.gz") else 4)]
    header_path, data_path = path, None
    if lower.endswith((".img", ".img.gz")):  # Analyze / two-file NIfTI: header in .hdr, voxels in .img
        header_path, data_path = path.with_name(stem + ".hdr"), path
    elif lower.endswith(".hdr"):
        data_path = next((p for p in (path.with_name(stem + ".img"), path.with_name(stem + ".img.gz")) if p.exists()),
                         None)
    raw = _peek(header_path, 348)
    endian = next((e for e in "<>" if len(raw) >= 4 and struct.unpack_from(e + "i", raw, 0)[0] == 348), None)
    if endian is None:
        _read_head(header_path, 0)  # not NIfTI-1/Analyze: ITK decides, once a compressed stream is checked
        return None
    _need(len(raw), 348, "NIfTI header")
    dim = struct.unpack_from(endian + "8h", raw, 40)
    datatype, bitpix = struct.unpack_from(endian + "2h", raw, 70)
    pixdim = np.asarray(struct.unpack_from(endian + "8f", raw, 76), dtype=np.float64)
    vox_offset = int(struct.unpack_from(endian + "f", raw, 108)[0])
    if not 1 <= dim[0] <= 7 or bitpix <= 0 or (data_path is None and raw[344:347] != b"n+1"):
        _read_head(header_path, 0)
        return None
    shape = [max(int(d), 1) for d in dim[1:dim[0] + 1]]
    n_voxels = int(np.prod(shape, dtype=np.int64))
    # ITK reads NaN and infinite float voxels of NIfTI as 0: they are counted in the file itself
    floats = {16: "f4", 64: "f8"}.get(int(datatype))
    scan = None if floats is None else _NonFinite(np.dtype(endian + floats), vox_offset, n_voxels)
    length = _read_head(header_path, 348, sink=scan if data_path is None else None)[1]
    if data_path is not None:
        length = _read_head(data_path, 0, sink=scan)[1]
    n_bytes = n_voxels * bitpix // 8
    _need(length, vox_offset + n_bytes, f"voxel data ({'x'.join(map(str, shape))} voxels of {bitpix} bits "
                                        f"from byte {vox_offset})")
    if scan is not None and scan.found:
        raise ImageError(f"{path}: holds {scan.found} NaN or infinite voxels (of {n_voxels}), which ITK would read "
                         "as 0; replace them (e.g. numpy.nan_to_num with the background value) and give that file")
    if struct.unpack_from(endian + "h", raw, 254)[0] <= 0 or dim[0] < 3:  # no sform: ITK uses the qform
        return None
    srow = np.asarray(struct.unpack_from(endian + "12f", raw, 280), dtype=np.float64).reshape(3, 4)
    norms = np.linalg.norm(srow[:, :3], axis=0)
    if not np.all(norms > 0):
        return None
    refuse_direction(path, srow[:, :3] / norms, norms, shape[:3], "NIfTI sform, RAS",
                      ". ITK and 3D Slicer ignore a sheared sform (they use the qform if there is one): if the "
                      "qform is the placement you want, set sform_code to 0")
    if np.all(np.abs(norms - pixdim[1:4]) <= 1e-3):  # ITK's own test for "unexpected scales in sform"
        return None
    return _FLIP[:, None] * srow[:, :3], _FLIP * srow[:, 3]


def nifti_sform(path: Path) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The sform of a NIfTI-1 file as (matrix (3, 3), origin (3,)), LPS mm (the matrix's columns: each voxel axis's
    step), or None for another format or without an sform. Read for what ITK leaves out (a vector image's single
    slice: ``transforms.read_displacement_field``)."""
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return None
    raw = _peek(path, 348)
    endian = next((e for e in "<>" if len(raw) >= 4 and struct.unpack_from(e + "i", raw, 0)[0] == 348), None)
    if endian is None or len(raw) < 348 or struct.unpack_from(endian + "h", raw, 254)[0] <= 0:
        return None
    srow = np.asarray(struct.unpack_from(endian + "12f", raw, 280), dtype=np.float64).reshape(3, 4)
    return _FLIP[:, None] * srow[:, :3], _FLIP * srow[:, 3]


def compare_sform(path: Path, image: sitk.Image, sform_matrix: np.ndarray, sform_origin: np.ndarray) -> None:
    """Warn when the placement ITK read differs from the NIfTI sform (LPS) by more than the tolerance."""
    geometry = Geometry.from_sitk(image)
    corners = _corners(image.GetSize())
    gap = np.max(np.linalg.norm(geometry.index_to_physical(corners) - corners @ sform_matrix.T - sform_origin, axis=1))
    sizes = [np.round(v, 4).tolist() for v in (np.linalg.norm(sform_matrix, axis=0), geometry.spacing)]
    if gap > ORTHONORMAL_TOLERANCE_VOXELS * float(np.min(geometry.spacing)):
        warnings.warn(
            f"{path.name}: its NIfTI header holds two voxel sizes, {sizes[0]} mm in the sform and {sizes[1]} mm in "
            f"pixdim; AD-RegNet, like ITK and 3D Slicer, uses pixdim, which places voxels up to {gap:.3g} mm from "
            "where the sform puts them. If the image looks stretched, fix the header so that both agree",
            ImageWarning, stacklevel=4,
        )


# ------------------------------------------------------------------------------- MetaImage, NRRD
_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}
_NRRD_BYTES = {"char": 1, "int8": 1, "uchar": 1, "uint8": 1, "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
               "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "longlong": 8, "long long": 8, "int64": 8,
               "ulonglong": 8, "ulong long": 8, "uint64": 8, "double": 8}


def _text_header(path: Path, end: bytes) -> tuple[dict[str, str], int]:
    """Fields of a text header (keys lower case) and the byte offset where its data starts."""
    with open(path, "rb") as stream:
        blob = stream.read(1 << 16)
    match = re.search(end, blob)
    stop = match.end() if match is not None else len(blob)
    fields = {}
    for line in blob[:stop].decode("latin-1").splitlines():
        key, sep, value = line.partition("=" if ":" not in line.split("=")[0] else ":")
        if sep and not line.startswith("#"):
            fields[key.strip().lower()] = value.strip()
    return fields, stop


def _whole_numbers(path: Path, fields: dict[str, str], key: str, name: str, default: str = "") -> list[int]:
    """The whole numbers of a header field (``key`` lower-cased, ``name`` as the format spells it).

    Python's ``int`` reads ``1_0`` as 10, where ITK fails with "File cannot be read" (or reads 1): that is
    refused here, naming the field. Other text that is no whole number raises ValueError, which
    :func:`check_file` leaves to ITK's own message.
    """
    words = fields.get(key, default).split()
    for word in words:
        problem = whole_number_problem(word)
        if problem is not None and "_" in word:
            raise ImageError(f"{path}: its header gives {name} {fields.get(key, '')!r}: {word!r} is no plain whole "
                             f"number (it {problem}), and ITK cannot read it; fix the header (plain whole numbers, "
                             "e.g. 10) or re-export the image")
        if problem is not None:
            raise ValueError(f"{name} {word!r} {problem}")
    return [int(word) for word in words]


def _whole_number(path: Path, fields: dict[str, str], key: str, name: str, default: str) -> int:
    """The one whole number of a header field (see :func:`_whole_numbers`); ValueError unless exactly one."""
    values = _whole_numbers(path, fields, key, name, default)
    if len(values) != 1:
        raise ValueError(f"{name} holds {len(values)} numbers, not one")
    return values[0]


def _numbers(text: str) -> np.ndarray:
    return np.asarray([float(v) for v in re.findall(r"[-+0-9.eE]+", text)], dtype=np.float64)


def _check_data(path: Path, data_file: str, offset: int, n_bytes: int, compressed: bool, skip: int = 0) -> None:
    """The voxel data of a header at ``path`` (inline when ``data_file`` is empty) holds ``n_bytes``."""
    target = path.parent / data_file if data_file else path
    if not target.is_file():
        return  # ITK names the missing data file
    offset = 0 if data_file else offset
    if compressed:
        _need(_inflate(target, offset)[0] - max(skip, 0), n_bytes, "uncompressed voxel data")
    elif skip >= 0:
        _need(target.stat().st_size - offset - skip, n_bytes, "voxel data")


def _check_metaimage(path: Path) -> None:
    fields, offset = _text_header(path, rb"ElementDataFile\s*=[^\n]*\n")
    if "elementdatafile" not in fields:
        raise Corrupt("its header stops before the ElementDataFile line that must end it")
    size = _whole_numbers(path, fields, "dimsize", "DimSize")
    spacing = _numbers(fields.get("elementspacing", fields.get("elementsize", "1 1 1")))
    words = fields.get("elementspacing", "1").split()
    if not (len(spacing) == len(words) and np.all(np.isfinite(spacing) & (spacing > 0))):  # "nan" is no number here
        raise ImageError(f"{path}: its header gives ElementSpacing {fields.get('elementspacing', '')!r}: every voxel size "
                         "must be a positive number of mm; fix the header's spacing (or re-export the image)")
    matrix = next((_numbers(fields[k]) for k in ("transformmatrix", "rotation", "orientation") if k in fields), None)
    if len(size) == 3 and len(spacing) == 3 and matrix is not None and matrix.size == 9:
        # MetaIO lists the direction column by column.
        refuse_direction(path, matrix.reshape(3, 3).T, spacing, size, "TransformMatrix")
    data_file, item = fields["elementdatafile"], _MET_BYTES.get(fields.get("elementtype", ""))
    compressed, declared = fields.get("compresseddata", "").lower() == "true", fields.get("compresseddatasize", "")
    follow = path.stat().st_size - offset
    if compressed and data_file.upper() == "LOCAL" and not (declared.isdigit() and int(declared) == follow):
        # without the right size MetaIO inflates the wrong bytes and returns garbage without an error
        raise Corrupt(f"its header gives {f'CompressedDataSize = {declared}' if declared else 'no CompressedDataSize'}"
                       f" but {follow} bytes of compressed data follow it")
    if size and item and data_file.upper() != "LIST" and not re.search(r"[%\s]", data_file):
        channels = _whole_number(path, fields, "elementnumberofchannels", "ElementNumberOfChannels", "1")
        n_bytes = int(np.prod(size, dtype=np.int64)) * item * channels
        _check_data(path, "" if data_file.upper() == "LOCAL" else data_file, offset, n_bytes, compressed,
                    _whole_number(path, fields, "headersize", "HeaderSize", "0"))


def _check_nrrd(path: Path) -> None:
    fields, offset = _text_header(path, rb"\r?\n\r?\n")
    sizes = _whole_numbers(path, fields, "sizes", "sizes")
    kinds = fields.get("kinds", "domain " * len(sizes)).split()
    domain = [n for n, kind in zip(sizes, kinds) if kind.lower() in ("domain", "space")]
    directions = [_numbers(v) for v in re.findall(r"\(([^)]*)\)", fields.get("space directions", ""))]
    if len(domain) == 3 and len(directions) == 3 and all(d.size == 3 for d in directions):
        matrix = np.stack(directions, axis=1)  # columns = steps along the voxel axes, voxel size included
        norms = np.linalg.norm(matrix, axis=0)
        if not np.all(np.isfinite(norms) & (norms > 0)):
            raise ImageError(f"{path}: its header's space directions {fields.get('space directions', '')!r} give a voxel "
                             "axis no length (a zero or NaN vector): every axis needs a step of some mm; fix the header "
                             "(or re-export the image)")
        if np.all(norms > 0):
            refuse_direction(path, matrix / norms, norms, domain, "space directions")
    kind = fields.get("type", "").lower().replace("unsigned ", "u").replace("signed ", "").replace("_t", "")
    item = _NRRD_BYTES.get(kind.replace(" int", "").strip())
    data_file = fields.get("data file", fields.get("datafile", ""))
    encoding = fields.get("encoding", "raw").lower()
    if sizes and item and encoding in ("raw", "gzip", "gz") and "line skip" not in fields \
            and not re.search(r"[%\s]", data_file):
        _check_data(path, data_file, offset, int(np.prod(sizes, dtype=np.int64)) * item, encoding != "raw",
                    _whole_number(path, fields, "byte skip", "byte skip", "0"))
