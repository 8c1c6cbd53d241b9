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
    d = to_numpy(det, "det", dtype=None)
    if d.ndim == 4 and d.shape[0] == 1:
        d = d[0]
    m = as_mask(mask, d.shape)
    if d.size == 0:
        raise ValueError("det is empty")
    # Sums in float64, slab by slab: no float64 copy of the whole map (79 M voxels: 0.6 GB each).
    n = folding = 0
    s1 = s2 = l1 = l2 = 0.0
    lo, hi = np.inf, -np.inf
    step = max(1, (1 << 22) // max(1, int(np.prod(d.shape[1:])))) if d.ndim > 1 else d.size
    for z0 in range(0, d.shape[0], step):
        part = d[z0:z0 + step]
        values = (part[m[z0:z0 + step]] if m is not None else part.ravel()).astype(np.float64)
        if values.size == 0:
            continue
        if not np.all(np.isfinite(values)):
            bad = int((~np.isfinite(d if m is None else d[m])).sum())
            raise ValueError(f"det holds {bad} NaN or infinite values")
        log_det = np.log(np.maximum(values, log_floor))
        n += values.size
        folding += int(np.count_nonzero(values <= 0))
        s1 += float(values.sum())
        s2 += float(np.dot(values, values))
        l1 += float(log_det.sum())
        l2 += float(np.dot(log_det, log_det))
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    if n == 0:
        raise ValueError("det is empty")
    mean, log_mean = s1 / n, l1 / n
    return {
        "mean": mean,
        "std": float(np.sqrt(max(s2 / n - mean * mean, 0.0))),
        "min": lo,
        "max": hi,
        "folding_fraction": folding / n,
        "folding_count": folding,
        "std_log_det": float(np.sqrt(max(l2 / n - log_mean * log_mean, 0.0))),
        "num_voxels": int(n),
    }
