r"""Registration losses as pure functions (similarity, regularisation, landmarks).

Conventions (see DESIGN.md):

* Images are torch volumes (N, C, Z, Y, X) (D = Z), float.
* Displacements ``disp_mm`` are (N, 3, Z, Y, X) LPS millimetres with (x, y, z) components, on the
  grid they are evaluated on; they map a fixed point x to the moving point x + u(x).
* Landmark points are (K, 3) or (N, K, 3) LPS mm, (x, y, z).
* Every loss returns a 0-d tensor to *minimise*: 0 is perfect for the similarity losses below
  except :func:`mse` / :func:`mind_loss` (0 = identical) which are also minimal at 0.

Box sums are separable: one 1-D ``avg_pool3d`` per axis (3 x w operations per voxel instead of
w**3), which is what makes a 9-voxel local NCC affordable on a CPU.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..spatial.filters import box_filter
from ..spatial.geometry import Geometry
from ..spatial.jacobian import jacobian_determinant

__all__ = [
    "box_filter",
    "local_ncc",
    "local_ncc_map",
    "mse",
    "mind_ssc",
    "mind_loss",
    "ngf",
    "diffusion",
    "bending_energy",
    "folding_penalty",
    "sample_field_at_points",
    "landmark_loss",
]


# ------------------------------------------------------------------------------------- helpers
def _check_volume(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a torch volume of shape (N, C, Z, Y, X), got {shape}")


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> None:
    _check_volume(a, na)
    _check_volume(b, nb)
    if a.shape != b.shape:
        raise ValueError(f"{na} and {nb} must have the same shape (N, C, Z, Y, X), got {tuple(a.shape)} and {tuple(b.shape)}")


def _check_disp(disp: torch.Tensor, name: str = "disp_mm") -> None:
    if not isinstance(disp, torch.Tensor) or disp.ndim != 5 or disp.shape[1] != 3:
        shape = tuple(disp.shape) if isinstance(disp, torch.Tensor) else type(disp).__name__
        raise ValueError(f"{name} must have shape (N, 3, Z, Y, X) with (x, y, z) components in mm, got {shape}")


def _spacing3(spacing_xyz: Sequence[float] | np.ndarray | float) -> tuple[float, float, float]:
    s = np.broadcast_to(np.asarray(spacing_xyz, dtype=np.float64), (3,))
    if np.any(s <= 0) or not np.all(np.isfinite(s)):
        raise ValueError(f"spacing_xyz must be 3 positive values (x, y, z) in mm, got {list(s)}")
    return float(s[0]), float(s[1]), float(s[2])


def _masked_mean(values: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of ``values`` (N, C, Z, Y, X), restricted to ``mask`` (broadcastable, bool or weights)."""
    if mask is None:
        return values.mean()
    _check_volume(mask, "mask")
    if mask.shape[2:] != values.shape[2:] or mask.shape[0] not in (1, values.shape[0]):
        raise ValueError(f"mask must have shape (N or 1, 1, Z, Y, X) = (.., {tuple(values.shape[2:])}), got {tuple(mask.shape)}")
    w = mask.to(values.dtype).expand_as(values)
    total = w.sum()
    if float(total) <= 0:
        raise ValueError("mask is empty: no voxel to evaluate the loss on; pass mask=None or a non-empty mask")
    return (values * w).sum() / total


# ---------------------------------------------------------------------------------- similarity
def local_ncc(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9, mask: Optional[torch.Tensor] = None,
              eps: float = 1e-4) -> torch.Tensor:
    r"""Local normalised cross-correlation loss, ``1 - mean(lncc^2)``.

    ``lncc^2 = cov^2 / (var_f var_w + eps * S_f * S_w)`` over a ``window``\ :sup:`3` box around every
    voxel (box means by :func:`box_filter`), with ``S`` each image's global variance. Scaling the
    stabiliser by the global variances makes the loss exactly invariant to any affine intensity
    change ``a * I + b`` with ``a != 0`` (also a negative ``a``): regions whose local standard deviation
    is below about ``eps**0.25`` of the global one count as flat (lncc^2 -> 0).

    Args:
        fixed: (N, C, Z, Y, X) fixed image.
        warped: (N, C, Z, Y, X) moving image warped to the fixed grid.
        window: odd box size in voxels.
        mask: optional (N or 1, 1, Z, Y, X) bool/weight volume restricting the mean.
        eps: dimensionless stabiliser of flat regions (relative to the global variances).

    Returns:
        0-d tensor in [0, 1]: 0 for perfectly (locally linearly) matching images, 1 for none.
    """
    return 1.0 - _masked_mean(local_ncc_map(fixed, warped, window, eps), mask)


