r"""Inverting a displacement field, and how well a pair of fields inverts each other.

The forward field ``u`` lives on the fixed grid and maps a fixed point x to the moving point
``x + u(x)`` (DESIGN.md). Its inverse ``v`` lives on the *moving* grid and maps a moving point y
back: ``y + v(y)`` is the fixed point that ``u`` sends to y, so

    x + u(x) + v(x + u(x)) = x        and        y + v(y) + u(y + v(y)) = y.

The second identity is solved for ``v`` at every moving voxel centre by the fixed-point iteration
``v <- -u(y + v)`` (u sampled trilinearly at physical points, ``grid_sample``), vectorised over
all voxels in torch. Where the plain step does not contract (|grad u| near or above 1) the step
is halved voxel by voxel until the residual falls (backtracking), so strongly expanding but still
diffeomorphic fields converge too.

Outside the fixed grid the forward field is continued by its edge values (``grid_sample``
border padding), so ``v`` is defined, and smooth, on the whole moving grid even where the moving
image reaches past the fixed one.

Arrays: ``disp_mm`` (3, Z, Y, X) float, LPS mm, (x, y, z) components, numpy or torch (a leading
batch axis of 1 is accepted); the result has the type of the input (a tensor stays on its device).
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import Geometry
from .warp import sampling_grid

__all__ = ["invert_displacement", "inverse_consistency_error"]

ArrayLike = Union[np.ndarray, torch.Tensor]
DeviceLike = Union[str, torch.device, None]

#: smallest per-voxel step of the damped iteration (1 = the plain fixed-point step)
_MIN_STEP = 1.0 / 64.0


def _as_field(disp_mm: ArrayLike, geometry: Geometry, name: str, device: DeviceLike) -> torch.Tensor:
    """(1, 3, Z, Y, X) float32 tensor on ``device`` (default: the tensor's own device, else CPU)."""
    t = disp_mm if isinstance(disp_mm, torch.Tensor) else torch.as_tensor(np.asarray(disp_mm))
    if t.ndim == 5 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 4 or t.shape[0] != 3:
        raise ValueError(f"{name} must have shape (3, Z, Y, X) (x, y, z components in LPS mm), got {tuple(t.shape)}")
    if tuple(t.shape[1:]) != geometry.shape:
        raise ValueError(f"{name} grid {tuple(t.shape[1:])} does not match its geometry {geometry.shape} (Z, Y, X)")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds NaN or infinite displacements; it cannot be inverted")
    return t.detach().to(device=device if device is not None else t.device, dtype=torch.float32).unsqueeze(0)


def _like_input(result: torch.Tensor, original: ArrayLike) -> ArrayLike:
    if isinstance(original, torch.Tensor):
        return result.to(original.device)
    return result.cpu().numpy()


class _PhysicalSampler:
    """Samples a field on ``field_geometry`` at ``y + w(y)`` for the voxel centres y of ``points_geometry``."""

    def __init__(self, field: torch.Tensor, field_geometry: Geometry, points_geometry: Geometry) -> None:
        self.field = field
        # voxel centres of the points grid in the field grid's normalised coordinates (float64 base)
        self.base = sampling_grid(None, points_geometry, field_geometry, like=field)  # (1, Z, Y, X, 3)
        a = torch.as_tensor(field_geometry.vector_mm_to_normalized_matrix(), dtype=field.dtype, device=field.device)
        self.a_t = a.T.contiguous()

    def __call__(self, w: Optional[torch.Tensor], padding_mode: str = "border") -> torch.Tensor:
        """(1, 3, Zp, Yp, Xp) field values at y + w(y); ``w`` is (1, 3, Zp, Yp, Xp) mm or None (w = 0)."""
        grid = self.base if w is None else self.base + w.permute(0, 2, 3, 4, 1) @ self.a_t
        return F.grid_sample(self.field, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def invert_displacement(disp_mm: ArrayLike, fixed_geometry: Geometry, moving_geometry: Geometry,
                        iterations: int = 60, tol_mm: float = 1e-3, device: DeviceLike = None) -> ArrayLike:
    """The inverse of a displacement field, on the moving grid.

    Solves ``v(y) = -u(y + v(y))`` at every moving voxel centre y by damped fixed-point iteration
    (see the module docstring), starting from ``v = -u(y)``.

    Args:
        disp_mm: forward field u, (3, Z, Y, X) (or (1, 3, Z, Y, X)) float, LPS mm, (x, y, z)
            components, on ``fixed_geometry``: fixed x -> moving x + u(x).
        fixed_geometry: the grid of ``disp_mm``.
        moving_geometry: the grid the inverse is computed on (any spacing, origin, direction).
        iterations: most iterations (each one samples u once at every moving voxel).
        tol_mm: stop once every voxel's residual |v(y) + u(y + v(y))| is below this, mm.
        device: torch device for the work; default the input tensor's device (CPU for numpy).

    Returns:
        v: (3, Zm, Ym, Xm) float32, LPS mm, (x, y, z) components, on ``moving_geometry``: moving
        y -> fixed y + v(y). A numpy array for a numpy input, else a tensor on the input's device.

    Raises:
        ValueError: the field is not (3, Z, Y, X) on ``fixed_geometry``, holds NaN, or
            ``iterations`` < 1.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    u = _as_field(disp_mm, fixed_geometry, "disp_mm", device)
    sample = _PhysicalSampler(u, fixed_geometry, moving_geometry)
    with torch.no_grad():
        v = -sample(None)
        residual = v + sample(v)
        norm = residual.square().sum(dim=1, keepdim=True)  # squared residual, mm^2
        step = torch.ones_like(norm)
        for _ in range(iterations):
            if float(norm.max()) < tol_mm ** 2:
                break
            trial = v - step * residual
            trial_residual = trial + sample(trial)
            trial_norm = trial_residual.square().sum(dim=1, keepdim=True)
            better = trial_norm < norm
            # Accept where the residual fell; elsewhere keep v and halve that voxel's step.
            v = torch.where(better, trial, v)
            residual = torch.where(better, trial_residual, residual)
            norm = torch.where(better, trial_norm, norm)
            step = torch.where(better, step, (step * 0.5).clamp_min(_MIN_STEP))
    return _like_input(v[0], disp_mm)


def inverse_consistency_error(disp_mm: ArrayLike, fixed_geometry: Geometry, inv_disp_mm: ArrayLike,
                              moving_geometry: Geometry, mask: Optional[ArrayLike] = None,
                              device: DeviceLike = None) -> tuple[float, float]:
    """Mean and largest inverse-consistency error of a field pair, mm, over the moving foreground.

    Both compositions are measured, so the interpolation error of each field counts:

    * at every moving voxel y in ``mask``: ``|v(y) + u(y + v(y))|`` (moving -> fixed -> moving);
    * at every fixed voxel x whose image ``x + u(x)`` lies in ``mask`` (nearest voxel):
      ``|u(x) + v(x + u(x))|`` (fixed -> moving -> fixed).

    Args:
        disp_mm: forward field u, (3, Z, Y, X) float, LPS mm, (x, y, z), on ``fixed_geometry``.
        fixed_geometry: its grid.
        inv_disp_mm: inverse field v, (3, Zm, Ym, Xm) float, LPS mm, (x, y, z), on ``moving_geometry``.
        moving_geometry: its grid.
        mask: (Zm, Ym, Xm) bool (or 0/1) moving-image foreground; None means the whole moving grid.
        device: torch device for the work; default the forward tensor's device (CPU for numpy).

    Returns:
        (mean_mm, max_mm) over all measured points of both compositions.

    Raises:
        ValueError: wrong shapes, or no point to measure (empty mask, grids that do not overlap).
    """
    u = _as_field(disp_mm, fixed_geometry, "disp_mm", device)
    v = _as_field(inv_disp_mm, moving_geometry, "inv_disp_mm", u.device)
    if mask is None:
        m = torch.ones((1, 1, *moving_geometry.shape), dtype=torch.float32, device=u.device)
    else:
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask, device=u.device)
        if tuple(m.shape) != moving_geometry.shape:
            raise ValueError(f"mask must be (Zm, Ym, Xm) = {moving_geometry.shape} on the moving grid, got {tuple(m.shape)}")
        m = (m != 0).to(torch.float32)[None, None]
    with torch.no_grad():
        moving_side = (v + _PhysicalSampler(u, fixed_geometry, moving_geometry)(v)).norm(dim=1)[0]
        errors = [moving_side[m[0, 0] > 0]]
        to_moving = _PhysicalSampler(v, moving_geometry, fixed_geometry)
        fixed_side = (u + to_moving(u)).norm(dim=1)[0]
        # the mask at x + u(x): nearest voxel, 0 outside the moving grid
        hit = F.grid_sample(m, to_moving.base + u.permute(0, 2, 3, 4, 1) @ to_moving.a_t, mode="nearest",
                            padding_mode="zeros", align_corners=True)[0, 0]
        errors.append(fixed_side[hit > 0])
        err = torch.cat(errors)
    if err.numel() == 0:
        raise ValueError("no point to measure: the mask is empty or the fixed and moving grids do not overlap")
    return float(err.mean()), float(err.max())
