r"""Image grid geometry in physical LPS millimetres.

A :class:`Geometry` is what ITK calls the image information: the size (voxels along x, y, z),
the spacing (mm), the origin (the physical LPS position of voxel (0, 0, 0), mm) and the 3x3
direction matrix whose *columns* are the physical directions of the x, y and z voxel axes.

    physical = origin + direction @ (spacing * index_xyz)

Axis orders (contract, see DESIGN.md):

* ``size`` is (X, Y, Z); the matching numpy/torch ``shape`` is (Z, Y, X).
* points and vectors are (x, y, z) in LPS mm.
* Normalised grid coordinates are those of ``torch.nn.functional.grid_sample`` with
  ``align_corners=True``: -1 is the centre of the first voxel and +1 the centre of the last
  one along each axis, channels in (x, y, z) order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["Geometry", "GeometryError"]


class GeometryError(ValueError):
    """A geometry is not usable (bad spacing, singular direction, wrong size)."""


def _as_vec3(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape != (3,):
        raise GeometryError(f"{name} must have 3 values (x, y, z), got {arr.shape[0]}: {arr.tolist()}")
    if not np.all(np.isfinite(arr)):
        raise GeometryError(f"{name} must be finite, got {arr.tolist()}")
    return arr


@dataclass(frozen=True)
class Geometry:
    """Physical layout of a 3-D voxel grid (LPS, mm).

    Attributes:
        size: voxels along (x, y, z).
        spacing: voxel size along (x, y, z), mm, all > 0.
        origin: LPS position of the centre of voxel (0, 0, 0), mm.
        direction: (3, 3) matrix; column k is the unit LPS direction of voxel axis k.
    """

    size: tuple[int, int, int]
    spacing: np.ndarray = field(default_factory=lambda: np.ones(3))
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        size = tuple(int(s) for s in self.size)
        if len(size) != 3 or min(size) < 1:
            raise GeometryError(f"size must be 3 positive voxel counts (x, y, z), got {self.size}")
        spacing = _as_vec3(self.spacing, "spacing")
        if np.any(spacing <= 0):
            raise GeometryError(
                f"spacing must be positive in every axis, got {spacing.tolist()} mm; "
                "fix the image header (voxel size) before registering"
            )
        origin = _as_vec3(self.origin, "origin")
        direction = np.asarray(self.direction, dtype=np.float64)
        if direction.shape != (3, 3) or not np.all(np.isfinite(direction)):
            raise GeometryError(f"direction must be a finite 3x3 matrix, got shape {direction.shape}")
        if abs(np.linalg.det(direction)) < 1e-6:
            raise GeometryError("direction matrix is singular; the image header is corrupt")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    # ----------------------------------------------------------------- views
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (Z, Y, X) of an image on this grid."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.size))

    @property
    def index_to_physical_matrix(self) -> np.ndarray:
        """(3, 3) matrix ``direction @ diag(spacing)``: index steps (x, y, z) -> LPS mm."""
        return self.direction @ np.diag(self.spacing)

    @property
    def extent_mm(self) -> np.ndarray:
        """Physical length of each axis, voxel edge to voxel edge, mm (x, y, z)."""
        return self.spacing * np.asarray(self.size)

    def center(self) -> np.ndarray:
        """LPS position of the grid centre, mm."""
        return self.index_to_physical(np.asarray([(np.asarray(self.size) - 1) / 2.0]))[0]

    # ------------------------------------------------------------ mappings
    def index_to_physical(self, index_xyz: np.ndarray) -> np.ndarray:
        """Map continuous voxel indices to physical points.

        Args:
            index_xyz: (N, 3) continuous indices in (x, y, z) order (0 = first voxel centre).

        Returns:
            (N, 3) LPS points, mm.
        """
        idx = np.asarray(index_xyz, dtype=np.float64).reshape(-1, 3)
        return idx @ self.index_to_physical_matrix.T + self.origin

    def physical_to_index(self, points_lps: np.ndarray) -> np.ndarray:
        """Map physical LPS points (N, 3) in mm to continuous (x, y, z) indices (N, 3)."""
        pts = np.asarray(points_lps, dtype=np.float64).reshape(-1, 3)
        inv = np.linalg.inv(self.index_to_physical_matrix)
        return (pts - self.origin) @ inv.T

    def contains(self, points_lps: np.ndarray, margin_voxels: float = 0.5) -> np.ndarray:
        """(N,) bool: which LPS points lie inside the grid (up to ``margin_voxels`` past the edge centres)."""
        idx = self.physical_to_index(points_lps)
        upper = np.asarray(self.size) - 1 + margin_voxels
        return np.all((idx >= -margin_voxels) & (idx <= upper), axis=1)

    def physical_to_normalized_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Affine (A, b) with ``normalized = A @ physical + b`` (grid_sample, align_corners=True).

        An axis with a single voxel maps to 0.
        """
        size = np.asarray(self.size, dtype=np.float64)
        scale = np.where(size > 1, 2.0 / np.maximum(size - 1, 1), 0.0)
        inv = np.linalg.inv(self.index_to_physical_matrix)
        a = np.diag(scale) @ inv
        b = -a @ self.origin - np.where(size > 1, 1.0, 0.0)
        return a, b

    def vector_mm_to_normalized_matrix(self) -> np.ndarray:
        """(3, 3) matrix taking an LPS displacement in mm to normalised grid units (x, y, z)."""
        return self.physical_to_normalized_affine()[0]

    # -------------------------------------------------------------- derived
    def with_size(self, size_xyz: Sequence[int]) -> "Geometry":
        """The grid with another voxel count whose first and last voxel *centres* stay in place.

        This is the geometry that matches ``align_corners=True`` resizing: normalised coordinates
        mean the same physical point on both grids, so a field upsampled with
        ``F.interpolate(..., align_corners=True)`` needs no shift.
        """
        new = np.asarray([int(s) for s in size_xyz])
        old = np.asarray(self.size)
        spacing = np.where(new > 1, self.spacing * (old - 1) / np.maximum(new - 1, 1), self.spacing * old)
        return Geometry(tuple(int(s) for s in new), spacing, self.origin.copy(), self.direction.copy())

    def with_spacing(self, spacing_mm: float | Sequence[float]) -> "Geometry":
        """The grid with about ``spacing_mm`` voxels over the same first-to-last centre span."""
        target = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
        span = self.spacing * (np.asarray(self.size) - 1)
        new = np.maximum(np.round(span / target).astype(int) + 1, 2)
        new = np.where(np.asarray(self.size) == 1, 1, new)
        return self.with_size(tuple(int(s) for s in new))

    def allclose(self, other: "Geometry", atol: float = 1e-4) -> bool:
        """True when both grids are the same within ``atol`` (mm and direction cosines)."""
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )

    # ----------------------------------------------------------- SimpleITK
    @classmethod
    def from_sitk(cls, image) -> "Geometry":
        """Geometry of a 3-D ``SimpleITK.Image``."""
        if image.GetDimension() != 3:
            raise GeometryError(f"expected a 3-D image, got {image.GetDimension()}-D")
        return cls(
            size=tuple(image.GetSize()),
            spacing=np.asarray(image.GetSpacing()),
            origin=np.asarray(image.GetOrigin()),
            direction=np.asarray(image.GetDirection()).reshape(3, 3),
        )

    def apply_to_sitk(self, image) -> None:
        """Copy spacing, origin and direction onto a ``SimpleITK.Image`` of matching size."""
        if tuple(image.GetSize()) != self.size:
            raise GeometryError(f"image size {image.GetSize()} does not match geometry size {self.size}")
        image.SetSpacing([float(v) for v in self.spacing])
        image.SetOrigin([float(v) for v in self.origin])
        image.SetDirection([float(v) for v in self.direction.reshape(-1)])

    def to_dict(self) -> dict:
        return {
            "size": list(self.size),
            "spacing": self.spacing.tolist(),
            "origin": self.origin.tolist(),
            "direction": self.direction.reshape(-1).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(tuple(d["size"]), d["spacing"], d["origin"], np.asarray(d["direction"]).reshape(3, 3))
