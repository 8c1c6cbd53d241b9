r"""Padding that cuts through anatomy: the planes of an image that hold no data.

A scan resampled onto a larger grid (Slicer's resample to a reference, a slab acquisition stored in a
whole-head volume) carries whole planes of one constant value beyond where it was acquired: usually
its minimum, sometimes another (a CT padded with 0 HU, which looks like soft tissue). Where the
anatomy next to them is cut (the first plane with data differs from the padding value over much of
its area), those planes are not background but "no data": matching the other image's anatomy to them
squeezes the field (brain pair, moving image zeroed over half its width: affine scale 0.5, final TRE
42 mm). Where the anatomy ends on its own before the padding (a skull-stripped brain in a zero
background, the head inside the field of view), the planes are background and stay.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .geometry import Geometry
from .image import Image
from .intensity_map import sample_quantiles

__all__ = ["border_runs", "data_box", "constant_border_box", "working_box", "box_geometry", "crop_to_box",
           "circular_padding"]


def _constant_run(low: np.ndarray, high: np.ndarray) -> tuple[int, float]:
    """Planes (in order) of one constant value from the first: (how many, the value); (0, nan) if none."""
    if low[0] != high[0]:
        return 0, float("nan")
    value = low[0]
    same = (low == value) & (high == value)
    if same.all():
        return 0, float("nan")  # the whole image is constant: not padding, nothing to keep
    return int(np.argmin(same)), float(value)


def border_runs(array: np.ndarray) -> list[tuple[tuple[int, float], tuple[int, float]]]:
    """Per axis (Z, Y, X): ((leading planes of one constant value, the value), (trailing ones, the value))."""
    runs = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        low, high = array.min(axis=others), array.max(axis=others)
        runs.append((_constant_run(low, high), _constant_run(low[::-1], high[::-1])))
    return runs


def constant_border_box(array: np.ndarray, runs: Optional[list] = None) -> Optional[tuple[slice, slice, slice]]:
    """The planes between the image's constant border planes.

    Args:
        array: (Z, Y, X) intensities.
        runs: its :func:`border_runs` when already read (each reading is six passes over the image).

    Returns:
        (Z, Y, X) slices without the whole planes of one constant value at each side, whatever lies next to them
        (padding, or an empty background stored as one exact value); None when there are none.
    """
    runs = border_runs(array) if runs is None else runs
    if not any(count for sides in runs for count, _ in sides):
        return None
    return tuple(slice(leading, n - trailing) for n, ((leading, _), (trailing, _)) in zip(array.shape, runs))


def working_box(array: np.ndarray, spacing_zyx: Sequence[float], margin_mm: float, min_planes: int,
                runs: Optional[list] = None) -> Optional[tuple[slice, slice, slice]]:
    """The part of an image a registration's working grid spans.

    Args:
        array: (Z, Y, X) intensities of the fixed image.
        spacing_zyx: its voxel size along Z, Y, X, mm.
        margin_mm: constant border planes kept next to the data on each side.
        min_planes: fewest planes kept per axis (within the image).
        runs: as :func:`constant_border_box`.

    Returns:
        (Z, Y, X) slices: :func:`constant_border_box` widened so; None when that keeps the whole image.
    """
    box = constant_border_box(array, runs)
    if box is None:
        return None
    kept = []
    for part, n, spacing in zip(box, array.shape, spacing_zyx):
        extra = int(np.ceil(margin_mm / float(spacing)))
        start, stop = max(0, part.start - extra), min(n, part.stop + extra)
        need = min(min_planes, n)
        if stop - start < need:  # as many planes around its centre, within the image
            start = max(0, min((start + stop) // 2 - need // 2, n - need))
            stop = start + need
        kept.append(slice(start, stop))
    return None if all(k.start == 0 and k.stop == n for k, n in zip(kept, array.shape)) else tuple(kept)


def box_geometry(geometry: Geometry, box: tuple[slice, slice, slice]) -> Geometry:
    """The grid of part of another.

    Args:
        geometry: the whole grid.
        box: (Z, Y, X) slices of it with explicit bounds.

    Returns:
        the grid of those voxels, each at its physical place (same spacing and direction).
    """
    z, y, x = box
    origin = geometry.index_to_physical(np.array([[x.start, y.start, z.start]], dtype=np.float64))[0]
    return Geometry((x.stop - x.start, y.stop - y.start, z.stop - z.start), geometry.spacing, origin, geometry.direction)


def data_box(array: np.ndarray, tissue_threshold: float, min_cut_share: float,
             runs: Optional[list] = None) -> Optional[tuple[slice, slice, slice]]:
    """The (Z, Y, X) slices that hold the data, or None when no padding cuts through anatomy.

    Args:
        array: (Z, Y, X) intensities.
        tissue_threshold: share of the image's intensity range (1st to 99th percentile) by which a voxel
            must differ from the padding value to show tissue.
        min_cut_share: share of a plane's voxels that must show tissue for the anatomy to count as
            cut there (the first plane with data next to the padding).
        runs: as :func:`constant_border_box`.

    Returns:
        slices per axis (Z, Y, X) keeping every plane except the padding on the sides where it cuts
        through anatomy; None when there is no such side.
    """
    runs = border_runs(array) if runs is None else runs
    if not any(count for sides in runs for count, _ in sides):
        return None
    lo, hi = sample_quantiles(torch.from_numpy(np.ascontiguousarray(array)), [0.01, 0.99]).tolist()
    margin = tissue_threshold * max(hi - lo, 1e-12)

    def cuts(plane: np.ndarray, value: float) -> bool:
        return np.count_nonzero(np.abs(plane - value) > margin) >= min_cut_share * plane.size

    keep = []
    for axis, (n, ((leading, first), (trailing, last))) in enumerate(zip(array.shape, runs)):
        start = leading if leading and cuts(np.take(array, leading, axis=axis), first) else 0
        stop = n - trailing if trailing and cuts(np.take(array, n - 1 - trailing, axis=axis), last) else n
        keep.append(slice(start, stop))
    cut = any(k.start > 0 or k.stop < n for k, n in zip(keep, array.shape))
    return tuple(keep) if cut else None


def crop_to_box(image: Image, box: tuple[slice, slice, slice]) -> Image:
    """``image`` cut to ``box`` ((Z, Y, X) slices), its geometry moved with it (same physical positions)."""
    z, y, x = (slice(*b.indices(n)[:2]) for b, n in zip(box, image.array.shape))
    array = np.ascontiguousarray(image.array[z, y, x])
    return Image(array, box_geometry(image.geometry, (z, y, x)), image.name)


def circular_padding(array: np.ndarray, spacing_zyx: Sequence[float], min_share: float = 0.05,
                     tolerance_voxels: float = 1.5) -> Optional[np.ndarray]:
    """Voxels of one constant value outside a cylinder of data along a grid axis: the padding outside a circular
    field of view (a cone-beam CT), written as a value that may also be air (-1024 or -1000).

    The value is the one the four corners of the cross-section hold in every slice (they lie outside any inscribed
    circle). A pixel of the cross-section is padding when it holds that value in 99 % of the slices (and 75 % of the
    cross-section's border is padding); the rest (the data) must be a disk: every pixel of it within its equal-area
    radius plus ``tolerance_voxels`` of its centre, every pixel within that radius minus the tolerance in it
    (physical distances, so unequal in-plane spacings count). Air outside a body clipped to its lowest value
    follows the body's outline along the axis, no circle, and is left alone.

    Args:
        array: (Z, Y, X) intensities.
        spacing_zyx: voxel size along (z, y, x), mm.
        min_share: the padding must cover at least this share of a cross-section.
        tolerance_voxels: how far from a circle the data's edge may lie.

    Returns:
        (Z, Y, X) bool, True where the cross-section is padding (in every slice), or None.
    """
    for axis in range(3):
        if array.shape[axis] < 2 or min(n for i, n in enumerate(array.shape) if i != axis) < 8:
            continue
        # the cross-section's four corners lie outside any inscribed circle: padding there holds its one value
        section = np.moveaxis(array, axis, 0)
        corners = section[:, [0, 0, -1, -1], [0, -1, 0, -1]]
        if not (corners == corners[0, 0]).all():
            continue
        constant = section == corners[0, 0]
        outside = constant.mean(axis=0) >= 0.99
        border = np.concatenate([outside[0], outside[-1], outside[:, 0], outside[:, -1]])
        if not min_share <= outside.mean() < 1.0 - min_share or border.mean() < 0.75:
            continue  # a circle within the cross-section leaves its border to the padding
        spacing = [float(s) for i, s in enumerate(spacing_zyx) if i != axis]
        rows, cols = np.nonzero(~outside)
        centre = rows.mean(), cols.mean()
        radius = float(np.sqrt(rows.size * spacing[0] * spacing[1] / np.pi))
        grid = np.indices(outside.shape)
        distance = np.hypot((grid[0] - centre[0]) * spacing[0], (grid[1] - centre[1]) * spacing[1])
        tolerance = tolerance_voxels * max(spacing)
        if (distance[~outside] <= radius + tolerance).all() and not (outside & (distance < radius - tolerance)).any():
            return np.moveaxis(np.broadcast_to(outside[None], section.shape), 0, axis).copy()
    return None
