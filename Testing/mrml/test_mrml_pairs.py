"""Landmark pairs: placing a pair (defect 1 of issue 14), the pair table, rename, delete, jump.

Slicer's markups widget, in vtkSlicerMarkupsWidget::PlacePoint, first defines the point (which
fires PointPositionDefinedEvent) and then, with place-mode persistence off, sets the interaction
mode back to ViewTransform. ``mrml_helpers.click`` does exactly that on the real MRML nodes.
"""
from __future__ import annotations

import numpy as np
import pytest

from ADRegNetMRML.geometry import points_lps_to_ras, volume_node_from_image
from ADRegNetMRML.landmarks import LandmarkError, markups_labels, markups_node_from_points
from ADRegNetMRML.pairs import PairPlacement, delete_pair, jump_to_pair, pair_rows, rename_pair, restore_pair
from ADRegNetMRML.transform import grid_transform_node_from_field
from mrml_helpers import EventLoop, analytic_field, blob_image, click, oblique_geometry


@pytest.fixture
def lists(scene):
    scene.AddNewNodeByClass("vtkMRMLInteractionNode")
    scene.AddNewNodeByClass("vtkMRMLSelectionNode")
    fixed = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "F")
    moving = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "M")
    return fixed, moving


def _placement(scene, fixed, moving, loop, **kw):
    states = []
    placement = PairPlacement(fixed, moving, scene.GetNodeByID("vtkMRMLInteractionNodeSingleton"),
                              scene.GetNodeByID("vtkMRMLSelectionNodeSingleton"), loop.defer,
                              on_state=lambda state, text: states.append(state), **kw)
    return placement, states


def test_second_click_lands_in_the_moving_list(scene, lists):
    fixed, moving = lists
    loop = EventLoop()
    placement, states = _placement(scene, fixed, moving, loop)
    placement.start()
    assert click(scene, (1.0, 2.0, 3.0))
    loop.turn()  # the event loop turns between the two clicks
    assert click(scene, (4.0, 5.0, 6.0)), "after the first click the view must still be in place mode"
    loop.turn()
    assert fixed.GetNumberOfControlPoints() == moving.GetNumberOfControlPoints() == 1
    assert markups_labels(fixed) == markups_labels(moving) == ["P-1"]
    assert states == ["fixed", "moving", "done"]
    interaction = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform


def test_switching_inside_the_event_is_undone_by_place_point(scene, lists):
    """The defect itself: an immediate switch is overwritten by PlacePoint's return to view mode."""
    fixed, moving = lists
    placement, _ = _placement(scene, fixed, moving, EventLoop())
    placement.defer = lambda function: function()  # no deferral: what the module did
    placement.start()
    click(scene, (1.0, 2.0, 3.0))
    assert not click(scene, (4.0, 5.0, 6.0))
    assert (fixed.GetNumberOfControlPoints(), moving.GetNumberOfControlPoints()) == (1, 0)


def test_stop_between_the_clicks_removes_the_unpaired_point(scene, lists):
    fixed, moving = lists
    loop = EventLoop()
    placement, states = _placement(scene, fixed, moving, loop)
    placement.start()
    click(scene, (1.0, 2.0, 3.0))
    loop.turn()
    placement.stop()
    loop.turn()
    assert fixed.GetNumberOfControlPoints() == moving.GetNumberOfControlPoints() == 0
    assert states[-1] == "stopped"
    moving.AddControlPoint(0.0, 0.0, 0.0)
    with pytest.raises(LandmarkError, match="fixed list has 0 points and the moving list 1"):
        placement.start()


