r"""Image similarity: global NCC, MSE, normalised mutual information and a Gaussian-window 3-D SSIM.

All take (Z, Y, X) volumes on the same grid, numpy or torch, and return Python floats
(computed in float64).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ._common import as_mask, check_same_shape, to_numpy

__all__ = ["ncc", "mse", "nmi", "ssim3d", "gaussian_kernel_1d"]


def _pair(a, b):
    x = to_numpy(a, "a")
    y = to_numpy(b, "b")
    check_same_shape(x, y)
    return x, y


def ncc(a, b, mask=None) -> float:
    """Global normalised cross-correlation (Pearson correlation of the voxel values), in [-1, 1].

    Args:
        a, b: (Z, Y, X) images on the same grid.
        mask: optional (Z, Y, X) bool; only these voxels count.

    Returns:
        The correlation; NaN when either image is constant (inside the mask): NCC is undefined.
    """
    x, y = _pair(a, b)
    m = as_mask(mask, x.shape)
    if m is not None:
        x, y = x[m], y[m]
    x = x.ravel() - x.mean()
    y = y.ravel() - y.mean()
    denom = np.sqrt(np.dot(x, x) * np.dot(y, y))
    return float(np.dot(x, y) / denom) if denom > 0 else float("nan")


def mse(a, b, mask=None) -> float:
    """Mean squared difference of the voxel values (inside ``mask`` when given)."""
    x, y = _pair(a, b)
    m = as_mask(mask, x.shape)
    d = (x - y) if m is None else (x[m] - y[m])
    return float(np.mean(d * d))


def nmi(a, b, mask=None, bins: int = 32) -> float:
    """Normalised mutual information (H(a) + H(b)) / H(a, b), in [1, 2]: the similarity for images of
    different contrasts (T1 against T2, CT against MR), where NCC means nothing.

    Args:
        a, b: (Z, Y, X) images on the same grid (any intensity units).
        mask: optional (Z, Y, X) bool; only these voxels count.
        bins: histogram bins per image, spread over each image's 0.5-99.5 percentile range.

    Returns:
        NMI (1: independent, 2: one image determines the other); NaN when either image is constant.
    """
    x, y = _pair(a, b)
    m = as_mask(mask, x.shape)
    if m is not None:
        x, y = x[m], y[m]
    x, y = x.ravel(), y.ravel()
    if x.size == 0:
        return float("nan")

    def _binned(v: np.ndarray) -> Optional[np.ndarray]:
        lo, hi = np.percentile(v, [0.5, 99.5])
        if not hi > lo:
            return None
        return np.clip(((v - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)

    bx, by = _binned(x), _binned(y)
    if bx is None or by is None:
        return float("nan")
    joint = np.bincount(bx * bins + by, minlength=bins * bins).astype(np.float64) / x.size

    def _entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    joint2 = joint.reshape(bins, bins)
    h_joint = _entropy(joint)
    return (_entropy(joint2.sum(axis=1)) + _entropy(joint2.sum(axis=0))) / h_joint if h_joint > 0 else float("nan")


def gaussian_kernel_1d(sigma: float, truncate: float = 3.5) -> np.ndarray:
    """Normalised 1-D Gaussian of radius ``int(truncate * sigma + 0.5)`` (as scipy.ndimage)."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur_valid(vol: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable filtering without padding: (1, C, Z, Y, X) -> (1, C, Z-2r, Y-2r, X-2r)."""
    c = vol.shape[1]
    k = kernel.numel()
    out = vol
    for shape in ((k, 1, 1), (1, k, 1), (1, 1, k)):
        w = kernel.view(1, 1, *shape).expand(c, 1, *shape)
        out = F.conv3d(out, w, groups=c)
    return out


def ssim3d(a, b, data_range: float, sigma: float = 1.5, truncate: float = 3.5, k1: float = 0.01,
           k2: float = 0.03, use_sample_covariance: bool = False, mask=None, return_map: bool = False):
    """Structural similarity (Wang et al. 2004) with a 3-D Gaussian window.

    The local statistics use a separable Gaussian of standard deviation ``sigma`` voxels
    truncated at ``truncate * sigma`` (11 taps for the defaults); SSIM is averaged over the
    voxels whose whole window lies inside the volume (a border of the window radius is
    skipped), which is what ``skimage.metrics.structural_similarity(..., gaussian_weights=True)``
    does.

    Args:
        a, b: (Z, Y, X) images on the same grid.
        data_range: max - min of the intensity scale (1 for [0, 1] images).
        sigma, truncate: Gaussian window in voxels.
        k1, k2: the SSIM stabilising constants.
        use_sample_covariance: scale variances by N / (N - 1), N = window voxel count
            (skimage's default); False gives Wang et al.'s population covariance.
        mask: optional (Z, Y, X) bool: average only over these voxels (inside the valid region).
        return_map: also return the SSIM map of the valid region.

    Returns:
        Mean SSIM (float), or (mean, map (Z-2r, Y-2r, X-2r) float64 numpy) with ``return_map``.

    Raises:
        ValueError: shapes differ, the volume is smaller than the window on some axis, or
            ``data_range`` is not positive.
    """
    x, y = _pair(a, b)
    if x.ndim != 3:
        raise ValueError(f"ssim3d expects (Z, Y, X) volumes, got shape {x.shape}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    kernel_np = gaussian_kernel_1d(sigma, truncate)
    win = kernel_np.size
    radius = (win - 1) // 2
    if min(x.shape) < win:
        raise ValueError(f"volume shape {x.shape} is smaller than the {win}-voxel SSIM window on some axis; "
                         "lower sigma or use a larger volume")
    kernel = torch.as_tensor(kernel_np)
    vols = torch.as_tensor(np.stack([x, y, x * x, y * y, x * y]))[None]  # (1, 5, Z, Y, X)
    ux, uy, uxx, uyy, uxy = _blur_valid(vols, kernel)[0]
    cov_norm = win ** 3 / (win ** 3 - 1) if use_sample_covariance else 1.0
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    s = s.numpy()
    if mask is not None:
        m = as_mask(mask, x.shape)[radius:x.shape[0] - radius, radius:x.shape[1] - radius, radius:x.shape[2] - radius]
        if not m.any():
            raise ValueError("mask has no voxel inside the SSIM valid region (the border of the window radius is skipped)")
        value = float(s[m].mean())
    else:
        value = float(s.mean())
    return (value, s) if return_map else value
