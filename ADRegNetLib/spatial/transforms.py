r"""Field operations on one grid: composition, resizing, scaling and squaring.

All fields here are normalised flows (N, 3, Z, Y, X), (x, y, z) voxel-axis components, in
``grid_sample`` units with ``align_corners=True`` (see ``flow``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

import numpy as np

from .flow import check_field, flow_norm_to_disp_mm, norm_to_mm_matrix
from .geometry import Geometry
from .warp import warp_norm

__all__ = ["compose_flows", "resize_flow", "upsampled_disp_mm", "resized_by_slabs", "integrate_velocity"]


def compose_flows(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Flow of ``x -> x + first(x) + second(x + first(x))``.

    Applying the result to a moving image equals sampling at ``first`` then ``second``, as the
    resampling convention reads: the fixed point x goes to x + first(x), which ``second`` moves on.

    Args:
        first, second: (N, 3, Z, Y, X) normalised flows on the same grid.
    """
    check_field(first, "first")
    check_field(second, "second")
    return first + warp_norm(second, first, padding_mode="border")


def resize_flow(flow_norm: torch.Tensor, shape_zyx: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear resize of a normalised flow to another voxel count of the same span.

    Normalised units make this a pure interpolation (no rescaling), for grids made with
    ``Geometry.with_size`` (same first/last voxel centres).
    """
    check_field(flow_norm, "flow_norm")
    if tuple(flow_norm.shape[2:]) == tuple(shape_zyx):
        return flow_norm
    return F.interpolate(flow_norm, size=tuple(int(s) for s in shape_zyx), mode="trilinear", align_corners=True)


def upsampled_disp_mm(flow_norm: torch.Tensor, geometry: Geometry, slab_voxels: int = 1 << 22) -> np.ndarray:
    """A normalised flow on a coarser grid of the same span, resized onto ``geometry`` and in mm.

    The same values as ``flow_norm_to_disp_mm(resize_flow(flow_norm, geometry.shape), geometry)``,
    computed in z-slabs of at most ``slab_voxels`` voxels, so that only the (3, Z, Y, X) float32
    result is held at full resolution (512x512x300: 0.95 GB instead of three times that).

    Args:
        flow_norm: (1, 3, z, y, x) normalised flow spanning ``geometry`` (``Geometry.with_size``).
        geometry: the output grid.
        slab_voxels: most output voxels per slab.

    Returns:
        (3, Z, Y, X) float32 LPS mm, (x, y, z) components, on ``geometry``.
    """
    check_field(flow_norm, "flow_norm")
    if flow_norm.shape[0] != 1:
        raise ValueError(f"flow_norm must hold one field (1, 3, z, y, x), got {tuple(flow_norm.shape)}")
    flow = flow_norm.float().cpu()
    if tuple(flow.shape[2:]) == tuple(geometry.shape):
        return np.ascontiguousarray(flow_norm_to_disp_mm(flow, geometry)[0].numpy(), dtype=np.float32)
    # normalised units mean the same on both grids (same span): one matrix to mm for every slab
    to_mm = torch.as_tensor(norm_to_mm_matrix(geometry), dtype=flow.dtype)
    return resized_by_slabs(flow, geometry.shape, matrix=to_mm, slab_voxels=slab_voxels)


def resized_by_slabs(field: torch.Tensor, shape_zyx: tuple[int, int, int], matrix: Optional[torch.Tensor] = None,
                     slab_voxels: int = 1 << 22) -> np.ndarray:
    """Trilinear resize of a (1, C, z, y, x) field to another voxel count of the same span, z-slab by
    z-slab into one (C, Z, Y, X) float32 array (``resize_flow``'s values without its full-size
    temporaries); with ``matrix`` (C, C) every vector is mapped by it on the way."""
    if field.ndim != 5 or field.shape[0] != 1:
        raise ValueError(f"field must be (1, C, z, y, x), got {tuple(field.shape)}")
    field = field.float().cpu()
    nz, ny, nx = (int(n) for n in shape_zyx)
    out = np.empty((field.shape[1], nz, ny, nx), dtype=np.float32)
    lin = [torch.linspace(-1.0, 1.0, n) if n > 1 else torch.zeros(1) for n in (nz, ny, nx)]
    step = max(1, slab_voxels // (ny * nx))
    for z0 in range(0, nz, step):
        z1 = min(nz, z0 + step)
        gz, gy, gx = torch.meshgrid(lin[0][z0:z1], lin[1], lin[2], indexing="ij")
        grid = torch.stack([gx, gy, gz], dim=-1)[None]
        part = F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=True)
        if matrix is not None:
            part = torch.einsum("ij,njzyx->nizyx", matrix, part)
        out[:, z0:z1] = part[0].numpy()
    return out


def integrate_velocity(velocity_norm: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Scaling and squaring: the flow of exp(v) for a stationary velocity field.

    Args:
        velocity_norm: (N, 3, Z, Y, X) normalised velocity.
        steps: number of squarings (the velocity is divided by 2**steps first).

    Returns:
        (N, 3, Z, Y, X) normalised displacement, diffeomorphic when each scaled step is small.
    """
    check_field(velocity_norm, "velocity_norm")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    flow = velocity_norm / (2 ** steps)
    for _ in range(steps):
        flow = compose_flows(flow, flow)
    return flow
