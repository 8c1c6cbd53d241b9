"""ADRegNetMRMLLogic.registerNodes on a real scene.

Most tests swap the engine for an analytic one (a known smooth field; warped image and Jacobian
from SimpleITK) so that the scene bridge is checked against exact expectations. One test at the
end runs the real engine (quality="fast") on a tiny volume.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetLib.engine.api import RegistrationCancelled, RegistrationError, RegistrationResult
from ADRegNetLib.io.image import Image, from_sitk, to_sitk
from ADRegNetMRML.geometry import VolumeNodeError, image_from_volume_node, points_lps_to_ras, volume_node_from_image
from ADRegNetMRML.landmarks import LandmarkError, markups_node_from_points, points_lps_from_markups
from ADRegNetMRML.logic import ADRegNetMRMLLogic
from mrml_helpers import REPO, analytic_field, blob_image, node_ids, oblique_geometry, sitk_displacement_transform


class AnalyticEngine:
    """Stands in for register(): returns a known field; records what it was given."""

    def __init__(self, fail_with: Exception | None = None):
        self.fail_with = fail_with
        self.calls: list[dict] = []

    def __call__(self, fixed, moving, **kw):
        self.calls.append(dict(fixed=fixed, moving=moving, **kw))
        if kw.get("progress"):
            kw["progress"](0.5, "analytic")
        if kw.get("should_stop") and kw["should_stop"]():
            raise RegistrationCancelled("registration cancelled by the user")
        if self.fail_with is not None:
            raise self.fail_with
        disp = analytic_field(fixed.geometry, amplitude=3.0)
        transform = sitk_displacement_transform(disp, fixed.geometry)
        warped = sitk.Resample(to_sitk(moving), to_sitk(fixed), transform, sitk.sitkLinear, 0.0)
        field = sitk.GetImageFromArray(np.moveaxis(disp, 0, -1).astype(np.float64), isVector=True)
        fixed.geometry.apply_to_sitk(field)
        jac = sitk.DisplacementFieldJacobianDeterminant(field)
        warped_pts = None
        if kw.get("fixed_landmarks") is not None:
            warped_pts = np.array([transform.TransformPoint(p.tolist()) for p in kw["fixed_landmarks"]])
        return RegistrationResult(disp, fixed.geometry, from_sitk(warped, "warped"), from_sitk(jac, "jacobian"),
                                  {"similarity_before": 0.2, "similarity_after": 0.9,
                                   "jacobian": {"folding_count": 0}}, warped_pts)


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
    count = scene.GetNumberOfNodes()
    logic.registerNodes(inputs["fixed"], inputs["moving"], outputTransformNode=t, outputWarpedNode=w,
                        outputJacobianNode=j)
    assert scene.GetNumberOfNodes() == count
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


def test_failure_while_publishing_removes_partial_outputs(scene, inputs, monkeypatch):
    """If making an output fails after others were made, the new nodes are removed again."""
    import ADRegNetMRML.logic as logic_module

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(logic_module, "jacobian_volume_node", broken)
    ids = node_ids(scene)
    with pytest.raises(RuntimeError, match="disk full"):
        ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(
            inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"])
    assert node_ids(scene) == ids


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


def test_mask_is_passed_as_bool_image(scene, inputs):
    geometry = oblique_geometry()
    mask = np.zeros(geometry.shape, np.uint8)
    mask[2:8, 3:10, 4:12] = 1
    mask_node = volume_node_from_image(scene, Image(mask, geometry, "mask"), name="mask",
                                       class_name="vtkMRMLLabelMapVolumeNode")
    engine = AnalyticEngine()
    ADRegNetMRMLLogic(scene, runner=engine).registerNodes(inputs["fixed"], inputs["moving"], fixedMaskNode=mask_node)
    got = engine.calls[0]["fixed_mask"]
    assert got.array.dtype == np.bool_ and got.array.sum() == mask.sum()


def test_display_helpers(scene, inputs):
    logic = ADRegNetMRMLLogic(scene, runner=AnalyticEngine())
    out = logic.registerNodes(inputs["fixed"], inputs["moving"])
    logic.setTransformGridVisible(out.transformNode, True)
    display = out.transformNode.GetDisplayNode()
    assert display.GetVisibility2D() and display.GetVisualizationMode() == display.VIS_MODE_GRID
    logic.setTransformGridVisible(out.transformNode, False)
    assert not display.GetVisibility2D()
    scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    assert logic.showJacobianOverlay(out.jacobianNode, inputs["fixed"], 0.3) == 1


ENGINE = REPO / "ADRegNetLib" / "engine" / "register.py"


@pytest.mark.skipif(not ENGINE.exists(), reason="ADRegNetLib/engine/register.py is not written yet")
def test_end_to_end_with_the_real_engine(scene):
    """register(..., quality="fast") on a tiny pair with a known shift: TRE goes down, outputs in the scene."""
    geometry = oblique_geometry(size=(32, 32, 32), spacing=(2.0, 2.0, 2.0), origin=(-31.0, -31.0, -31.0),
                                angles=(0.0, 0.0, 0.0))
    shift = np.array([3.0, -2.0, 2.0])
    fixed = volume_node_from_image(scene, blob_image(geometry, "fixed"), name="fixed")
    moving = volume_node_from_image(scene, blob_image(geometry, "moving", shift=shift), name="moving")
    fixed_pts = np.array([[3.0, 2.0, 0.0], [-4.0, -1.0, -2.0]]) + geometry.center()
    f_node = markups_node_from_points(scene, fixed_pts, "F")
    m_node = markups_node_from_points(scene, fixed_pts + shift, "M")
    ids = node_ids(scene)
    out = ADRegNetMRMLLogic(scene).registerNodes(fixed, moving, f_node, m_node, quality="fast", device="cpu")
    assert len(node_ids(scene)) > len(ids)
    table = out.treTableNode.GetTable()
    before = [table.GetValue(r, 1).ToDouble() for r in range(2)]
    after = [table.GetValue(r, 2).ToDouble() for r in range(2)]
    np.testing.assert_allclose(before, np.linalg.norm(shift), atol=1e-6)
    assert max(after) < max(before)
    got = np.array([out.transformNode.GetTransformFromParent().TransformPoint(*map(float, p))
                    for p in points_lps_to_ras(fixed_pts)])
    np.testing.assert_allclose(got, points_lps_to_ras(out.result.warped_fixed_landmarks), atol=0.1)
