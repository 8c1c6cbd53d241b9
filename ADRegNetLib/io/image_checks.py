r"""Checks that an image can be registered: finite voxels, a sane header (origin, spacing, anisotropy),
enough voxels, not constant, not a label map; and that two images cover comparable physical sizes.

Every check raises :class:`~ADRegNetLib.io.image.ImageError` with what is wrong and what to do, or
returns warning messages for what is usable but suspicious.
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from .image import Image, ImageError, ImageWarning

__all__ = ["validate_image", "check_pair_sizes", "MIN_AXIS_VOXELS", "MAX_SPACING_MM", "MAX_ORIGIN_MM", "MAX_ANISOTROPY",
           "MAX_SIZE_RATIO", "WARN_SIZE_RATIO", "MAX_ABS_INTENSITY", "MAX_SATURATED_SHARE",
           "LABEL_MAP_MAX_VALUES", "corners_hold"]

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
#: share of an image's voxels above its background (5 % of its range above its minimum) holding exactly its
#: largest value from which it is said to be clipped. Measured (twenty-first session's sweep, the brain benchmark
#: case's moving image, balanced, TRE of 0.184 mm unclipped): clipped at its 90th percentile 0.20 of them, 0.72
#: mm; 8-bit with the window's top at the 80th percentile 0.30, 2.56 mm; at the 97th percentile 0.075, 0.242
#: mm; 8-bit at the 95th 0.12, 0.337 mm; the lung CT clipped to [-1000, 200] HU 0.034, unchanged. Unclipped
#: scans here hold their largest value in a voxel or a few
MAX_SATURATED_SHARE = 0.15
#: an image of this many distinct whole-number values or fewer reads as a label map (segmentation), not a scan
LABEL_MAP_MAX_VALUES = 64


# ------------------------------------------------------------------------------------------ checking
_AXES = ("x", "y", "z")


def validate_image(image: Image, role: str = "fixed", label_like: str = "warn",
                   min_axis_voxels: int = MIN_AXIS_VOXELS, slab_axis: Optional[int] = None) -> list[str]:
    """Check that an image can be registered; raise with a clear message when it cannot.

    Checks, in order: finite voxels (no NaN/inf), spacing not absurd (<= ``MAX_SPACING_MM`` and
    anisotropy <= ``MAX_ANISOTROPY``), enough voxels along each axis, not constant, and not a
    label map given as an intensity image (only whole numbers with few distinct values); and warns
    when its intensities look clipped (``MAX_SATURATED_SHARE``).
    Dimension and vector images are rejected earlier, when converting from SimpleITK.

    Args:
        image: the image to check.
        role: "fixed", "moving" (or any word) used in messages.
        label_like: what to do with an image that looks like a label map: "warn" (emit an
            :class:`ImageWarning` and return the message), "error" (raise) or "ignore".
        min_axis_voxels: fewest voxels accepted along any axis.
        slab_axis: the voxel axis (0: x, 1: y, 2: z) of a slab of identical copies of one slice (``engine.planar``):
            the slice is judged (its voxels, its in-plane spacing and size), not the slab's depth.

    Returns:
        The warning messages (empty when all is well).

    Raises:
        ImageError: the image cannot be used; the message says why and what to do.
    """
    name = f"{role} image '{image.name}'"
    array = image.array
    geometry = image.geometry
    problems: list[str] = []
    size, spacing = list(geometry.size), np.array(geometry.spacing, dtype=np.float64)
    if slab_axis is not None:  # a slab of identical copies of one slice (engine.planar): the slice is judged, its
        array = np.take(array, [0], axis=2 - slab_axis)  # depth and slice distance (ours, not the user's) are not
        size[slab_axis], spacing[slab_axis] = 1, float(np.mean(np.delete(spacing, slab_axis)))  # (as a 2-D file's)

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

    for k, n in enumerate(size):
        if n < min_axis_voxels and k != slab_axis:
            raise ImageError(
                f"{name} has only {n} voxels along {_AXES[k]} (size {size} x, y, z); at least "
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

    # Subsample for speed on large volumes; a label map has few distinct whole numbers.
    flat = array.reshape(-1)
    sample = flat[:: max(1, flat.size // 200_000)]
    whole = np.issubdtype(array.dtype, np.integer) or bool(np.all(sample == np.round(sample)))
    n_values = np.unique(sample).size if whole else None
    if label_like != "ignore":
        if whole:
            if n_values <= LABEL_MAP_MAX_VALUES:
                message = (
                    f"{name} holds only {n_values} distinct whole-number values: it looks like a label map "
                    "(segmentation), not an intensity image; register the intensity volumes and warp the "
                    "labels with the result"
                )
                if label_like == "error":
                    raise ImageError(message)
                warnings.warn(message, ImageWarning, stacklevel=2)
                problems.append(message)
    saturated = "" if whole and n_values <= LABEL_MAP_MAX_VALUES else _saturation_message(name, array, finite_min, finite_max)
    if saturated:  # (a label map's largest label fills whole regions: not a clipped scan)
        warnings.warn(saturated, ImageWarning, stacklevel=2)
        problems.append(saturated)
    return problems


def corners_hold(array: np.ndarray, value) -> bool:
    """Whether all eight corner voxels of a (Z, Y, X) ``array`` hold ``value``: a background or padding of that value,
    which an image whose tissue was clipped at ``value`` does not have."""
    return bool((array[np.ix_(*[[0, n - 1] for n in array.shape])] == value).all())


def _saturation_message(name: str, array: np.ndarray, low: float, high: float) -> str:
    """A warning when the image holds its largest value in ``MAX_SATURATED_SHARE`` or more of its voxels above
    the background ("" otherwise): intensities clipped by a display window or an 8-bit export."""
    if corners_hold(array, array.dtype.type(high)):  # a white background or padding, not clipped tissue
        return ""
    flat = array.reshape(-1)
    sample = flat[:: max(1, flat.size // 2_000_000)]
    tissue = int(np.count_nonzero(sample > low + 0.05 * (high - low)))
    at_top = int(np.count_nonzero(sample == array.dtype.type(high)))
    share = at_top / max(tissue, 1)
    if tissue < 1000 or share < MAX_SATURATED_SHARE:
        return ""
    return (f"{name} holds its largest value ({high:g}) in {100 * share:.0f}% of its voxels above the background: its "
            "intensities look clipped (a display window or an 8-bit export), and tissue contrast above that value is "
            "lost, which makes the registration less accurate (the brain benchmark's moving image clipped at the "
            "90th percentile of its voxels: 0.18 -> 0.40 mm, with the fixed image's top cut alike for a moving one); "
            "register the original scan if you have it")


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
