r"""Volume nodes <-> :class:`ADRegNetLib.spatial.image.Image`: the only place RAS <-> LPS happens.

Slicer's world frame is RAS; ADRegNetLib (like ITK, SimpleITK and transform files) works in LPS.
With ``F = diag(-1, -1, 1)``:

* RAS point / origin = F @ LPS point / origin,
* RAS direction matrix = F @ LPS direction matrix (columns are the voxel axes),
* RAS vector (displacement) = F @ LPS vector,

while spacing and voxel order (numpy (Z, Y, X), x fastest) stay the same.

ADRegNetLib is imported inside the functions that build its objects: point conversions (landmark
placement, the pair table, display) then work before PyTorch is installed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np
import vtk
from vtk.util import numpy_support

if TYPE_CHECKING:
    from ADRegNetLib.spatial.geometry import Geometry
    from ADRegNetLib.spatial.image import Image

__all__ = [
    "LPS_TO_RAS", "VolumeNodeError", "points_lps_to_ras", "points_ras_to_lps", "vectors_lps_to_ras",
    "vectors_ras_to_lps", "geometry_from_volume_node", "image_from_volume_node", "set_volume_node_geometry",
    "volume_node_from_image", "update_volume_node_from_image", "ras_matrices_from_geometry",
]

#: F = diag(-1, -1, 1); its own inverse, so it also maps RAS to LPS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


class VolumeNodeError(ValueError):
    """A volume node cannot be registered; the message says why and what to do."""


# ------------------------------------------------------------------ points and vectors
def points_lps_to_ras(points_lps: np.ndarray) -> np.ndarray:
    """(N, 3) LPS mm points -> (N, 3) RAS mm points."""
    return np.asarray(points_lps, dtype=np.float64).reshape(-1, 3) @ LPS_TO_RAS.T


def points_ras_to_lps(points_ras: np.ndarray) -> np.ndarray:
    """(N, 3) RAS mm points -> (N, 3) LPS mm points."""
    return np.asarray(points_ras, dtype=np.float64).reshape(-1, 3) @ LPS_TO_RAS.T


def vectors_lps_to_ras(vectors_lps: np.ndarray, axis: int = 0) -> np.ndarray:
    """Flip the x and y components of LPS vectors stored along ``axis`` (length 3) -> RAS vectors.

    Args:
        vectors_lps: array with a length-3 (x, y, z) component axis, LPS mm; e.g. a field
            (3, Z, Y, X) with ``axis=0`` or points (N, 3) with ``axis=-1``.
        axis: the component axis.

    Returns:
        Same shape, RAS mm (a new array; float dtype kept).
    """
    arr = np.array(vectors_lps, copy=True)
    if arr.shape[axis] != 3:
        raise ValueError(f"expected 3 vector components along axis {axis}, got shape {arr.shape}")
    moved = np.moveaxis(arr, axis, 0)
    moved[0] *= -1
    moved[1] *= -1
    return arr


vectors_ras_to_lps = vectors_lps_to_ras  # F is its own inverse


def ras_matrices_from_geometry(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """RAS origin (3,) and RAS direction (3, 3) of an LPS :class:`Geometry`."""
    return LPS_TO_RAS @ geometry.origin, LPS_TO_RAS @ geometry.direction


# ------------------------------------------------------------------ volume nodes
def _node_name(node) -> str:
    return node.GetName() if node is not None and node.GetName() else "volume"


def _check_scalar_3d(node, role: str) -> None:
    name = _node_name(node)
    if node is None:
        raise VolumeNodeError(f"{role} volume is not set: select a volume")
    if node.IsA("vtkMRMLTensorVolumeNode"):  # vector (RGB) and diffusion tensor volumes
        raise VolumeNodeError(
            f"{role} volume '{name}' is a vector/RGB volume ({node.GetClassName()}); registration needs a "
            "scalar (grayscale) volume: convert it to a scalar volume first (Vector to Scalar Volume module)"
        )
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise VolumeNodeError(f"{role} volume '{name}' is a {node.GetClassName()}; expected a scalar volume node")
    image_data = node.GetImageData()
    if image_data is None:
        raise VolumeNodeError(f"{role} volume '{name}' has no image data: load or create the volume first")
    comps = image_data.GetNumberOfScalarComponents()
    if comps != 1:
        raise VolumeNodeError(
            f"{role} volume '{name}' has {comps} components per voxel (a vector/RGB volume); registration needs "
            "a scalar (grayscale) volume: convert it to a scalar volume first"
        )
    dims = image_data.GetDimensions()
    if sorted(dims)[1] < 2:  # a single slice is fine: two of them are registered in their plane (engine.planar)
        raise VolumeNodeError(
            f"{role} volume '{name}' is a line or a point (size {dims[0]} x {dims[1]} x {dims[2]} voxels); "
            "registration needs a 3-D volume, or a single slice against another single slice"
        )


def geometry_from_volume_node(node) -> Geometry:
    """LPS :class:`Geometry` of a volume node (from its IJK-to-RAS matrix and image dimensions)."""
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    m = np.array([[ijk_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)])
    spacing = np.asarray(node.GetSpacing(), dtype=np.float64)
    direction_ras = m[:3, :3] / spacing[np.newaxis, :]
    origin_ras = m[:3, 3]
    dims = node.GetImageData().GetDimensions()
    from ADRegNetLib.spatial.geometry import Geometry

    return Geometry(tuple(int(d) for d in dims), spacing, LPS_TO_RAS @ origin_ras, LPS_TO_RAS @ direction_ras)


def image_from_volume_node(node, role: str = "volume", dtype=np.float32) -> Image:
    """Convert a scalar volume node to an :class:`Image` in LPS.

    Args:
        node: vtkMRMLScalarVolumeNode (or label map, for masks) holding 3-D image data.
        role: "fixed", "moving", "mask"... used in error messages.
        dtype: array dtype (float32 for intensities; None keeps the stored type).

    Returns:
        Image whose array is (Z, Y, X) (a copy, detached from the node) and geometry LPS mm, in the
        node's own (local) frame: a parent transform is not applied (see :mod:`ADRegNetMRML.frames`).

    Raises:
        VolumeNodeError: missing, vector volumes, or lines and points (a single slice is accepted).
    """
    _check_scalar_3d(node, role)
    scalars = node.GetImageData().GetPointData().GetScalars()
    geometry = geometry_from_volume_node(node)
    array = numpy_support.vtk_to_numpy(scalars).reshape(geometry.shape)
    array = array.astype(dtype) if dtype is not None else array.copy()
    from ADRegNetLib.spatial.image import Image

    return Image(np.ascontiguousarray(array), geometry, _node_name(node))


def set_volume_node_geometry(node, geometry: Geometry) -> None:
    """Set a volume node's origin, spacing and IJK-to-RAS directions from an LPS geometry."""
    origin_ras, direction_ras = ras_matrices_from_geometry(geometry)
    node.SetOrigin(*[float(v) for v in origin_ras])
    node.SetSpacing(*[float(v) for v in geometry.spacing])
    mat = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            mat.SetElement(r, c, float(direction_ras[r, c]))
    node.SetIJKToRASDirectionMatrix(mat)


