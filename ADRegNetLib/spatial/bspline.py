r"""Cubic B-spline interpolation of volumes, as ITK's ``BSplineInterpolateImageFunction`` does it.

Two steps (Unser's recursive filtering):

1. :func:`bspline_coefficients`: the interpolation coefficients, by a causal and an anti-causal
   first-order recursive filter along each axis (pole sqrt(3) - 2), with mirror boundary
   conditions (ITK's ``BSplineDecompositionImageFilter``).
2. :func:`bspline_sample`: the spline at arbitrary points. The 4x4x4 weighted sum is done as
   eight trilinear look-ups of the coefficients (``grid_sample``), placing each look-up between
   two coefficients so that linear interpolation yields the pair's B-spline weights (the
   "fast third-order texture filtering" identity), on coefficients padded by two mirrored
   voxels per side. Works on any torch device.

Volumes are (N, C, Z, Y, X) float tensors; points are ``grid_sample`` normalised coordinates
(N, Z', Y', X', 3), (x, y, z) order, ``align_corners=True``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["bspline_coefficients", "bspline_sample", "refined"]

_POLE = math.sqrt(3.0) - 2.0
_TOLERANCE = 1e-10  # as ITK's decomposition filter


def _mirror_index(index: torch.Tensor, n: int) -> torch.Tensor:
    """Indices reflected about the first and last voxel (ITK's mirror boundary; period 2n - 2)."""
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * n - 2
    index = torch.remainder(index, period)
    return torch.where(index >= n, period - index, index)


def bspline_coefficients(volume: torch.Tensor) -> torch.Tensor:
    """Cubic B-spline interpolation coefficients of a volume (mirror boundaries).

    Args:
        volume: (N, C, Z, Y, X) float tensor.

    Returns:
        (N, C, Z, Y, X) coefficients, same dtype and device.
    """
    if volume.ndim != 5 or not volume.is_floating_point():
        raise ValueError(f"volume must be a float (N, C, Z, Y, X) tensor, got {tuple(volume.shape)} {volume.dtype}")
    c = volume
    for dim in (4, 3, 2):
        c = _prefilter(c, dim)
    return c.contiguous()


def _pad_mirror(c: torch.Tensor, pad: int) -> torch.Tensor:
    for dim in (2, 3, 4):
        n = c.shape[dim]
        index = _mirror_index(torch.arange(-pad, n + pad, device=c.device), n)
        c = c.index_select(dim, index)
    return c


def bspline_sample(coefficients: torch.Tensor, grid_norm: torch.Tensor) -> torch.Tensor:
    """Evaluate the cubic B-spline at normalised points (mirror boundary outside the grid).

    Args:
        coefficients: (N, C, Z, Y, X) from :func:`bspline_coefficients`.
        grid_norm: (N, Z', Y', X', 3) points, ``grid_sample`` coordinates of the coefficients'
            grid, (x, y, z), ``align_corners=True``.

    Returns:
        (N, C, Z', Y', X') interpolated values. Points more than a voxel beyond the grid get
        values of the mirrored spline; callers that follow ITK mask points outside the buffer.
    """
    if coefficients.ndim != 5 or grid_norm.ndim != 5 or grid_norm.shape[-1] != 3:
        raise ValueError(f"coefficients must be (N, C, Z, Y, X) and grid_norm (N, Z', Y', X', 3), got "
                         f"{tuple(coefficients.shape)} and {tuple(grid_norm.shape)}")
    pad = 2
    padded = _pad_mirror(coefficients, pad)
    size = torch.as_tensor(coefficients.shape[4:1:-1], dtype=grid_norm.dtype, device=grid_norm.device)  # (x, y, z)
    size_p = size + 2 * pad
    # continuous voxel index of every point, (x, y, z); a one-voxel axis sits at 0
    index = torch.where(size > 1, (grid_norm + 1.0) * 0.5 * (size - 1), torch.zeros_like(grid_norm))
    i0 = index.floor()
    t = index - i0
    w0 = (1 - t) ** 3 / 6
    w1 = (3 * t ** 3 - 6 * t ** 2 + 4) / 6
    w2 = (-3 * t ** 3 + 3 * t ** 2 + 3 * t + 1) / 6
    w3 = t ** 3 / 6
    g = (w0 + w1, w2 + w3)
    # look-up positions (padded index) whose linear weights reproduce (w0, w1) and (w2, w3)
    h = (i0 - 1 + w1 / g[0] + pad, i0 + 1 + w3 / g[1] + pad)
    out = None
    for cz in (0, 1):
        for cy in (0, 1):
            for cx in (0, 1):
                pos = torch.stack([h[cx][..., 0], h[cy][..., 1], h[cz][..., 2]], dim=-1)
                norm = pos * 2.0 / (size_p - 1) - 1.0
                weight = g[cx][..., 0] * g[cy][..., 1] * g[cz][..., 2]
                term = F.grid_sample(padded, norm.to(padded.dtype), mode="bilinear", padding_mode="border",
                                     align_corners=True) * weight.unsqueeze(1).to(padded.dtype)
                out = term if out is None else out + term
    return out


def refined(volume: torch.Tensor, axes: tuple[int, ...] | None = None) -> torch.Tensor:
    """The volume's cubic B-spline sampled at half its voxel spacing along ``axes``: 2n - 1 samples
    where there were n, the even ones the volume's own, the odd ones halfway between.

    Linear interpolation of the result blurs a quarter as much between samples as linear interpolation
    of the volume (variance t(1 - t) / 4 against t(1 - t), voxels, at sub-voxel offset t) at the cost of
    separable filtering, where sampling the cubic B-spline everywhere (:func:`bspline_sample`) takes
    eight lookups per point. The normalised coordinates of ``grid_sample(align_corners=True)`` stay
    the same: the first and last samples keep their places.

    Args:
        volume: (N, C, Z, Y, X) float tensor.
        axes: the dimensions (2, 3, 4) to refine; each must have at least 2 samples (default: every
            dimension that has).

    Returns:
        (N, C, Z', Y', X') with 2n - 1 samples along each refined axis, same dtype and device.
    """
    if volume.ndim != 5 or not volume.is_floating_point():
        raise ValueError(f"volume must be a float (N, C, Z, Y, X) tensor, got {tuple(volume.shape)} {volume.dtype}")
    if axes is None:
        axes = tuple(dim for dim in (2, 3, 4) if volume.shape[dim] > 1)
    for dim in axes:
        if dim not in (2, 3, 4) or volume.shape[dim] < 2:
            raise ValueError(f"axes to refine must be among 2, 3, 4 with at least 2 samples, got {dim} of {tuple(volume.shape)}")
    # the filters along different axes commute: all prefilters on the small volume, then the refinements
    out = volume
    for dim in axes:
        out = _prefilter(out, dim)
    for dim in axes:
        out = _halves(out, dim)
    return out


def _halves(c: torch.Tensor, dim: int) -> torch.Tensor:
    """Values at every sample and halfway between along ``dim`` of coefficients ``c`` (mirror boundary:
    c[-1] = c[1], c[n] = c[n - 2]).

    No fused ``a + alpha * b`` (``add_(..., alpha=)``): its vectorised and scalar paths round differently,
    and which elements take which depends on the thread count (--threads 1 and 2 must give the same bytes).
    """
    n = c.shape[dim]

    def at(start: int, stop: int | None = None, of: torch.Tensor = c) -> torch.Tensor:
        return of.narrow(dim, start, (of.shape[dim] if stop is None else stop) - start)

    mirrored = torch.cat([at(1, 2), c, at(n - 2, n - 1)], dim=dim)  # c[-1], c[0..n-1], c[n]
    shape = list(c.shape)
    shape[dim] = 2 * n - 1
    out = torch.empty(shape, dtype=c.dtype, device=c.device)
    index = [slice(None)] * 5
    index[dim] = slice(0, None, 2)
    # at the samples: (c[k - 1] + c[k + 1] + 4 c[k]) / 6, written into the output's view
    even = out[tuple(index)]
    torch.add(at(0, n, mirrored), at(2, n + 2, mirrored), out=even)
    even.add_(c * 4.0).div_(6.0)
    # halfway: (c[k - 1] + c[k + 2] + 23 (c[k] + c[k + 1])) / 48
    index[dim] = slice(1, None, 2)
    odd = out[tuple(index)]
    torch.add(at(0, n - 1, mirrored), at(3, n + 2, mirrored), out=odd)
    odd.add_(torch.add(at(0, n - 1), at(1, n)).mul_(23.0)).div_(48.0)
    return out


def _prefilter(volume: torch.Tensor, dim: int) -> torch.Tensor:
    """Cubic B-spline prefilter (a causal and an anti-causal recursion, pole sqrt(3) - 2, mirror boundary)
    along ``dim`` of ``volume``; the recursion runs over contiguous slabs (``dim`` moved first).

    No fused ``a + alpha * b`` and no reductions: which elements a fused multiply-add rounds once, and the
    order of a reduction's additions, depend on the thread count (--threads 1 and 2 must give the same bytes).
    """
    c = volume.movedim(dim, 0).contiguous()
    n = c.shape[0]
    if n == 1:
        return volume
    z = _POLE
    c = c * ((1.0 - z) * (1.0 - 1.0 / z))
    out = torch.empty_like(c)
    horizon = int(math.ceil(math.log(_TOLERANCE) / math.log(abs(z))))
    if horizon < n:  # the causal start, truncated where z ** k falls below the tolerance
        out[0] = c[0]
        for k in range(1, horizon):
            out[0] += c[k] * (z ** k)
    else:  # short axes: the whole mirror sum
        zn, iz = z, 1.0 / z
        z2n = z ** (n - 1)
        first = c[0] + z2n * c[n - 1]
        z2n = z2n * z2n * iz
        for k in range(1, n - 1):
            first = first + (zn + z2n) * c[k]
            zn *= z
            z2n *= iz
        out[0] = first / (1.0 - zn * zn)
    for k in range(1, n):
        torch.add(c[k], out[k - 1] * z, out=out[k])
    out[n - 1] = (z / (z * z - 1.0)) * (z * out[n - 2] + out[n - 1])
    for k in range(n - 2, -1, -1):
        torch.sub(out[k + 1], out[k], out=out[k])
        out[k] *= z
    return out.movedim(0, dim)
