r"""Jacobian determinant of x -> x + u(x) in physical units."""
from __future__ import annotations

import numpy as np
import torch

from .flow import check_field
from .geometry import Geometry

__all__ = ["jacobian_determinant"]


def _along(dim: int, part: slice) -> tuple:
    """Index of ``part`` along axis ``dim`` (every element along the axes before it)."""
    return tuple([slice(None)] * dim + [part])


def _index_gradient(field: torch.Tensor) -> torch.Tensor:
    """d field / d index along x, y, z: (N, 3 comps, 3 axes, Z, Y, X); central inside, one-sided at edges.

    Written in place (about 3x faster: 0.06 s for the lung case's field) unless autograd needs the graph
    (the folding penalty), which gets the same values out of place."""
    if field.requires_grad and torch.is_grad_enabled():
        grads = []
        for dim in (4, 3, 2):
            if field.shape[dim] < 2:
                grads.append(torch.zeros_like(field))
                continue
            grads.append(torch.cat([field[_along(dim, slice(1, 2))] - field[_along(dim, slice(0, 1))],
                                    (field[_along(dim, slice(2, None))] - field[_along(dim, slice(None, -2))]) / 2.0,
                                    field[_along(dim, slice(-1, None))] - field[_along(dim, slice(-2, -1))]], dim=dim))
        return torch.stack(grads, dim=2)
    n_, c, z, y, x = field.shape
    out = field.new_empty((n_, c, 3, z, y, x))  # written in place: no stacked copy
    for axis, dim in enumerate((4, 3, 2)):  # x, y, z voxel axes
        g = out[:, :, axis]
        if field.shape[dim] < 2:
            g.zero_()
            continue
        inner = _along(dim, slice(1, -1))
        torch.sub(field[_along(dim, slice(2, None))], field[_along(dim, slice(None, -2))], out=g[inner])
        g[inner] *= 0.5
        g[_along(dim, slice(0, 1))] = field[_along(dim, slice(1, 2))] - field[_along(dim, slice(0, 1))]
        g[_along(dim, slice(-1, None))] = field[_along(dim, slice(-1, None))] - field[_along(dim, slice(-2, -1))]
    return out


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
    # the folding penalty differentiates through this: out of place then; otherwise every step in place on the one
    # (N, 3, 3, Z, Y, X) buffer (a 512x512x300 field: two buffers of that size fewer per slab)
    graph = disp_mm.requires_grad and torch.is_grad_enabled()
    # du_i/dx_j = sum_k du_i/didx_k * didx_k/dx_j
    if torch.count_nonzero(inv - torch.diag(torch.diagonal(inv))) == 0:  # axis-aligned grid: a scale per axis
        scale = torch.diagonal(inv).view(1, 1, 3, 1, 1, 1)
        g = g_index * scale if graph else g_index.mul_(scale)
    else:
        g = torch.einsum("nikzyx,kj->nijzyx", g_index, inv)
    if graph:
        g = g + torch.eye(3, dtype=g.dtype, device=g.device)[None, :, :, None, None, None]  # J = I + du/dx
    else:
        for r in range(3):
            g[:, r, r] += 1.0
    # the 3x3 determinant by cofactors, element-wise over the grid: batched LAPACK (torch.linalg.det on
    # (voxels, 3, 3)) made the whole determinant 0.51 s for the lung case's 3.5 million voxels on 2 cores;
    # with the cofactors, the gradient written in place and no matrix product on axis-aligned grids 0.18 s
    (a, b, c), (d, e, f), (h, i_, k) = ((g[:, r, 0], g[:, r, 1], g[:, r, 2]) for r in range(3))
    if graph:
        return a * (e * k - f * i_) - b * (d * k - f * h) + c * (d * i_ - e * h)
    det = (e * k).sub_(f * i_).mul_(a)
    det.sub_((d * k).sub_(f * h).mul_(b))
    return det.add_((d * i_).sub_(e * h).mul_(c))
