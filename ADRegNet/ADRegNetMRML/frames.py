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
  :mod:`ADRegNetMRML.masks`): one in its volume's frame (the transform the volume is under now, or the
  one it had before this module showed it registered) is read as stored, any other is mapped from where
  it is shown. The module never moves a mask or a segmentation: showing the moving volume registered
  leaves them where they are, still in its frame, whenever they were chosen.
* A moving volume under a **linear** transform starts from that transform (the initial alignment,
  fixed -> moving). Under an AD-RegNet result (shown registered by this module) the transform it had
  before is used, recorded on the volume node (a node reference, ``PREVIOUS_PARENT_ROLE``, so it
  survives a scene save and reload); the result itself is never taken as a start.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import vtk

from .geometry import VolumeNodeError, points_ras_to_lps

__all__ = [
    "ROLE_ATTRIBUTE", "is_result_transform", "registration_parent", "initial_transform_lps",
    "points_ras_in_volume_frame", "points_lps_in_volume_frame", "attach_markups_to_volume_frame", "show_under_result",
    "check_fixed_frame", "lps_matrix_to_ras", "PREVIOUS_PARENT_ROLE",
]

#: attribute naming what an AD-RegNet node is ("transform", "inverse-transform", "warped", ...)
ROLE_ATTRIBUTE = "ADRegNet.role"
#: node reference role of a volume shown registered: the transform it had before (none: no reference)
PREVIOUS_PARENT_ROLE = "ADRegNet.previousParent"
# earlier versions: an attribute of the result transform, "ADRegNet.previousParent:<volume ID>" = transform ID.
# Slicer's ReadXMLAttributes splits at the first ':', so a reloaded scene holds "ADRegNet.previousParent" =
# "<volume ID>:<transform ID>" instead; both forms are read.
_LEGACY_PREVIOUS_PARENT = "ADRegNet.previousParent:"

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
    previous = node.GetNodeReference(PREVIOUS_PARENT_ROLE)
    if previous is not None or node.GetScene() is None:
        return previous
    return node.GetScene().GetNodeByID(_legacy_previous_parent_id(parent, node.GetID()) or "")


def _legacy_previous_parent_id(result_transform_node, volume_id: str) -> Optional[str]:
    """The transform ID an earlier version recorded on the result, in its session form or as a reloaded scene
    holds it (module note at ``_LEGACY_PREVIOUS_PARENT``); None when there is none."""
    value = result_transform_node.GetAttribute(_LEGACY_PREVIOUS_PARENT + volume_id)
    if value:
        return value
    reloaded = result_transform_node.GetAttribute(PREVIOUS_PARENT_ROLE) or ""
    volume, _, transform = reloaded.partition(":")
    return transform if volume == volume_id and transform else None


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


def show_under_result(result_transform_node, volume_node, markups_nodes: Sequence = (), show: bool = True) -> None:
    """Show the moving volume (and its point lists) registered, under the result transform, or take it out.

    Showing records the transform the volume had (its starting alignment) as the volume's
    ``PREVIOUS_PARENT_ROLE`` reference, so that hiding restores it and a later run still starts from it,
    also after the scene is saved and reloaded. Point lists are first attached to the volume's frame, so
    they keep marking the same anatomy. Masks and segmentations are never moved: one under the starting
    transform stays in the volume's frame (:mod:`ADRegNetMRML.masks`).

    Args:
        result_transform_node: an AD-RegNet result (fixed -> moving).
        volume_node: the moving volume.
        markups_nodes: its point lists (None entries skipped).
        show: True to show registered, False to take the volume out.
    """
    if result_transform_node is None or volume_node is None:
        return
    markups = [m for m in markups_nodes if m is not None]
    current = volume_node.GetParentTransformNode()
    if show:
        if current is result_transform_node:
            return
        base = registration_parent(volume_node)
        for node in markups:
            attach_markups_to_volume_frame(node, volume_node)
        volume_node.RemoveNodeReferenceIDs(PREVIOUS_PARENT_ROLE)
        if base is not None:
            volume_node.SetNodeReferenceID(PREVIOUS_PARENT_ROLE, base.GetID())
        result_transform_node.RemoveAttribute(_LEGACY_PREVIOUS_PARENT + volume_node.GetID())
        if _legacy_previous_parent_id(result_transform_node, volume_node.GetID()) is not None:
            result_transform_node.RemoveAttribute(PREVIOUS_PARENT_ROLE)  # a reloaded earlier record: now superseded
        for node in [volume_node, *markups]:
            node.SetAndObserveTransformNodeID(result_transform_node.GetID())
        return
    if current is not result_transform_node:
        return
    base = registration_parent(volume_node)
    for node in [volume_node, *[m for m in markups if m.GetParentTransformNode() is result_transform_node]]:
        node.SetAndObserveTransformNodeID(base.GetID() if base is not None else None)
    volume_node.RemoveNodeReferenceIDs(PREVIOUS_PARENT_ROLE)


def lps_matrix_to_ras(matrix_lps: np.ndarray) -> np.ndarray:
    """(4, 4) LPS homogeneous matrix -> RAS (F M F with F = diag(-1, -1, 1, 1))."""
    return _F4 @ np.asarray(matrix_lps, dtype=np.float64) @ _F4

