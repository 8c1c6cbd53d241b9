r"""The refinement stage of ``register()``: the images it compares (one MRI contrast: bias field and
intensity curves taken out), the refinement with its continuation, the judge of the optimisation's
coarse start, which compares the images the same way, and the check of the optimisation's field by a
measure it did not optimise. Working-grid tensors in and out."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from ..losses.functional import local_ncc
from ..metrics.similarity import nmi
from ..spatial.bspline import refined
from ..spatial.filters import gaussian_smooth, local_gain_factor, local_gain_normalised, noise_std, smoothing_edges
from ..spatial.flow import identity_grid
from ..spatial.geometry import Geometry
from ..spatial.intensity_map import midway_knots, piecewise_linear
from ..spatial.resolution import voxel_volume_ratio
from ..spatial.sliding import SlidingRegion
from ..spatial.transforms import resize_flow
from ..typing import StopCallback
from .local_change import not_looked_for
from .local_stage import follow_local_change, refine_local_region
from .modality import midway_intensities, tissue_in_both
from .optimizer import sample_through
from .refine import RefineSettings, fine_part, refine_field, refine_locally
from .refine_settings import (LOCAL_REFINE_MIN_FINE_MM_TWO_CONTRASTS, LOCAL_REFINE_MIN_FINE_SHARE_TWO_CONTRASTS,
                              LOCAL_REFINE_STEPS_FACTOR, NGF_EDGE_NOISE_SHARE, OPTIMISATION_MIN_NMI_GAIN,
                              START_MAP_MIN_CORRELATION, START_MAP_SMOOTH_VOXELS)
from .sliding import REFINE_LEAK
from .settings import (CUT_FACE_INTENSITY, CUT_FACE_TISSUE_SHARE, LOCAL_REFINE_FACTORS, LOCAL_REFINE_FINE_SIGMA_MM, LOCAL_REFINE_MIN_FINE_SHARE,
                       LOCAL_REFINE_MIN_GAIN, REFINE_GAIN_FLOOR, REFINE_GAIN_SIGMA_MM,
                       REFINE_INTENSITY_KNOTS, REFINE_INTENSITY_MAX_VOXEL_RATIO, REFINE_STEPS_FACTOR, TISSUE_THRESHOLD, QualitySettings)

if TYPE_CHECKING:
    from .stages import Stages

__all__ = ["one_contrast_images", "refinement", "ngf_edge", "coarse_start_judge", "nmi_check",
           "checked_optimisation"]


def one_contrast_images(fixed_w: torch.Tensor, moving_w: torch.Tensor, flow: torch.Tensor,
                        mask_w: Optional[torch.Tensor], work: Geometry, fixed_geometry: Geometry,
                        moving_geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """The local-NCC refinement's images for MRI of one contrast.

    Each image is divided by its own local mean (``REFINE_GAIN_SIGMA_MM``: a bias field); then, unless
    one image's voxels are more than ``REFINE_INTENSITY_MAX_VOXEL_RATIO`` times the other's, both are
    put half-way between their intensity curves (``modality.midway_intensities``: a gamma between the
    scans).

    Args:
        fixed_w, moving_w: (1, 1, Z, Y, X) normalised intensities on the working grid ``work``.
        flow: (1, 3, Z, Y, X) the optimisation's field (normalised), which aligns them for the map.
        mask_w: optional (1, 1, Z, Y, X) bool region of interest.
        work: the working grid.
        fixed_geometry, moving_geometry: the images' own grids (their resolution).

    Returns:
        (fixed, moving, the factor by which the moving image's noise was scaled at each voxel,
        {"gain_normalised_sigma_mm", "intensity_map"} for the refinement's metrics).
    """
    sigma = _gain_sigma_voxels(work)
    fixed_r = local_gain_normalised(fixed_w, sigma, REFINE_GAIN_FLOOR)
    noise_scale = local_gain_factor(moving_w, sigma, REFINE_GAIN_FLOOR)
    moving_r = moving_w * noise_scale
    blurrier = _blurrier(fixed_geometry, moving_geometry, work)
    if blurrier is None:
        fixed_r, moving_r, slope, intensity_map = midway_intensities(fixed_r, moving_r, flow, mask_w)
        if slope is not None:
            noise_scale.mul_(slope)
    else:
        intensity_map = {"applied": False, "reason": blurrier}
    return fixed_r, moving_r, noise_scale, {"gain_normalised_sigma_mm": REFINE_GAIN_SIGMA_MM,
                                            "intensity_map": intensity_map}


def _blurrier(fixed_geometry: Geometry, moving_geometry: Geometry, work: Geometry) -> Optional[str]:
    """Why the intensity maps are left out (one image's voxels more than ``REFINE_INTENSITY_MAX_VOXEL_RATIO`` times
    the other's, as seen on the working grid), or None."""
    ratio = voxel_volume_ratio(fixed_geometry, moving_geometry, float(work.spacing.min()))
    if ratio <= REFINE_INTENSITY_MAX_VOXEL_RATIO:
        return None
    return (f"one image's voxels are {ratio:.1f} times the other's: a blurrier image's intensities are not matched "
            "by quantiles")


def start_intensities(fixed_w: torch.Tensor, moving_w: torch.Tensor, region: Optional[torch.Tensor], work: Geometry,
                      fixed_geometry: Geometry, moving_geometry: Geometry,
                      ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Two images of one (non-CT) contrast put half-way between their intensity curves before the optimisation.

    The refinement maps the two aligned images so (:func:`one_contrast_images`), but the MIND optimisation before it
    saw them as given, and a curve between the scans pulled it off: the brain benchmark case with its moving image
    through a sigmoid ended at 1.09 mm after the MIND levels (in its own intensities 0.50) and at 0.65 after the
    refinement (0.18). Here the quantiles of both images where both show tissue at the start alignment (above
    ``TISSUE_THRESHOLD`` of their own 99th percentile, inside ``region``) give the map
    (``spatial.intensity_map.midway_knots``, ``REFINE_INTENSITY_KNOTS`` levels); counting the background too
    stretched a dark-compressed image's noise (a moving image through gamma 2, 128 levels: 16.9 mm). Left out where
    one image's voxels are more than ``REFINE_INTENSITY_MAX_VOXEL_RATIO`` times the other's (a blurrier image's
    intensities are not matched by quantiles), and where the two, smoothed, correlate less than
    ``START_MAP_MIN_CORRELATION`` over those voxels (a bias field, tissues in another order: there the whole image's
    quantiles mislead).
    Measured in ``docs/benchmarks/wave25-2026-12-03.md``.

    Args:
        fixed_w, moving_w: (1, 1, Z, Y, X) normalised intensities on the working grid ``work`` (the moving one
            pre-aligned).
        region: optional (1, 1, Z, Y, X) bool, the voxels to count (the mask and the moving image's field of view).
        work: the working grid; fixed_geometry, moving_geometry: the images' own grids (their resolution).

    Returns:
        (fixed, moving, info: {"applied", "correlation" where measured, and "knots" / "largest_quantile_gap" or
        "reason"}).
    """
    blurrier = _blurrier(fixed_geometry, moving_geometry, work)
    if blurrier is not None:
        return fixed_w, moving_w, {"applied": False, "reason": blurrier}
    tissue = tissue_in_both(fixed_w, moving_w, region)
    knots = midway_knots(fixed_w, moving_w, tissue, REFINE_INTENSITY_KNOTS)
    if knots is None:
        return fixed_w, moving_w, {"applied": False, "reason": "too few voxels show tissue in both images, or their "
                                                               "intensities have no range there"}
    fixed_knots, moving_knots, midway = knots
    gap = float((fixed_knots - moving_knots).abs().max() / midway[-1])
    # smoothed first (START_MAP_SMOOTH_VOXELS): the start's misalignment decorrelates fine detail, a bias field does not
    pair = torch.stack([gaussian_smooth(fixed_w, START_MAP_SMOOTH_VOXELS)[tissue],
                        gaussian_smooth(moving_w, START_MAP_SMOOTH_VOXELS)[tissue]]).double()
    correlation = float(torch.corrcoef(pair[:, :: max(1, pair.shape[1] // 1_000_000)])[0, 1])
    if not correlation >= START_MAP_MIN_CORRELATION:
        return fixed_w, moving_w, {"applied": False, "correlation": round(correlation, 3),
                                   "reason": f"the images, smoothed, correlate {correlation:.2f} where both show tissue (< "
                                             f"{START_MAP_MIN_CORRELATION}): a bias field or tissues in another order, "
                                             "not a curve; the refinement maps them once aligned"}
    return (piecewise_linear(fixed_w, fixed_knots, midway)[0], piecewise_linear(moving_w, moving_knots, midway)[0],
            {"applied": True, "knots": len(midway), "largest_quantile_gap": round(gap, 4),
             "correlation": round(correlation, 3)})


def refinement(fixed_w: torch.Tensor, moving_w: torch.Tensor, flow: torch.Tensor, work: Geometry,
               quality: QualitySettings, similarity: str, contrasts: str, regularization: float, mri: bool,
               mask_w: Optional[torch.Tensor], fixed_geometry: Geometry, moving_geometry: Geometry,
               points: tuple[Optional[np.ndarray], Optional[np.ndarray]], stages: "Stages",
               should_stop: Optional[StopCallback], sliding: Optional[SlidingRegion] = None,
               local_region: Optional[np.ndarray] = None, find_change: bool = True) -> tuple[torch.Tensor, dict]:
    """The sub-voxel refinement after the optimisation (``refine.refine_field``), then its continuation
    with less smoothing where it found motion finer than its own (``refine.refine_locally``).

    Args:
        fixed_w, moving_w, flow, work: the working images (moving pre-aligned), the optimisation's
            field and the working grid.
        quality: the quality's settings (steps, continuation steps).
        similarity: "lncc" or "ngf"; contrasts: "one contrast" or "two contrasts".
        regularization: the user's; it scales the smoothing as the optimisation's, and above 1 turns
            the continuation off.
        mri: the images are not CT: local NCC first takes out a bias field and a gamma
            (:func:`one_contrast_images`).
        mask_w: optional (1, 1, Z, Y, X) bool region of interest.
        fixed_geometry, moving_geometry: the images' own grids.
        points: (fixed, pre-aligned moving) landmark pairs, or (None, None).
        stages: the pipeline's progress (this stage reports from 0.8 to 0.9).
        should_stop: returns True to cancel.
        sliding: optional region along whose boundary the field may slide (``engine.sliding``; the refinement
            leaks ``sliding.REFINE_LEAK`` of the other side into each side's smoothing).
        local_region: optional (Z, Y, X) bool on ``fixed_geometry``: where the anatomy changed locally
            (:func:`refine_local_region`).
        find_change: without ``local_region``, a pair of one contrast that matches but for a few compact places before
            any deformation has them found (``local_change.find_local_change``) and refined so; not above a
            regularization of 1.

    Returns:
        (refined flow, the refinement's metrics).
    """
    base = RefineSettings()
    edge = (ngf_edge(fixed_w, moving_w, work, base.ngf_eps) if similarity == "ngf" and contrasts == "one contrast"
            else {"eps_per_mm": base.ngf_eps})
    # the faces judged on the working image, as the optimisation did (the gain-normalised one lifts a background)
    settings = RefineSettings(steps=quality.refine_steps * REFINE_STEPS_FACTOR[contrasts], similarity=similarity,
                              sigma_update=base.sigma_update * float(np.sqrt(regularization)),
                              sigma_field=base.sigma_field * regularization,
                              edges=smoothing_edges(fixed_w, CUT_FACE_INTENSITY, CUT_FACE_TISSUE_SHARE),
                              sliding_leak=REFINE_LEAK, ngf_eps=edge["eps_per_mm"])
    fixed_r, moving_r, noise_scale, intensity_info = fixed_w, moving_w, None, {
        "gain_normalised_sigma_mm": None, "intensity_map": None}
    if similarity == "lncc" and mri:
        fixed_r, moving_r, noise_scale, intensity_info = one_contrast_images(
            fixed_w, moving_w, flow, mask_w, work, fixed_geometry, moving_geometry)
    # the moving image refined once for the refinement and each stage of its continuation
    common = dict(mask=mask_w, fixed_points=points[0], moving_points=points[1], should_stop=should_stop,
                  sliding=sliding,
                  noise_source=None if noise_scale is None else moving_w, noise_scale=noise_scale,
                  moving_refined=refined(moving_r) if settings.sample_refined_from < 1.0 else None)
    start = flow
    flow, info = refine_field(fixed_r, moving_r, work, flow, settings, progress=stages.sub(0.8, 0.88), **common)
    tissue = fixed_w > TISSUE_THRESHOLD
    if mask_w is not None:
        tissue &= mask_w.bool()
    # local NCC goes on by its gain or its update's fine share, two contrasts' edge directions by the share alone
    # and its length (LOCAL_REFINE_MIN_FINE_*_TWO_CONTRASTS), the lung CT's edge directions not at all
    gates = ((LOCAL_REFINE_MIN_GAIN, LOCAL_REFINE_MIN_FINE_SHARE, 0.0) if similarity == "lncc" else
             (float("inf"), LOCAL_REFINE_MIN_FINE_SHARE_TWO_CONTRASTS, LOCAL_REFINE_MIN_FINE_MM_TWO_CONTRASTS)
             if contrasts == "two contrasts" else None)
    if gates is None:
        info["local_continuation"] = {"applied": False,
                                      "reason": "edge directions of one contrast (CT): not continued"}
    else:
        fine, fine_mm = fine_part(flow - start, work, tissue, LOCAL_REFINE_FINE_SIGMA_MM)
        flow, info["local_continuation"] = refine_locally(
            fixed_r, moving_r, work, flow, settings, info,
            int(quality.local_steps * LOCAL_REFINE_STEPS_FACTOR[contrasts]) if regularization <= 1 else 0,
            gates[0], LOCAL_REFINE_FACTORS, fine=fine, min_fine=gates[1], fine_mm=fine_mm, min_fine_mm=gates[2],
            progress=stages.sub(0.88, 0.9), **common)
    if local_region is not None:
        flow, info["local_region"] = refine_local_region(fixed_r, moving_r, work, flow, settings, regularization,
                                                         local_region, fixed_geometry,
                                                         progress=stages.sub(0.895, 0.9), **common)
    elif find_change and contrasts == "one contrast" and regularization <= 1:
        flow, info["local_change"], info["warnings"] = follow_local_change(
            fixed_r, moving_r, flow, tissue, work, settings, regularization,
            not_looked_for(_blurrier(fixed_geometry, moving_geometry, work)), not mri,
            progress=stages.sub(0.895, 0.9), **common)
    info["contrasts"] = contrasts
    if similarity == "ngf":
        info["ngf_edge"] = edge
    info.update(intensity_info)
    return flow, info


def ngf_edge(fixed_w: torch.Tensor, moving_w: torch.Tensor, work: Geometry, floor: float) -> dict:
    """The edge parameter of normalised gradient fields for one contrast: ``NGF_EDGE_NOISE_SHARE`` of the gradient
    magnitude that the noisier working image's white noise gives (``spatial.filters.noise_std``; central differences
    of noise ``sigma`` have variance ``sigma^2 / (2 h^2)`` along an axis of spacing ``h``), at least ``floor``.

    Returns:
        ``eps_per_mm`` (normalised intensity per mm), ``noise_std`` (fixed, moving) and ``noise_gradient_per_mm``.
    """
    noise = (noise_std(fixed_w), noise_std(moving_w))
    gradient = max(noise) * float(np.sqrt(np.sum(0.5 / np.square(np.asarray(work.spacing, dtype=np.float64)))))
    return {"eps_per_mm": round(max(floor, NGF_EDGE_NOISE_SHARE * gradient), 5),
            "noise_std": [round(v, 5) for v in noise], "noise_gradient_per_mm": round(gradient, 5)}


def coarse_start_judge(fixed_w: torch.Tensor, moving_w: torch.Tensor, work: Geometry,
                       mask_w: Optional[torch.Tensor], ct: bool):
    """The loss by which the optimisation's coarse start is judged (``OptimizerSettings.coarse_judge``).

    Local NCC (squared, so either sign of contrast) of the working images in 5-voxel windows, each
    image first divided by its own 6 mm local mean unless CT: a strong bias field with a gamma can make
    the MIND-SSC levels invent 20-30 mm of motion at a quarter resolution and lower their own loss by
    12-25 % with it, while the images, looked at this way, match worse.

    Returns:
        loss(flow_norm) -> float, for a normalised flow on any level grid of ``work``.
    """
    images: list[torch.Tensor] = []  # made at the first call: most registrations never judge a start

    def loss(flow: torch.Tensor) -> float:
        if not images:
            sigma = _gain_sigma_voxels(work)
            images.extend((fixed_w, moving_w) if ct else
                          (local_gain_normalised(image, sigma, REFINE_GAIN_FLOOR) for image in (fixed_w, moving_w)))
            images.append(identity_grid(work.shape, moving_w))
        fixed_j, moving_j, base = images
        warped = sample_through(moving_j, resize_flow(flow, work.shape), base)
        return float(local_ncc(fixed_j, warped, window=5, mask=mask_w))

    return loss


def nmi_check(fixed_w: torch.Tensor, moving_w: torch.Tensor, start: Optional[torch.Tensor], flow: torch.Tensor,
              mask_w: Optional[torch.Tensor]) -> dict:
    """Whether ``flow`` keeps the images' normalised mutual information against ``start`` (``OPTIMISATION_MIN_NMI_GAIN``).

    MIND-SSC and local NCC divide every patch by its own variance: where one image is flat but for noise and the
    other textured (lungs in an MR against a CT) they compare noise with structure and reward moving tissue that
    should stay. Mutual information of the intensities (32 bins, every other voxel where either image shows
    tissue, inside the mask) judges such a field instead.

    Args:
        fixed_w, moving_w: (1, 1, Z, Y, X) working images.
        start: the flow judged against (None: the identity); flow: the flow judged; both normalised.
        mask_w: optional (1, 1, Z, Y, X) mask.

    Returns:
        {"nmi_start": at ``start``, "nmi_after": at ``flow``, "relative_gain": their difference over
        ``nmi_start - 1``, "kept"} (only "kept" and "reason" when no voxel shows tissue).
    """
    every = (0, 0, slice(None, None, 2), slice(None, None, 2), slice(None, None, 2))  # every other voxel: 1/8 the cost
    base = identity_grid(tuple(flow.shape[2:]), flow)[:, ::2, ::2, ::2]
    warped = [moving_w[every] if f is None else sample_through(moving_w, f[:, :, ::2, ::2, ::2], base)[0, 0]
              for f in (start, flow)]
    fixed = fixed_w[every]
    region = (fixed > TISSUE_THRESHOLD) | (warped[0] > TISSUE_THRESHOLD)
    if mask_w is not None:
        region &= mask_w[every].bool()
    if not bool(region.any()):  # no tissue to judge by
        return {"kept": True, "reason": "no tissue in the working images"}
    before, after = (nmi(fixed, image, region) for image in warped)
    gain = (after - before) / max(before - 1.0, 1e-6)
    return {"nmi_start": round(before, 5), "nmi_after": round(after, 5), "relative_gain": round(gain, 5),
            "kept": not gain < OPTIMISATION_MIN_NMI_GAIN}  # NaN (a constant image): nothing to judge by, kept


def checked_optimisation(fixed_w: torch.Tensor, moving_w: torch.Tensor, start: Optional[torch.Tensor],
                         flow: torch.Tensor, mask_w: Optional[torch.Tensor]
                         ) -> tuple[Optional[torch.Tensor], dict, Optional[str]]:
    """The MIND optimisation's field, or its start when the field lowered the images' mutual information
    (:func:`nmi_check`).

    Returns:
        (the flow kept: ``flow`` or ``start``, :func:`nmi_check`'s figures, a warning when the start was kept, else
        None).
    """
    info = nmi_check(fixed_w, moving_w, start, flow, mask_w)
    if info["kept"]:
        return flow, info, None
    return start, info, (
        f"the MIND optimisation lowered the images' normalised mutual information ({info['nmi_start']:.3f} -> "
        f"{info['nmi_after']:.3f} on the working grid), so its field was left out and the refinement started from " + (
            "the pre-alignment" if start is None else "the network's prediction") + ": structures that one image "
        "shows and the other does not (lungs without texture in an MR, a lesion) can pull a registration off; "
        "compare the warped image with the fixed one, or give landmark pairs")


def _gain_sigma_voxels(work: Geometry) -> list[float]:
    """``REFINE_GAIN_SIGMA_MM`` in working voxels (z, y, x): the scale a bias field is divided out at."""
    return [REFINE_GAIN_SIGMA_MM / float(s) for s in work.spacing[::-1]]