def local_ncc_map(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9, eps: float = 1e-4) -> torch.Tensor:
    """``lncc^2`` at every voxel, as :func:`local_ncc` averages it: (N, C, Z, Y, X) in [0, 1], 1 where the two
    images match up to ``a * I + b`` within the window, 0 where either is flat or they are unrelated."""
    _check_same_shape(fixed, warped, "fixed", "warped")
    mu_f = box_filter(fixed, window)
    mu_w = box_filter(warped, window)
    var_f = (box_filter(fixed * fixed, window) - mu_f * mu_f).clamp_min(0)
    var_w = (box_filter(warped * warped, window) - mu_w * mu_w).clamp_min(0)
    cov = box_filter(fixed * warped, window) - mu_f * mu_w
    dims = tuple(range(1, fixed.ndim))
    scale = fixed.var(dim=dims, keepdim=True) * warped.var(dim=dims, keepdim=True)
    return cov * cov / (var_f * var_w + eps * scale + 1e-30)


def mse(a: torch.Tensor, b: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared difference of two (N, C, Z, Y, X) volumes (optionally within ``mask``)."""
    _check_same_shape(a, b, "a", "b")
    return _masked_mean((a - b) ** 2, mask)


# 6-neighbourhood offsets (dz, dy, dx) and the 12 pairs of them that are sqrt(2) apart.
_SIX = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
_SSC_PAIRS = [(i, j) for i in range(6) for j in range(i + 1, 6)
              if sum((p - q) ** 2 for p, q in zip(_SIX[i], _SIX[j])) == 2]


def _shift(x: torch.Tensor, offset: tuple[int, int, int]) -> torch.Tensor:
    """``x`` sampled at index + offset (dz, dy, dx), edge voxels replicated."""
    r = max(abs(o) for o in offset)
    if r == 0:
        return x
    padded = F.pad(x, (r, r, r, r, r, r), mode="replicate")
    dz, dy, dx = offset
    z, y, xx = x.shape[2:]
    return padded[:, :, r + dz:r + dz + z, r + dy:r + dy + y, r + dx:r + dx + xx]


def mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2, eps: float = 1e-6) -> torch.Tensor:
    r"""MIND-SSC descriptor (modality-independent neighbourhood descriptor, self-similarity context).

    For each of the 12 pairs (a, b) of 6-neighbourhood offsets that are sqrt(2) apart (scaled by
    ``dilation`` voxels), the patch distance ``D_ab(x) = box_mean((I(x + a) - I(x + b))^2)`` over a
    ``(2 radius + 1)``\ :sup:`3` patch. The descriptor is ``exp(-(D - min_c D) / V)`` with ``V`` the mean
    of ``D`` over the 12 channels, clamped to [1e-3, 1e3] times its image-wide mean, and each voxel's
    vector is divided by its maximum (so values lie in (0, 1], max 1).

    Because each voxel is described only by how its neighbourhood resembles itself, a monotonic
    (in particular an affine) intensity change of the image barely changes the descriptor.

    Args:
        image: (N, 1, Z, Y, X) float image.
        radius: patch radius in voxels (box size 2 radius + 1).
        dilation: distance in voxels of the neighbour offsets.
        eps: keeps ``V`` > 0 in constant regions.

    Returns:
        (N, 12, Z, Y, X) descriptor, same dtype/device.
    """
    _check_volume(image, "image")
    if image.shape[1] != 1:
        raise ValueError(f"image must have one channel, shape (N, 1, Z, Y, X), got {tuple(image.shape)}")
    if radius < 0 or dilation < 1:
        raise ValueError(f"radius must be >= 0 and dilation >= 1, got radius={radius}, dilation={dilation}")
    shifted = [_shift(image, tuple(o * dilation for o in off)) for off in _SIX]
    diffs = torch.cat([(shifted[i] - shifted[j]) ** 2 for i, j in _SSC_PAIRS], dim=1)
    dist = box_filter(diffs, 2 * radius + 1)
    dist = dist - dist.min(dim=1, keepdim=True).values
    var = dist.mean(dim=1, keepdim=True)
    mean_var = var.mean(dim=(2, 3, 4), keepdim=True)
    var = torch.minimum(torch.maximum(var, mean_var * 1e-3), mean_var * 1e3) + eps
    mind = torch.exp(-dist / var)
    return mind / mind.max(dim=1, keepdim=True).values


def mind_loss(a_feat: torch.Tensor, b_feat: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared difference of two descriptor volumes (N, 12, Z, Y, X) from :func:`mind_ssc`."""
    _check_same_shape(a_feat, b_feat, "a_feat", "b_feat")
    return _masked_mean((a_feat - b_feat) ** 2, mask)


def _central_gradient(x: torch.Tensor, spacing_xyz: tuple[float, float, float]) -> torch.Tensor:
    """(N, C, 3, Z, Y, X) central-difference gradient (x, y, z) per mm, edges replicated."""
    out = []
    for dim, h in ((4, spacing_xyz[0]), (3, spacing_xyz[1]), (2, spacing_xyz[2])):
        n = x.shape[dim]
        if n < 2:
            out.append(torch.zeros_like(x))
            continue
        fwd = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim=dim)
        bwd = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim=dim)
        out.append((fwd - bwd) / (2.0 * h))
    return torch.stack(out, dim=2)


