r"""Field operations on one grid: composition, resizing, scaling and squaring.

All fields here are normalised flows (N, 3, Z, Y, X), (x, y, z) voxel-axis components, in
``grid_sample`` units with ``align_corners=True`` (see ``flow``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .flow import check_field
from .warp import warp_norm

__all__ = ["compose_flows", "resize_flow", "integrate_velocity"]


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
