"""A result transform knows the volumes it registered, and the scene functions that apply it refuse others.

Real MRML classes throughout: scene import with colliding IDs, node deletion, segmentation warping and
showing a volume under a result (App-level 'result is current' is in Testing/ui/test_ui_logic.py).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from ADRegNetMRML.frames import (
    FIXED_VOLUME_ATTRIBUTE, MOVING_VOLUME_ATTRIBUTE, VOLUME_REFERENCES_ATTRIBUTE, check_result_volumes, result_is_for,
    show_under_result,
)
from ADRegNetMRML.geometry import VolumeNodeError, volume_node_from_image
from ADRegNetMRML.logic import ADRegNetMRMLLogic
from ADRegNetMRML.masks import warp_segmentation
from mrml_helpers import AnalyticEngine, blob_image, node_ids, oblique_geometry, registration_inputs


@pytest.fixture
def inputs(scene):
    return registration_inputs(scene)


def _segmentation(scene, moving):
    import slicer

    from ADRegNetMRML.geometry import image_from_volume_node

    image = image_from_volume_node(moving, "moving")
    labels = volume_node_from_image(scene, type(image)((image.array > image.array.mean()).astype(np.uint8),
                                                       image.geometry, "l"), name="l",
                                    class_name="vtkMRMLLabelMapVolumeNode")
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "organ")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labels, node)
    node.CreateDefaultDisplayNodes()
    scene.RemoveNode(labels)
    return node


def test_a_result_is_used_only_with_the_volumes_it_registered(scene, inputs):
    """Before: warp_segmentation and show_under_result took any result: a segmentation of another moving volume was
    sampled through a field made for the first one, and a volume was shown 'registered' under another's result,
    with no word (only the panel checked). Correct calls are accepted as before."""
    fixed, moving = inputs["fixed"], inputs["moving"]
    logic = ADRegNetMRMLLogic(scene, runner=AnalyticEngine())
    result = logic.registerNodes(fixed, moving).transformNode
    other = volume_node_from_image(scene, blob_image(oblique_geometry(), "other"), name="other")
    segmentation = _segmentation(scene, other)
    ids = node_ids(scene)
    expected = (rf"'{result.GetName()}' is the result of registering the moving volume 'moving' to the fixed volume "
                r"'fixed', not the moving volume 'other': it cannot warp a segmentation of 'other' onto 'fixed'; use it "
                r"with the volumes it registered, or register these volumes first \(Apply\)")
    with pytest.raises(VolumeNodeError, match=expected):
        warp_segmentation(segmentation, result, other, fixed)
    with pytest.raises(VolumeNodeError, match="not the fixed volume 'other' and the moving volume 'fixed'"):
        warp_segmentation(segmentation, result, fixed, other)
    for show in (lambda: show_under_result(result, other, [], True),
                 lambda: logic.setMovingUnderTransform(other, result, True)):
        with pytest.raises(VolumeNodeError, match="not the moving volume 'other': it cannot show 'other' registered"):
            show()
        assert other.GetParentTransformNode() is None
    assert node_ids(scene) == ids  # nothing added
    # the volumes it registered: accepted, and taking a volume out is always allowed
    warped = warp_segmentation(_segmentation(scene, moving), result, moving, fixed)
    assert warped.GetSegmentation().GetNumberOfSegments() == 1
    logic.setMovingUnderTransform(moving, result, True)
    assert moving.GetParentTransformNode() is result
    other.SetAndObserveTransformNodeID(result.GetID())  # put there by hand
    show_under_result(result, other, [], False)
    assert other.GetParentTransformNode() is None


def _imported(scene, taken: int):
    """``scene`` saved and imported into a new scene that already holds ``taken`` volumes (IDs collide)."""
    import slicer

    scene.SetSaveToXMLString(1)
    scene.Commit()
    xml = scene.GetSceneXMLString()
    target = slicer.vtkMRMLScene()
    slicer.mrmlScene = target
    earlier = [target.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"earlier {k}") for k in range(taken)]
    target.SetLoadFromXMLString(1)
    target.SetSceneXMLString(xml)
    target.Import()
    return target, earlier


def test_a_result_knows_its_volumes_after_the_scene_is_imported_with_colliding_ids(scene, inputs):
    """Before: the volumes were recorded as node IDs in attributes. Importing the scene into one that already held
    volumes (File > Import Scene, Add Data of a .mrb) renamed the IDs and updated node references, not attributes:
    the result then counted as the earlier volumes' and not as its own (Display and Warp a segmentation refused
    the right volumes and took the wrong ones)."""
    fixed, moving = inputs["fixed"], inputs["moving"]
    ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(fixed, moving)
    target, earlier = _imported(scene, taken=3)
    try:
        result = target.GetFirstNodeByClass("vtkMRMLGridTransformNode")
        fixed2, moving2 = target.GetFirstNodeByName("fixed"), target.GetFirstNodeByName("moving")
        assert fixed2.GetID() != fixed.GetID()  # the IDs were renamed on import
        assert result.GetAttribute(FIXED_VOLUME_ATTRIBUTE) == earlier[0].GetID()  # the attribute went stale
        assert result_is_for(result, fixed2, moving2)
        assert not result_is_for(result, earlier[0], earlier[1])
        check_result_volumes(result, "be used", fixed2, moving2)
        with pytest.raises(VolumeNodeError, match="the moving volume 'moving' to the fixed volume 'fixed', not the "
                                                  "fixed volume 'earlier 0' and the moving volume 'earlier 1'"):
            check_result_volumes(result, "be used", earlier[0], earlier[1])
    finally:
        target.Clear(True)


def test_a_deleted_volume_matches_no_volume(scene, inputs):
    """Slicer removes a reference with the node it names: the result then belongs to no volume in the scene."""
    fixed, moving = inputs["fixed"], inputs["moving"]
    result = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(fixed, moving).transformNode
    scene.RemoveNode(moving)
    later = volume_node_from_image(scene, blob_image(oblique_geometry(), "later"), name="later")
    assert not result_is_for(result, fixed, later)
    with pytest.raises(VolumeNodeError, match="registering a moving volume no longer in the scene to the fixed volume "
                                              "'fixed', not the moving volume 'later'"):
        show_under_result(result, later, [], True)


def test_results_of_earlier_versions_are_read_as_before(scene, inputs):
    """A result with the IDs as attributes only (no references) is matched by ID; one that records nothing counts
    as any volumes' (as before)."""
    fixed, moving = inputs["fixed"], inputs["moving"]
    old = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "old result")
    assert result_is_for(old, fixed, moving) and result_is_for(old, moving, fixed)
    old.SetAttribute(FIXED_VOLUME_ATTRIBUTE, fixed.GetID())
    old.SetAttribute(MOVING_VOLUME_ATTRIBUTE, moving.GetID())
    assert result_is_for(old, fixed, moving) and not result_is_for(old, moving, fixed)
    assert old.GetAttribute(VOLUME_REFERENCES_ATTRIBUTE) is None


