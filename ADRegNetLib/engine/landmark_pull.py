"""Landmark pairs pulling the field: the update that removes part of each pair's residual near it.

Used by the MIND levels (``optimizer``) and the refinement (``refine``) alike: each step adds
:func:`landmark_update` to the similarity's update.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..spatial.filters import gaussian_kernel, smoothed_splats
from ..spatial.flow import norm_to_mm_matrix
from ..spatial.geometry import Geometry

__all__ = ["landmark_tensors", "landmark_update"]


def landmark_tensors(fixed_points: Optional[np.ndarray], moving_points: Optional[np.ndarray], geometry: Geometry,
                     like: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(fixed (K, 3), moving (K, 3) in ``geometry``'s normalised coordinates, (3, 3) normalised vector
    -> LPS mm) for :func:`landmark_update`; None without pairs."""
    if fixed_points is None or moving_points is None or len(fixed_points) == 0:
        return None
    a, b = geometry.physical_to_normalized_affine()
    as_t = dict(dtype=like.dtype, device=like.device)
    return (torch.as_tensor(np.asarray(fixed_points, dtype=np.float64) @ a.T + b, **as_t),
            torch.as_tensor(np.asarray(moving_points, dtype=np.float64) @ a.T + b, **as_t),
            torch.as_tensor(norm_to_mm_matrix(geometry), **as_t))


def landmark_update(v_norm: torch.Tensor, fixed_norm: torch.Tensor, moving_norm: torch.Tensor,
                     to_mm: torch.Tensor, image_update: torch.Tensor, sigma: float,
                     fraction: float) -> tuple[torch.Tensor, float]:
    """Update (voxels of the level) that removes ``fraction`` of each landmark's residual near it.

    The residual counts the image update of the same step (``image_update``; without it the two
    corrections add up and the landmarks overshoot, alternating from step to step). The residuals
    are spread by the kernel regression ``u(x) = fraction * S(sum_k delta_k r_k)(x) /
    max(S(sum_k delta_k)(x), rho0)`` (``S`` the Gaussian, ``delta_k`` trilinear splats, ``rho0``
    the peak of one smoothed splat): at an isolated landmark it moves ``fraction`` of the residual,
    between landmarks it averages theirs, and it fades to zero away from them.

    Args:
        v_norm: (1, 3, Z, Y, X) the current flow (normalised) on the level grid.
        fixed_norm, moving_norm: (K, 3) landmarks in normalised coordinates (x, y, z); the moving
            ones in the pre-aligned space.
        to_mm: (3, 3) normalised vector -> LPS mm.
        image_update: (1, 3, Z, Y, X) the similarity update of this step, voxels of the level.
        sigma: Gaussian sigma, voxels of the level.
        fraction: share of the residual removed per step.

    Returns:
        (update (1, 3, Z, Y, X), voxels of the level, (x, y, z); mean landmark distance in mm).
    """
    pts = fixed_norm.view(1, 1, 1, -1, 3)
    with torch.no_grad():
        u = F.grid_sample(v_norm, pts, mode="bilinear", padding_mode="border", align_corners=True).view(3, -1).T
        resid_mm = (fixed_norm + u - moving_norm) @ to_mm.T
        size = torch.as_tensor(v_norm.shape[2:][::-1], dtype=v_norm.dtype, device=v_norm.device)
        vox_to_mm = to_mm * (2.0 / (size - 1).clamp_min(1))  # columns: mm per level voxel along x, y, z
        moved = F.grid_sample(image_update, pts, mode="bilinear", padding_mode="border", align_corners=True)
        target = -torch.linalg.solve(vox_to_mm, resid_mm.T).T - moved.view(3, -1).T  # (K, 3) voxels
        # the smoothed splats of the targets and of ones (the density), built from separable profiles
        smoothed = smoothed_splats(fixed_norm, torch.cat([target, torch.ones_like(target[:, :1])], dim=1),
                                   v_norm.shape[2:], sigma)
    rho0 = float(gaussian_kernel(sigma).max()) ** 3  # one unit splat on a voxel centre, smoothed
    update = smoothed[:, :3].mul_(fraction).div_(smoothed[:, 3:].clamp_min(rho0))
    return update, float(resid_mm.norm(dim=1).mean())
