r"""What the values of a scan say: is it CT (Hounsfield units), where is its air, which value is a padding below
a non-CT image's values, and the robust line fit that reads one image's intensity percentiles against another's
(:mod:`.hounsfield` builds the calibrations on these)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..spatial.image import Image
from .settings import (CT_AIR_PERCENTILE_HU, CT_LOWEST_HU, CT_MAX_SHARE_BELOW_AIR, PADDING_BELOW_MIN_GAP,
                       PADDING_BELOW_MIN_SHARE)

__all__ = ["PERCENTILE_LEVELS", "FIT_KEEP", "FIT_ROUNDS", "voxel_sample", "is_ct", "reads_as_ct", "padding_below",
           "air_level", "trimmed_line"]

#: the intensity percentiles the calibrations compare (2 to 98)
PERCENTILE_LEVELS = np.arange(2.0, 99.0, 2.0)
#: :func:`trimmed_line` keeps this share of the points, after ``FIT_ROUNDS`` fits each keeping those closest to the
#: last line (the lungs' density changes with breathing and leaves the line; ``hounsfield`` names what it measured)
FIT_KEEP = 2.0 / 3.0
FIT_ROUNDS = 5


def voxel_sample(image: Image) -> np.ndarray:
    """About 130,000 of ``image``'s voxels on a regular subgrid (float32): what the tests of its values read."""
    arr = image.array
    return arr[:: max(1, arr.shape[0] // 32), :: max(1, arr.shape[1] // 64), :: max(1, arr.shape[2] // 64)].astype(np.float32)


def is_ct(image: Image) -> bool:
    """CT is recognised by Hounsfield values: air (about -1000 HU) among the darkest voxels other than those of its
    lowest value (a padding is no evidence of air), and below air nothing but one padding value (``CT_LOWEST_HU``)."""
    return reads_as_ct(voxel_sample(image))


def reads_as_ct(sample: np.ndarray) -> bool:
    """:func:`is_ct` on a sample of an image's voxels (or on values mapped from one)."""
    rest = sample[sample > sample.min()]
    if not rest.size or not float(np.percentile(rest, 1)) < CT_AIR_PERCENTILE_HU:
        return False
    return np.count_nonzero(rest < CT_LOWEST_HU) <= CT_MAX_SHARE_BELOW_AIR * sample.size


def padding_below(image: Image) -> Optional[float]:
    """``image``'s lowest value when it is a negative padding far below its other values (``PADDING_BELOW_MIN_SHARE``,
    ``PADDING_BELOW_MIN_GAP``: an MR image resampled with a CT's -1024 outside its field of view), else None. A
    background of 0 is never one (a skull-stripped MR image's, a binary image's): it is the image's own dark."""
    sample = voxel_sample(image).reshape(-1)
    lowest = float(sample.min())
    rest = sample[sample > lowest]
    if lowest >= 0 or rest.size < 2 or np.count_nonzero(sample == lowest) < PADDING_BELOW_MIN_SHARE * sample.size:
        return None
    p1, p99 = (float(v) for v in np.percentile(rest, [1, 99]))
    return lowest if p99 > p1 and p1 - lowest >= PADDING_BELOW_MIN_GAP * (p99 - p1) else None


def air_level(sample: np.ndarray) -> float:
    """An image's air level: the 1st percentile of its voxels, those of a padding below ``CT_LOWEST_HU`` left out."""
    inside = sample[sample > sample.min()] if float(sample.min()) < CT_LOWEST_HU else sample
    return float(np.percentile(inside if inside.size else sample, 1))


def trimmed_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """``(rms residual, slope, intercept)`` of ``y`` against ``x`` over the ``FIT_KEEP`` of the points
    closest to the line, refitted ``FIT_ROUNDS`` times."""
    on_line = np.ones(x.size, dtype=bool)
    for _ in range(FIT_ROUNDS):
        slope, intercept = np.polyfit(x[on_line], y[on_line], 1)
        error = np.abs(y - (slope * x + intercept))
        on_line = error <= np.quantile(error, FIT_KEEP)
    return float(np.sqrt(np.mean(error[on_line] ** 2))), float(slope), float(intercept)
