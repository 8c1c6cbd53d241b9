r"""What the pipeline derives from the final field: the inverse and the similarity metrics.

Both are built for large grids: the inverse is solved at the working resolution when the moving
grid is much finer, and similarity statistics use a regular subsample of grids over 8 M voxels.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..metrics import ncc, nmi, tre
from ..spatial.affine import AffineMap
from ..spatial.geometry import Geometry
from ..spatial.image import Image
from ..spatial.padding import circular_padding
from ..spatial.transform import Transform, background_value
from ..spatial.transforms import resized_by_slabs
from ..spatial.warp import resample
from .device import release_freed_memory
from .masks import map_mask

__all__ = ["SIMILARITY_MAX_VOXELS", "BEFORE_MAX_VOXELS", "INVERSE_TOLERANCE_MM", "CONSISTENCY_FULL_MAX_VOXELS",
           "WORSE_NCC_DROP", "WORSE_NMI_SHARE", "similarity", "similarity_on_subsample", "below_air", "ct_padding",
           "warped_and_before", "UNRELATED_MAX_NMI", "similarity_warnings", "worse_than_before", "similarity_region",
           "inverse_and_consistency", "landmark_figures"]

#: similarity metrics of larger grids use every k-th voxel per axis, so that about this many count
SIMILARITY_MAX_VOXELS = 8_000_000

#: residual at which a voxel's inverse counts as solved, mm. With sweeps over the whole grid 0.01 and 0.001
#: gave the same consistency (brain case: 0.0083 mm mean; 0.75 and 0.49 s); since the sweeps step only the
#: voxels not yet solved (sixteenth session) a solved voxel stops improving, so the tolerance is the smaller
#: one: consistency as before (brain / lung benchmark results 0.0097 / 0.0041 mm mean, now 0.0099 / 0.0044;
#: 0.01 would give 0.0127 / 0.0067), inverse and its check 0.9 / 4.1 s -> 0.76 / 2.2 s
INVERSE_TOLERANCE_MM = 0.001
#: grids with more voxels measure the inverse consistency at every second voxel along each axis
CONSISTENCY_FULL_MAX_VOXELS = 1_000_000

#: above this many fixed voxels the result holds no full-resolution before-image (a 512x512x300 CT:
#: 0.3 GB); the before similarity is measured on the subsample the statistics use
BEFORE_MAX_VOXELS = 32_000_000


def _safe(value) -> Optional[float]:
    v = float(value)
    return v if np.isfinite(v) else None


def similarity(fixed: np.ndarray, warped: np.ndarray, region: np.ndarray) -> dict:
    """NCC (same contrast) and normalised mutual information (any contrasts) over ``region``.

    On grids over :data:`SIMILARITY_MAX_VOXELS` a regular subsample (every k-th voxel per axis) is
    used: the statistics barely change, and float64 copies of 79 M voxels cost gigabytes.
    """
    k = _stride(fixed.size)
    if k > 1:
        fixed, warped, region = fixed[::k, ::k, ::k], warped[::k, ::k, ::k], region[::k, ::k, ::k]
    if not region.any():
        return {"ncc": None, "nmi": None}
    return {"ncc": _safe(ncc(fixed, warped, mask=region)), "nmi": _safe(nmi(fixed, warped, mask=region))}


def _stride(num_voxels: int) -> int:
    return max(1, int(np.ceil((num_voxels / SIMILARITY_MAX_VOXELS) ** (1 / 3))))


def similarity_on_subsample(fixed: Image, moving: Image, mask: Optional[np.ndarray],
                            moving_no_data: Optional[Image] = None) -> dict:
    """:func:`similarity` of ``fixed`` and the unregistered ``moving`` (identity transform), resampling
    the moving image only at the voxels of the subsample (every k-th voxel per axis); ``moving_no_data``
    as in :func:`warped_and_before`."""
    k = _stride(fixed.geometry.num_voxels)
    g = fixed.geometry
    sub = Geometry(tuple(int(np.ceil(n / k)) for n in g.size), g.spacing * k, g.origin, g.direction)
    seen, inside = Transform(sub).warp(moving, return_inside=True)
    if moving_no_data is not None:
        inside &= Transform(sub).warp(moving_no_data).array <= _NO_DATA_WEIGHT
    f = fixed.array[::k, ::k, ::k]
    region = inside if mask is None else (inside & mask[::k, ::k, ::k])
    return similarity(f, seen.array, region)


#: a fixed voxel whose interpolation gives a moving no-data voxel at most this weight still counts: a sample
#: at a voxel centre gets its neighbours' weights of about 1e-6 from float32 coordinates, and 1e-3 of -32768
#: moves a voxel by 33 HU, far less than tissue contrast
_NO_DATA_WEIGHT = 1e-3


def below_air(image: Image) -> Optional[np.ndarray]:
    """A CT's voxels below ``CT_LOWEST_HU`` (-1500 HU): no tissue, the padding outside its circular field of
    view (-1024 ... -32768) and the shell that resampling it leaves; (Z, Y, X) bool, or None (none, or no CT).

    The registration sees them as air (the CT window clips them); the similarity figures must not count
    them: before registration the padding of two scans of one patient lies on itself and NCC read 1.000,
    after it the padding's rim is interpolated into the tissue beside it and NCC read 0.998 (the sample
    CT pair stored with -32768 outside a circle; without the padding 0.973 -> 0.995)."""
    from .hounsfield import is_ct  # noqa: PLC0415 - the engine's modules import this one
    from .settings import CT_LOWEST_HU  # noqa: PLC0415

    if not float(np.min(image.array)) < CT_LOWEST_HU or not is_ct(image):
        return None
    below = image.array < CT_LOWEST_HU
    return below if below.any() else None


def ct_padding(image: Image) -> Optional[np.ndarray]:
    """A CT's voxels that hold no data, (Z, Y, X) bool or None: below air (:func:`below_air`), or else one constant
    value outside a circular field of view along a grid axis (``spatial.padding.circular_padding``: padding written
    as air itself, -1024 or -1000 HU, which its value does not tell from air)."""
    from .hounsfield import is_ct  # noqa: PLC0415 - the engine's modules import this one

    below = below_air(image)
    if below is not None or not is_ct(image):
        return below
    return circular_padding(image.array, image.geometry.spacing[::-1])


def warped_and_before(fixed: Image, moving: Image, moving_data: Image, transform: Transform,
                      mask: Optional[np.ndarray], fixed_padding: Optional[np.ndarray],
                      data_padding: Optional[np.ndarray]) -> tuple[Image, Optional[Image], dict, dict, dict]:
    """The moving image through the result and through the identity, and the similarity of each.

    The similarity counts fixed voxels with data (inside ``mask``, not a CT's padding, :func:`ct_padding`: below
    air or outside a circular field of view) whose moving sample reaches only data (inside ``moving_data``, no
    moving padding weighing in its interpolation).

    Args:
        fixed: the fixed image (its grid is the output grid).
        moving: the moving image as given (what the outputs show).
        moving_data: the part of it that holds data (``moving`` itself, or cut to its planes with
            data when padding was left out): the similarity counts only where it reaches.
        transform: the result on the fixed grid.
        mask: optional (Z, Y, X) bool fixed mask.
        fixed_padding: the fixed image's :func:`ct_padding` (found once by the caller; None: no padding).
        data_padding: ``moving_data``'s :func:`ct_padding`, found by the caller: the moving image's when
            ``moving_data`` is ``moving``; else the whole moving image's is found here.

    Returns:
        (warped, before image or None on grids over ``BEFORE_MAX_VOXELS``, similarity before, after,
        {"fixed": n, "moving": n} padding voxels left out).
    """
    fixed_air, moving_air = fixed_padding, data_padding if moving_data is moving else ct_padding(moving)
    if fixed_air is not None:
        mask = ~fixed_air if mask is None else (mask & ~fixed_air)
    no_data = None if moving_air is None else Image(moving_air.astype(np.float32), moving.geometry, "moving padding")
    left_out = {"fixed": 0 if fixed_air is None else int(fixed_air.sum()),
                "moving": 0 if moving_air is None else int(moving_air.sum())}
    del fixed_air, moving_air

    def measured(through: Transform) -> tuple[Image, np.ndarray]:
        image, inside = through.warp(moving, return_inside=True)
        if moving_data is not moving:
            inside = through.warp(moving_data, return_inside=True)[1]
        if no_data is not None:
            inside &= through.warp(no_data).array <= _NO_DATA_WEIGHT
        return image, inside if mask is None else (inside & mask)

    warped, region = measured(transform)
    after = similarity(fixed.array, warped.array, region)
    del region
    if fixed.geometry.num_voxels > BEFORE_MAX_VOXELS:  # the before-image only on the statistics' subsample
        return warped, None, similarity_on_subsample(fixed, moving_data, mask, no_data), after, left_out
    before, region = measured(Transform(fixed.geometry))
    return warped, before, similarity(fixed.array, before.array, region), after, left_out


#: a result whose NCC with the fixed image is this much below the unregistered pair's (one contrast) ...
WORSE_NCC_DROP = 0.1
#: ... or whose normalised mutual information lost this share of what it held above 1 (any contrasts) is
#: reported as probably wrong. 149 runs of the benchmarks (all cases, qualities, inter-subject pairs) never
#: lowered NMI; an image registered to itself with noise (demo CT, 10 HU) lost 3 % of it and NCC 0.0001; a
#: moving CT scaled by 1e6 (no longer in HU, hostile-input audit) went from NCC 1.00 to 0.60 and lost 92 %.
#: But interpolation blurs sharp edges of the warped image (the unregistered one, on the same grid, is
#: not resampled): brain seed 0 with its tissue intensities inverted on a zero background, registered well
#: (3.79 -> 0.297 mm), lost 27 %
WORSE_NMI_SHARE = 0.5
#: a result whose normalised mutual information with the fixed image stays below this shares almost no information
#: with it (1: none): the images are unrelated and the deformation invents motion. Measured (thirtieth session, fast,
#: after registration): the benchmark's brain, oblique, lung, T1 vs T2 and synthseg cases 1.109-1.373, the demo pair
#: 1.437, a CT against the demo CT through a soft-tissue window 1.302, against an MR-like rendering 1.297, against a
#: binary image of its tissue 1.229; a moving image of noise only 1.000 (no warning before: TRE 3.45 -> 5.69 mm), the
#: brain against the chest CT 1.047
UNRELATED_MAX_NMI = 1.02


def similarity_region(masked: bool, fixed_padding: bool, padding_left_out: dict) -> str:
    """What ``metrics["similarity_region"]`` says the similarity figures were measured over."""
    return ("voxels where the moving image has data" + (" inside the fixed mask" if masked else "")
            + (", the fixed image's padding planes left out" if fixed_padding else "")
            + (", CT padding (below air or outside a circular field of view, {fixed} fixed, {moving} moving voxels) "
               "left out".format(**padding_left_out) if any(padding_left_out.values()) else ""))


def similarity_warnings(before: dict, after: dict, two_contrasts: bool) -> list[str]:
    """What the similarity figures before and after registration warn of: a result clearly worse than the
    unregistered image (:func:`worse_than_before`), or images that share almost no information
    (``UNRELATED_MAX_NMI``)."""
    notes = [note for note in [worse_than_before(before, after, two_contrasts)] if note]
    nmi_after = after.get("nmi")
    if nmi_after is not None and nmi_after < UNRELATED_MAX_NMI:
        notes.append(f"the registered images share almost no information (normalised mutual information "
                     f"{nmi_after:.3f}; 1 means none): the deformation is meaningless. Check that both volumes show "
                     "the same anatomy and hold an image (not noise, not an empty or wrongly read volume)")
    return notes


def worse_than_before(before: dict, after: dict, two_contrasts: bool) -> Optional[str]:
    """A warning when the result matches the fixed image clearly worse than the unregistered moving image."""
    lines = []
    ncc_b, ncc_a, nmi_b, nmi_a = before.get("ncc"), after.get("ncc"), before.get("nmi"), after.get("nmi")
    if not two_contrasts and ncc_b is not None and ncc_a is not None and ncc_a < ncc_b - WORSE_NCC_DROP:
        lines.append(f"NCC {ncc_b:.2f} -> {ncc_a:.2f}")
    if nmi_b is not None and nmi_a is not None and nmi_b > 1.0 and nmi_a < nmi_b - WORSE_NMI_SHARE * (nmi_b - 1.0):
        lines.append(f"normalised mutual information {nmi_b:.3f} -> {nmi_a:.3f}")
    if not lines:
        return None
    return (f"the registered moving image matches the fixed image worse than before registration ({', '.join(lines)}): "
            "the result is probably wrong. Check that both images show the same anatomy in the units you meant (one "
            "rescaled, or not in HU?), compare the warped image with the fixed one, or give landmark pairs or an "
            "initial transform")


def inverse_and_consistency(disp: np.ndarray, fixed_geometry: Geometry, moving: Image, moving_mask: Optional[Image],
                            solve_spacing_mm: float) -> tuple[np.ndarray, dict]:
    """(inverse field (3, Zm, Ym, Xm) LPS mm on the moving grid, inverse-consistency error over the
    moving foreground).

    The field is smooth at the working resolution, so on a moving grid much finer than that the
    inverse is solved on the moving grid at ``solve_spacing_mm`` (same span) and interpolated to
    full resolution (512x512x300 CT: 168 s for the full-grid solve), and the consistency error is
    measured at the solve grid's voxels, with the forward field sampled on the fixed grid's
    counterpart at that spacing.
    """
    from ..spatial.inverse import invert_displacement, inverse_consistency_error

    solve = moving.geometry.with_spacing(np.maximum(moving.geometry.spacing, solve_spacing_mm))
    coarse = solve.num_voxels * 4 <= moving.geometry.num_voxels
    if not coarse:
        solve = moving.geometry
    forward_geometry = fixed_geometry.with_spacing(np.maximum(fixed_geometry.spacing, solve_spacing_mm)) \
        if coarse else fixed_geometry
    forward = disp if not coarse else _resized(disp, forward_geometry.shape)
    inv = invert_displacement(forward, forward_geometry, solve, tol_mm=INVERSE_TOLERANCE_MM)
    if moving_mask is not None:
        region = map_mask(moving_mask, solve, "moving mask", "moving image")
    else:  # the moving image's foreground: clearly above its background
        bg = background_value(moving)
        hi = float(np.percentile(moving.array[::2, ::2, ::2], 99))
        seen = moving.array if not coarse else resample(moving, solve).array
        region = seen > bg + 0.1 * (hi - bg)
    # on large grids every second voxel along each axis: an eighth of the work (lung case 1.57 -> 0.29 s; mean
    # 0.0065 -> 0.0067 mm, max 0.24 -> 0.22 mm there)
    stride = 2 if solve.num_voxels > CONSISTENCY_FULL_MAX_VOXELS else 1
    described = "moving mask" if moving_mask is not None else "moving image foreground"
    sampled = region[(slice(None, None, stride),) * 3]
    if not sampled.any():  # a label map or near-constant image has no foreground by this rule (it failed here)
        region, described = None, "the whole moving grid (no foreground found)"
    mean_mm, max_mm = inverse_consistency_error(forward, forward_geometry, inv, solve, mask=region, stride=stride)
    info = {"mean": round(float(mean_mm), 4), "max": round(float(max_mm), 4), "region": described,
            "measured_every_voxels": stride}
    if coarse:
        info["solved_on"] = f"moving grid at {np.round(solve.spacing, 2).tolist()} mm, interpolated to full resolution"
        del region
        release_freed_memory()  # the solve's temporaries: give the heap back before the full-size field
        inv = _resized(inv, moving.geometry.shape)
    return inv, info


def _resized(disp: np.ndarray, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """(3, Z, Y, X) mm field trilinearly resized to another voxel count of the same span (float32),
    slab by slab (512x512x300: the whole-volume resize held 0.5 GB more than its 0.95 GB result)."""
    return resized_by_slabs(torch.from_numpy(np.ascontiguousarray(disp, dtype=np.float32))[None], shape_zyx)


def landmark_figures(transform: Transform, fixed_points: np.ndarray, moving_points: np.ndarray,
                     initial_transform: Optional[AffineMap], guided: bool) -> tuple[np.ndarray, dict]:
    """The landmark pairs seen through the result: (the fixed points mapped into the moving image, the
    metrics' "tre_before" (the images as stored), "tre_start" (through a given initial transform), "tre_after" and
    "landmarks" (how many pairs, and whether their TRE after is an independent check))."""
    warped_points = transform.map_points(fixed_points)
    figures = {"tre_before": tre(fixed_points, moving_points)}
    if initial_transform is not None:
        figures["tre_start"] = tre(initial_transform.apply(fixed_points), moving_points)
    figures["tre_after"] = tre(warped_points, moving_points)
    figures["landmarks"] = {"pairs": int(len(fixed_points)), "guided_registration": guided, "role": (
        "guided the registration: their TRE after is not an independent check" if guided else
        "measured only: their TRE after is an independent check of the registration")}
    return warped_points, figures