def ngf(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-2, spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0),
        mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""Normalised gradient fields loss ``1 - mean((g_a . g_b)^2 / ((|g_a|^2 + eps^2)(|g_b|^2 + eps^2)))``.

    Edges that are parallel or anti-parallel agree (multi-modal); ``eps`` (intensity per mm) is the
    gradient magnitude below which an edge counts as noise.

    Args:
        a, b: (N, C, Z, Y, X) images on the same grid.
        eps: edge parameter.
        spacing_xyz: voxel size (x, y, z) mm.
        mask: optional (N or 1, 1, Z, Y, X) restriction.

    Returns:
        0-d tensor in [0, 1).
    """
    _check_same_shape(a, b, "a", "b")
    s = _spacing3(spacing_xyz)
    ga = _central_gradient(a, s)
    gb = _central_gradient(b, s)
    dot = (ga * gb).sum(dim=2)
    na = (ga * ga).sum(dim=2) + eps ** 2
    nb = (gb * gb).sum(dim=2) + eps ** 2
    return 1.0 - _masked_mean(dot * dot / (na * nb), mask)


# ------------------------------------------------------------------------------- regularisers
def _forward_diffs(disp_mm: torch.Tensor, spacing: tuple[float, float, float]) -> list[torch.Tensor]:
    """Forward differences per mm along x, y, z (each cropped by one voxel on its axis)."""
    diffs = []
    for dim, h in ((4, spacing[0]), (3, spacing[1]), (2, spacing[2])):
        if disp_mm.shape[dim] < 2:
            diffs.append(None)
            continue
        diffs.append(torch.diff(disp_mm, dim=dim) / h)
    return diffs


def diffusion(disp_mm: torch.Tensor, spacing_xyz: Sequence[float] | float = 1.0) -> torch.Tensor:
    r"""Diffusion regulariser: mean over voxels of the squared Frobenius norm of the Jacobian of u.

    ``sum_{axis a} mean_{n, voxels} sum_{component c} (du_c / dx_a)^2`` with forward differences
    divided by the spacing (each axis term averaged over its own cropped grid). The Frobenius norm
    does not depend on the grid's direction cosines, so spacing alone is enough. For
    ``u(x) = A x`` (A in mm/mm) the value is exactly ``sum_ij A_ij^2``.

    Args:
        disp_mm: (N, 3, Z, Y, X) displacement, mm, (x, y, z) components.
        spacing_xyz: voxel size (x, y, z) mm, or one value.

    Returns:
        0-d tensor (mm/mm)^2.
    """
    _check_disp(disp_mm)
    s = _spacing3(spacing_xyz)
    total = disp_mm.new_zeros(())
    for d in _forward_diffs(disp_mm, s):
        if d is not None:
            total = total + (d * d).sum(dim=1).mean()
    return total


def bending_energy(disp_mm: torch.Tensor, spacing_xyz: Sequence[float] | float = 1.0) -> torch.Tensor:
    r"""Bending energy: mean over voxels of ``sum_c [sum_a (d2u_c/dx_a^2)^2 + 2 sum_{a<b} (d2u_c/dx_a dx_b)^2]``.

    Second differences are forward differences of forward differences (exact for quadratic
    fields); each term is averaged over its own cropped grid. Affine fields give 0; for
    ``u_x = k x^2`` the value is ``4 k^2``.

    Args:
        disp_mm: (N, 3, Z, Y, X) displacement, mm, (x, y, z) components.
        spacing_xyz: voxel size (x, y, z) mm, or one value.

    Returns:
        0-d tensor, mm^-2 (second derivatives are mm / mm^2, squared).
    """
    _check_disp(disp_mm)
    s = _spacing3(spacing_xyz)
    first = _forward_diffs(disp_mm, s)
    dims = (4, 3, 2)
    total = disp_mm.new_zeros(())
    for a in range(3):
        if first[a] is None:
            continue
        for b in range(a, 3):
            if first[a].shape[dims[b]] < 2:
                continue
            second = torch.diff(first[a], dim=dims[b]) / s[b]
            weight = 1.0 if a == b else 2.0
            total = total + weight * (second * second).sum(dim=1).mean()
    return total


def folding_penalty(disp_mm: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Mean of ``relu(-det J)`` over the grid, J the Jacobian of x -> x + u(x) (0 when nothing folds).

    Args:
        disp_mm: (N, 3, Z, Y, X) displacement, LPS mm, on ``geometry``.
        geometry: the field's grid.
    """
    _check_disp(disp_mm)
    return F.relu(-jacobian_determinant(disp_mm, geometry)).mean()


