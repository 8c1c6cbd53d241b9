"""The spatial core (LPS mm, SimpleITK-free): Geometry, Image, AffineMap, Transform, warping,
field composition/resizing/integration, Jacobians, inverse, label-aware warping.

Submodules are imported lazily, so ``Geometry``/``Image`` (numpy only) load without torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Geometry": "geometry", "GeometryError": "geometry", "Image": "image", "ImageError": "image",
    "AffineMap": "affine", "Transform": "transform", "map_points": "transform", "background_value": "transform",
    "check_field": "flow", "disp_mm_to_flow_norm": "flow", "flow_norm_to_disp_mm": "flow", "identity_grid": "flow",
    "jacobian_determinant": "jacobian", "compose_flows": "transforms", "integrate_velocity": "transforms",
    "resize_flow": "transforms", "sampling_grid": "warp", "warp_image": "warp", "warp_norm": "warp",
    "resample": "warp", "physical_overlap": "overlap",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
