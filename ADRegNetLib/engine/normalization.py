r"""Both images' intensities on one scale, over the same anatomy, with the same top (``register()``'s
normalisation).

CT keeps its Hounsfield window; anything else maps its 1st and 99th percentiles to 0 and 1 (clipped), over a fixed
region on both images when one is given (:func:`normalized_pair`).

A moving image whose intensities were clipped (a display window, an 8-bit export) holds its largest value in a
whole share of its voxels: the tissue above that value is one flat plateau in it, while the fixed image keeps its
contrast there, and local NCC then pulls the plateau's outline onto structures within the fixed image's bright
tissue. :func:`normalized_pair` records such a moving image; after the pre-alignment, :func:`matched_top` cuts the
fixed working image at the value that holds the plateau's share of its voxels, both counted over the region the two
images show, so both show one plateau over the same tissue. Measured (``docs/benchmarks/wave23-2026-12-02.md``,
balanced, TRE mm; unclipped 0.18-0.23): brain seeds 0-2 and the oblique case with the moving image clipped at the
90th / 80th percentile of its tissue or stored as 8 bits windowed at the 80th percentile of its voxels, mean of the
12 cases 0.898 -> 0.461 (8-bit 2.51 / 1.77 / 2.31 / 1.78 -> 0.80 / 0.79 / 0.78 / 0.98; brain seed 1 mildly clipped
0.02-0.05 worse). Only for one contrast (T1 against a clipped T2: the plateaus are other tissues), only the moving
image's clipping (a clipped fixed image's plateau has no local contrast, so the similarity leaves it out by itself:
cutting the moving image to match it measured 0.250 -> 0.301), and never CT (calibrated; its window cuts its top
already).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ..io.image import ImageError
from ..io.image_checks import LABEL_MAP_MAX_VALUES, corners_hold
from ..io.images import normalize_intensity
from ..spatial.affine import AffineMap
from ..spatial.geometry import Geometry
from ..spatial.image import Image
from .api import RegistrationError
from .masks import map_mask
from .hounsfield import is_ct
from .modality import contrast_correlation
from .ct_values import voxel_sample
from .settings import MIN_MASK_WORKING_VOXELS, PADDING_BELOW_MIN_GAP, PADDING_BELOW_MIN_SHARE

__all__ = ["normalized_for_preset", "padding_below", "normalized_pair", "saturated_share", "matched_top",
           "SATURATION_MATCH_MIN_SHARE", "SATURATION_MATCH_MAX_SHARE", "SATURATION_MATCH_MIN_CORRELATION"]

#: the normalisation's own top (99th percentile) flattens 1 % of every image: above twice that, a moving image's
#: plateau at its largest value sets the fixed image's top
SATURATION_MATCH_MIN_SHARE = 0.02
#: a plateau over half the voxels is not clipped tissue (a bright background the corners do not show): left alone
SATURATION_MATCH_MAX_SHARE = 0.5
#: the cut assumes one contrast, whose top is one tissue in both: the pre-aligned images must correlate at least this
#: well where both show tissue (``modality.contrast_correlation``). Measured: the benchmark's brain and oblique cases
#: with clipped moving images 0.70-0.90 (the lowest, brain seed 1 stored as 8 bits windowed at its 80th percentile,
#: gains 1.77 -> 0.79 mm from the cut); a T1 against a T2 so stored 0.52 (taken for one contrast at the start; the cut
#: sent its optimisation astray, 1.32 -> 7.52 mm); images synthesised from label maps with tissues of swapped
#: brightness 0.56 / 0.63 (clipped at the 90th / 80th percentile of their tissue; cut: 1.09 -> 1.06 / 1.98 -> 1.81)
SATURATION_MATCH_MIN_CORRELATION = 0.6
#: a normalised moving voxel at or above this value lies on the clipped image's plateau (exactly 1: its 99th
#: percentile is its largest value)
_PLATEAU = 1.0 - 1e-6
#: voxels of each image counted for the shares (evenly spread)
_OVERLAP_SAMPLES = 1_000_000


def normalized_for_preset(image: Image, preset_modality: str, ct_window, mask: Optional[np.ndarray] = None) -> Image:
    """``image`` normalised to about [0, 1]: CT (:func:`~.hounsfield.is_ct`) by the preset's HU window, anything
    else as the preset's modality (a non-CT image under a CT preset as "generic")."""
    ct = is_ct(image)
    modality = "ct" if ct else (preset_modality if preset_modality != "ct" else "generic")
    padding = None if ct else padding_below(image)
    if padding is not None:  # left out of the percentiles; below the window's low end, it then reads 0
        mask = image.array > padding if mask is None else (mask & (image.array > padding))
        mask = mask if mask.any() else None
    return normalize_intensity(image, modality, window=ct_window if ct else None, mask=mask)


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


