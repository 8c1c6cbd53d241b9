"""ADRegNetMRMLLogic.registerNodes on a real scene.

The engine is swapped for an analytic one (a known smooth field; warped image and Jacobian from
SimpleITK) so that the scene bridge is checked against exact expectations; test_mrml_scene.py runs
the real engine on the demo pair.
"""
from __future__ import annotations

import numpy as np
import pytest

from ADRegNetLib.engine.api import RegistrationCancelled, RegistrationError
from ADRegNetMRML.geometry import VolumeNodeError, image_from_volume_node, points_lps_to_ras, volume_node_from_image
from ADRegNetMRML.landmarks import LandmarkError, markups_node_from_points, points_lps_from_markups
from ADRegNetMRML.logic import ADRegNetMRMLLogic
from ADRegNetMRML.runlog import RunLog
from ADRegNetMRML.transform import field_from_grid_transform_node
from mrml_helpers import AnalyticEngine, blob_image, node_ids, oblique_geometry


@pytest.fixture
def inputs(scene):
    fixed_geometry = oblique_geometry()
    moving_geometry = oblique_geometry(size=(16, 14, 12), spacing=(1.4, 1.0, 2.2), origin=(-30.0, 13.0, 47.0),
                                       angles=(0.2, -0.1, 0.35))
    fixed = volume_node_from_image(scene, blob_image(fixed_geometry, "fixed"), name="fixed")
    moving = volume_node_from_image(scene, blob_image(moving_geometry, "moving", shift=(1.5, -1.0, 0.5)),
                                    name="moving")
    rng = np.random.default_rng(7)
    fixed_pts = fixed_geometry.index_to_physical(rng.uniform(2, np.asarray(fixed_geometry.size) - 3, (6, 3)))
    moving_pts = fixed_pts + rng.normal(0, 2.0, fixed_pts.shape)
    labels = [f"P-{k + 1}" for k in range(6)]
    f_pts = markups_node_from_points(scene, fixed_pts, "F", labels)
    m_pts = markups_node_from_points(scene, moving_pts, "M", labels)
    return dict(fixed=fixed, moving=moving, fixed_pts=f_pts, moving_pts=m_pts)


def _snapshot(node):
    if node.IsA("vtkMRMLVolumeNode"):
        image = image_from_volume_node(node, dtype=None)
        return image.array.copy(), image.geometry.to_dict(), node.GetName(), node.GetParentTransformNode()
    return points_lps_from_markups(node), node.GetName()


def _assert_same(a, b):
    for x, y in zip(a, b):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


def test_outputs_are_new_nodes_and_inputs_are_untouched(scene, inputs):
    before = {k: _snapshot(n) for k, n in inputs.items()}
    ids_before = node_ids(scene)
    engine = AnalyticEngine()
    progress = []
    out = ADRegNetMRMLLogic(scene, runner=engine).registerNodes(
        inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"], preset="lung-ct",
        quality="fast", device="cpu", progress=lambda f, t: progress.append((f, t)))
    for key, node in inputs.items():
        _assert_same(_snapshot(node), before[key])
    new = [i for i in node_ids(scene) if i not in ids_before]
    for node in (out.transformNode, out.warpedNode, out.jacobianNode, out.treTableNode):
        assert node.GetID() in new
    assert out.transformNode.IsA("vtkMRMLGridTransformNode")
    assert progress == [(0.5, "analytic")]
    call = engine.calls[0]
    assert (call["preset"], call["quality"], call["device"]) == ("lung-ct", "fast", "cpu")
    # the engine got LPS images/landmarks: the fixed image's geometry, the landmarks' LPS positions
    assert call["fixed"].geometry.allclose(oblique_geometry(), atol=1e-9)
    np.testing.assert_allclose(call["fixed_landmarks"], points_lps_from_markups(inputs["fixed_pts"]))
    assert out.similarity() == (0.2, 0.9) and out.foldingCount() == 0


