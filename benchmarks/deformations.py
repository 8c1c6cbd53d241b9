r"""Known deformations of the benchmark cases: random smooth and breathing-like stationary velocity fields.

Every field here is (3, Z, Y, X) float32 on a fixed grid, LPS mm, (x, y, z) components. A velocity
``v`` becomes a diffeomorphic displacement ``u = exp(v) - id`` through the library's scaling and
squaring (:func:`ADRegNetLib.spatial.transforms.integrate_velocity`).

The random parts come from :func:`smooth_noise` (normal noise on a coarse control grid, cubic-spline
upsampling with scipy). It is not the training generator's noise
(:mod:`ADRegNetLib.train.synthetic`, trilinear in torch) on purpose: the cases must stay the same,
bit for bit, for the same seed, so that benchmark runs before and after a change compare.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from ADRegNetLib.spatial.flow import disp_mm_to_flow_norm, flow_norm_to_disp_mm
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.transforms import integrate_velocity

__all__ = ["smooth_noise", "integrate_svf", "scale_svf", "random_smooth_svf", "breathing_svf"]


def smooth_noise(shape_zyx: Sequence[int], geometry: Geometry, control_spacing_mm: float,
                 rng: np.random.Generator, channels: int) -> np.ndarray:
    """Smooth random field: N(0, 1) on a coarse grid about ``control_spacing_mm`` apart, cubic upsampling.

    Args:
        shape_zyx: output array shape (Z, Y, X) (the shape of ``geometry``).
        geometry: the grid, for its physical extent.
        control_spacing_mm: distance between independent control values, mm.
        rng: the only source of randomness.
        channels: number of independent channels.

    Returns:
        (channels, Z, Y, X) float32, unit-ish scale.
    """
    extent = geometry.spacing * (np.asarray(geometry.size) - 1)
    coarse_xyz = np.maximum(np.ceil(extent / control_spacing_mm).astype(int) + 1, 2)
    coarse_zyx = tuple(int(v) for v in coarse_xyz[::-1])
    out = np.empty((channels, *shape_zyx), dtype=np.float32)
    for c in range(channels):
        noise = rng.standard_normal(coarse_zyx)
        zoom = [s / n for s, n in zip(shape_zyx, coarse_zyx)]
        up = ndimage.zoom(noise, zoom, order=3, mode="nearest", grid_mode=False)
        # zoom can be off by one voxel from rounding; pad/crop to the exact shape.
        up = up[tuple(slice(0, s) for s in shape_zyx)]
        pad = [(0, s - u) for s, u in zip(shape_zyx, up.shape)]
        out[c] = np.pad(up, pad, mode="edge")
    return out


def integrate_svf(velocity_mm: np.ndarray, geometry: Geometry, steps: int = 7) -> np.ndarray:
    """Scaling and squaring of a stationary velocity.

    Args:
        velocity_mm: (3, Z, Y, X) LPS mm velocity on ``geometry``.
        geometry: its grid.
        steps: squaring steps.

    Returns:
        (3, Z, Y, X) float32 displacement u = exp(v) - id, LPS mm, on ``geometry``.
    """
    v = torch.from_numpy(np.ascontiguousarray(velocity_mm, dtype=np.float32))[None]
    flow = integrate_velocity(disp_mm_to_flow_norm(v, geometry), steps=steps)
    return flow_norm_to_disp_mm(flow, geometry)[0].numpy()


def scale_svf(velocity_mm: np.ndarray, geometry: Geometry, mask: np.ndarray, target_mean_mm: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Scale a velocity so the integrated field's mean magnitude inside ``mask`` is ``target_mean_mm``.

    Args:
        velocity_mm: (3, Z, Y, X) LPS mm on ``geometry``.
        geometry: its grid.
        mask: (Z, Y, X) bool, where the mean is taken.
        target_mean_mm: wanted mean |u| in mm (met within 2 %, at most 3 rescalings).

    Returns:
        (scaled velocity, its displacement), both (3, Z, Y, X) float32 LPS mm.

    Raises:
        ValueError: the velocity is zero inside the mask.
    """
    v = velocity_mm
    u = integrate_svf(v, geometry)
    for _ in range(3):
        mean = float(np.linalg.norm(u[:, mask], axis=0).mean())
        if mean <= 0:
            raise ValueError("the random velocity is zero inside the mask; cannot scale it")
        if abs(mean - target_mean_mm) < 0.02 * target_mean_mm:
            break
        v = v * (target_mean_mm / mean)
        u = integrate_svf(v, geometry)
    return v, u


def random_smooth_svf(geometry: Geometry, rng: np.random.Generator, control_spacing_mm: float = 40.0
                      ) -> np.ndarray:
    """(3, Z, Y, X) float32 random smooth velocity, LPS mm components, unit-ish scale (scaled later)."""
    return smooth_noise(geometry.shape, geometry, control_spacing_mm, rng, 3)


def breathing_svf(geometry: Geometry, lung_mask: np.ndarray, rng: np.random.Generator,
                  boundary_sigma_mm: float = 15.0) -> np.ndarray:
    """Breathing-like velocity (inhale fixed -> exhale moving), unscaled.

    Mostly superior (+z in LPS) and growing from the apex (0) to the lung base (1) -- the diaphragm
    moves most -- plus a smaller anterior-posterior component (+y: the anterior wall moves back),
    a lateral contraction towards the midline, and a 15 % random smooth part. It decays outside
    the lungs (the lung mask smoothed by a Gaussian of ``boundary_sigma_mm``: 15 mm drags the chest wall
    along; 1.5 mm lets the lungs slide against a still chest wall, as they do in a 4-D CT).

    Args:
        geometry: the fixed grid.
        lung_mask: (Z, Y, X) bool lungs on ``geometry``.
        rng: source of the random part.
        boundary_sigma_mm: how sharply the motion stops at the lungs' boundary.

    Returns:
        (3, Z, Y, X) float32, LPS mm components.
    """
    pts_idx = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in geometry.shape), indexing="ij"), 0)
    zc = pts_idx[0]
    m = geometry.index_to_physical_matrix
    x, y, z = [m[i, 0] * pts_idx[2] + m[i, 1] * pts_idx[1] + m[i, 2] * zc + geometry.origin[i] for i in range(3)]
    lz = z[lung_mask]
    z_apex, z_base = float(lz.max()), float(lz.min())
    t = np.clip((z_apex - z) / max(z_apex - z_base, 1e-3), 0.0, 1.0) ** 1.5
    sigma_vox = boundary_sigma_mm / geometry.spacing[::-1]
    weight = ndimage.gaussian_filter(lung_mask.astype(np.float32), sigma=sigma_vox)
    weight /= max(float(weight.max()), 1e-6)
    weight = np.clip(weight * 1.6, 0, 1)
    lx = x[lung_mask]
    xc = float(lx.mean())
    half = max(float(np.abs(lx - xc).max()), 1.0)
    v = np.zeros((3, *geometry.shape), dtype=np.float32)
    v[2] = 1.0 * t * weight
    v[1] = 0.3 * t * weight
    v[0] = -0.15 * (x - xc) / half * t * weight
    v += 0.15 * smooth_noise(geometry.shape, geometry, 50.0, rng, 3) * weight
    return v
