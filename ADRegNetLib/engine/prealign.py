r"""Affine pre-alignment with SimpleITK (stage 2 of the engine).

The result is an affine map ``A`` of LPS points from the fixed to the moving space (the
resampling convention): moving point = ``matrix @ x + offset``. Its SimpleITK pieces (levels, registration
method, short fits, the MIND-SSC confirmation) are in :mod:`.sitk_fit`, its numbers in :mod:`.prealign_settings`.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..io.image import to_sitk
from ..io.linear import affine_from_sitk, affine_to_sitk
from ..spatial.affine import AffineMap
from ..spatial.geometry import Geometry
from ..spatial.image import Image
from ..spatial.overlap import physical_overlap
from ..typing import StopCallback
from .api import RegistrationCancelled
from .rotations import rank_turns, rotation_about, spread_rotations, turn_degrees
from .settings import (MAX_SEED, PREALIGN_CENTRES_APART_MM, PREALIGN_MI_ITERATIONS_FACTOR, PREALIGN_ROTATION_MIN_GAIN,
                       SPREAD_TURNS, SPREAD_TURNS_FITTED, TURNS_JUDGED_LOCALLY)
from .sitk_fit import (clearly_better, coarse_pair, local_mismatches, one_thread, registration_method, relative_gain,
                       short_rigid_fit, shrunk)

__all__ = ["AffineMap", "affine_from_sitk", "affine_to_sitk", "prealign"]


def _overlapping_start(f: sitk.Image, m: sitk.Image, centre: np.ndarray, same_modality: bool, seed: int,
                       min_cut: float, min_gain: float) -> tuple[sitk.Euler3DTransform, str]:
    """The start of images that overlap in physical space: the identity (scans of one patient usually share a
    frame), or their centres of mass brought together where those lie more than ``PREALIGN_CENTRES_APART_MM``
    apart and a short rigid fit from there matches clearly better (:func:`clearly_better`, the rotation
    search's rule). A head turned 30 degrees and moved 100 mm inside a grid that still overlaps the fixed one by
    72 %: from the identity the fit ended in a wrong turn, 82.8 mm TRE, from the centres 0.25 mm. A moving brain
    cut to 60 % of its width (centres 21 mm apart, truly aligned) fits about as well from either, and keeps the
    identity (from the centres its TRE inside the cut image was 0.226 mm instead of 0.202)."""
    identity = sitk.Euler3DTransform()
    identity.SetCenter(centre.tolist())
    centred = sitk.Euler3DTransform(sitk.CenteredTransformInitializer(
        f, m, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS))
    apart = float(np.linalg.norm(centred.GetTranslation()))
    if apart <= PREALIGN_CENTRES_APART_MM:
        return identity, "identity (images overlap in physical space)"
    f_coarse, m_coarse, _ = coarse_pair(f, m)
    from_identity = short_rigid_fit(f_coarse, m_coarse, identity, same_modality, seed)
    from_centres = short_rigid_fit(f_coarse, m_coarse, centred, same_modality, seed)
    if from_centres is not None and (from_identity is None or clearly_better(
            from_centres[0], from_identity[0], same_modality, min_cut, min_gain)):
        return centred, (f"centre of mass (the images overlap in physical space, but their centres of mass lie "
                         f"{apart:.0f} mm apart and a short fit from there matches clearly better)")
    return identity, (f"identity (images overlap in physical space; with their centres of mass {apart:.0f} mm "
                      "apart brought together a short fit matches no clearly better)")


def _rotation_search(f: sitk.Image, m: sitk.Image, start: sitk.Euler3DTransform, min_gain: float, min_cut: float,
                     mask: sitk.Image | None, same_modality: bool, seed: int) -> tuple[sitk.Euler3DTransform, dict]:
    """The start turned by the rotation that fits best, or ``start`` itself (see :func:`prealign`).

    Brain seed 0 rotated by 45 / 90 degrees about the superior axis: correlation after the short fit
    -0.95 / -0.96 for the right rotation against -0.79 / -0.74 from the usual start; not rotated, the
    usual start -0.96 against -0.91 for the best rotation. The starts: the usual one, turns by +-45, +-90
    and 180 degrees about each axis, and the :data:`SPREAD_TURNS_FITTED` best of :data:`SPREAD_TURNS`
    turns spread over all orientations ranked without a fit (:func:`rotations.rank_turns`), each given a
    short rigid fit at 16 mm (about 0.2 s in all). A turn is kept only when it removes ``min_cut`` of the
    usual start's mismatch (1 - NCC^2; two contrasts: improves the mutual information by ``min_gain``)
    and the local structure similarity (MIND-SSC) is not worse through it; of the
    :data:`TURNS_JUDGED_LOCALLY` best turns that pass the metric's rule, MIND-SSC's best is taken
    (:func:`prealign` then fits from both starts and keeps the better).
    """
    f_coarse, m_coarse, coarse_mm = coarse_pair(f, m)
    base = np.asarray(start.GetMatrix()).reshape(3, 3)
    spread = spread_rotations(SPREAD_TURNS)
    f_array = sitk.GetArrayFromImage(f_coarse)
    mask_coarse = None if mask is None else sitk.GetArrayFromImage(shrunk(sitk.Cast(mask, sitk.sitkFloat32),
                                                                          coarse_mm)) > 0.5
    if mask_coarse is not None and mask_coarse.shape != f_array.shape:
        mask_coarse = None
    # the usual start is ranked with the spread turns (first), and where it fits better than all of them no
    # turn is fitted: the unturned benchmark brain scores -0.957 against -0.930 for the best turn; turned by
    # 30 / 60 / 180 degrees -0.82 / -0.77 / -0.64 against -0.92 / -0.85 / -0.88
    ranks = rank_turns(f_array, Geometry.from_sitk(f_coarse), sitk.GetArrayFromImage(m_coarse),
                       Geometry.from_sitk(m_coarse), base @ np.concatenate([np.eye(3)[None], spread]),
                       np.asarray(start.GetCenter()), np.asarray(start.GetTranslation()), same_modality, mask_coarse)
    usual_rank, ranks = ranks[0], ranks[1:]
    if np.isfinite(usual_rank) and usual_rank <= ranks.min():
        return start, {"candidates": 1, "chosen": "usual start", "usual_unfitted": round(float(usual_rank), 5),
                       "best_turn_unfitted": round(float(ranks.min()), 5),
                       "skipped": "the usual start fits better than every turn before any fit"}
    best_spread = [int(i) for i in np.argsort(ranks, kind="stable")[:SPREAD_TURNS_FITTED] if np.isfinite(ranks[i])]
    candidates = [("usual start", None)]
    candidates += [(f"{degrees:+d} degrees about {'LPS'[axis]}", rotation_about(axis, degrees))
                   for axis in range(3) for degrees in (45, -45, 90, -90, 180)]
    candidates += [(f"spread turn {i} ({turn_degrees(spread[i]):.0f} degrees)", spread[i]) for i in best_spread]
    scored = []
    for name, turn in candidates:
        euler = sitk.Euler3DTransform(start)
        if turn is not None:
            euler.SetMatrix((base @ turn).ravel().tolist(), 1e-6)
        fit = short_rigid_fit(f_coarse, m_coarse, euler, same_modality, seed)
        if fit is not None:  # None: too few samples in the overlap, not a candidate
            scored.append((fit[0], name, fit[1]))
    info: dict = {"candidates": len(candidates), "chosen": "usual start",
                  "rule": (f"removes {100 * min_cut:.0f} % of the usual start's mismatch 1 - NCC^2" if same_modality
                           else f"mutual information {100 * min_gain:.0f} % better")}
    usual = next((value for value, name, _ in scored if name == "usual start"), None)
    if usual is None or len(scored) < 2:
        return start, info
    turns = sorted((item for item in scored if item[1] != "usual start"), key=lambda item: item[0])
    gains = [relative_gain(value, usual, same_modality) for value, _, _ in turns]
    info.update(usual_metric=round(usual, 5), best_rotation=turns[0][1], best_metric=round(turns[0][0], 5),
                gain=round(gains[0], 4))
    passing = [(turn, gain) for turn, gain in zip(turns, gains)
               if clearly_better(turn[0], usual, same_modality, min_cut, min_gain)][:TURNS_JUDGED_LOCALLY]
    if not passing:
        return start, info
    # the structures must not disagree: a flipped brain of tissue-wise contrasts raised the correlation by
    # 69 % and MIND-SSC's mismatch by 78 %. At 16 mm MIND-SSC can be indifferent where the turn is right (an
    # inter-subject pair of two contrasts, heads pitched 35 degrees apart: -0.8 %, correlation +28 %).
    # Among the turns the metric passes, MIND-SSC picks: a brain turned 120 degrees about (1, -1, 1), taken
    # for two contrasts before alignment, fitted best by mutual information at a wrong turn (MIND-SSC
    # 0.2097, the usual start 0.2086) and second best at the right one (0.1855)
    local_usual, *local_turned = local_mismatches(f, m, [start] + [turn[2] for turn, _ in passing], mask)
    k = int(np.argmin(local_turned))
    (_, name, fitted), gain = passing[k]
    info.update(judged_locally=len(passing), local_usual=round(local_usual, 6),
                local_rotated=round(local_turned[k], 6), local_best_rotation=name, local_best_gain=round(gain, 4))
    if local_turned[k] <= local_usual:
        info["chosen"] = name
        return fitted, info
    return start, info


def prealign(fixed: Image, moving: Image, mode: str = "affine", fixed_mask: Image | None = None,
             iterations: int = 60, same_modality: bool = True, seed: int = 0,
             should_stop: StopCallback | None = None,
             min_relative_improvement: float = 0.05, min_local_improvement: float = 0.02,
             initial: AffineMap | None = None, spacing_mm: float = 4.0,
             max_scale: float = 1.4, rotation_min_gain: float | None = None,
             rotation_min_cut: float = 0.3, moving_mask: Image | None = None) -> tuple[AffineMap, dict]:
    """Rigid or affine pre-alignment of ``moving`` onto ``fixed`` (intensities already normalised to ~[0, 1]).

    Images that already overlap in physical space start from the identity (scans of one patient
    usually share a frame) unless their centres of mass lie far apart and fit better brought together
    (:func:`_overlapping_start`); others start from a centre-of-mass alignment. The result is kept only
    when it improves the similarity metric over the starting transform by at least
    ``min_relative_improvement``: pre-alignment is for gross misalignment (other subject, other
    position). On scans that already overlap well, an affine fit of a locally deformed pair was
    measured to *raise* the final landmark error (brain benchmark case: 0.85 -> 1.04 mm), so small
    global corrections are left to the deformable stage.

    Args:
        fixed, moving: normalised images (any grids, LPS).
        mode: "affine", "rigid" or "none".
        fixed_mask: optional region of interest on the fixed grid; moving_mask: where the moving image has data
            (its grid; a CT's padding outside its circular field of view left out of the fit).
        iterations: optimiser iterations per resolution level (times PREALIGN_MI_ITERATIONS_FACTOR for MI).
        same_modality: use correlation (True) or Mattes mutual information (False).
        seed: sampling seed (determinism), a whole number from 0 to :data:`MAX_SEED`.
        should_stop: returns True to cancel; checked at every optimiser iteration.
        initial: optional fixed -> moving start (the user's initial transform); with mode "none"
            it is returned as it is.
        spacing_mm: voxel size of the finer of the two levels (the coarser is twice it).
        min_local_improvement: relative improvement of the local structure similarity (MIND-SSC
            mismatch) the optimised transform must also bring to be kept.
        max_scale: an optimised affine that scales along any axis by more than this, or less than its
            inverse (singular values of its matrix), is not kept: no two scans of anatomy differ so
            much in size, and strong intensity changes (a gamma and bias field) led the correlation
            there (oblique brain case, moving image ``(m / p) ** 3`` under a bias of amplitude 1:
            scales 0.65-0.89 kept by both checks, final TRE 21.7 mm; without the affine 0.57 mm).
        rotation_min_gain: when given (and no initial transform), the start may be turned first: the
            usual start, the rotations by +-45, +-90 and 180 degrees about each axis of the fixed image's
            centre and the best few of turns spread over all orientations each get a short rigid fit at
            the coarse level, and a rotation replaces the usual start when it fits better by this share of
            the mutual information (two contrasts) or removes ``rotation_min_cut`` of the usual start's
            mismatch 1 - NCC^2 (one contrast) (:func:`_rotation_search`). An optimiser started at the
            identity finds 30 degrees but not 45.
        rotation_min_cut: see ``rotation_min_gain``.

    Returns:
        (fixed -> moving AffineMap, info dict with the metric before/after and the start used).

    Raises:
        RegistrationCancelled: when ``should_stop()`` turned True during the optimisation.
        ValueError: an unknown mode, or a seed outside 0 to :data:`MAX_SEED`.
    """
    if mode not in ("affine", "rigid", "none"):
        raise ValueError(f"pre-alignment mode must be 'affine', 'rigid' or 'none', got {mode!r}")
    # register() checks the seed for its users (stages.check_settings); this guards direct callers: SimpleITK
    # gets seed + 1 (sitk_fit.registration_method), so -1 would seed from the clock and 2**32 - 1 overflow
    if isinstance(seed, (bool, np.bool_)) or int(seed) != seed or not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"pre-alignment seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    overlap = physical_overlap(fixed.geometry, moving.geometry)
    info: dict = {"mode": mode}
    if mode == "none":
        if initial is not None:
            info["start"] = "the initial transform given by the user"
        return (initial or AffineMap.identity()), info
    f = shrunk(to_sitk(fixed, np.float32), spacing_mm)
    m = shrunk(to_sitk(moving, np.float32), spacing_mm)
    if initial is not None:
        start: sitk.Transform = affine_to_sitk(initial)
        info["start"] = "the initial transform given by the user"
    elif overlap > 0.5:
        start, info["start"] = _overlapping_start(
            f, m, fixed.geometry.center(), same_modality, seed, rotation_min_cut,
            PREALIGN_ROTATION_MIN_GAIN if rotation_min_gain is None else rotation_min_gain)
    else:
        start = sitk.CenteredTransformInitializer(f, m, sitk.Euler3DTransform(),
                                                  sitk.CenteredTransformInitializerFilter.MOMENTS)
        info["start"] = "centre of mass"
    fixed_mask_sitk = None
    if fixed_mask is not None:
        mask = to_sitk(Image(fixed_mask.array.astype(np.uint8), fixed_mask.geometry), None)
        fixed_mask_sitk = sitk.Resample(mask, f, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    usual = start
    if initial is None and rotation_min_gain is not None:
        # images brought together by their centres of mass share no frame: the best turn needs no margin over the
        # usual start to be judged by MIND-SSC and the whole fits from both (one contrast; mutual information's
        # margin is 0 anyway: settings.PREALIGN_ROTATION_MIN_GAIN)
        centred = info["start"].startswith("centre of mass")
        start, info["rotation_search"] = _rotation_search(f, m, start, 0.0 if centred else rotation_min_gain,
                                                          0.0 if centred else rotation_min_cut, fixed_mask_sitk,
                                                          same_modality, seed)
    # A user's start is close: the global metric has little left to gain (the demo pair with a start 2.4 mm off
    # correlates 0.968 at it), so only MIND-SSC's gain and the scale bound judge its refinement
    moving_mask_sitk = None if moving_mask is None else sitk.BinaryThreshold(sitk.Resample(  # whole coarse voxels only
        to_sitk(Image(moving_mask.array.astype(np.float32), moving_mask.geometry), np.float32), m, sitk.Transform(),
        sitk.sitkLinear, 0.0), 0.99, 2.0, 1, 0)
    fit = dict(mode=mode, user_start=initial is not None, same_modality=same_modality, seed=seed, mask=fixed_mask_sitk,
               moving_mask=moving_mask_sitk,
               iterations=iterations if same_modality else round(iterations * PREALIGN_MI_ITERATIONS_FACTOR),
               should_stop=should_stop,
               min_relative_improvement=0.0 if initial is not None else min_relative_improvement,
               max_scale=max_scale, min_local_improvement=min_local_improvement)
    affine, fitted = _optimise(f, m, start, **fit)
    if start is not usual:
        # The turn won short rigid fits at 16 mm; judged again after the whole fit from both starts (an
        # inter-subject pair of two contrasts: the coarse mutual information and MIND-SSC both chose a
        # wrong turn, 0.18 Dice, the usual start's fit 0.69)
        usual_affine, usual_fitted = _optimise(f, m, usual, **fit)
        local_turned, local_usual = local_mismatches(f, m, [affine_to_sitk(affine), affine_to_sitk(usual_affine)],
                                                      fixed_mask_sitk)
        info["rotation_search"].update(confirm_metric_turned=fitted.get("metric_after"),
                                       confirm_metric_usual=usual_fitted.get("metric_after"),
                                       confirm_local_turned=round(local_turned, 6),
                                       confirm_local_usual=round(local_usual, 6))
        if local_usual < local_turned:
            info["rotation_search"]["chosen"] = "usual start (its whole fit matches better)"
            affine, fitted = usual_affine, usual_fitted
    info.update(fitted)
    return affine, info


def _optimise(f: sitk.Image, m: sitk.Image, start: sitk.Transform, *, mode: str, user_start: bool,
              same_modality: bool, seed: int, iterations: int, mask: sitk.Image | None,
              moving_mask: sitk.Image | None, should_stop: StopCallback | None, min_relative_improvement: float,
              max_scale: float, min_local_improvement: float) -> tuple[AffineMap, dict]:
    """The pre-alignment's fit from ``start`` and its checks (see :func:`prealign`): (the transform kept, info)."""
    if mode == "affine" and not user_start:
        aff = sitk.AffineTransform(3)
        aff.SetCenter(start.GetCenter())
        aff.SetMatrix(start.GetMatrix())
        aff.SetTranslation(start.GetTranslation())
        init_tx: sitk.Transform = aff
    else:  # rigid, or the user's initial affine refined as it is
        init_tx = start

    reg = registration_method(same_modality, seed, iterations, [2, 1], [1.0, 0.0])
    info: dict = {"metric": "correlation" if same_modality else "Mattes mutual information"}
    if mask is not None:
        reg.SetMetricFixedMask(mask)
    if moving_mask is not None:
        reg.SetMetricMovingMask(moving_mask)
    reg.SetInitialTransform(init_tx, inPlace=False)
    stopped = []
    if should_stop is not None:
        def _check_stop() -> None:
            # StopRegistration ends the current resolution level only: repeat it on every level.
            if stopped or should_stop():
                stopped.append(True)
                reg.StopRegistration()

        reg.AddCommand(sitk.sitkIterationEvent, _check_stop)
    try:
        with one_thread(not same_modality):
            before = reg.MetricEvaluate(f, m)
        # The correlation metric is -NCC^2, bounded below by -1: a start already this good leaves
        # less than ``min_relative_improvement`` to gain, so the optimisation could not be kept.
        if same_modality and np.isfinite(before) and -before * (1.0 + min_relative_improvement) > 1.0:
            info.update(metric_before=float(before), kept=(
                f"start (the correlation at the start, {-before:.3f}, leaves less than "
                f"{100 * min_relative_improvement:.0f}% to gain; not optimised)"))
            return affine_from_sitk(init_tx), info
        with one_thread(not same_modality):
            result = reg.Execute(f, m)
        after = reg.GetMetricValue()
    except RuntimeError as exc:  # e.g. too few samples in the overlap
        if stopped:
            raise RegistrationCancelled("registration cancelled by the user") from None
        info["error"] = str(exc).splitlines()[-1][:200]
        return affine_from_sitk(init_tx), info
    if stopped:
        raise RegistrationCancelled("registration cancelled by the user")
    info.update(metric_before=float(before), metric_after=float(after))
    # Metrics are minimised: keep the optimised transform only when it is better.
    gain = (before - after) / max(abs(before), 1e-12)
    info["relative_improvement"] = round(float(gain), 4)
    if not np.isfinite(after) or gain < min_relative_improvement:
        info["kept"] = (f"start (the optimised alignment improved the metric by {100 * gain:.1f}%, "
                        f"less than {100 * min_relative_improvement:.0f}%)")
        return affine_from_sitk(init_tx), info
    optimised = affine_from_sitk(result)
    scales = np.linalg.svd(optimised.matrix, compute_uv=False)
    if scales.max() > max_scale or scales.min() < 1.0 / max_scale:
        info["kept"] = (f"start (the optimised affine scales by {scales.min():.2f}-{scales.max():.2f} along its axes, "
                        f"beyond {1.0 / max_scale:.2f}-{max_scale:.2f}: implausible between two scans of anatomy, "
                        "more likely misled by intensity differences; give an initial transform if the scans "
                        "really differ so much in size)")
        return affine_from_sitk(init_tx), info
    # A global transform fitted to a purely local deformation can raise the global metric and still
    # misalign the structures (brain cases with random local deformations: the affine alone raised the
    # landmark error 4.06 -> 4.40 mm, balanced's final error 0.257 -> 0.306 mm). Keep it only when the
    # local structure similarity the deformable stage optimises (MIND-SSC) agrees that it helps.
    local_before, local_after = local_mismatches(f, m, [init_tx, result], mask)
    info.update(local_before=round(local_before, 6), local_after=round(local_after, 6))
    local_gain = (local_before - local_after) / max(local_before, 1e-12)
    if not local_gain >= min_local_improvement:
        info["kept"] = (f"start (the optimised alignment improved the metric by {100 * gain:.1f}% but the local "
                        f"structure similarity, MIND-SSC {local_before:.4f} -> {local_after:.4f}, by less than "
                        f"{100 * min_local_improvement:.0f}%: a global transform fitted to local deformation)")
        return affine_from_sitk(init_tx), info
    info["kept"] = "optimised"
    return optimised, info