def test_transform_node_maps_fixed_landmarks_like_the_field(scene, inputs):
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(
        inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"])
    fixed_lps = points_lps_from_markups(inputs["fixed_pts"])
    expected_lps = out.result.warped_fixed_landmarks
    got_ras = np.array([out.transformNode.GetTransformFromParent().TransformPoint(*map(float, p))
                        for p in points_lps_to_ras(fixed_lps)])
    assert np.linalg.norm(got_ras - points_lps_to_ras(expected_lps), axis=1).max() <= 0.1


def test_warped_and_jacobian_nodes_on_fixed_grid(scene, inputs):
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(inputs["fixed"], inputs["moving"])
    fixed_geometry = image_from_volume_node(inputs["fixed"]).geometry
    for node in (out.warpedNode, out.jacobianNode):
        assert image_from_volume_node(node).geometry.allclose(fixed_geometry, atol=1e-9)
    np.testing.assert_allclose(image_from_volume_node(out.jacobianNode).array, out.result.jacobian.array)
    assert out.treTableNode is None  # no landmarks, no table
    assert out.jacobianNode.GetDisplayNode().GetWindow() == pytest.approx(2.0)


def test_tre_table_matches_independent_distances(scene, inputs):
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(
        inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"])
    f = points_lps_from_markups(inputs["fixed_pts"])
    m = points_lps_from_markups(inputs["moving_pts"])
    before = np.linalg.norm(m - f, axis=1)
    after = np.linalg.norm(out.result.warped_fixed_landmarks - m, axis=1)
    table = out.treTableNode.GetTable()
    got = np.array([[table.GetValue(r, c).ToDouble() for c in (1, 2)] for r in range(table.GetNumberOfRows())])
    np.testing.assert_allclose(got[:6, 0], before)
    np.testing.assert_allclose(got[:6, 1], after)
    np.testing.assert_allclose(got[6:, 0], [before.mean(), before.std(), before.max()])
    assert table.GetValue(0, 0).ToString() == "P-1"


def test_output_nodes_given_are_overwritten_in_place(scene, inputs):
    t = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "my transform")
    w = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my warped")
    j = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my jacobian")
    logic = ADRegNetMRMLLogic(scene, runner=AnalyticEngine())
    out = logic.registerNodes(inputs["fixed"], inputs["moving"], outputTransformNode=t, outputWarpedNode=w,
                              outputJacobianNode=j)
    assert (out.transformNode, out.warpedNode, out.jacobianNode) == (t, w, j)
    assert w.GetName() == "my warped" and w.GetImageData() is not None
    # the moving volume shown under the output transform can be registered again
    logic.setMovingUnderTransform(inputs["moving"], t, True)
    ids = node_ids(scene)
    again = logic.registerNodes(inputs["fixed"], inputs["moving"], outputTransformNode=t, outputWarpedNode=w,
                                outputJacobianNode=j)
    assert [i for i in node_ids(scene) if i not in ids] == [again.logNode.GetID()]  # only the run's log is new
    logic.setMovingUnderTransform(inputs["moving"], t, False)
    assert inputs["moving"].GetParentTransformNode() is None


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
    before = _snapshot(inputs["fixed"])
    with pytest.raises(VolumeNodeError, match="the warped volume output 'fixed' is the fixed volume; results never "
                                              "overwrite an input"):
        logic.registerNodes(inputs["fixed"], inputs["moving"], outputWarpedNode=inputs["fixed"])
    with pytest.raises(VolumeNodeError, match="the Jacobian output 'moving' is the moving volume"):
        logic.registerNodes(inputs["fixed"], inputs["moving"], outputJacobianNode=inputs["moving"])
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "shared")
    with pytest.raises(VolumeNodeError, match="'shared' is chosen as both the warped volume and the Jacobian output"):
        logic.registerNodes(inputs["fixed"], inputs["moving"], outputWarpedNode=other, outputJacobianNode=other)
    assert engine.calls == []
    _assert_same(_snapshot(inputs["fixed"]), before)


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


def test_a_label_map_as_the_moving_volume_publishes(scene, inputs):
    """Before: publishing copied the moving volume's window to the warped volume and failed with a raw
    AttributeError when the moving volume was a label map (its display node has no window)."""
    image = image_from_volume_node(inputs["moving"], "moving")
    labels = volume_node_from_image(scene, type(image)((image.array > image.array.mean()).astype(np.uint8),
                                                       image.geometry, "l"), name="moving labels",
                                    class_name="vtkMRMLLabelMapVolumeNode")
    labels.CreateDefaultDisplayNodes()
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(inputs["fixed"], labels)
    assert out.warpedNode.GetImageData() is not None


def test_outputs_under_a_transform_are_taken_out_of_it(scene, inputs):
    """Before: a warped output under a transform kept it (the result shown 25 mm off), and an output transform
    with a parent was composed with it."""
    import vtk

    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(1, 3, 25.0)
    shift.SetMatrixTransformToParent(matrix)
    t = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "my transform")
    w = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my warped")
    for node in (t, w):
        node.SetAndObserveTransformNodeID(shift.GetID())
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(
        inputs["fixed"], inputs["moving"], outputTransformNode=t, outputWarpedNode=w)
    assert t.GetParentTransformNode() is None and w.GetParentTransformNode() is None
    log = out.logNode.GetText()
    assert "'my warped' was under the transform 'shift' and was taken out of it" in log
    assert "'my transform' was under the transform 'shift'" in log


