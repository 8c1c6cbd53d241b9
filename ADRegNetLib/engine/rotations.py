r"""Turns for the pre-alignment's rotation search (stage 2): rotations spread over all orientations,
ranked by how well the moving image fits through each one without an optimisation.

The search (``prealign._rotation_search``) gives a short rigid fit to a few starts; the optimiser
reaches a turn about 30 degrees from its start, not much more, so the starts must come within that of
the true turn. Turns about the image axes alone miss a head turned 60 degrees about an oblique axis.
Ranking a few hundred turns spread over all orientations costs a few milliseconds per hundred on a
16 mm grid, and the best few of them join the fitted starts.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..spatial.geometry import Geometry

__all__ = ["rank_turns", "rotation_about", "spread_rotations", "turn_degrees"]

#: joint-histogram bins of the mutual information that ranks turns between two contrasts
_HISTOGRAM_BINS = 16
#: a turn through which fewer of the fixed image's samples land inside the moving image is not ranked
_MIN_INSIDE_SHARE = 0.25


def rotation_about(axis: int, degrees: float) -> np.ndarray:
    """(3, 3) rotation by ``degrees`` about LPS axis 0, 1 or 2 (about axis 1 against the right-hand rule; the
    search tries both signs)."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    rotation = np.eye(3)
    rotation[i, i], rotation[i, j], rotation[j, i], rotation[j, j] = c, -s, s, c
    return rotation


def turn_degrees(rotation: np.ndarray) -> float:
    """The angle of a (3, 3) rotation, degrees (0-180)."""
    return float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


def spread_rotations(count: int) -> np.ndarray:
    """``count`` rotations spread evenly over all orientations (a super-Fibonacci spiral of unit quaternions,
    Alexa 2022): of 256, one lies within 35 degrees of every orientation and within 30 of 99 % of them.

    Returns:
        (count, 3, 3) float64 rotation matrices, the same for the same ``count``.
    """
    if count < 1:
        raise ValueError(f"the number of rotations must be at least 1, got {count}")
    phi, psi = np.sqrt(2.0), 1.533751168755204288118041
    s = np.arange(count) + 0.5
    r, r_c = np.sqrt(s / count), np.sqrt(1.0 - s / count)
    alpha, beta = 2.0 * np.pi * s / phi, 2.0 * np.pi * s / psi
    w, x, y, z = r * np.sin(alpha), r * np.cos(alpha), r_c * np.sin(beta), r_c * np.cos(beta)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def rank_turns(fixed: np.ndarray, fixed_geometry: Geometry, moving: np.ndarray, moving_geometry: Geometry,
               matrices: np.ndarray, center: np.ndarray, translation: np.ndarray, same_modality: bool,
               fixed_mask: np.ndarray | None = None) -> np.ndarray:
    """Mismatch of ``moving`` on ``fixed`` through each rigid map ``x -> R (x - center) + center + translation``.

    Args:
        fixed: (Z, Y, X) float32 intensities on ``fixed_geometry`` (a coarse grid: every voxel is sampled).
        moving: (Z, Y, X) float32 intensities on ``moving_geometry``.
        matrices: (n, 3, 3) rotations R, fixed -> moving, LPS.
        center, translation: (3,) mm, LPS, shared by all maps.
        same_modality: score by the squared correlation (one contrast) or by mutual information.
        fixed_mask: optional (Z, Y, X) bool region of ``fixed`` to score.

    Returns:
        (n,) float64: minus the squared correlation or minus the mutual information (lower fits better);
        ``inf`` where less than a quarter of the fixed samples land inside the moving image.
    """
    zyx = np.stack(np.meshgrid(*[np.arange(n) for n in fixed.shape], indexing="ij"), -1).reshape(-1, 3)
    keep = np.ones(len(zyx), bool) if fixed_mask is None else fixed_mask.reshape(-1).astype(bool)
    points = fixed_geometry.index_to_physical(zyx[keep][:, ::-1].astype(np.float64))  # (p, 3) LPS
    f_values = torch.from_numpy(fixed.reshape(-1)[keep].astype(np.float32))
    # each map composed with the moving grid's physical -> normalised map (a, b): one (3, 3) and (3,) per turn
    a, b = moving_geometry.physical_to_normalized_affine()
    linear = a @ matrices  # (n, 3, 3)
    offset = a @ (center + translation) + b - np.einsum("nij,j->ni", linear, center)
    # (n, p, 3): x, y, z in [-1, 1] inside; one (p, 3) x (3, 3 n) product (batched 3 x 3 products: 5x slower)
    n = len(matrices)
    mapped = torch.from_numpy(points.astype(np.float32)) @ torch.from_numpy(
        np.ascontiguousarray(linear.transpose(2, 0, 1).reshape(3, 3 * n), dtype=np.float32))
    grid = torch.from_numpy(offset.astype(np.float32))[:, None].add(mapped.view(-1, n, 3).transpose(0, 1))
    inside = (grid.abs() <= 1.0 + 1e-6).all(-1)
    volume = torch.from_numpy(np.ascontiguousarray(moving, np.float32))[None, None].expand(n, -1, -1, -1, -1)
    m_values = F.grid_sample(volume, grid[:, None, None], mode="bilinear", align_corners=True)[:, 0, 0, 0]
    weight = inside.float()
    count = weight.sum(1)
    scores = _minus_squared_correlation(f_values, m_values, weight) if same_modality else \
        _minus_mutual_information(f_values, m_values, inside)
    scores[count < _MIN_INSIDE_SHARE * len(f_values)] = float("inf")
    return scores.double().numpy()


def _minus_squared_correlation(f: torch.Tensor, m: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """-NCC^2 over the weighted samples, per turn (SimpleITK's correlation metric). f: (p,); m, weight: (n, p)."""
    count = weight.sum(1).clamp_min(1.0)
    f_mean = (weight * f).sum(1) / count
    m_mean = (weight * m).sum(1) / count
    f_c, m_c = (f - f_mean[:, None]) * weight, (m - m_mean[:, None]) * weight
    cov = (f_c * m_c).sum(1)
    return -(cov * cov) / ((f_c * f_c).sum(1) * (m_c * m_c).sum(1)).clamp_min(1e-12)


def _minus_mutual_information(f: torch.Tensor, m: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """-mutual information of a joint histogram over the samples inside, per turn. f: (p,); m, inside: (n, p)."""
    bins = _HISTOGRAM_BINS

    def binned(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return ((values - low) / (high - low).clamp_min(1e-12) * bins).long().clamp(0, bins - 1)

    f_bins = binned(f, f.min(), f.max())
    m_in = m[inside]
    m_bins = binned(m, m_in.min(), m_in.max()) if m_in.numel() else torch.zeros_like(m, dtype=torch.long)
    n = m.shape[0]
    flat = (torch.arange(n)[:, None] * bins * bins + f_bins[None] * bins + m_bins).reshape(-1)
    joint = torch.zeros(n * bins * bins).index_add_(0, flat, inside.float().reshape(-1)).reshape(n, bins, bins)
    joint = joint / joint.sum((1, 2), keepdim=True).clamp_min(1.0)
    p_f, p_m = joint.sum(2, keepdim=True), joint.sum(1, keepdim=True)
    ratio = joint / (p_f * p_m).clamp_min(1e-12)
    return -(joint * torch.log(ratio.clamp_min(1e-12))).sum((1, 2))
