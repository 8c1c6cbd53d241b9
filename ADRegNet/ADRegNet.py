"""AD-RegNet: attention-driven deformable registration of 3-D images, as a 3D Slicer module.

This file is the Slicer front end: module metadata and the Qt panel. The parameter node, the thin
Logic, the pair table and the self-test are in ``ADRegNetApp`` (the parts that need the Slicer
application); everything done to the scene (frames, landmark pairs, outputs, display, child-process
runs) in the Qt-free ``ADRegNetMRML`` package, tested with the real MRML classes; the registration
itself in ``ADRegNetLib``.
"""
from __future__ import annotations

import os
from typing import Optional

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from ADRegNetMRML.paths import ensure_engine_importable

ensure_engine_importable(os.path.dirname(os.path.abspath(__file__)))  # source checkout: ADRegNetLib is one up

from ADRegNetApp.logic import ADRegNetLogic  # noqa: E402
from ADRegNetApp.pairtable import PairTable  # noqa: E402
from ADRegNetApp.parameters import ADRegNetParameterNode, Overlay, ProcessingState, Quality  # noqa: E402
from ADRegNetApp.selftest import ADRegNetTest  # noqa: E402,F401  (Slicer finds it by name: <Module>Test)

CITATION = ("AD-RegNet: attention-driven non-rigid registration of 3D medical images. "
            "If you use this module in your work, please cite the AD-RegNet paper.")


