"""ADRegNet.py's Logic (what the panel's buttons call) against the real MRML classes of slicer-core.

Only what exists inside the Slicer application alone is stood in for: ``qt`` (QTimer.singleShot
queues the callable, as an event-loop turn), ``slicer.app`` (testing mode, application logic
singletons), the translation function, ``parameterNodeWrapper`` (a plain object with the declared
fields) and the ScriptedLoadableModule base classes. The engine is the analytic stand-in of the
MRML tests. This covers the Widget's glue: defects 1 (pair placement with the deferred switch),
3 (new outputs), 6 (registered volume shown after Apply) and 10 (no install in testing mode).
"""
from __future__ import annotations

import re
import sys
import types
import typing
import unittest
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core (MRML classes) is not installed")
REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "Testing" / "mrml"), str(REPO / "ADRegNet")]

import slicer  # noqa: E402

from mrml_helpers import AnalyticEngine, EventLoop, blob_image, click, oblique_geometry  # noqa: E402


def _stand_ins(loop: EventLoop, scene) -> dict:
    qt = types.ModuleType("qt")
    qt.QTimer = types.SimpleNamespace(singleShot=lambda ms, function: loop.defer(function))
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.WithinRange = lambda lo, hi: (lo, hi)
    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class Logic:
        def getParameterNode(self):
            return None

    slm.ScriptedLoadableModule = type("ScriptedLoadableModule", (), {"__init__": lambda self, parent: setattr(self, "parent", parent)})
    slm.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidget", (), {})
    slm.ScriptedLoadableModuleLogic, slm.ScriptedLoadableModuleTest = Logic, unittest.TestCase
    app_logic = types.SimpleNamespace(GetInteractionNode=lambda: scene.GetNodeByID("vtkMRMLInteractionNodeSingleton"),
                                      GetSelectionNode=lambda: scene.GetNodeByID("vtkMRMLSelectionNodeSingleton"))
    app = types.SimpleNamespace(testingEnabled=lambda: True, applicationLogic=lambda: app_logic,
                                processEvents=lambda: None)
    return dict(modules={"qt": qt, "slicer.i18n": i18n, "slicer.parameterNodeWrapper": wrapper,
                         "slicer.ScriptedLoadableModule": slm}, app=app)


