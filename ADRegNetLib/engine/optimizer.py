r"""Instance optimisation, fast on a CPU: greedy diffeomorphic Gauss-Newton descent on MIND-SSC SSD.

The field is refined coarse to fine. At each step of a level, with ``W`` the moving features
warped by the current map and ``F`` the fixed features (C channels, computed once per level):

1. the similarity gradient is analytic, no autograd: for the compositional update
   ``phi <- phi o (id + u)``, ``dL/du(x) = 2 / (|mask| C) * sum_c (W_c(x) - F_c(x)) grad W_c(x)``
   with ``grad W`` central differences of the warped features (edges replicated);
2. it is smoothed by a Gaussian (``sigma_update``, fluid regularisation; banded-matrix filter);
3. the step length along that direction is the Gauss-Newton one, ``alpha = -sum r.Jd / sum |Jd|^2``
   (``Jd`` the change of the warped features along the direction ``d``, measured on every second
   voxel per axis), capped so that no voxel moves more than ``step_voxels``. The step therefore
   shrinks with the residual: two identical images give a (near) zero step, whatever the scale of
   the rounding noise in their gradient, where a max-normalised step always moves a full voxel;
4. the update is composed with the map and the map smoothed (``sigma_field``, elastic);
5. a level stops when its loss improved by less than ``min_improvement`` (relative) over the last
   ``patience`` steps, so a good start (the network's field) costs few steps.

An initial field (the network's prediction) is applied once to the moving image on the working grid;
the levels then optimise a correction ``v`` from the identity, and the result is ``v`` followed by
the initial field: ``x -> x + v(x) + init(x + v(x))``. Coarse levels therefore never blur the
initial field's detail, and the same schedule serves a start from the identity or from a network.

Landmark pairs pull the field with the rule of the previous optimiser (``engine.instance``): their
gradient, smoothed, is normalised on its own so that it moves at most
``landmark_weight * min(step, residual / 2)``.

Units: fields are normalised ``grid_sample`` flows (x, y, z) on the level grids; updates are
computed in "grid millimetres" (voxel-axis components times the spacing), so anisotropic grids get
physical step lengths.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from ..losses.features import FeatureSSD, mind_ssc_fast, project_features
from ..spatial.filters import gaussian_smooth
from ..spatial.flow import identity_grid
from ..spatial.geometry import Geometry
from ..spatial.transforms import compose_flows, resize_flow
from ..spatial.warp import warp_norm
from ..typing import ProgressCallback, StopCallback
from .api import RegistrationCancelled

__all__ = ["OptimizerSettings", "optimize_field", "level_geometry"]


@dataclass(frozen=True)
class OptimizerSettings:
    """Settings of :func:`optimize_field`.

    Attributes:
        levels: (downsampling factor of the working grid, most iterations) per level, coarse first.
        step_voxels: longest update per step, voxels of the level grid (the Gauss-Newton step is
            used when shorter).
        sigma_update: Gaussian sigma (voxels) smoothing each update (fluid regularisation).
        sigma_field: Gaussian sigma (voxels) smoothing the field after each step (elastic).
        features: "mind" (MIND-SSC, robust to intensity changes and modalities) or "intensity"
            (the images themselves; same modality and contrast only).
        channels: MIND channels kept (principal components of the level's features; 12 = all).
        landmark_weight: landmark pull relative to ``step_voxels``.
        min_improvement: a level stops when its loss fell by less than this fraction over the last
            ``patience`` steps.
        patience: see ``min_improvement``.
    """

    levels: Sequence[tuple[int, int]] = ((4, 40), (2, 30), (1, 10))
    step_voxels: float = 0.5
    sigma_update: float = 1.5
    sigma_field: float = 1.0
    features: str = "mind"
    channels: int = 12
    landmark_weight: float = 2.0
    min_improvement: float = 2e-3
    patience: int = 5
    damping: float = 0.0


def level_geometry(geometry: Geometry, factor: int) -> Geometry:
    """The working grid downsampled by ``factor`` (same first/last voxel centres, at least 8 voxels)."""
    if factor <= 1:
        return geometry
    size = [max(8, int(round((s - 1) / factor)) + 1) if s > 8 else s for s in geometry.size]
    return geometry.with_size(size)


def _resize(volume: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Resample onto another voxel count of the same span, low-pass filtered first when shrinking."""
    if tuple(volume.shape[2:]) == tuple(shape):
        return volume
    ratio = [max(1.0, (a - 1) / max(b - 1, 1)) for a, b in zip(volume.shape[2:], shape)]
    sigma = [0.5 * r if r > 1.0 else 0.0 for r in ratio]
    if max(sigma) > 0:
        volume = gaussian_smooth(volume, sigma)
    return F.interpolate(volume, size=tuple(shape), mode="trilinear", align_corners=True)


def _sample(volume: torch.Tensor, flow: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``volume(id + flow)`` on the same grid; ``base`` the (1, Z, Y, X, 3) identity grid (edges replicated)."""
    grid = flow.permute(0, 2, 3, 4, 1).add(base)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)


_EXP: dict = {}


def _features(image: torch.Tensor, settings: OptimizerSettings) -> torch.Tensor:
    if settings.features == "mind":
        return mind_ssc_fast(image, radius=_EXP.get("radius", 1), dilation=_EXP.get("dilation", 2))
    return image


def _landmark_step(v_norm: torch.Tensor, init: Optional[torch.Tensor], fixed_norm: torch.Tensor,
                   moving_norm: torch.Tensor, to_mm: torch.Tensor, gmm_per_norm: torch.Tensor
                   ) -> tuple[torch.Tensor, float]:
    """Gradient of the mean landmark distance (mm) w.r.t. the correction, in grid-mm units.

    Args:
        v_norm: (1, 3, Z, Y, X) correction (normalised) on the level grid.
        init: optional (1, 3, Zw, Yw, Xw) initial flow applied after the correction (working grid).
        fixed_norm, moving_norm: (K, 3) landmark positions in normalised coordinates (x, y, z).
        to_mm: (3, 3) normalised vector -> LPS mm.
        gmm_per_norm: (1, 3, 1, 1, 1) grid-mm per normalised unit along x, y, z.

    Returns:
        (gradient (1, 3, Z, Y, X) per grid-mm, mean distance in mm).
    """
    v = v_norm.detach().requires_grad_(True)
    pts = fixed_norm.view(1, 1, 1, -1, 3)
    u = F.grid_sample(v, pts, mode="bilinear", padding_mode="border", align_corners=True).view(3, -1).T
    total = u
    if init is not None:
        at = (fixed_norm + u).view(1, 1, 1, -1, 3)
        total = u + F.grid_sample(init, at, mode="bilinear", padding_mode="border", align_corners=True).view(3, -1).T
    resid = (fixed_norm + total - moving_norm) @ to_mm.T
    dist = torch.sqrt((resid * resid).sum(dim=1) + 1e-12).mean()
    (grad,) = torch.autograd.grad(dist, v)
    # d/d(grid-mm) = d/d(norm) * d(norm)/d(grid-mm)
    return grad / gmm_per_norm, float(dist)


def optimize_field(fixed: torch.Tensor, moving: torch.Tensor, geometry: Geometry, settings: OptimizerSettings,
                   init_flow_norm: Optional[torch.Tensor] = None,
                   fixed_points: Optional[np.ndarray] = None, moving_points: Optional[np.ndarray] = None,
                   mask: Optional[torch.Tensor] = None,
                   progress: Optional[ProgressCallback] = None,
                   should_stop: Optional[StopCallback] = None) -> tuple[torch.Tensor, dict]:
    """Optimise the field between two images on one working grid (see the module docstring).

    Args:
        fixed: (1, 1, Z, Y, X) fixed image on ``geometry``, intensities ~[0, 1].
        moving: (1, 1, Z, Y, X) moving image already resampled onto ``geometry`` (pre-aligned).
        geometry: the working grid (LPS mm).
        settings: see :class:`OptimizerSettings`.
        init_flow_norm: optional (1, 3, z, y, x) starting normalised flow on any voxel count
            spanning ``geometry`` (e.g. the network's prediction).
        fixed_points, moving_points: optional (K, 3) LPS mm landmark pairs; ``moving_points`` in
            the pre-aligned (working) space.
        mask: optional (1, 1, Z, Y, X) bool region of interest of the fixed image.
        progress: progress(fraction of this stage, text).
        should_stop: returns True to cancel (checked every step).

    Returns:
        (flow_norm (1, 3, Z, Y, X) on ``geometry``, info dict with one entry per level under
        ``"levels"``: factor, grid, iterations, max_iterations, loss_first, loss_last, stopped_early,
        seconds).

    Raises:
        ValueError: inputs of the wrong shape or unknown settings.
        RegistrationCancelled: when ``should_stop()`` turned True.
    """
    shape = geometry.shape
    for t, name in ((fixed, "fixed"), (moving, "moving")):
        if t.ndim != 5 or t.shape[:2] != (1, 1) or tuple(t.shape[2:]) != shape:
            raise ValueError(f"{name} must be (1, 1, Z, Y, X) = (1, 1, {shape}) on the working grid, got {tuple(t.shape)}")
    if settings.features not in ("mind", "intensity"):
        raise ValueError(f"features must be 'mind' or 'intensity', got {settings.features!r}")
    if mask is not None and (mask.ndim != 5 or tuple(mask.shape[2:]) != shape):
        raise ValueError(f"mask must be (1, 1, Z, Y, X) = (1, 1, {shape}), got {tuple(mask.shape)}")
    use_landmarks = fixed_points is not None and moving_points is not None and len(fixed_points) > 0
    init = None
    if init_flow_norm is not None:
        init = resize_flow(init_flow_norm.detach().to(fixed), shape)
        moving = warp_norm(moving, init, padding_mode="border")
    if use_landmarks:
        a, b = geometry.physical_to_normalized_affine()
        fixed_norm = torch.as_tensor(np.asarray(fixed_points) @ a.T + b, dtype=fixed.dtype, device=fixed.device)
        moving_norm = torch.as_tensor(np.asarray(moving_points) @ a.T + b, dtype=fixed.dtype, device=fixed.device)
        size = np.asarray(geometry.size, dtype=np.float64)
        to_mm = torch.as_tensor(geometry.index_to_physical_matrix @ np.diag(np.where(size > 1, (size - 1) / 2, 0)),
                                dtype=fixed.dtype, device=fixed.device)
    total_steps = max(1, sum(int(it) for _, it in settings.levels))
    done = 0
    info: dict = {"levels": [], "optimizer": "gauss-newton greedy (engine.optimizer)"}
    v: Optional[torch.Tensor] = None
    for index, (factor, max_iterations) in enumerate(settings.levels):
        t_level = time.perf_counter()
        level = level_geometry(geometry, factor)
        with record_function("opt.features"):
            if _EXP.get("fromwork"):
                if _EXP.get("noaa"):
                    f_feat = F.interpolate(_features(fixed, settings), size=level.shape, mode="trilinear", align_corners=True)
                    m_feat = F.interpolate(_features(moving, settings), size=level.shape, mode="trilinear", align_corners=True)
                else:
                    f_feat = _resize(_features(fixed, settings), level.shape)
                    m_feat = _resize(_features(moving, settings), level.shape)
            else:
                f_feat = _features(_resize(fixed, level.shape), settings)
                m_feat = _features(_resize(moving, level.shape), settings)
            f_feat, m_feat = project_features(f_feat, m_feat, settings.channels)
        weight = None
        if mask is not None:
            weight = (F.interpolate(mask.to(fixed.dtype), size=level.shape, mode="nearest") > 0.5).to(fixed.dtype)
        v = fixed.new_zeros((1, 3, *level.shape)) if v is None else resize_flow(v, level.shape)
        size = np.asarray(level.size, dtype=np.float64)
        spacing = np.asarray(level.spacing, dtype=np.float64)
        # grid-mm per normalised unit along x, y, z; voxel size in grid-mm is the spacing
        gmm_per_norm = torch.as_tensor(spacing * np.maximum(size - 1, 1) / 2, dtype=fixed.dtype,
                                       device=fixed.device).view(1, 3, 1, 1, 1)
        spacing_t = torch.as_tensor(spacing, dtype=fixed.dtype, device=fixed.device).view(1, 3, 1, 1, 1)
        cap_mm = settings.step_voxels * float(spacing.min())
        ssd = FeatureSSD(f_feat, weight)
        base = identity_grid(level.shape, fixed)
        losses: list[float] = []
        step_lengths: list[float] = []
        stopped = False
        steps = 0
        for step in range(int(max_iterations)):
            if should_stop is not None and should_stop():
                raise RegistrationCancelled("registration cancelled by the user")
            with record_function("opt.warp"):
                warped = _sample(m_feat, v, base)
            with record_function("opt.gradient"):
                grad_vox, loss = ssd.gradient(warped)
            losses.append(float(loss))
            steps += 1
            if len(losses) > settings.patience and \
                    losses[-1 - settings.patience] - losses[-1] < settings.min_improvement * losses[-1 - settings.patience]:
                stopped = True
                break
            with record_function("opt.smooth_update"):
                if settings.damping > 0:
                    direction = ssd.newton_direction(grad_vox, settings.damping)
                else:
                    direction = grad_vox.neg()
                direction = gaussian_smooth(direction, settings.sigma_update)
            with record_function("opt.step_length"):
                alpha = ssd.gauss_newton_alpha(grad_vox, direction)
                longest = float(direction.square().sum(dim=1).amax().sqrt())
                alpha = max(0.0, min(alpha, settings.step_voxels / longest)) if longest > 0 else 0.0
                step_lengths.append(alpha * longest)
                update = direction.mul_(alpha).mul_(spacing_t)  # voxels -> grid-mm
            if use_landmarks:
                with record_function("opt.landmarks"):
                    grad_lm, dist_mm = _landmark_step(v, init, fixed_norm, moving_norm, to_mm, gmm_per_norm)
                    lm_update = gaussian_smooth(grad_lm.neg_(), settings.sigma_update)
                    lm_len = float(lm_update.square().sum(dim=1).amax().sqrt())
                    # pull no further than the landmarks still are from their partners (no overshoot)
                    pull = settings.landmark_weight * min(cap_mm, 0.5 * dist_mm)
                    if lm_len > 0:
                        update.add_(lm_update, alpha=pull / lm_len)
                    length = update.square().sum(dim=1, keepdim=True).sqrt_()
                    update.mul_((2 * cap_mm) / length.clamp_min_(2 * cap_mm))
            with record_function("opt.compose"):
                update.div_(gmm_per_norm)
                v = update.add_(_sample(v, update, base))  # x -> x + u(x) + v(x + u(x))
            with record_function("opt.smooth_field"):
                if settings.sigma_field > 0:
                    v = gaussian_smooth(v, settings.sigma_field)
            if "trace" in _EXP:
                _EXP["trace"](index, step, v, init)
            done += 1
            if progress is not None and (step % 5 == 0 or step == max_iterations - 1):
                progress(done / total_steps, f"optimising level {index + 1}/{len(settings.levels)} "
                                             f"(step {step + 1}/{max_iterations})")
        done += int(max_iterations) - steps + (1 if stopped else 0)
        info["levels"].append({"factor": factor, "grid": list(level.size), "iterations": steps,
                               "max_iterations": int(max_iterations),
                               "loss_first": losses[0] if losses else None,
                               "loss_last": losses[-1] if losses else None, "stopped_early": stopped,
                               "step_voxels_mean": float(np.mean(step_lengths)) if step_lengths else 0.0,
                               "seconds": round(time.perf_counter() - t_level, 3)})
    if v is None:
        v = fixed.new_zeros((1, 3, *shape))
    v = resize_flow(v, shape)
    flow = v if init is None else compose_flows(v, init)
    if progress is not None:
        progress(1.0, "optimisation done")
    return flow.detach(), info
