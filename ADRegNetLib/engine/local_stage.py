r"""The refinement once more inside a region where the anatomy changed locally: the one the user marked
(:func:`refine_local_region`) or the one :mod:`.local_change` found from the images (:func:`follow_local_change`)."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np
import torch

from ..spatial.geometry import Geometry
from ..spatial.image import Image
from ..spatial.warp import resample
from .local_change import change_followed, find_local_change, found_note, with_field_extent
from .refine import RefineSettings, refine_field
from .refine_settings import LOCAL_CHANGE_STEPS, LOCAL_REGION_ELASTIC_MM, LOCAL_REGION_FLUID_MM, LOCAL_REGION_STEPS

__all__ = ["refine_local_region", "refine_in_region", "follow_local_change"]


def refine_local_region(fixed: torch.Tensor, moving: torch.Tensor, work: Geometry, flow: torch.Tensor,
                        settings: RefineSettings, regularization: float, region: np.ndarray, region_geometry: Geometry,
                        **kwargs) -> tuple[torch.Tensor, dict]:
    """The refinement once more inside a region where the anatomy changed locally, with little smoothing.

    A lesion that grew or shrank by a few mm over 1-3 cm in a scan that otherwise stayed still: the refinement's
    smoothing (fluid 10 mm, elastic 1.4 mm on a 2-mm grid) holds such a change back to about 60 % of its
    displacement, and less smoothing everywhere fits noise where the motion is smooth (the benchmark brain case
    0.174 -> 0.538 mm). Here the similarity is measured inside the region only (and inside ``kwargs["mask"]``), with
    ``LOCAL_REGION_FLUID_MM`` / ``LOCAL_REGION_ELASTIC_MM`` of smoothing (scaled by the user's regularization as
    the refinement's) for ``LOCAL_REGION_STEPS`` steps; the update, smoothed over the region
    (``filters.smooth_over_support``), fades out beyond it. Measured: ``refine_settings.LOCAL_REGION_FLUID_MM``.

    Args:
        fixed, moving, work, flow, settings: as :func:`refine.refine_field` after the refinement.
        regularization: the user's.
        region: (Z, Y, X) bool on ``region_geometry`` (the fixed image's grid).
        **kwargs: passed to :func:`refine.refine_field` (mask, landmarks, noise, sliding, should_stop).

    Returns:
        (flow, info: voxels of the working grid in the region, the smoothing used, steps accepted and rejected,
        seconds; ``applied`` False with a reason where the region leaves nothing to compare).
    """
    inside = resample(Image(region.astype(np.float32), region_geometry), work, mode="linear", default=0.0).array > 0.5
    return refine_in_region(fixed, moving, work, flow, settings, regularization,
                            torch.from_numpy(inside)[None, None].to(fixed.device), LOCAL_REGION_STEPS, **kwargs)


def refine_in_region(fixed: torch.Tensor, moving: torch.Tensor, work: Geometry, flow: torch.Tensor,
                     settings: RefineSettings, regularization: float, inside_w: torch.Tensor, steps: int,
                     **kwargs) -> tuple[torch.Tensor, dict]:
    """:func:`refine_local_region` on a region of the working grid (``inside_w``: (1, 1, Z, Y, X) bool), the one
    the user marked or the one :func:`local_change.find_local_change` found, for at most ``steps`` steps."""
    mask = kwargs.pop("mask", None)
    if mask is not None:  # a new tensor: the caller's region (a LocalChange's, widened again later) stays as it was
        inside_w = inside_w & mask.bool()
    count = int(inside_w.sum())
    if count < 8:
        return flow, {"applied": False, "voxels": count,
                      "reason": "the region covers fewer than 8 working voxels (inside the fixed mask)"}
    spacing = float(np.mean(work.spacing))
    stage = replace(settings, steps=steps,
                    sigma_update=LOCAL_REGION_FLUID_MM / spacing * float(np.sqrt(regularization)),
                    sigma_field=LOCAL_REGION_ELASTIC_MM / spacing * regularization)
    flow, stage_info = refine_field(fixed, moving, work, flow, stage, mask=inside_w, **kwargs)
    return flow, {"applied": True, "voxels": count, "sigma_update_mm": round(stage.sigma_update * spacing, 3),
                  "sigma_field_mm": round(stage.sigma_field * spacing, 3),
                  "steps_accepted": stage_info["steps_accepted"], "steps_rejected": stage_info["steps_rejected"],
                  "loss_first": stage_info["loss_first"], "loss_last": stage_info["loss_last"],
                  "seconds": stage_info["seconds"]}


def follow_local_change(fixed: torch.Tensor, moving: torch.Tensor, flow: torch.Tensor, tissue: torch.Tensor,
                        work: Geometry, settings: RefineSettings, regularization: float, not_here: Optional[str],
                        ct: bool, **kwargs) -> tuple[torch.Tensor, dict, list[str]]:
    """Find a local change in a pair that otherwise matches (:func:`local_change.find_local_change`), refine the
    region it moved in (:func:`local_change.with_field_extent`) with :func:`refine_in_region`, and keep the result
    when it followed the change (:func:`local_change.change_followed`).

    Where the registration had not followed the change at all (its field does not stand out from the still field
    beyond, so the region stayed as found; e.g. a copy under a global intensity change whose MIND field the mutual
    information check left out), the region is widened once more from the refined field and refined again when the
    field now stands out; that is kept when the parts' dissimilarity fell further. Measured (thirty-third session,
    the brain with a change of A 4 over s 12 mm, gamma 0.8, a bias field and 2 % noise): 1.194 mm without the
    search, 0.374 after one round, 0.225 after two; no other case of ``docs/benchmarks/wave33-2026-12-04.md`` takes
    the second round.

    Args:
        fixed, moving, flow, settings: the refinement's images, its result and settings (:func:`refine.refine_field`).
        tissue: (1, 1, Z, Y, X) bool, the voxels to judge.
        work: the working grid. regularization: the user's.
        not_here: why the pair is not looked at (:func:`local_change.not_looked_for`), or None.
        ct: the images are CT.
        **kwargs: passed to :func:`refine.refine_field` (mask, landmarks, noise, sliding, progress, should_stop).

    Returns:
        (flow, what was measured and done (``metrics.json`` ``refinement.local_change``), warnings for the user).
    """
    found, info = find_local_change(fixed, moving, tissue, work, not_here, ct=ct)
    if found is None:
        return flow, info, []
    found, extent = with_field_extent(found, flow, work)
    info.update(extent)
    there, stage = refine_in_region(fixed, moving, work, flow, settings, regularization, found.region,
                                    LOCAL_CHANGE_STEPS, **kwargs)
    kept, check = change_followed(fixed, moving, flow, there, found.parts, found.below_voxel)
    info.update(stage, **check, kept=kept)
    if not kept:  # the registration had followed it already: refined again, it fitted noise
        return flow, info, []
    if not extent["field_beyond_still"]:
        wider, again = with_field_extent(found, there, work)
        if again["field_beyond_still"] and again["region_ml"][1] > again["region_ml"][0]:
            kwargs.pop("progress", None)
            second, stage = refine_in_region(fixed, moving, work, there, settings, regularization, wider.region,
                                             LOCAL_CHANGE_STEPS, **kwargs)
            _, check = change_followed(fixed, moving, flow, second, found.parts, found.below_voxel)
            info["second_round"] = dict(again, **stage, **check, kept=check["parts_gain"] > info["parts_gain"])
            there = second if info["second_round"]["kept"] else there
    return there, info, [found_note(info["parts"])]
