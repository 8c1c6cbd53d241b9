r"""Images with their geometry: the :class:`Image` container and SimpleITK conversion."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..spatial.geometry import Geometry

__all__ = ["Image", "ImageError", "from_sitk", "to_sitk"]


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
        if self.array.ndim != 3:
            raise ImageError(f"{self.name}: expected a 3-D (Z, Y, X) array, got shape {self.array.shape}")
        if tuple(self.array.shape) != self.geometry.shape:
            raise ImageError(
                f"{self.name}: array shape {self.array.shape} (Z, Y, X) does not match geometry size "
                f"{self.geometry.size} (X, Y, Z)"
            )

    def copy(self) -> "Image":
        return Image(self.array.copy(), self.geometry, self.name)


def from_sitk(image: sitk.Image, name: str = "image", dtype=np.float32) -> Image:
    """Convert a 3-D scalar SimpleITK image to an :class:`Image` (array cast to ``dtype``).

    Raises:
        ImageError: for 2-D/4-D or multi-component images.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(
            f"{name}: has {image.GetNumberOfComponentsPerPixel()} components per voxel (a vector/RGB image); "
            "registration needs a scalar (grayscale) volume: convert it to grayscale first"
        )
    if image.GetDimension() != 3:
        raise ImageError(
            f"{name}: is {image.GetDimension()}-D with size {image.GetSize()}; registration needs a 3-D volume"
            + (" (for a time series, extract one 3-D frame first)" if image.GetDimension() == 4 else "")
        )
    array = sitk.GetArrayFromImage(image)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return Image(array, Geometry.from_sitk(image), name)


def to_sitk(image: Image, dtype=None) -> sitk.Image:
    """Convert an :class:`Image` to SimpleITK (geometry copied; ``dtype`` casts the array first)."""
    array = image.array if dtype is None else image.array.astype(dtype)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    out = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    image.geometry.apply_to_sitk(out)
    return out
