r"""One local change in a pair that otherwise matches from the start: found from the images, so the refinement can
go on there with little smoothing (``local_stage.refine_in_region``), as where the user marks it.

A follow-up scan in which a lesion grew or shrank and nothing else moved: after the pre-alignment most of the
tissue already matches, and what does not is one compact place. The refinement's smoothing holds such a change back
to about 60 % of its displacement (``docs/benchmarks/wave31-2026-12-03.md``), while less smoothing everywhere fits
noise where the motion is smooth. Two things are asked before a region is taken, both of the images as they stand
before any deformation (the moving one pre-aligned), after the refinement's intensity maps:

* most of the textured tissue matches: ``1 - lncc^2`` (5-voxel windows, the images smoothed by 1 voxel against
  noise, the map by 2 voxels) below ``LOCAL_CHANGE_MATCH`` over at least ``LOCAL_CHANGE_STILL_SHARE`` of the voxels
  whose local standard deviation is above the tissue's median (flat tissue matches nothing by local correlation);
  a pair deformed everywhere (every benchmark case but the still ones) has under 1 % there;
* what does not match (above ``LOCAL_CHANGE_DIFFER``; where nothing does, a squared difference above
  ``LOCAL_CHANGE_SQUARED_RATIO`` times its median: a shift below a voxel) forms few compact places: connected parts
  of at least ``LOCAL_CHANGE_MIN_ML`` that do not touch the grid's faces (resampling and cut edges), together at most
  ``LOCAL_CHANGE_MAX_SHARE`` of the textured tissue.

CT is judged by the squared difference alone, with a cap on a part's volume (:func:`find_local_change`). The region is
those parts grown by ``LOCAL_CHANGE_MARGIN_MM`` and as far as the registration's field shows the change's motion
(:func:`with_field_extent`); the refinement there is kept only when :func:`change_followed`.
Measured in ``docs/benchmarks/wave32-2026-12-04.md``.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch

from ..losses.functional import local_ncc_map
from ..spatial.filters import box_filter, gaussian_smooth
from ..spatial.flow import flow_norm_to_disp_mm, identity_grid, vector_length
from ..spatial.geometry import Geometry
from .optimizer import sample_through
from .refine_settings import (LOCAL_CHANGE_DIFFER, LOCAL_CHANGE_FIELD_SHARE, LOCAL_CHANGE_MARGIN_MM, LOCAL_CHANGE_MATCH,
                              LOCAL_CHANGE_MAX_PARTS,
                              LOCAL_CHANGE_MAX_SHARE, LOCAL_CHANGE_MIN_GAIN, LOCAL_CHANGE_MIN_ML,
                              LOCAL_CHANGE_SQUARED_FLOOR, LOCAL_CHANGE_SQUARED_RATIO, LOCAL_CHANGE_STILL_SHARE,
                              LOCAL_CHANGE_CT_MAX_PART_ML, LOCAL_CHANGE_CT_STILL_SHARE, LOCAL_CHANGE_REACH_MM,
                              LOCAL_CHANGE_BEYOND_SHARE)

__all__ = ["LocalChange", "find_local_change", "with_field_extent", "change_followed", "found_note", "not_looked_for"]

WINDOW = 5  # local correlation window, voxels
IMAGE_SIGMA_VOXELS = 1.0  # the images smoothed against noise first
MAP_SIGMA_VOXELS = 2.0  # the dissimilarity map smoothed
MIN_TEXTURED_VOXELS = 1000


class LocalChange(NamedTuple):
    """What :func:`find_local_change` found, on the working grid: (1, 1, Z, Y, X) bool each."""

    region: torch.Tensor  # the parts grown by LOCAL_CHANGE_MARGIN_MM: where the refinement goes on
    parts: torch.Tensor  # the voxels that did not match: where :func:`change_followed` judges it
    below_voxel: bool = False  # found by the squared difference where the correlation found nothing: judged by it too


def find_local_change(fixed: torch.Tensor, moving: torch.Tensor, tissue: torch.Tensor, work: Geometry,
                      not_here: Optional[str] = None, ct: bool = False) -> tuple[Optional[LocalChange], dict]:
    """Where the anatomy changed locally in an otherwise still pair, or None (module docstring).

    Args:
        fixed, moving: (1, 1, Z, Y, X) the refinement's images on the working grid ``work``, the moving one
            pre-aligned and not yet deformed.
        tissue: (1, 1, Z, Y, X) bool, the voxels to judge (tissue inside the mask).
        work: the working grid.
        not_here: why the pair is not looked at (:func:`not_looked_for`), or None.
        ct: the images are CT. Local correlation takes CT's faint texture (lung parenchyma, soft tissue) for flat
            against its air-to-tissue range (an exact copy of the benchmark's lung CT matches itself over 33 % of its
            textured tissue), so a CT pair is judged by the squared difference of the images smoothed by 1 voxel
            alone; as most of a breathing body stays still by that measure too (73-87 %), a CT pair must match over
            ``LOCAL_CHANGE_CT_STILL_SHARE`` of it, and a part over ``LOCAL_CHANGE_CT_MAX_PART_ML`` means motion, not a
            local change (the breathing benchmark pairs: parts of 164-474 ml; nodule-like growths 18-41).

    Returns:
        (a :class:`LocalChange`, or None; info: ``found``, ``still_share`` where measured, and either the parts found
        (``parts``: centre in LPS mm and volume in ml each) or the ``reason`` none was taken).
    """
    if not_here is not None:
        return None, {"found": False, "reason": not_here}
    tissue = tissue.bool()
    if int(tissue.sum()) < MIN_TEXTURED_VOXELS:
        return None, {"found": False, "reason": "too little tissue to judge"}
    mean = box_filter(fixed, WINDOW)
    spread = (box_filter(fixed * fixed, WINDOW) - mean * mean).clamp_min(0)
    textured = tissue & (spread > spread[tissue].median())
    count = int(textured.sum())
    if count < MIN_TEXTURED_VOXELS:
        return None, {"found": False, "reason": "too little textured tissue to judge"}
    smooth_f = gaussian_smooth(fixed, IMAGE_SIGMA_VOXELS)
    below_voxel = False
    if ct:
        differs = _squared_differs(smooth_f, gaussian_smooth(moving, IMAGE_SIGMA_VOXELS), fixed, textured)
        still = 1.0 - float(differs[textured].float().mean())
    else:
        differ = _dissimilarity(smooth_f, moving)
        still = float((differ[textured] < LOCAL_CHANGE_MATCH).float().mean())
    info: dict = {"found": False, "still_share": round(still, 3)}
    needed = LOCAL_CHANGE_CT_STILL_SHARE if ct else LOCAL_CHANGE_STILL_SHARE
    if still < needed:
        info["reason"] = (f"{still:.0%} of the textured tissue matches before the registration (a local change "
                          f"needs {needed:.0%}): the motion is not one local change")
        return None, info
    if ct:
        parts = _compact_parts((differs & textured)[0, 0].cpu().numpy(), work)
    else:
        parts = _compact_parts(((differ > LOCAL_CHANGE_DIFFER) & textured)[0, 0].cpu().numpy(), work)
        below_voxel = not parts
        if below_voxel:
            # a shift below a voxel (a change of 2-3 mm over 8 mm) hardly lowers the local correlation; it shows in
            # the squared difference. Only here: counted beside the correlation's parts it spread them on larger
            # changes (wave 32)
            parts = _compact_parts((_squared_differs(fixed, moving, fixed, textured) & textured)[0, 0].cpu().numpy(),
                                   work)
    changed = sum(int(part.sum()) for part, _ in parts)
    if not parts:
        info["reason"] = f"no part that does not match is {LOCAL_CHANGE_MIN_ML:g} ml or more away from the grid's faces"
        return None, info
    largest = max(summary["ml"] for _, summary in parts)
    if ct and largest > LOCAL_CHANGE_CT_MAX_PART_ML:
        info["reason"] = (f"a part of {largest:.0f} ml does not match (CT: at most {LOCAL_CHANGE_CT_MAX_PART_ML:g}): "
                          "motion such as breathing, not a local change")
        return None, info
    if changed > LOCAL_CHANGE_MAX_SHARE * count or len(parts) > LOCAL_CHANGE_MAX_PARTS:
        info["reason"] = (f"{len(parts)} parts, {changed / count:.1%} of the textured tissue, do not match: not a few "
                          f"local changes (at most {LOCAL_CHANGE_MAX_PARTS} parts and {LOCAL_CHANGE_MAX_SHARE:.0%})")
        return None, info
    union = np.zeros(parts[0][0].shape, dtype=bool)
    for part, _ in parts:
        union |= part
    info.update(found=True, parts=[summary for _, summary in parts], margin_mm=LOCAL_CHANGE_MARGIN_MM)
    region, union = (torch.from_numpy(a)[None, None].to(fixed.device)
                     for a in (_grown(union, work, LOCAL_CHANGE_MARGIN_MM), union))
    info["measure"] = "squared difference" if ct or below_voxel else "local correlation"
    return LocalChange(region, union, below_voxel), info


def with_field_extent(found: LocalChange, flow: torch.Tensor, work: Geometry) -> tuple[LocalChange, dict]:
    """``found`` with its region widened to where the registration's field (``flow``, normalised, on ``work``) moves
    with the change: the parts that did not match are where the change's motion is largest, but a growth or shrinkage
    of Gaussian width ``s`` displaces tissue out to about ``2.3 s`` (its displacement falls to a quarter of its peak
    there), which a fixed margin fits for one ``s`` only. The field the usual refinement left follows the change's
    shape at about 60 % of its size, so the region takes in, within ``LOCAL_CHANGE_REACH_MM`` of the parts, the
    connected places touching the region whose displacement (less the field's median vector beyond that reach: what
    moves everywhere) is above ``LOCAL_CHANGE_FIELD_SHARE`` of its largest in the region, provided the field beyond
    the reach is still (its median below ``LOCAL_CHANGE_BEYOND_SHARE`` of that largest): else the motion is not one
    change's, or (a grid all within the reach) that cannot be told, and the margin alone stays.

    Returns:
        (the widened :class:`LocalChange`, ``{"region_ml": [as found, widened]}``).
    """
    from scipy import ndimage  # noqa: PLC0415

    disp = flow_norm_to_disp_mm(flow.detach(), work)[0].cpu().numpy()  # (3, Z, Y, X) mm
    region = found.region[0, 0].cpu().numpy()
    reach = _grown(found.parts[0, 0].cpu().numpy(), work, LOCAL_CHANGE_REACH_MM)
    widened, quiet = region, False
    if not reach.all():  # else whether the field beyond is still cannot be told
        moved = vector_length(torch.from_numpy(disp - np.median(disp[:, ~reach], axis=1)[:, None, None, None]),
                              dim=0).numpy()
        peak = float(moved[region].max())
        # beyond the reach the field must be still next to the change (its median under a tenth of the change's
        # peak: 0.004-0.018 of it on the changes measured, 0.53 / 0.99 on brains deformed by 1 mm everywhere, where
        # the region widened made the refinement fit noise: 0.220 -> 0.337 mm)
        quiet = peak > 0 and float(np.median(moved[~reach])) < LOCAL_CHANGE_BEYOND_SHARE * peak
        if quiet:
            labels, _ = ndimage.label((moved > LOCAL_CHANGE_FIELD_SHARE * peak) & reach)
            widened = region | np.isin(labels, np.unique(labels[region & (labels > 0)]))
    ml = float(np.prod(work.spacing)) / 1000.0
    info = {"region_ml": [round(float(region.sum()) * ml, 1), round(float(widened.sum()) * ml, 1)],
            "field_beyond_still": quiet}
    return found._replace(region=torch.from_numpy(widened)[None, None].to(found.region.device)), info


def change_followed(fixed: torch.Tensor, moving: torch.Tensor, before: torch.Tensor, after: torch.Tensor,
                    parts: torch.Tensor, below_voxel: bool = False) -> tuple[bool, dict]:
    """Whether the refinement in a region found so followed a change: the images' dissimilarity over the parts that
    did not match (the smoothed images of :func:`find_local_change`, not the refinement's own loss) fell by at least
    ``LOCAL_CHANGE_MIN_GAIN`` of itself from ``before`` (the flow it started from) to ``after``.

    A region refined where the registration had already followed the change fits noise there instead: the change
    seen through a rigid turn of 8 degrees (2 % noise), TRE 0.188 -> 0.256 mm while the parts' dissimilarity rose
    0.5 %; where the refinement followed a change it fell 11-44 % (``refine_settings.LOCAL_CHANGE_MIN_GAIN``).
    Parts found by the squared difference where the correlation found none (``below_voxel``: a shift below a voxel,
    which the correlation hardly sees) are judged by the squared difference of the smoothed images: by the correlation
    a change of 2 mm over 8 mm fell 4.8 % and was left (TRE 0.359 mm), followed it is 0.138.

    Returns:
        (kept, {"parts_dissimilarity": [before, after], "parts_gain": relative fall}).
    """
    smooth_f = gaussian_smooth(fixed, IMAGE_SIGMA_VOXELS)
    base = identity_grid(tuple(before.shape[2:]), before)
    measure = _squared_difference if below_voxel else _dissimilarity
    first, last = (float(measure(smooth_f, sample_through(moving, flow, base))[parts].mean())
                   for flow in (before, after))
    gain = (first - last) / max(first, 1e-6)
    return gain >= LOCAL_CHANGE_MIN_GAIN, {"parts_dissimilarity": [round(first, 4), round(last, 4)],
                                           "parts_gain": round(gain, 4)}


def _squared_differs(fixed: torch.Tensor, moving: torch.Tensor, intensity: torch.Tensor, textured: torch.Tensor
                     ) -> torch.Tensor:
    """Where a still pair's squared difference (smoothed by ``MAP_SIGMA_VOXELS``) is above
    ``LOCAL_CHANGE_SQUARED_RATIO`` times the larger of its median over the textured tissue and the square of
    ``LOCAL_CHANGE_SQUARED_FLOOR`` of the tissue's median ``intensity`` (on a near copy the median is near 0). The
    intensities are alike there: the refinement's maps put them so, and CT's are calibrated."""
    squared = _squared_map(fixed, moving)
    floor = max(float(squared[textured].median()),
                (LOCAL_CHANGE_SQUARED_FLOOR * float(intensity[textured].median())) ** 2)
    return squared > LOCAL_CHANGE_SQUARED_RATIO * floor


def _squared_map(fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """The images' squared difference smoothed by ``MAP_SIGMA_VOXELS``."""
    return gaussian_smooth((fixed - moving) ** 2, MAP_SIGMA_VOXELS)


def _squared_difference(smooth_fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """:func:`_squared_map` of the smoothed fixed image and ``moving`` smoothed alike."""
    return _squared_map(smooth_fixed, gaussian_smooth(moving, IMAGE_SIGMA_VOXELS))


def _dissimilarity(smooth_fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """``1 - lncc^2`` of the smoothed fixed image and ``moving`` smoothed alike, the map smoothed (module docstring)."""
    smooth_m = gaussian_smooth(moving, IMAGE_SIGMA_VOXELS)
    return gaussian_smooth(1.0 - local_ncc_map(smooth_fixed, smooth_m, WINDOW), MAP_SIGMA_VOXELS)


def not_looked_for(blurrier: Optional[str]) -> Optional[str]:
    """Why a pair is not looked at, or None: one image much blurrier than the other (``blurrier``: the refinement's
    reason, voxels more than twice as large): the change found in a thick-slice copy and refined with little smoothing
    fitted the blur, TRE 0.472 -> 0.571 mm (the brain with A = 8 mm, the moving image on 1.2 x 1.2 x 5 mm slices)."""
    if blurrier is not None:  # the refinement's reason: "one image's voxels are N times the other's: ..."
        return f"not looked for: {blurrier.split(':')[0]} (the refinement would fit the blur)"
    return None


def _compact_parts(changed: np.ndarray, work: Geometry) -> list[tuple[np.ndarray, dict]]:
    """The connected parts of ``changed`` (Z, Y, X), opened by one voxel, of at least ``LOCAL_CHANGE_MIN_ML`` and
    not touching the grid's faces, largest first: (part, {"centre_mm", "ml"})."""
    from scipy import ndimage  # noqa: PLC0415 - only where a pair is still

    opened = ndimage.binary_opening(changed, iterations=1)
    labels, count = ndimage.label(opened)
    if count == 0:
        return []
    voxel_ml = float(np.prod(work.spacing)) / 1000.0
    sizes = ndimage.sum_labels(opened, labels, np.arange(1, count + 1))
    parts = []
    for label in np.argsort(sizes)[::-1] + 1:
        ml = float(sizes[label - 1]) * voxel_ml
        if ml < LOCAL_CHANGE_MIN_ML:
            break
        part = labels == label
        if part[[0, -1]].any() or part[:, [0, -1]].any() or part[:, :, [0, -1]].any():
            continue
        centre_zyx = np.asarray(ndimage.center_of_mass(part))
        centre = work.index_to_physical(centre_zyx[::-1][None])[0]
        parts.append((part, {"centre_mm": [round(float(v), 1) for v in centre], "ml": round(ml, 1)}))
    return parts


def _grown(region: np.ndarray, work: Geometry, margin_mm: float) -> np.ndarray:
    """``region`` (Z, Y, X) grown by ``margin_mm`` (a distance transform in mm)."""
    from scipy import ndimage  # noqa: PLC0415

    distance = ndimage.distance_transform_edt(~region, sampling=tuple(float(s) for s in work.spacing[::-1]))
    return distance <= margin_mm


def found_note(parts: list[dict]) -> str:
    """What the user is told when changes were found and refined (a warning: the result differs there)."""
    def point(values) -> str:
        return f"({', '.join(f'{v:.0f}' for v in values)})"

    where = "; ".join(f"{point(part['centre_mm'])} mm LPS = {point(np.multiply(part['centre_mm'], (-1, -1, 1)))} RAS "
                      f"(Slicer), {part['ml']:.0f} ml" for part in parts)
    return (f"the images match before registration except in {len(parts)} compact "
            f"{'place' if len(parts) == 1 else 'places'} ({where}): taken for a local change (a lesion that grew or "
            "shrank) and refined there with less smoothing; if the difference is not motion (a new lesion, an "
            "artefact, contrast uptake), compare the warped image there or register again without it "
            "(Slicer: uncheck 'Find a local change'; adregnet register --no-local-change; "
            "register(find_local_change=False))")
