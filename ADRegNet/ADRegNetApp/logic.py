"""The module's Logic: a thin adapter from the parameter node to ADRegNetMRML's keyword API.

No widgets here; it needs the Slicer application only for ``slicer.app`` (testing mode, the
interaction and selection nodes) and ``qt.QTimer`` (the deferred switch while placing a pair).
Testing/ui/test_ui_logic.py runs it against the real MRML classes.
"""
from __future__ import annotations

from typing import Callable, Optional

import qt
import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from .parameters import ADRegNetParameterNode, Overlay

__all__ = ["ADRegNetLogic"]


class ADRegNetLogic(ScriptedLoadableModuleLogic):
    """Thin adapter from the parameter node to ADRegNetMRML's keyword API (no Qt widgets here)."""

    def getParameterNode(self) -> ADRegNetParameterNode:
        return ADRegNetParameterNode(super().getParameterNode())

    @staticmethod
    def defaultFixedVolume(scene):
        """The volume to preselect as fixed: the first one the fixed selector lists (exactly a vtkMRMLScalarVolumeNode,
        as its showChildNodeTypes is false: no label map, vector/RGB, tensor or DWI volume; not hidden from editors)
        that is no module output; or None. One the selector does not list would be registered without being shown."""
        nodes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
        for i in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(i)
            if (node.GetClassName() == "vtkMRMLScalarVolumeNode" and not node.GetHideFromEditors()
                    and not node.GetAttribute("ADRegNet.role")):
                return node
        return None

    @staticmethod
    def ensureDependencies(interactive: bool = True) -> bool:
        """PyTorch usable (recent enough)? Installs it, after confirmation, when not; never in testing mode."""
        from ADRegNetMRML.dependencies import (TORCH_PIP_REQUIREMENT, TORCH_VERSION_REQUIREMENT, DependencyAction,
                                               dependency_action, torch_status)

        status = torch_status()
        action = dependency_action(status, testing=slicer.app.testingEnabled(), interactive=interactive)
        if action in (DependencyAction.READY, DependencyAction.SKIP):
            return action == DependencyAction.READY
        if action == DependencyAction.ASK and not slicer.util.confirmOkCancelDisplay(
                status.message + " " + _("Install PyTorch {req} now? This downloads up to a few gigabytes; Slicer "
                                         "must be restarted afterwards.").format(req=TORCH_VERSION_REQUIREMENT)):
            return False
        try:
            try:
                import PyTorchUtils  # the PyTorch extension (EXTENSION_DEPENDS): picks the CUDA build
            except ImportError:
                PyTorchUtils = None
            if PyTorchUtils is not None:
                PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                              torchVersionRequirement=TORCH_VERSION_REQUIREMENT)
            else:
                slicer.util.pip_install(TORCH_PIP_REQUIREMENT)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            slicer.util.errorDisplay(_("PyTorch could not be installed: {error}\n\nConnect this computer to the "
                                       "internet or install the PyTorch extension, then try again.").format(error=exc))
            return False
        if torch_status().ok:
            return True
        slicer.util.infoDisplay(_("PyTorch was installed; restart Slicer to load it, then press Apply again."))
        return False

    def process(self, p: ADRegNetParameterNode, progress: Optional[Callable[[float, str], None]] = None,
                shouldStop: Optional[Callable[[], bool]] = None, logListener=None):
        """Register with the parameter node's settings; record the new outputs as ``result*``."""
        from ADRegNetMRML.logic import ADRegNetMRMLLogic
        from ADRegNetMRML.process import ChildProcessRunner
        from ADRegNetMRML.runlog import RunLog

        outputs = ADRegNetMRMLLogic(slicer.mrmlScene, runner=ChildProcessRunner() if p.runInChildProcess else None) \
            .registerNodes(p.fixedVolume, p.movingVolume, p.fixedLandmarks, p.movingLandmarks, p.fixedMask, p.movingMask,
                           outputTransformNode=p.outputTransform, outputWarpedNode=p.outputWarped,
                           outputJacobianNode=p.outputJacobian, outputTreTableNode=p.outputTreTable,
                           outputInverseTransformNode=p.outputInverseTransform, useInitialTransform=p.useInitialTransform,
                           keepInitialTransform=p.keepInitialTransform, landmarksGuide=p.landmarksGuide,
                           preset=p.preset.value, quality=p.quality.value, device=p.device.value,
                           regularization=p.regularization, progress=progress, shouldStop=shouldStop,
                           log=RunLog(listener=logListener),
                           engineOptions={"sliding": "auto" if p.slidingLungs else "off",
                                          "find_local_change": p.findLocalChange},
                           localRegionNode=p.localChangeMask)
        p.resultTransform, p.resultWarped, p.resultJacobian = outputs.transformNode, outputs.warpedNode, outputs.jacobianNode
        p.resultTreTable, p.resultLog = outputs.treTableNode, outputs.logNode
        return outputs

    def showResults(self, p: ADRegNetParameterNode) -> None:
        """After a run: the moving volume registered, and the fixed / registered comparison (defect 6)."""
        self.updateDisplay(p)

    def updateDisplay(self, p: ADRegNetParameterNode, showMoving: Optional[bool] = None, showGrid: Optional[bool] = None,
                      overlay: Optional[Overlay] = None) -> None:
        from ADRegNetMRML import display
        from ADRegNetMRML.frames import show_under_result

        if not self.resultIsCurrent(p):  # none yet, or made for other volumes than those now selected
            return
        show = p.showMovingUnderTransform if showMoving is None else showMoving
        show_under_result(p.resultTransform, p.movingVolume, [p.movingLandmarks], show)
        display.set_transform_grid_visible(p.resultTransform, p.showTransformGrid if showGrid is None else showGrid)
        if (overlay or p.overlay) == Overlay.JACOBIAN and p.resultJacobian:
            display.show_jacobian_overlay(slicer.mrmlScene, p.resultJacobian, p.fixedVolume, p.jacobianOpacity)
        elif p.resultWarped:
            display.show_comparison(slicer.mrmlScene, p.fixedVolume, p.resultWarped, p.fade)

    @staticmethod
    def clearStage(label) -> None:
        """Empty the stage label as Apply or Warp segmentation starts: an earlier run's note (a mask read where it
        is shown) must not stand beside a later error or other inputs."""
        label.setText("")

    @staticmethod
    def doneText(outputs) -> str:
        """The stage label after Apply: done, any mask read where it is shown instead of as stored, and the point list
        that marks a local change the engine found and refined (look at the registered volume there)."""
        notes = list(getattr(outputs, "notes", None) or [])
        changes = getattr(outputs, "localChangeNode", None)
        if changes is not None:
            notes.append(_("A local change was found and refined with less smoothing: see the points '{name}' (if it "
                           "is not motion, uncheck 'Find a local change' and apply again).").format(
                               name=changes.GetName()))
        return " ".join([_("Done."), *notes])

    @staticmethod
    def warpedText(node) -> str:
        """The stage label after Warp segmentation: the new node, hidden segments left out, and a segmentation
        read where it is shown instead of as stored."""
        from ADRegNetMRML.masks import READ_WHERE_SHOWN_ATTRIBUTE, SEGMENTS_HIDDEN_ATTRIBUTE

        text = _("Segmentation warped: {name}").format(name=node.GetName())
        hidden = node.GetAttribute(SEGMENTS_HIDDEN_ATTRIBUTE)  # only visible segments are warped
        if hidden:
            text += " " + _("(hidden segments not warped: {names})").format(names=hidden)
        shown = node.GetAttribute(READ_WHERE_SHOWN_ATTRIBUTE)
        if shown:
            text += ". " + _("Note: {note}").format(note=shown)
        return text

    @staticmethod
    def setOpacity(kind: str, value: float) -> None:
        from ADRegNetMRML.display import set_foreground_opacity

        set_foreground_opacity(slicer.mrmlScene, value, "warped" if kind == "comparison" else "jacobian")

    @staticmethod
    def flicker() -> None:
        from ADRegNetMRML.display import flicker

        flicker(slicer.mrmlScene)

    @staticmethod
    def describeInitialTransform(p: ADRegNetParameterNode) -> str:
        from ADRegNetMRML.frames import first_non_linear, registration_parent

        parent = registration_parent(p.movingVolume) if p.movingVolume else None
        if parent is None:
            return _("none (the moving volume is not under a transform)")
        if first_non_linear(parent) is not None:  # said here, before Apply refuses it (the same test)
            return _("{name} (not linear, so not a starting alignment: remove it, or harden it, which resamples the "
                     "volume)").format(name=parent.GetName())
        return parent.GetName()

    def startPairPlacement(self, p: ADRegNetParameterNode, onState):
        """Create the point lists when needed and start placing one pair (the switch waits one event-loop turn)."""
        from ADRegNetMRML.pairs import PairPlacement

        for attr, name, color in (("fixedLandmarks", _("Fixed landmarks"), (0.2, 0.6, 1.0)),
                                  ("movingLandmarks", _("Moving landmarks"), (1.0, 0.6, 0.2))):
            if not getattr(p, attr):
                node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode",
                                                          slicer.mrmlScene.GenerateUniqueName(name))
                node.CreateDefaultDisplayNodes()
                node.GetDisplayNode().SetSelectedColor(*color)
                setattr(p, attr, node)
        appLogic = slicer.app.applicationLogic()
        placement = PairPlacement(p.fixedLandmarks, p.movingLandmarks, appLogic.GetInteractionNode(),
                                  appLogic.GetSelectionNode(), lambda f: qt.QTimer.singleShot(0, f),
                                  moving_volume_node=p.movingVolume, on_state=onState)
        placement.start()
        return placement

    @staticmethod
    def resultIsCurrent(p: ADRegNetParameterNode) -> bool:
        """The last result exists and registered the fixed and moving volumes selected now."""
        from ADRegNetMRML.logic import result_is_for

        return bool(p.resultTransform) and result_is_for(p.resultTransform, p.fixedVolume, p.movingVolume)

    @classmethod
    def warpSegmentation(cls, p: ADRegNetParameterNode):
        from ADRegNetMRML.masks import warp_segmentation

        if not (p.segmentationToWarp and p.resultTransform):
            raise ValueError(_("Register first, then choose a segmentation of the moving volume."))
        if not cls.resultIsCurrent(p):
            raise ValueError(_("The last result registered other volumes than the fixed and moving volumes selected "
                               "now: press Apply to register these first."))
        return warp_segmentation(p.segmentationToWarp, p.resultTransform, p.movingVolume, p.fixedVolume)
