r"""Reading and writing images (LPS mm, geometry carried along).

Every function here takes or returns an :class:`~ADRegNetLib.io.image.Image`: a (Z, Y, X) numpy
array together with its :class:`~ADRegNetLib.spatial.geometry.Geometry`. Files are read through
SimpleITK, so physical positions are ITK/LPS whatever the file format (NIfTI's RAS header is
converted by ITK on read and on write).

Resampling and intensity normalisation live in :mod:`.image_ops`, the checks that an image can be
registered in :mod:`.image_checks`; their names are importable from here too.
"""
from __future__ import annotations

import gzip
import os
import shutil
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import SimpleITK as sitk

from .image import Image, ImageError, ImageWarning, check_sitk_direction, from_sitk, read_sitk_image, to_sitk
from .image_checks import (MAX_ABS_INTENSITY, MAX_ANISOTROPY, MAX_ORIGIN_MM, MAX_SIZE_RATIO, MAX_SPACING_MM,
                           MIN_AXIS_VOXELS, WARN_SIZE_RATIO, check_pair_sizes, validate_image)
from .image_ops import normalize_intensity, resample_image

__all__ = [
    "read_image",
    "write_image",
    "write_sitk_image",
    "STORED_GZIP_MIN_VOXELS",
    "read_label_map",
    "resample_image",
    "normalize_intensity",
    "validate_image",
    "check_pair_sizes",
    "ImageWarning",
    "MIN_AXIS_VOXELS",
    "MAX_SPACING_MM",
    "MAX_ANISOTROPY",
    "MAX_SIZE_RATIO",
    "WARN_SIZE_RATIO",
    "MAX_ABS_INTENSITY",
    "MAX_ORIGIN_MM",
]

PathLike = Union[str, Path]

_IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".img", ".hdr")


# ------------------------------------------------------------------------------------------ reading
def _read_sitk(path: Path) -> sitk.Image:
    """Read a file (checked, see :mod:`ADRegNetLib.io.image`) or a DICOM series folder; ImageError names it."""
    if path.is_dir():
        return check_sitk_direction(_read_dicom_series(path), path)
    return read_sitk_image(path)


def _read_dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM's "No Series were found" is said below, in one line
    try:
        series_ids = reader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as exc:  # pragma: no cover - GDCM failures are rare
        raise ImageError(f"{folder}: cannot scan the folder for DICOM series ({exc})") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
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
            f"{folder.name}: holds {len(series_ids)} DICOM series; reading the largest, {best} ({len(files)} "
            "slices): put each series in its own folder to choose another",
            ImageWarning, stacklevel=4,
        )
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise ImageError(f"{folder}: the DICOM series {best} cannot be read ({str(exc).strip()[-200:]})") from None


def read_image(path: PathLike, name: Optional[str] = None, dtype=np.float32) -> Image:
    """Read a 3-D scalar image (NIfTI, NRRD, MetaImage, or a DICOM series folder).

    Args:
        path: the file, or a folder holding one DICOM series.
        name: label used in messages; defaults to the file name.
        dtype: array type on return (float32 for intensities; None keeps the file's type).

    Returns:
        The image: (Z, Y, X) array, geometry in LPS mm.

    Raises:
        ImageError: missing, empty, truncated/corrupt (gzip CRC/length, data shorter than the
            header says) or unreadable file, a direction matrix that is not a rotation, or not a
            3-D scalar volume; the message names the file, the reason and what to do.
    """
    path = Path(path)
    image = _read_sitk(path)
    return from_sitk(image, name=name or path.name, dtype=dtype)


def read_label_map(path: PathLike, name: Optional[str] = None, dtype=np.int64) -> Image:
    """Read a label map (segmentation) as an int64 (Z, Y, X) :class:`Image`.

    Args:
        path: the file, or a folder holding one DICOM series.
        name: label used in messages; defaults to the file name.
        dtype: array type on return (int64, what the engine computes with; None keeps the file's
            type, for outputs that keep the input's pixel type, as ``adregnet warp`` does).

    Raises:
        ImageError: as :func:`read_image`, or when the voxels are not whole numbers (an
            intensity image was given where labels were expected).
    """
    path = Path(path)
    image = from_sitk(_read_sitk(path), name=name or path.name, dtype=None)
    array = image.array
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageError(f"{image.name}: label map holds NaN or infinite values")
        if not np.all(array == np.round(array)):
            raise ImageError(
                f"{image.name}: expected a label map (whole numbers), but the voxels have fractional values "
                "(an intensity image?); give the segmentation file instead"
            )
    return Image(array if dtype is None else array.astype(dtype), image.geometry, image.name)


# ------------------------------------------------------------------------------------------ writing
#: floating-point images of at least this many voxels go into .nii.gz as stored (not deflated) gzip:
#: floats hardly compress, and ITK's deflate (its level setting is ignored for NIfTI) took 2.1 s for
#: a 224x192x160 displacement field to save 10% (75 of 83 MB); stored, 0.4 s. Readers see no difference.
STORED_GZIP_MIN_VOXELS = 2_000_000
_FLOATING = (sitk.sitkFloat32, sitk.sitkFloat64, sitk.sitkVectorFloat32, sitk.sitkVectorFloat64)


def write_sitk_image(image: sitk.Image, path: Path) -> None:
    """``sitk.WriteImage`` with compression, except large floating-point .nii.gz (stored gzip).

    A stored file is written as a hidden temporary next to ``path`` and moved over it when complete,
    so an interrupted write never leaves a half file under the user's name.
    """
    path = Path(path)
    stored = (str(path).lower().endswith(".nii.gz") and image.GetPixelID() in _FLOATING
              and image.GetNumberOfPixels() >= STORED_GZIP_MIN_VOXELS)
    if not stored:
        sitk.WriteImage(image, str(path), True)
        return
    raw = path.with_name(f".{path.name[:-3]}.{os.getpid()}.tmp.nii")  # ITK picks NIfTI by the ending
    packed = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        sitk.WriteImage(image, str(raw), False)
        with open(raw, "rb") as src, open(packed, "wb") as out, \
                gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=0, mtime=0) as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        os.replace(packed, path)
    finally:
        raw.unlink(missing_ok=True)
        packed.unlink(missing_ok=True)


def write_image(image: Image, path: PathLike, narrow_int64: bool = True) -> None:
    """Write an image with its geometry (format from the extension: .nii.gz, .nrrd, .mha, ...).

    Booleans are stored as uint8, and int64 (label maps are read so) as the first of uint8, int16,
    uint16 and int32 that holds its values: a uint8 segmentation comes back as uint8 (wider reader support,
    smaller files).

    Args:
        image: the image (its array's dtype is the file's pixel type, except as above).
        path: the file to write.
        narrow_int64: False writes int64 as int64 (an array already in the pixel type it must keep).

    Raises:
        ImageError: unknown extension, or the file cannot be written.
    """
    path = Path(path)
    if not str(path).lower().endswith(_IMAGE_EXTENSIONS):
        raise ImageError(f"{path}: unknown image extension; use one of {', '.join(_IMAGE_EXTENSIONS[:5])}")
    array = image.array
    dtype = None
    if array.dtype == np.int64 and array.size and narrow_int64:
        lo, hi = int(array.min()), int(array.max())
        dtype = next((t for t in (np.uint8, np.int16, np.uint16, np.int32)
                      if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max), None)
    elif array.dtype == np.bool_:
        dtype = np.uint8
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_sitk_image(to_sitk(image, dtype=dtype), path)
    except (RuntimeError, OSError) as exc:
        raise ImageError(f"{path}: cannot be written ({str(exc).strip().splitlines()[-1]})") from exc
