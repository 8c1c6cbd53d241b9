r"""Resampling an :class:`~ADRegNetLib.io.image.Image` onto another grid (SimpleITK, identity transform) and
normalising its intensities to [0, 1] (CT window or robust percentiles)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..spatial.geometry import Geometry
from .image import Image, ImageError, to_sitk

__all__ = ["resample_image", "normalize_intensity"]


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
    data = image.array.astype(np.float32)  # a copy: normalised in place below
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
    # in place on the one float32 copy: the same values as np.clip((data - low) / (high - low), 0, 1) without its
    # four full-size temporaries (a 512x512x300 CT: 1.3-3.1 s -> see docs/PERFORMANCE.md, "Large inputs")
    data -= np.float32(low)
    data /= np.float32(high - low)
    np.clip(data, 0.0, 1.0, out=data)
    return Image(data, image.geometry, image.name)
