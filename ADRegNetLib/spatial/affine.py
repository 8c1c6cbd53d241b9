r"""Linear maps of physical space: :class:`AffineMap` (fixed -> moving, LPS mm; no SimpleITK)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AffineMap"]


@dataclass(frozen=True)
class AffineMap:
    """Fixed -> moving LPS affine map ``y = matrix @ x + offset`` (mm), the resampling convention.

    Attributes:
        matrix: (3, 3) float64, LPS.
        offset: (3,) float64, mm.
    """

    matrix: np.ndarray
    offset: np.ndarray

    def __post_init__(self) -> None:
        matrix = np.asarray(self.matrix, dtype=np.float64)
        offset = np.asarray(self.offset, dtype=np.float64).reshape(-1)
        if matrix.shape != (3, 3) or offset.shape != (3,):
            raise ValueError(f"an affine map needs a (3, 3) matrix and a (3,) offset, got {matrix.shape} and {offset.shape}")
        if not (np.all(np.isfinite(matrix)) and np.all(np.isfinite(offset))):
            raise ValueError("the affine map has non-finite values")
        if abs(np.linalg.det(matrix)) < 1e-9:
            raise ValueError("the affine matrix is singular (it collapses space); check the transform file")
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "offset", offset)

    @classmethod
    def identity(cls) -> "AffineMap":
        """The identity map."""
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_homogeneous(cls, matrix44: np.ndarray) -> "AffineMap":
        """From a (4, 4) homogeneous LPS matrix (last row 0 0 0 1)."""
        m = np.asarray(matrix44, dtype=np.float64)
        if m.shape != (4, 4) or not np.allclose(m[3], [0, 0, 0, 1]):
            raise ValueError(f"expected a (4, 4) homogeneous matrix with last row 0 0 0 1, got shape {m.shape}")
        return cls(m[:3, :3], m[:3, 3])

    def to_homogeneous(self) -> np.ndarray:
        """(4, 4) homogeneous LPS matrix."""
        out = np.eye(4)
        out[:3, :3] = self.matrix
        out[:3, 3] = self.offset
        return out

    def apply(self, points_lps: np.ndarray) -> np.ndarray:
        """Map (K, 3) fixed-space LPS points (mm) to moving space."""
        return np.asarray(points_lps, dtype=np.float64) @ self.matrix.T + self.offset

    def inverse(self) -> "AffineMap":
        """The moving -> fixed map."""
        inv = np.linalg.inv(self.matrix)
        return AffineMap(inv, -inv @ self.offset)

    def inverse_apply(self, points_lps: np.ndarray) -> np.ndarray:
        """Map (K, 3) moving-space LPS points (mm) back to fixed space."""
        return self.inverse().apply(points_lps)

    def then(self, other: "AffineMap") -> "AffineMap":
        """``other(self(x))``: this map first, then ``other``."""
        return AffineMap(other.matrix @ self.matrix, other.matrix @ self.offset + other.offset)

    def is_identity(self, atol: float = 1e-9) -> bool:
        """True when the map is the identity within ``atol``."""
        return bool(np.allclose(self.matrix, np.eye(3), atol=atol) and np.allclose(self.offset, 0.0, atol=atol))

    def to_dict(self) -> dict:
        """JSON-friendly form (metrics.json)."""
        return {"matrix": self.matrix.tolist(), "offset": self.offset.tolist()}
