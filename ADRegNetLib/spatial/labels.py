r"""Label-aware resampling of label maps (segmentations) through a displacement field.

Nearest-neighbour resampling of a label map gives a staircase on every oblique boundary and
loses or thickens thin structures, because each output voxel copies one input voxel. Here each
label's indicator (1 inside, 0 outside; optionally Gaussian-smoothed) is resampled with trilinear
interpolation and every output voxel takes the label whose interpolated indicator is largest: a
smooth boundary at sub-voxel precision, and the output holds only label values of the input (and
``background`` where the sampled point falls outside the input grid).

The same function works in either direction: warp moving labels onto the fixed grid with the
forward field, or fixed labels onto the moving grid with the inverse field (roles swapped).

Labels are processed in chunks of ``chunk_labels`` indicators, so memory stays at a few arrays
of the output size whatever the number of labels.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .filters import gaussian_smooth
from .geometry import Geometry
from .warp import sampling_grid

__all__ = ["warp_labels", "sample_labels"]

ArrayLike = Union[np.ndarray, torch.Tensor]
DeviceLike = Union[str, torch.device, None]
_CHUNK_BYTES = 1 << 30


def _as_labels(labels: ArrayLike, device: DeviceLike) -> torch.Tensor:
    t = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    if t.ndim != 3:
        raise ValueError(f"labels must be a (Z, Y, X) label map, got shape {tuple(t.shape)}")
    if t.is_floating_point():
        if not torch.isfinite(t).all() or not torch.equal(t, t.round()):
            raise ValueError("labels must hold whole numbers (a label map), got fractional or NaN values; "
                             "give the segmentation, not an intensity image")
    elif t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.to(device=device if device is not None else t.device)


def sample_labels(labels: ArrayLike, grid_norm: torch.Tensor, sigma_voxels: float | Sequence[float] = 0.0, chunk_labels: int = 16,
                  background: int = 0) -> torch.Tensor:
    """Label-aware sampling of a label map at arbitrary points.

    Args:
        labels: (Zi, Yi, Xi) integer label map (numpy or torch) on its own grid.
        grid_norm: (1, Z, Y, X, 3) sampling points in the label map's normalised coordinates
            (``grid_sample``, ``align_corners=True``, (x, y, z) order), e.g. from
            :func:`~ADRegNetLib.spatial.warp.sampling_grid`; its device is used.
        sigma_voxels: Gaussian smoothing of each indicator before sampling, in voxels of the label
            map, one value or (z, y, x) (0 = none: plain trilinear indicators).
        chunk_labels: labels resampled together (memory: about ``chunk_labels`` float32 arrays of
            the input and of the output size; fewer when that would pass 1 GiB).
        background: label given to points outside the label map.

    Returns:
        (Z, Y, X) tensor of the label map's dtype holding only values of ``labels`` (and
        ``background`` outside).

    Raises:
        ValueError: a non-integer label map, a bad grid shape, or ``chunk_labels`` < 1.
    """
    if grid_norm.ndim != 5 or grid_norm.shape[0] != 1 or grid_norm.shape[-1] != 3:
        raise ValueError(f"grid_norm must be (1, Z, Y, X, 3) normalised (x, y, z) points, got {tuple(grid_norm.shape)}")
    if chunk_labels < 1:
        raise ValueError(f"chunk_labels must be >= 1, got {chunk_labels}")
    lab = _as_labels(labels, grid_norm.device)
    grid = grid_norm.to(torch.float32)
    values, index = torch.unique(lab, sorted=True, return_inverse=True)  # index: (Zi, Yi, Xi) into values
    # at most ~1 GiB of float32 indicators and samples per chunk, whatever chunk_labels says
    per_label = 4 * (lab.numel() + grid.shape[1] * grid.shape[2] * grid.shape[3])
    chunk_labels = max(1, min(chunk_labels, _CHUNK_BYTES // per_label))
    best_value = torch.zeros(grid.shape[1:4], dtype=torch.float32, device=grid.device)
    best_index = torch.full(grid.shape[1:4], -1, dtype=torch.long, device=grid.device)
    for start in range(0, len(values), chunk_labels):
        ids = torch.arange(start, min(start + chunk_labels, len(values)), device=grid.device)
        indicator = (index[None] == ids[:, None, None, None]).to(torch.float32)[None]  # (1, C, Zi, Yi, Xi)
        if np.any(np.asarray(sigma_voxels) > 0):
            indicator = gaussian_smooth(indicator, sigma_voxels)
        sampled = F.grid_sample(indicator, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        chunk_value, chunk_arg = sampled.max(dim=0)
        # strictly greater: ties keep the earlier (smaller) label; all-zero points stay background
        win = chunk_value > best_value
        best_value = torch.where(win, chunk_value, best_value)
        best_index = torch.where(win, ids[chunk_arg], best_index)
    out = values[best_index.clamp_min(0)]
    return torch.where(best_index >= 0, out, torch.as_tensor(background, dtype=out.dtype, device=out.device))


def warp_labels(labels: ArrayLike, disp_mm: Optional[ArrayLike], fixed_geometry: Geometry, moving_geometry: Geometry,
                sigma_mm: float = 0.0, chunk_labels: int = 16, background: int = 0,
                device: DeviceLike = None) -> ArrayLike:
    """Warp a label map onto the grid of a displacement field, label-aware.

    The output voxel x takes the label found at ``x + u(x)`` in ``labels`` (resampling
    convention), chosen as the largest trilinearly interpolated label indicator.

    For moving labels onto the fixed grid pass the forward field on the fixed grid; for fixed
    labels onto the moving grid pass the inverse field on the moving grid, with the geometries
    swapped (``fixed_geometry`` = the output grid, ``moving_geometry`` = the labels' grid).

    Args:
        labels: (Zm, Ym, Xm) integer label map on ``moving_geometry`` (numpy or torch).
        disp_mm: (3, Z, Y, X) (or (1, 3, Z, Y, X)) float, LPS mm, (x, y, z) components, on
            ``fixed_geometry``; None resamples without deformation.
        fixed_geometry: the output grid (the field's grid).
        moving_geometry: the labels' grid.
        sigma_mm: Gaussian smoothing of each indicator, mm (0 = none). Smoothing rounds
            boundaries further but can erase structures thinner than about 2 sigma.
        chunk_labels: labels resampled together (bounds memory).
        background: label of output voxels whose point falls outside the label map.
        device: torch device; default the field's (or the labels') device, else CPU.

    Returns:
        (Z, Y, X) label map on ``fixed_geometry``, the labels' dtype; numpy for a numpy ``labels``,
        else a tensor.

    Raises:
        ValueError: shapes that do not match the geometries, or a non-integer label map.
    """
    lab_dev = device if device is not None else (
        disp_mm.device if isinstance(disp_mm, torch.Tensor) else labels.device if isinstance(labels, torch.Tensor) else "cpu")
    lab = _as_labels(labels, lab_dev)
    if tuple(lab.shape) != moving_geometry.shape:
        raise ValueError(f"labels shape {tuple(lab.shape)} (Z, Y, X) does not match its grid {moving_geometry.shape}")
    field = None
    if disp_mm is not None:
        field = disp_mm if isinstance(disp_mm, torch.Tensor) else torch.as_tensor(np.asarray(disp_mm))
        field = field.to(device=lab.device, dtype=torch.float32)
        if field.ndim == 4:
            field = field[None]
        if field.ndim != 5 or field.shape[:2] != (1, 3) or tuple(field.shape[2:]) != fixed_geometry.shape:
            raise ValueError(f"disp_mm must be (3, Z, Y, X) = (3, {', '.join(map(str, fixed_geometry.shape))}) on the "
                             f"output grid, got {tuple(disp_mm.shape)}")
    like = torch.zeros((), dtype=torch.float32, device=lab.device)
    grid = sampling_grid(field, fixed_geometry, moving_geometry, like=like)
    sigma_vox = [sigma_mm / s for s in moving_geometry.spacing[::-1]] if sigma_mm > 0 else 0.0
    out = sample_labels(lab, grid, sigma_voxels=sigma_vox, chunk_labels=chunk_labels, background=background)
    return out if isinstance(labels, torch.Tensor) else out.cpu().numpy()
