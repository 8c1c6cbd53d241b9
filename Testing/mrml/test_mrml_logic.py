"""ADRegNetMRMLLogic.registerNodes on a real scene: the outputs of a run.

The engine is swapped for an analytic one (a known smooth field; warped image and Jacobian from
SimpleITK) so that the scene bridge is checked against exact expectations; test_mrml_scene.py runs
the real engine on the demo pair, test_mrml_logic_refusals.py what happens when something goes wrong.
"""
from __future__ import annotations

import numpy as np
import pytest

from ADRegNetLib.engine.api import RegistrationError
from ADRegNetMRML.geometry import image_from_volume_node, points_lps_to_ras, volume_node_from_image
from ADRegNetMRML.jacobian import JACOBIAN_WINDOW
from ADRegNetMRML.landmarks import points_lps_from_markups
from ADRegNetMRML.logic import ADRegNetMRMLLogic
from ADRegNetMRML.runlog import RunLog
from ADRegNetMRML.transform import field_from_grid_transform_node
from mrml_helpers import AnalyticEngine, assert_same, node_ids, oblique_geometry, registration_inputs, snapshot


@pytest.fixture
def inputs(scene):
    return registration_inputs(scene)


def test_outputs_are_new_nodes_and_inputs_are_untouched(scene, inputs):
    before = {k: snapshot(n) for k, n in inputs.items()}
    ids_before = node_ids(scene)
    engine = AnalyticEngine()
    progress = []
    out = ADRegNetMRMLLogic(scene, runner=engine).registerNodes(
        inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"], preset="lung-ct",
        quality="fast", device="cpu", progress=lambda f, t: progress.append((f, t)))
    for key, node in inputs.items():
        assert_same(snapshot(node), before[key])
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
    assert out.jacobianNode.GetDisplayNode().GetWindow() == pytest.approx(JACOBIAN_WINDOW)


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


def _column(table_node, name: str) -> np.ndarray:
    table = table_node.GetTable()
    column = table.GetColumnByName(name)
    return np.array([column.GetValue(r) for r in range(table.GetNumberOfRows())])


