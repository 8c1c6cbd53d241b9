r"""Reading, writing, resampling, normalising and checking images (LPS mm, geometry carried along).

Every function here takes or returns an :class:`~ADRegNetLib.io.image.Image`: a (Z, Y, X) numpy
array together with its :class:`~ADRegNetLib.spatial.geometry.Geometry`. Files are read through
SimpleITK, so physical positions are ITK/LPS whatever the file format (NIfTI's RAS header is
converted by ITK on read and on write).
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

from ..spatial.geometry import Geometry
from .image import Image, ImageError, ImageWarning, check_sitk_direction, from_sitk, read_sitk_image, to_sitk

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
]

PathLike = Union[str, Path]

#: Smallest voxel count accepted along any axis (a 4-level network halves each axis 4 times).
MIN_AXIS_VOXELS = 16
#: Largest voxel size accepted, mm. Larger values almost always mean a header in cm or m.
MAX_SPACING_MM = 50.0
#: farthest origin (any coordinate, mm) accepted: scanners place voxels within metres of their origin, and at
#: 1e9 mm float32 coordinates are 64 mm apart (a pair at 1e9 mm registered up to 4.5 mm off the same pair at
#: the usual origin; NIfTI stores the origin as float32: 0.46 mm off at 1e7 mm)
MAX_ORIGIN_MM = 1e6
#: Largest ratio of the largest to the smallest voxel size accepted. Clinical scans reach about 25
#: (0.4 x 0.4 mm in-plane, 10 mm slices): the real 1 mm brain resampled so (both images) registers
#: fast to 1.04 mm TRE (5 mm slices 0.52, 1 mm 0.36; ninth session); beyond 50 a header is likelier wrong.
MAX_ANISOTROPY = 50.0
#: Largest ratio of the two images' physical sizes (their longest side) that registers; beyond it
#: one header's spacing is almost surely in other units (m or cm against mm).
MAX_SIZE_RATIO = 50.0
#: From this ratio on a warning names the difference (a header in cm against one in mm is 10).
WARN_SIZE_RATIO = 8.0
#: Largest intensity magnitude accepted. The registration computes in float32, whose sums of squares
#: over a 1e8-voxel volume overflow (3.4e38) above about 1e15; no scanner's units come near it
#: (CT +-4e3 HU, MR up to about 1e5, PET in Bq/ml up to about 1e8).
MAX_ABS_INTENSITY = 1e15

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


def read_label_map(path: PathLike, name: Optional[str] = None) -> Image:
    """Read a label map (segmentation) as an int64 (Z, Y, X) :class:`Image`.

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
    return Image(array.astype(np.int64), image.geometry, image.name)


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


def write_image(image: Image, path: PathLike) -> None:
    """Write an image with its geometry (format from the extension: .nii.gz, .nrrd, .mha, ...).

    Booleans are stored as uint8, and int64 (label maps are read so) as the first of uint8, int16,
    uint16 and int32 that holds its values: a uint8 segmentation comes back as uint8 (wider reader support,
    smaller files).

    Raises:
        ImageError: unknown extension, or the file cannot be written.
    """
    path = Path(path)
    if not str(path).lower().endswith(_IMAGE_EXTENSIONS):
        raise ImageError(f"{path}: unknown image extension; use one of {', '.join(_IMAGE_EXTENSIONS[:5])}")
    array = image.array
    dtype = None
    if array.dtype == np.int64 and array.size:
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


# --------------------------------------------------------------------------------------- resampling
def resample_image(image: Image, geometry: Geometry, mode: str = "linear", default: float = 0.0) -> Image:
    """Resample ``image`` onto another grid (identity transform: same physical points).

    Args:
        image: the image to resample.
        geometry: the output grid (LPS mm).
        mode: "linear" for intensities (result float32) or "nearest" for labels and masks
            (result keeps the input dtype).
        default: value for output voxels whose centre falls outside ``image``.

    Returns:
        The image on ``geometry``.
    """
    interpolators = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    if mode not in interpolators:
        raise ValueError(f"mode must be one of {sorted(interpolators)}, got {mode!r}")
    src = image if mode == "nearest" else Image(image.array.astype(np.float32), image.geometry, image.name)
    in_dtype = image.array.dtype
    if mode == "nearest" and in_dtype in (np.int64, np.bool_):
        src = Image(image.array.astype(np.int32), image.geometry, image.name)
    out = sitk.Resample(
        to_sitk(src),
        [int(s) for s in geometry.size],
        sitk.Transform(3, sitk.sitkIdentity),
        interpolators[mode],
        [float(v) for v in geometry.origin],
        [float(v) for v in geometry.spacing],
        [float(v) for v in geometry.direction.reshape(-1)],
        float(default),
    )
    array = sitk.GetArrayFromImage(out)
    array = array.astype(in_dtype if mode == "nearest" else np.float32, copy=False)
    return Image(array, geometry, image.name)


