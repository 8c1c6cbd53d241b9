r"""Synthetic registration pairs as numpy objects with geometry (tests, sample data, engine checks).

The training path uses the batched torch generator of :mod:`.synthetic`; this module keeps the
per-pair numpy API (re-exported by :mod:`.synthetic`, whose names older code imports):

* :func:`random_smooth_velocity` / :func:`random_smooth_displacement` — smooth random fields,
  (3, Z, Y, X) float32 LPS mm with (x, y, z) components; the displacement is the scaling-and-squaring
  exponential of the velocity, so it is diffeomorphic (no folds).
* :func:`random_intensity_change` — gamma, smooth multiplicative bias, contrast/brightness, noise.
* :func:`synth_image_from_labels` — SynthMorph-style image from a label map.
* :func:`make_synthetic_pair` -> :class:`SyntheticPair` — fixed, moving, the true field on the
  fixed grid (fixed x -> moving x + u(x)), labels of both and landmark pairs.

How a pair is made: the source image is the *moving* image; the fixed image is the moving image
resampled at x + u(x) (``fixed(x) = moving(x + u(x))``), so ``u`` is exactly the field a registration
must find. Landmarks are fixed points x_k in the foreground and y_k = x_k + u(x_k) (trilinear u).
Everything runs in numpy/torch (no SimpleITK), so it also runs on a machine without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..spatial.image import Image
from ..losses.functional import sample_field_at_points
from ..spatial.flow import disp_mm_to_flow_norm, flow_norm_to_disp_mm
from ..spatial.geometry import Geometry
from ..spatial.transforms import integrate_velocity
from ..spatial.warp import warp_norm

__all__ = [
    "SyntheticPair",
    "random_smooth_velocity",
    "random_smooth_displacement",
    "random_intensity_change",
    "synth_image_from_labels",
    "random_label_map",
    "make_synthetic_pair",
]


def _smooth_noise(shape_zyx: tuple[int, int, int], coarse_zyx: tuple[int, int, int], channels: int,
                  rng: np.random.Generator) -> torch.Tensor:
    """(channels, Z, Y, X) float64 smooth noise: Gaussian noise on a coarse grid, cubic-ish upsampled."""
    coarse = torch.as_tensor(rng.standard_normal((1, channels, *coarse_zyx)))
    # Two trilinear stages give a smoother (C1-like) result than one.
    mid = tuple(max(c, min(s, 2 * c)) for c, s in zip(coarse_zyx, shape_zyx))
    x = F.interpolate(coarse, size=mid, mode="trilinear", align_corners=True)
    x = F.avg_pool3d(F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = F.interpolate(x, size=tuple(shape_zyx), mode="trilinear", align_corners=True)
    return x[0]


def random_smooth_velocity(geometry: Geometry, max_disp_mm: float, smoothness_mm: float,
                           rng: np.random.Generator) -> np.ndarray:
    """A smooth random stationary velocity field on ``geometry``.

    Random vectors on a control grid about ``smoothness_mm`` apart are smoothly interpolated and
    scaled so the largest velocity vector has length ``max_disp_mm``.

    Args:
        geometry: the grid (the field lives on it).
        max_disp_mm: largest vector length, mm (>= 0).
        smoothness_mm: distance between independent control vectors, mm (> 0).
        rng: numpy random generator (the only source of randomness).

    Returns:
        (3, Z, Y, X) float32, LPS mm, (x, y, z) components.
    """
    if max_disp_mm < 0 or smoothness_mm <= 0:
        raise ValueError(f"max_disp_mm must be >= 0 and smoothness_mm > 0, got {max_disp_mm}, {smoothness_mm}")
    extent_zyx = (np.asarray(geometry.size) * geometry.spacing)[::-1]
    coarse = tuple(int(max(2, min(n, np.ceil(e / smoothness_mm) + 1))) for e, n in zip(extent_zyx, geometry.shape))
    v = _smooth_noise(geometry.shape, coarse, 3, rng).numpy()
    # Random vectors in index-axis components, expressed in LPS through the direction matrix.
    v = np.einsum("ij,jzyx->izyx", geometry.direction, v)
    norm = np.sqrt((v ** 2).sum(0)).max()
    if norm > 0:
        v *= max_disp_mm / norm
    return v.astype(np.float32)


def _integrate_mm(velocity_mm: np.ndarray, geometry: Geometry, steps: int = 7) -> np.ndarray:
    v = torch.as_tensor(velocity_mm, dtype=torch.float32)[None]
    flow = integrate_velocity(disp_mm_to_flow_norm(v, geometry), steps)
    return flow_norm_to_disp_mm(flow, geometry)[0].numpy().astype(np.float32)


def random_smooth_displacement(geometry: Geometry, max_disp_mm: float, smoothness_mm: float,
                               rng: np.random.Generator, steps: int = 7) -> np.ndarray:
    """A smooth random *diffeomorphic* displacement: exp of :func:`random_smooth_velocity`.

    Args:
        geometry, max_disp_mm, smoothness_mm, rng: see :func:`random_smooth_velocity`
            (``max_disp_mm`` bounds the velocity; the displacement is of about that size).
        steps: scaling-and-squaring steps.

    Returns:
        (3, Z, Y, X) float32 LPS mm displacement, (x, y, z) components; fixed x -> x + u(x).
    """
    return _integrate_mm(random_smooth_velocity(geometry, max_disp_mm, smoothness_mm, rng), geometry, steps)


def _normalize01(a: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    lo, hi = np.percentile(a, [lo_pct, hi_pct])
    if hi <= lo:
        return np.zeros_like(a, dtype=np.float32)
    return np.clip((a - lo) / (hi - lo), 0, 1).astype(np.float32)


def random_intensity_change(array: np.ndarray, rng: np.random.Generator, gamma_std: float = 0.25,
                            bias_strength: float = 0.2, noise_max: float = 0.03,
                            contrast_range: tuple[float, float] = (0.8, 1.2)) -> np.ndarray:
    """Randomly change an image's intensities the way scanners differ (not its anatomy).

    Steps on the [0, 1]-normalised image: gamma ``exp(N(0, gamma_std))``, a smooth multiplicative
    bias field within +-``bias_strength``, contrast ``U(contrast_range)`` and brightness
    ``U(-0.1, 0.1)``, Gaussian noise with std ``U(0, noise_max)``; renormalised to [0, 1].

    Args:
        array: (Z, Y, X) image (any range).
        rng: numpy random generator.

    Returns:
        (Z, Y, X) float32 in [0, 1].
    """
    if array.ndim != 3:
        raise ValueError(f"array must be (Z, Y, X), got shape {array.shape}")
    a = _normalize01(array.astype(np.float64), 0.0, 100.0)
    a = a ** float(np.exp(rng.normal(0, gamma_std)))
    coarse = tuple(max(2, min(4, n)) for n in a.shape)
    bias = _smooth_noise(a.shape, coarse, 1, rng)[0].numpy()
    bias = 1 + bias_strength * bias / max(np.abs(bias).max(), 1e-8)
    a = a * bias
    a = a * rng.uniform(*contrast_range) + rng.uniform(-0.1, 0.1)
    a = a + rng.normal(0, rng.uniform(0, noise_max), a.shape)
    return _normalize01(a)


def _gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return a
    radius = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k = torch.as_tensor(k / k.sum(), dtype=torch.float32)
    x = torch.as_tensor(a, dtype=torch.float32)[None, None]
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = k.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        x = F.conv3d(F.pad(x, pad, mode="replicate"), k.view(1, 1, *shape))
    return x[0, 0].numpy()


def synth_image_from_labels(labels: np.ndarray, rng: np.random.Generator, blur_range: tuple[float, float] = (0.5, 1.2),
                            noise_max: float = 0.05) -> np.ndarray:
    """SynthMorph-style image from a label map: a random intensity per label, blur, bias and noise.

    Args:
        labels: (Z, Y, X) integer label map.
        rng: numpy random generator.
        blur_range: Gaussian blur sigma range, voxels.
        noise_max: largest noise std (on [0, 1]).

    Returns:
        (Z, Y, X) float32 in [0, 1].
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must be (Z, Y, X), got shape {labels.shape}")
    ids, inverse = np.unique(labels, return_inverse=True)
    means = rng.uniform(0, 1, ids.size)
    stds = rng.uniform(0, 0.05, ids.size)
    img = means[inverse].reshape(labels.shape) + stds[inverse].reshape(labels.shape) * rng.standard_normal(labels.shape)
    img = _gaussian_blur(img, rng.uniform(*blur_range))
    return random_intensity_change(img, rng, gamma_std=0.1, noise_max=noise_max)


