r"""Sub-voxel refinement of the field at full working resolution (the stage after the MIND optimisation).

MIND-SSC features find the anatomy robustly, but their optimum is biased: on the brain benchmark
case, optimisation started *from the true field* drifted to 0.40-0.45 mm TRE within a few steps
(the features of a sharp and of a resampled image differ). Local NCC on the intensities (small
windows, invariant to local gain and offset, so to smooth intensity changes) has its optimum much
closer to the truth: started from the MIND result, eight full-resolution steps took two brain cases
from 0.48/0.52 to 0.27/0.31 mm and the lung case from 0.48 to 0.35 mm with 5-voxel windows (9-voxel
windows: 0.30/0.32 and 0.43 mm). This stage runs those steps. For two contrasts (T1 against T2) local NCC is
replaced by normalised gradient fields, which compare edge directions whatever the intensities on
either side: on the brain-t1t2 case, after the MIND optimisation's 0.77 mm, 30 NGF steps reached
0.40 mm (local NCC with 3-voxel windows, whose squared correlation ignores the sign: 0.46 mm with 20
steps; 5-voxel windows 0.62; the moving image mapped to the fixed contrast by its joint histogram,
then local NCC: 0.72; gradient-magnitude images: 0.83). ``settings`` holds the choices.

Each step: the similarity's gradient (``losses.lncc.LocalNCC``, analytic; or
``losses.ngf.NormalizedGradientFields``), Gaussian-smoothed
(``sigma_update``, fluid), scaled so that the longest update is ``step_voxels``, composed with the
map and the map smoothed (``sigma_field``, elastic). A step that does not lower the loss is undone
and the step length halved; the stage ends when it falls below ``min_step_voxels``. So two images
that already match (identical, or only differing in intensity) keep their field: every step
away from the optimum is rejected. An accepted step also measures the slope of the loss along
itself at both ends; when the slope turned upwards, the step passed the minimum along that
direction (a parabola through both slopes puts it at ``d0 / (d0 - d1)`` of the step) and the
following steps are shortened by that share (at most 4 times per step). On a pair with no motion
and independent 2% noise the steps overshoot so (the noise's optimum is close), on the brain cases
they rarely do: invented motion 0.168 -> 0.144 mm (fast), benchmark no-motion check 0.127 ->
0.123 mm, brain TRE over 3 seeds 0.282 -> 0.279 mm (balanced). When the loss still fell
at a step's end (it stopped short of the minimum), the following steps are lengthened by
``RefineSettings.grow`` up to ``max_step_voxels``. Without that, ten steps starting at 0.25 voxel
could move at most 2.5 voxels, too little after the MIND levels on deformations that are larger or
more local than the benchmark's (eighth session, balanced, seed 0 with the network, cases made by
the benchmark generator with other mean sizes / control spacings, tuned on seed 0, checked on seed
1: brain 4 mm / 20 mm 1.225 -> 1.040 mm, 6 / 30 mm 0.989 -> 0.730, 8 / 40 mm 0.535 -> 0.482, lung
10 mm 0.529 -> 0.400, synthseg 8 / 40 mm 2.019 -> 1.654; all nine seed-1 cases better, mean
relative TRE 0.227 -> 0.203; the benchmark's own cases: lung 0.288 -> 0.270 and 0.275 -> 0.262,
synthseg 1.247 -> 1.199 and 1.072 -> 1.044, brain seeds 0-4 0.006 mm worse on average, 0.257-0.387
-> 0.256-0.391; no-motion check unchanged, 0.042 mm balanced, 0.057 fast). Local NCC also counts back part of
the moving image's noise variance that linear interpolation averages away
(``RefineSettings.noise_share``, ``losses.lncc``): without it, landing between voxels raised the
similarity by itself and the refinement invented motion on pairs without any (0.123 -> 0.042 mm).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import torch

from ..losses.lncc import LocalNCC
from ..losses.ngf import NormalizedGradientFields
from ..spatial.bspline import refined
from ..spatial.filters import gaussian_smooth, noise_std, smooth_over_support, support_of
from ..spatial.flow import flow_norm_to_disp_mm, identity_grid, vector_length
from ..spatial.geometry import Geometry
from ..spatial.sliding import SlidingRegion
from ..typing import ProgressCallback, StopCallback
from .api import RegistrationCancelled
from .landmark_pull import landmark_tensors, landmark_update
from .optimizer import sample_through

__all__ = ["RefineSettings", "refine_field", "refine_locally"]


@dataclass(frozen=True)
class RefineSettings:
    """Settings of :func:`refine_field`.

    Attributes:
        steps: most steps (0: no refinement).
        step_voxels: longest update of the first step, working-grid voxels.
        min_step_voxels: the stage ends when rejected steps halved the step below this.
        sigma_update: Gaussian sigma smoothing each update, working-grid voxels.
        sigma_field: Gaussian sigma smoothing the map after each step, working-grid voxels.
        similarity: "lncc" (local NCC, one contrast) or "ngf" (normalised gradient fields, two
            contrasts).
        radius: local NCC window radius, voxels (window ``2 radius + 1``).
        eps: local NCC stabiliser relative to the global variances (windows whose standard
            deviation is below about ``eps ** 0.25`` of the global one count as flat).
        ngf_eps: NGF edge parameter, normalised intensity per mm.
        grow: an accepted step whose loss still falls at its end (it stopped short of the minimum
            along itself) lengthens the following steps by this factor, up to ``max_step_voxels``
            (1: never longer than the first). See the module docstring for what it measured.
        max_step_voxels: the longest step ``grow`` leads to, working-grid voxels.
        sample_refined_from: from this share of the steps on, warp the moving image's cubic B-spline
            refined to half the working spacing (``spatial.bspline.refined``; 8 times its voxels) instead
            of the image itself (0: from the first step; 1 or more: never): linear interpolation between
            the refined samples blurs a quarter as much, so the similarity no longer changes with where
            between voxels a sample lands. The noise model's positions are counted in the refined voxels,
            and the loss is measured again at the switch. The first steps keep the blurrier image, whose
            wider basin large residual motion needs. Measured (seventeenth session, balanced, one run, 24
            cases; docs/PERFORMANCE.md, "Refined sampling"): against never, TRE x 0.910 (geometric mean),
            one case 4.8 % worse (lung 15 mm motion 1.373 -> 1.439 mm), 16 better by over 2 % (brain seeds 0-4
            0.237 -> 0.216 mm, oblique 0.303 -> 0.248, lung 0.262 -> 0.222); from the first step x 0.918,
            six worse, up to 19 % (the lung 15 mm motion 1.638, lung-large seeds 0-3 0.429 -> 0.449).
        landmark_sigma_factor: landmark pairs pull with a Gaussian of ``sigma_update`` times this
            (``landmark_pull.landmark_update``; the optimisation's levels, which rescue gross
            misalignment, keep the full width). Measured (thirteenth session, balanced, the first 20
            of a case's 300 landmarks given as pairs; given / other 280, mm), 1 -> 0.5: brain seeds
            0 / 1 0.053 / 0.218, 0.061 / 0.212 -> 0.030 / 0.218, 0.034 / 0.203; brain 4 mm / 30 mm
            0.098 / 0.439 -> 0.068 / 0.397; brain-local 0.143 / 0.527 -> 0.020 / 0.494; lung 0.077 /
            0.258 -> 0.062 / 0.256; a pair shifted by 15 mm without pre-alignment, 6 pairs: 0.048 /
            1.131 -> 0.009 / 1.148 (halving the levels' width too: 1.227, so they keep it).
        noise_share: local NCC only: share of the moving image's estimated noise variance
            (``spatial.filters.noise_std``) whose reduction by interpolation is undone
            (``losses.lncc``; 0: none). The full estimate over-corrects (it pulls the map to whole
            voxels). Measured, balanced, brain cases over 5 seeds / no-motion check / a pair with no
            motion and independent 2% noise: 0: 0.311 mm / 0.123 / 0.144 mm; 0.05: 0.313 / 0.073 /
            0.107; 0.1: 0.315 / 0.042 / 0.075; 0.15: 0.317 / 0.031 / 0.059; 1.0 (3 seeds): 0.329
            (0.279 without) / 0.024 / 0.033.
        edges: smoothing at the grid's faces, "replicate" or "renormalise" (``spatial.filters.gaussian_smooth``);
            the engine sets it once from the working fixed image (``filters.smoothing_edges``, as the optimisation).
        sliding_leak: with a sliding region (``refine_field(sliding=)``), the share of the other side's weight in
            each side's smoothing (``engine.sliding.REFINE_LEAK``).
    """

    steps: int = 6
    step_voxels: float = 0.25
    min_step_voxels: float = 0.03
    sigma_update: float = 5.0
    sigma_field: float = 0.7
    similarity: str = "lncc"
    radius: int = 2
    eps: float = 1e-4
    ngf_eps: float = 0.0025
    noise_share: float = 0.1
    landmark_sigma_factor: float = 0.5
    grow: float = 1.5
    max_step_voxels: float = 1.0
    sample_refined_from: float = 0.5
    edges: str = "replicate"
    sliding_leak: float = 0.2


def refine_field(fixed: torch.Tensor, moving: torch.Tensor, geometry: Geometry, flow: torch.Tensor,
                 settings: RefineSettings, mask: Optional[torch.Tensor] = None,
                 fixed_points: Optional[np.ndarray] = None, moving_points: Optional[np.ndarray] = None,
                 progress: Optional[ProgressCallback] = None,
                 should_stop: Optional[StopCallback] = None,
                 noise_source: Optional[torch.Tensor] = None,
                 noise_scale: Optional[torch.Tensor] = None,
                 moving_refined: Optional[torch.Tensor] = None,
                 sliding: Optional[SlidingRegion] = None) -> tuple[torch.Tensor, dict]:
    """Refine a normalised flow on the working grid by local NCC or normalised gradient fields.

    Args:
        fixed: (1, 1, Z, Y, X) fixed intensities on ``geometry`` (normalised, ~[0, 1]).
        moving: (1, 1, Z, Y, X) pre-aligned moving intensities on ``geometry``.
        geometry: the working grid.
        flow: (1, 3, Z, Y, X) normalised flow on ``geometry`` (the optimisation's result).
        settings: see :class:`RefineSettings`.
        mask: optional (1, 1, Z, Y, X) bool region of interest of the fixed image.
        fixed_points, moving_points: optional (K, 3) LPS mm landmark pairs (moving ones in the
            pre-aligned space): each step also removes their residual near them, as in the
            optimisation (``landmark_pull.landmark_update``), so the refinement keeps them matched.
        progress: progress(fraction of this stage, text).
        should_stop: returns True to cancel (checked every step).
        noise_source: optional (1, 1, Z, Y, X) the moving image before its intensities were changed
            (gain normalisation, intensity map): local NCC's noise level is estimated on it instead
            of on ``moving``.
        noise_scale: optional (1, 1, Z, Y, X) factor by which that change multiplied the noise at each
            voxel (the gain times the intensity map's slope); the noise variance is scaled by its square.
        moving_refined: optional ``spatial.bspline.refined(moving)``, given by a caller that refines the
            same image more than once (``settings.sample_refined_from``); computed here when needed otherwise.
        sliding: optional region along whose boundary the field may slide (``engine.sliding``): the update and the
            field smoothed on each side from that side, ``settings.sliding_leak`` of the other's.

    Returns:
        (refined flow (1, 3, Z, Y, X), info: the similarity used, steps accepted, rejected and
        shortened after passing the minimum along them, loss
        first/last, final step length, seconds, and with landmarks their mean distance first/last).

    Raises:
        ValueError: inputs of the wrong shape, or an unknown similarity.
        RegistrationCancelled: when ``should_stop()`` turned True.
    """
    shape = geometry.shape
    for t, name, channels in ((fixed, "fixed", 1), (moving, "moving", 1), (flow, "flow", 3)):
        if t.ndim != 5 or t.shape[:2] != (1, channels) or tuple(t.shape[2:]) != shape:
            raise ValueError(f"{name} must be (1, {channels}, Z, Y, X) = (1, {channels}, {shape}) on the working "
                             f"grid, got {tuple(t.shape)}")
    t0 = time.perf_counter()
    weight = None if mask is None else mask.to(fixed.dtype)
    noise = 0.0
    if settings.similarity == "lncc":
        noise = noise_std(moving if noise_source is None else noise_source) if settings.noise_share > 0 else 0.0
        variance = settings.noise_share * noise ** 2
        if noise_scale is not None and variance > 0:
            variance = noise_scale.square().mul_(variance)
        similarity = LocalNCC(fixed, weight, radius=settings.radius, eps=settings.eps, noise_variance=variance)
        described = f"local NCC, {2 * settings.radius + 1}-voxel windows, on intensities"
    elif settings.similarity == "ngf":
        similarity = NormalizedGradientFields(fixed, weight, spacing_xyz=geometry.spacing, eps=settings.ngf_eps)
        described = f"normalised gradient fields (edge parameter {settings.ngf_eps} per mm)"
    else:
        raise ValueError(f"refinement similarity must be 'lncc' or 'ngf', got {settings.similarity!r}")
    base = identity_grid(shape, fixed)
    size = np.asarray(geometry.size, dtype=np.float64)
    norm_per_vox = torch.as_tensor(2.0 / np.maximum(size - 1, 1), dtype=flow.dtype,
                                   device=flow.device).view(1, 3, 1, 1, 1)
    vox_per_norm = torch.as_tensor((size - 1) / 2.0, dtype=flow.dtype, device=flow.device).view(1, 3, 1, 1, 1)
    base_channels = base.permute(0, 4, 1, 2, 3).contiguous()  # the identity in a flow's layout

    # the volume the steps sample and its voxels per normalised unit: the moving image, and from step
    # ``refined_from`` on its refinement to half the working spacing (RefineSettings.sample_refined_from)
    sampling = {"volume": moving, "per_norm": vox_per_norm}
    steps = int(settings.steps)
    refined_from = int(settings.sample_refined_from * steps) if settings.sample_refined_from < 1.0 else None

    def sample_refined() -> None:
        volume = refined(moving) if moving_refined is None else moving_refined
        sizes = np.asarray(volume.shape[4:1:-1], dtype=np.float64)  # (x, y, z)
        sampling.update(volume=volume, per_norm=torch.as_tensor((sizes - 1) / 2.0, dtype=flow.dtype,
                                                                 device=flow.device).view(1, 3, 1, 1, 1))

    def evaluate(map_norm: torch.Tensor) -> tuple[torch.Tensor, float]:
        warped = sample_through(sampling["volume"], map_norm, base)
        if not noise > 0:
            return similarity.gradient(warped)
        # the sample positions in the sampled volume's voxels (x, y, z), clamped as grid_sample's border padding
        positions = map_norm.add(base_channels).clamp_(-1.0, 1.0).add_(1.0).mul_(sampling["per_norm"])
        return similarity.gradient(warped, positions)

    v = flow.detach()
    edges = settings.edges
    support = support_of(weight, settings.sigma_update, edges)  # the update's strength kept up to the region's edge
    if refined_from == 0:
        sample_refined()
    grad, loss = evaluate(v)
    first = loss
    cap = float(settings.step_voxels)
    accepted = rejected = shortened = lengthened = 0
    landmarks = landmark_tensors(fixed_points, moving_points, geometry, fixed)
    distances: list[float] = []
    switched: tuple[float, float] | None = None
    direction = None  # the smoothed descent direction at ``v``: a rejected step leaves both unchanged
    for step in range(steps):
        if should_stop is not None and should_stop():
            raise RegistrationCancelled("registration cancelled by the user")
        if step == refined_from and step > 0:  # the loss is compared within one sampling: measured again
            sample_refined()
            before = loss
            grad, loss = evaluate(v)
            switched, direction = (before, loss), None
        if direction is None:  # (local NCC's gradient reaches a window beyond the region: cut there first)
            descent = grad.neg() if support is None else grad.neg().mul_(weight)
            direction = (smooth_over_support(descent, settings.sigma_update, support, edges) if sliding is None else
                         sliding.smooth(descent, settings.sigma_update, settings.sliding_leak, edges,
                                        None if support is None else weight))
            longest = float(direction.square().sum(dim=1).amax().sqrt())
        if not longest > 0:
            break
        update = direction * (cap / longest)
        if landmarks is not None:
            lm_update, dist_mm = landmark_update(v, *landmarks, update,
                                                 settings.sigma_update * settings.landmark_sigma_factor, 1.0)
            distances.append(dist_mm)
            update.add_(lm_update)
        taken = update.clone()
        update.mul_(norm_per_vox)
        candidate = update.add_(sample_through(v, update, base))  # x -> x + u(x) + v(x + u(x))
        if settings.sigma_field > 0:
            candidate = (gaussian_smooth(candidate, settings.sigma_field, edges) if sliding is None else
                         sliding.smooth(candidate, settings.sigma_field, settings.sliding_leak, edges))
        new_grad, new_loss = evaluate(candidate)
        if new_loss < loss:
            slope_start, slope_end = float((grad * taken).sum()), float((new_grad * taken).sum())
            if slope_end > 0 > slope_start:  # it passed the minimum along itself, at this share of it
                cap *= min(1.0, max(0.25, slope_start / (slope_start - slope_end)))
                shortened += 1
            elif cap < settings.max_step_voxels and settings.grow > 1:  # still descending at its end
                cap = min(cap * settings.grow, settings.max_step_voxels)
                lengthened += 1
            v, grad, loss, direction = candidate, new_grad, new_loss, None
            accepted += 1
        else:
            rejected += 1
            cap *= 0.5
            if cap < settings.min_step_voxels:
                break
        if progress is not None:
            progress((step + 1) / max(1, settings.steps), f"refining (step {step + 1}/{settings.steps})")
    info = {"similarity": described,
            "steps_accepted": accepted, "steps_rejected": rejected, "steps_shortened": shortened,
            "steps_lengthened": lengthened, "smoothing_edges": edges,
            "loss_first": round(first, 6), "loss_last": round(loss, 6), "last_step_voxels": round(cap, 4),
            "refined_sampling_from_step": refined_from,
            "loss_at_switch": None if switched is None else [round(switched[0], 6), round(switched[1], 6)],
            "seconds": round(time.perf_counter() - t0, 3)}
    if settings.similarity == "lncc":
        info["noise_std"] = round(noise, 5)
    if distances:
        info["landmark_mm"] = [round(distances[0], 4), round(distances[-1], 4)]
    return v, info


def fine_share(update_flow: torch.Tensor, geometry: Geometry, region: torch.Tensor, sigma_mm: float) -> float:
    """Share of a field update that is finer than ``sigma_mm``: :func:`fine_part`'s first figure."""
    return fine_part(update_flow, geometry, region, sigma_mm)[0]


def fine_part(update_flow: torch.Tensor, geometry: Geometry, region: torch.Tensor,
              sigma_mm: float) -> tuple[float, float]:
    """The part of a field update finer than ``sigma_mm``: its share mean |u - G(u)| / mean |u| and its mean length
    mean |u - G(u)| (mm) over ``region``.

    ``G`` is a Gaussian of ``sigma_mm``; the update is measured in mm (``update_flow`` normalised, on
    ``geometry``). The share is about 0.48-0.55 for what the refinement corrects after the MIND levels on smooth
    motion (noise and interpolation bias are as fine as the update's own smoothing lets them be), more where motion
    finer than the MIND levels' smoothing was left to it. Noise in two-contrast images raises the share of the
    edge-direction refinement's update, not its length (``refine_settings.LOCAL_REFINE_MIN_FINE_MM_TWO_CONTRASTS``).

    Args:
        update_flow: (1, 3, Z, Y, X) normalised flow difference.
        geometry: its grid.
        region: (1, 1, Z, Y, X) bool voxels to measure in.
        sigma_mm: the scale.

    Returns:
        (share, mm); (0, 0) when the update or the region is empty.
    """
    update_mm = flow_norm_to_disp_mm(update_flow, geometry)
    coarse = gaussian_smooth(update_mm, [sigma_mm / float(s) for s in geometry.spacing[::-1]])
    inside = region[0, 0]
    total = float(vector_length(update_mm)[0][inside].mean()) if bool(inside.any()) else 0.0
    if not total > 0:
        return 0.0, 0.0
    fine_mm = float(vector_length(update_mm - coarse)[0][inside].mean())
    return fine_mm / total, fine_mm


def refine_locally(fixed: torch.Tensor, moving: torch.Tensor, geometry: Geometry, flow: torch.Tensor,
                   settings: RefineSettings, refined: dict, steps: int, min_gain: float,
                   factors: tuple[float, ...], fine: Optional[float] = None, min_fine: float = float("inf"),
                   fine_mm: Optional[float] = None, min_fine_mm: float = 0.0, **kwargs) -> tuple[torch.Tensor, dict]:
    """Continue a refinement with less smoothing when it showed motion finer than its own.

    The refinement's gain (``loss_first - loss_last`` of ``refined``, less the step its switch to the
    refined image made in the loss, ``loss_at_switch``) is what the MIND levels left:
    about 0.006-0.013 on the brain benchmark cases (control values 40 mm apart), 0.04-0.055 where the
    motion is more local (control values 15-20 mm apart) or larger (8 mm). Only above ``min_gain``
    does the refinement go on, ``steps`` steps per factor, with its smoothing scaled as a user's
    regularization (``sigma_update * sqrt(f)``, ``sigma_field * f``). Less smoothing on smooth motion
    fits noise and intensity changes instead (brain benchmark seeds 2-9: 0.04-0.12 mm worse): hence
    the gate. Small local motion (1-2 mm, control values 15-20 mm apart) gains little in absolute
    terms, but most of what the refinement corrected there is finer than the MIND levels' smoothing:
    the refinement also goes on when that share of its update (``fine``, :func:`fine_share`) reaches
    ``min_fine``.

    Args:
        fixed, moving, geometry, flow, settings: as :func:`refine_field`, ``flow`` the result of that refinement
            (normalised gradient fields: the engine passes an infinite ``min_gain``, their gain does not tell local
            motion from smooth; ``refine_settings.LOCAL_REFINE_MIN_FINE_*_TWO_CONTRASTS``).
        refined: the info :func:`refine_field` returned for it.
        steps: most steps per factor (0: never).
        min_gain: the local NCC gain of the first refinement above which it continues.
        factors: regularization factors of the stages, in order (each relative to ``settings``).
        fine: the share of the refinement's update finer than the MIND levels' smoothing (None: not
            measured); min_fine: the share from which it continues.
        fine_mm, min_fine_mm: that finer part's mean length (mm; None: not measured) and the least it must reach
            for the share to count (0: any).
        **kwargs: passed to :func:`refine_field` (mask, landmarks, noise, should_stop).

    Returns:
        (flow, info: applied, the gain and threshold, and per stage its factor, steps and losses).
    """
    gain = float(refined["loss_first"]) - float(refined["loss_last"])
    if refined.get("loss_at_switch"):  # the descents only: not the step in the loss that the sharper sampling made
        gain -= float(refined["loss_at_switch"][0]) - float(refined["loss_at_switch"][1])
    info: dict = {"applied": False, "refinement_gain": round(gain, 6),
                  "min_gain": min_gain if np.isfinite(min_gain) else None,  # None: not gated by the gain
                  "fine_share": None if fine is None else round(fine, 4), "min_fine_share": min_fine,
                  "fine_mm": None if fine_mm is None else round(fine_mm, 4), "min_fine_mm": min_fine_mm}
    long_enough = fine_mm is None or fine_mm >= min_fine_mm
    finer = gain > min_gain or (fine is not None and fine >= min_fine and long_enough)
    if steps <= 0:
        info["reason"] = ("no continuation steps (the quality has none, or a regularization above 1 asked for a "
                          "smoother field)")
    elif not finer:
        info["reason"] = "neither the refinement's gain nor its update's fine share shows motion finer than its smoothing"
    if "reason" in info:
        return flow, info
    info["reason"] = ("the refinement's gain" if gain > min_gain else "the fine share of the refinement's update") \
        + " shows motion finer than the MIND levels' smoothing"
    info["stages"] = []
    for factor in factors:
        stage = replace(settings, steps=int(steps), sigma_update=settings.sigma_update * float(np.sqrt(factor)),
                        sigma_field=settings.sigma_field * factor)
        flow, stage_info = refine_field(fixed, moving, geometry, flow, stage, **kwargs)
        info["stages"].append({"factor": factor, "steps_accepted": stage_info["steps_accepted"],
                               "steps_rejected": stage_info["steps_rejected"],
                               "loss_first": stage_info["loss_first"], "loss_last": stage_info["loss_last"],
                               "seconds": stage_info["seconds"]})
    info["applied"] = True
    return flow, info
