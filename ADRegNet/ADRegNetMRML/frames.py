r"""Which coordinate frame each input lives in, and the moving volume's starting transform.

Registration works in the volumes' own (local) frames: the fixed volume's grid and the moving
volume's grid, whatever transform Slicer shows them under. Rules (each exists because a clinician's
click or an earlier run would otherwise land in the wrong place):

* A **moving landmark marks the moving anatomy displayed under it.** A point list in the same
  transform as the moving volume holds moving-frame coordinates directly; any other point list is
  mapped from where it is shown into the moving volume's frame. After a first run the moving volume
  sits under the result transform, so a point clicked on it is stored at its displayed (fixed-space)
  position; the mapping turns it back into the moving anatomy it marks.
* The module keeps the moving point list in the moving volume's transform (it moves both together),
  so points placed before a run keep marking the same anatomy after it.
* A **mask marks the anatomy shown under it** too (label map, volume or segmentation alike,
  :mod:`ADRegNetMRML.masks`), by the same rule: one under the volume's transform (now: the result's
  while the volume is shown registered) is read as stored, any other is mapped from where it is shown
  through the transforms between, as a point list is. When the module shows the moving volume
  registered it moves its mask and segmentation along when they sit in the volume's transform (as they
  are: their voxels mark the same anatomy under it), and back when it takes the volume out.
* A moving volume under a **linear** transform starts from that transform (the initial alignment,
  fixed -> moving). Under an AD-RegNet result (shown registered by this module) the transform it had
  before is used, recorded on the result node; the result itself is never taken as a start.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import vtk

from .geometry import VolumeNodeError, points_ras_to_lps

__all__ = [
    "ROLE_ATTRIBUTE", "is_result_transform", "registration_parent", "initial_transform_lps",
    "points_ras_in_volume_frame", "points_lps_in_volume_frame", "attach_markups_to_volume_frame", "show_under_result",
    "check_fixed_frame", "lps_matrix_to_ras",
]

#: attribute naming what an AD-RegNet node is ("transform", "inverse-transform", "warped", ...)
ROLE_ATTRIBUTE = "ADRegNet.role"
_PREVIOUS_PARENT = "ADRegNet.previousParent:"  # + node ID, stored on a result transform node

_F4 = np.diag([-1.0, -1.0, 1.0, 1.0])


def _matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def is_result_transform(node) -> bool:
    """True for a grid transform made by this module (fixed -> moving result)."""
    return node is not None and node.GetAttribute(ROLE_ATTRIBUTE) == "transform"


def registration_parent(node):
    """The transform that places ``node`` for registration: its parent, or the one it had before an AD-RegNet result."""
    parent = node.GetParentTransformNode()
    if not is_result_transform(parent):
        return parent
    previous = parent.GetAttribute(_PREVIOUS_PARENT + node.GetID())
    return node.GetScene().GetNodeByID(previous) if previous and node.GetScene() else None


def initial_transform_lps(moving_volume_node) -> Optional[np.ndarray]:
    """The fixed -> moving starting transform of a moving volume under a linear transform.

    Returns:
        (4, 4) homogeneous LPS matrix (fixed point -> moving point, mm), or None when the moving
        volume is not under a transform (or only under an AD-RegNet result with no earlier one).

    Raises:
        VolumeNodeError: the transform is not linear (it cannot be a starting alignment).
    """
    import slicer

    parent = registration_parent(moving_volume_node)
    if parent is None:
        return None
    world_to_moving = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(None, parent, world_to_moving):
        chain, node = [], parent  # name the non-linear one: it may be a parent of a linear transform
        while node is not None:
            chain.append(node)
            node = node.GetParentTransformNode()
        culprit = next((t for t in chain if not t.IsLinear()), parent)
        where = (f"the non-linear transform '{culprit.GetName()}'" if culprit is parent else
                 f"the transform '{parent.GetName()}', which is itself under the non-linear transform '{culprit.GetName()}'")
        raise VolumeNodeError(
            f"moving volume '{moving_volume_node.GetName()}' is under {where}; "
            "a linear transform is used as the starting alignment, a non-linear one is not: harden it (Transforms "
            "module, Harden) or remove it before registering")
    ras = _matrix_to_numpy(world_to_moving)
    return _F4 @ ras @ _F4


def check_fixed_frame(fixed_volume_node) -> None:
    """The fixed volume defines the output grid: it must not be under a transform."""
    parent = fixed_volume_node.GetParentTransformNode() if fixed_volume_node is not None else None
    if parent is not None:
        raise VolumeNodeError(
            f"fixed volume '{fixed_volume_node.GetName()}' is under the transform '{parent.GetName()}'; the outputs are "
            "made on the fixed grid as stored: harden the transform (Transforms module, Harden) or remove it")


def _local_points_ras(node) -> np.ndarray:
    count = node.GetNumberOfControlPoints()
    out = np.zeros((count, 3))
    for k in range(count):
        node.GetNthControlPointPosition(k, out[k])
    return out


def points_ras_in_volume_frame(markups_node, volume_node) -> np.ndarray:
    """(K, 3) RAS mm positions of a point list in the local frame of ``volume_node`` (world when None; rules above)."""
    import slicer

    if markups_node is None:
        return np.zeros((0, 3))
    local = _local_points_ras(markups_node)
    source = markups_node.GetParentTransformNode()
    target = volume_node.GetParentTransformNode() if volume_node is not None else None
    if source is target or len(local) == 0:
        return local
    between = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(source, target, between)
    return np.array([between.TransformPoint(*map(float, p)) for p in local])


def points_lps_in_volume_frame(markups_node, volume_node) -> np.ndarray:
    """(K, 3) LPS mm positions of a point list in the local frame of ``volume_node`` (K may be 0)."""
    return points_ras_to_lps(points_ras_in_volume_frame(markups_node, volume_node))


def attach_markups_to_volume_frame(markups_node, volume_node) -> None:
    """Put a point list in its volume's transform without changing the anatomy its points mark."""
    parent = volume_node.GetParentTransformNode()
    if markups_node is None or markups_node.GetParentTransformNode() is parent:
        return
    positions = points_ras_in_volume_frame(markups_node, volume_node)
    was_modifying = markups_node.StartModify()
    try:
        markups_node.SetAndObserveTransformNodeID(parent.GetID() if parent is not None else None)
        for k, p in enumerate(positions):
            markups_node.SetNthControlPointPosition(k, float(p[0]), float(p[1]), float(p[2]))
    finally:
        markups_node.EndModify(was_modifying)


