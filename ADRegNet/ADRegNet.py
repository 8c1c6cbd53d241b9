"""AD-RegNet: attention-driven deformable registration of 3-D images, as a 3D Slicer module.

This file is the Slicer front end only: module metadata, the parameter node, the Qt panel, a thin
Logic and the self-test. The scene work (RAS<->LPS, grid transform, Jacobian overlay, TRE table,
child-process runs) lives in the Qt-free ``ADRegNetMRML`` package; the registration itself in
``ADRegNetLib``. Both are imported only when needed, so the module loads even before PyTorch is
installed.
"""
from __future__ import annotations

import enum
import logging
import os
from typing import Annotated, Callable, Optional

import ctk
import qt
import slicer
import vtk
from slicer import (
    vtkMRMLGridTransformNode,
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLTableNode,
)
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

CITATION = (
    "AD-RegNet: attention-driven non-rigid registration of 3D medical images. "
    "If you use this module in your work, please cite the AD-RegNet paper."
)
TORCH_REQUIREMENT = "torch>=2.1"


#
# Module
#
class ADRegNet(ScriptedLoadableModule):
    """Module metadata shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("AD-RegNet")
        self.parent.categories = [_("Registration")]
        self.parent.dependencies = []
        self.parent.contributors = ["AD-RegNet developers"]
        self.parent.helpText = _(
            "Deformable registration of a moving volume to a fixed volume with the AD-RegNet network "
            "(attention-driven multi-resolution U-Net) refined by instance optimization.<br>"
            "<b>Usage:</b> choose the fixed and moving volumes; optionally paired landmarks "
            "(<i>Place landmark pair</i>: click a point in the fixed volume, then its partner in the moving "
            "volume) and a fixed mask; pick a preset and quality; press <b>Apply</b> (it becomes "
            "<b>Cancel</b> while running). Outputs: a grid transform (fixed &rarr; moving), the warped "
            "volume, the Jacobian determinant shown as a heatmap over the fixed volume (blue: compression, "
            "red: expansion, green: folding), and a TRE table when landmarks are given. "
            "PyTorch is installed on first use, after you confirm."
        )
        self.parent.acknowledgementText = _(CITATION)


#
# Parameters
#
class Preset(enum.Enum):
    """Engine preset (values are ADRegNetLib.engine.PRESETS)."""

    AUTO = "auto"
    LUNG_CT = "lung-ct"
    BRAIN_MRI = "brain-mri"
    GENERIC = "generic"

    def label(self) -> str:
        return {"auto": _("Auto"), "lung-ct": _("Lung CT"), "brain-mri": _("Brain MRI"),
                "generic": _("Generic")}[self.value]


class Quality(enum.Enum):
    """Speed/accuracy trade-off (values are ADRegNetLib.engine.QUALITIES)."""

    FAST = "fast"
    BALANCED = "balanced"
    BEST = "best"

    def label(self) -> str:
        return {"fast": _("Fast"), "balanced": _("Balanced"), "best": _("Best")}[self.value]


class Device(enum.Enum):
    """Where the network runs."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    def label(self) -> str:
        return {"auto": _("Auto (GPU if available)"), "cpu": _("CPU"), "cuda": _("GPU (CUDA)")}[self.value]


class ProcessingState(enum.Enum):
    """What the Apply button does now; its text follows the state."""

    IDLE = "idle"
    RUNNING = "running"
    CANCELLING = "cancelling"

    def buttonText(self) -> str:
        return {"idle": _("Apply"), "running": _("Cancel"), "cancelling": _("Cancelling...")}[self.value]


@parameterNodeWrapper
class ADRegNetParameterNode:
    """Everything the module panel edits (saved with the scene)."""

    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    fixedLandmarks: vtkMRMLMarkupsFiducialNode
    movingLandmarks: vtkMRMLMarkupsFiducialNode
    fixedMask: vtkMRMLScalarVolumeNode
    preset: Preset = Preset.AUTO
    quality: Quality = Quality.BALANCED
    device: Device = Device.AUTO
    regularization: Annotated[float, WithinRange(0.0, 10.0)] = 1.0
    runInChildProcess: bool = True
    outputTransform: vtkMRMLGridTransformNode
    outputWarped: vtkMRMLScalarVolumeNode
    outputJacobian: vtkMRMLScalarVolumeNode
    outputTreTable: vtkMRMLTableNode
    showMovingUnderTransform: bool = True
    showTransformGrid: bool = False
    jacobianOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5


