r"""Two single slices (2-D images, or volumes one voxel thick) registered in their plane.

The engine works on volumes: its working grid, the network's U-Net, the MIND features and the local NCC windows
need some depth. A pair of single slices is therefore registered as two slabs: each slice repeated
``SLAB_SLICES`` times along its normal, ``slab_spacing_mm`` apart, the original slice in the middle, the moving
slab moved along the normal into the fixed slice's plane (parallel slices any distance apart overlap). The
images do not change along the normal, so no similarity sees motion along it; the pipeline makes the field
exactly planar before anything is measured or written through it (:meth:`Plane.project`: the middle slice's
in-plane motion on every slice, none along the normal), and :meth:`Plane.sliced` returns the middle slice on the
slices' own grids with the planes' distance added back along the normal.

What comes back is a field on the fixed slice (one voxel thick) that maps each of its points into the moving
slice's plane: ``metrics["planar"]`` says so and gives the planes' distance; TRE is measured in the plane (the
moving landmarks moved with their slice). Slices that are not parallel (more than ``MAX_PLANE_ANGLE_DEG`` apart),
one slice against a volume, or an initial transform with slices are refused with a message that says what to do.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import numpy as np

from ..spatial.geometry import Geometry
from ..spatial.image import Image
from ..spatial.transform import Transform
from .api import RegistrationError, RegistrationResult
from .settings import QUALITY_SETTINGS

__all__ = ["SLAB_SLICES", "SLAB_WORKING_VOXELS", "MAX_PLANE_ANGLE_DEG", "Plane", "slice_axis", "slab", "in_plane"]

#: slices of each slab (odd: the original slice is the middle one; ``inputs.check_inputs`` leaves the slab's depth
#: out of its 16 voxels per axis). Everything at the images' own resolution (normalisation, the outputs, the
#: inverse) is done on this many copies: a 1080 x 1455 slice at 0.2 mm (OASIS slice 2 -> 1 upsampled, fast)
#: took 14.5 s with 17, 4.9 s with 5 (same Dice on OASIS pairs 2 -> 1, 4 -> 3, 6 -> 5: 0.512 / 0.450 / 0.403
#: against 0.512 / 0.449 / 0.407)
SLAB_SLICES = 5
#: the slabs are this many working voxels deep (the quality's working spacing): their slices are that depth over
#: ``SLAB_SLICES - 1`` apart. Measured (thirty-sixth session, 17-slice slabs, OASIS slices 2 -> 1, 4 -> 3, 6 -> 5,
#: fast / balanced, Dice of the manual labels; ``benchmarks.slices2d``): 16 working voxels deep (17 working planes)
#: 0.454 / 0.457 in 1.3-3.0 s, 8 (9 planes) 0.457 / 0.460 in 0.9-2.7 s, 4 (5 planes) 0.456 / 0.458 in 0.7-2.2 s
SLAB_WORKING_VOXELS = 4.0
#: two slices whose normals differ by more than this are not registered in one plane
MAX_PLANE_ANGLE_DEG = 1.0
#: the Image arguments of ``register()`` beside fixed and moving that follow the images into the slabs
_IMAGE_ARGUMENTS = ("fixed_mask", "moving_mask", "rigid_regions", "local_region")


def slice_axis(geometry: Geometry) -> Optional[int]:
    """The voxel axis (0: x, 1: y, 2: z) along which ``geometry`` is one voxel thick, when exactly one is."""
    thin = [k for k, n in enumerate(geometry.size) if n == 1]
    return thin[0] if len(thin) == 1 else None


def slab(image: Image, axis: int, spacing_mm: float, count: int = SLAB_SLICES,
         shift_mm: Optional[np.ndarray] = None) -> Image:
    """``image`` (one voxel thick along voxel ``axis``) repeated ``count`` times along that axis, ``spacing_mm``
    apart, its own slice the middle one (index ``count // 2``): same voxels in every slice, same in-plane grid;
    moved by ``shift_mm`` ((3,) LPS mm) when given."""
    g = image.geometry
    size = list(g.size)
    size[axis] = count
    spacing = np.array(g.spacing, dtype=np.float64)
    spacing[axis] = spacing_mm
    origin = g.origin - (count // 2) * spacing_mm * g.direction[:, axis] + (0.0 if shift_mm is None else shift_mm)
    array = np.repeat(image.array, count, axis=2 - axis)  # (Z, Y, X): voxel axis x is array axis 2
    return Image(array, Geometry(tuple(size), spacing, origin, g.direction), image.name)


def _middle(array: np.ndarray, axis: int) -> np.ndarray:
    """The middle slice of a (..., Z, Y, X) array along voxel ``axis``, kept one voxel thick."""
    array_axis = array.ndim - 1 - axis
    return np.ascontiguousarray(np.take(array, [array.shape[array_axis] // 2], axis=array_axis))


@dataclass(frozen=True)
class Plane:
    """The geometry of a pair of parallel single slices registered as slabs.

    Attributes:
        fixed_axis, moving_axis: the voxel axis (0: x, 1: y, 2: z) each slice is one voxel thick along.
        normal: (3,) unit LPS normal of the fixed slice.
        offset_mm: signed distance from the fixed slice's plane to the moving slice's, along ``normal``.
        slab_spacing_mm: the slabs' slice distance.
    """

    fixed_axis: int
    moving_axis: int
    normal: np.ndarray
    offset_mm: float
    slab_spacing_mm: float

    @property
    def shift_mm(self) -> np.ndarray:
        """(3,) LPS mm from the fixed slice's plane to the moving slice's, along the normal."""
        return self.offset_mm * self.normal

    def project(self, disp_mm: np.ndarray) -> np.ndarray:
        """The planar field of a (3, Z, Y, X) LPS mm displacement on the fixed slab (the moving slab moved into
        the fixed plane): the middle slice's motion in the plane on every slice, none along the normal. Returns a
        new float32 array of the same shape."""
        return np.ascontiguousarray(np.broadcast_to(_in_plane(_middle(disp_mm, self.fixed_axis), self.normal),
                                                    disp_mm.shape))

    def sliced(self, result: RegistrationResult, fixed: Geometry, moving: Geometry) -> RegistrationResult:
        """``result`` (of the slabs, its field made planar by :meth:`project`) on the slices' own grids, the planes'
        distance added back: each fixed point maps into the moving slice's plane, each moving point into the fixed
        slice's."""
        shift = self.shift_mm.astype(np.float32)[:, None, None, None]
        disp = _middle(result.disp_mm, self.fixed_axis) + shift
        inverse = None
        if result.inverse_disp_mm is not None:
            inverse = _in_plane(_middle(result.inverse_disp_mm, self.moving_axis), self.normal) - shift
        warped_points = result.warped_fixed_landmarks
        if warped_points is not None:
            warped_points = warped_points + self.shift_mm

        def on_fixed(image: Optional[Image]) -> Optional[Image]:
            return None if image is None else Image(_middle(image.array, self.fixed_axis), fixed, image.name)

        metrics = dict(result.metrics, planar={
            "slices": "two single slices, registered in their plane",
            "slab_slices": SLAB_SLICES, "slab_spacing_mm": round(self.slab_spacing_mm, 4),
            "plane_distance_mm": round(self.offset_mm, 4),
            "note": "the working grid and the timings are those of the slabs, every other figure is the same on "
                    "each of their slices; TRE is measured in the plane"})
        return replace(result, disp_mm=disp, geometry=fixed, warped=on_fixed(result.warped),
                       jacobian=on_fixed(result.jacobian), before=on_fixed(result.before), metrics=metrics,
                       transform=Transform(fixed, disp), inverse_disp_mm=inverse, moving_geometry=moving,
                       warped_fixed_landmarks=warped_points)


def _in_plane(disp_mm: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """(3, ...) LPS mm displacements without their part along the unit ``normal`` (float32)."""
    along = np.tensordot(normal, disp_mm.astype(np.float64), axes=(0, 0))
    return (disp_mm - normal.reshape((3,) + (1,) * (disp_mm.ndim - 1)) * along[None]).astype(np.float32)


def _plane_of(fixed: Image, moving: Image, working_spacing_mm: float) -> Optional[Plane]:
    """The :class:`Plane` of two single slices (slabs ``SLAB_WORKING_VOXELS`` of ``working_spacing_mm`` deep), None
    for two volumes; refuses a mixed or a tilted pair."""
    for image, role in ((fixed, "fixed"), (moving, "moving")):
        if sum(n == 1 for n in image.geometry.size) > 1:
            raise RegistrationError(f"the {role} image is a line or a point (size {list(image.geometry.size)}); "
                                    "registration needs two volumes, or two single slices (2-D images)")
    fixed_axis, moving_axis = slice_axis(fixed.geometry), slice_axis(moving.geometry)
    if fixed_axis is None and moving_axis is None:
        return None
    if fixed_axis is None or moving_axis is None:
        which = "fixed" if fixed_axis is not None else "moving"
        other = "moving" if which == "fixed" else "fixed"
        raise RegistrationError(
            f"the {which} image is a single slice (size {list((fixed if which == 'fixed' else moving).geometry.size)}) "
            f"and the {other} image is not: slice-to-volume registration is not supported; give two single slices "
            "(2-D images) to register in their plane, or two volumes")
    normal = fixed.geometry.direction[:, fixed_axis]
    moving_normal = moving.geometry.direction[:, moving_axis]
    angle = float(np.degrees(np.arccos(min(1.0, abs(float(normal @ moving_normal))))))
    if angle > MAX_PLANE_ANGLE_DEG:
        raise RegistrationError(
            f"the two slices lie in planes {angle:.1f} degrees apart (at most {MAX_PLANE_ANGLE_DEG:g} accepted): "
            "single slices are registered in their common plane; resample the moving slice into the fixed "
            "slice's plane first, or register the volumes they were cut from")
    spacing = SLAB_WORKING_VOXELS * working_spacing_mm / (SLAB_SLICES - 1)
    offset = float(normal @ (moving.geometry.origin - fixed.geometry.origin))
    return Plane(fixed_axis, moving_axis, np.asarray(normal, dtype=np.float64), offset, spacing)


def in_plane(register_volumes: Callable[..., RegistrationResult], fixed: Image, moving: Image,
             **kwargs: Any) -> RegistrationResult:
    """``register_volumes(fixed, moving, **kwargs)`` (``pipeline.register``), or for two single slices the same
    on their slabs, its field planar, returned on the slices' grids (see the module's docstring).

    Masks, rigid regions and local regions given as single slices become slabs with their images; the moving
    landmarks (LPS mm, points of the moving slice) move with it into the fixed slice's plane, so TRE is measured
    in the plane. Whatever the pipeline checks (a quality's name, the landmarks' shape) is left to it."""
    quality_name = kwargs.get("quality", "balanced")
    quality = QUALITY_SETTINGS.get(quality_name if isinstance(quality_name, str) else "balanced",
                                   QUALITY_SETTINGS["balanced"])
    plane = (_plane_of(fixed, moving, quality.working_spacing_mm) if isinstance(fixed, Image) and
             isinstance(moving, Image) else None)
    if plane is None:
        return register_volumes(fixed, moving, **kwargs)
    if kwargs.get("initial_transform") is not None:
        raise RegistrationError("an initial transform is not taken with two single slices (2-D images): they are "
                                "pre-aligned in their plane; leave it out, or register the volumes they were cut from")
    for name in _IMAGE_ARGUMENTS:
        image = kwargs.get(name)
        axis = slice_axis(image.geometry) if isinstance(image, Image) else None
        if axis is not None:
            kwargs[name] = slab(image, axis, plane.slab_spacing_mm,
                                shift_mm=-plane.shift_mm if name == "moving_mask" else None)
    try:
        points = np.asarray(kwargs.get("moving_landmarks"), dtype=np.float64)
    except (TypeError, ValueError):  # the pipeline says what is wrong with them
        points = None
    if points is not None and points.ndim == 2 and points.shape[1:] == (3,):
        kwargs["moving_landmarks"] = points - plane.shift_mm
    result = register_volumes(slab(fixed, plane.fixed_axis, plane.slab_spacing_mm),
                              slab(moving, plane.moving_axis, plane.slab_spacing_mm, shift_mm=-plane.shift_mm),
                              plane=plane, **kwargs)
    return plane.sliced(result, fixed.geometry, moving.geometry)
