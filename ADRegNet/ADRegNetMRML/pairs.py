r"""Landmark pairs as a clinician edits them: place a pair, list, jump to, rename, delete; TRE per pair.

Placing a pair (:class:`PairPlacement`): a click in the fixed volume, then one on its partner in
the moving volume. Slicer's markups widget fires ``PointPositionDefinedEvent`` *inside* its
``PlacePoint`` and, with place-mode persistence off, sets the interaction mode back to "view"
right after the event returns (vtkSlicerMarkupsWidget::PlacePoint). Switching to the moving list
from inside the event was therefore undone at once, and the second click placed nothing. The
switch is deferred to the next event-loop turn through ``defer`` (``qt.QTimer.singleShot(0, f)``
in Slicer; a queue in tests).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .frames import attach_markups_to_volume_frame, points_lps_in_volume_frame, starting_transform
from .geometry import points_lps_to_ras, points_ras_to_lps
from .landmarks import LandmarkError, markups_labels, next_pair_label

__all__ = ["PairRow", "pair_rows", "rename_pair", "DeletedPair", "delete_pair", "restore_pair", "jump_to_pair", "PairPlacement",
           "GUIDING_PAIRS_ATTRIBUTE", "mark_guiding_pairs"]

#: attribute of a result transform node: the landmark pairs (fixed and moving LPS mm, in their volumes'
#: frames) that pulled that registration, as JSON; a pair still at those positions is not an independent check
GUIDING_PAIRS_ATTRIBUTE = "ADRegNet.guidingPairs"
#: a pair counts as one of them while both its points stay within this distance of where they were, mm
GUIDING_PAIR_TOLERANCE_MM = 0.05


@dataclass
class PairRow:
    """One row of the landmark-pair table.

    Attributes:
        index: position in both lists.
        label: the fixed point's label (or the moving one's when the fixed point is missing).
        fixed_lps, moving_lps: (3,) LPS mm in the fixed / moving volume's frame, None when missing.
        tre_before_mm: |moving - fixed| with the volumes as stored, None for an incomplete pair.
        tre_start_mm: |A(fixed) - moving| through the moving volume's starting transform A (the linear
            transform it is shown under, or was before it was shown registered): what the views show before
            registration; None without one (then the views show ``tre_before_mm``).
        tre_after_mm: |T(fixed) - moving| through the result transform, None without one.
        guided: the pair, at these positions, pulled the registration of that transform: its error
            after is what the registration was asked to reach, not an independent check.
    """

    index: int
    label: str
    fixed_lps: Optional[np.ndarray]
    moving_lps: Optional[np.ndarray]
    tre_before_mm: Optional[float] = None
    tre_after_mm: Optional[float] = None
    tre_start_mm: Optional[float] = None
    guided: bool = False

    @property
    def complete(self) -> bool:
        return self.fixed_lps is not None and self.moving_lps is not None

    @property
    def tre_shown_before_mm(self) -> Optional[float]:
        """The error the views showed before registration: at the start when there is a starting transform."""
        return self.tre_start_mm if self.tre_start_mm is not None else self.tre_before_mm


def pair_rows(fixed_node, moving_node, fixed_volume_node, moving_volume_node, transform_node=None) -> list[PairRow]:
    """The pair table: positions in the volumes' frames and TRE before (as stored and, with a starting
    transform, at the start) and after per pair.

    Args:
        fixed_node, moving_node: point lists (either may be None).
        fixed_volume_node, moving_volume_node: their volumes.
        transform_node: an AD-RegNet result (fixed -> moving, "from parent") for TRE after, or None.
    """
    fixed = points_lps_in_volume_frame(fixed_node, fixed_volume_node)
    moving = points_lps_in_volume_frame(moving_node, moving_volume_node)
    f_labels = markups_labels(fixed_node) if fixed_node is not None else []
    m_labels = markups_labels(moving_node) if moving_node is not None else []
    mapping = transform_node.GetTransformFromParent() if transform_node is not None else None
    start = starting_transform(moving_volume_node)  # the registration's start (registration_parent)
    guiding = _guiding_pairs(transform_node)
    rows = []
    for k in range(max(len(fixed), len(moving))):
        f = fixed[k] if k < len(fixed) else None
        m = moving[k] if k < len(moving) else None
        label = (f_labels[k] if k < len(f_labels) and f_labels[k] else m_labels[k] if k < len(m_labels) else "") \
            or f"P-{k + 1}"
        row = PairRow(k, label, f, m)
        if row.complete:
            row.tre_before_mm = float(np.linalg.norm(m - f))
            if start is not None:
                started_ras = start.TransformPoint(*map(float, points_lps_to_ras(f)[0]))
                row.tre_start_mm = float(np.linalg.norm(points_ras_to_lps(started_ras)[0] - m))
            if mapping is not None:
                mapped_ras = mapping.TransformPoint(*map(float, points_lps_to_ras(f)[0]))
                row.tre_after_mm = float(np.linalg.norm(points_ras_to_lps(mapped_ras)[0] - m))
            row.guided = bool(len(guiding)) and bool(np.any(
                (np.linalg.norm(guiding[:, 0] - f, axis=1) <= GUIDING_PAIR_TOLERANCE_MM)
                & (np.linalg.norm(guiding[:, 1] - m, axis=1) <= GUIDING_PAIR_TOLERANCE_MM)))
        rows.append(row)
    return rows


def mark_guiding_pairs(transform_node, fixed_lps: np.ndarray, moving_lps: np.ndarray) -> None:
    """Record on a result transform node the pairs that pulled its registration (see :data:`GUIDING_PAIRS_ATTRIBUTE`)."""
    pairs = np.stack([np.asarray(fixed_lps, float), np.asarray(moving_lps, float)], axis=1)
    transform_node.SetAttribute(GUIDING_PAIRS_ATTRIBUTE, json.dumps(np.round(pairs, 4).tolist()))


def _guiding_pairs(transform_node) -> np.ndarray:
    """(K, 2, 3) fixed and moving LPS of the pairs that guided ``transform_node``'s registration (K may be 0)."""
    text = transform_node.GetAttribute(GUIDING_PAIRS_ATTRIBUTE) if transform_node is not None else None
    try:
        pairs = np.asarray(json.loads(text), dtype=float) if text else np.zeros((0, 2, 3))
    except (ValueError, TypeError):  # an attribute edited by hand: no pair is marked
        return np.zeros((0, 2, 3))
    return pairs if pairs.ndim == 3 and pairs.shape[1:] == (2, 3) else np.zeros((0, 2, 3))


