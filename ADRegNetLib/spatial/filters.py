r"""Separable Gaussian smoothing of volumes and fields (N, C, Z, Y, X)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["gaussian_smooth"]


def _kernel(sigma: float, like: torch.Tensor) -> torch.Tensor:
    radius = max(1, int(np.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_smooth(volume: torch.Tensor, sigma_voxels: float | Sequence[float]) -> torch.Tensor:
    """Gaussian smoothing with a separable kernel, edges replicated.

    Args:
        volume: (N, C, Z, Y, X) float.
        sigma_voxels: standard deviation in voxels, one value or (z, y, x); 0 skips an axis.

    Returns:
        (N, C, Z, Y, X) smoothed volume.
    """
    if volume.ndim != 5:
        raise ValueError(f"volume must be (N, C, Z, Y, X), got {tuple(volume.shape)}")
    sigmas = [float(sigma_voxels)] * 3 if np.isscalar(sigma_voxels) else [float(s) for s in sigma_voxels]
    n, c = volume.shape[:2]
    out = volume.reshape(n * c, 1, *volume.shape[2:])
    for axis, sigma in enumerate(sigmas):
        if sigma <= 0 or out.shape[2 + axis] < 2:
            continue
        k = _kernel(sigma, out)
        r = (k.numel() - 1) // 2
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        # F.pad order is (x_lo, x_hi, y_lo, y_hi, z_lo, z_hi)
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = min(r, out.shape[2 + axis] - 1)
        padded = F.pad(out, pad, mode="replicate")
        if padded.shape[2 + axis] < k.numel():  # tiny axis: pad further with edge values
            extra = [0] * 6
            extra[2 * (2 - axis)] = extra[2 * (2 - axis) + 1] = r - pad[2 * (2 - axis)]
            padded = F.pad(padded, extra, mode="replicate")
        out = F.conv3d(padded, k.view(shape))
    return out.reshape(volume.shape)