def random_label_map(shape_zyx: tuple[int, int, int], rng: np.random.Generator, n_labels: int = 8,
                     blob_voxels: float = 8.0) -> np.ndarray:
    """Random smooth blobs: argmax of ``n_labels`` smooth noise channels (int64 (Z, Y, X), labels 0..n-1)."""
    coarse = tuple(max(2, int(round(s / blob_voxels))) for s in shape_zyx)
    noise = _smooth_noise(tuple(shape_zyx), coarse, n_labels, rng)
    return noise.argmax(0).numpy().astype(np.int64)


@dataclass
class SyntheticPair:
    """A registration problem with its answer.

    Attributes:
        fixed, moving: images on the same grid (float32 in [0, 1]).
        disp_mm: (3, Z, Y, X) float32 true field on the fixed grid, LPS mm, (x, y, z) components:
            fixed x corresponds to moving x + u(x).
        fixed_labels, moving_labels: label maps (int64) or None.
        fixed_points, moving_points: (K, 3) LPS mm landmark pairs (moving = fixed + u(fixed)).
    """

    fixed: Image
    moving: Image
    disp_mm: np.ndarray
    fixed_labels: Optional[Image]
    moving_labels: Optional[Image]
    fixed_points: np.ndarray
    moving_points: np.ndarray