def test_moving_click_on_the_registered_display_is_stored_in_the_moving_frame(scene, lists):
    """Defect 2: the moving volume shown under a result; a click marks the moving anatomy under it."""
    fixed_list, moving_list = lists
    geometry = oblique_geometry()
    moving_volume = volume_node_from_image(scene, blob_image(geometry), name="moving")
    disp = analytic_field(geometry, 3.0)
    result = grid_transform_node_from_field(scene, disp, geometry)
    result.SetAttribute("ADRegNet.role", "transform")
    moving_volume.SetAndObserveTransformNodeID(result.GetID())
    anatomy_ras = points_lps_to_ras(geometry.center()[None])[0]  # a point of the moving image (moving frame)
    shown_at = np.array(result.GetTransformToParent().TransformPoint(*map(float, anatomy_ras)))  # where it is shown
    loop = EventLoop()
    placement, _ = _placement(scene, fixed_list, moving_list, loop, moving_volume_node=moving_volume)
    placement.start()
    click(scene, shown_at)
    loop.turn()
    click(scene, shown_at)
    loop.turn()
    assert moving_list.GetParentTransformNode() is result
    rows = pair_rows(fixed_list, moving_list, None, moving_volume, result)
    np.testing.assert_allclose(points_lps_to_ras(rows[0].moving_lps[None])[0], anatomy_ras, atol=1e-2)
    # TRE before = |moving anatomy - fixed point|; after = |T(fixed) - moving| = 0 (clicked on the registered view)
    assert rows[0].tre_before_mm == pytest.approx(np.linalg.norm(anatomy_ras - shown_at), abs=1e-2)
    assert rows[0].tre_after_mm == pytest.approx(0.0, abs=1e-2)


def test_table_rename_delete_and_jump(scene, lists):
    fixed, moving = lists
    pts = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 5.0], [-4.0, 3.0, 1.0]])
    markups_node_from_points(scene, pts, "F", ["a", "b", "c"], node=fixed)
    markups_node_from_points(scene, pts + [0.0, 0.0, 2.0], "M", ["a", "b", "c"], node=moving)
    moving.RemoveNthControlPoint(2)  # an unfinished pair
    rows = pair_rows(fixed, moving, None, None)
    assert [r.label for r in rows] == ["a", "b", "c"]
    assert [r.complete for r in rows] == [True, True, False]
    assert rows[1].tre_before_mm == pytest.approx(2.0) and rows[1].tre_after_mm is None
    rename_pair(fixed, moving, 1, " carina ")
    assert markups_labels(fixed)[1] == markups_labels(moving)[1] == "carina"
    with pytest.raises(LandmarkError, match="non-empty name"):
        rename_pair(fixed, moving, 0, "  ")
    delete_pair(fixed, moving, 0)
    assert markups_labels(fixed) == ["carina", "c"] and markups_labels(moving) == ["carina"]
    with pytest.raises(LandmarkError, match="no landmark pair 3"):
        delete_pair(fixed, moving, 2)
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    red.SetLayoutName("Red")
    jumped = jump_to_pair(scene, fixed, moving, 1)
    np.testing.assert_allclose(jumped, points_lps_to_ras(pts[2:3])[0])
    slice_to_ras = red.GetSliceToRAS()
    np.testing.assert_allclose([slice_to_ras.GetElement(r, 3) for r in range(3)], jumped, atol=1e-9)


def test_pairs_that_guided_a_result_are_marked_while_they_stay_put(scene, lists):
    """The result transform node records the guiding pairs; the table marks them, not pairs added or moved later."""
    from ADRegNetMRML.pairs import GUIDING_PAIRS_ATTRIBUTE, mark_guiding_pairs

    fixed, moving = lists
    pts = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 5.0], [-4.0, 3.0, 1.0]])
    markups_node_from_points(scene, pts, "F", ["a", "b", "c"], node=fixed)
    markups_node_from_points(scene, pts + [0.0, 0.0, 2.0], "M", ["a", "b", "c"], node=moving)
    result = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    assert [r.guided for r in pair_rows(fixed, moving, None, None, result)] == [False] * 3
    mark_guiding_pairs(result, pts[:2], pts[:2] + [0.0, 0.0, 2.0])  # the run saw pairs a and b
    assert result.GetAttribute(GUIDING_PAIRS_ATTRIBUTE)
    assert [r.guided for r in pair_rows(fixed, moving, None, None, result)] == [True, True, False]
    moving.SetNthControlPointPosition(1, *points_lps_to_ras((pts[1] + [0.0, 0.0, 4.0])[None])[0])  # b moved
    assert [r.guided for r in pair_rows(fixed, moving, None, None, result)] == [True, False, False]
    assert [r.guided for r in pair_rows(fixed, moving, None, None, None)] == [False] * 3  # no result
    result.SetAttribute(GUIDING_PAIRS_ATTRIBUTE, "not json")  # edited by hand: nothing marked, no error
    assert [r.guided for r in pair_rows(fixed, moving, None, None, result)] == [False] * 3


