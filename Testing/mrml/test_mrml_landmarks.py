"""Markups <-> LPS arrays, pair checks and the TRE table node."""
from __future__ import annotations

import numpy as np
import pytest

from ADRegNetMRML.landmarks import (
    LandmarkError, check_landmark_pairs, markups_labels, markups_node_from_points, next_pair_label, pair_labels,
    points_lps_from_markups, tre_table_node,
)


def test_markups_round_trip_in_lps_and_ras(scene):
    pts = np.array([[10.0, -20.0, 5.0], [-3.5, 7.25, -40.0]])
    node = markups_node_from_points(scene, pts, "F", labels=["a", "b"])
    ras = [0.0, 0.0, 0.0]
    node.GetNthControlPointPosition(0, ras)
    np.testing.assert_allclose(ras, [-10.0, 20.0, 5.0])
    np.testing.assert_allclose(points_lps_from_markups(node), pts)
    assert markups_labels(node) == ["a", "b"]


def test_points_are_read_in_world_coordinates(scene):
    node = markups_node_from_points(scene, np.array([[1.0, 2.0, 3.0]]), "F")
    t = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    import vtk

    m = vtk.vtkMatrix4x4()
    m.SetElement(0, 3, 5.0)  # +5 mm along R = -5 mm along L
    t.SetMatrixTransformToParent(m)
    node.SetAndObserveTransformNodeID(t.GetID())
    np.testing.assert_allclose(points_lps_from_markups(node), [[-4.0, 2.0, 3.0]])


def test_pairs_both_or_neither_and_equal_counts(scene):
    f = markups_node_from_points(scene, np.zeros((3, 3)), "fixed pts")
    m = markups_node_from_points(scene, np.ones((2, 3)), "moving pts")
    assert check_landmark_pairs(None, None) == (None, None)
    with pytest.raises(LandmarkError, match="fixed landmarks are set but moving landmarks are not"):
        check_landmark_pairs(f, None)
    with pytest.raises(LandmarkError, match="moving landmarks are set but fixed landmarks are not"):
        check_landmark_pairs(None, m)
    with pytest.raises(LandmarkError, match=r"landmark counts differ: fixed 'fixed pts' has 3 points, moving "
                                            r"'moving pts' has 2"):
        check_landmark_pairs(f, m)
    m.AddControlPoint(0.0, 0.0, 0.0)
    fixed, moving = check_landmark_pairs(f, m)
    assert fixed.shape == moving.shape == (3, 3)


@pytest.mark.parametrize("unset, state", [("UnsetNthControlPointPosition", "not placed"),
                                          ("SetNthControlPointPositionMissing", "skipped")])
def test_a_pair_with_a_point_that_has_no_position_is_refused(scene, unset, state):
    """Before: an unplaced or skipped point kept its stored position (the origin, or where it had been) and
    pulled the guided field there (19 mm on the lung pair), with no word."""
    f = markups_node_from_points(scene, np.arange(9.0).reshape(3, 3), "fixed pts", labels=["a", "carina", "c"])
    m = markups_node_from_points(scene, np.arange(9.0).reshape(3, 3) + 1.0, "moving pts", labels=["a", "carina", "c"])
    assert check_landmark_pairs(f, m)[0].shape == (3, 3)
    getattr(m, unset)(1)
    with pytest.raises(LandmarkError, match=rf"landmark pair 'carina' \(point 2\): its moving point in 'moving pts' is "
                                            rf"{state}, so it has no position; place it, or delete the pair"):
        check_landmark_pairs(f, m)


def test_one_list_for_both_images_or_a_curve_is_refused(scene):
    """Before: the same point list as fixed and moving landmarks was accepted (TRE before 0, guided pairs pinning
    the field), and curves, lines, ROIs and planes were read as landmark lists."""
    f = markups_node_from_points(scene, np.zeros((2, 3)), "pts")
    with pytest.raises(LandmarkError, match="the point list 'pts' is chosen as both the fixed and the moving landmarks"):
        check_landmark_pairs(f, f)
    curve = scene.AddNewNodeByClass("vtkMRMLMarkupsCurveNode", "airway")
    curve.AddControlPoint(0.0, 0.0, 0.0)
    curve.AddControlPoint(1.0, 0.0, 0.0)
    with pytest.raises(LandmarkError, match="moving landmarks 'airway' is a vtkMRMLMarkupsCurveNode; landmark pairs are "
                                            "the control points of two point lists"):
        check_landmark_pairs(f, curve)


def test_pair_labels(scene):
    f = markups_node_from_points(scene, np.zeros((3, 3)), "F", labels=["P-1", "P-2", ""])
    m = markups_node_from_points(scene, np.zeros((3, 3)), "M", labels=["P-1", "carina", ""])
    assert pair_labels(f, m) == ["P-1", "P-2 / carina", "P-3"]
    assert next_pair_label(f) == "P-4"
    assert next_pair_label(None) == "P-1"


def test_tre_table_values_and_summary_rows(scene):
    rng = np.random.default_rng(1)
    before = rng.uniform(2, 9, 5)
    after = rng.uniform(0, 2, 5)
    labels = [f"P-{k + 1}" for k in range(5)]
    node = tre_table_node(scene, labels, before, after)
    table = node.GetTable()
    assert [table.GetColumnName(c) for c in range(3)] == ["label", "before_mm", "after_mm"]
    assert table.GetNumberOfRows() == 8
    got_labels = [table.GetValue(r, 0).ToString() for r in range(8)]
    assert got_labels == labels + ["mean", "std", "max"]
    got = np.array([[table.GetValue(r, c).ToDouble() for c in (1, 2)] for r in range(8)])
    np.testing.assert_allclose(got[:5, 0], before)
    np.testing.assert_allclose(got[:5, 1], after)
    np.testing.assert_allclose(got[5], [np.mean(before), np.mean(after)])
    np.testing.assert_allclose(got[6], [np.std(before), np.std(after)])
    np.testing.assert_allclose(got[7], [np.max(before), np.max(after)])
    assert node.GetColumnUnitLabel("after_mm") == "mm"
    # overwriting the same node replaces its rows
    again = tre_table_node(scene, ["a"], [1.0], [0.5], node=node)
    assert again is node and node.GetTable().GetNumberOfRows() == 4


def test_tre_table_refuses_mismatched_lengths(scene):
    with pytest.raises(LandmarkError, match="got 2 labels, 3 before and 3 after values"):
        tre_table_node(scene, ["a", "b"], [1, 2, 3], [1, 2, 3])
