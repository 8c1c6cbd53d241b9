r"""Summary statistics of a Jacobian determinant map."""
from __future__ import annotations

import numpy as np

from ._common import as_mask, to_numpy

__all__ = ["jacobian_stats"]


def jacobian_stats(det, mask=None, log_floor: float = 1e-9) -> dict:
    """Statistics of det(∂(x + u)/∂x) over the grid (or inside ``mask``).

    Args:
        det: (Z, Y, X) or (1, Z, Y, X) determinant map (numpy or torch), e.g. from
            :func:`ADRegNetLib.spatial.jacobian_determinant`.
        mask: optional (Z, Y, X) bool region (e.g. the fixed image's body or lung mask).
        log_floor: determinants are clipped to at least this value before the logarithm, so
            folded voxels (det <= 0) count as a very large compression instead of NaN.

    Returns:
        dict of floats: ``mean``, ``std``, ``min``, ``max``, ``folding_fraction`` (share of
        voxels with det <= 0), ``folding_count`` (int), ``std_log_det`` (standard deviation of
        log(max(det, log_floor)): smoothness, 0 for any rigid or affine map), ``num_voxels``.

    Raises:
        ValueError: NaN/inf values, a mask of another shape, or an empty mask.
    """
    d = to_numpy(det, "det")
    if d.ndim == 4 and d.shape[0] == 1:
        d = d[0]
    m = as_mask(mask, d.shape)
    values = d[m] if m is not None else d.ravel()
    if values.size == 0:
        raise ValueError("det is empty")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"det holds {int((~np.isfinite(values)).sum())} NaN or infinite values")
    folding = int(np.count_nonzero(values <= 0))
    log_det = np.log(np.maximum(values, log_floor))
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "folding_fraction": folding / values.size,
        "folding_count": folding,
        "std_log_det": float(log_det.std()),
        "num_voxels": int(values.size),
    }