def test_one_list_as_both_is_refused_before_any_click(scene, lists):
    """Before: with one point list chosen as both, Place pair put the fixed click and its partner into that list one
    after the other, with no word, and Apply then refused the lists; now placing is refused at once."""
    fixed, _ = lists
    loop = EventLoop()
    placement, states = _placement(scene, fixed, fixed, loop)
    with pytest.raises(LandmarkError, match="the point list 'F' is chosen as both the fixed and the moving landmarks"):
        placement.start()
    assert states == [] and not click(scene, (1.0, 2.0, 3.0))
    assert fixed.GetNumberOfControlPoints() == 0


def _positions(node) -> np.ndarray:
    out = np.zeros((node.GetNumberOfControlPoints(), 3))
    for i in range(len(out)):
        node.GetNthControlPointPosition(i, out[i])
    return out


def test_a_deleted_pair_is_restored_where_it_was_with_all_it_held(scene, lists):
    """Delete pair can be undone: the pair comes back at its place in both lists, in each list's own frame
    (a list under a transform keeps its local position), with its name, description, lock and visibility;
    several deletions come back last first."""
    fixed, moving = lists
    pts = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 5.0], [-4.0, 3.0, 1.0], [2.0, 2.0, 2.0]])
    markups_node_from_points(scene, pts, "F", ["a", "b", "c", "d"], node=fixed)
    markups_node_from_points(scene, pts + [0.0, 0.0, 2.0], "M", ["a", "b", "c", "d"], node=moving)
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = shift.GetMatrixTransformToParent()
    matrix.SetElement(0, 3, 7.0)
    shift.SetMatrixTransformToParent(matrix)
    moving.SetAndObserveTransformNodeID(shift.GetID())
    fixed.SetNthControlPointDescription(1, "carina")
    fixed.SetNthControlPointLocked(1, True)
    moving.SetNthControlPointVisibility(1, False)
    before = (_positions(fixed), _positions(moving), markups_labels(fixed), markups_labels(moving))
    rows_before = [(r.label, r.tre_before_mm) for r in pair_rows(fixed, moving, None, None)]

    first = delete_pair(fixed, moving, 1)
    second = delete_pair(fixed, moving, 2)  # "d", now third
    assert markups_labels(fixed) == ["a", "c"] and markups_labels(moving) == ["a", "c"]
    assert restore_pair(fixed, moving, second) == 2
    assert restore_pair(fixed, moving, first) == 1
    after = (_positions(fixed), _positions(moving), markups_labels(fixed), markups_labels(moving))
    np.testing.assert_allclose(after[0], before[0])
    np.testing.assert_allclose(after[1], before[1])
    assert after[2:] == before[2:]
    assert fixed.GetNthControlPointDescription(1) == "carina" and fixed.GetNthControlPointLocked(1)
    assert not moving.GetNthControlPointVisibility(1) and moving.GetNthControlPointVisibility(0)
    assert [(r.label, r.tre_before_mm) for r in pair_rows(fixed, moving, None, None)] == rows_before


def test_a_pair_is_not_restored_into_other_lists_and_lists_that_shrank_get_it_at_their_end(scene, lists):
    fixed, moving = lists
    pts = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 5.0], [-4.0, 3.0, 1.0]])
    markups_node_from_points(scene, pts, "F", ["a", "b", "c"], node=fixed)
    markups_node_from_points(scene, pts + 1.0, "M", ["a", "b", "c"], node=moving)
    deleted = delete_pair(fixed, moving, 2)
    other = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "other")
    markups_node_from_points(scene, pts, "other", ["x", "y", "z"], node=other)
    with pytest.raises(LandmarkError, match="other point lists"):
        restore_pair(other, moving, deleted)
    assert markups_labels(other) == ["x", "y", "z"] and markups_labels(moving) == ["a", "b"]  # nothing touched
    delete_pair(fixed, moving, 0)
    delete_pair(fixed, moving, 0)
    assert restore_pair(fixed, moving, deleted) == 0  # the lists are empty now: it comes back first
    assert markups_labels(fixed) == markups_labels(moving) == ["c"]
    scene.RemoveNode(moving)
    with pytest.raises(LandmarkError, match="other point lists"):
        restore_pair(fixed, moving, deleted)