#
# Widget
#
class ADRegNetWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel. UI only: every computation goes through ADRegNetLogic."""

    def __init__(self, parent=None) -> None:
        """Called when the user opens the module the first time."""
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[ADRegNetLogic] = None
        self._parameterNode: Optional[ADRegNetParameterNode] = None
        self._parameterNodeGuiTag = None
        self._state = ProcessingState.IDLE
        self._placementStep: Optional[str] = None  # None, "fixed" or "moving"
        self._placementLabel = ""

    def setup(self) -> None:
        """Build the panel from the .ui file and connect it."""
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ADRegNet.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ADRegNetLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.placePairButton.connect("clicked(bool)", self.onPlacePairButton)
        self.ui.showMovingCheckBox.connect("toggled(bool)", self.onDisplayOptionChanged)
        self.ui.showGridCheckBox.connect("toggled(bool)", self.onDisplayOptionChanged)
        self.ui.jacobianOpacitySliderWidget.connect("valueChanged(double)", self.onJacobianOpacityChanged)
        self.ui.progressBar.setVisible(False)
        self.ui.stageLabel.setText("")
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        self._stopPlacement()
        self.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed."""
        self._stopPlacement()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Get (or create) the parameter node and select the first volumes if none are chosen."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.fixedVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.fixedVolume = first

    def setParameterNode(self, inputParameterNode: Optional[ADRegNetParameterNode]) -> None:
        """Bind the panel to a parameter node (SlicerParameterName properties in the .ui)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    # ------------------------------------------------------------------ state
    def _setState(self, state: ProcessingState) -> None:
        self._state = state
        self.ui.applyButton.text = state.buttonText()
        self.ui.applyButton.enabled = state != ProcessingState.CANCELLING
        running = state != ProcessingState.IDLE
        self.ui.progressBar.setVisible(running)
        for box in (self.ui.inputsCollapsibleButton, self.ui.settingsCollapsibleButton,
                    self.ui.outputsCollapsibleButton):
            box.enabled = not running

    def _checkCanApply(self, caller=None, event=None) -> None:
        if self._state != ProcessingState.IDLE:
            return
        p = self._parameterNode
        ready = bool(p and p.fixedVolume and p.movingVolume and p.fixedVolume != p.movingVolume)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = _("Register the moving volume to the fixed volume") if ready else _(
            "Select two different volumes: fixed and moving")

    # ------------------------------------------------------------------ apply / cancel
    def onApplyButton(self) -> None:
        """Apply starts a registration; while one runs the same button cancels it."""
        if self._state == ProcessingState.RUNNING:
            self._setState(ProcessingState.CANCELLING)
            self.ui.stageLabel.setText(_("Cancelling..."))
            return
        if not self.logic.ensureDependencies(interactive=True):
            return
        self._stopPlacement()
        self._setState(ProcessingState.RUNNING)
        self.ui.progressBar.setValue(0)
        outputs = None
        try:
            with slicer.util.tryWithErrorDisplay(_("Registration failed."), waitCursor=True):
                from ADRegNetLib.engine import RegistrationCancelled

                try:
                    outputs = self.logic.process(self._parameterNode, progress=self._onProgress,
                                                 shouldStop=self._shouldStop)
                except RegistrationCancelled:
                    self.ui.stageLabel.setText(_("Cancelled; the scene was not changed."))
        finally:
            self._setState(ProcessingState.IDLE)
            self._checkCanApply()
        if outputs is not None:
            self.ui.stageLabel.setText(_("Done."))
            self._showResults(outputs)

    def _onProgress(self, fraction: float, text: str) -> None:
        self.ui.progressBar.setValue(int(round(100 * fraction)))
        if text and self._state == ProcessingState.RUNNING:
            self.ui.stageLabel.setText(text)
        slicer.app.processEvents()

    def _shouldStop(self) -> bool:
        slicer.app.processEvents()  # keeps the panel (and the Cancel button) responsive
        return self._state == ProcessingState.CANCELLING

    def _showResults(self, outputs) -> None:
        before, after = outputs.similarity()
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        self.ui.similarityValueLabel.setText(f"{fmt(before)} \u2192 {fmt(after)}")
        folds = outputs.foldingCount()
        self.ui.foldingValueLabel.setText("-" if folds is None else str(folds))
        self.ui.treTableView.setMRMLTableNode(outputs.treTableNode)
        self.ui.treTableView.setVisible(outputs.treTableNode is not None)
        self.ui.resultsCollapsibleButton.collapsed = False
        self.onDisplayOptionChanged()
        self.logic.showResults(self._parameterNode)

    # ------------------------------------------------------------------ display toggles
    def onDisplayOptionChanged(self, _checked=None) -> None:
        """Moving volume under the transform / transform grid in slice views."""
        # Read the check boxes themselves: this slot may run before the parameter node hears of the change.
        if self._parameterNode:
            self.logic.updateDisplay(self._parameterNode, self.ui.showMovingCheckBox.checked,
                                     self.ui.showGridCheckBox.checked)

    def onJacobianOpacityChanged(self, value: float) -> None:
        """Foreground (Jacobian heatmap) opacity in every slice view."""
        self.logic.setJacobianOpacity(value)

    # ------------------------------------------------------------------ landmark pairs
    def onPlacePairButton(self) -> None:
        """Place one landmark pair: a point in the fixed volume, then its partner in the moving one."""
        if self._placementStep is not None:
            self._stopPlacement()
            return
        p = self._parameterNode
        if not p.fixedLandmarks:
            p.fixedLandmarks = self.logic.newLandmarksNode(_("Fixed landmarks"), (0.2, 0.6, 1.0))
        if not p.movingLandmarks:
            p.movingLandmarks = self.logic.newLandmarksNode(_("Moving landmarks"), (1.0, 0.6, 0.2))
        if p.fixedLandmarks.GetNumberOfControlPoints() != p.movingLandmarks.GetNumberOfControlPoints():
            slicer.util.warningDisplay(_("The fixed and moving lists have different numbers of points; "
                                         "pairs match by order. Fix the lists before adding pairs."))
            return
        self._placementLabel = self.logic.nextPairLabel(p.fixedLandmarks)
        self._startPlacement("fixed")

    def _startPlacement(self, step: str) -> None:
        p = self._parameterNode
        node = p.fixedLandmarks if step == "fixed" else p.movingLandmarks
        volume = p.fixedVolume if step == "fixed" else p.movingVolume
        self._placementStep = step
        self.addObserver(node, node.PointPositionDefinedEvent, self._onPointPlaced)
        if volume:
            slicer.util.setSliceViewerLayers(background=volume, fit=False)
        self.ui.placementStatusLabel.setText(
            _("Click {label} in the FIXED volume").format(label=self._placementLabel) if step == "fixed"
            else _("Click the partner of {label} in the MOVING volume").format(label=self._placementLabel))
        self.ui.placePairButton.text = _("Stop placing")
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsFiducialNode")
        selection.SetActivePlaceNodeID(node.GetID())
        slicer.app.applicationLogic().GetInteractionNode().SetCurrentInteractionMode(
            slicer.vtkMRMLInteractionNode.Place)

    def _onPointPlaced(self, caller, event) -> None:
        index = caller.GetNumberOfControlPoints() - 1
        caller.SetNthControlPointLabel(index, self._placementLabel)
        self.removeObserver(caller, caller.PointPositionDefinedEvent, self._onPointPlaced)
        if self._placementStep == "fixed":
            self._startPlacement("moving")
        else:
            self._stopPlacement()
            self.ui.placementStatusLabel.setText(_("Pair {label} placed.").format(label=self._placementLabel))
            if self._parameterNode.fixedVolume:
                slicer.util.setSliceViewerLayers(background=self._parameterNode.fixedVolume, fit=False)

    def _stopPlacement(self) -> None:
        if self._placementStep is None:
            return
        p = self._parameterNode
        for node in (p.fixedLandmarks, p.movingLandmarks) if p else ():
            if node:
                self.removeObserver(node, node.PointPositionDefinedEvent, self._onPointPlaced)
        self._placementStep = None
        self.ui.placePairButton.text = _("Place landmark pair")
        self.ui.placementStatusLabel.setText("")
        slicer.app.applicationLogic().GetInteractionNode().SetCurrentInteractionMode(
            slicer.vtkMRMLInteractionNode.ViewTransform)


#
# Logic
#
class ADRegNetLogic(ScriptedLoadableModuleLogic):
    """Thin adapter from the parameter node to ADRegNetMRML's keyword API (no Qt widgets here)."""

    def __init__(self) -> None:
        """Called when the logic class is instantiated."""
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> ADRegNetParameterNode:
        return ADRegNetParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------ dependencies
    @staticmethod
    def torchAvailable() -> bool:
        try:
            import torch  # noqa: F401
        except ImportError:
            return False
        return True

    def ensureDependencies(self, interactive: bool = True) -> bool:
        """Make sure PyTorch is importable; install it (after confirmation) when it is not.

        numpy, SimpleITK and vtk come with Slicer and are never installed here.
        Returns False when the user declined or the install failed (a message was shown).
        """
        if self.torchAvailable():
            return True
        if interactive and not slicer.util.confirmOkCancelDisplay(
                _("AD-RegNet needs PyTorch, which is not installed. Install it now? This downloads up to a "
                  "few gigabytes and may take several minutes; Slicer may need a restart afterwards.")):
            return False
        try:
            try:
                import PyTorchUtils  # from the PyTorch extension (EXTENSION_DEPENDS)
            except ImportError:
                PyTorchUtils = None
            if PyTorchUtils is not None:
                if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is None:
                    raise RuntimeError("PyTorchUtils did not install torch")
            else:
                slicer.util.pip_install(TORCH_REQUIREMENT)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            slicer.util.errorDisplay(
                _("PyTorch could not be installed: {error}\n\nIf this computer is offline, connect it to the "
                  "internet, or install the PyTorch extension from the Extensions Manager, then try again.")
                .format(error=exc))
            return False
        if not self.torchAvailable():
            slicer.util.errorDisplay(_("PyTorch was installed but cannot be imported yet: restart Slicer."))
            return False
        return True

    # ------------------------------------------------------------------ registration
    def process(self, parameterNode: ADRegNetParameterNode, progress: Optional[Callable[[float, str], None]] = None,
                shouldStop: Optional[Callable[[], bool]] = None):
        """Register with the parameter node's settings; store the outputs back in it.

        Returns:
            ADRegNetMRML.logic.RegistrationNodes.
        """
        from ADRegNetMRML.logic import ADRegNetMRMLLogic
        from ADRegNetMRML.process import ChildProcessRunner

        p = parameterNode
        runner = ChildProcessRunner() if p.runInChildProcess else None
        outputs = ADRegNetMRMLLogic(slicer.mrmlScene, runner=runner).registerNodes(
            p.fixedVolume, p.movingVolume, p.fixedLandmarks, p.movingLandmarks, p.fixedMask,
            outputTransformNode=p.outputTransform, outputWarpedNode=p.outputWarped,
            outputJacobianNode=p.outputJacobian, outputTreTableNode=p.outputTreTable,
            preset=p.preset.value, quality=p.quality.value, device=p.device.value,
            regularization=p.regularization, progress=progress, shouldStop=shouldStop)
        p.outputTransform = outputs.transformNode
        p.outputWarped = outputs.warpedNode
        p.outputJacobian = outputs.jacobianNode
        if outputs.treTableNode is not None:
            p.outputTreTable = outputs.treTableNode
        return outputs

    def showResults(self, parameterNode: ADRegNetParameterNode) -> None:
        """Fixed volume with the Jacobian heatmap on top in every slice view."""
        from ADRegNetMRML.jacobian import show_jacobian_overlay

        p = parameterNode
        if p.outputJacobian:
            show_jacobian_overlay(slicer.mrmlScene, p.outputJacobian, p.fixedVolume, p.jacobianOpacity)
        self.updateDisplay(p)

    def updateDisplay(self, parameterNode: ADRegNetParameterNode, showMoving: Optional[bool] = None,
                      showGrid: Optional[bool] = None) -> None:
        """Moving volume under the output transform or not; transform grid in slice views or not."""
        from ADRegNetMRML.logic import ADRegNetMRMLLogic

        p = parameterNode
        if not p.outputTransform:
            return
        showMoving = p.showMovingUnderTransform if showMoving is None else showMoving
        showGrid = p.showTransformGrid if showGrid is None else showGrid
        if p.movingVolume:
            ADRegNetMRMLLogic.setMovingUnderTransform(p.movingVolume, p.outputTransform, showMoving)
        ADRegNetMRMLLogic.setTransformGridVisible(p.outputTransform, showGrid)

    @staticmethod
    def setJacobianOpacity(opacity: float) -> None:
        from ADRegNetMRML.jacobian import set_overlay_opacity

        set_overlay_opacity(slicer.mrmlScene, opacity)

    @staticmethod
    def newLandmarksNode(name: str, color) -> vtkMRMLMarkupsFiducialNode:
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", slicer.mrmlScene.GenerateUniqueName(name))
        node.CreateDefaultDisplayNodes()
        node.GetDisplayNode().SetSelectedColor(*color)
        return node

    @staticmethod
    def nextPairLabel(fixedLandmarksNode) -> str:
        from ADRegNetMRML.landmarks import next_pair_label

        return next_pair_label(fixedLandmarksNode)