def saturated_share(image: Image, region: Optional[np.ndarray] = None) -> float:
    """The share of ``image``'s voxels (inside ``region`` when given) that hold its largest value: 0 for an image
    whose corners all hold it (a white background or padding, not clipped tissue) and for one of at most
    ``LABEL_MAP_MAX_VALUES`` distinct values (a label map)."""
    array = image.array
    top = array.max()
    if corners_hold(array, top):
        return 0.0
    values = (array if region is None else array[region]).reshape(-1)
    sample = values[:: max(1, values.size // 2_000_000)]
    if sample.size == 0 or np.unique(sample[:: max(1, sample.size // 200_000)]).size <= LABEL_MAP_MAX_VALUES:
        return 0.0
    return float(np.count_nonzero(sample == top)) / sample.size


def normalized_pair(fixed: Image, moving: Image, preset_modality: str, ct_window, region: Optional[np.ndarray],
                    initial: Optional[AffineMap] = None) -> tuple[Image, Image, dict]:
    """Both images normalised (:func:`normalized_for_preset`) over the same anatomy.

    Without a fixed ``region`` (the user's fixed mask, less padding) each image's percentiles come from all of
    it; with one, the fixed image's from the region and the moving image's from the region as it lies on the
    moving grid (physical position, through ``initial``, the fixed -> moving start), so one tissue gets one value
    in both (a brain mask's percentiles beside the whole head's: the benchmark brain seeds 0 / 1 / 2, balanced,
    0.233 / 0.207 / 0.234 mm; the region on both 0.210 / 0.190 / 0.200). Where the region does not reach the
    moving image (``MIN_MASK_WORKING_VOXELS``) or it is constant there, its own percentiles (the record says so).

    Args:
        fixed, moving: the images (Hounsfield units where CT); preset_modality, ct_window: the preset's.
        region: (Z, Y, X) bool on the fixed grid, or None; initial: the user's start, fixed -> moving, or None.

    Returns:
        (fixed normalised, moving normalised, {"fixed": ..., "moving": ...} naming the voxels each image's
        percentiles came from; CT images use the preset's Hounsfield window instead; with
        "moving_saturated_share" where a non-CT moving image beside a non-CT fixed one holds its largest value
        in a share of those voxels from ``SATURATION_MATCH_MIN_SHARE`` to ``SATURATION_MATCH_MAX_SHARE``: its top
        is then 1 over that share, and :func:`matched_top` cuts the fixed image's alike on the working grid).
    """
    fixed_ct, moving_ct = is_ct(fixed), is_ct(moving)
    record = {"fixed": "Hounsfield window" if fixed_ct else ("the fixed region" if region is not None
                                                             else "the whole image")}
    fixed_n = normalized_for_preset(fixed, preset_modality, ct_window, mask=region)
    on_moving = None
    if moving_ct or region is None:
        record["moving"] = "Hounsfield window" if moving_ct else "the whole image"
    else:
        try:
            on_moving = map_mask(Image(region, fixed.geometry, "fixed region"), moving.geometry, "fixed region",
                                 "moving image", affine=None if initial is None else initial.inverse())
            if np.count_nonzero(on_moving) < MIN_MASK_WORKING_VOXELS:
                raise ImageError("too few voxels")
            moving_n = normalized_for_preset(moving, preset_modality, ct_window, mask=on_moving)
            record["moving"] = "the fixed region on the moving grid"
        except (RegistrationError, ImageError):
            on_moving = None
            record["moving"] = "the whole image (the fixed region does not reach it)"
    if on_moving is None:
        moving_n = normalized_for_preset(moving, preset_modality, ct_window)
    share = 0.0 if fixed_ct or moving_ct else saturated_share(moving, on_moving)
    if SATURATION_MATCH_MIN_SHARE <= share <= SATURATION_MATCH_MAX_SHARE:
        record["moving_saturated_share"] = round(share, 4)
    return fixed_n, moving_n, record


def _values_over(image: Image, *others: tuple[Geometry, Callable[[np.ndarray], np.ndarray]]) -> np.ndarray:
    """``image``'s values at about ``_OVERLAP_SAMPLES`` of its voxels spread evenly, those whose centres map
    (each ``(geometry, map)``: physical points of ``image`` -> of that geometry) inside every other grid."""
    array = image.array
    step = max(1, int(round((array.size / _OVERLAP_SAMPLES) ** (1.0 / 3.0))))
    zyx = [a.ravel() for a in np.meshgrid(*(np.arange(0, n, step) for n in array.shape), indexing="ij")]
    points = image.geometry.index_to_physical(np.stack(zyx[::-1], axis=1))
    keep = np.ones(points.shape[0], dtype=bool)
    for geometry, to_other in others:
        keep &= geometry.contains(to_other(points))
    return array[zyx[0][keep], zyx[1][keep], zyx[2][keep]]


def matched_top(fixed_w: np.ndarray, fixed_n: Image, moving_n: Image, work: Geometry, affine: AffineMap
                ) -> tuple[np.ndarray, dict]:
    """The fixed working image with its top cut at the clipped moving image's plateau share (module docstring).

    Both shares are counted on the images' own voxels (resampling blurs a plateau's rim) over the region both
    show: the moving image's plateau (1 after :func:`normalized_pair`) among its voxels that the pre-alignment
    puts inside the working grid, and the fixed image's value at that share among its voxels inside the working
    grid that fall inside the moving image.

    Args:
        fixed_w: (Z, Y, X) the normalised fixed image on the working grid ``work``.
        fixed_n, moving_n: the normalised images on their own grids; affine: the pre-alignment, fixed -> moving.

    Returns:
        (``fixed_w`` divided by that value and clipped at 1, or itself where the plateau covers less than
        ``SATURATION_MATCH_MIN_SHARE`` of the overlap or the pre-aligned images correlate less than
        ``SATURATION_MATCH_MIN_CORRELATION`` where both show tissue; a record of the share, the correlation and the
        value, or why not cut).
    """
    on_moving = _values_over(moving_n, (work, affine.inverse_apply))
    share = float(np.count_nonzero(on_moving >= _PLATEAU)) / max(on_moving.size, 1)
    correlation = contrast_correlation(fixed_n, moving_n, affine)
    record = {"moving_plateau_share": round(share, 4), "correlation": round(correlation, 3)}
    on_fixed = _values_over(fixed_n, (work, lambda points: points), (moving_n.geometry, affine.apply))
    if share < SATURATION_MATCH_MIN_SHARE or on_fixed.size == 0:
        return fixed_w, dict(record, applied=False, reason="the moving image's plateau is small where the images meet")
    if correlation < SATURATION_MATCH_MIN_CORRELATION:
        return fixed_w, dict(record, applied=False, reason="the pre-aligned images do not clearly share one contrast")
    level = float(np.quantile(on_fixed, 1.0 - share))
    if not level > 0.0:
        return fixed_w, dict(record, applied=False, reason="the fixed image is empty at that share")
    cut = np.minimum(fixed_w / np.float32(level), np.float32(1.0)).astype(np.float32, copy=False)
    return cut, dict(record, applied=True, fixed_value=round(level, 4))
