"""Frames of the inputs: initial transform, re-running under an earlier result (defect 5 of issue 14),
moving landmarks after a first run (defect 2), and showing the moving volume registered.
"""
from __future__ import annotations

import numpy as np
import pytest
import vtk

from ADRegNetMRML.frames import (
    attach_markups_to_volume_frame, initial_transform_lps, lps_matrix_to_ras, points_lps_in_volume_frame,
    registration_parent, show_under_result,
)
from ADRegNetMRML.geometry import VolumeNodeError, image_from_volume_node, points_lps_to_ras, volume_node_from_image
from ADRegNetMRML.landmarks import markups_node_from_points
from ADRegNetMRML.logic import ADRegNetMRMLLogic
from mrml_helpers import AnalyticEngine, blob_image, oblique_geometry, rotation


def _linear(scene, matrix_ras: np.ndarray, name: str = "initial"):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(matrix_ras[r, c]))
    node.SetMatrixTransformToParent(m)
    return node


@pytest.fixture
def pair(scene):
    fixed = volume_node_from_image(scene, blob_image(oblique_geometry(), "fixed"), name="fixed")
    moving = volume_node_from_image(scene, blob_image(oblique_geometry(), "moving", shift=(1.0, 0.0, 0.0)),
                                    name="moving")
    return fixed, moving


def test_a_linear_parent_is_the_initial_transform(scene, pair):
    fixed, moving = pair
    to_parent = np.eye(4)
    to_parent[:3, :3] = rotation(0.1, -0.05, 0.2)
    to_parent[:3, 3] = [5.0, -3.0, 2.0]  # RAS: moving local -> world (= fixed)
    moving.SetAndObserveTransformNodeID(_linear(scene, to_parent).GetID())
    initial = initial_transform_lps(moving)
    np.testing.assert_allclose(lps_matrix_to_ras(initial), np.linalg.inv(to_parent), atol=1e-12)
    # fixed point x (LPS) -> moving point: a fixed point and its moving partner shown at the same place
    x_lps = np.array([10.0, -20.0, 30.0])
    moving_ras = np.linalg.inv(to_parent) @ np.append(points_lps_to_ras(x_lps[None])[0], 1.0)
    np.testing.assert_allclose((initial @ np.append(x_lps, 1.0))[:3], points_lps_to_ras(moving_ras[None, :3])[0])
    engine = AnalyticEngine()
    ADRegNetMRMLLogic(scene, runner=engine).registerNodes(fixed, moving)
    np.testing.assert_allclose(engine.calls[0]["initial_transform"].to_homogeneous(), initial, atol=1e-12)
    np.testing.assert_array_equal(engine.calls[0]["moving"].array, image_from_volume_node(moving).array)
    assert "prealignment" not in engine.calls[0]  # the engine's pre-alignment starts from it and may refine it
    ADRegNetMRMLLogic(scene, runner=engine).registerNodes(fixed, moving, useInitialTransform=False)
    assert "initial_transform" not in engine.calls[1]
    # kept exactly: the same start, no pre-alignment after it; without a start there is nothing to keep
    ADRegNetMRMLLogic(scene, runner=engine).registerNodes(fixed, moving, keepInitialTransform=True)
    np.testing.assert_allclose(engine.calls[2]["initial_transform"].to_homogeneous(), initial, atol=1e-12)
    assert engine.calls[2]["prealignment"] == "none"
    ADRegNetMRMLLogic(scene, runner=engine).registerNodes(fixed, moving, useInitialTransform=False,
                                                          keepInitialTransform=True)
    assert "initial_transform" not in engine.calls[3] and "prealignment" not in engine.calls[3]


def test_non_linear_parent_and_transformed_fixed_volume_are_refused(scene, pair):
    fixed, moving = pair
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "user's warp")
    moving.SetAndObserveTransformNodeID(grid.GetID())
    engine = AnalyticEngine()
    with pytest.raises(VolumeNodeError, match="under the non-linear transform 'user's warp'.*harden"):
        ADRegNetMRMLLogic(scene, runner=engine).registerNodes(fixed, moving)
    # before: a linear transform under the grid one was named as the non-linear transform
    tweak = _linear(scene, np.eye(4), "rigid tweak")
    tweak.SetAndObserveTransformNodeID(grid.GetID())
    moving.SetAndObserveTransformNodeID(tweak.GetID())
    with pytest.raises(VolumeNodeError, match="under the transform 'rigid tweak', which is itself under the non-linear "
                                              "transform 'user's warp'"):
        ADRegNetMRMLLogic(scene, runner=engine).registerNodes(fixed, moving)
    moving.SetAndObserveTransformNodeID(None)
    fixed.SetAndObserveTransformNodeID(_linear(scene, np.eye(4), "shift").GetID())
    with pytest.raises(VolumeNodeError, match="fixed volume 'fixed' is under the transform 'shift'"):
        ADRegNetMRMLLogic(scene, runner=engine).registerNodes(fixed, moving)
    assert engine.calls == []