def test_tre_at_the_start_is_what_the_views_showed(scene, inputs):
    """Before: with the moving volume under a starting transform the table had only 'before', measured on the
    volumes as stored (3.45 mm on the demo pair while the views showed the pairs 11.35 mm apart). Now start_mm
    (metrics.json's tre_start) is the distance the views showed: the points where they are displayed."""
    import vtk

    start = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "starting alignment")
    matrix = vtk.vtkMatrix4x4()
    turn = np.array([[np.cos(0.1), -np.sin(0.1)], [np.sin(0.1), np.cos(0.1)]])  # a rigid start: 0.1 rad and a shift
    for (r, c), v in {(0, 0): turn[0, 0], (0, 1): turn[0, 1], (1, 0): turn[1, 0], (1, 1): turn[1, 1],
                      (0, 3): 6.0, (1, 3): -4.0, (2, 3): 3.0}.items():
        matrix.SetElement(r, c, float(v))
    start.SetMatrixTransformToParent(matrix)
    for node in (inputs["moving"], inputs["moving_pts"]):  # the moving points mark the moving anatomy
        node.SetAndObserveTransformNodeID(start.GetID())
    engine = AnalyticEngine()
    out = ADRegNetMRMLLogic(scene, runner=engine).registerNodes(
        inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"])
    table = out.treTableNode
    assert [table.GetTable().GetColumnName(c) for c in range(4)] == ["label", "before_mm", "start_mm", "after_mm"]
    shown = np.linalg.norm(points_lps_from_markups(inputs["moving_pts"]) - points_lps_from_markups(inputs["fixed_pts"]),
                           axis=1)  # world positions: where the views show the points
    stored = np.linalg.norm(engine.calls[0]["moving_landmarks"] - engine.calls[0]["fixed_landmarks"], axis=1)
    assert np.abs(shown - stored).min() > 1.0  # the starting transform moved them
    np.testing.assert_allclose(_column(table, "start_mm")[:6], shown, atol=1e-6)
    np.testing.assert_allclose(_column(table, "before_mm")[:6], stored, atol=1e-9)
    assert table.GetColumnTitle("start_mm") == "TRE at start (mm)"
    assert table.GetColumnTitle("before_mm") == "TRE as stored (mm)"
    # the pair table of the panel shows the same number as its "before"
    from ADRegNetMRML.pairs import pair_rows

    rows = pair_rows(inputs["fixed_pts"], inputs["moving_pts"], inputs["fixed"], inputs["moving"], out.transformNode)
    np.testing.assert_allclose([r.tre_shown_before_mm for r in rows], shown, atol=1e-6)
    np.testing.assert_allclose([r.tre_before_mm for r in rows], stored, atol=1e-6)
    # still so once the module shows the moving volume registered (under the result)
    ADRegNetMRMLLogic.setMovingUnderTransform(inputs["moving"], out.transformNode, True, inputs["moving_pts"])
    rows = pair_rows(inputs["fixed_pts"], inputs["moving_pts"], inputs["fixed"], inputs["moving"], out.transformNode)
    np.testing.assert_allclose([r.tre_start_mm for r in rows], shown, atol=1e-4)
    # without a starting transform there is no start column, and "before" is what the views show
    plain = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(
        inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"], useInitialTransform=False)
    assert plain.treTableNode.GetTable().GetColumnByName("start_mm") is None
    assert plain.treTableNode.GetColumnTitle("before_mm") == "TRE before (mm)"


def test_the_tre_table_takes_tre_start_from_the_engine(scene, inputs):
    """The table's columns are metrics.json's per-landmark figures when the engine gives them."""
    import vtk

    class WithStart(AnalyticEngine):
        def __call__(self, fixed, moving, **kw):
            result = super().__call__(fixed, moving, **kw)
            k = len(kw["fixed_landmarks"])
            result.metrics.update({f"tre_{n}": {"per_landmark": [v] * k} for n, v in
                                   (("before", 1.0), ("start", 2.0), ("after", 0.5))})
            return result

    start = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "start")
    start.SetMatrixTransformToParent(vtk.vtkMatrix4x4())
    inputs["moving"].SetAndObserveTransformNodeID(start.GetID())
    out = ADRegNetMRMLLogic(scene, runner=WithStart()).registerNodes(
        inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"])
    for name, value in (("before_mm", 1.0), ("start_mm", 2.0), ("after_mm", 0.5)):
        np.testing.assert_allclose(_column(out.treTableNode, name)[:6], value)


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
    kept = snapshot(first.warpedNode)
    second = logic.registerNodes(inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"])
    made = lambda out: [out.transformNode, out.warpedNode, out.jacobianNode, out.treTableNode, out.logNode]  # noqa: E731
    assert not {n.GetID() for n in made(first)} & {n.GetID() for n in made(second)}
    assert all(scene.GetNodeByID(n.GetID()) is n for n in made(first))
    assert_same(snapshot(first.warpedNode), kept)
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


def test_a_local_change_the_engine_refined_is_shown_as_a_locked_point_list(scene, inputs):
    """Where the engine found a local change and refined it (metrics ``refinement.local_change``), a point list marks
    each place (RAS in the scene), labelled with its volume; none when the change was left or none was found."""
    class WithChange(AnalyticEngine):
        def __init__(self, kept: bool):
            super().__init__()
            self.kept = kept

        def __call__(self, fixed, moving, **kw):
            result = super().__call__(fixed, moving, **kw)
            result.metrics["refinement"] = {"local_change": {
                "found": True, "kept": self.kept,
                "parts": [{"centre_mm": [10.0, -20.0, 31.0], "ml": 12.3}, {"centre_mm": [-4.5, 6.0, 8.0], "ml": 5.6}]}}
            return result

    out = ADRegNetMRMLLogic(scene, runner=WithChange(kept=True)).registerNodes(inputs["fixed"], inputs["moving"])
    node = out.localChangeNode
    assert node is not None and node.IsA("vtkMRMLMarkupsFiducialNode") and node.GetLocked()
    assert node.GetName().endswith("local change") and node.GetAttribute("ADRegNet.role") == "local-change"
    ras = [0.0, 0.0, 0.0]
    node.GetNthControlPointPosition(0, ras)
    np.testing.assert_allclose(ras, [-10.0, 20.0, 31.0])
    np.testing.assert_allclose(points_lps_from_markups(node), [[10.0, -20.0, 31.0], [-4.5, 6.0, 8.0]])
    assert [node.GetNthControlPointLabel(k) for k in range(2)] == ["change 1 (12 ml)", "change 2 (6 ml)"]
    assert node.GetName() in out.logNode.GetText()  # the run log's list of outputs names it
    before = set(node_ids(scene))
    left = ADRegNetMRMLLogic(scene, runner=WithChange(kept=False)).registerNodes(inputs["fixed"], inputs["moving"])
    assert left.localChangeNode is None
    assert not any(scene.GetNodeByID(i).GetName().endswith("local change") for i in set(node_ids(scene)) - before)
    plain = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(inputs["fixed"], inputs["moving"])
    assert plain.localChangeNode is None
