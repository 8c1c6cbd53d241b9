r"""The SimpleITK boundary: checked reading of image files and SimpleITK <-> :class:`Image` conversion.

SimpleITK reads some broken files without a word, so :func:`read_sitk_image` first checks, from
the file itself, what ITK does not:

* **Integrity.** A gzip/zlib stream (``.nii.gz``, ``.img.gz``, gzip-encoded NRRD, compressed
  MetaImage) is decompressed to its end and its CRC/length trailer verified, and the voxel data
  must be as long as the header says (NIfTI, Analyze, MetaImage, NRRD). ITK fills a truncated
  ``.nii.gz`` or ``.nii`` with zeros; here it is an error.
* **Geometry.** The direction matrix must be a rotation (orthonormal columns; a reflection is
  fine). A sheared or scaled one in the header (MetaImage ``TransformMatrix``, NRRD
  ``space directions``, NIfTI sform) or in what ITK returns is refused with the matrix: ITK
  coerces it when writing, so outputs would no longer line up with the input. A direction
  within :data:`ORTHONORMAL_TOLERANCE_VOXELS` of a rotation over the whole grid (rounding in a
  text header) is replaced by that rotation. A NIfTI file whose sform and ``pixdim`` disagree
  gets an :class:`ImageWarning` instead of ITK's console warning.

The checks live in :mod:`ADRegNetLib.io.file_checks`. The cost is one extra decompression pass (about 0.1 s for
a 12 MB ``.nii.gz`` CT).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..spatial.geometry import Geometry, GeometryError
from ..spatial.image import Image, ImageError
from .file_checks import (ORTHONORMAL_TOLERANCE_VOXELS, Corrupt, ImageWarning, check_file, compare_sform,
                          nearest_rotation, refuse_direction, snap_needed)

__all__ = ["Image", "ImageError", "ImageWarning", "from_sitk", "to_sitk", "read_sitk_image", "check_sitk_direction",
           "image_format_named", "itk_error_reason", "ORTHONORMAL_TOLERANCE_VOXELS"]

_FIX = "re-export or re-copy it"


# ------------------------------------------------------------------------------------- conversion
def from_sitk(image: sitk.Image, name: str = "image", dtype=np.float32) -> Image:
    """Convert a 3-D scalar SimpleITK image to an :class:`Image` (array cast to ``dtype``); a 2-D image becomes a
    volume one slice thick (its plane at z = 0, the slice as thick as its mean pixel spacing).

    Raises:
        ImageError: for 4-D or multi-component images, or a geometry that is not usable.
    """
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise ImageError(
            f"{name}: holds complex voxel values (raw MR data: real and imaginary parts); registration needs a "
            "real-valued volume: save its magnitude image and give that"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(
            f"{name}: has {image.GetNumberOfComponentsPerPixel()} components per voxel (a vector/RGB image); "
            "registration needs a scalar (grayscale) volume: convert it to grayscale first"
        )
    if image.GetDimension() == 2:  # one slice: a volume one voxel thick (engine.planar registers two in their plane)
        image = sitk.JoinSeries(image, 0.0, float(np.mean(image.GetSpacing())))
    if image.GetDimension() != 3:
        raise ImageError(
            f"{name}: is {image.GetDimension()}-D with size {image.GetSize()}; registration needs a 3-D volume"
            + (" (for a time series, extract one 3-D frame first)" if image.GetDimension() == 4 else "")
        )
    try:
        geometry = Geometry.from_sitk(image)
    except GeometryError as exc:
        raise ImageError(f"{name}: {exc}") from None
    array = sitk.GetArrayFromImage(image)
    if dtype is not None:
        array = _cast(array, dtype, name)
    return Image(array, geometry, name)


def _cast(array: np.ndarray, dtype, name: str) -> np.ndarray:
    """``array`` as ``dtype``; values that do not fit a floating ``dtype`` raise instead of becoming inf."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating) and array.dtype.itemsize > dtype.itemsize and array.size:
        limit = float(np.finfo(dtype).max)
        with np.errstate(invalid="ignore"):
            peak = float(np.nanmax(np.abs(array[np.isfinite(array)]))) if np.isfinite(array).any() else 0.0
        if peak > limit:
            raise ImageError(
                f"{name}: holds voxel values up to {peak:.3g} in magnitude, beyond the {dtype} range "
                f"(+-{limit:.3g}) the registration computes in; the file's intensities are not in any scanner's "
                "units: rescale the image (or fix its scaling slope/intercept) and give that file"
            )
    return array.astype(dtype, copy=False)


