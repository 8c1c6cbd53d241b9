r"""Target registration error (TRE) between landmark sets."""
from __future__ import annotations

import numpy as np

from ._common import to_numpy

__all__ = ["tre"]


def tre(fixed_pts_mapped, moving_pts, spacing=None) -> dict:
    """Target registration error: distance between mapped fixed landmarks and moving landmarks.

    Args:
        fixed_pts_mapped: (K, 3) fixed landmarks mapped through the registration (``x + u(x)``),
            LPS mm (numpy or torch).
        moving_pts: (K, 3) the matching moving landmarks, LPS mm.
        spacing: optional (3,) per-axis scale applied to the differences (use it only when the
            points are voxel indices; for mm points leave None).

    Returns:
        dict with ``per_landmark`` ((K,) float64 mm), and floats ``mean``, ``std`` (population,
        ddof = 0), ``median``, ``p95`` (95th percentile, linear interpolation), ``max``.

    Raises:
        ValueError: shapes differ, are not (K, 3), are empty, or hold NaN/inf.
    """
    a = to_numpy(fixed_pts_mapped, "fixed_pts_mapped")
    b = to_numpy(moving_pts, "moving_pts")
    for name, arr in (("fixed_pts_mapped", a), ("moving_pts", b)):
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise ValueError(f"{name} must be (K, 3) points, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} holds NaN or infinite coordinates")
    if a.shape != b.shape:
        raise ValueError(f"landmark counts differ: {a.shape[0]} mapped fixed vs {b.shape[0]} moving points")
    if a.shape[0] == 0:
        raise ValueError("no landmarks: TRE needs at least one pair")
    diff = a - b
    if spacing is not None:
        diff = diff * np.asarray(spacing, dtype=np.float64).reshape(1, 3)
    d = np.linalg.norm(diff, axis=1)
    return {
        "per_landmark": d,
        "mean": float(d.mean()),
        "std": float(d.std()),
        "median": float(np.median(d)),
        "p95": float(np.percentile(d, 95)),
        "max": float(d.max()),
    }