def _check_index(fixed_node, moving_node, index: int) -> None:
    count = max(n.GetNumberOfControlPoints() for n in (fixed_node, moving_node) if n is not None)
    if not 0 <= index < count:
        raise LandmarkError(f"there is no landmark pair {index + 1}; the lists hold {count} pairs")


def rename_pair(fixed_node, moving_node, index: int, label: str) -> None:
    """Give both points of pair ``index`` the label ``label``."""
    _check_index(fixed_node, moving_node, index)
    label = str(label).strip()
    if not label:
        raise LandmarkError("a landmark pair needs a non-empty name")
    for node in (fixed_node, moving_node):
        if node is not None and index < node.GetNumberOfControlPoints():
            node.SetNthControlPointLabel(index, label)


@dataclass(frozen=True)
class DeletedPair:
    """A pair removed by :func:`delete_pair`, all :func:`restore_pair` needs to put it back.

    Attributes:
        index: where it was in both lists.
        node_ids: the fixed and moving point lists' node IDs (None for a list not given).
        points: per list, the point as it was (position in the list's own frame, label, description, locked,
            selected, visible, orientation, associated node), or None where that list had no point there.
    """

    index: int
    node_ids: tuple
    points: tuple


def _point_state(node, index: int) -> Optional[dict]:
    if node is None or index >= node.GetNumberOfControlPoints():
        return None
    position = [0.0, 0.0, 0.0]
    node.GetNthControlPointPosition(index, position)
    return {"position": position, "label": node.GetNthControlPointLabel(index),
            "description": node.GetNthControlPointDescription(index),
            "locked": bool(node.GetNthControlPointLocked(index)), "selected": bool(node.GetNthControlPointSelected(index)),
            "visible": bool(node.GetNthControlPointVisibility(index)),
            "orientation": list(node.GetNthControlPointOrientationMatrix(index)),
            "associated": node.GetNthControlPointAssociatedNodeID(index)}


