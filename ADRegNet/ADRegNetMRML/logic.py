r"""Keyword API that registers two volume nodes and puts the results in the scene (no Qt).

``ADRegNetMRMLLogic().registerNodes(fixedVolumeNode, movingVolumeNode, ...)`` converts the nodes
to LPS images, runs the engine (in this process or a child process), and only after success
creates or fills the output nodes: grid transform, warped volume, Jacobian volume (+ its color
table) and, with landmarks, a TRE table. A cancelled or failed run leaves the scene's node set
exactly as it was; nodes the user did not pass as outputs are never modified.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .geometry import VolumeNodeError, image_from_volume_node, volume_node_from_image
from .jacobian import jacobian_volume_node, show_jacobian_overlay
from .landmarks import check_landmark_pairs, pair_labels, tre_table_node
from .transform import grid_transform_node_from_field

__all__ = ["ADRegNetMRMLLogic", "RegistrationNodes", "tre_per_landmark"]

#: Where each output goes, by parameter name (the same names the Slicer parameter node uses).
OUTPUT_ROLES = ("outputTransform", "outputWarped", "outputJacobian", "outputTreTable")


@dataclass
class RegistrationNodes:
    """What :meth:`ADRegNetMRMLLogic.registerNodes` produced.

    Attributes:
        transformNode: vtkMRMLGridTransformNode, fixed -> moving ("from parent").
        warpedNode: moving volume resampled onto the fixed grid.
        jacobianNode: det(d(x + u)/dx) on the fixed grid with the Jacobian colors.
        treTableNode: vtkMRMLTableNode (label, before_mm, after_mm + mean/std/max) or None.
        metrics: the engine's metrics dict.
        result: the engine's RegistrationResult (arrays in LPS).
    """

    transformNode: Any
    warpedNode: Any
    jacobianNode: Any
    treTableNode: Any = None
    metrics: dict = field(default_factory=dict)
    result: Any = None

    def similarity(self) -> tuple[Optional[float], Optional[float]]:
        """(before, after) image similarity from the metrics, None when absent."""
        return _scalar(self.metrics.get("similarity_before")), _scalar(self.metrics.get("similarity_after"))

    def foldingCount(self) -> Optional[int]:
        """Number of voxels with det <= 0, None when the metrics do not say."""
        jac = self.metrics.get("jacobian") or {}
        value = jac.get("folding_count")
        return None if value is None else int(value)


def _scalar(value) -> Optional[float]:
    """A similarity entry may be a number or a dict of named measures; take the first number."""
    if value is None:
        return None
    if isinstance(value, dict):
        for v in value.values():
            if isinstance(v, (int, float)):
                return float(v)
        return None
    return float(value)


def tre_per_landmark(metrics: dict, key: str, expected: int, fallback: np.ndarray) -> np.ndarray:
    """Per-landmark TRE (mm) from ``metrics[key]["per_landmark"]`` when it has ``expected`` values, else ``fallback``."""
    entry = metrics.get(key) if isinstance(metrics, dict) else None
    values = entry.get("per_landmark") if isinstance(entry, dict) else None
    if values is not None and len(values) == expected:
        return np.asarray(values, dtype=np.float64)
    return np.asarray(fallback, dtype=np.float64)


class ADRegNetMRMLLogic:
    """Registration on scene nodes.

    Args:
        scene: vtkMRMLScene to work in (default: ``slicer.mrmlScene``).
        runner: callable with ``ADRegNetLib.engine.register``'s signature. Default: the engine in this
            process; pass :class:`ADRegNetMRML.process.ChildProcessRunner` to run it in a child process.
    """

    def __init__(self, scene=None, runner: Optional[Callable] = None) -> None:
        if scene is None:
            import slicer

            scene = slicer.mrmlScene
        self.scene = scene
        self.runner = runner

    def _run(self, *args, **kwargs):
        if self.runner is not None:
            return self.runner(*args, **kwargs)
        from ADRegNetLib.engine import register

        return register(*args, **kwargs)

    def registerNodes(self, fixedVolumeNode, movingVolumeNode, fixedLandmarksNode=None, movingLandmarksNode=None,
                      fixedMaskNode=None, outputTransformNode=None, outputWarpedNode=None, outputJacobianNode=None,
                      outputTreTableNode=None, preset: str = "auto", quality: str = "balanced", device: str = "auto",
                      regularization: float = 1.0, progress: Optional[Callable[[float, str], None]] = None,
                      shouldStop: Optional[Callable[[], bool]] = None, seed: int = 0) -> RegistrationNodes:
        """Register ``movingVolumeNode`` to ``fixedVolumeNode`` and put the results in the scene.

        Args:
            fixedVolumeNode, movingVolumeNode: scalar 3-D volume nodes (not under a transform,
                except the moving volume under ``outputTransformNode`` from an earlier run).
            fixedLandmarksNode, movingLandmarksNode: point lists paired by order (both or neither).
            fixedMaskNode: optional label map / scalar volume on any grid; non-zero = region of interest.
            outputTransformNode, outputWarpedNode, outputJacobianNode, outputTreTableNode: nodes to
                overwrite; None creates new ones.
            preset, quality, device, regularization, seed: engine settings (see ``register``).
            progress: progress(fraction, text).
            shouldStop: returns True to cancel.

        Returns:
            RegistrationNodes.

        Raises:
            VolumeNodeError, LandmarkError: bad inputs (nothing was run).
            RegistrationCancelled: the user cancelled (scene unchanged).
            RegistrationError: the engine refused the inputs (scene unchanged).
        """
        if fixedVolumeNode is not None and fixedVolumeNode is movingVolumeNode:
            raise VolumeNodeError("fixed and moving volumes are the same node: select two different volumes")
        fixed = image_from_volume_node(fixedVolumeNode, "fixed")
        moving = image_from_volume_node(movingVolumeNode, "moving", allowed_transform_node=outputTransformNode)
        fixed_points, moving_points = check_landmark_pairs(fixedLandmarksNode, movingLandmarksNode)
        mask = None
        if fixedMaskNode is not None:
            mask = image_from_volume_node(fixedMaskNode, "mask", dtype=None)
            mask.array = mask.array > 0
        result = self._run(
            fixed, moving, fixed_landmarks=fixed_points, moving_landmarks=moving_points, fixed_mask=mask,
            preset=preset, quality=quality, regularization=regularization, device=device, progress=progress,
            should_stop=shouldStop, seed=seed,
        )
        return self._publish(result, fixedVolumeNode, movingVolumeNode, fixedLandmarksNode, movingLandmarksNode,
                             fixed_points, moving_points, outputTransformNode, outputWarpedNode,
                             outputJacobianNode, outputTreTableNode)

    def _publish(self, result, fixedVolumeNode, movingVolumeNode, fixedLandmarksNode, movingLandmarksNode,
                 fixed_points, moving_points, outputTransformNode, outputWarpedNode, outputJacobianNode,
                 outputTreTableNode) -> RegistrationNodes:
        """Create/fill the output nodes; if anything fails, remove the nodes made here."""
        before = {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}
        base = movingVolumeNode.GetName() or "moving"
        try:
            transform = grid_transform_node_from_field(self.scene, result.disp_mm, result.geometry,
                                                       name=f"{base} to {fixedVolumeNode.GetName()} transform",
                                                       node=outputTransformNode)
            warped = volume_node_from_image(self.scene, result.warped, name=f"{base} warped",
                                            node=outputWarpedNode)
            jacobian = jacobian_volume_node(self.scene, result.jacobian, name=f"{base} Jacobian",
                                            node=outputJacobianNode)
            table = None
            if fixed_points is not None:
                k = len(fixed_points)
                before_mm = tre_per_landmark(result.metrics, "tre_before", k,
                                             np.linalg.norm(moving_points - fixed_points, axis=1))
                fallback_after = (np.linalg.norm(result.warped_fixed_landmarks - moving_points, axis=1)
                                  if result.warped_fixed_landmarks is not None else np.full(k, np.nan))
                after_mm = tre_per_landmark(result.metrics, "tre_after", k, fallback_after)
                table = tre_table_node(self.scene, pair_labels(fixedLandmarksNode, movingLandmarksNode),
                                       before_mm, after_mm, name=f"{base} TRE", node=outputTreTableNode)
        except Exception:
            for i in reversed(range(self.scene.GetNumberOfNodes())):
                node = self.scene.GetNthNode(i)
                if node is not None and node.GetID() not in before:
                    self.scene.RemoveNode(node)
            raise
        return RegistrationNodes(transform, warped, jacobian, table, dict(result.metrics), result)

    # ------------------------------------------------------------------ display helpers (no Qt)
    @staticmethod
    def setMovingUnderTransform(movingVolumeNode, transformNode, show: bool) -> None:
        """Place the moving volume under the transform (shown registered) or take it out."""
        if show:
            movingVolumeNode.SetAndObserveTransformNodeID(transformNode.GetID() if transformNode else None)
        elif movingVolumeNode.GetParentTransformNode() is transformNode:
            movingVolumeNode.SetAndObserveTransformNodeID(None)

    @staticmethod
    def setTransformGridVisible(transformNode, visible: bool, regionNode=None) -> None:
        """Show the transform as a deformed grid in the slice views (transform display node)."""
        if transformNode.GetDisplayNode() is None:
            transformNode.CreateDefaultDisplayNodes()
        display = transformNode.GetDisplayNode()
        display.SetVisualizationMode(display.VIS_MODE_GRID)
        if regionNode is not None:
            display.SetAndObserveRegionNode(regionNode)
        display.SetVisibility2D(bool(visible))

    def showJacobianOverlay(self, jacobianNode, backgroundNode=None, opacity: float = 0.5) -> int:
        """Jacobian as the foreground of every slice view; returns the number of views set."""
        return show_jacobian_overlay(self.scene, jacobianNode, backgroundNode, opacity)
