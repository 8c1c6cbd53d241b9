r"""Markups point lists <-> (K, 3) LPS arrays, landmark pair labels, and the TRE table node.

Pairs match by order: control point k of the fixed list pairs with control point k of the moving
list. For registration, positions are read in their volume's frame (:mod:`ADRegNetMRML.frames`);
without a volume they are read in world coordinates (where they are shown).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .frames import ROLE_ATTRIBUTE, points_lps_in_volume_frame
from .geometry import points_lps_to_ras, points_ras_to_lps

__all__ = [
    "LandmarkError", "points_lps_from_markups", "markups_labels", "markups_node_from_points",
    "check_landmark_pairs", "check_points_on_volumes", "pair_labels", "next_pair_label", "tre_table_node", "TRE_COLUMNS",
    "local_change_node",
]

TRE_COLUMNS = ("label", "before_mm", "after_mm")  # and "start_mm" between the two with a starting transform
SUMMARY_LABELS = ("mean", "std", "max")


class LandmarkError(ValueError):
    """Landmark lists that cannot be used; the message says why and what to do."""


def points_lps_from_markups(node) -> np.ndarray:
    """(K, 3) LPS mm world positions of a markups node's control points (K may be 0)."""
    if node is None:
        return np.zeros((0, 3))
    count = node.GetNumberOfControlPoints()
    ras = np.zeros((count, 3))
    for k in range(count):
        node.GetNthControlPointPositionWorld(k, ras[k])
    return points_ras_to_lps(ras)


def markups_labels(node) -> list[str]:
    """Control point labels of a markups node, in order."""
    return [node.GetNthControlPointLabel(k) for k in range(node.GetNumberOfControlPoints())]


def markups_node_from_points(scene, points_lps: np.ndarray, name: str, labels: Optional[Sequence[str]] = None,
                             node=None):
    """Create (or fill) a point list node with (K, 3) LPS mm points, labelled ``labels``."""
    pts = np.asarray(points_lps, dtype=np.float64).reshape(-1, 3)
    if labels is not None and len(labels) != len(pts):
        raise LandmarkError(f"got {len(labels)} labels for {len(pts)} points")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(name))
    node.RemoveAllControlPoints()
    for k, p in enumerate(points_lps_to_ras(pts)):
        index = node.AddControlPoint(float(p[0]), float(p[1]), float(p[2]))
        if labels is not None:
            node.SetNthControlPointLabel(index, str(labels[k]))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def local_change_node(scene, metrics: dict, name: str):
    """A locked point list at each place the engine took for a local change and refined with less smoothing
    (``metrics["refinement"]["local_change"]``, kept), labelled with its volume, so the clinician can look at the
    warped volume there (the run log's warning says the same); None when no change was refined."""
    found = (metrics.get("refinement") or {}).get("local_change") or {}
    parts = found.get("parts") or []
    if not (found.get("kept") and parts):
        return None
    node = markups_node_from_points(scene, np.array([part["centre_mm"] for part in parts], dtype=np.float64), name,
                                    [f"change {k + 1} ({part['ml']:.0f} ml)" for k, part in enumerate(parts)])
    node.SetAttribute(ROLE_ATTRIBUTE, "local-change")
    node.SetLocked(True)
    return node