def delete_pair(fixed_node, moving_node, index: int) -> DeletedPair:
    """Remove pair ``index`` from both lists (later pairs move up by one, so pairs stay matched).

    Returns:
        what :func:`restore_pair` needs to put the pair back.
    """
    _check_index(fixed_node, moving_node, index)
    deleted = DeletedPair(index, tuple(None if n is None else n.GetID() for n in (fixed_node, moving_node)),
                          tuple(_point_state(n, index) for n in (fixed_node, moving_node)))
    for node in (fixed_node, moving_node):
        if node is not None and index < node.GetNumberOfControlPoints():
            node.RemoveNthControlPoint(index)
    return deleted


def restore_pair(fixed_node, moving_node, deleted: DeletedPair) -> int:
    """Put a deleted pair back where it was in the same two lists (at their ends if they are shorter now).

    Returns:
        its index.

    Raises:
        LandmarkError: these are not the lists the pair was deleted from (other lists selected, or removed).
    """
    ids = tuple(None if n is None else n.GetID() for n in (fixed_node, moving_node))
    if any(state is not None and ids[k] != deleted.node_ids[k] for k, state in enumerate(deleted.points)) or any(
            n is not None and n.GetScene() is None for n in (fixed_node, moving_node)):
        raise LandmarkError("the pair was deleted from other point lists than the ones selected now ("
                            + " and ".join(str(i) for i in deleted.node_ids if i) + "): select those to restore it")
    counts = [n.GetNumberOfControlPoints() for n, state in zip((fixed_node, moving_node), deleted.points)
              if state is not None]
    index = min([deleted.index] + counts)
    for node, state in zip((fixed_node, moving_node), deleted.points):
        if state is None:
            continue
        node.InsertControlPoint(index, state["position"], state["label"])
        node.SetNthControlPointDescription(index, state["description"])
        node.SetNthControlPointLocked(index, state["locked"])
        node.SetNthControlPointSelected(index, state["selected"])
        node.SetNthControlPointVisibility(index, state["visible"])
        node.SetNthControlPointOrientationMatrix(index, state["orientation"])
        if state["associated"]:
            node.SetNthControlPointAssociatedNodeID(index, state["associated"])
    return index


def jump_to_pair(scene, fixed_node, moving_node, index: int) -> np.ndarray:
    """Centre every slice view on pair ``index`` (its fixed point, else its moving point).

    Returns:
        (3,) RAS world position jumped to.
    """
    import slicer

    _check_index(fixed_node, moving_node, index)
    node = fixed_node if fixed_node is not None and index < fixed_node.GetNumberOfControlPoints() else moving_node
    position = np.zeros(3)
    node.GetNthControlPointPositionWorld(index, position)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *map(float, position), slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    return position


