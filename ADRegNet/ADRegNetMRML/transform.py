r"""Displacement field (LPS, fixed grid) -> Slicer grid transform node (RAS).

The field u lives on the fixed grid and maps a fixed point x to the moving point x + u(x)
(ITK's resampling convention). In Slicer that mapping is the transform *from parent*: a moving
volume placed under the node is resampled into the fixed (world) frame, and
``node.GetTransformFromParent().TransformPoint(fixed_ras)`` returns the matching moving point.
"""
from __future__ import annotations

import numpy as np
import vtk
from vtk.util import numpy_support

from ADRegNetLib.spatial.geometry import Geometry

from .geometry import LPS_TO_RAS, ras_matrices_from_geometry, vectors_lps_to_ras, vectors_ras_to_lps

__all__ = ["INTERPOLATION_MODES", "grid_transform_from_field", "set_grid_transform_node_field",
           "grid_transform_node_from_field", "field_from_grid_transform_node"]

#: vtkGridTransform interpolation modes. "linear" reproduces ITK's DisplacementFieldTransform
#: (trilinear) exactly; "cubic" is what vtkMRMLTransformStorageNode sets when reading a file.
INTERPOLATION_MODES = ("linear", "cubic")


def _check_field(disp_mm: np.ndarray, geometry: Geometry) -> np.ndarray:
    disp = np.asarray(disp_mm)
    if disp.ndim != 4 or disp.shape[0] != 3 or tuple(disp.shape[1:]) != geometry.shape:
        raise ValueError(
            f"displacement field must be (3, Z, Y, X) = (3, {geometry.shape[0]}, {geometry.shape[1]}, "
            f"{geometry.shape[2]}) on the fixed grid, got shape {disp.shape}"
        )
    if not np.all(np.isfinite(disp)):
        raise ValueError("displacement field contains NaN or infinite values; the registration failed")
    return disp


def grid_transform_from_field(disp_mm: np.ndarray, geometry: Geometry,
                              interpolation: str = "linear") -> "vtkOrientedGridTransform":
    """Build a vtkOrientedGridTransform in RAS from an LPS displacement field.

    Args:
        disp_mm: (3, Z, Y, X) float, LPS mm, (x, y, z) components, on ``geometry``.
        geometry: the fixed grid (LPS).
        interpolation: "linear" (matches ITK) or "cubic".

    Returns:
        vtkOrientedGridTransform mapping fixed RAS points to moving RAS points.
    """
    import slicer  # the MRML wheel or Slicer itself; provides vtkOrientedGridTransform

    disp = _check_field(disp_mm, geometry)
    if interpolation not in INTERPOLATION_MODES:
        raise ValueError(f"interpolation must be one of {INTERPOLATION_MODES}, got {interpolation!r}")
    disp_ras = vectors_lps_to_ras(disp.astype(np.float64), axis=0)
    # vtkImageData point order is x fastest: (Z, Y, X, 3) C-order flattening.
    vectors = np.ascontiguousarray(np.moveaxis(disp_ras, 0, -1)).reshape(-1, 3)
    origin_ras, direction_ras = ras_matrices_from_geometry(geometry)

    image = vtk.vtkImageData()
    image.SetDimensions(*geometry.size)
    image.SetOrigin(*[float(v) for v in origin_ras])
    image.SetSpacing(*[float(v) for v in geometry.spacing])
    vtk_vectors = numpy_support.numpy_to_vtk(vectors, deep=True, array_type=vtk.VTK_DOUBLE)
    vtk_vectors.SetName("displacement_ras_mm")
    image.GetPointData().SetScalars(vtk_vectors)

    # vtkOrientedGridTransform ignores vtkImageData's own direction: set it on the transform.
    direction = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            direction.SetElement(r, c, float(direction_ras[r, c]))

    transform = slicer.vtkOrientedGridTransform()
    transform.SetDisplacementGridData(image)
    transform.SetGridDirectionMatrix(direction)
    transform.SetDisplacementScale(1.0)
    transform.SetDisplacementShift(0.0)
    if interpolation == "linear":
        transform.SetInterpolationModeToLinear()
    else:
        transform.SetInterpolationModeToCubic()
    return transform


def set_grid_transform_node_field(node, disp_mm: np.ndarray, geometry: Geometry,
                                  interpolation: str = "linear", inverse_tolerance: float = 1e-3) -> None:
    """Replace the field of an existing vtkMRMLGridTransformNode (resampling convention, "from parent")."""
    transform = grid_transform_from_field(disp_mm, geometry, interpolation)
    # The inverse (used to show landmarks/models moved) is iterative; a tighter tolerance than
    # VTK's default (about 7e-3 mm) costs little.
    transform.SetInverseTolerance(inverse_tolerance)
    node.SetAndObserveTransformFromParent(transform)


def grid_transform_node_from_field(scene, disp_mm: np.ndarray, geometry: Geometry, name: str = "ADRegNet transform",
                                   node=None, interpolation: str = "linear"):
    """Put a field in the scene as a grid transform node (new unless ``node`` is given).

    Args:
        scene: vtkMRMLScene.
        disp_mm: (3, Z, Y, X) LPS mm on ``geometry`` (fixed x -> moving x + u(x)).
        geometry: fixed grid.
        name: name of a new node (made unique).
        node: existing vtkMRMLGridTransformNode to overwrite (the user chose it as the output).
        interpolation: "linear" or "cubic".

    Returns:
        The vtkMRMLGridTransformNode.
    """
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", scene.GenerateUniqueName(name))
    elif not node.IsA("vtkMRMLGridTransformNode") and not node.IsA("vtkMRMLTransformNode"):
        raise ValueError(f"output transform must be a transform node, got {node.GetClassName()}")
    set_grid_transform_node_field(node, disp_mm, geometry, interpolation)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def field_from_grid_transform_node(node) -> tuple[np.ndarray, Geometry]:
    """Read back the field of a grid transform node as (3, Z, Y, X) LPS mm and its LPS geometry.

    Works for nodes whose "from parent" transform is a vtkOrientedGridTransform (as written by this
    module or read from an ITK displacement field file).
    """
    transform = node.GetTransformFromParent()
    if transform is None or not transform.IsA("vtkOrientedGridTransform"):
        # A file read by vtkMRMLTransformStorageNode may hold the field as the inverse of a
        # "to parent" grid; only the direct form is supported here.
        raise ValueError(f"transform node '{node.GetName()}' does not hold a grid transform from parent")
    image = transform.GetDisplacementGrid()
    dims = image.GetDimensions()
    vectors = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).astype(np.float64)
    vectors = vectors * transform.GetDisplacementScale() + transform.GetDisplacementShift()
    disp_ras = np.moveaxis(vectors.reshape(dims[2], dims[1], dims[0], 3), -1, 0)
    direction = transform.GetGridDirectionMatrix()
    d_ras = np.array([[direction.GetElement(r, c) for c in range(3)] for r in range(3)])
    geometry = Geometry(tuple(int(d) for d in dims), np.asarray(image.GetSpacing()),
                        LPS_TO_RAS @ np.asarray(image.GetOrigin()), LPS_TO_RAS @ d_ras)
    return vectors_ras_to_lps(disp_ras, axis=0).astype(np.float32), geometry