def test_a_failed_publish_puts_back_the_volumes_an_output_transform_recorded(scene, inputs, monkeypatch):
    """The user's output transform, an earlier result of other volumes: a failed run leaves it that result."""
    import ADRegNetMRML.logic as logic_module

    fixed, moving = inputs["fixed"], inputs["moving"]
    logic = ADRegNetMRMLLogic(scene, runner=AnalyticEngine())
    earlier = logic.registerNodes(moving, fixed).transformNode  # the other way round

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(logic_module, "jacobian_volume_node", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        logic.registerNodes(fixed, moving, outputTransformNode=earlier)
    assert result_is_for(earlier, moving, fixed) and not result_is_for(earlier, fixed, moving)
    assert earlier.GetNodeReferenceID(FIXED_VOLUME_ATTRIBUTE) == moving.GetID()


def test_an_infinite_moving_window_is_not_copied_to_the_registered_volume(scene, inputs):
    """The registered volume is shown with the moving volume's window/level, unless that is not finite: an infinite
    window would give Slicer's window/level slider an infinite range (it then keeps its own automatic window)."""
    display = inputs["moving"].GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(math.inf, 3.0)
    warped = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(inputs["fixed"], inputs["moving"]) \
        .warpedNode.GetDisplayNode()
    assert math.isfinite(warped.GetWindow()) and math.isfinite(warped.GetLevel())
    display.SetWindowLevel(40.0, 3.0)
    warped = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(inputs["fixed"], inputs["moving"]) \
        .warpedNode.GetDisplayNode()
    assert (warped.GetWindow(), warped.GetLevel()) == (40.0, 3.0)


def test_an_output_node_deleted_while_the_registration_runs_is_replaced_by_a_new_one(scene, inputs):
    """Before: the result was written into the deleted nodes, outside the scene: the panel said 'Done.', the scene held
    no result and the run's minutes were lost. Now the result goes to new nodes and the log says so."""
    chosen = {"outputTransformNode": scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "my transform"),
              "outputWarpedNode": scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my warped")}

    class DeletingMidRun(AnalyticEngine):
        def __call__(self, fixed, moving, **kw):
            for node in chosen.values():
                scene.RemoveNode(node)
            return super().__call__(fixed, moving, **kw)

    out = ADRegNetMRMLLogic(scene, runner=DeletingMidRun()).registerNodes(inputs["fixed"], inputs["moving"], **chosen)
    for node in (out.transformNode, out.warpedNode, out.jacobianNode):
        assert scene.GetNodeByID(node.GetID()) is node
    assert out.transformNode is not chosen["outputTransformNode"] and out.warpedNode is not chosen["outputWarpedNode"]
    assert result_is_for(out.transformNode, inputs["fixed"], inputs["moving"])
    log = out.logNode.GetText()
    assert "the transform output 'my transform' was removed from the scene while the registration ran" in log
    assert "the warped volume output 'my warped' was removed" in log


def test_a_fixed_volume_shown_registered_is_refused_with_a_fix_that_keeps_its_voxels(scene, inputs):
    """Registering the other way round (the last run's moving volume chosen as the fixed one) while it is still shown
    registered: before, the message advised hardening the transform, which replaces its voxels by the registered
    ones; now it says to take the volume out of the result, and not to harden it."""
    fixed, moving = inputs["fixed"], inputs["moving"]
    logic = ADRegNetMRMLLogic(scene, runner=AnalyticEngine())
    result = logic.registerNodes(fixed, moving).transformNode
    logic.setMovingUnderTransform(moving, result, True)
    with pytest.raises(VolumeNodeError, match=rf"fixed volume 'moving' is shown registered under the AD-RegNet result "
                                              rf"'{result.GetName()}' .*before it was shown registered it was under no "
                                              r"transform.*set its transform to None\); do not harden the result"):
        logic.registerNodes(moving, fixed)
    bent = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "bent")
    bent.SetAndObserveTransformFromParent(result.GetTransformFromParent())
    moving.SetAndObserveTransformNodeID(bent.GetID())
    with pytest.raises(VolumeNodeError, match=r"under the transform 'bent'.*harden the transform \(Transforms module, "
                                              r"Harden\) or remove it \(hardening a non-linear transform resamples"):
        logic.registerNodes(moving, fixed)


