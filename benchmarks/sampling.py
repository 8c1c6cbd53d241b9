r"""Sampling images and fields at physical points for the case generator (scipy, float64).

These are the interpolators the cases were generated with. They stay scipy-based on purpose: the
cases are what before/after comparisons run on, and the library's torch sampler
(:func:`ADRegNetLib.spatial.transform.map_points`) agrees with them only to about 1e-14 mm, not bit
for bit. Measuring a method's field (:mod:`.evaluate`) uses the library's sampler.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ADRegNetLib.spatial.geometry import Geometry

__all__ = ["grid_points", "sample_at", "interpolate_field", "invert_field_at"]


def grid_points(geometry: Geometry) -> np.ndarray:
    """Centres of every voxel of ``geometry``.

    Returns:
        (Z*Y*X, 3) float64 LPS mm, in the C order of a (Z, Y, X) array.
    """
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in geometry.shape), indexing="ij")
    idx = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1)
    return geometry.index_to_physical(idx)


def sample_at(array: np.ndarray, geometry: Geometry, points: np.ndarray, order: int = 1,
              cval: float = 0.0, mode: str = "constant") -> np.ndarray:
    """Sample an image at physical points.

    Args:
        array: (Z, Y, X) image on ``geometry``.
        geometry: its grid.
        points: (N, 3) LPS mm.
        order: 0 nearest neighbour (labels), 1 trilinear (intensities).
        cval: value outside the grid (``mode="constant"``).
        mode: scipy ``map_coordinates`` boundary mode.

    Returns:
        (N,) values, in ``array``'s dtype.
    """
    idx = geometry.physical_to_index(points)
    coords = idx[:, ::-1].T  # (z, y, x) rows for map_coordinates
    return ndimage.map_coordinates(array, coords, order=order, mode=mode, cval=cval, prefilter=False)


def interpolate_field(disp_mm: np.ndarray, geometry: Geometry, points: np.ndarray) -> np.ndarray:
    """Trilinear value of a field at points; outside the grid the edge value is used.

    Args:
        disp_mm: (3, Z, Y, X) LPS mm, (x, y, z) components, on ``geometry``.
        geometry: the field's grid.
        points: (N, 3) LPS mm.

    Returns:
        (N, 3) float64 displacement at the points, LPS mm.

    Raises:
        ValueError: ``disp_mm`` is not (3, Z, Y, X) on ``geometry``.
    """
    disp_mm = np.asarray(disp_mm)
    if disp_mm.ndim != 4 or disp_mm.shape[0] != 3 or tuple(disp_mm.shape[1:]) != geometry.shape:
        raise ValueError(f"disp_mm must be (3, Z, Y, X) = (3, {geometry.shape}), got {disp_mm.shape}")
    idx = geometry.physical_to_index(points)
    coords = idx[:, ::-1].T
    return np.stack([ndimage.map_coordinates(disp_mm[c].astype(np.float64, copy=False), coords, order=1,
                                             mode="nearest", prefilter=False) for c in range(3)], axis=1)


def invert_field_at(disp_mm: np.ndarray, geometry: Geometry, points: np.ndarray, iterations: int = 40,
                    tol_mm: float = 1e-4) -> tuple[np.ndarray, float]:
    """Inverse displacement ``w`` at moving points ``y``: ``y + w + u(y + w) = y``.

    Fixed-point iteration ``w <- -u(y + w)`` (converges where u is a contraction, which smooth fields
    with |grad u| < 1 are), then a damped iteration for the points still moving.

    Args:
        disp_mm: (3, Z, Y, X) forward field on ``geometry`` (fixed x -> moving x + u(x)), LPS mm.
        geometry: its grid.
        points: (N, 3) moving points, LPS mm.
        iterations: fixed-point iterations (the damped stage gets 8 times as many).
        tol_mm: stop when the update is below this, mm.

    Returns:
        ((N, 3) w in LPS mm, the largest remaining residual |y + w + u(y + w) - y| in mm).
    """
    w = -interpolate_field(disp_mm, geometry, points)
    resid = np.inf
    for _ in range(iterations):
        new = -interpolate_field(disp_mm, geometry, points + w)
        resid = float(np.abs(new - w).max()) if len(w) else 0.0
        w = new
        if resid < tol_mm:
            break
    if resid >= tol_mm:
        # Where u expands by more than 2x along some direction (|grad u| > 1) the plain iteration
        # does not contract. The damped step w <- w - (w + u(y + w)) / 2 converges wherever the
        # eigenvalues of I + grad u lie in (0, 4), which a diffeomorphism this smooth satisfies.
        # Only the points still moving are iterated, so converged cases are unchanged.
        todo = np.ones(len(w), dtype=bool)
        for _ in range(8 * iterations):
            r = w[todo] + interpolate_field(disp_mm, geometry, points[todo] + w[todo])
            w[todo] -= 0.5 * r
            err = np.abs(r).max(axis=1)
            idx = np.flatnonzero(todo)
            todo[idx[err < tol_mm]] = False
            if not todo.any():
                break
        final = w + interpolate_field(disp_mm, geometry, points + w)
        resid = float(np.abs(final).max()) if len(w) else 0.0
    return w, resid
