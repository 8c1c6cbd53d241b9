r"""Padding that cuts through anatomy: the planes of an image that hold no data.

A scan resampled onto a larger grid (Slicer's resample to a reference, a slab acquisition stored in a
whole-head volume) carries whole planes of one constant value, its minimum, beyond where it was
acquired. Where the anatomy next to them is cut (the first plane with data shows tissue over much
of its area), those planes are not background but "no data": matching the other image's anatomy to
them squeezes the field (brain pair, moving image zeroed over half its width: affine scale 0.5, final
TRE 42 mm). Where the anatomy ends on its own before the padding (a skull-stripped brain in a zero
background, the head inside the field of view), the planes are background and stay.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .geometry import Geometry
from .image import Image

__all__ = ["data_box", "crop_to_box"]


def _padding_planes(padding: np.ndarray, axis: int) -> tuple[int, int]:
    """Planes of all-``padding`` voxels at the start and at the end of ``axis``."""
    other = tuple(a for a in range(3) if a != axis)
    full = padding.all(axis=other)
    if full.all():
        return 0, 0
    leading = int(np.argmin(full))
    trailing = int(np.argmin(full[::-1]))
    return leading, trailing


def data_box(array: np.ndarray, tissue_threshold: float, min_cut_share: float) -> Optional[tuple[slice, slice, slice]]:
    """The (Z, Y, X) slices that hold the data, or None when no padding cuts through anatomy.

    Args:
        array: (Z, Y, X) intensities.
        tissue_threshold: share of the range from the minimum to the 99th percentile of the data
            voxels above which a voxel shows tissue.
        min_cut_share: share of a plane's voxels that must show tissue for the anatomy to count as
            cut there (the first plane with data next to the padding).

    Returns:
        slices per axis (Z, Y, X) keeping every plane except the padding on the sides where it cuts
        through anatomy; None when there is no such side.
    """
    lowest = array.min()
    padding = array == lowest
    if padding.all() or not padding.any():
        return None
    planes = [_padding_planes(padding, axis) for axis in range(3)]
    if not any(leading or trailing for leading, trailing in planes):
        return None
    sample = array.reshape(-1)[:: max(1, array.size // 1_000_000)]  # about a million values suffice
    sample = sample[sample != lowest]
    top = float(np.percentile(sample, 99)) if sample.size else float(array.max())
    tissue_level = float(lowest) + tissue_threshold * (top - float(lowest))

    def cuts(plane: np.ndarray) -> bool:
        return np.count_nonzero(plane > tissue_level) >= min_cut_share * plane.size

    keep = []
    for axis, (n, (leading, trailing)) in enumerate(zip(array.shape, planes)):
        start = leading if leading and cuts(np.take(array, leading, axis=axis)) else 0
        stop = n - trailing if trailing and cuts(np.take(array, n - 1 - trailing, axis=axis)) else n
        keep.append(slice(start, stop))
    cut = any(k.start > 0 or k.stop < n for k, n in zip(keep, array.shape))
    return tuple(keep) if cut else None


def crop_to_box(image: Image, box: tuple[slice, slice, slice]) -> Image:
    """``image`` cut to ``box`` ((Z, Y, X) slices), its geometry moved with it (same physical positions)."""
    z, y, x = box
    g = image.geometry
    origin = g.index_to_physical(np.array([[x.start, y.start, z.start]], dtype=np.float64))[0]
    array = np.ascontiguousarray(image.array[z, y, x])
    return Image(array, Geometry(tuple(array.shape[::-1]), g.spacing, origin, g.direction), image.name)