def test_rerun_while_shown_under_the_previous_result(scene, pair):
    """Defect 5: 'Create new' again while the moving volume shows registered: accepted, voxels read unwarped,
    the starting alignment is the linear transform it had before the first run."""
    fixed, moving = pair
    to_parent = np.eye(4)
    to_parent[:3, 3] = [2.0, 1.0, -1.0]
    initial_node = _linear(scene, to_parent)
    moving.SetAndObserveTransformNodeID(initial_node.GetID())
    voxels = image_from_volume_node(moving).array.copy()
    engine = AnalyticEngine()
    logic = ADRegNetMRMLLogic(scene, runner=engine)
    first = logic.registerNodes(fixed, moving)
    logic.setMovingUnderTransform(moving, first.transformNode, True)
    assert moving.GetParentTransformNode() is first.transformNode
    assert registration_parent(moving) is initial_node
    second = logic.registerNodes(fixed, moving)  # outputs: create new
    assert second.transformNode is not first.transformNode
    for call in engine.calls:
        np.testing.assert_array_equal(call["moving"].array, voxels)
        np.testing.assert_allclose(lps_matrix_to_ras(call["initial_transform"].to_homogeneous()),
                                   np.linalg.inv(to_parent), atol=1e-12)
    logic.setMovingUnderTransform(moving, second.transformNode, True)  # from the first result to the second
    assert registration_parent(moving) is initial_node
    logic.setMovingUnderTransform(moving, second.transformNode, False)
    assert moving.GetParentTransformNode() is initial_node


def test_moving_landmarks_follow_the_moving_volume(scene, pair):
    """Points placed before a run keep marking the same moving anatomy when the volume is shown registered."""
    fixed, moving = pair
    geometry = oblique_geometry()
    anatomy = geometry.index_to_physical(np.array([[3.0, 4.0, 5.0], [8.0, 6.0, 2.0]]))
    landmarks = markups_node_from_points(scene, anatomy, "M")
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(fixed, moving)
    ADRegNetMRMLLogic.setMovingUnderTransform(moving, out.transformNode, True, landmarks)
    assert landmarks.GetParentTransformNode() is out.transformNode
    np.testing.assert_allclose(points_lps_in_volume_frame(landmarks, moving), anatomy, atol=1e-9)
    ADRegNetMRMLLogic.setMovingUnderTransform(moving, out.transformNode, False, landmarks)
    assert landmarks.GetParentTransformNode() is None and moving.GetParentTransformNode() is None
    np.testing.assert_allclose(points_lps_in_volume_frame(landmarks, moving), anatomy, atol=1e-9)


def test_a_point_list_outside_the_volume_transform_marks_what_is_shown_under_it(scene, pair):
    """A moving point clicked on the registered display (list not under the result) is mapped back."""
    fixed, moving = pair
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(fixed, moving)
    show_under_result(out.transformNode, moving, [], True)
    anatomy = oblique_geometry().center()
    shown_ras = out.transformNode.GetTransformToParent().TransformPoint(*map(float, points_lps_to_ras(anatomy[None])[0]))
    clicked = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "clicked")
    clicked.AddControlPoint(*shown_ras)  # stored at its displayed (fixed-space) position
    np.testing.assert_allclose(points_lps_in_volume_frame(clicked, moving)[0], anatomy, atol=1e-2)
    attach_markups_to_volume_frame(clicked, moving)
    assert clicked.GetParentTransformNode() is out.transformNode
    np.testing.assert_allclose(points_lps_in_volume_frame(clicked, moving)[0], anatomy, atol=1e-2)
    world = np.zeros(3)
    clicked.GetNthControlPointPositionWorld(0, world)
    np.testing.assert_allclose(world, shown_ras, atol=1e-2)  # still shown where it was clicked


def _reloaded(scene, tmp_path):
    """The scene written to a .mrml file (Commit) and read back into a new scene (Connect)."""
    import slicer

    scene.SetRootDirectory(str(tmp_path))
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    reloaded = slicer.vtkMRMLScene()
    reloaded.SetRootDirectory(str(tmp_path))
    reloaded.SetURL(str(tmp_path / "scene.mrml"))
    assert reloaded.Connect()
    return reloaded