def to_sitk(image: Image, dtype=None) -> sitk.Image:
    """Convert an :class:`Image` to SimpleITK (geometry copied; ``dtype`` casts the array first)."""
    array = image.array if dtype is None else image.array.astype(dtype)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    out = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    image.geometry.apply_to_sitk(out)
    return out


# ---------------------------------------------------------------------------------------- reading
#: file name endings of the single-file image formats read, and the format each names
_NAMED_FORMATS = ((".nii.gz", "NIfTI"), (".nii", "NIfTI"), (".nrrd", "NRRD"), (".mha", "MetaImage"),
                  (".mhd", "MetaImage"))


def image_format_named(path: Path | str) -> Optional[str]:
    """The image format a file's name says ("NIfTI", "NRRD", "MetaImage"), or None."""
    name = Path(path).name.lower()
    return next((fmt for suffix, fmt in _NAMED_FORMATS if name.endswith(suffix)), None)


def itk_error_reason(exc: BaseException, default: str = "") -> str:
    """The line of an ITK / SimpleITK error that says what went wrong ("ERROR", "Could not", "Unable"), else
    ``default``: the message's last lines are often a wrapped fragment."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if "ERROR" in line or "Could not" in line or "Unable" in line), default)


def read_sitk_image(path: Path, what: str = "image") -> sitk.Image:
    """Read an image file with SimpleITK after the integrity and geometry checks above.

    Args:
        path: the file (a DICOM folder is read by :func:`ADRegNetLib.io.images.read_image`).
        what: what the file should hold, for messages ("image", "displacement field").

    Returns:
        The SimpleITK image (direction snapped to the nearest rotation when within tolerance).

    Raises:
        ImageError: missing, empty, truncated/corrupt or unreadable file, or a sheared or scaled
            direction matrix; the message names the file, the reason and what to do.
    """
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise ImageError(f"{path}: is a folder; give the {what} file")
        if path.exists():  # a named pipe, a device: nothing SimpleITK can seek in
            raise ImageError(f"{path}: is not a regular file (a pipe or a device); give the {what} file")
        raise ImageError(f"{path}: no such file; check the path")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes); it was not written completely: {_FIX}")
    try:
        sform = check_file(path)
    except Corrupt as exc:
        raise ImageError(f"{path}: the file is truncated or corrupt: {exc}; {_FIX}") from None
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(shown and sform is None)  # we report that sform ourselves
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = itk_error_reason(exc, lines[-1] if lines else "unknown reason")
        known = image_format_named(path)
        raise ImageError(
            f"{path}: cannot be read as an {what} ({detail}); "
            + (f"its name says {known}, but its contents are not a valid {known} file (damaged, or another kind of "
               "file under that name): re-export or re-copy it" if known else
               "supported formats are NIfTI (.nii, .nii.gz), NRRD (.nrrd), MetaImage (.mha, .mhd) and DICOM series "
               "folders")
        ) from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    image = check_sitk_direction(image, path)
    if sform is not None:
        compare_sform(path, image, *sform)
    return image


def check_sitk_direction(image: sitk.Image, path: Path) -> sitk.Image:
    """Refuse a sheared or scaled direction in an image ITK has read; snap a nearly orthonormal one.

    Raises:
        ImageError: the direction is further than the tolerance from a rotation (names ``path``).
    """
    if image.GetDimension() != 3:  # from_sitk refuses it with its own message
        return image
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    refuse_direction(path, direction, np.asarray(image.GetSpacing()), image.GetSize(), "as read by ITK")
    if snap_needed(direction):
        image.SetDirection([float(v) for v in nearest_rotation(direction).reshape(-1)])
    return image
