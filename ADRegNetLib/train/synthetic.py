r"""Building blocks of synthetic registration pairs, in torch on any device (training and benchmarks).

Contract (stable: the benchmark imports these):

* Volumes are batched torch tensors (B, C, Z, Y, X) float32 on one isotropic grid of ``spacing_mm``
  voxels; images lie in [0, 1]; label maps are (B, 1, Z, Y, X) int64 with labels 0..K-1.
* Fields are (B, 3, Z, Y, X) float32 **in mm along the voxel axes, (x, y, z) components**. On an
  identity-direction grid this is LPS mm; for any other direction rotate with the direction matrix.
  Convention as everywhere: fixed voxel x corresponds to moving point x + u(x), and the warped
  moving image is ``moving(x + u(x))`` (:func:`warp`).
* Randomness comes only from the ``generator`` argument (a ``torch.Generator`` on the tensors'
  device); the same generator state gives the same result on the same device.
* No SimpleITK, scipy or numpy randomness: the same code runs on the CPU here and on the GPU host.

Functions: :func:`random_svf` (smooth stationary velocity), :func:`integrate_svf` (its
diffeomorphic exponential by scaling and squaring, ``spatial.transforms.integrate_velocity``),
:func:`warp`, :func:`random_intensity_change` (gamma, bias field, contrast, noise),
:func:`synth_image_from_labels` (SynthMorph-style), :func:`random_label_map` (random blobs),
:func:`gaussian_blur`, :func:`smooth_noise`.

The per-pair numpy API of :mod:`.pairs` (``make_synthetic_pair``, ``random_smooth_velocity``, ...)
is re-exported here; :func:`synth_image_from_labels`, :func:`random_intensity_change` and
:func:`random_label_map` still accept the old numpy call (array + ``np.random.Generator``) and then
return numpy arrays.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..spatial.transforms import integrate_velocity
from . import pairs as _np_pairs
from .pairs import SyntheticPair, make_synthetic_pair, random_smooth_displacement, random_smooth_velocity

__all__ = [
    "smooth_noise", "gaussian_blur", "random_svf", "integrate_svf", "mm_to_norm", "norm_to_mm", "warp",
    "random_intensity_change", "synth_image_from_labels", "random_label_map",
    "SyntheticPair", "make_synthetic_pair", "random_smooth_velocity", "random_smooth_displacement",
]


def _rand(shape: Sequence[int], generator: torch.Generator | None, device=None) -> torch.Tensor:
    device = generator.device if generator is not None else (device or "cpu")
    return torch.rand(tuple(shape), generator=generator, device=device)


def _randn(shape: Sequence[int], generator: torch.Generator | None, device=None) -> torch.Tensor:
    device = generator.device if generator is not None else (device or "cpu")
    return torch.randn(tuple(shape), generator=generator, device=device)


def _uniform(lo: float, hi: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * _rand((n,), generator)


def smooth_noise(shape_zyx: Sequence[int], coarse_zyx: Sequence[int], channels: int, batch: int = 1,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Smooth Gaussian noise: N(0, 1) on a coarse grid, upsampled in two trilinear stages with a box filter between.

    Returns:
        (batch, channels, Z, Y, X) float32 on the generator's device.
    """
    coarse = _randn((batch, channels, *coarse_zyx), generator)
    mid = tuple(max(c, min(s, 2 * c)) for c, s in zip(coarse_zyx, shape_zyx))
    x = F.interpolate(coarse, size=mid, mode="trilinear", align_corners=True)
    x = F.avg_pool3d(F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return F.interpolate(x, size=tuple(int(s) for s in shape_zyx), mode="trilinear", align_corners=True)


def gaussian_blur(x: torch.Tensor, sigma_zyx: float | Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, Z, Y, X) with sigma in voxels (per axis z, y, x); replicate padding."""
    if x.ndim != 5:
        raise ValueError(f"x must be (B, C, Z, Y, X), got {tuple(x.shape)}")
    sig = [float(sigma_zyx)] * 3 if np.isscalar(sigma_zyx) else [float(s) for s in sigma_zyx]
    b, c = x.shape[:2]
    y = x.reshape(b * c, 1, *x.shape[2:])
    for axis, s in enumerate(sig):
        if s <= 0:
            continue
        r = max(1, int(math.ceil(3 * s)))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / s) ** 2)
        shape = [1, 1, 1]
        shape[axis] = k.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        y = F.conv3d(F.pad(y, pad, mode="replicate"), (k / k.sum()).view(1, 1, *shape))
    return y.reshape(x.shape)


def mm_to_norm(field_mm: torch.Tensor, spacing_mm: float) -> torch.Tensor:
    """(B, 3, Z, Y, X) mm along the voxel axes -> normalised ``grid_sample`` units (align_corners=True)."""
    z, y, x = field_mm.shape[2:]
    scale = torch.tensor([2.0 / max(x - 1, 1), 2.0 / max(y - 1, 1), 2.0 / max(z - 1, 1)],
                         dtype=field_mm.dtype, device=field_mm.device) / spacing_mm
    return field_mm * scale.view(1, 3, 1, 1, 1)


def norm_to_mm(field_norm: torch.Tensor, spacing_mm: float) -> torch.Tensor:
    """Inverse of :func:`mm_to_norm`."""
    z, y, x = field_norm.shape[2:]
    scale = torch.tensor([(x - 1) / 2.0, (y - 1) / 2.0, (z - 1) / 2.0],
                         dtype=field_norm.dtype, device=field_norm.device) * spacing_mm
    return field_norm * scale.view(1, 3, 1, 1, 1)


def random_svf(shape_zyx: Sequence[int], spacing_mm: float, mean_disp_mm: torch.Tensor | float,
               smoothness_mm: torch.Tensor | float, batch: int = 1,
               generator: torch.Generator | None = None, resolution_divisor: int = 2) -> torch.Tensor:
    """Random smooth stationary velocity fields.

    Independent Gaussian vectors on a control grid ``smoothness_mm`` apart, smoothly upsampled and
    scaled so the mean vector length over the grid is ``mean_disp_mm`` (per batch element). The
    field is made at 1/``resolution_divisor`` of the grid and upsampled (it is smooth anyway).

    Args:
        shape_zyx: grid (Z, Y, X).
        spacing_mm: isotropic voxel size, mm.
        mean_disp_mm: mean vector length, mm: a float or a (batch,) tensor.
        smoothness_mm: control point distance, mm (> 0): a float or a (batch,) tensor.
        batch: number of fields.
        generator: torch random generator (device of the result).
        resolution_divisor: compute at this fraction of the grid (>= 1).

    Returns:
        (batch, 3, Z, Y, X) float32 velocity, mm along the voxel axes, (x, y, z) components.
    """
    mean = torch.as_tensor(mean_disp_mm, dtype=torch.float32).reshape(-1).expand(batch)
    smooth = torch.as_tensor(smoothness_mm, dtype=torch.float32).reshape(-1).expand(batch)
    if bool((smooth <= 0).any()) or bool((mean < 0).any()):
        raise ValueError(f"smoothness_mm must be > 0 and mean_disp_mm >= 0, got {smooth.tolist()}, {mean.tolist()}")
    small = tuple(max(4, -(-int(s) // resolution_divisor)) for s in shape_zyx)
    out = []
    for i in range(batch):
        coarse = tuple(int(max(2, min(n, math.ceil((n - 1) * spacing_mm / float(smooth[i])) + 1)))
                       for n in shape_zyx)
        v = smooth_noise(small, coarse, 3, 1, generator)
        v = v * (float(mean[i]) / v.norm(dim=1).mean().clamp_min(1e-8))
        out.append(v)
    v = torch.cat(out, 0)
    return F.interpolate(v, size=tuple(int(s) for s in shape_zyx), mode="trilinear", align_corners=True)


def integrate_svf(velocity_mm: torch.Tensor, spacing_mm: float, steps: int = 7) -> torch.Tensor:
    """Diffeomorphic displacement exp(v) - id by scaling and squaring; (B, 3, Z, Y, X) mm in and out."""
    return norm_to_mm(integrate_velocity(mm_to_norm(velocity_mm, spacing_mm), steps), spacing_mm)


def warp(image: torch.Tensor, disp_mm: torch.Tensor, spacing_mm: float, mode: str = "bilinear",
         padding_mode: str = "zeros") -> torch.Tensor:
    """``image(x + u(x))`` on the same grid: (B, C, Z, Y, X) image, (B, 3, Z, Y, X) mm field."""
    b = disp_mm.shape[0]
    theta = torch.eye(3, 4, dtype=disp_mm.dtype, device=disp_mm.device).unsqueeze(0).expand(b, 3, 4)
    grid = F.affine_grid(theta, (b, 1, *disp_mm.shape[2:]), align_corners=True)
    grid = grid + mm_to_norm(disp_mm, spacing_mm).permute(0, 2, 3, 4, 1)
    src = image if image.is_floating_point() else image.float()
    out = F.grid_sample(src, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    return out if image.is_floating_point() else out.round().to(image.dtype)


def _minmax01(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1, 1, 1)
    return ((x - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)


def _torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(0, 2 ** 62)))


def random_intensity_change(image, generator=None, gamma_std: float = 0.25, bias_strength: float = 0.2,
                            noise_max: float = 0.03, contrast_range: tuple[float, float] = (0.8, 1.2)):
    """Randomly change intensities the way scanners differ (not the anatomy).

    Per batch element: min-max to [0, 1], gamma ``exp(N(0, gamma_std))``, a smooth multiplicative
    bias within +-``bias_strength``, contrast ``U(contrast_range)``, brightness ``U(-0.1, 0.1)``,
    Gaussian noise of std ``U(0, noise_max)``, min-max back to [0, 1].

    Args:
        image: (B, 1, Z, Y, X) torch tensor (or, old API, a (Z, Y, X) numpy array).
        generator: torch generator (or, old API, ``np.random.Generator``).

    Returns:
        (B, 1, Z, Y, X) float32 in [0, 1] (numpy (Z, Y, X) for the old API).
    """
    if isinstance(image, np.ndarray):
        return _np_pairs.random_intensity_change(image, generator, gamma_std, bias_strength, noise_max,
                                                 contrast_range)
    if image.ndim != 5:
        raise ValueError(f"image must be (B, C, Z, Y, X), got {tuple(image.shape)}")
    b = image.shape[0]
    shape = tuple(image.shape[2:])
    a = _minmax01(image.float())
    gamma = torch.exp(gamma_std * _randn((b,), generator)).view(b, 1, 1, 1, 1)
    a = a.clamp_min(0) ** gamma
    bias = smooth_noise(shape, tuple(max(2, min(4, n)) for n in shape), 1, b, generator)
    bias = 1 + bias_strength * bias / bias.flatten(1).abs().max(1).values.clamp_min(1e-8).view(b, 1, 1, 1, 1)
    a = a * bias
    a = a * _uniform(*contrast_range, b, generator).view(b, 1, 1, 1, 1) + _uniform(-0.1, 0.1, b, generator).view(b, 1, 1, 1, 1)
    a = a + _randn(a.shape, generator) * _uniform(0, noise_max, b, generator).view(b, 1, 1, 1, 1)
    return _minmax01(a)


def synth_image_from_labels(labels, generator=None, blur_range: tuple[float, float] = (0.5, 1.2),
                            noise_max: float = 0.05, n_labels: int | None = None):
    """SynthMorph-style image from a label map: a random mean and texture per label, blur, bias, noise.

    Args:
        labels: (B, 1, Z, Y, X) int64 labels 0..K-1 (or, old API, a (Z, Y, X) numpy array).
        generator: torch generator (or, old API, ``np.random.Generator``).
        blur_range: Gaussian blur sigma range, voxels.
        noise_max: largest noise std (on [0, 1]).
        n_labels: K (default: labels.max() + 1).

    Returns:
        (B, 1, Z, Y, X) float32 in [0, 1] (numpy (Z, Y, X) for the old API).
    """
    if isinstance(labels, np.ndarray):
        return _np_pairs.synth_image_from_labels(labels, generator, blur_range, noise_max)
    if labels.ndim != 5 or labels.shape[1] != 1:
        raise ValueError(f"labels must be (B, 1, Z, Y, X), got {tuple(labels.shape)}")
    b = labels.shape[0]
    k = int(n_labels if n_labels is not None else int(labels.max()) + 1)
    means = _rand((b, k), generator)
    stds = 0.05 * _rand((b, k), generator)
    flat = labels.reshape(b, -1).long()
    img = torch.gather(means, 1, flat) + torch.gather(stds, 1, flat) * _randn(flat.shape, generator)
    img = img.view(labels.shape)
    sig = _uniform(*blur_range, b, generator)
    img = torch.cat([gaussian_blur(img[i:i + 1], float(sig[i])) for i in range(b)], 0)
    return random_intensity_change(img, generator, gamma_std=0.1, noise_max=noise_max)


def random_label_map(shape_zyx: Sequence[int], generator=None, n_labels: int = 8, blob_voxels: float = 8.0,
                     batch: int = 1):
    """Random smooth blobs: argmax of ``n_labels`` smooth noise channels.

    Returns:
        (batch, 1, Z, Y, X) int64 labels 0..n_labels-1 (numpy (Z, Y, X) when ``generator`` is a
        ``np.random.Generator``: the old API).
    """
    if isinstance(generator, np.random.Generator):
        return _np_pairs.random_label_map(tuple(shape_zyx), generator, n_labels, blob_voxels)
    coarse = tuple(max(2, int(round(s / blob_voxels))) for s in shape_zyx)
    return smooth_noise(shape_zyx, coarse, n_labels, batch, generator).argmax(1, keepdim=True)
