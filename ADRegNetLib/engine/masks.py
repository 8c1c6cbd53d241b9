r"""Masks and label maps given to ``register()``: told from scans, mapped by physical position onto a grid,
and how much of each lies on its image."""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ..spatial.affine import AffineMap
from ..spatial.geometry import Geometry
from ..spatial.image import Image
from ..spatial.warp import resample
from .api import RegistrationError
from .limits import MASK_MIN_SHARE_ON_IMAGE, MAX_MASK_VALUES, MAX_SIGNED_LABEL_VALUES, MIN_MASK_WORKING_VOXELS

__all__ = ["ScanLike", "scan_like", "map_mask", "mask_coverage_warning", "working_mask"]


class ScanLike(NamedTuple):
    """Why an array taken for a mask or label map looks like an intensity image (``scan_like``)."""

    count: int  # distinct values (in the subsample)
    lowest: float
    highest: float
    rule: str  # which bound they exceed, in words


def scan_like(array: np.ndarray) -> Optional[ScanLike]:
    """A mask or label map that is an intensity image given by mistake, or None: more than
    ``MAX_MASK_VALUES`` distinct values, or negative values and more than ``MAX_SIGNED_LABEL_VALUES`` (a CT in
    HU). Counted on a subsample of about 2 million voxels. One rule for the CLI, the engine and the Slicer
    module's masks."""
    flat = np.asarray(array).reshape(-1)
    values = np.unique(flat[:: max(1, flat.size // 2_000_000)])
    if values.size > MAX_MASK_VALUES:
        rule = f"more than the {MAX_MASK_VALUES} of any label map"
    elif values.size > MAX_SIGNED_LABEL_VALUES and values[0] < 0:
        rule = f"with negative values, more than the {MAX_SIGNED_LABEL_VALUES} a label map holds"
    else:
        return None
    return ScanLike(int(values.size), float(values[0]), float(values[-1]), rule)


def map_mask(mask: Image, geometry: Geometry, role: str, reference: str,
             affine: Optional[AffineMap] = None) -> np.ndarray:
    """A mask on any grid mapped by physical position onto ``geometry``: (Z, Y, X) bool.

    Args:
        mask: the mask image (> 0 inside), any grid, LPS mm.
        geometry: the grid to map it onto.
        role: "fixed mask" / "moving mask" (for messages).
        reference: the image the grid belongs to (for messages).
        affine: optional ``geometry`` -> mask-space affine (a moving mask seen from the fixed grid).

    Raises:
        RegistrationError: the mask has no voxel > 0 (values named) or does not overlap ``geometry``.
    """
    if not np.any(mask.array > 0):
        values = (f"values from {float(np.min(mask.array)):g} to {float(np.max(mask.array)):g}" if mask.array.size
                  else "no voxels")
        raise RegistrationError(f"the {role} is empty: no voxel above 0 ({values}); a mask marks the region of "
                                "interest with values > 0: give a mask that marks it")
    scan = scan_like(mask.array)
    if scan is not None:
        raise RegistrationError(f"the {role} holds {scan.count} distinct values (from {scan.lowest:g} to "
                                f"{scan.highest:g}): it looks like an intensity image (a scan), not a mask or label "
                                "map; give the segmentation (values > 0 inside the region)")
    src = Image((mask.array > 0).astype(np.float32), mask.geometry, mask.name)
    # Linear interpolation of the indicator then > 0.5: the mask's boundary lands at the same
    # physical place whatever the two grids' spacings (nearest neighbour would shift it by up to a voxel).
    out = resample(src, geometry, affine=affine, mode="linear", default=0.0).array > 0.5
    if not out.any():
        raise RegistrationError(
            f"the {role} does not overlap the {reference} in physical space (mask origin "
            f"{np.round(mask.geometry.origin, 1).tolist()} mm, extent {np.round(mask.geometry.extent_mm, 1).tolist()} mm); "
            f"give a mask drawn on the {reference} (or one whose header places it over the {reference})")
    return out


def mask_coverage_warning(mask: Image, mapped: np.ndarray, geometry: Geometry, role: str,
                          reference: str) -> Optional[str]:
    """A warning when less than ``MASK_MIN_SHARE_ON_IMAGE`` of a mask's marked volume lies on its image.

    Args:
        mask: the mask as given (> 0 inside), any grid.
        mapped: (Z, Y, X) bool, ``map_mask(mask, geometry, ...)``.
        geometry: the image's grid; role, reference: for the message.
    """
    marked_mm3 = float(np.count_nonzero(mask.array > 0)) * float(np.prod(mask.geometry.spacing))
    share = float(np.count_nonzero(mapped)) * float(np.prod(geometry.spacing)) / max(marked_mm3, 1e-12)
    if share >= MASK_MIN_SHARE_ON_IMAGE:
        return None
    return (f"only {100 * share:.1f}% of the {role}'s marked volume lies on the {reference}; the rest is ignored. "
            f"A mask drawn on the {reference} covers it: check the mask's header (a flipped axis, RAS against LPS, "
            "or another origin) or that it belongs to this scan")


def working_mask(fixed_mask: Optional[Image], moving_mask: Optional[Image], work: Geometry,
                 affine: AffineMap, fixed_given: bool = True) -> Optional[np.ndarray]:
    """The region of interest on the working grid: the fixed mask (on the fixed grid), the moving mask seen
    through the pre-alignment ``affine`` (fixed -> moving), or where both are; None without masks.
    ``fixed_given``: the fixed mask is the user's (not only where the fixed image is not padding), for the message.

    Raises:
        RegistrationError: the masks do not overlap, or leave fewer than ``MIN_MASK_WORKING_VOXELS`` voxels.
    """
    region = None if fixed_mask is None else map_mask(fixed_mask, work, "fixed mask", "fixed image")
    if moving_mask is not None:
        moving_in_fixed = map_mask(moving_mask, work, "moving mask", "fixed image (after pre-alignment)", affine=affine)
        region = moving_in_fixed if region is None else (region & moving_in_fixed)
        if not region.any():
            raise RegistrationError("the fixed and moving masks do not overlap after pre-alignment; check the masks")
    if region is not None and np.count_nonzero(region) < MIN_MASK_WORKING_VOXELS:
        masks = " and ".join(m for m, given in (("fixed mask", fixed_given and fixed_mask is not None),
                                                 ("moving mask", moving_mask is not None)) if given) or "image's padding"
        raise RegistrationError(
            f"the {masks} leave{'s' if ' and ' not in masks else ''} {np.count_nonzero(region)} voxels of the "
            f"{work.spacing.min():.3g} mm working grid to compare (at least {MIN_MASK_WORKING_VOXELS} are needed, as "
            f"in a cube of {round(MIN_MASK_WORKING_VOXELS ** (1 / 3))} voxels a side): mark a larger region of interest, "
            "or register without the mask")
    return region