@pytest.fixture
def module(monkeypatch, scene):
    loop = EventLoop()
    scene.AddNewNodeByClass("vtkMRMLInteractionNode")
    scene.AddNewNodeByClass("vtkMRMLSelectionNode")
    stand_ins = _stand_ins(loop, scene)
    for name, mod in stand_ins["modules"].items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(slicer, "app", stand_ins["app"], raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    for name in [n for n in sys.modules if n == "ADRegNet" or n.startswith("ADRegNetApp")]:
        monkeypatch.delitem(sys.modules, name)  # re-import with this test's stand-ins
    import ADRegNet

    import ADRegNetMRML.logic
    monkeypatch.setattr(ADRegNetMRML.logic.ADRegNetMRMLLogic, "_run",
                        lambda self, *args, **kwargs: AnalyticEngine()(*args, **kwargs))
    return ADRegNet, loop


@pytest.fixture
def scene():
    s = slicer.vtkMRMLScene()
    yield s
    s.Clear(True)


def _parameters(module, scene):
    """The parameter node's fields with their defaults (what parameterNodeWrapper provides)."""
    cls = module.ADRegNetParameterNode
    fields = {name: getattr(cls, name, None) for name in typing.get_type_hints(cls, include_extras=False)}
    p = types.SimpleNamespace(**fields)
    geometry = oblique_geometry(size=(20, 18, 14))
    from ADRegNetMRML.geometry import volume_node_from_image

    p.fixedVolume = volume_node_from_image(scene, blob_image(geometry, "fixed"), name="fixed")
    p.movingVolume = volume_node_from_image(scene, blob_image(geometry, "moving", shift=(2.0, 0.0, 0.0)), name="moving")
    p.runInChildProcess = False
    return p


def test_apply_shows_the_registered_volume_and_keeps_new_outputs(module, scene):
    ADRegNet, _ = module
    p = _parameters(ADRegNet, scene)
    logic = ADRegNet.ADRegNetLogic()
    assert logic.ensureDependencies(interactive=False)  # torch is here: ready, nothing installed
    lines = []
    red = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    first = logic.process(p, logListener=lines.append)
    assert p.resultWarped is first.warpedNode and p.resultLog is first.logNode and lines
    logic.showResults(p)
    assert red.GetBackgroundVolumeID() == p.fixedVolume.GetID()
    assert red.GetForegroundVolumeID() == first.warpedNode.GetID()  # defect 6: the registered volume is shown
    assert red.GetForegroundOpacity() == pytest.approx(p.fade)
    assert p.movingVolume.GetParentTransformNode() is first.transformNode
    logic.setOpacity("jacobian", 0.9)  # the Jacobian slider leaves the comparison alone
    assert red.GetForegroundOpacity() == pytest.approx(p.fade)
    logic.updateDisplay(p, overlay=ADRegNet.Overlay.JACOBIAN)
    assert red.GetForegroundVolumeID() == first.jacobianNode.GetID()
    second = logic.process(p)  # default outputs: new nodes, the moving volume read unwarped
    assert second.warpedNode is not first.warpedNode and scene.GetNodeByID(first.warpedNode.GetID()) is not None
    assert logic.describeInitialTransform(p).startswith("none")


def _organs(scene, name="organs"):
    """A segmentation of the moving volume (one block segment), under no transform, and its labels as stored."""
    from ADRegNetMRML.geometry import volume_node_from_image
    from ADRegNetLib.spatial.image import Image
    import numpy as np

    geometry = oblique_geometry(size=(20, 18, 14))
    labels = np.zeros(geometry.shape, np.uint8)
    labels[3:10, 4:12, 5:15] = 1
    labelmap = volume_node_from_image(scene, Image(labels, geometry, name), name=name + " labels",
                                      class_name="vtkMRMLLabelMapVolumeNode")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    return segmentation


@pytest.mark.parametrize("chosen_after_apply", [False, True])
def test_a_segmentation_is_warped_alike_whether_chosen_before_or_after_apply(module, scene, chosen_after_apply):
    """4c40e80: a segmentation chosen after Apply (the usual order: Apply shows the moving volume registered, then
    Warp a segmentation) was read through the result and left nearly unwarped (11 of 373 voxels moved). It is in
    the moving volume's frame as it was before registration: read as stored in both orders, never moved."""
    import warnings

    import numpy as np
    from ADRegNetMRML.masks import labelmap_from_segmentation, warp_segmentation

    ADRegNet, _ = module
    p = _parameters(ADRegNet, scene)
    segmentation = _organs(scene)
    stored, _ = labelmap_from_segmentation(segmentation, p.fixedVolume)
    logic = ADRegNet.ADRegNetLogic()
    if not chosen_after_apply:
        p.segmentationToWarp = segmentation
    logic.process(p)
    expected, _ = labelmap_from_segmentation(warp_segmentation(segmentation, p.resultTransform, p.movingVolume,
                                                               p.fixedVolume), p.fixedVolume)  # before it is shown
    logic.showResults(p)
    assert p.movingVolume.GetParentTransformNode() is p.resultTransform
    p.segmentationToWarp = segmentation
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read as stored: nothing to warn about
        warped = logic.warpSegmentation(p)
    got, _ = labelmap_from_segmentation(warped, p.fixedVolume)
    np.testing.assert_array_equal(got.array, expected.array)
    assert np.count_nonzero(got.array != stored.array) > 100  # really warped (the analytic engine's shift)
    assert segmentation.GetParentTransformNode() is None  # never moved
    assert logic.warpedText(warped) == f"Segmentation warped: {warped.GetName()}"  # no note


def test_the_stage_label_says_what_was_read_where_shown_and_is_cleared_when_apply_or_warp_starts(module, scene):
    """A mask or segmentation read where it is shown was said only in the run log; then the panel kept such a note
    after a later error or other inputs (the label is now emptied as Apply and Warp start)."""
    import vtk

    ADRegNet, _ = module
    p = _parameters(ADRegNet, scene)
    logic = ADRegNet.ADRegNetLogic()
    start = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "A")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 2.0)
    start.SetMatrixTransformToParent(matrix)
    p.movingVolume.SetAndObserveTransformNodeID(start.GetID())
    p.segmentationToWarp = _organs(scene)  # under no transform, the volume under A: read where it is shown
    outputs = logic.process(p)
    assert logic.doneText(outputs) == "Done."
    logic.showResults(p)
    with pytest.warns(UserWarning, match="is read where it is shown"):
        warped = logic.warpSegmentation(p)
    text = logic.warpedText(warped)
    assert text.startswith("Segmentation warped: organs warped. Note: segmentation to warp 'organs' is under no "
                           "transform but its volume 'moving' was under the transform 'A' before registration (it is "
                           f"shown registered, under the result '{p.resultTransform.GetName()}')"), text
    assert "(put the segmentation under the volume's transform 'A' if" in text
    label = types.SimpleNamespace(text=text)
    label.setText = lambda value: setattr(label, "text", value)
    logic.clearStage(label)
    assert label.text == ""


