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
  survives a scene save and reload); the result itself is never taken as a start. One function looks that
  start up (:func:`registration_parent`): the registration reads it as a matrix (:func:`initial_transform_lps`),
  the pair table's "TRE at start" through it as shown (:func:`starting_transform`).
* A **result records the volumes it registered** as node references on the result transform
  (:func:`record_result_volumes`; Slicer keeps references right when a scene import renames node IDs, and
  drops them with a deleted volume). Showing a volume under a result, or warping a segmentation with it, is
  refused for other volumes (:func:`check_result_volumes`), whoever calls it.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import vtk

from .geometry import VolumeNodeError, points_ras_to_lps

__all__ = [
    "ROLE_ATTRIBUTE", "is_result_transform", "registration_parent", "starting_transform", "initial_transform_lps",
    "points_ras_in_volume_frame", "points_lps_in_volume_frame", "attach_markups_to_volume_frame", "show_under_result",
    "check_fixed_frame", "first_non_linear", "lps_matrix_to_ras", "PREVIOUS_PARENT_ROLE", "FIXED_VOLUME_ATTRIBUTE",
    "MOVING_VOLUME_ATTRIBUTE", "RESULT_VOLUME_ROLES", "VOLUME_REFERENCES_ATTRIBUTE", "record_result_volumes",
    "result_is_for", "check_result_volumes",
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
#: hardening a non-linear transform into a volume resamples it (Slicer replaces its voxels): said wherever advised
_HARDEN_RESAMPLES = "hardening a non-linear transform resamples the volume, replacing its voxels: keep a copy"


def _matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def is_result_transform(node) -> bool:
    """True for a grid transform made by this module (fixed -> moving result)."""
    return node is not None and node.GetAttribute(ROLE_ATTRIBUTE) == "transform"


#: the result transform node's attribute and node reference roles naming the volumes it registered (``result_is_for``)
FIXED_VOLUME_ATTRIBUTE = "ADRegNet.fixedVolume"
MOVING_VOLUME_ATTRIBUTE = "ADRegNet.movingVolume"
RESULT_VOLUME_ROLES = (FIXED_VOLUME_ATTRIBUTE, MOVING_VOLUME_ATTRIBUTE)
#: set on a result that records its volumes as node references (attribute "true"): a missing reference then means
#: the volume was deleted. The attributes alone (earlier versions) go stale when a scene is imported into one
#: whose node IDs collide: Slicer renames the IDs and updates node references, not attributes.
VOLUME_REFERENCES_ATTRIBUTE = "ADRegNet.volumeReferences"


def record_result_volumes(transform_node, fixed_volume_node, moving_volume_node) -> None:
    """Record on a result transform node the fixed and moving volumes it registered (node references, which
    follow Slicer's ID changes, and the IDs as attributes, as earlier versions read them)."""
    for role, volume in zip(RESULT_VOLUME_ROLES, (fixed_volume_node, moving_volume_node)):
        transform_node.SetAttribute(role, volume.GetID())
        transform_node.SetNodeReferenceID(role, volume.GetID())
    transform_node.SetAttribute(VOLUME_REFERENCES_ATTRIBUTE, "true")


def _recorded_volume_id(transform_node, role: str) -> tuple[bool, Optional[str]]:
    """(whether the result records its volume of ``role``, that volume's ID now; None once it was deleted)."""
    referenced = transform_node.GetNodeReferenceID(role)
    if referenced:
        return True, referenced
    if transform_node.GetAttribute(VOLUME_REFERENCES_ATTRIBUTE):
        return True, None  # Slicer removed the reference with the volume
    recorded = transform_node.GetAttribute(role)  # an earlier version's record
    return (True, recorded) if recorded else (False, None)


def _unmatched_volumes(transform_node, volumes: dict) -> list[str]:
    """The kinds ("fixed", "moving", among the keys of ``volumes``) whose recorded volume is not the one given
    (None given: no volume, which matches no record); a result that records no volume of a kind matches any."""
    unmatched = []
    for role, kind in zip(RESULT_VOLUME_ROLES, ("fixed", "moving")):
        if kind not in volumes:
            continue
        recorded, volume_id = _recorded_volume_id(transform_node, role)
        if recorded and (volumes[kind] is None or volume_id != volumes[kind].GetID()):
            unmatched.append(kind)
    return unmatched


def result_is_for(transform_node, fixed_volume_node, moving_volume_node) -> bool:
    """True when ``transform_node`` is the result of registering these two volumes (a result that records no
    volumes, made before they were recorded or not by this module, counts as theirs)."""
    return transform_node is not None and not _unmatched_volumes(
        transform_node, {"fixed": fixed_volume_node, "moving": moving_volume_node})


def check_result_volumes(transform_node, action: str, fixed_volume_node=None, moving_volume_node=None) -> None:
    """Refuse to use a result with volumes it did not register (only the volumes given are checked).

    Args:
        transform_node: an AD-RegNet result (fixed -> moving).
        action: what would be done, for the message ("warp a segmentation of 'M' with it").
        fixed_volume_node, moving_volume_node: the volumes it would be used with (None: not checked).

    Raises:
        VolumeNodeError: naming the volumes the result registered, those given and the fix.
    """
    given = {kind: volume for kind, volume in (("fixed", fixed_volume_node), ("moving", moving_volume_node))
             if volume is not None}
    wrong = [f"the {kind} volume '{given[kind].GetName()}'" for kind in _unmatched_volumes(transform_node, given)]
    if not wrong:
        return
    scene = transform_node.GetScene()
    names = []
    for role, kind in ((FIXED_VOLUME_ATTRIBUTE, "fixed"), (MOVING_VOLUME_ATTRIBUTE, "moving")):
        volume_id = _recorded_volume_id(transform_node, role)[1]
        node = scene.GetNodeByID(volume_id) if scene is not None and volume_id else None
        names.append(f"the {kind} volume '{node.GetName()}'" if node is not None else f"a {kind} volume no longer in the scene")
    raise VolumeNodeError(
        f"'{transform_node.GetName()}' is the result of registering {names[1]} to {names[0]}, not {' and '.join(wrong)}: "
        f"it cannot {action}; use it with the volumes it registered, or register these volumes first (Apply)")


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


def first_non_linear(transform_node):
    """The first non-linear transform from ``transform_node`` up through its parents, or None when all are linear.

    The one linearity test of a transform a volume is under (what Slicer's ``IsTransformToWorldLinear`` checks,
    naming the culprit): the starting alignment (:func:`initial_transform_lps`), the panel's line about it, and the
    harden advice of :func:`check_fixed_frame`. ``transform_node`` None (no transform) gives None.
    """
    node = transform_node
    while node is not None:
        if not node.IsLinear():
            return node
        node = node.GetParentTransformNode()
    return None


def starting_transform(moving_volume_node) -> Optional[vtk.vtkGeneralTransform]:
    """World -> the moving volume's frame through its starting transform (``registration_parent``), of any kind.

    The starting alignment as the pair table's "TRE at start" reads it (``pairs.pair_rows``, through whatever the
    views show); :func:`initial_transform_lps` (the registration's start, linear only) reads the same transform
    (``registration_parent``) as a matrix.

    Returns:
        A vtkGeneralTransform mapping world RAS points to the moving volume's RAS frame, or None when the
        volume (or ``moving_volume_node`` itself) is None or not under a transform.
    """
    import slicer

    parent = registration_parent(moving_volume_node) if moving_volume_node is not None else None
    if parent is None:
        return None
    world_to_moving = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, parent, world_to_moving)
    return world_to_moving


