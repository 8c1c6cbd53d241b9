r"""Monotone intensity maps between two aligned images: quantile knots and piecewise-linear maps.

Two scans of one contrast rarely share their intensity curve (another scanner, sequence setting or
session: a gamma between them). A similarity that is invariant to a local gain and offset (local
NCC in small windows) ignores such a curve only where a window spans two intensity levels; a window
over three tissues, or a partial-volume ramp, sees the curve as a mismatch. Once the images are
aligned, the quantiles of their intensities over the voxels where both show tissue describe that
curve: a monotone change maps each quantile of one image onto the same quantile of the other.

:func:`midway_knots` takes those quantiles and puts both images half-way between them (the mean of
the two quantile curves), so that neither image's dark or bright range is stretched alone: mapping
only the moving image onto the fixed one amplifies its noise wherever the fixed image's curve is
steeper. :func:`piecewise_linear` applies a map given by knots and returns its slope per voxel (the
factor the image's noise was multiplied by).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

__all__ = ["midway_knots", "piecewise_linear", "sample_quantiles"]

#: most values whose quantiles are taken (a regular subsample beyond it; ``torch.quantile``'s limit
#: is 2**24 elements)
_MAX_SAMPLES = 1_000_000


def sample_quantiles(values: torch.Tensor, levels: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Quantiles (linear interpolation between order statistics) of at most about a million values.

    Beyond ``_MAX_SAMPLES`` values a regular subsample is used. On a CPU the values are sorted by
    numpy (about 6 ms for a million on the 2-core machine, where ``torch.quantile`` took about 100 ms);
    the interpolation is ``torch.quantile``'s "linear" one.

    Args:
        values: any shape, flattened.
        levels: quantile levels in [0, 1].

    Returns:
        (len(levels),) float64 on the values' device.

    Raises:
        ValueError: no values.
    """
    flat = values.reshape(-1)
    if flat.numel() == 0:
        raise ValueError("no values to take quantiles of")
    flat = flat[:: max(1, flat.numel() // _MAX_SAMPLES)]
    levels = torch.as_tensor(levels, dtype=torch.float64).reshape(-1)
    if flat.device.type != "cpu":
        return torch.quantile(flat.double(), levels.to(flat.device))
    ordered = np.sort(flat.numpy()).astype(np.float64)
    position = levels.numpy() * (len(ordered) - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, len(ordered) - 1)
    return torch.from_numpy(ordered[below] + (ordered[above] - ordered[below]) * (position - below))


def midway_knots(fixed: torch.Tensor, warped: torch.Tensor, tissue: torch.Tensor, knots: int = 32,
                 tail: float = 0.005, min_voxels: int = 1000,
                 ) -> Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Knots of the maps that take two aligned images half-way between their intensity curves.

    Args:
        fixed: (1, 1, Z, Y, X) intensities of one image (>= 0; 0 is background).
        warped: (1, 1, Z, Y, X) the other image, aligned with ``fixed`` (the moving image warped).
        tissue: (1, 1, Z, Y, X) bool, the voxels whose intensities describe the curve (both show tissue).
        knots: quantile levels, evenly spaced from ``tail`` to ``1 - tail``.
        tail: share of the darkest and of the brightest voxels left out of the knots (outliers).
        min_voxels: fewer tissue voxels than this: no map (None).

    Returns:
        (fixed knots, warped knots, midway knots), each (K,) float64 and strictly increasing, with
        (0, 0, 0) first (background stays background); or None when there are too few tissue voxels
        or the two images have no intensity range there.
    """
    if not fixed.shape == warped.shape == tissue.shape:
        raise ValueError(f"fixed, warped and tissue must have one shape, got {tuple(fixed.shape)}, "
                         f"{tuple(warped.shape)} and {tuple(tissue.shape)}")
    if knots < 2 or not 0 <= tail < 0.5:
        raise ValueError(f"need knots >= 2 and 0 <= tail < 0.5, got {knots} and {tail}")
    if int(tissue.sum()) < min_voxels:
        return None
    levels = torch.linspace(tail, 1.0 - tail, knots, dtype=torch.float64, device=fixed.device)
    qf, qw = sample_quantiles(fixed[tissue], levels), sample_quantiles(warped[tissue], levels)
    zero = qf.new_zeros(1)
    qf, qw = torch.cat([zero, qf]), torch.cat([zero, qw])
    keep = [0]  # each knot must be above the last one kept in both images (ties: saturated intensities)
    f_list, w_list = qf.tolist(), qw.tolist()
    for i in range(1, len(f_list)):
        if (f_list[i] > f_list[keep[-1]] * (1 + 1e-6) + 1e-12
                and w_list[i] > w_list[keep[-1]] * (1 + 1e-6) + 1e-12):
            keep.append(i)
    if len(keep) < 3:
        return None
    qf, qw = qf[keep], qw[keep]
    return qf, qw, 0.5 * (qf + qw)


def piecewise_linear(volume: torch.Tensor, knots_in: torch.Tensor, knots_out: torch.Tensor,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Map intensities through the polyline ``knots_in -> knots_out``, extended linearly at both ends.

    Args:
        volume: intensities, any shape.
        knots_in, knots_out: (K,) knots, K >= 2, ``knots_in`` strictly increasing.

    Returns:
        (mapped volume, slope of the map at each voxel), both shaped and typed as ``volume``.
    """
    if knots_in.ndim != 1 or knots_in.shape != knots_out.shape or len(knots_in) < 2:
        raise ValueError(f"knots must be two (K,) tensors with K >= 2, got {tuple(knots_in.shape)} and "
                         f"{tuple(knots_out.shape)}")
    kx = knots_in.to(volume.device, torch.float64)
    ky = knots_out.to(volume.device, torch.float64)
    dx = kx[1:] - kx[:-1]
    if not bool((dx > 0).all()):
        raise ValueError("knots_in must be strictly increasing")
    slopes = ((ky[1:] - ky[:-1]) / dx).to(volume.dtype)
    segment = torch.bucketize(volume, kx[1:-1].to(volume.dtype))  # 0 .. K-2; the ends extend outwards
    start_x, start_y = kx.to(volume.dtype)[segment], ky.to(volume.dtype)[segment]
    slope = slopes[segment]
    return (volume - start_x).mul_(slope).add_(start_y), slope