# ---------------------------------------------------------------------------------- landmarks
def _points_batch(points: torch.Tensor | np.ndarray, n: int, like: torch.Tensor, name: str) -> torch.Tensor:
    p = torch.as_tensor(points, dtype=like.dtype, device=like.device)
    if p.ndim == 2:
        p = p.unsqueeze(0).expand(n, -1, -1)
    if p.ndim != 3 or p.shape[-1] != 3 or p.shape[0] != n:
        raise ValueError(f"{name} must have shape (K, 3) or (N={n}, K, 3) LPS mm, got {tuple(p.shape)}")
    if p.shape[1] == 0:
        raise ValueError(f"{name} is empty: give at least one landmark")
    return p


def sample_field_at_points(disp_mm: torch.Tensor, geometry: Geometry, points: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Trilinear (differentiable) value of the field at physical points.

    Args:
        disp_mm: (N, 3, Z, Y, X) field on ``geometry`` (any units; returned as is).
        geometry: the field's grid.
        points: (K, 3) or (N, K, 3) LPS mm (x, y, z). Outside the grid the edge value is used.

    Returns:
        (N, K, 3) field values at the points.
    """
    _check_disp(disp_mm)
    if tuple(disp_mm.shape[2:]) != geometry.shape:
        raise ValueError(f"disp_mm grid {tuple(disp_mm.shape[2:])} does not match geometry {geometry.shape} (Z, Y, X)")
    n = disp_mm.shape[0]
    p = _points_batch(points, n, disp_mm, "points")
    a, b = geometry.physical_to_normalized_affine()
    a_t = torch.as_tensor(a, dtype=disp_mm.dtype, device=disp_mm.device)
    b_t = torch.as_tensor(b, dtype=disp_mm.dtype, device=disp_mm.device)
    norm = p @ a_t.T + b_t  # (N, K, 3) x, y, z normalised
    grid = norm.view(n, 1, 1, -1, 3)
    vals = F.grid_sample(disp_mm, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return vals.view(n, 3, -1).permute(0, 2, 1)


def landmark_loss(disp_mm: torch.Tensor, geometry: Geometry, fixed_points: torch.Tensor | np.ndarray,
                  moving_points: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Mean target registration error ``mean_k ||x_k + u(x_k) - y_k||`` in mm.

    Args:
        disp_mm: (N, 3, Z, Y, X) LPS mm displacement on ``geometry`` (fixed grid).
        geometry: the fixed grid.
        fixed_points: (K, 3) or (N, K, 3) fixed landmarks x_k, LPS mm.
        moving_points: same shape, the matching moving landmarks y_k, LPS mm.

    Returns:
        0-d tensor, mm.
    """
    u = sample_field_at_points(disp_mm, geometry, fixed_points)
    x = _points_batch(fixed_points, disp_mm.shape[0], disp_mm, "fixed_points")
    y = _points_batch(moving_points, disp_mm.shape[0], disp_mm, "moving_points")
    if x.shape != y.shape:
        raise ValueError(f"fixed_points and moving_points must pair up: shapes {tuple(x.shape)} and {tuple(y.shape)}")
    # sqrt of 0 has an infinite derivative; a tiny floor keeps a perfect match differentiable.
    return torch.sqrt(((x + u - y) ** 2).sum(dim=-1) + 1e-12).mean()
