r"""``register()``: the one registration pipeline every front end calls.

One path, each stage a function passing :class:`Image`/:class:`Transform` objects along::

    check inputs -> normalise -> pre-align (SimpleITK affine, or the user's initial transform)
    -> resample once onto the working grid (the sharper image blurred to the other's resolution when
       they differ: thick slices) -> network prediction -> instance optimisation (MIND)
    -> refinement at full working resolution (local NCC on gain-normalised, intensity-matched MRI;
       NGF for two contrasts and lung CT)
    -> Transform(fixed grid, field, affine) -> warped, before, Jacobian, inverse, metrics

The moving image is resampled exactly once per purpose: onto the working grid (through the
pre-alignment), onto the fixed grid through the result (``warped``) and through the identity
(``before``, returned so that front ends never resample again).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..metrics import jacobian_stats
from ..spatial.affine import AffineMap
from ..spatial.image import Image
from ..spatial.padding import box_geometry
from ..spatial.transform import Transform
from ..spatial.warp import resample
from ..typing import DeviceLike, ProgressCallback, StopCallback
from .api import RegistrationError, RegistrationResult
from .cpu_threads import ThreadBudget
from .device import release_freed_memory, resolve_device
from .hounsfield import hounsfield_pair, preset_reference, windowed_ct_hint
from .modality import contrasts_after_alignment, detect_preset, guess_multimodal
from .normalization import matched_top, normalized_pair
from .optimizer import optimize_field
from .optimizer_settings import OptimizerSettings
from .mirror import MIRRORED_WARNING, mirror_check
from .prealign import prealign
from .results import (ct_padding, inverse_and_consistency, landmark_figures, similarity_region, similarity_warnings,
                      warped_and_before)
from .settings import (COARSE_MIN_LOSS_GAIN, COARSE_MORE_STEPS, LARGE_MOTION_MORE_STEPS, MIN_MOVING_OVERLAP,
                       PRESET_SETTINGS, PREALIGN_MAX_SCALE, PREALIGN_MIN_LOCAL_GAIN, PREALIGN_MIN_RELATIVE_GAIN,
                       PREALIGN_ROTATION_MIN_CUT, PREALIGN_ROTATION_MIN_GAIN, QUALITY_SETTINGS, REFINE_TWO_CONTRASTS)
from .refinement_stage import checked_optimisation, coarse_start_judge, refinement, start_intensities
from .sharpness import matched_sharpness
from .sliding import OPTIMIZER_LEAK, check_sliding, sliding_for
from .inputs import check_inputs
from .masks import working_mask
from .prediction import load_network, load_residual_network, predicted_start
from .stages import (Stages, estimate_memory_gb, intersubject_hint, matched_resolution, moving_field_of_view,
                     total_field, without_padding, working_geometry)

__all__ = ["register"]

#: similarity registry name -> the optimiser's feature kind (SSD on these features)
_OPTIMIZER_FEATURES = {"mind": "mind", "mse": "intensity"}


def register(fixed: Image, moving: Image, *, fixed_landmarks: Optional[np.ndarray] = None,
             moving_landmarks: Optional[np.ndarray] = None, fixed_mask: Optional[Image] = None,
             moving_mask: Optional[Image] = None, initial_transform: Optional[AffineMap] = None,
             preset: str = "auto", quality: str = "balanced", regularization: float = 1.0,
             device: DeviceLike = "auto", progress: Optional[ProgressCallback] = None,
             should_stop: Optional[StopCallback] = None, seed: int = 0, instance_optimization: bool = True,
             use_network: bool = True, weights: Optional[str | Path] = None, prealignment: Optional[str] = None,
             max_working_voxels: Optional[int] = None, multimodal: Optional[bool] = None,
             compute_inverse: bool = True, rigid_regions: Optional[Image] = None, local_region: Optional[Image] = None,
             landmarks_guide: bool = True, sliding: str = "auto", find_local_change: bool = True,
             plane: Any = None) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` (deformable, diffeomorphic).

    Args:
        fixed: the reference image (its grid is the output grid).
        moving: the image to deform.
        fixed_landmarks, moving_landmarks: optional (K, 3) LPS mm pairs (matched by order); they are
            reported as TRE and, unless ``landmarks_guide`` is False, pull the registration.
        fixed_mask: optional region of interest (> 0 inside) on any grid that covers the fixed image;
            mapped onto the fixed grid by physical position; similarity is measured inside it.
        moving_mask: optional region of interest of the moving image (any grid over the moving
            image); mapped into the fixed frame through the pre-alignment and combined with
            ``fixed_mask``.
        initial_transform: optional fixed -> moving :class:`AffineMap` (LPS mm, resampling
            convention): the pre-alignment starts from it and refines it (kept only when the fit and
            MIND-SSC say the refined one is better; ``prealignment="none"`` keeps it as given); the
            pre-alignment is composed into the result.
        preset: "auto", "lung-ct", "brain-mri" or "generic"; "auto" decides and says what it chose
            (``metrics["preset"]``, ``metrics["preset_reason"]``).
        quality: "instant" (the network alone), "fast", "balanced" or "best".
        regularization: smoothness multiplier: > 1 smoother, < 1 more local detail.
        device: "auto", "cpu" or "cuda" (a missing GPU falls back to the CPU with a warning).
        progress: progress(fraction in [0, 1], stage text); reaches 1.0 on success.
        should_stop: returns True to cancel; checked between stages and optimisation steps.
        seed: random seed (CPU results are repeatable).
        instance_optimization: run the test-time optimisation (False: network prediction only).
        use_network: use the AD-RegNet network when weights are available.
        weights: a weights file (default: the shipped weights).
        prealignment: "affine", "rigid" or "none" (default from the quality; "none" with an
            ``initial_transform``).
        max_working_voxels: cap on the working grid (default from the quality).
        multimodal: images of different contrasts; default: guessed (CT vs non-CT, or intensities that
            do not correlate where both images show tissue; engine/modality.py).
        compute_inverse: also compute the moving -> fixed field (``inverse_disp_mm``).
        rigid_regions: optional label map over the fixed image (any grid); inside each labelled
            region the motion is rigid (a tumour, an implant), smooth outside.
        local_region: optional mask over the fixed image (any grid) where the anatomy changed locally (a lesion grew
            or shrank): the refinement goes on there with less smoothing (``local_stage.refine_local_region``).
        find_local_change: without ``local_region``, find such changes in a pair that otherwise matches (``local_change``).
        landmarks_guide: the landmark pairs pull the registration (True) or are only measured (False:
            their TRE after is then an independent check of the registration, ``metrics["landmarks"]``).
        sliding: "auto" (the lung preset with a CT fixed image lets the lungs slide along the chest wall:
            ``engine.sliding``), "on" or "off" (``metrics["sliding"]`` says what ran).
        plane: set by ``engine.planar.in_plane`` for the slabs of two single slices (the field made planar).

    Returns:
        RegistrationResult on the fixed grid.

    Raises:
        RegistrationError / ImageError: bad input, with what is wrong and what to do.
        RegistrationCancelled: the user cancelled; nothing partial is returned.
    """
    stages = Stages(progress, should_stop)
    stages.report(0.0, "checking inputs")
    t_start = time.perf_counter()
    checked = check_inputs(fixed, moving, fixed_landmarks, moving_landmarks, fixed_mask, moving_mask,
                           initial_transform, rigid_regions, preset, quality, regularization, seed, multimodal,
                           dict(instance_optimization=instance_optimization, use_network=use_network,
                                compute_inverse=compute_inverse, landmarks_guide=landmarks_guide), local_region, plane)
    regularization, seed, warnings_ = checked.regularization, checked.seed, checked.warnings
    fixed_landmarks, moving_landmarks, mask_arr = checked.fixed_landmarks, checked.moving_landmarks, checked.mask
    rigid_arr, local_arr, overlap = checked.rigid, checked.local, checked.overlap
    check_sliding(sliding)
    has_landmarks = fixed_landmarks is not None
    # padding that cuts through anatomy (a scan put on a larger grid) is not matched; outputs keep the moving image
    moving_data, mask_arr, padding_info, padding_notes, region = without_padding(fixed, moving, mask_arr)
    warnings_ += padding_notes
    torch_device, device_warning = resolve_device(device)
    stages.threads = ThreadBudget(torch_device)  # fewer CPU threads while other programs keep the CPUs busy
    warnings_ += [device_warning] if device_warning else []
    q = QUALITY_SETTINGS[quality]
    instant = not q.levels
    if instant and not use_network:
        raise RegistrationError("quality 'instant' is the network's prediction alone; it cannot run without the "
                                "network (drop --no-network or choose fast/balanced/best)")
    model = residual_model = None
    if use_network:  # load (and check) the weights now: a bad file fails before minutes of work
        model, net_note = load_network(weights, torch_device)
        if net_note:
            if instant:
                raise RegistrationError(f"quality 'instant' needs network weights: {net_note}")
            warnings_.append(net_note)
        elif q.residual_pass:
            residual_model = load_residual_network(weights, torch_device)
    torch.manual_seed(seed)
    stages.done("validate")

    # ---- preset and normalisation
    # Hounsfield units: calibrated, air where known (a CT stored otherwise beside a CT is read back: hounsfield_pair)
    fixed_hu, moving_hu, fixed_ct, moving_ct, hounsfield = hounsfield_pair(fixed, moving_data)
    warnings_ += [hint for hint in [windowed_ct_hint(fixed_hu, moving_hu, fixed_ct, moving_ct, hounsfield)] if hint]
    preset, reason = (detect_preset(preset_reference(fixed_hu, fixed, moving_data, hounsfield), moving_hu)
                      if preset == "auto" else (preset, "chosen by the user"))
    p = PRESET_SETTINGS[preset]
    fixed_n, moving_n, normalization = normalized_pair(fixed_hu, moving_hu, p.modality, p.ct_window, mask_arr,
                                                       initial_transform)
    contrasts_guessed = multimodal is None
    if contrasts_guessed:
        multimodal, multimodal_reason = guess_multimodal(fixed_hu, moving_hu, fixed_n, moving_n,
                                                         start=initial_transform)
    else:
        multimodal_reason = "chosen by the user"
    stages.report(0.03, f"preset {preset}: pre-aligning")
    stages.done("normalize")

    # ---- pre-alignment
    # a user's start is refined like any other (kept only when the fit and MIND-SSC both say it helps)
    mode = prealignment or q.prealign
    fixed_mask_image = Image(mask_arr, fixed.geometry, "fixed mask") if mask_arr is not None else None
    # a CT's padding outside its circular field of view, which may cut the body (a cone-beam CT), holds no data:
    # left out of the fit and, below, of the similarity
    no_data = (ct_padding(fixed), ct_padding(moving_data))
    fit_mask = fixed_mask_image if no_data[0] is None else Image(
        ~no_data[0] if mask_arr is None else (mask_arr & ~no_data[0]), fixed.geometry, "fixed data")
    affine, prealign_info = prealign(fixed_n, moving_n, mode=mode, fixed_mask=fit_mask,
                                     moving_mask=None if no_data[1] is None else Image(~no_data[1], moving_data.geometry),
                                     iterations=q.prealign_iterations, same_modality=not multimodal, seed=seed,
                                     should_stop=should_stop, initial=initial_transform,
                                     min_relative_improvement=PREALIGN_MIN_RELATIVE_GAIN,
                                     min_local_improvement=PREALIGN_MIN_LOCAL_GAIN if p.prealign_local_check
                                     else float("-inf"), spacing_mm=q.prealign_spacing_mm,
                                     max_scale=PREALIGN_MAX_SCALE, rotation_min_gain=PREALIGN_ROTATION_MIN_GAIN,
                                     rotation_min_cut=PREALIGN_ROTATION_MIN_CUT)
    if mode != "none" and initial_transform is None:  # a header that lost a flip: reported, never undone
        prealign_info["mirror_check"] = mirrored = mirror_check(fixed_n, moving_n, affine, not multimodal, seed)
        warnings_ += [MIRRORED_WARNING.format(**mirrored)] if mirrored["mirrored"] else []
    hint = intersubject_hint(preset, regularization, affine, prealign_info.get("kept"))
    warnings_ += [hint] if hint else []
    stages.report(0.15, "resampling to the working grid")
    stages.done("prealign")

    # ---- working grid: each image resampled once
    work, note = working_geometry(fixed.geometry if region is None else box_geometry(fixed.geometry, region),
                                  q.working_spacing_mm, max_working_voxels or q.max_working_voxels)
    if note:
        warnings_.append(note)
    # refined first (spatial.warp.refined_axes): linear interpolation blurs an image whose grid lies half a
    # voxel off the working grid most, one on it not at all, and the similarity then matches the blur
    fixed_w_np = resample(fixed_n, work, mode="refined").array
    moving_w_img, moving_inside = resample(moving_n, work, affine=affine, return_inside=True, mode="refined")
    moving_w_np = moving_w_img.array
    if not multimodal and "moving_saturated_share" in normalization:  # clipped: the fixed top cut alike (one contrast)
        fixed_w_np, normalization["fixed_top_cut"] = matched_top(fixed_w_np, fixed_n, moving_n, work, affine)
    moving_has_data = float(moving_n.array.max()) > 0.01
    del fixed_n, moving_n, fixed_hu, moving_hu  # full-resolution copies: not needed past the working grid (memory on large inputs)
    # the usual advice is an initial alignment: when one was given, it is what put the images apart
    check_given = ("; check its direction: it must map fixed to moving points (ITK's convention, as ANTs, elastix and "
                   "3D Slicer write it; invert a moving -> fixed one) and belong to these two images")
    if float(np.count_nonzero(moving_w_np > 0.01)) < MIN_MOVING_OVERLAP * moving_w_np.size and moving_has_data:
        raise RegistrationError(
            (f"the given initial transform leaves the images without overlap (seen through it, the moving image "
             f"covers less than {100 * MIN_MOVING_OVERLAP:.0f}% of the fixed image){check_given}")
            if initial_transform is not None else
            "the moving image does not overlap the fixed image after pre-alignment; check that both scans show "
            "the same anatomy, or give landmark pairs / an initial alignment")
    fixed_w = torch.from_numpy(fixed_w_np)[None, None].to(torch_device)
    moving_w = torch.from_numpy(moving_w_np)[None, None].to(torch_device)
    # thick slices against thin ones: the sharper image blurred to the other's resolution first
    fixed_w, moving_w, resolution_info = matched_resolution(fixed_w, moving_w, fixed.geometry, moving.geometry,
                                                            work, affine)
    mask_w_np = working_mask(fixed_mask_image, moving_mask, work, affine, fixed_given=fixed_mask is not None)
    if any(air is not None for air in no_data):  # the padding seen from the working grid, either image's
        for air, grid, through in ((no_data[0], fixed.geometry, None), (no_data[1], moving_data.geometry, affine)):
            if air is not None:
                moving_inside &= resample(Image(air.astype(np.float32), grid), work, affine=through).array < 0.01
        field_of_view = moving_field_of_view(moving_inside, np.maximum(fixed_w_np, moving_w_np))
    else:
        field_of_view = moving_field_of_view(moving_inside, fixed_w_np)  # None: nothing to leave out
    fixed_padding, data_padding = no_data  # kept for the similarity figures (one byte a voxel of each grid)
    del moving_w_img, moving_inside, no_data, fit_mask  # full-resolution masks: not needed past here
    if field_of_view is not None:
        if not field_of_view.any():
            raise RegistrationError(
                f"the given initial transform leaves the images without overlap beyond the moving image's edges"
                f"{check_given}" if initial_transform is not None else
                "the moving image does not cover the fixed image after pre-alignment beyond its "
                "edges; check that both scans show the same anatomy, or give an initial alignment")
        mask_w_np = field_of_view if mask_w_np is None else (mask_w_np & field_of_view)
        if not mask_w_np.any():
            raise RegistrationError("the fixed mask lies where the moving image has no data; check the mask")
    mask_w = None if mask_w_np is None else torch.from_numpy(mask_w_np)[None, None].to(torch_device)
    # one blurrier than the other on the same voxel size (resampled, smoother kernel): measured from content
    fixed_w, moving_w, sharpness_info = matched_sharpness(fixed_w, moving_w, mask_w, not multimodal,
                                                          resolution_info["widest_blur_voxels"])
    if not multimodal and not (fixed_ct or moving_ct):  # one contrast: a curve between the scans undone first
        fixed_w, moving_w, normalization["start_intensity_map"] = start_intensities(fixed_w, moving_w, mask_w, work,
                                                                                    fixed.geometry, moving.geometry)
    slide, sliding_info = (sliding_for(sliding, preset, fixed_ct, fixed_w, p.ct_window, work) if instance_optimization
                           and not instant else (None, {"applied": False, "reason": "no instance optimisation"}))
    stages.done("resample")

    # ---- network (every quality keeps the prediction only where its checks pass: identical images get none)
    flow, network_info = None, {"used": False}
    if model is not None:
        stages.report(0.2, "AD-RegNet prediction")
        flow, network_info, note = predicted_start((model, residual_model), fixed_w, moving_w, mask_w,
                                                   (fixed_ct, moving_ct), p.ct_window, q, torch_device,
                                                   instant or not instance_optimization, bool(multimodal))
        warnings_ += [note] if note else []
    stages.done("network")

    # ---- instance optimisation
    io_info = None
    # the pairs pull the optimisation and the refinement; the network's prediction alone does not take them
    guide = has_landmarks and bool(landmarks_guide) and instance_optimization and not instant
    if has_landmarks and landmarks_guide and not guide:
        warnings_.append("the landmark pairs were only measured: " + ("--quality instant" if instant else
                         "a run without instance optimisation") + " is the network's prediction alone, which "
                         "does not take them, so their TRE after is an independent check")
    fixed_pts = fixed_landmarks if guide else None
    moving_pts_w = affine.inverse_apply(moving_landmarks) if guide else None  # pre-aligned space
    if instance_optimization and not instant:
        features = "mind" if multimodal else _OPTIMIZER_FEATURES[p.similarity]
        settings = OptimizerSettings(
            levels=p.coarse_levels + q.levels, step_voxels=q.step_voxels,
            sigma_update=q.sigma_update * float(np.sqrt(regularization)),
            sigma_field=q.sigma_field * regularization, features=features, mind_var_floor=q.mind_var_floor,
            landmark_fraction=q.landmark_fraction, coarse_start=p.coarse_start, coarse_keep_mm=p.coarse_keep_mm,
            coarse_min_gain=COARSE_MIN_LOSS_GAIN, coarse_more_steps=COARSE_MORE_STEPS,
            large_motion_more_steps=LARGE_MOTION_MORE_STEPS, sliding_leak=OPTIMIZER_LEAK,
            coarse_judge=coarse_start_judge(fixed_w, moving_w, work, mask_w, fixed_ct or moving_ct))
        start = flow
        flow, io_info = optimize_field(fixed_w, moving_w, work, settings, init_flow_norm=flow,
                                       fixed_points=fixed_pts, moving_points=moving_pts_w, mask=mask_w,
                                       progress=stages.sub(0.25, 0.8 if q.refine_steps > 0 else 0.9),
                                       should_stop=should_stop, sliding=slide)
        if fixed_pts is None:  # landmark pairs that guided it outweigh any image measure
            flow, io_info["nmi_check"], note = checked_optimisation(fixed_w, moving_w, start, flow, mask_w)
            warnings_ += [note] if note else []
    if flow is None:
        flow = torch.zeros((1, 3, *work.shape), dtype=fixed_w.dtype, device=torch_device)
    stages.done("optimize")

    # ---- sub-voxel refinement (local NCC, or edge directions for two contrasts and lung CT)
    refine_info: Optional[dict] = None
    if instance_optimization and not instant and q.refine_steps > 0:
        two_contrasts, contrast_check = bool(multimodal), None
        by_correlation = not (fixed_ct or moving_ct)  # CT against another modality stays two
        if contrasts_guessed and p.refine_similarity == "lncc" and (by_correlation or not multimodal):
            # aligned now: tissues whose brightness order differs show as inverted edges, and one
            # contrast the start test missed (strong bias, misalignment) keeps every edge's sign
            two_contrasts, contrast_check = contrasts_after_alignment(fixed_w, moving_w, flow, mask_w,
                                                                      guessed_two=bool(multimodal))
            if two_contrasts != bool(multimodal):  # what the rest of the result reports (NCC or NMI) follows
                multimodal, multimodal_reason = two_contrasts, f"{multimodal_reason}; {contrast_check['decision']}"
        flow, refine_info = refinement(
            fixed_w, moving_w, flow, work, q, REFINE_TWO_CONTRASTS if two_contrasts else p.refine_similarity,
            "two contrasts" if two_contrasts else "one contrast", regularization,
            not (fixed_ct or moving_ct), mask_w, fixed.geometry, moving.geometry,
            (fixed_pts, moving_pts_w), stages, should_stop, slide, local_arr, find_local_change)
        if contrast_check is not None:
            refine_info["contrast_check"] = contrast_check
        warnings_ += refine_info.pop("warnings", [])
        stages.done("refine")

    # ---- the transform and everything seen through it, on the fixed grid
    stages.report(0.9, "building the full-resolution field")
    disp = total_field(flow, fixed.geometry, region, affine, rigid_arr, plane)
    result_transform = Transform(fixed.geometry, disp)
    stages.check()
    warped, before, similarity_before, similarity_after, padding_left_out = warped_and_before(
        fixed, moving, moving_data, result_transform, mask_arr, fixed_padding, data_padding)
    warnings_ += similarity_warnings(similarity_before, similarity_after, bool(multimodal))
    stages.check()
    det = result_transform.jacobian()
    release_freed_memory()  # slab temporaries: give the heap back before the inverse's full-size field
    stages.done("outputs")
    inverse = None
    if compute_inverse:
        inverse = inverse_and_consistency(disp, fixed.geometry, moving, moving_mask, float(work.spacing.min()))
        stages.done("inverse")

    # ---- metrics: similarity where both images have data
    metrics: dict[str, Any] = {
        "preset": preset,
        "preset_reason": reason,
        "quality": quality,
        "regularization": regularization,
        "device": str(torch_device),
        "cpu_threads": stages.threads.info(),
        "multimodal": bool(multimodal),
        "multimodal_reason": multimodal_reason,
        "hounsfield_calibration": hounsfield,
        "intensity_normalization": normalization,
        "network_used": bool(network_info["used"]),
        "network": network_info,
        "instance_optimization": io_info,
        "refinement": refine_info,
        "sliding": sliding_info,
        "prealignment": {**prealign_info, **affine.to_dict(), "physical_overlap": round(overlap, 3)},
        "initial_transform": None if initial_transform is None else initial_transform.to_dict(),
        "working_grid": {"size": list(work.size), "spacing_mm": np.round(work.spacing, 4).tolist()},
        "resolution_matching": resolution_info,
        "sharpness_matching": sharpness_info,
        "padding": padding_info,
        "memory_estimate_gb": round(estimate_memory_gb(fixed.geometry, work), 2),
        "jacobian": jacobian_stats(det.array, mask=mask_arr),
        "similarity_before": similarity_before,
        "similarity_after": similarity_after,
        "similarity_region": similarity_region(fixed_mask is not None, bool(padding_info["fixed"]), padding_left_out),
        "warnings": warnings_,
    }
    if inverse is not None:
        metrics["inverse_consistency_mm"] = inverse[1]
    warped_points = None
    if has_landmarks:
        warped_points, tre_figures = landmark_figures(result_transform, fixed_landmarks, moving_landmarks,
                                                      initial_transform, guide)
        metrics.update(tre_figures)
    stages.done("metrics")
    metrics["timings_s"] = dict(stages.timings, total=round(time.perf_counter() - t_start, 3))
    stages.report(1.0, "done")
    return RegistrationResult(
        disp_mm=disp,
        geometry=fixed.geometry,
        warped=Image(warped.array.astype(np.float32, copy=False), fixed.geometry, "warped"),
        jacobian=det,
        metrics=metrics,
        warped_fixed_landmarks=warped_points,
        before=before,
        transform=result_transform,
        inverse_disp_mm=None if inverse is None else inverse[0],
        moving_geometry=moving.geometry,
    )