def show_under_result(result_transform_node, volume_node, nodes: Sequence = (), show: bool = True) -> None:
    """Show the moving volume (with its point lists, masks and segmentations) registered, under the result
    transform, or take it out.

    Showing records the transform the volume had (its starting alignment) on the result node, so that
    hiding restores it and a later run still starts from it. Point lists are first attached to the
    volume's frame, so they keep marking the same anatomy; a mask or segmentation (label map, volume,
    segmentation node) moves along when it sits in the volume's transform, and stays where it is shown
    otherwise (it is read there: :mod:`ADRegNetMRML.masks`). Hiding puts every one of ``nodes`` under the
    result back under the volume's starting transform.

    Args:
        result_transform_node: an AD-RegNet result (fixed -> moving).
        volume_node: the moving volume.
        nodes: point lists, masks and segmentations of the moving volume (None entries skipped); never a
            node of the fixed volume (it would be shown, and read, through the result).
        show: True to show registered, False to take the volume out.
    """
    if result_transform_node is None or volume_node is None:
        return
    unique = {}
    for node in nodes:
        if node is not None and node is not volume_node:
            unique.setdefault(node.GetID(), node)
    markups = [n for n in unique.values() if n.IsA("vtkMRMLMarkupsNode")]
    others = [n for n in unique.values() if not n.IsA("vtkMRMLMarkupsNode")]
    current = volume_node.GetParentTransformNode()
    if show:
        if current is result_transform_node:
            return
        base = registration_parent(volume_node)
        for node in markups:
            attach_markups_to_volume_frame(node, volume_node)
        along = [n for n in others if n.GetParentTransformNode() is current]  # in its frame: moved as they are
        result_transform_node.SetAttribute(_PREVIOUS_PARENT + volume_node.GetID(), base.GetID() if base else "")
        for node in [volume_node, *markups, *along]:
            node.SetAndObserveTransformNodeID(result_transform_node.GetID())
        return
    if current is not result_transform_node:
        return
    base = registration_parent(volume_node)
    for node in [volume_node, *[n for n in unique.values() if n.GetParentTransformNode() is result_transform_node]]:
        node.SetAndObserveTransformNodeID(base.GetID() if base is not None else None)


def lps_matrix_to_ras(matrix_lps: np.ndarray) -> np.ndarray:
    """(4, 4) LPS homogeneous matrix -> RAS (F M F with F = diag(-1, -1, 1, 1))."""
    return _F4 @ np.asarray(matrix_lps, dtype=np.float64) @ _F4

