r"""Jacobian determinant of x -> x + u(x) in physical units."""
from __future__ import annotations

import numpy as np
import torch

from .flow import check_field
from .geometry import Geometry

__all__ = ["jacobian_determinant"]


def _index_gradient(field: torch.Tensor) -> torch.Tensor:
    """d field / d index along x, y, z: (N, 3 comps, 3 axes, Z, Y, X); central inside, one-sided at edges."""
    grads = []
    for dim in (4, 3, 2):  # x, y, z voxel axes
        n = field.shape[dim]
        if n < 2:
            grads.append(torch.zeros_like(field))
            continue
        g = torch.empty_like(field)
        idx = lambda s: tuple([slice(None)] * dim + [s])  # noqa: E731
        g[idx(slice(1, -1))] = (field[idx(slice(2, None))] - field[idx(slice(None, -2))]) / 2.0
        g[idx(slice(0, 1))] = field[idx(slice(1, 2))] - field[idx(slice(0, 1))]
        g[idx(slice(-1, None))] = field[idx(slice(-1, None))] - field[idx(slice(-2, -1))]
        grads.append(g)
    return torch.stack(grads, dim=2)


def jacobian_determinant(disp_mm: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """det(I + du/dx) with du/dx in physical (LPS mm per mm) units.

    Args:
        disp_mm: (N, 3, Z, Y, X) LPS mm, (x, y, z) components, on ``geometry``.
        geometry: the field's grid (spacing and direction are honoured).

    Returns:
        (N, Z, Y, X) determinant; 1 = volume kept, < 1 compression, > 1 expansion, <= 0 folding.
    """
    check_field(disp_mm, "disp_mm")
    if tuple(disp_mm.shape[2:]) != geometry.shape:
        raise ValueError(f"field grid {tuple(disp_mm.shape[2:])} does not match geometry {geometry.shape} (Z, Y, X)")
    g_index = _index_gradient(disp_mm)  # du_i / d idx_k
    inv = torch.as_tensor(np.linalg.inv(geometry.index_to_physical_matrix), dtype=disp_mm.dtype, device=disp_mm.device)
    # du_i/dx_j = sum_k du_i/didx_k * didx_k/dx_j
    g = torch.einsum("nikzyx,kj->nijzyx", g_index, inv)
    j = g + torch.eye(3, dtype=disp_mm.dtype, device=disp_mm.device)[None, :, :, None, None, None]
    j = j.permute(0, 3, 4, 5, 1, 2)
    return torch.linalg.det(j)
