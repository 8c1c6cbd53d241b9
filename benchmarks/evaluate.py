r"""Measuring a field against a case's truth: TRE, Dice, folds, std log J.

Everything here is the library's: points are mapped with :func:`ADRegNetLib.spatial.transform.map_points`
(trilinear, float64), labels warped with :func:`ADRegNetLib.spatial.warp.warp_image`, Jacobians and
metrics from :mod:`ADRegNetLib.spatial.jacobian` and :mod:`ADRegNetLib.metrics`.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from ADRegNetLib.io import read_image
from ADRegNetLib.metrics import dice, jacobian_stats, tre
from ADRegNetLib.spatial.jacobian import jacobian_determinant
from ADRegNetLib.spatial.transform import map_points
from ADRegNetLib.spatial.warp import warp_image

from .cases import Case

__all__ = ["evaluate_field"]


def evaluate_field(case: Case, disp_mm: np.ndarray, transform_points: Optional[Callable] = None) -> dict:
    """Measure a field against the case's truth.

    Args:
        case: the case.
        disp_mm: (3, Z, Y, X) estimated field on the fixed grid, LPS mm, fixed x -> moving x + u(x).
        transform_points: optional callable (K, 3) -> (K, 3) used for TRE instead of sampling
            ``disp_mm`` (for methods whose exact point transform is available).

    Returns:
        dict with ``tre_mean``, ``tre_p95``, ``tre_max`` (mm, continuous: landmarks mapped through the
        field with trilinear interpolation), ``dice`` (mean over the case's labels of the moving labels
        warped by nearest neighbour vs the fixed labels), ``folds_pct`` (% of fixed voxels with
        det J <= 0), ``sdlogj`` (std of log det J over the fixed grid, det J clipped to [1e-9, 1e9]),
        ``jac_min``.

    Raises:
        ValueError: the field is not on the fixed grid.
    """
    fixed_geom = case.fixed_geometry()
    disp_mm = np.asarray(disp_mm, dtype=np.float32)
    if disp_mm.shape != (3, *fixed_geom.shape):
        raise ValueError(f"field must be (3, Z, Y, X) = (3, {fixed_geom.shape}) on the fixed grid, got {disp_mm.shape}")
    f_lm, m_lm = case.fixed_landmarks(), case.moving_landmarks()
    mapped = transform_points(f_lm) if transform_points is not None else map_points(disp_mm, fixed_geom, f_lm)
    t = tre(mapped, m_lm)

    fixed_labels = read_image(case.fixed_labels_path, dtype=np.int16).array
    moving = read_image(case.moving_labels_path, dtype=np.int64)
    t_disp = torch.from_numpy(disp_mm)[None]
    warped = warp_image(torch.from_numpy(moving.array)[None, None], t_disp, fixed_geom, moving.geometry,
                        mode="nearest")[0, 0].numpy()
    d = dice(warped, fixed_labels, case.label_ids) if case.label_ids else {"mean": float("nan")}
    j = jacobian_stats(jacobian_determinant(t_disp, fixed_geom)[0].numpy())
    return {
        "tre_mean": t["mean"],
        "tre_p95": t["p95"],
        "tre_max": t["max"],
        "dice": d["mean"],
        "folds_pct": 100.0 * j["folding_fraction"],
        "sdlogj": j["std_log_det"],
        "jac_min": j["min"],
    }
