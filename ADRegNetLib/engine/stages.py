r"""The building blocks of ``register()``: progress/cancel bookkeeping, input checks, working grid,
masks, padding, resolution matching (the network stage: ``prediction.py``; the refinement stage:
``refinement_stage.py``). Each takes and returns :class:`Image`/:class:`Transform` objects or working-grid tensors."""
from __future__ import annotations

import math
import numbers
import time
from typing import Any, Optional

import numpy as np
import torch

from ..spatial.affine import AffineMap
from ..spatial.filters import gaussian_smooth, gaussian_smooth_covariance, is_axis_aligned
from ..spatial.geometry import Geometry
from ..spatial.image import Image
from ..spatial.padding import border_runs, crop_to_box, data_box, working_box
from ..spatial.resolution import matching_covariances
from ..spatial.transform import Transform
from ..spatial.transforms import upsampled_disp_mm
from ..typing import ProgressCallback, StopCallback
from .api import RegistrationCancelled, RegistrationError
from .cpu_threads import ThreadBudget
from .limits import (BYTES_PER_FIXED_VOXEL, BYTES_PER_WORKING_VOXEL, FIELD_OF_VIEW_MARGIN_VOXELS,
                     WORKING_REGION_MARGIN_MM, WORKING_REGION_MIN_PLANES,
                     FIELD_OF_VIEW_MIN_TISSUE, MAX_REGULARIZATION, MAX_SEED, MIN_REGULARIZATION, PADDING_MIN_CUT_SHARE)
from .settings import (INTERSUBJECT_HINT_SCALE, PRESETS, QUALITIES, QUALITY_SETTINGS, RESOLUTION_MATCH_MIN_SIGMA_VOXELS,
                       TISSUE_THRESHOLD)

__all__ = ["Stages", "estimate_memory_gb", "working_geometry", "check_settings", "intersubject_hint", "check_points",
           "moving_field_of_view", "matched_resolution", "without_padding", "total_field"]

class Stages:
    """Maps per-stage progress onto [0, 1], times each stage and checks for cancellation between them."""

    def __init__(self, progress: Optional[ProgressCallback], should_stop: Optional[StopCallback]) -> None:
        self.progress = progress
        self.should_stop = should_stop
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()
        self.threads: Optional[ThreadBudget] = None  # set once the device is known: CPU threads between stages

    def check(self) -> None:
        """Raise :class:`RegistrationCancelled` when the user asked to stop."""
        if self.should_stop is not None and self.should_stop():
            raise RegistrationCancelled("registration cancelled by the user")

    def report(self, fraction: float, text: str) -> None:
        """Report overall progress (clamped to [0, 1])."""
        if self.progress is not None:
            self.progress(float(min(max(fraction, 0.0), 1.0)), text)

    def done(self, name: str) -> None:
        """Record the time of stage ``name`` and check for cancellation."""
        now = time.perf_counter()
        self.timings[name] = round(now - self._t, 3)
        self.check()
        if self.threads is not None:
            self.threads.finished(name)
        self._t = time.perf_counter()

    def sub(self, start: float, end: float) -> ProgressCallback:
        """A progress callback for a sub-stage mapped onto [start, end]."""
        return lambda f, text: self.report(start + (end - start) * f, text)


def estimate_memory_gb(fixed_geometry: Geometry, working: Geometry) -> float:
    """Rough peak memory of a run (GB) from the working and fixed grid sizes."""
    return (working.num_voxels * BYTES_PER_WORKING_VOXEL + fixed_geometry.num_voxels * BYTES_PER_FIXED_VOXEL) / 1e9


def working_geometry(fixed_geometry: Geometry, spacing_mm: float, max_voxels: int) -> tuple[Geometry, Optional[str]]:
    """The working grid: the fixed image's field of view on an isotropic grid of about ``spacing_mm``.

    Never finer than the fixed image's finest spacing. Thick slices are interpolated to that
    isotropic grid rather than kept: a field sampled every 4 mm along one axis cannot follow the
    anatomy the other axes resolve, and the network was trained on isotropic voxels. Brain benchmark
    case resampled to 2x2x4 mm: balanced 0.55 -> 0.38 mm, instant 1.17 -> 0.83 mm; to 1x1x3 mm: 0.33
    -> 0.32 and 1.01 -> 0.81 mm (isotropic 2 mm original: 0.26 and 0.80 mm). Larger grids than
    ``max_voxels`` get a coarser spacing, and the returned note says so.

    Returns:
        (working geometry, note or None).
    """
    spacing = np.full(3, max(float(spacing_mm), float(np.min(fixed_geometry.spacing))))
    # along an axis whose voxels are within 5 % of that, the image's own planes: a grid off them blurs the image
    # in its one resampling (a scan padded onto a larger grid, its working region at 2.0065 mm instead of its own
    # 1.991: balanced brain 0.214 mm, see docs/PERFORMANCE.md, "Padded scans")
    own = np.abs(fixed_geometry.spacing / spacing - 1.0) < 0.05
    work = fixed_geometry.with_spacing(np.where(own, fixed_geometry.spacing, spacing))
    note = None
    if work.num_voxels > max_voxels:  # the isotropic grid, and coarser than that where it is still too large
        work = fixed_geometry.with_spacing(spacing)
    if work.num_voxels > max_voxels:
        factor = (work.num_voxels / max_voxels) ** (1.0 / 3.0)
        work = fixed_geometry.with_spacing(spacing * factor)
        note = (f"large input: working at {np.round(work.spacing, 2).tolist()} mm "
                f"({work.size[0]}x{work.size[1]}x{work.size[2]}) to stay within this quality's {round(max_voxels ** (1 / 3))}^3 "
                "working voxels (time and memory; " + ", ".join(
                    f"{q} {round(s.max_working_voxels ** (1 / 3))}^3" for q, s in QUALITY_SETTINGS.items() if q != "instant")
                + ")")
    return work, note