def test_the_starting_transform_survives_a_scene_save_and_reload(scene, pair, tmp_path):
    """Before: it was an attribute 'ADRegNet.previousParent:<volume ID>' of the result; Slicer reads attributes back
    split at the first ':', so after a reload unticking dropped the volume out of its starting transform and the
    next Apply lost its initial alignment. Now a node reference of the volume; the old form is still read."""
    from ADRegNetMRML.frames import PREVIOUS_PARENT_ROLE

    fixed, moving = pair
    to_parent = np.eye(4)
    to_parent[:3, 3] = [2.0, 1.0, -1.0]
    moving.SetAndObserveTransformNodeID(_linear(scene, to_parent).GetID())
    start_name = moving.GetParentTransformNode().GetName()
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(fixed, moving)
    show_under_result(out.transformNode, moving, [], True)
    reloaded = _reloaded(scene, tmp_path)
    moving2 = reloaded.GetFirstNodeByName(moving.GetName())
    result2 = reloaded.GetFirstNodeByName(out.transformNode.GetName())
    assert moving2.GetParentTransformNode() is result2
    assert registration_parent(moving2).GetName() == start_name
    show_under_result(result2, moving2, [], False)
    assert moving2.GetParentTransformNode().GetName() == start_name
    assert moving2.GetNodeReference(PREVIOUS_PARENT_ROLE) is None  # taken out: nothing left to record


@pytest.mark.parametrize("reload", [False, True])
def test_a_starting_transform_recorded_by_an_earlier_version_is_read(scene, pair, tmp_path, reload):
    fixed, moving = pair
    start = _linear(scene, np.eye(4))
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(fixed, moving)
    moving.SetAndObserveTransformNodeID(out.transformNode.GetID())  # as an earlier version showed it
    out.transformNode.SetAttribute("ADRegNet.previousParent:" + moving.GetID(), start.GetID())
    if reload:
        scene = _reloaded(scene, tmp_path)
        moving = scene.GetFirstNodeByName(moving.GetName())
    assert registration_parent(moving).GetName() == start.GetName()
    show_under_result(moving.GetParentTransformNode(), moving, [], False)
    assert moving.GetParentTransformNode().GetName() == start.GetName()


def test_one_starting_transform_serves_the_registration_and_the_pair_table(scene, pair):
    """The registration's start (initial_transform_lps) and the pair table's 'TRE at start' (pair_rows, through
    frames.starting_transform) read the moving volume's starting transform through one look-up,
    frames.registration_parent: the same matrix as Slicer's own GetMatrixTransformBetweenNodes for a chain of linear
    transforms, also while the volume is shown registered; a non-linear start is still refused for the registration
    and still measured through for the table."""
    import slicer

    from ADRegNetMRML.frames import starting_transform
    from ADRegNetMRML.pairs import pair_rows

    fixed, moving = pair
    outer = np.eye(4)
    outer[:3, :3] = rotation(0.05, 0.1, -0.2)
    outer[:3, 3] = [1.0, 2.0, -4.0]
    inner = np.eye(4)
    inner[:3, 3] = [3.0, -1.0, 0.5]
    parent = _linear(scene, inner, "inner")
    parent.SetAndObserveTransformNodeID(_linear(scene, outer, "outer").GetID())
    moving.SetAndObserveTransformNodeID(parent.GetID())
    world_to_moving = vtk.vtkMatrix4x4()
    assert slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(None, parent, world_to_moving)
    slicer_ras = np.array([[world_to_moving.GetElement(r, c) for c in range(4)] for r in range(4)])
    geometry = oblique_geometry()
    fixed_lps = geometry.index_to_physical(np.array([[3.0, 4.0, 5.0], [8.0, 6.0, 2.0]]))
    moving_lps = fixed_lps + [[1.0, -2.0, 0.5], [0.0, 1.5, -1.0]]
    f_list = markups_node_from_points(scene, fixed_lps, "F")
    m_list = markups_node_from_points(scene, moving_lps, "M")
    m_list.SetAndObserveTransformNodeID(parent.GetID())  # in the moving volume's frame
    result = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(fixed, moving).transformNode
    for shown_registered in (False, True):
        show_under_result(result, moving, [m_list], shown_registered)
        initial = initial_transform_lps(moving)
        np.testing.assert_allclose(lps_matrix_to_ras(initial), slicer_ras, atol=1e-12)
        assert starting_transform(moving) is not None
        started = fixed_lps @ initial[:3, :3].T + initial[:3, 3]
        rows = pair_rows(f_list, m_list, fixed, moving)
        np.testing.assert_allclose([r.tre_start_mm for r in rows], np.linalg.norm(started - moving_lps, axis=1),
                                   atol=1e-9)
    show_under_result(result, moving, [m_list], False)
    assert starting_transform(None) is None
    bent = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "bent")
    bent.SetAndObserveTransformFromParent(result.GetTransformFromParent())
    parent.SetAndObserveTransformNodeID(bent.GetID())
    with pytest.raises(VolumeNodeError, match="the transform 'inner', which is itself under the non-linear transform "
                                              "'bent'"):
        initial_transform_lps(moving)
    rows = pair_rows(f_list, m_list, fixed, moving)
    assert all(r.tre_start_mm is not None and np.isfinite(r.tre_start_mm) for r in rows)