# -------------------------------------------------------------------------------------- intensities
def normalize_intensity(image: Image, modality: str = "generic", window: Optional[tuple[float, float]] = None,
                        percentiles: tuple[float, float] = (1.0, 99.0), mask: Optional[np.ndarray] = None) -> Image:
    """Map intensities to [0, 1] (float32), clipped.

    * ``"ct"``: a fixed Hounsfield window, by default [-1000, 500] HU (air to dense soft tissue),
      so that the same tissue gets the same value in both images.
    * ``"mr"`` / ``"generic"``: robust percentiles (default 1st and 99th, inside ``mask`` when
      given) map to 0 and 1: MR has no absolute scale.

    Args:
        image: the image.
        modality: "ct", "mr" or "generic".
        window: (low, high) intensities mapped to 0 and 1, overriding the modality default.
        percentiles: (low, high) percentiles for "mr"/"generic".
        mask: (Z, Y, X) bool, voxels used to compute percentiles.

    Returns:
        A float32 image on the same grid with values in [0, 1].

    Raises:
        ValueError: unknown modality, bad window/percentiles, or a mask of another shape.
        ImageError: the image (inside the mask) is constant, so it cannot be normalised.
    """
    modality = modality.lower()
    if modality not in ("ct", "mr", "generic"):
        raise ValueError(f"modality must be 'ct', 'mr' or 'generic', got {modality!r}")
    data = image.array.astype(np.float32)
    if window is None:
        if modality == "ct":
            window = (-1000.0, 500.0)
        else:
            lo_p, hi_p = percentiles
            if not 0 <= lo_p < hi_p <= 100:
                raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
            if mask is not None:
                mask = np.asarray(mask, dtype=bool)
                if mask.shape != data.shape:
                    raise ValueError(f"mask shape {mask.shape} does not match image shape {data.shape} (Z, Y, X)")
                values = data[mask]
                if values.size == 0:
                    raise ValueError("mask is empty: no voxel to compute percentiles from")
            else:
                values = data.reshape(-1)
            values = values[np.isfinite(values)]
            window = tuple(float(v) for v in np.percentile(values, [lo_p, hi_p]))
    low, high = float(window[0]), float(window[1])
    if not high > low:
        if np.nanmax(data) > np.nanmin(data):  # not constant: nearly all voxels hold one value
            same = int(np.count_nonzero(data == low))
            share = (f"all but {data.size - same} of its {data.size} voxels hold" if 100.0 * same / data.size >= 99.995
                     else f"{100.0 * same / data.size:.2f}% of its voxels hold")
            raise ImageError(
                f"{image.name}: {share} the value {low:g}, so its intensity window "
                f"[{low:g}, {high:g}] is empty: the volume is nearly blank (a mask or a mostly empty volume?); "
                "check that the right volume was selected")
        raise ImageError(
            f"{image.name}: intensity window [{low:g}, {high:g}] is empty (the image is constant where it is "
            "measured); check that the right volume was selected"
        )
    out = np.clip((data - low) / (high - low), 0.0, 1.0).astype(np.float32)
    return Image(out, image.geometry, image.name)


# ------------------------------------------------------------------------------------------ checking
_AXES = ("x", "y", "z")