def check_landmark_pairs(fixed_node, moving_node, fixed_volume_node=None,
                         moving_volume_node=None) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Read paired landmarks; both lists or neither.

    Args:
        fixed_node, moving_node: point lists (pairs match by order).
        fixed_volume_node, moving_volume_node: read each list in its volume's frame (a moving point
            marks the moving anatomy displayed under it); None reads world positions.

    Returns:
        (fixed (K, 3), moving (K, 3)) LPS mm, or (None, None) when no landmarks are given.

    Raises:
        LandmarkError: one list missing or empty, or the counts differ.
    """
    if fixed_node is None and moving_node is None:
        return None, None
    if fixed_node is None or moving_node is None:
        given, missing = ("fixed", "moving") if moving_node is None else ("moving", "fixed")
        raise LandmarkError(
            f"{given} landmarks are set but {missing} landmarks are not: select both point lists "
            "(pairs match by order) or neither"
        )
    for role, node in (("fixed", fixed_node), ("moving", moving_node)):
        if not node.IsA("vtkMRMLMarkupsFiducialNode"):
            raise LandmarkError(f"{role} landmarks '{node.GetName()}' is a {node.GetClassName()}; landmark pairs are the "
                                "control points of two point lists (Markups: Point List)")
    if fixed_node is moving_node:
        raise LandmarkError(f"the point list '{fixed_node.GetName()}' is chosen as both the fixed and the moving "
                            "landmarks; each image needs its own list, its points placed on that image")
    fixed = _points(fixed_node, fixed_volume_node)
    moving = _points(moving_node, moving_volume_node)
    if len(fixed) != len(moving):
        raise LandmarkError(
            f"landmark counts differ: fixed '{fixed_node.GetName()}' has {len(fixed)} points, moving "
            f"'{moving_node.GetName()}' has {len(moving)}; every fixed point needs its moving partner "
            "(pairs match by order)"
        )
    if len(fixed) == 0:
        return None, None
    _check_placed(fixed_node, moving_node)
    return fixed, moving


def check_points_on_volumes(fixed_node, moving_node, fixed_lps: np.ndarray, moving_lps: np.ndarray,
                            fixed_geometry, moving_geometry) -> None:
    """Refuse a pair whose point lies off its volume, naming the pair's label (the engine's own message
    counts points from 0 and gives LPS coordinates, which a Slicer user does not see).

    Args:
        fixed_node, moving_node: the point lists (for labels and names).
        fixed_lps, moving_lps: (K, 3) LPS mm, each in its volume's frame (``check_landmark_pairs``).
        fixed_geometry, moving_geometry: the volumes' grids.
    """
    from ADRegNetLib.io.points import points_outside

    labels = pair_labels(fixed_node, moving_node)
    for role, node, points, geometry in (("fixed", fixed_node, fixed_lps, fixed_geometry),
                                         ("moving", moving_node, moving_lps, moving_geometry)):
        outside, distance = points_outside(points, geometry)
        if outside.size:
            k = int(outside[0])
            ras = np.round(points_lps_to_ras(points[k:k + 1])[0], 1).tolist()
            raise LandmarkError(
                f"landmark pair '{labels[k]}' (point {k + 1}): its {role} point in '{node.GetName()}' lies {distance:.1f} "
                f"mm outside the {role} volume (at RAS {ras} in the volume's frame); {outside.size} of {len(points)} "
                f"{role} points are outside. Move it onto the {role} volume, or delete the pair from both lists")


def _check_placed(fixed_node, moving_node) -> None:
    """Refuse a pair with a point that has no position: never placed, still being placed, or skipped.

    Such a point keeps a stored position (0, 0, 0, or where it was before it was unset) that would be used
    as a landmark: a guided field moved a fixed point 19 mm towards the origin, with no word.
    """
    states = {fixed_node.PositionUndefined: "not placed", fixed_node.PositionPreview: "still being placed",
              fixed_node.PositionMissing: "skipped"}
    for role, node in (("fixed", fixed_node), ("moving", moving_node)):
        for k in range(node.GetNumberOfControlPoints()):
            status = node.GetNthControlPointPositionStatus(k)
            if status != node.PositionDefined:
                raise LandmarkError(
                    f"landmark pair '{pair_labels(fixed_node, moving_node)[k]}' (point {k + 1}): its {role} point in "
                    f"'{node.GetName()}' is {states.get(status, 'not placed')}, so it has no position; place it, or "
                    "delete the pair from both lists (pairs match by order)")


def _points(markups_node, volume_node) -> np.ndarray:
    if volume_node is None:
        return points_lps_from_markups(markups_node)
    return points_lps_in_volume_frame(markups_node, volume_node)


def pair_labels(fixed_node, moving_node=None) -> list[str]:
    """Labels naming each pair: the fixed point's label (or "F-k"), with the moving label when it differs."""
    fixed = markups_labels(fixed_node) if fixed_node is not None else []
    moving = markups_labels(moving_node) if moving_node is not None else []
    labels = []
    for k in range(max(len(fixed), len(moving))):
        f = fixed[k] if k < len(fixed) and fixed[k] else f"P-{k + 1}"
        m = moving[k] if k < len(moving) else f
        labels.append(f if not m or m == f else f"{f} / {m}")
    return labels


