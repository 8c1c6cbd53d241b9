"""ADRegNetMRMLLogic.registerNodes when something goes wrong: inputs refused before anything runs, a
cancelled or failed run, a failure while publishing. Each must leave the scene, the inputs and the output
nodes the user chose as they were.

The engine is the analytic stand-in of mrml_helpers (test_mrml_logic.py has the outputs of a run).
"""
from __future__ import annotations

import numpy as np
import pytest

from ADRegNetLib.engine.api import RegistrationCancelled, RegistrationError
from ADRegNetMRML.geometry import VolumeNodeError, image_from_volume_node
from ADRegNetMRML.landmarks import LandmarkError
from ADRegNetMRML.logic import ADRegNetMRMLLogic
from ADRegNetMRML.transform import field_from_grid_transform_node
from mrml_helpers import AnalyticEngine, assert_same, node_ids, registration_inputs, snapshot


@pytest.fixture
def inputs(scene):
    return registration_inputs(scene)


def test_cancel_leaves_the_scene_unchanged(scene, inputs):
    ids = node_ids(scene)
    with pytest.raises(RegistrationCancelled):
        ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(
            inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"], shouldStop=lambda: True)
    assert node_ids(scene) == ids


def test_engine_failure_leaves_the_scene_unchanged(scene, inputs):
    ids = node_ids(scene)
    with pytest.raises(RegistrationError, match="no overlap"):
        ADRegNetMRMLLogic(scene, runner=AnalyticEngine(RegistrationError("no overlap"))).registerNodes(
            inputs["fixed"], inputs["moving"])
    assert node_ids(scene) == ids


def _break_publishing(monkeypatch) -> None:
    """Making the Jacobian output fails ("disk full"), after the transform and warped outputs were made."""
    import ADRegNetMRML.logic as logic_module

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(logic_module, "jacobian_volume_node", broken)


def test_failure_while_publishing_removes_partial_outputs(scene, inputs, monkeypatch):
    """If making an output fails after others were made, the new nodes are removed again."""
    _break_publishing(monkeypatch)
    ids = node_ids(scene)
    with pytest.raises(RuntimeError, match="disk full"):
        ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(
            inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"])
    assert node_ids(scene) == ids


def test_failure_while_publishing_restores_the_output_nodes_given(scene, inputs, monkeypatch):
    """Before: the new nodes were removed again, but the output nodes the user had chosen stayed overwritten (a
    previous result's field changed by up to 8 mm, a volume's voxels replaced)."""
    logic = ADRegNetMRMLLogic(scene, runner=AnalyticEngine())
    previous = logic.registerNodes(inputs["fixed"], inputs["moving"])
    field_before, _ = field_from_grid_transform_node(previous.transformNode)
    warped_before = image_from_volume_node(previous.warpedNode, "warped").array.copy()
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    previous.warpedNode.SetAndObserveTransformNodeID(shift.GetID())
    previous.transformNode.SetAttribute("note", "kept")

    class Shifted(AnalyticEngine):  # another field, so an overwrite would show
        def __call__(self, fixed, moving, **kw):
            result = super().__call__(fixed, moving, **kw)
            result.disp_mm = result.disp_mm * 2.0 + 1.0
            result.warped.array[...] = 7.0
            return result

    _break_publishing(monkeypatch)
    ids = node_ids(scene)
    with pytest.raises(RuntimeError, match="disk full"):
        ADRegNetMRMLLogic(scene, runner=Shifted()).registerNodes(
            inputs["fixed"], inputs["moving"], outputTransformNode=previous.transformNode,
            outputWarpedNode=previous.warpedNode)
    assert node_ids(scene) == ids
    np.testing.assert_array_equal(field_from_grid_transform_node(previous.transformNode)[0], field_before)
    np.testing.assert_array_equal(image_from_volume_node(previous.warpedNode, "warped").array, warped_before)
    assert previous.warpedNode.GetParentTransformNode() is shift
    assert previous.transformNode.GetAttribute("note") == "kept"


def test_bad_field_from_engine_leaves_the_scene_unchanged(scene, inputs):
    class NanEngine(AnalyticEngine):
        def __call__(self, fixed, moving, **kw):
            result = super().__call__(fixed, moving, **kw)
            result.disp_mm = result.disp_mm.copy()
            result.disp_mm[0, 0, 0, 0] = np.nan
            return result

    ids = node_ids(scene)
    with pytest.raises(ValueError, match="NaN or infinite"):
        ADRegNetMRMLLogic(scene, runner=NanEngine()).registerNodes(inputs["fixed"], inputs["moving"])
    assert node_ids(scene) == ids


@pytest.mark.parametrize("case, message", [
    ("same", "fixed and moving volumes are the same node"),
    ("no-moving", "moving volume is not set"),
    ("counts", r"landmark counts differ: fixed 'F' has 6 points, moving 'M' has 5"),
    ("one-list", "fixed landmarks are set but moving landmarks are not"),
])
def test_bad_inputs_are_refused_before_running(scene, inputs, case, message):
    engine = AnalyticEngine()
    logic = ADRegNetMRMLLogic(scene, runner=engine)
    kwargs = dict(fixedVolumeNode=inputs["fixed"], movingVolumeNode=inputs["moving"])
    if case == "same":
        kwargs["movingVolumeNode"] = inputs["fixed"]
    elif case == "no-moving":
        kwargs["movingVolumeNode"] = None
    elif case == "counts":
        inputs["moving_pts"].RemoveNthControlPoint(5)
        kwargs.update(fixedLandmarksNode=inputs["fixed_pts"], movingLandmarksNode=inputs["moving_pts"])
    else:
        kwargs.update(fixedLandmarksNode=inputs["fixed_pts"])
    ids = node_ids(scene)
    with pytest.raises((VolumeNodeError, LandmarkError), match=message):
        logic.registerNodes(**kwargs)
    assert engine.calls == [] and node_ids(scene) == ids


def test_a_landmark_off_its_volume_is_named_by_its_pair_label(scene, inputs):
    """Before: the engine's 'moving landmark 2 at [-94.152, -46.57, -874.926] mm (LPS)', a 0-based index and
    LPS coordinates for the point a clinician knows as 'carina', shown in RAS."""
    engine = AnalyticEngine()
    inputs["moving_pts"].SetNthControlPointLabel(2, "carina")
    inputs["fixed_pts"].SetNthControlPointLabel(2, "carina")
    inputs["moving_pts"].SetNthControlPointPosition(2, 0.0, 0.0, 900.0)  # RAS, far above the volume
    with pytest.raises(LandmarkError, match=r"landmark pair 'carina' \(point 3\): its moving point in 'M' lies [\d.]+ mm "
                                            r"outside the moving volume \(at RAS \[0.0, 0.0, 900.0\] in the volume's "
                                            r"frame\); 1 of 6 moving points are outside"):
        ADRegNetMRMLLogic(scene, runner=engine).registerNodes(inputs["fixed"], inputs["moving"], inputs["fixed_pts"],
                                                               inputs["moving_pts"])
    assert engine.calls == []


def test_outputs_never_overwrite_an_input(scene, inputs):
    """Defect 3: choosing an input as an output is refused before anything runs; voxels stay."""
    engine = AnalyticEngine()
    logic = ADRegNetMRMLLogic(scene, runner=engine)
    before = snapshot(inputs["fixed"])
    with pytest.raises(VolumeNodeError, match="the warped volume output 'fixed' is the fixed volume; results never "
                                              "overwrite an input"):
        logic.registerNodes(inputs["fixed"], inputs["moving"], outputWarpedNode=inputs["fixed"])
    with pytest.raises(VolumeNodeError, match="the Jacobian output 'moving' is the moving volume"):
        logic.registerNodes(inputs["fixed"], inputs["moving"], outputJacobianNode=inputs["moving"])
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "shared")
    with pytest.raises(VolumeNodeError, match="'shared' is chosen as both the warped volume and the Jacobian output"):
        logic.registerNodes(inputs["fixed"], inputs["moving"], outputWarpedNode=other, outputJacobianNode=other)
    assert engine.calls == []
    assert_same(snapshot(inputs["fixed"]), before)


def test_outputs_that_cannot_hold_their_result_are_refused(scene, inputs):
    """Before: the keyword API turned the moving volume's own starting linear transform (or any linear or
    B-spline transform) into a grid transform, destroying the alignment under it; a label map as the warped
    or Jacobian output failed while publishing with a raw AttributeError after its voxels were replaced."""
    import vtk

    engine = AnalyticEngine()
    logic = ADRegNetMRMLLogic(scene, runner=engine)
    start = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "starting alignment")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 4.0)
    start.SetMatrixTransformToParent(matrix)
    inputs["moving"].SetAndObserveTransformNodeID(start.GetID())
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    for kwargs, message in (
            (dict(outputTransformNode=start), r"the transform output 'starting alignment' is a vtkMRMLLinearTransformNode; "
                                              r"the result needs a grid transform"),
            (dict(outputInverseTransformNode=scene.AddNewNodeByClass("vtkMRMLBSplineTransformNode", "b")),
             r"the inverse transform output 'b' is a vtkMRMLBSplineTransformNode"),
            (dict(outputWarpedNode=labels), r"the warped volume output 'labels' is a vtkMRMLLabelMapVolumeNode; the result "
                                            r"needs a scalar volume \(not a label map\)"),
            (dict(outputJacobianNode=labels), r"the Jacobian output 'labels' is a vtkMRMLLabelMapVolumeNode")):
        with pytest.raises(VolumeNodeError, match=message):
            logic.registerNodes(inputs["fixed"], inputs["moving"], **kwargs)
    assert engine.calls == []
    assert start.GetMatrixTransformToParent().GetElement(0, 3) == 4.0