def _is_number(value: Any) -> bool:
    """A Python or numpy int or float; a bool (``True`` is 1 to Python) is not one, nor another
    ``numbers.Real`` such as ``Fraction`` (the pipeline takes ``np.sqrt`` of the regularization)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_whole_number(value: Any) -> bool:
    """An integer (numpy integers included, bools not), or a float without a fraction (3.0)."""
    if not _is_number(value):
        return False
    return isinstance(value, numbers.Integral) or (math.isfinite(float(value)) and float(value).is_integer())


def check_settings(preset: str, quality: str, regularization: float, seed: int = 0) -> None:
    """Raise :class:`RegistrationError` for an unknown preset/quality, a bad regularization or seed.

    Args:
        preset, quality: names from :data:`PRESETS`, :data:`QUALITIES`.
        regularization: an int or float (numpy scalars too, not a bool) above 0 and at most
            :data:`MAX_REGULARIZATION`.
        seed: a whole number from 0 to :data:`MAX_SEED` (an int, numpy integer or float without a
            fraction; not a bool, a string or None).
    """
    if preset not in PRESETS:
        raise RegistrationError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if quality not in QUALITIES:
        raise RegistrationError(f"unknown quality {quality!r}; choose one of {', '.join(QUALITIES)}")
    if not _is_number(regularization):
        raise RegistrationError(f"regularization must be a positive number (1 = default), got {regularization!r} "
                                f"(a {type(regularization).__name__}); give a number such as 0.5 or 2")
    if not (math.isfinite(float(regularization)) and regularization > 0):
        raise RegistrationError(f"regularization must be a positive number (1 = default), got {regularization}")
    if regularization < MIN_REGULARIZATION:
        raise RegistrationError(
            f"regularization {float(regularization):g} is below {MIN_REGULARIZATION:g}: at {MIN_REGULARIZATION:g} the "
            f"field is already smoothed by nothing; give at least {MIN_REGULARIZATION:g} (1 = default; 0.25 between "
            "two people)")
    if regularization > MAX_REGULARIZATION:
        raise RegistrationError(
            f"regularization {float(regularization):g} is above {MAX_REGULARIZATION:g}: at {MAX_REGULARIZATION:g} the "
            "smoothing is already wider than any scan (the deformation is then nearly a translation), and larger "
            f"values only cost time; give at most {MAX_REGULARIZATION:g} (1 = default)")
    if not (_is_whole_number(seed) and 0 <= int(seed) <= MAX_SEED):
        given = f"{seed}" if _is_number(seed) else f"{seed!r} (a {type(seed).__name__})"
        raise RegistrationError(
            f"seed must be a whole number from 0 to {MAX_SEED}, got {given}: the pre-alignment's random "
            "sampler (SimpleITK) takes seed + 1 as an unsigned 32-bit number and reads 0 as 'seed from the clock', "
            "so results are repeatable only in that range; give a seed in it (0 = default)")


def intersubject_hint(preset: str, regularization: float, affine: AffineMap, kept: Optional[str]) -> Optional[str]:
    """A note when a brain pre-alignment scaled the head (``INTERSUBJECT_HINT_SCALE``) at the default regularization."""
    if preset != "brain-mri" or regularization != 1.0 or kept != "optimised":
        return None
    change = float(np.max(np.abs(np.linalg.svd(affine.matrix, compute_uv=False) - 1.0)))
    if change < INTERSUBJECT_HINT_SCALE:
        return None
    # conditional on what only the user knows: on scans of one head a large smooth deformation, a turned head or
    # a strong gamma also gave 3-16 % (nineteenth session's sweep), and 0.25 there tripled the error (0.19 -> 0.46 mm)
    return (f"the pre-alignment scaled the moving head by {100 * change:.1f}% along an axis. Only if the scans are "
            "of two different people: --regularization 0.25 (the Slicer module's Regularization) follows the "
            "anatomy more closely (README, 'Two people': Dice 0.735 -> 0.766). For two scans of one person keep 1: "
            "the scaling then comes from the deformation or the intensities, and 0.25 would follow noise")


def check_points(points: Any, role: str) -> np.ndarray:
    """A (K, 3) float64 LPS mm landmark array, or a ``LandmarkError`` that says what is expected."""
    from ..io.points import as_points

    return as_points(points, f"{role} landmarks")


def without_padding(fixed: Image, moving: Image, mask: Optional[np.ndarray]
                    ) -> tuple[Image, Optional[np.ndarray], dict, list[str], Optional[tuple[slice, slice, slice]]]:
    """Padding that cuts through anatomy (``spatial/padding.py``) taken out of the registration.

    The moving image is cut to the planes with data (beyond them it then counts as outside its field
    of view, ``moving_field_of_view``); the fixed image keeps its grid (the output grid) and its
    padding is left out of the similarity through the mask. The working grid spans the fixed image less
    whole planes of one constant value at its border, cut anatomy or not, but ``WORKING_REGION_MARGIN_MM``
    of them (``spatial.padding.working_box``): a scan padded onto a larger grid keeps its resolution within
    the quality's working voxels, and the field beyond keeps its values at the region's faces.

    Args:
        fixed, moving: the images as given.
        mask: optional (Z, Y, X) bool fixed mask on the fixed grid.

    Returns:
        (moving image to register, fixed mask, {"fixed": ..., "moving": ..., "working_region": ...} with the
        planes kept per axis or None, warnings naming what was left out, the working region's (Z, Y, X) slices
        of the fixed grid or None for all of it).
    """
    fixed_runs = border_runs(fixed.array)  # read once: the working region and the fixed image's padding
    region = working_box(fixed.array, fixed.geometry.spacing[::-1], WORKING_REGION_MARGIN_MM, WORKING_REGION_MIN_PLANES,
                         fixed_runs)
    info: dict = {"fixed": None, "moving": None, "working_region": None}
    notes = []
    for role, image in (("fixed", fixed), ("moving", moving)):
        box = data_box(image.array, TISSUE_THRESHOLD, PADDING_MIN_CUT_SHARE, fixed_runs if role == "fixed" else None)
        if box is None:
            continue
        kept = {axis: [b.start, b.stop] for axis, b in zip("zyx", box)}
        info[role] = {"planes_kept_zyx": kept, "size_zyx": list(image.array.shape)}
        notes.append(f"the {role} image holds one constant value in whole planes next to cut anatomy (planes kept "
                     f"z, y, x: {', '.join(f'{a}-{b - 1}' for a, b in kept.values())} of "
                     f"{', '.join(str(n) for n in image.array.shape)}): treated as padding, outside the scan")
        if role == "moving":
            moving = crop_to_box(moving, box)
        else:
            inside = np.zeros(fixed.array.shape, dtype=bool)
            inside[box] = True
            mask = inside if mask is None else (mask & inside)
            region = _without_cut_padding(region, box, fixed.array.shape)
    if region is not None:
        info["working_region"] = {axis: [b.start, b.stop] for axis, b in zip("zyx", region)}
    return moving, mask, info, notes, region


def _without_cut_padding(region: Optional[tuple[slice, ...]], box: tuple[slice, ...], shape: tuple[int, ...]
                         ) -> Optional[tuple[slice, ...]]:
    """The working region less the fixed image's padding that cuts anatomy (``box``: the planes with data): that
    padding is left out of the similarity, so the working grid needs no margin of it; unchanged where that would
    leave fewer than ``WORKING_REGION_MIN_PLANES`` planes."""
    if region is None:
        return None
    cut = tuple(slice(max(r.start, b.start), min(r.stop, b.stop)) for r, b in zip(region, box))
    enough = all(c.stop - c.start >= min(WORKING_REGION_MIN_PLANES, n) for c, n in zip(cut, shape))
    return cut if enough else region


def moving_field_of_view(inside: np.ndarray, fixed: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """Where the moving image has data, seen from the working grid: (Z, Y, X) bool, or None if everywhere.

    A voxel is kept when it samples inside the moving image (``inside``, from the resampler) and is
    not within ``FIELD_OF_VIEW_MARGIN_VOXELS`` of a voxel that does not: beyond a moving image that
    ends inside the fixed one (a shorter scan) the resampled moving image is only padding, and
    matching the fixed anatomy to padding drags the field at the edge. Where the fixed image shows
    nothing either (the corners of a rotated grid), padding matches it and nothing is left out: with
    ``fixed`` given, None unless more than ``FIELD_OF_VIEW_MIN_TISSUE`` of its tissue lies beyond the
    moving image (the masked similarity costs time: 0.5 s on the oblique case, where it changed
    0.326 mm to 0.325).

    Args:
        inside: (Z, Y, X) bool, working voxels whose pre-aligned position samples inside the moving
            image (``spatial.warp.resample(..., return_inside=True)``).
        fixed: optional (Z, Y, X) normalised fixed intensities on the same grid.
    """
    if inside.all():
        return None
    if fixed is not None:  # blurred by a voxel: background noise above the threshold is not tissue
        tissue = gaussian_smooth(torch.from_numpy(np.asarray(fixed, dtype=np.float32))[None, None], 1.0)[0, 0]
        tissue = tissue.numpy() > TISSUE_THRESHOLD
        if np.count_nonzero(tissue & ~inside) <= FIELD_OF_VIEW_MIN_TISSUE * np.count_nonzero(tissue):
            return None
    m = FIELD_OF_VIEW_MARGIN_VOXELS
    outside = torch.from_numpy(~inside)[None, None].float()
    for kernel in ((2 * m + 1, 1, 1), (1, 2 * m + 1, 1), (1, 1, 2 * m + 1)):  # a cube, one axis at a time
        outside = torch.nn.functional.max_pool3d(outside, kernel, stride=1, padding=tuple(k // 2 for k in kernel))
    return ~(outside[0, 0] > 0).numpy()


def matched_resolution(fixed_w: torch.Tensor, moving_w: torch.Tensor, fixed_geometry: Geometry,
                       moving_geometry: Geometry, work: Geometry, affine: AffineMap,
                       ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Both working images at the coarser one's resolution (``spatial.resolution.matching_covariances``).

    Args:
        fixed_w, moving_w: (1, 1, Z, Y, X) the images on the working grid ``work`` (moving pre-aligned).
        fixed_geometry, moving_geometry: their own grids.
        work: the working grid.
        affine: the pre-alignment (fixed -> moving): the moving image's slices are seen where it puts them.

    Returns:
        (fixed, moving, {"fixed_blur_voxels", "moving_blur_voxels"}: the Gaussian blurs' standard
        deviations along the working axes (z, y, x), "oblique": whether a blur lay across them, and
        "widest_blur_voxels": the widest blur the voxel sizes call for before the threshold, 0 for equal sizes).
    """
    unthresholded = matching_covariances(fixed_geometry, moving_geometry, work,
                                         moving_linear=np.linalg.inv(affine.matrix), min_sigma_voxels=0.0)
    widths = [float(np.sqrt(max(np.linalg.eigvalsh(cov).max(), 0.0))) for cov in unthresholded]
    covariances = [cov if width >= RESOLUTION_MATCH_MIN_SIGMA_VOXELS else np.zeros((3, 3))
                   for cov, width in zip(unthresholded, widths)]
    images = [gaussian_smooth_covariance(image, cov) if cov.any() else image
              for image, cov in zip((fixed_w, moving_w), covariances)]
    sigmas = [np.round(np.sqrt(np.clip(np.diag(cov), 0.0, None)), 3).tolist() for cov in covariances]
    oblique = not all(is_axis_aligned(cov) for cov in covariances)
    return images[0], images[1], {"fixed_blur_voxels": sigmas[0], "moving_blur_voxels": sigmas[1],
                                  "oblique": oblique, "widest_blur_voxels": round(max(widths), 3)}


def total_field(flow: torch.Tensor, fixed: Geometry, region: Optional[tuple], affine: AffineMap,
                rigid: Optional[np.ndarray], plane: Any = None) -> np.ndarray:
    """The result's displacement on the fixed grid: the working grid's field upsampled, the pre-alignment composed
    into it (x -> A(x + u(x)) - x), rigid inside the rigid regions, planar for two single slices.

    Args:
        flow: (1, 3, Z, Y, X) normalised flow on the working grid.
        fixed: the fixed image's grid. region: the working region's box on it (None: all of it).
        affine: the pre-alignment (fixed -> moving). rigid: (Z, Y, X) label map on the fixed grid, or None.
        plane: an :class:`engine.planar.Plane` when the images are two single slices' slabs, else None.

    Returns:
        (3, Z, Y, X) float32 LPS mm on ``fixed``.
    """
    disp = upsampled_disp_mm(flow, fixed, box=region)
    if not affine.is_identity():  # written over the field
        disp = Transform(fixed, disp, affine).total_displacement(out=disp)
    if rigid is not None:
        from ..spatial.rigid import rigidify

        disp = np.ascontiguousarray(rigidify(disp, fixed, rigid), dtype=np.float32)
    return disp if plane is None else plane.project(disp)