def make_synthetic_pair(image: Image, rng: np.random.Generator, labels: Optional[Image] = None,
                        max_disp_mm: float = 8.0, smoothness_mm: float = 24.0, n_landmarks: int = 64,
                        intensity_change: bool = True, synthesize_from_labels: bool = False,
                        foreground_threshold: float = 0.1) -> SyntheticPair:
    """Make a fixed/moving pair with a known diffeomorphic field from one image.

    Args:
        image: the source (becomes the moving image, normalised to [0, 1]).
        rng: numpy random generator (only randomness used: results are reproducible).
        labels: optional label map on the same grid (warped with nearest neighbour).
        max_disp_mm: size of the random velocity, mm (displacement is about this size).
        smoothness_mm: spacing of independent random vectors, mm.
        n_landmarks: number of landmark pairs (fixed points sampled in the fixed foreground).
        intensity_change: apply :func:`random_intensity_change` to each image independently.
        synthesize_from_labels: make each image from ``labels`` with :func:`synth_image_from_labels`
            (independent contrasts) instead of using ``image``'s intensities.
        foreground_threshold: fixed intensity above which a voxel counts as foreground (labels > 0
            are used instead when labels are given).

    Returns:
        :class:`SyntheticPair`.
    """
    geometry = image.geometry
    if labels is not None and labels.geometry.shape != geometry.shape:
        raise ValueError(f"labels grid {labels.geometry.shape} must match the image grid {geometry.shape} (Z, Y, X)")
    if synthesize_from_labels and labels is None:
        raise ValueError("synthesize_from_labels=True needs a label map: pass labels=")
    disp = random_smooth_displacement(geometry, max_disp_mm, smoothness_mm, rng)
    flow = disp_mm_to_flow_norm(torch.as_tensor(disp)[None], geometry)

    def warp(array: np.ndarray, mode: str) -> np.ndarray:
        t = torch.as_tensor(array, dtype=torch.float32)[None, None]
        return warp_norm(t, flow, mode=mode, padding_mode="zeros")[0, 0].numpy()

    if synthesize_from_labels:
        moving_arr = synth_image_from_labels(labels.array, rng)
        fixed_src = synth_image_from_labels(labels.array, rng)
    else:
        moving_arr = _normalize01(image.array.astype(np.float32), 0.0, 100.0)
        fixed_src = moving_arr
    fixed_arr = warp(fixed_src, "linear")
    if intensity_change:
        fixed_arr = random_intensity_change(fixed_arr, rng)
        moving_arr = random_intensity_change(moving_arr, rng)
    fixed_labels = moving_labels = None
    if labels is not None:
        moving_labels = Image(labels.array.astype(np.int64), geometry, labels.name)
        fixed_labels = Image(np.rint(warp(labels.array.astype(np.float32), "nearest")).astype(np.int64), geometry,
                             labels.name + "_warped")
        fg = fixed_labels.array > 0
    else:
        fg = fixed_arr > foreground_threshold
    if not fg.any():
        fg = np.ones(geometry.shape, dtype=bool)
    idx = np.argwhere(fg)[:, ::-1]  # (x, y, z)
    pick = idx[rng.integers(0, len(idx), n_landmarks)] + rng.uniform(-0.5, 0.5, (n_landmarks, 3))
    pick = np.clip(pick, 0, np.asarray(geometry.size) - 1)
    fixed_points = geometry.index_to_physical(pick)
    u = sample_field_at_points(torch.as_tensor(disp, dtype=torch.float64)[None], geometry, fixed_points)[0].numpy()
    return SyntheticPair(
        fixed=Image(fixed_arr.astype(np.float32), geometry, image.name + "_fixed"),
        moving=Image(moving_arr.astype(np.float32), geometry, image.name + "_moving"),
        disp_mm=disp,
        fixed_labels=fixed_labels,
        moving_labels=moving_labels,
        fixed_points=fixed_points,
        moving_points=fixed_points + u,
    )
