r"""Landmarks of the benchmark cases: fixed points drawn in the foreground, moving points through the truth."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ADRegNetLib.spatial.geometry import Geometry

from .sampling import interpolate_field

__all__ = ["sample_landmarks", "true_moving_landmarks"]


def sample_landmarks(mask: np.ndarray, geometry: Geometry, rng: np.random.Generator, count: int) -> np.ndarray:
    """Points drawn uniformly inside ``mask`` (eroded by a voxel), jittered within their voxel.

    Args:
        mask: (Z, Y, X) bool foreground on ``geometry``.
        geometry: its grid.
        rng: random generator.
        count: number of points (fewer when the mask has fewer voxels).

    Returns:
        (count, 3) float64 LPS mm, in voxel (C) order.

    Raises:
        ValueError: the mask is empty.
    """
    core = ndimage.binary_erosion(mask, iterations=1)
    if core.sum() < count:
        core = mask
    nz = np.stack(np.nonzero(core), axis=1)  # (N, 3) z, y, x
    if len(nz) == 0:
        raise ValueError("the foreground mask is empty: cannot place landmarks")
    pick = rng.choice(len(nz), size=min(count, len(nz)), replace=False)
    idx_xyz = nz[np.sort(pick)][:, ::-1].astype(np.float64) + rng.uniform(-0.5, 0.5, size=(len(pick), 3))
    return geometry.index_to_physical(idx_xyz)


def true_moving_landmarks(fixed_points: np.ndarray, true_disp: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The moving landmarks ``x + u(x)`` of fixed landmarks under the true field (trilinear ``u``).

    Args:
        fixed_points: (K, 3) LPS mm.
        true_disp: (3, Z, Y, X) true field on ``geometry``, LPS mm.
        geometry: the fixed grid.

    Returns:
        (K, 3) float64 LPS mm.
    """
    return fixed_points + interpolate_field(true_disp, geometry, fixed_points)
