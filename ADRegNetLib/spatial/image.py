r"""Images with their geometry: the :class:`Image` container (no SimpleITK; files live in ``io``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Geometry

__all__ = ["Image", "ImageError"]


class ImageError(ValueError):
    """An image cannot be used for registration; the message says why and what to do."""


@dataclass
class Image:
    """A 3-D scalar image that never leaves its geometry.

    Attributes:
        array: (Z, Y, X) numpy array (float32 for intensities, integer for labels, bool for masks).
        geometry: its grid in LPS mm.
        name: a label for messages (file name, node name).
    """

    array: np.ndarray
    geometry: Geometry
    name: str = "image"

    def __post_init__(self) -> None:
        if not isinstance(self.array, np.ndarray):  # a torch tensor failed later, deep inside numpy
            hint = " (a torch tensor: give tensor.detach().cpu().numpy())" if type(self.array).__module__.startswith(
                "torch") else ""
            raise ImageError(f"{self.name}: the array must be a numpy array, got a {type(self.array).__name__}{hint}")
        if self.array.ndim != 3:
            raise ImageError(f"{self.name}: expected a 3-D (Z, Y, X) array, got shape {self.array.shape}")
        if tuple(self.array.shape) != self.geometry.shape:
            raise ImageError(
                f"{self.name}: array shape {self.array.shape} (Z, Y, X) does not match geometry size "
                f"{self.geometry.size} (X, Y, Z)"
            )

    def copy(self) -> "Image":
        """A deep copy of the array with the same geometry and name."""
        return Image(self.array.copy(), self.geometry, self.name)

    def with_array(self, array: np.ndarray, name: str | None = None) -> "Image":
        """A new image on the same grid holding ``array`` ((Z, Y, X), same shape)."""
        return Image(array, self.geometry, self.name if name is None else name)
