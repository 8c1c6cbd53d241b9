r"""What the values of a scan say: is it CT (Hounsfield units), where is its air, and the robust line fit that reads
one image's intensity percentiles against another's (:mod:`.hounsfield` builds the calibrations on these)."""
from __future__ import annotations

import numpy as np

from ..spatial.image import Image
from .settings import CT_AIR_PERCENTILE_HU, CT_LOWEST_HU, CT_MAX_SHARE_BELOW_AIR

__all__ = ["PERCENTILE_LEVELS", "FIT_KEEP", "FIT_ROUNDS", "voxel_sample", "is_ct", "reads_as_ct", "air_level",
           "trimmed_line"]

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