def test_the_stage_label_points_to_a_local_change_the_engine_refined(module, scene):
    """The panel says when a local change was found and refined, names the point list that marks it and how to
    register without it."""
    from ADRegNetMRML.logic import RegistrationNodes

    ADRegNet, _ = module
    logic = ADRegNet.ADRegNetLogic()
    marked = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "moving local change")
    text = logic.doneText(RegistrationNodes(None, None, None, localChangeNode=marked))
    assert text.startswith("Done. A local change was found and refined") and "'moving local change'" in text
    assert "uncheck 'Find a local change'" in text
    assert logic.doneText(RegistrationNodes(None, None, None)) == "Done."


def test_the_panel_clears_the_stage_label_as_apply_and_warp_start():
    """ADRegNet.py wires the clearing: the first statement of the Apply path (after its Cancel branch) and of Warp."""
    import ast

    tree = ast.parse((REPO / "ADRegNet" / "ADRegNet.py").read_text())
    methods = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    for name in ("onApplyButton", "onWarpSegmentation"):
        calls = [ast.unparse(n) for n in ast.walk(methods[name]) if isinstance(n, ast.Call)]
        assert "self.logic.clearStage(self.ui.stageLabel)" in calls, name
    warp = methods["onWarpSegmentation"].body
    assert ast.unparse(warp[1]) == "self.logic.clearStage(self.ui.stageLabel)"  # before the try (after the docstring)


def test_place_pair_button_places_both_points(module, scene):
    ADRegNet, loop = module
    p = _parameters(ADRegNet, scene)
    states = []
    placement = ADRegNet.ADRegNetLogic().startPairPlacement(p, lambda state, text: states.append(state))
    assert p.fixedLandmarks is not None and p.movingLandmarks is not None
    assert click(scene, (1.0, 2.0, 3.0))
    loop.turn()
    assert click(scene, (2.0, 2.0, 3.0))
    loop.turn()
    assert (p.fixedLandmarks.GetNumberOfControlPoints(), p.movingLandmarks.GetNumberOfControlPoints()) == (1, 1)
    assert states == ["fixed", "moving", "done"] and placement.state == "done"