def test_each_run_keeps_its_results_as_new_nodes(scene, inputs):
    logic = ADRegNetMRMLLogic(scene, runner=AnalyticEngine())
    first = logic.registerNodes(inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"])
    kept = _snapshot(first.warpedNode)
    second = logic.registerNodes(inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"])
    made = lambda out: [out.transformNode, out.warpedNode, out.jacobianNode, out.treTableNode, out.logNode]  # noqa: E731
    assert not {n.GetID() for n in made(first)} & {n.GetID() for n in made(second)}
    assert all(scene.GetNodeByID(n.GetID()) is n for n in made(first))
    _assert_same(_snapshot(first.warpedNode), kept)
    assert first.warpedNode.GetName() != second.warpedNode.GetName()  # unique names
    for out in (first, second):
        roles = [n.GetAttribute("ADRegNet.role") for n in made(out)]
        assert roles == ["transform", "warped", "jacobian", "tre", "log"]


def test_inverse_transform_node_when_the_engine_gives_one(scene, inputs):
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(inputs["fixed"], inputs["moving"])
    assert out.inverseTransformNode is None  # this engine gave no inverse
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine(inverse=True)).registerNodes(inputs["fixed"], inputs["moving"])
    node = out.inverseTransformNode
    assert node.GetAttribute("ADRegNet.role") == "inverse-transform" and node.GetName() == "fixed to moving transform"
    field, geometry = field_from_grid_transform_node(node)
    assert geometry.allclose(image_from_volume_node(inputs["moving"]).geometry, atol=1e-9)
    np.testing.assert_allclose(field, out.result.inverse_disp_mm, atol=1e-5)


def test_the_run_log_is_kept_with_the_outputs(scene, inputs):
    lines = []
    log = RunLog(listener=lines.append)
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(
        inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"], quality="fast", log=log)
    text = out.logNode.GetText()
    assert text == log.text() and lines == log.lines
    for expected in ("fixed: 'fixed' 18x15x11 voxels", "quality fast", "landmark pairs: 6", "analytic (50%)",
                     "similarity (NCC) 0.2000 -> 0.9000", "outputs: 'moving to fixed transform'"):
        assert expected in text, expected
    failed = RunLog()
    with pytest.raises(RegistrationError):
        ADRegNetMRMLLogic(scene, runner=AnalyticEngine(RegistrationError("no overlap"))).registerNodes(
            inputs["fixed"], inputs["moving"], log=failed)
    assert "stopped: RegistrationError: no overlap" in failed.text()


def test_similarity_reports_nmi_for_two_contrasts_and_ncc_otherwise():
    from ADRegNetMRML.logic import RegistrationNodes

    one = RegistrationNodes(None, None, None, metrics={"multimodal": False, "similarity_before": {"ncc": 0.5, "nmi": 1.1},
                                                       "similarity_after": {"ncc": 0.9, "nmi": 1.3}})
    two = RegistrationNodes(None, None, None, metrics=dict(one.metrics, multimodal=True))
    assert one.similarity() == (0.5, 0.9)
    assert two.similarity() == (1.1, 1.3)


@pytest.mark.parametrize("guide", [True, False])
def test_landmark_pairs_guide_or_only_measure_and_the_outputs_say_which(scene, inputs, guide):
    """``landmarksGuide`` reaches the engine as ``landmarks_guide``; the TRE table's attribute and the
    run log say whether the pairs' error after the run is an independent check."""
    from ADRegNetMRML.logic import TRE_GUIDED_ATTRIBUTE

    engine = AnalyticEngine()
    out = ADRegNetMRMLLogic(scene, runner=engine).registerNodes(
        inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"], landmarksGuide=guide)
    assert engine.calls[0]["landmarks_guide"] is guide
    assert out.treTableNode.GetAttribute(TRE_GUIDED_ATTRIBUTE) == ("true" if guide else "false")
    text = out.logNode.GetText()
    assert ("guided the registration" in text) is guide and ("measured only" in text) is not guide
    # the pair table marks the pairs of a guided run; a run that only measured, into the same transform
    # node, clears those marks
    from ADRegNetMRML.pairs import GUIDING_PAIRS_ATTRIBUTE, pair_rows

    rows = pair_rows(inputs["fixed_pts"], inputs["moving_pts"], inputs["fixed"], inputs["moving"], out.transformNode)
    assert rows and all(r.guided is guide for r in rows)
    again = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(
        inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"], landmarksGuide=False,
        outputTransformNode=out.transformNode)
    assert again.transformNode is out.transformNode and again.transformNode.GetAttribute(GUIDING_PAIRS_ATTRIBUTE) is None