class ADRegNet(ScriptedLoadableModule):
    """Module metadata shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("AD-RegNet")
        self.parent.categories = [_("Registration")]
        self.parent.dependencies = []
        self.parent.contributors = ["AD-RegNet developers (AD-RegNet project)"]
        self.parent.helpText = _(
            "Deformable registration of a moving volume to a fixed volume with the AD-RegNet network refined by "
            "instance optimization. Choose the volumes; optionally landmark pairs (<i>Place pair</i>: a click in "
            "the fixed volume, then one on its partner in the moving volume, also on the registered display), masks "
            "(label maps or segmentations, their visible segments; each read where it is shown) and a starting "
            "alignment (a linear transform on the moving volume). "
            "<b>Apply</b> becomes <b>Cancel</b> while running. Each run adds new nodes: a grid transform (fixed "
            "&rarr; moving) and its inverse, the registered volume, the Jacobian (blue: compression, red: "
            "expansion, green: folding, det &le; 0), a TRE table (with a starting alignment also the error at the "
            "start, as the views showed it) and a log; inputs are never modified. PyTorch is installed on "
            "first use, after you confirm.")
        self.parent.acknowledgementText = _(CITATION)


#: output selector -> the role attribute of the nodes it may list (inputs are hidden: _onParameterNodeModified)
OUTPUT_SELECTORS = {"outputTransformSelector": ("vtkMRMLGridTransformNode", "transform"),
                    "outputInverseTransformSelector": ("vtkMRMLGridTransformNode", "inverse-transform"),
                    "outputWarpedSelector": ("vtkMRMLScalarVolumeNode", "warped"),
                    "outputJacobianSelector": ("vtkMRMLScalarVolumeNode", "jacobian"),
                    "outputTreTableSelector": ("vtkMRMLTableNode", "tre")}
INPUTS = ("fixedVolume", "movingVolume", "fixedLandmarks", "movingLandmarks", "fixedMask", "movingMask", "localChangeMask")


class ADRegNetWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel. UI only: the scene work goes through ADRegNetLogic / ADRegNetMRML."""

    def __init__(self, parent=None) -> None:
        """Called when the user opens the module the first time."""
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[ADRegNetLogic] = None
        self._parameterNode: Optional[ADRegNetParameterNode] = None
        self._parameterNodeGuiTag = None
        self._state = ProcessingState.IDLE
        self._placement = None
        self._flickerTimer = qt.QTimer()
        self._flickerTimer.setInterval(500)

    def setup(self) -> None:
        """Build the panel from the .ui file and connect it."""
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ADRegNet.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self._landmarksGuideTip = self.ui.landmarksGuideCheckBox.toolTip  # the .ui's, restored after Instant
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ADRegNetLogic()
        for name, (nodeType, role) in OUTPUT_SELECTORS.items():
            getattr(self.ui, name).addAttribute(nodeType, "ADRegNet.role", role)
        self.pairTable = PairTable(self.ui.pairTableWidget, self._pairContext)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.placePairButton.connect("clicked(bool)", self.onPlacePairButton)
        self.ui.deletePairButton.connect("clicked(bool)", lambda: self._editPairs(self.pairTable.deleteSelected))
        self.ui.restorePairButton.connect("clicked(bool)", lambda: self._editPairs(self.pairTable.restoreDeleted))
        self.ui.restorePairButton.enabled = False
        for widget, signal in ((self.ui.showMovingCheckBox, "toggled(bool)"), (self.ui.showGridCheckBox, "toggled(bool)"),
                               (self.ui.overlayComboBox, "currentIndexChanged(int)")):
            widget.connect(signal, self.onDisplayChanged)
        self.ui.fadeSliderWidget.connect("valueChanged(double)", lambda v: self.logic.setOpacity("comparison", v))
        self.ui.jacobianOpacitySliderWidget.connect("valueChanged(double)", lambda v: self.logic.setOpacity("jacobian", v))
        self.ui.flickerButton.connect("toggled(bool)", self.onFlicker)
        self._flickerTimer.connect("timeout()", self.logic.flicker)
        self.ui.warpSegmentationButton.connect("clicked(bool)", self.onWarpSegmentation)
        self.ui.progressBar.setVisible(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        self._stopPlacement()
        self._flickerTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module."""
        self._stopPlacement()
        self.ui.flickerButton.checked = False
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed."""
        self.exit()

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Get (or create) the parameter node; select the first volume as fixed if none is chosen."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.fixedVolume:
            first = self.logic.defaultFixedVolume(slicer.mrmlScene)
            if first:
                self._parameterNode.fixedVolume = first

    def setParameterNode(self, parameterNode: Optional[ADRegNetParameterNode]) -> None:
        """Bind the panel to a parameter node (SlicerParameterName properties in the .ui)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:  # the module was left (or the scene closed) while a run kept the panel alive
            return
        hidden = [getattr(p, name).GetID() for name in INPUTS if getattr(p, name)]
        for name in OUTPUT_SELECTORS:  # defect 3: an input is never offered as an output
            getattr(self.ui, name).sortFilterProxyModel().hiddenNodeIDs = hidden
        self.pairTable.observe(p.fixedLandmarks, p.movingLandmarks)
        self.ui.restorePairButton.enabled = bool(self.pairTable.deleted)  # other lists: nothing to put back
        self.ui.initialTransformLabel.setText(self.logic.describeInitialTransform(p))
        self.ui.keepInitialTransformCheckBox.enabled = bool(p.useInitialTransform)
        # "instant" is the network alone, which does not take the pairs: they only measure there
        instant = p.quality == Quality.INSTANT
        self.ui.landmarksGuideCheckBox.enabled = not instant
        self.ui.landmarksGuideCheckBox.toolTip = _(
            "Instant is the network's prediction alone, which does not take landmark pairs: they only measure "
            "its error (an independent check).") if instant else self._landmarksGuideTip
        if self._state == ProcessingState.IDLE:
            ready = bool(p.fixedVolume and p.movingVolume and p.fixedVolume != p.movingVolume)
            self.ui.applyButton.enabled = ready
            self.ui.applyButton.toolTip = _("Register the moving volume to the fixed volume") if ready else _(
                "Select two different volumes: fixed and moving")

    def _pairContext(self):
        p = self._parameterNode
        if not p:
            return None
        result = p.resultTransform if self.logic.resultIsCurrent(p) else None  # not another pair's result
        return (p.fixedLandmarks, p.movingLandmarks, p.fixedVolume, p.movingVolume, result)

    def _setState(self, state: ProcessingState) -> None:
        self._state = state
        self.ui.applyButton.text = state.buttonText()
        self.ui.applyButton.enabled = state != ProcessingState.CANCELLING
        self.ui.progressBar.setVisible(state != ProcessingState.IDLE)
        for box in (self.ui.inputsCollapsibleButton, self.ui.settingsCollapsibleButton, self.ui.outputsCollapsibleButton):
            box.enabled = state == ProcessingState.IDLE

    def onApplyButton(self) -> None:
        """Apply starts a registration; while one runs the same button cancels it."""
        if self._state == ProcessingState.RUNNING:
            self._setState(ProcessingState.CANCELLING)
            self.ui.stageLabel.setText(_("Cancelling..."))
            return
        self.logic.clearStage(self.ui.stageLabel)  # no earlier note beside this run's outcome
        if not self.logic.ensureDependencies(interactive=True):
            return
        self._stopPlacement()
        self._setState(ProcessingState.RUNNING)
        self.ui.progressBar.setValue(0)
        self.ui.logTextEdit.clear()
        outputs = None
        p = self._parameterNode  # the run's, even if the module is left meanwhile (exit() unbinds the panel)
        try:
            with slicer.util.tryWithErrorDisplay(_("Registration failed."), waitCursor=True):
                from ADRegNetLib.engine import RegistrationCancelled

                try:
                    outputs = self.logic.process(p, progress=self._onProgress,
                                                 shouldStop=self._shouldStop, logListener=self.ui.logTextEdit.appendPlainText)
                except RegistrationCancelled as stopped:  # the user, or an input removed / the scene closed
                    self.ui.stageLabel.setText(_("Stopped ({reason}); the scene was not changed.").format(reason=stopped))
        finally:
            self._setState(ProcessingState.IDLE)
            self._onParameterNodeModified()
        if outputs is not None:
            self.ui.stageLabel.setText(self.logic.doneText(outputs))  # with any mask read where it is shown
            before, after = outputs.similarity()
            fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
            self.ui.similarityValueLabel.setText(f"{fmt(before)} \u2192 {fmt(after)}")
            folds = outputs.foldingCount()
            self.ui.foldingValueLabel.setText("-" if folds is None else str(folds))
            self.ui.treTableView.setMRMLTableNode(outputs.treTableNode)
            self.ui.resultsCollapsibleButton.collapsed = False
            self.logic.showResults(p)
            self.pairTable.refresh()

    def _onProgress(self, fraction: float, text: str) -> None:
        self.ui.progressBar.setValue(int(round(100 * fraction)))
        if text and self._state == ProcessingState.RUNNING:
            self.ui.stageLabel.setText(text)
        slicer.app.processEvents()

    def _shouldStop(self) -> bool:
        slicer.app.processEvents()  # keeps the panel (and the Cancel button) responsive
        return self._state == ProcessingState.CANCELLING

    def onDisplayChanged(self, _value=None) -> None:
        """Moving volume under the result, grid, comparison or Jacobian overlay (read from the widgets:
        this slot may run before the parameter node hears of the change)."""
        if self._parameterNode:
            overlay = Overlay.JACOBIAN if self.ui.overlayComboBox.currentIndex == 1 else Overlay.COMPARISON
            self.logic.updateDisplay(self._parameterNode, self.ui.showMovingCheckBox.checked,
                                     self.ui.showGridCheckBox.checked, overlay)
            self.ui.flickerButton.enabled = overlay == Overlay.COMPARISON

    def onFlicker(self, on: bool) -> None:
        """Switch between the fixed and the registered volume twice a second."""
        if on:
            self._flickerTimer.start()
        else:
            self._flickerTimer.stop()

    def onWarpSegmentation(self) -> None:
        """Warp the chosen segmentation of the moving volume onto the fixed volume (a new node)."""
        self.logic.clearStage(self.ui.stageLabel)  # no earlier note beside an error
        with slicer.util.tryWithErrorDisplay(_("Could not warp the segmentation."), waitCursor=True):
            node = self.logic.warpSegmentation(self._parameterNode)
            self.ui.stageLabel.setText(self.logic.warpedText(node))  # hidden segments, read where it is shown

    def _editPairs(self, edit) -> None:
        """Delete or restore a pair; Restore pair is offered while a deleted one can be put back (also after an
        error, which Slicer's error display reports and passes on)."""
        try:
            edit()
        finally:
            self.ui.restorePairButton.enabled = bool(self.pairTable.deleted)

    def onPlacePairButton(self) -> None:
        """Place one landmark pair: a point in the fixed volume, then its partner in the moving volume."""
        if self._placement is not None and self._placement.state in ("fixed", "switching", "moving"):
            self._stopPlacement()
            return
        with slicer.util.tryWithErrorDisplay(_("Cannot place a landmark pair."), waitCursor=False):
            self._placement = self.logic.startPairPlacement(self._parameterNode, self._onPlacementState)

    def _onPlacementState(self, state: str, message: str) -> None:
        self.ui.placementStatusLabel.setText(message)
        self.ui.placePairButton.text = _("Stop placing") if state in ("fixed", "moving") else _("Place pair")
        self.pairTable.refresh()

    def _stopPlacement(self) -> None:
        if self._placement is not None:
            self._placement.stop()
            self._placement = None