#
# Test
#
class ADRegNetTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: registers the bundled lung sample pair."""

    def setUp(self) -> None:
        """Reset the scene."""
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        """Run all tests."""
        self.setUp()
        self.test_ADRegNet_sampleData()

    @staticmethod
    def sampleDataDir() -> str:
        here = os.path.dirname(os.path.abspath(__file__))
        for candidate in (os.path.join(here, "Resources", "SampleData"),  # installed
                          os.path.join(here, "..", "Resources", "SampleData")):  # source tree
            if os.path.exists(os.path.join(candidate, "lung_fixed.nii.gz")):
                return os.path.normpath(candidate)
        raise FileNotFoundError("AD-RegNet sample data (lung_fixed.nii.gz) not found next to the module")

    def _loadVolume(self, path: str, name: str):
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(path)
        self.assertTrue(storage.ReadData(node), f"could not read {path}")
        node.SetAndObserveStorageNodeID(storage.GetID())
        node.CreateDefaultDisplayNodes()
        return node

    def test_ADRegNet_sampleData(self) -> None:
        """Register lung_moving to lung_fixed; check outputs, TRE and that cancel leaves the scene alone."""
        import numpy as np

        self.delayDisplay("Loading AD-RegNet lung sample data")
        folder = self.sampleDataDir()
        fixed = self._loadVolume(os.path.join(folder, "lung_fixed.nii.gz"), "lung_fixed")
        moving = self._loadVolume(os.path.join(folder, "lung_moving.nii.gz"), "lung_moving")
        logic = ADRegNetLogic()
        self.assertTrue(logic.ensureDependencies(interactive=False))
        p = logic.getParameterNode()
        p.fixedVolume, p.movingVolume = fixed, moving
        p.quality = Quality.FAST
        p.runInChildProcess = False
        from ADRegNetMRML.landmarks import markups_node_from_points

        fixedCsv = os.path.join(folder, "lung_fixed_landmarks.csv")
        movingCsv = os.path.join(folder, "lung_moving_landmarks.csv")
        if os.path.exists(fixedCsv) and os.path.exists(movingCsv):
            load = lambda f: np.loadtxt(f, delimiter=",", skiprows=1, ndmin=2)  # noqa: E731  x,y,z LPS mm
            p.fixedLandmarks = markups_node_from_points(slicer.mrmlScene, load(fixedCsv), "F")
            p.movingLandmarks = markups_node_from_points(slicer.mrmlScene, load(movingCsv), "M")

        self.delayDisplay("Cancel right away: the scene must not change")
        from ADRegNetLib.engine import RegistrationCancelled

        count = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(RegistrationCancelled):
            logic.process(p, shouldStop=lambda: True)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)

        self.delayDisplay("Registering (quality: fast)")
        outputs = logic.process(p, progress=lambda f, t: logging.info(f"{100 * f:.0f}% {t}"))
        self.assertIsNotNone(outputs.transformNode.GetTransformFromParent())
        self.assertEqual(outputs.jacobianNode.GetImageData().GetDimensions(), fixed.GetImageData().GetDimensions())
        if outputs.treTableNode is not None:
            table = outputs.treTableNode.GetTable()
            rows = table.GetNumberOfRows()
            meanBefore = table.GetValue(rows - 3, 1).ToDouble()
            meanAfter = table.GetValue(rows - 3, 2).ToDouble()
            self.assertLess(meanAfter, meanBefore)
        logic.showResults(p)
        self.delayDisplay("Test passed")