def initial_transform_lps(moving_volume_node) -> Optional[np.ndarray]:
    """The fixed -> moving starting transform of a moving volume under a linear transform.

    Returns:
        (4, 4) homogeneous LPS matrix (fixed point -> moving point, mm), or None when the moving
        volume is not under a transform (or only under an AD-RegNet result with no earlier one).

    Raises:
        VolumeNodeError: the transform is not linear (it cannot be a starting alignment).
    """
    parent = registration_parent(moving_volume_node) if moving_volume_node is not None else None
    if parent is None:
        return None
    culprit = first_non_linear(parent)  # named: it may be a parent of a linear transform
    if culprit is not None:
        where = (f"the non-linear transform '{culprit.GetName()}'" if culprit is parent else
                 f"the transform '{parent.GetName()}', which is itself under the non-linear transform '{culprit.GetName()}'")
        raise VolumeNodeError(
            f"moving volume '{moving_volume_node.GetName()}' is under {where}; "
            "a linear transform is used as the starting alignment, a non-linear one is not: harden it (Transforms "
            f"module, Harden; {_HARDEN_RESAMPLES}) or remove it before registering")
    world_to_moving = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformFromWorld(world_to_moving)
    return _F4 @ _matrix_to_numpy(world_to_moving) @ _F4


def check_fixed_frame(fixed_volume_node) -> None:
    """The fixed volume defines the output grid: it must not be under a transform.

    Raises:
        VolumeNodeError: naming the transform and the fix. Under an AD-RegNet result (a volume registered
            earlier as the moving one, still shown registered), the fix is to take it out: hardening the
            result would replace its voxels by the registered ones.
    """
    parent = fixed_volume_node.GetParentTransformNode() if fixed_volume_node is not None else None
    if parent is None:
        return
    name = fixed_volume_node.GetName()
    if is_result_transform(parent):
        start = registration_parent(fixed_volume_node)
        before = (f"; before it was shown registered it was under '{start.GetName()}'" if start is not None
                  else "; before it was shown registered it was under no transform")
        raise VolumeNodeError(
            f"fixed volume '{name}' is shown registered under the AD-RegNet result '{parent.GetName()}' (it was the "
            f"moving volume of that run){before}. The outputs are made on the fixed grid as stored: take it out of "
            "the result (Data module: tick Show transforms and set its transform to None); do not harden the "
            "result into it, which would replace its voxels by the registered ones")
    linear = first_non_linear(parent) is None
    raise VolumeNodeError(
        f"fixed volume '{name}' is under the transform '{parent.GetName()}'; the outputs are made on the fixed grid "
        "as stored: harden the transform (Transforms module, Harden) or remove it"
        + ("" if linear else f" ({_HARDEN_RESAMPLES})"))


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
        show: True to show registered, False to take the volume out (always allowed).

    Raises:
        VolumeNodeError: showing a volume under a result that registered another moving volume.
    """
    if result_transform_node is None or volume_node is None:
        return
    markups = [m for m in markups_nodes if m is not None]
    current = volume_node.GetParentTransformNode()
    if show:
        check_result_volumes(result_transform_node, f"show '{volume_node.GetName()}' registered",
                             moving_volume_node=volume_node)
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

