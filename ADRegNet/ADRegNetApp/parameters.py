"""The module's parameters: enums for the settings, and the parameter node (saved with the scene).

Preset and quality values are the engine's names (``ADRegNetLib.engine.PRESETS`` / ``QUALITIES``);
Testing/ui checks that they agree (the engine package cannot be imported before PyTorch is installed,
so the names are written here rather than imported).
"""
from __future__ import annotations

import enum
from typing import Annotated, Union

from slicer import (
    vtkMRMLGridTransformNode, vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode,
    vtkMRMLTableNode, vtkMRMLTextNode,
)
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper

__all__ = ["Preset", "Quality", "Device", "Overlay", "ProcessingState", "Mask", "ADRegNetParameterNode"]


class Preset(enum.Enum):
    """Engine preset (values: ADRegNetLib.engine.PRESETS)."""

    AUTO, LUNG_CT, BRAIN_MRI, GENERIC = "auto", "lung-ct", "brain-mri", "generic"

    def label(self) -> str:
        return {"auto": _("Auto"), "lung-ct": _("Lung CT"), "brain-mri": _("Brain MRI"), "generic": _("Generic")}[self.value]


class Quality(enum.Enum):
    """Speed/accuracy trade-off (values: ADRegNetLib.engine.QUALITIES)."""

    INSTANT, FAST, BALANCED, BEST = "instant", "fast", "balanced", "best"

    def label(self) -> str:
        return {"instant": _("Instant (network only)"), "fast": _("Fast"), "balanced": _("Balanced"),
                "best": _("Best")}[self.value]


class Device(enum.Enum):
    """Where the network runs."""

    AUTO, CPU, CUDA = "auto", "cpu", "cuda"

    def label(self) -> str:
        return {"auto": _("Auto (GPU if available)"), "cpu": _("CPU"), "cuda": _("GPU (CUDA)")}[self.value]


class Overlay(enum.Enum):
    """What the slice views show over the fixed volume after a run."""

    COMPARISON, JACOBIAN = "comparison", "jacobian"

    def label(self) -> str:
        return {"comparison": _("Registered volume (fade / flicker)"), "jacobian": _("Jacobian heatmap")}[self.value]


class ProcessingState(enum.Enum):
    """What the Apply button does now; its text follows the state."""

    IDLE, RUNNING, CANCELLING = "idle", "running", "cancelling"

    def buttonText(self) -> str:
        return {"idle": _("Apply"), "running": _("Cancel"), "cancelling": _("Cancelling...")}[self.value]


Mask = Union[vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode]


@parameterNodeWrapper
class ADRegNetParameterNode:
    """Everything the module panel edits (saved with the scene); ``result*`` are the last run's outputs."""

    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    fixedLandmarks: vtkMRMLMarkupsFiducialNode
    movingLandmarks: vtkMRMLMarkupsFiducialNode
    fixedMask: Mask
    movingMask: Mask
    localChangeMask: Mask
    useInitialTransform: bool = True
    keepInitialTransform: bool = False
    landmarksGuide: bool = True
    preset: Preset = Preset.AUTO
    quality: Quality = Quality.BALANCED
    device: Device = Device.AUTO
    regularization: Annotated[float, WithinRange(0.1, 10.0)] = 1.0
    slidingLungs: bool = True
    findLocalChange: bool = True
    runInChildProcess: bool = True
    outputTransform: vtkMRMLGridTransformNode
    outputInverseTransform: vtkMRMLGridTransformNode
    outputWarped: vtkMRMLScalarVolumeNode
    outputJacobian: vtkMRMLScalarVolumeNode
    outputTreTable: vtkMRMLTableNode
    showMovingUnderTransform: bool = True
    showTransformGrid: bool = False
    overlay: Overlay = Overlay.COMPARISON
    fade: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    jacobianOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    segmentationToWarp: vtkMRMLSegmentationNode
    resultTransform: vtkMRMLGridTransformNode
    resultWarped: vtkMRMLScalarVolumeNode
    resultJacobian: vtkMRMLScalarVolumeNode
    resultTreTable: vtkMRMLTableNode
    resultLog: vtkMRMLTextNode