def next_pair_label(fixed_node, prefix: str = "P") -> str:
    """Label for the next landmark pair: ``P-<n>`` with n one past the number of fixed points."""
    count = fixed_node.GetNumberOfControlPoints() if fixed_node is not None else 0
    return f"{prefix}-{count + 1}"


def tre_table_node(scene, labels: Sequence[str], before_mm: np.ndarray, after_mm: np.ndarray,
                   name: str = "ADRegNet TRE", node=None, start_mm: Optional[np.ndarray] = None):
    """A table of target registration errors per pair plus mean, std and max rows.

    Column names follow metrics.json: ``before_mm`` (``tre_before``), ``start_mm`` (``tre_start``, only with a
    starting transform) and ``after_mm`` (``tre_after``); the headers (column titles) say what each measures.

    Args:
        scene: vtkMRMLScene.
        labels: K pair labels.
        before_mm: (K,) distance |moving - fixed| with the volumes as stored, mm.
        after_mm: (K,) distance |x + u(x) - moving| after registration, mm.
        name: name of a new node.
        node: existing vtkMRMLTableNode to overwrite.
        start_mm: (K,) distance |A(fixed) - moving| through the moving volume's starting transform A (what
            the views showed before registration), mm; None without a starting transform.

    Returns:
        vtkMRMLTableNode with columns label, before_mm, [start_mm,] after_mm and K + 3 rows.
    """
    import vtk

    columns = {"before_mm": np.asarray(before_mm, dtype=np.float64).reshape(-1)}
    if start_mm is not None:
        columns["start_mm"] = np.asarray(start_mm, dtype=np.float64).reshape(-1)
    columns["after_mm"] = np.asarray(after_mm, dtype=np.float64).reshape(-1)
    if any(len(values) != len(labels) for values in columns.values()):
        counts = [f"{len(values)} {column[:-3]}" for column, values in columns.items()]
        raise LandmarkError(
            f"TRE table needs one label and one value per column per pair; got {len(labels)} labels, "
            + ", ".join(counts[:-1]) + f" and {counts[-1]} values")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    node.RemoveAllColumns()
    table = node.GetTable()
    label_col = vtk.vtkStringArray()
    label_col.SetName(TRE_COLUMNS[0])
    for lbl in list(labels) + (list(SUMMARY_LABELS) if len(labels) else []):
        label_col.InsertNextValue(str(lbl))
    table.AddColumn(label_col)
    for column, values in columns.items():
        array = vtk.vtkDoubleArray()
        array.SetName(column)
        summary = [values.mean(), values.std(), values.max()] if len(values) else []
        for value in list(values) + summary:
            array.InsertNextValue(float(value))
        table.AddColumn(array)
    node.SetUseColumnTitleAsColumnHeader(True)
    node.SetColumnTitle(TRE_COLUMNS[0], "Pair")
    for column, (title, description) in _tre_column_text(start_mm is not None).items():
        node.SetColumnUnitLabel(column, "mm")
        node.SetColumnTitle(column, title)
        node.SetColumnDescription(column, description)
    node.SetAttribute(ROLE_ATTRIBUTE, "tre")
    node.Modified()
    return node


def _tre_column_text(with_start: bool) -> dict:
    """Column -> (header, description) of the TRE table."""
    text = {"before_mm": ("TRE as stored (mm)" if with_start else "TRE before (mm)",
                          "target registration error before registration, the volumes as stored"
                          + (" (without the moving volume's starting transform)" if with_start else "")
                          + " (metrics.json tre_before)")}
    if with_start:
        text["start_mm"] = ("TRE at start (mm)", "target registration error through the moving volume's starting "
                            "transform, as the views showed the pair before registration (metrics.json tre_start)")
    text["after_mm"] = ("TRE after (mm)", "target registration error after registration (metrics.json tre_after)")
    return text