def _image_data_from_array(array: np.ndarray, geometry: Geometry) -> vtk.vtkImageData:
    data = vtk.vtkImageData()
    data.SetDimensions(*geometry.size)
    flat = np.ascontiguousarray(array).reshape(-1)
    vtk_array = numpy_support.numpy_to_vtk(flat, deep=True)
    data.GetPointData().SetScalars(vtk_array)
    return data


def update_volume_node_from_image(node, image: Image) -> None:
    """Replace a volume node's voxels and geometry with an :class:`Image` (node keeps its ID and display)."""
    array = image.array.astype(np.uint8) if image.array.dtype == np.bool_ else image.array
    node.SetAndObserveImageData(_image_data_from_array(array, image.geometry))
    set_volume_node_geometry(node, image.geometry)


def volume_node_from_image(scene, image: Image, name: Optional[str] = None,
                           class_name: str = "vtkMRMLScalarVolumeNode", node=None):
    """Put an :class:`Image` into the scene as a scalar volume node (RAS geometry).

    Args:
        scene: vtkMRMLScene.
        image: (Z, Y, X) array on an LPS geometry.
        name: node name (default: ``image.name``); made unique in the scene.
        class_name: node class for a new node (scalar volume or label map).
        node: an existing volume node to fill instead of creating one.

    Returns:
        The volume node, with default display nodes.
    """
    if node is None:
        node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name or image.name))
    update_volume_node_from_image(node, image)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node