def test_testing_mode_never_installs(module, monkeypatch):
    ADRegNet, _ = module
    import ADRegNetMRML.dependencies as deps

    monkeypatch.setattr(deps, "torch_status", lambda importer=None: deps.TorchStatus("missing", None, "no torch"))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # an install attempt would fail loudly
    monkeypatch.setattr(slicer.util, "pip_install", lambda *a, **k: pytest.fail("pip_install called in testing mode"))
    assert ADRegNet.ADRegNetLogic().ensureDependencies(interactive=True) is False


def test_warp_segmentation_needs_a_result_first(module, scene):
    ADRegNet, _ = module
    p = _parameters(ADRegNet, scene)
    p.segmentationToWarp = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "organs")
    with pytest.raises(ValueError, match="Register first"):
        ADRegNet.ADRegNetLogic.warpSegmentation(p)


def test_a_result_is_not_used_for_volumes_it_did_not_register(module, scene):
    """Before: after a run for volume A, choosing volume B as moving put B under A's result transform, and Warp
    segmentation warped B's segmentation with A's field, with no word."""
    ADRegNet, _ = module
    from ADRegNetMRML.geometry import volume_node_from_image

    p = _parameters(ADRegNet, scene)
    logic = ADRegNet.ADRegNetLogic()
    first = logic.process(p)
    logic.showResults(p)
    a = p.movingVolume
    assert a.GetParentTransformNode() is first.transformNode and logic.resultIsCurrent(p)
    p.movingVolume = volume_node_from_image(scene, blob_image(oblique_geometry(size=(20, 18, 14)), "b"), name="B")
    assert not logic.resultIsCurrent(p)
    logic.updateDisplay(p, showMoving=True)
    assert p.movingVolume.GetParentTransformNode() is None  # not shown under A's result
    p.segmentationToWarp = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "organs of B")
    with pytest.raises(ValueError, match="The last result registered other volumes than the fixed and moving volumes "
                                         "selected now: press Apply"):
        ADRegNet.ADRegNetLogic.warpSegmentation(p)
    p.movingVolume = a
    assert logic.resultIsCurrent(p)


def test_self_test_skips_without_torch_instead_of_installing(module, monkeypatch):
    ADRegNet, _ = module
    import ADRegNetMRML.dependencies as deps

    monkeypatch.setattr(deps, "torch_status", lambda importer=None: deps.TorchStatus("missing", None, "no torch"))
    monkeypatch.setattr(slicer.mrmlScene, "Clear", lambda *a: None, raising=False)
    result = unittest.TestResult()
    ADRegNet.ADRegNetTest("test_ADRegNet_sampleData").run(result)
    assert [reason for _, reason in result.skipped] == [
        "PyTorch >= 2.1 is not usable here; nothing is installed in testing mode"]
    assert not result.errors and not result.failures


def test_module_metadata(module):
    ADRegNet, _ = module
    parent = types.SimpleNamespace()
    ADRegNet.ADRegNet(parent)
    assert (parent.title, parent.categories, parent.dependencies) == ("AD-RegNet", ["Registration"], [])
    assert all(re.fullmatch(r"[^,()]+ \([^()]+\)", c) for c in parent.contributors)
    assert "cite" in parent.acknowledgementText and "never modified" in parent.helpText


def test_the_preselected_fixed_volume_is_a_scan_the_selector_lists(module, scene):
    """Before: the first scalar volume of the scene was preselected as fixed, a label map included (the fixed selector
    does not list label maps: it was registered without being shown), and none at all when the first volume was a
    module output, even with scans after it."""
    ADRegNet, _ = module
    from ADRegNetLib.spatial.image import Image
    from ADRegNetMRML.geometry import volume_node_from_image
    import numpy as np

    logic = ADRegNet.ADRegNetLogic()
    assert logic.defaultFixedVolume(scene) is None
    geometry = oblique_geometry(size=(8, 7, 6))
    volume_node_from_image(scene, Image(np.ones(geometry.shape, np.uint8), geometry, "labels"), name="labels",
                           class_name="vtkMRMLLabelMapVolumeNode")
    output = volume_node_from_image(scene, blob_image(geometry, "old result"), name="old result")
    output.SetAttribute("ADRegNet.role", "warped")
    assert logic.defaultFixedVolume(scene) is None
    scan = volume_node_from_image(scene, blob_image(geometry, "CT"), name="CT")
    assert logic.defaultFixedVolume(scene) is scan


