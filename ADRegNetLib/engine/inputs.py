"""The first stage of ``register()``: its arguments and inputs checked before any work, each refusal naming
the problem and the fix."""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ..io.images import check_pair_sizes, validate_image
from ..spatial.affine import AffineMap
from ..spatial.image import Image
from ..spatial.overlap import physical_overlap
from ..spatial.warp import resample
from .api import RegistrationError
from .limits import SMALL_PHYSICAL_OVERLAP
from .masks import map_mask, mask_coverage_warning
from .stages import check_points, check_settings

__all__ = ["CheckedInputs", "check_inputs", "overlap_warning"]


class CheckedInputs(NamedTuple):
    """What the checks hand on: the settings as plain numbers, the warnings so far, the landmark pairs as
    (K, 3) arrays (None without), the fixed mask and the rigid-region labels on the fixed grid (None without), the
    images' overlap in physical space (a share of the smaller one's volume) and the local-change region on the fixed
    grid (None without)."""

    regularization: float
    seed: int
    warnings: list
    fixed_landmarks: Optional[np.ndarray]
    moving_landmarks: Optional[np.ndarray]
    mask: Optional[np.ndarray]
    rigid: Optional[np.ndarray]
    overlap: float
    local: Optional[np.ndarray] = None


def check_inputs(fixed, moving, fixed_landmarks, moving_landmarks, fixed_mask, moving_mask, initial_transform,
                 rigid_regions, preset, quality, regularization, seed, multimodal, switches: dict,
                 local_region=None, plane=None) -> CheckedInputs:
    """Check ``register()``'s arguments (see there); raises :class:`RegistrationError` / ``ImageError``. ``plane``:
    the images are the slabs of two single slices (``engine.planar.Plane``), their depth not counted."""
    check_settings(preset, quality, regularization, seed)
    regularization, seed = float(regularization), int(seed)  # numpy scalars compute as Python numbers
    if multimodal is not None and not isinstance(multimodal, (bool, np.bool_)):
        raise RegistrationError(f"multimodal must be True (two contrasts), False (one) or None (decide from the "
                                f"images), got {multimodal!r}")
    for name, value in switches.items():  # "False" (a string) is true: it would silently do the opposite
        if not isinstance(value, (bool, np.bool_)):
            raise RegistrationError(f"{name} must be True or False, got {value!r} (a {type(value).__name__})")
    warnings_: list[str] = []
    for image, role in ((fixed, "fixed"), (moving, "moving")):
        if not isinstance(image, Image):
            raise RegistrationError(f"{role} must be an ADRegNetLib Image (read it with ADRegNetLib.io.read_image)")
        axis = None if plane is None else (plane.fixed_axis if role == "fixed" else plane.moving_axis)
        warnings_ += [w for w in (validate_image(image, role=role, slab_axis=axis) or []) if isinstance(w, str)]
    warnings_ += check_pair_sizes(fixed, moving)
    for mask, role in ((fixed_mask, "fixed mask"), (moving_mask, "moving mask")):
        if mask is not None and not isinstance(mask, Image):
            raise RegistrationError(f"the {role} must be an ADRegNetLib Image with its geometry "
                                    "(read it with ADRegNetLib.io.read_label_map)")
    if initial_transform is not None and not isinstance(initial_transform, AffineMap):
        raise RegistrationError("initial_transform must be an AffineMap (fixed -> moving, LPS mm); "
                                "read a transform file with ADRegNetLib.io.read_linear_transform")
    has_landmarks = fixed_landmarks is not None or moving_landmarks is not None
    if has_landmarks:
        if fixed_landmarks is None or moving_landmarks is None:
            raise RegistrationError("landmarks were given for only one image; give fixed and moving landmarks in pairs")
        from ..io.points import check_landmark_pairs

        fixed_landmarks = check_points(fixed_landmarks, "fixed")
        moving_landmarks = check_points(moving_landmarks, "moving")
        check_landmark_pairs(fixed_landmarks, moving_landmarks, fixed.geometry, moving.geometry)
    mask_arr = None
    for mask, image, role in ((fixed_mask, fixed, "fixed"), (moving_mask, moving, "moving")):
        if mask is None:
            continue
        on_image = map_mask(mask, image.geometry, f"{role} mask", f"{role} image")  # refusals first
        note = mask_coverage_warning(mask, on_image, image.geometry, f"{role} mask", f"{role} image")
        warnings_ += [note] if note else []
        mask_arr = on_image if role == "fixed" else mask_arr
    rigid = None
    if rigid_regions is not None:
        if not isinstance(rigid_regions, Image):
            raise RegistrationError("rigid_regions must be an ADRegNetLib Image (a label map read with read_label_map)")
        map_mask(rigid_regions, fixed.geometry, "rigid-region map", "fixed image")  # overlap and emptiness checks
        rigid = resample(rigid_regions, fixed.geometry, mode="nearest", default=0).array.astype(np.int64)
    local = None
    if local_region is not None:
        if not isinstance(local_region, Image):
            raise RegistrationError("local_region must be an ADRegNetLib Image (a mask read with read_label_map)")
        local = map_mask(local_region, fixed.geometry, "local-change region", "fixed image")
        if quality == "instant" or not switches.get("instance_optimization", True):
            warnings_.append("the local-change region is used by the instance optimisation's refinement; with "
                             "quality 'instant' or without the instance optimisation it was not used")
    overlap = physical_overlap(fixed.geometry, moving.geometry)
    if initial_transform is None:
        warnings_ += [note for note in [overlap_warning(fixed, moving, overlap)] if note]
    return CheckedInputs(regularization, seed, warnings_, fixed_landmarks if has_landmarks else None,
                         moving_landmarks if has_landmarks else None, mask_arr, rigid, overlap, local)


def overlap_warning(fixed: Image, moving: Image, overlap: float) -> Optional[str]:
    """What the images' ``overlap`` in physical space says when no initial transform brings them together."""
    if overlap <= 0:
        distance = float(np.linalg.norm(fixed.geometry.center() - moving.geometry.center()))
        return (f"the fixed and moving images do not overlap in physical space (centres {distance:.0f} mm apart); "
                "started from a centre-of-mass alignment (check that both scans show the same anatomy, or give an "
                "initial transform)")
    if overlap < SMALL_PHYSICAL_OVERLAP:
        return (f"the fixed and moving images share only {100 * overlap:.1f}% of the smaller one's volume in physical "
                "space: the result will be unreliable; check the image headers (origin and direction: an axis "
                "direction flipped in one image, with the same origin, gives such an overlap), or give an initial "
                "transform")
    return None