@pytest.mark.parametrize("when", ["during", "after its last check"])
def test_closing_the_scene_while_the_registration_runs_stops_it_and_adds_nothing(scene, inputs, when):
    """File > Close Scene (or Load Scene) during a run, from the panel's event processing: before, the run went on and
    then put its outputs, named after volumes that were gone, into the new empty scene, with 'Done.'."""
    from ADRegNetLib.engine.api import RegistrationCancelled

    class ClosingAtTheEnd(AnalyticEngine):
        def __call__(self, fixed, moving, **kw):
            result = super().__call__(fixed, moving, **kw)
            scene.Clear(0)
            return result

    def close_on_progress(fraction, text):  # what processEvents lets a user do
        if when == "during":
            scene.Clear(0)

    engine = AnalyticEngine() if when == "during" else ClosingAtTheEnd()
    with pytest.raises(RegistrationCancelled, match="the scene was closed while the registration ran; nothing was "
                                                    "added"):  # during: before, 'cancelled by the user' (it was not)
        ADRegNetMRMLLogic(scene, runner=engine).registerNodes(inputs["fixed"], inputs["moving"],
                                                              progress=close_on_progress)
    assert scene.GetNodesByClass("vtkMRMLGridTransformNode").GetNumberOfItems() == 0
    assert scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 0
    ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(*[volume_node_from_image(
        scene, blob_image(oblique_geometry(), name), name=name) for name in ("f", "m")])  # the next run is not stopped


@pytest.mark.parametrize("when", ["during", "after its last check"])
@pytest.mark.parametrize("role, key", [("fixed volume", "fixed"), ("moving volume", "moving"),
                                       ("moving landmarks", "moving_pts")])
def test_an_input_removed_while_the_registration_runs_stops_it_and_adds_nothing(scene, inputs, role, key, when):
    """Before: a volume (or point list) deleted from the scene during a run still got a result, which recorded the
    deleted node's ID as its node reference; a scene imported later with a node of that ID made the result pass as
    that unrelated node's (result_is_for True). Now the run stops as when the scene is closed, naming the node."""
    from ADRegNetLib.engine.api import RegistrationCancelled

    victim, left = inputs[key], []

    def remove():
        if victim.GetScene() is not None:
            scene.RemoveNode(victim)
            left.extend(node_ids(scene))  # the scene as the user left it

    class RemovingAtTheEnd(AnalyticEngine):
        def __call__(self, fixed, moving, **kw):
            result = super().__call__(fixed, moving, **kw)
            remove()
            return result

    engine = AnalyticEngine() if when == "during" else RemovingAtTheEnd()
    with pytest.raises(RegistrationCancelled, match=rf"^the {role} '{victim.GetName()}' was removed from the scene "
                                                    "while the registration ran; nothing was added$"):
        ADRegNetMRMLLogic(scene, runner=engine).registerNodes(
            inputs["fixed"], inputs["moving"], inputs["fixed_pts"], inputs["moving_pts"],
            progress=lambda fraction, text: remove() if when == "during" else None)  # what processEvents allows
    assert node_ids(scene) == left
    assert scene.GetNodesByClass("vtkMRMLGridTransformNode").GetNumberOfItems() == 0
    kept = {k: v for k, v in inputs.items() if v is not victim}  # the next run, on what is left, is not stopped
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(
        kept.get("fixed") or volume_node_from_image(scene, blob_image(oblique_geometry(), "f"), name="f"),
        kept.get("moving") or volume_node_from_image(scene, blob_image(oblique_geometry(), "m"), name="m"))
    assert scene.GetNodeByID(out.transformNode.GetID()) is out.transformNode