def validate_image(image: Image, role: str = "fixed", label_like: str = "warn",
                   min_axis_voxels: int = MIN_AXIS_VOXELS) -> list[str]:
    """Check that an image can be registered; raise with a clear message when it cannot.

    Checks, in order: finite voxels (no NaN/inf), spacing not absurd (<= ``MAX_SPACING_MM`` and
    anisotropy <= ``MAX_ANISOTROPY``), enough voxels along each axis, not constant, and not a
    label map given as an intensity image (only whole numbers with few distinct values).
    Dimension and vector images are rejected earlier, when converting from SimpleITK.

    Args:
        image: the image to check.
        role: "fixed", "moving" (or any word) used in messages.
        label_like: what to do with an image that looks like a label map: "warn" (emit an
            :class:`ImageWarning` and return the message), "error" (raise) or "ignore".
        min_axis_voxels: fewest voxels accepted along any axis.

    Returns:
        The warning messages (empty when all is well).

    Raises:
        ImageError: the image cannot be used; the message says why and what to do.
    """
    name = f"{role} image '{image.name}'"
    array = image.array
    geometry = image.geometry
    problems: list[str] = []

    if array.dtype == np.bool_:
        raise ImageError(f"{name} is a binary mask (bool); give the intensity image to register, and the mask separately")
    if np.iscomplexobj(array):
        raise ImageError(f"{name} holds complex values ({array.dtype}); registration needs a real-valued volume: "
                         "give its magnitude (numpy.abs) instead")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ImageError(f"{name} has voxels of type {array.dtype}, not numbers; give a numeric (Z, Y, X) array "
                         "(read files with ADRegNetLib.io.read_image)")
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            raise ImageError(
                f"{name} has {int(bad.sum())} NaN or infinite voxels (of {array.size}); replace them "
                "(e.g. with the background value) before registering"
            )

    far = float(np.max(np.abs(geometry.origin)))
    if not far <= MAX_ORIGIN_MM:
        raise ImageError(
            f"{name} has its origin at {np.round(geometry.origin, 1).tolist()} mm, {far / 1e6:.3g} km from the "
            f"scanner's origin (at most {MAX_ORIGIN_MM / 1e6:g} km accepted: no scanner places voxels there, and "
            "coordinates that large lose their sub-millimetre precision): fix the header's origin"
        )
    spacing = geometry.spacing
    if np.any(spacing > MAX_SPACING_MM):
        axis = _AXES[int(np.argmax(spacing))]
        raise ImageError(
            f"{name} has a voxel size of {spacing.max():g} mm along {axis} (spacing {np.round(spacing, 4).tolist()} mm), "
            f"more than {MAX_SPACING_MM:g} mm; the header is probably in cm or m: fix the spacing"
        )
    ratio = float(spacing.max() / spacing.min())
    if ratio > MAX_ANISOTROPY:
        raise ImageError(
            f"{name} has spacing {np.round(spacing, 4).tolist()} mm, an anisotropy of {ratio:.1f} "
            f"(largest/smallest voxel size, at most {MAX_ANISOTROPY:g} accepted); check the header, or "
            "resample the image to a less anisotropic grid"
        )

    for k, n in enumerate(geometry.size):
        if n < min_axis_voxels:
            raise ImageError(
                f"{name} has only {n} voxels along {_AXES[k]} (size {list(geometry.size)} x, y, z); at least "
                f"{min_axis_voxels} are needed on every axis: is this a 2-D slice or a thin slab?"
            )

    finite_min = float(np.min(array))
    finite_max = float(np.max(array))
    peak = max(abs(finite_min), abs(finite_max))
    if peak > MAX_ABS_INTENSITY:
        raise ImageError(
            f"{name} has intensities up to {peak:.3g} in magnitude (range [{finite_min:.3g}, {finite_max:.3g}]), "
            f"beyond the {MAX_ABS_INTENSITY:g} the registration's float32 arithmetic handles; these are not any "
            "scanner's units: rescale the image (or fix its scaling slope/intercept) before registering"
        )
    if finite_max == finite_min:
        raise ImageError(
            f"{name} is constant (every voxel is {finite_min:g}); it holds no structure to register: "
            "check that the right volume was loaded"
        )

    if label_like != "ignore":
        # Subsample for speed on large volumes; a label map has few distinct whole numbers.
        flat = array.reshape(-1)
        sample = flat[:: max(1, flat.size // 200_000)]
        whole = np.issubdtype(array.dtype, np.integer) or bool(np.all(sample == np.round(sample)))
        if whole:
            n_values = np.unique(sample).size
            if n_values <= 64:
                message = (
                    f"{name} holds only {n_values} distinct whole-number values: it looks like a label map "
                    "(segmentation), not an intensity image; register the intensity volumes and warp the "
                    "labels with the result"
                )
                if label_like == "error":
                    raise ImageError(message)
                warnings.warn(message, ImageWarning, stacklevel=2)
                problems.append(message)
    return problems


def check_pair_sizes(fixed: Image, moving: Image) -> list[str]:
    """Check that the two images cover regions of comparable physical size.

    A header whose spacing is in metres or centimetres (a converter that forgot the units) gives an
    image 1000 or 10 times too small; the registration could only fail on it.

    Args:
        fixed, moving: the images to register.

    Returns:
        A warning message when the longest sides differ by ``WARN_SIZE_RATIO`` or more (empty list
        otherwise).

    Raises:
        ImageError: the longest sides differ by ``MAX_SIZE_RATIO`` or more.
    """
    sides = {role: float(np.max(image.geometry.extent_mm)) for role, image in (("fixed", fixed), ("moving", moving))}
    small, large = sorted(sides, key=sides.get)
    ratio = sides[large] / sides[small]
    text = (f"the {small} image spans {sides[small]:.3g} mm along its longest side and the {large} image "
            f"{sides[large]:.3g} mm: {ratio:.0f} times less")
    if ratio >= MAX_SIZE_RATIO:
        raise ImageError(f"{text}; one header's spacing is probably in other units (m or cm instead of mm): "
                         f"fix the spacing of the {small} image (or crop the {large} image to the same anatomy)")
    if ratio >= WARN_SIZE_RATIO:
        return [f"{text}; if both show the same anatomy, check that the spacing of both headers is in mm"]
    return []
