r"""Warping images by displacement fields (resampling convention: fixed x -> moving x + u(x))."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .flow import check_field, identity_grid
from .geometry import Geometry

__all__ = ["warp_norm", "warp_image", "sampling_grid"]

_MODES = {"linear": "bilinear", "bilinear": "bilinear", "trilinear": "bilinear", "nearest": "nearest"}


def _mode(mode: str) -> str:
    try:
        return _MODES[mode]
    except KeyError:
        raise ValueError(f"interpolation mode must be one of {sorted(_MODES)}, got {mode!r}") from None


def warp_norm(image: torch.Tensor, flow_norm: torch.Tensor, mode: str = "linear",
              padding_mode: str = "border") -> torch.Tensor:
    """Warp an image by a flow on the *same* grid, in normalised units.

    Args:
        image: (N, C, Z, Y, X).
        flow_norm: (N, 3, Z, Y, X) normalised (x, y, z) flow of that grid.
        mode: "linear" or "nearest".
        padding_mode: grid_sample padding ("border", "zeros", "reflection").

    Returns:
        (N, C, Z, Y, X): ``image(id + flow)``.
    """
    check_field(flow_norm, "flow_norm")
    if image.ndim != 5 or image.shape[2:] != flow_norm.shape[2:]:
        raise ValueError(f"image (N, C, Z, Y, X) must match the flow's grid {tuple(flow_norm.shape[2:])}, got {tuple(image.shape)}")
    grid = identity_grid(tuple(flow_norm.shape[2:]), flow_norm) + flow_norm.permute(0, 2, 3, 4, 1)
    return F.grid_sample(image, grid, mode=_mode(mode), padding_mode=padding_mode, align_corners=True)


def sampling_grid(disp_mm: Optional[torch.Tensor], fixed_geometry: Geometry, moving_geometry: Geometry,
                  like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Normalised moving-grid coordinates of ``x + u(x)`` for every fixed voxel.

    Args:
        disp_mm: (N, 3, Z, Y, X) LPS mm on the fixed grid, or None for the identity map.
        fixed_geometry: grid of the field (output grid).
        moving_geometry: grid of the image to sample.
        like: tensor giving dtype/device when ``disp_mm`` is None.

    Returns:
        (N, Z, Y, X, 3) grid for ``grid_sample(moving, grid, align_corners=True)``.
    """
    ref = disp_mm if disp_mm is not None else like
    if ref is None:
        raise ValueError("give disp_mm or like")
    a, b = moving_geometry.physical_to_normalized_affine()
    # Base grid in float64 on the host: fixed voxel centres mapped to moving normalised coordinates.
    # Large origins (e.g. z = -1400 mm) would lose precision in float32 before the subtraction.
    zz, yy, xx = (np.arange(n, dtype=np.float64) for n in fixed_geometry.shape)
    m = a @ fixed_geometry.index_to_physical_matrix
    c = a @ fixed_geometry.origin + b
    base = (m[:, 0][:, None, None, None] * xx[None, None, None, :]
            + m[:, 1][:, None, None, None] * yy[None, None, :, None]
            + m[:, 2][:, None, None, None] * zz[None, :, None, None]
            + c[:, None, None, None])  # (3, Z, Y, X)
    grid = torch.as_tensor(base, dtype=ref.dtype, device=ref.device).unsqueeze(0)
    if disp_mm is not None:
        check_field(disp_mm, "disp_mm")
        if tuple(disp_mm.shape[2:]) != fixed_geometry.shape:
            raise ValueError(f"disp_mm grid {tuple(disp_mm.shape[2:])} does not match the fixed grid {fixed_geometry.shape} (Z, Y, X)")
        grid = grid + torch.einsum("ij,njzyx->nizyx", torch.as_tensor(a, dtype=ref.dtype, device=ref.device), disp_mm)
    return grid.permute(0, 2, 3, 4, 1)


def warp_image(moving: torch.Tensor, disp_mm: Optional[torch.Tensor], fixed_geometry: Geometry,
               moving_geometry: Optional[Geometry] = None, mode: str = "linear",
               padding_mode: str = "zeros") -> torch.Tensor:
    """Resample ``moving`` at ``x + u(x)`` for every fixed voxel x (physical space, any grids).

    Args:
        moving: (N, C, Zm, Ym, Xm) image on ``moving_geometry``.
        disp_mm: (N, 3, Z, Y, X) LPS mm displacement on ``fixed_geometry`` or None (identity:
            plain resampling onto the fixed grid).
        fixed_geometry: the output grid.
        moving_geometry: the moving image's grid; defaults to ``fixed_geometry``.
        mode: "linear" (images) or "nearest" (labels).
        padding_mode: value outside the moving image ("zeros", "border").

    Returns:
        (N, C, Z, Y, X) warped image on the fixed grid.
    """
    moving_geometry = moving_geometry or fixed_geometry
    if moving.ndim != 5:
        raise ValueError(f"moving must be (N, C, Z, Y, X), got {tuple(moving.shape)}")
    if tuple(moving.shape[2:]) != moving_geometry.shape:
        raise ValueError(f"moving shape {tuple(moving.shape[2:])} does not match its grid {moving_geometry.shape} (Z, Y, X)")
    grid = sampling_grid(disp_mm, fixed_geometry, moving_geometry, like=moving)
    if grid.shape[0] != moving.shape[0]:
        grid = grid.expand(moving.shape[0], -1, -1, -1, -1)
    src = moving if moving.is_floating_point() else moving.float()
    out = F.grid_sample(src, grid.to(src.dtype), mode=_mode(mode), padding_mode=padding_mode, align_corners=True)
    return out if moving.is_floating_point() else out.round().to(moving.dtype)