class PairPlacement:
    """Place one landmark pair: a click in the fixed volume, then one on its partner in the moving volume.

    Args:
        fixed_node, moving_node: the point lists (pairs match by order; their counts must agree).
        interaction_node, selection_node: the application's singletons.
        defer: runs a callable on the next event-loop turn (``lambda f: qt.QTimer.singleShot(0, f)``).
        moving_volume_node: the moving point list is put in this volume's transform first, so a click
            on the volume as displayed (even registered, under a result) marks its moving anatomy.
        on_state: called with the new state ("fixed", "moving", "done", "stopped") and a message.
    """

    def __init__(self, fixed_node, moving_node, interaction_node, selection_node, defer: Callable[[Callable], None],
                 moving_volume_node=None, on_state: Optional[Callable[[str, str], None]] = None) -> None:
        self.fixed_node, self.moving_node = fixed_node, moving_node
        self.interaction, self.selection = interaction_node, selection_node
        self.defer, self.moving_volume_node, self.on_state = defer, moving_volume_node, on_state
        self.state = "idle"
        self.label = ""
        self._observations: list[tuple[object, int]] = []

    def start(self, label: Optional[str] = None) -> None:
        """Begin with the fixed point (raises LandmarkError when the lists are not paired, or are one list)."""
        if self.fixed_node is self.moving_node:  # both clicks would land in it, a pair of one list's points
            raise LandmarkError(f"the point list '{self.fixed_node.GetName()}' is chosen as both the fixed and the "
                                "moving landmarks; each image needs its own list: choose another moving list, or none "
                                "(one is made)")
        counts = (self.fixed_node.GetNumberOfControlPoints(), self.moving_node.GetNumberOfControlPoints())
        if counts[0] != counts[1]:
            raise LandmarkError(f"the fixed list has {counts[0]} points and the moving list {counts[1]}; pairs match by "
                                "order: delete the unpaired point (landmark table) before adding pairs")
        if self.moving_volume_node is not None:
            attach_markups_to_volume_frame(self.moving_node, self.moving_volume_node)
        self.label = label or next_pair_label(self.fixed_node)
        import vtk

        @vtk.calldata_type(vtk.VTK_INT)
        def defined(caller, event, index):
            self._on_defined(caller, index)

        for node in (self.fixed_node, self.moving_node):
            self._observations.append((node, node.AddObserver(node.PointPositionDefinedEvent, defined)))
        self._activate("fixed")

    def _activate(self, step: str) -> None:
        node = self.fixed_node if step == "fixed" else self.moving_node
        self.selection.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsFiducialNode")
        self.selection.SetActivePlaceNodeID(node.GetID())
        self.interaction.SetPlaceModePersistence(0)
        self.interaction.SetCurrentInteractionMode(self.interaction.Place)
        self.state = step
        which = "FIXED" if step == "fixed" else "MOVING"
        self._notify(step, f"Click {self.label} in the {which} volume" if step == "fixed"
                     else f"Click the partner of {self.label} in the {which} volume")

    def _on_defined(self, caller, index: int) -> None:
        if self.state == "fixed" and caller is self.fixed_node:
            caller.SetNthControlPointLabel(index, self.label)
            self.state = "switching"
            self.defer(self._switch_to_moving)
        elif self.state == "moving" and caller is self.moving_node:
            caller.SetNthControlPointLabel(index, self.label)
            self.state = "finishing"
            self.defer(self._finish)

    def _switch_to_moving(self) -> None:
        if self.state == "switching":
            self._activate("moving")

    def _finish(self) -> None:
        if self.state != "finishing":
            return
        self._unobserve()
        self.interaction.SetCurrentInteractionMode(self.interaction.ViewTransform)
        self.state = "done"
        self._notify("done", f"Pair {self.label} placed.")

    def stop(self) -> None:
        """Stop placing; a fixed point still waiting for its partner is removed (pairs stay matched)."""
        if self.state in ("idle", "done", "stopped"):
            return
        self._unobserve()
        if self.state in ("switching", "moving"):
            extra = self.fixed_node.GetNumberOfControlPoints() - self.moving_node.GetNumberOfControlPoints()
            if extra == 1:
                self.fixed_node.RemoveNthControlPoint(self.fixed_node.GetNumberOfControlPoints() - 1)
        self.interaction.SetCurrentInteractionMode(self.interaction.ViewTransform)
        self.state = "stopped"
        self._notify("stopped", "")

    def _unobserve(self) -> None:
        for node, tag in self._observations:
            node.RemoveObserver(tag)
        self._observations = []

    def _notify(self, state: str, message: str) -> None:
        if self.on_state is not None:
            self.on_state(state, message)