@pytest.mark.parametrize("kind", ["vtkMRMLVectorVolumeNode", "vtkMRMLDiffusionTensorVolumeNode",
                                  "vtkMRMLDiffusionWeightedVolumeNode", "hidden"])
def test_a_volume_the_fixed_selector_does_not_list_is_not_preselected(module, scene, kind):
    """Before: a vector/RGB, tensor or DWI volume (subclasses of the scalar volume) or a volume hidden from editors was
    preselected as fixed, though the selector (exactly vtkMRMLScalarVolumeNode, hidden nodes not shown, as
    qMRMLSortFilterProxyModel filters them) does not list it: it was registered without being shown."""
    ADRegNet, _ = module
    from ADRegNetMRML.geometry import volume_node_from_image

    logic = ADRegNet.ADRegNetLogic()
    if kind == "hidden":
        scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "internal").SetHideFromEditors(True)
    else:
        scene.AddNewNodeByClass(kind, "not listed")
    assert logic.defaultFixedVolume(scene) is None
    scan = volume_node_from_image(scene, blob_image(oblique_geometry(size=(8, 7, 6)), "CT"), name="CT")
    assert logic.defaultFixedVolume(scene) is scan


def test_a_non_linear_start_is_named_as_such_before_apply(module, scene):
    """Before: the panel's starting-alignment line named a non-linear transform like any other; Apply then refused it."""
    ADRegNet, _ = module
    p = _parameters(ADRegNet, scene)
    logic = ADRegNet.ADRegNetLogic()
    start = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "start")
    p.movingVolume.SetAndObserveTransformNodeID(start.GetID())
    assert logic.describeInitialTransform(p) == "start"
    result = logic.process(p).transformNode
    bent = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "bent")
    bent.SetAndObserveTransformFromParent(result.GetTransformFromParent())
    start.SetAndObserveTransformNodeID(bent.GetID())
    assert logic.describeInitialTransform(p) == ("start (not linear, so not a starting alignment: remove it, or harden "
                                                 "it, which resamples the volume)")


@pytest.mark.parametrize("sliding_lungs, expected", [(True, "auto"), (False, "off")])
def test_the_sliding_lungs_checkbox_reaches_the_engine(module, scene, monkeypatch, sliding_lungs, expected):
    ADRegNet, _ = module
    import ADRegNetMRML.logic

    engine = AnalyticEngine()
    monkeypatch.setattr(ADRegNetMRML.logic.ADRegNetMRMLLogic, "_run",
                        lambda self, *args, **kwargs: engine(*args, **kwargs))
    p = _parameters(ADRegNet, scene)
    assert p.slidingLungs is True  # the default: lungs slide under the lung preset
    p.slidingLungs = sliding_lungs
    ADRegNet.ADRegNetLogic().process(p)
    assert engine.calls[-1]["sliding"] == expected


@pytest.mark.parametrize("find", [True, False])
def test_the_local_change_checkbox_reaches_the_engine(module, scene, monkeypatch, find):
    ADRegNet, _ = module
    import ADRegNetMRML.logic

    engine = AnalyticEngine()
    monkeypatch.setattr(ADRegNetMRML.logic.ADRegNetMRMLLogic, "_run",
                        lambda self, *args, **kwargs: engine(*args, **kwargs))
    p = _parameters(ADRegNet, scene)
    assert p.findLocalChange is True  # the default: a local change in an otherwise still pair is looked for
    p.findLocalChange = find
    ADRegNet.ADRegNetLogic().process(p)
    assert engine.calls[-1]["find_local_change"] is find
