"""Geometry, warping, field composition/resizing/integration and Jacobians (LPS mm)."""
from __future__ import annotations

from .flow import check_field, disp_mm_to_flow_norm, flow_norm_to_disp_mm, identity_grid
from .geometry import Geometry, GeometryError
from .jacobian import jacobian_determinant
from .transforms import compose_flows, integrate_velocity, resize_flow
from .warp import sampling_grid, warp_image, warp_norm

__all__ = [
    "Geometry", "GeometryError", "check_field", "disp_mm_to_flow_norm", "flow_norm_to_disp_mm",
    "identity_grid", "jacobian_determinant", "compose_flows", "integrate_velocity", "resize_flow",
    "sampling_grid", "warp_image", "warp_norm",
]
