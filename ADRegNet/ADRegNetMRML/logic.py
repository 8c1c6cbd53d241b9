r"""Keyword API that registers two volume nodes and puts the results in the scene (no Qt).

``ADRegNetMRMLLogic().registerNodes(fixedVolumeNode, movingVolumeNode, ...)`` reads the nodes in
their own frames (:mod:`ADRegNetMRML.frames`), runs the engine (in this process or a child
process), and only after success creates the outputs: grid transform (fixed -> moving), its
inverse when the engine gives one, warped volume, Jacobian volume, TRE table and the run log.
Each run makes new nodes unless output nodes are given; an output is never one of the inputs. A
cancelled or failed run leaves the scene's node set exactly as it was.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .frames import (
    FIXED_VOLUME_ATTRIBUTE, MOVING_VOLUME_ATTRIBUTE, RESULT_VOLUME_ROLES, ROLE_ATTRIBUTE, check_fixed_frame,
    initial_transform_lps, record_result_volumes, result_is_for, show_under_result,
)
from .geometry import VolumeNodeError, image_from_volume_node, volume_node_from_image
from .jacobian import jacobian_volume_node
from .landmarks import check_landmark_pairs, check_points_on_volumes, local_change_node, pair_labels, tre_table_node
from .masks import READ_WHERE_SHOWN_ATTRIBUTE, mask_image_from_node
from .nodes import restore_on_error, rollback_on_error
from .pairs import GUIDING_PAIRS_ATTRIBUTE, mark_guiding_pairs
from .runlog import RunLog, log_text_node
from .transform import grid_transform_node_from_field

__all__ = ["ADRegNetMRMLLogic", "RegistrationNodes", "tre_per_landmark", "check_outputs_are_not_inputs",
           "check_output_kinds", "result_is_for", "FIXED_VOLUME_ATTRIBUTE", "MOVING_VOLUME_ATTRIBUTE",
           "TRE_GUIDED_ATTRIBUTE"]

#: attribute of the TRE table node: "true" when the pairs guided the registration (their "after" error is
#: then not an independent check), "false" when they only measured it
TRE_GUIDED_ATTRIBUTE = "ADRegNet.landmarksGuidedRegistration"


@dataclass
class RegistrationNodes:
    """What :meth:`ADRegNetMRMLLogic.registerNodes` produced.

    Attributes:
        transformNode: vtkMRMLGridTransformNode, fixed -> moving ("from parent").
        warpedNode: moving volume resampled onto the fixed grid.
        jacobianNode: det(d(x + u)/dx) on the fixed grid with the Jacobian colors.
        treTableNode: vtkMRMLTableNode (label, before_mm, [start_mm,] after_mm + mean/std/max; names as in
            metrics.json: start_mm, through the moving volume's starting transform, only with one) or None; its
            attribute ``TRE_GUIDED_ATTRIBUTE`` says whether the pairs guided the registration.
        inverseTransformNode: grid transform moving -> fixed ("from parent", on the moving grid) or None.
        logNode: vtkMRMLTextNode with the run log.
        metrics: the engine's metrics dict.
        result: the engine's RegistrationResult (arrays in LPS).
        notes: what the user should be told beside the outputs (a mask read where it is shown, not as
            stored); also in the run log, a warning and the transform's ``READ_WHERE_SHOWN_ATTRIBUTE``.
        localChangeNode: locked point list at the places the engine found a local change and refined, or None.
    """

    transformNode: Any
    warpedNode: Any
    jacobianNode: Any
    treTableNode: Any = None
    inverseTransformNode: Any = None
    logNode: Any = None
    metrics: dict = field(default_factory=dict)
    result: Any = None
    notes: list = field(default_factory=list)
    localChangeNode: Any = None

    def similarity(self) -> tuple[Optional[float], Optional[float]]:
        """(before, after) image similarity from the metrics, None when absent."""
        key = "nmi" if self.metrics.get("multimodal") else "ncc"
        return (_scalar(self.metrics.get("similarity_before"), key),
                _scalar(self.metrics.get("similarity_after"), key))

    def foldingCount(self) -> Optional[int]:
        """Number of voxels with det <= 0, None when the metrics do not say."""
        value = (self.metrics.get("jacobian") or {}).get("folding_count")
        return None if value is None else int(value)


def _scalar(value, key: str = "ncc") -> Optional[float]:
    """A similarity entry may be a number or a dict of named measures; take ``key``, else the first number."""
    if isinstance(value, dict):
        chosen = value.get(key)
        value = chosen if isinstance(chosen, (int, float)) else next(
            (v for v in value.values() if isinstance(v, (int, float))), None)
    return None if value is None else float(value)


def tre_per_landmark(metrics: dict, key: str, expected: int, fallback: np.ndarray) -> np.ndarray:
    """Per-landmark TRE (mm) from ``metrics[key]["per_landmark"]`` when it has ``expected`` values, else ``fallback``."""
    entry = metrics.get(key) if isinstance(metrics, dict) else None
    values = entry.get("per_landmark") if isinstance(entry, dict) else None
    return np.asarray(values if values is not None and len(values) == expected else fallback, dtype=np.float64)


def check_outputs_are_not_inputs(inputs: dict, outputs: dict) -> None:
    """Refuse an output node that is an input, or one node chosen for two outputs.

    Args:
        inputs: role -> node (None entries ignored).
        outputs: role -> node (None = create new).

    Raises:
        VolumeNodeError: naming the node, its output role and the input role it holds.
    """
    by_id = {node.GetID(): role for role, node in inputs.items() if node is not None}
    seen: dict[str, str] = {}
    for role, node in outputs.items():
        if node is None:
            continue
        if node.GetID() in by_id:
            raise VolumeNodeError(
                f"the {role} output '{node.GetName()}' is the {by_id[node.GetID()]}; results never overwrite an input: "
                "choose 'Create new' or another node")
        if node.GetID() in seen:
            raise VolumeNodeError(f"'{node.GetName()}' is chosen as both the {seen[node.GetID()]} and the {role} output; "
                                  "choose a different node for each, or 'Create new'")
        seen[node.GetID()] = role


def check_output_kinds(outputs: dict) -> None:
    """Refuse an output node that cannot hold its result without destroying what it holds.

    A linear or B-spline transform turned into a grid transform would lose the alignment other nodes sit
    under (a moving volume's starting transform; a PET under a user's transform), and a label map cannot
    show the warped intensities or the Jacobian. The panel lists only suitable nodes; the keyword API
    accepted any.

    Raises:
        VolumeNodeError: naming the node, its class and what to choose instead.
    """
    for role, ok in (("transform", "vtkMRMLGridTransformNode"), ("inverse transform", "vtkMRMLGridTransformNode"),
                     ("warped volume", "vtkMRMLScalarVolumeNode"), ("Jacobian", "vtkMRMLScalarVolumeNode")):
        node = outputs.get(role)
        if node is None or (node.IsA(ok) and not node.IsA("vtkMRMLLabelMapVolumeNode")):
            continue
        want = "a grid transform" if "Transform" in ok else "a scalar volume (not a label map)"
        raise VolumeNodeError(f"the {role} output '{node.GetName()}' is a {node.GetClassName()}; the result needs {want}, "
                              f"and would replace what this node holds: choose 'Create new' or {want}")


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
                      fixedMaskNode=None, movingMaskNode=None, *, outputTransformNode=None, outputWarpedNode=None,
                      outputJacobianNode=None, outputTreTableNode=None, outputInverseTransformNode=None,
                      useInitialTransform: bool = True, keepInitialTransform: bool = False,
                      landmarksGuide: bool = True, preset: str = "auto",
                      quality: str = "balanced",
                      device: str = "auto", regularization: float = 1.0,
                      progress: Optional[Callable[[float, str], None]] = None,
                      shouldStop: Optional[Callable[[], bool]] = None, seed: int = 0, log: Optional[RunLog] = None,
                      engineOptions: Optional[dict] = None, localRegionNode=None) -> RegistrationNodes:
        """Register ``movingVolumeNode`` to ``fixedVolumeNode`` and put the results in the scene.

        Args:
            fixedVolumeNode: scalar 3-D volume, not under a transform (outputs are on its grid).
            movingVolumeNode: scalar 3-D volume; under a linear transform that transform is the starting
                alignment (``useInitialTransform``); under an earlier AD-RegNet result it is read unwarped.
            fixedLandmarksNode, movingLandmarksNode: point lists paired by order (both or neither), read
                in their volumes' frames.
            fixedMaskNode, movingMaskNode: optional label map / scalar volume (voxels above 0) or
                Segmentation (its visible segments), on any grid, read where they are shown
                (:mod:`ADRegNetMRML.masks`; the log names the segments used and hidden; a mask outside its
                volume's transform is named in a warning, the log, ``RegistrationNodes.notes`` and the
                transform's ``READ_WHERE_SHOWN_ATTRIBUTE``).
            outputTransformNode, outputWarpedNode, outputJacobianNode, outputTreTableNode,
                outputInverseTransformNode: nodes to overwrite; None (the default) creates new ones.
            useInitialTransform: start from the moving volume's linear transform (the pre-alignment
                refines it, keeping the refinement only when it fits clearly better).
            keepInitialTransform: use that transform exactly as it is (no pre-alignment after it).
            landmarksGuide: the landmark pairs pull the registration (True) or only measure its error
                (False: an independent check); the TRE table and the log say which.
            preset, quality, device, regularization, seed: engine settings (see ``register``).
            progress: progress(fraction, text).
            shouldStop: returns True to cancel.
            log: a RunLog to write to (a new one by default); stored as the log node.
            engineOptions: further keyword arguments for ``register`` (e.g. ``max_working_voxels``).
            localRegionNode: optional label map / scalar volume / Segmentation over the fixed volume (read as the
                masks are): where the anatomy changed locally; the field is refined there with less smoothing
                (``register(local_region=...)``).

        Returns:
            RegistrationNodes.

        Raises:
            VolumeNodeError, LandmarkError: bad inputs (nothing was run, scene unchanged).
            RegistrationCancelled: the user cancelled, or the scene was closed or an input removed from it while
                it ran (nothing added; the message names the removed nodes).
            RegistrationError: the engine refused the inputs (scene unchanged).
        """
        if fixedVolumeNode is not None and fixedVolumeNode is movingVolumeNode:
            raise VolumeNodeError("fixed and moving volumes are the same node: select two different volumes")
        inputs = {"fixed volume": fixedVolumeNode, "moving volume": movingVolumeNode,
                  "fixed landmarks": fixedLandmarksNode, "moving landmarks": movingLandmarksNode,
                  "fixed mask": fixedMaskNode, "moving mask": movingMaskNode, "local-change mask": localRegionNode}
        outputs = {"transform": outputTransformNode, "warped volume": outputWarpedNode,
                   "Jacobian": outputJacobianNode, "TRE table": outputTreTableNode,
                   "inverse transform": outputInverseTransformNode}
        check_outputs_are_not_inputs(inputs, outputs)
        check_output_kinds(outputs)
        fixed = image_from_volume_node(fixedVolumeNode, "fixed")
        moving = image_from_volume_node(movingVolumeNode, "moving")
        check_fixed_frame(fixedVolumeNode)
        initial = initial_transform_lps(movingVolumeNode) if useInitialTransform else None
        fixed_points, moving_points = check_landmark_pairs(fixedLandmarksNode, movingLandmarksNode,
                                                           fixedVolumeNode, movingVolumeNode)
        if fixed_points is not None:
            check_points_on_volumes(fixedLandmarksNode, movingLandmarksNode, fixed_points, moving_points,
                                    fixed.geometry, moving.geometry)
        kwargs = dict(engineOptions or {})
        mask_notes: list[str] = []  # segments used and hidden, masks read where they are shown
        shown_elsewhere: list[str] = []  # the latter alone (a warning, the result's attribute)
        for key, node, volume, role in (("fixed_mask", fixedMaskNode, fixedVolumeNode, "fixed mask"),
                                        ("moving_mask", movingMaskNode, movingVolumeNode, "moving mask"),
                                        ("local_region", localRegionNode, fixedVolumeNode, "local-change mask")):
            if node is not None:
                kwargs[key] = mask_image_from_node(node, volume, role, mask_notes, shown_elsewhere)
        if initial is not None:
            kwargs["initial_transform"] = _affine(initial)
            if keepInitialTransform:
                kwargs["prealignment"] = "none"
        log = log or RunLog()
        settings = dict(preset=preset, quality=quality, device=device, regularization=regularization, seed=seed)
        log.inputs(fixed, moving, settings, 0 if fixed_points is None else len(fixed_points),
                   {role: node.GetName() for role, node in inputs.items() if "mask" in role and node is not None},
                   initial)
        for note in mask_notes:
            log.add(note)
        for note in shown_elsewhere:  # before: a run-log line only
            warnings.warn(note, stacklevel=2)

        def report(fraction: float, text: str) -> None:
            log.progress(fraction, text)
            if progress is not None:
                progress(fraction, text)

        closing = []  # File > Close Scene or Load Scene while the engine runs: its inputs are gone, stop it

        def gone() -> Optional[str]:  # why the result could not be published, if the inputs went meanwhile
            if closing:
                return "the scene was closed while the registration ran; nothing was added"
            removed = [f"the {role} '{node.GetName()}'" for role, node in inputs.items()
                       if node is not None and self.scene.GetNodeByID(node.GetID() or "") is not node]
            if not removed:
                return None
            verb = "was" if len(removed) == 1 else "were"  # a result must not name a lost node: an import reuses IDs
            return f"{' and '.join(removed)} {verb} removed from the scene while the registration ran; nothing was added"

        def stop() -> bool:
            return gone() is not None or (shouldStop is not None and bool(shouldStop()))

        from ADRegNetLib.engine.api import RegistrationCancelled

        tag = self.scene.AddObserver(self.scene.StartCloseEvent, lambda *_: closing.append(True))
        try:
            try:
                result = self._run(fixed, moving, fixed_landmarks=fixed_points, moving_landmarks=moving_points,
                                   preset=preset, quality=quality, regularization=regularization, device=device,
                                   progress=report, should_stop=stop, seed=seed, landmarks_guide=landmarksGuide,
                                   **kwargs)
            except RegistrationCancelled:
                if gone() is None:  # the user's Cancel
                    raise
            reason = gone()
            if reason is not None:  # stop() saw it, or the engine finished before it looked again: say what happened
                raise RegistrationCancelled(reason)
        except Exception as exc:
            log.add(f"stopped: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.scene.RemoveObserver(tag)
        log.results(result.metrics)
        for role, node in outputs.items():  # deleted while the engine ran (the Data module stays usable)
            if node is not None and self.scene.GetNodeByID(node.GetID() or "") is not node:
                log.add(f"the {role} output '{node.GetName()}' was removed from the scene while the registration ran; "
                        "the result is put in a new node")
                outputs[role] = None
        guided = bool((result.metrics.get("landmarks") or {}).get("guided_registration", landmarksGuide))
        if fixed_points is not None:
            log.add("landmark pairs: " + ("guided the registration (their error after it is not an independent check)"
                                          if guided else "measured only (an independent check of the registration)"))
        with rollback_on_error(self.scene), restore_on_error(outputs.values(), RESULT_VOLUME_ROLES):
            nodes = self._publish(result, fixedVolumeNode, movingVolumeNode, fixedLandmarksNode, movingLandmarksNode,
                                  fixed_points, moving_points, outputs, log, initial)
            if nodes.treTableNode is not None:  # what the "after" column measured
                nodes.treTableNode.SetAttribute(TRE_GUIDED_ATTRIBUTE, "true" if guided else "false")
            if guided and fixed_points is not None:  # the pair table marks these pairs while they stay put
                mark_guiding_pairs(nodes.transformNode, fixed_points, moving_points)
            else:
                nodes.transformNode.RemoveAttribute(GUIDING_PAIRS_ATTRIBUTE)  # an overwritten node's old marks
            if shown_elsewhere:
                nodes.transformNode.SetAttribute(READ_WHERE_SHOWN_ATTRIBUTE, "; ".join(shown_elsewhere))
            else:
                nodes.transformNode.RemoveAttribute(READ_WHERE_SHOWN_ATTRIBUTE)
            nodes.notes = list(shown_elsewhere)
            return nodes

    def _publish(self, result, fixedVolumeNode, movingVolumeNode, fixedLandmarksNode, movingLandmarksNode,
                 fixed_points, moving_points, outputs: dict, log: RunLog,
                 initial: Optional[np.ndarray] = None) -> RegistrationNodes:
        """Create/fill the output nodes (the caller removes them again if anything fails)."""
        base, fixed_name = movingVolumeNode.GetName() or "moving", fixedVolumeNode.GetName() or "fixed"
        transform = grid_transform_node_from_field(self.scene, result.disp_mm, result.geometry,
                                                   name=f"{base} to {fixed_name} transform",
                                                   node=outputs["transform"])
        transform.SetAttribute(ROLE_ATTRIBUTE, "transform")
        record_result_volumes(transform, fixedVolumeNode, movingVolumeNode)  # whose result it is
        inverse = None
        inverse_disp = getattr(result, "inverse_disp_mm", None)
        moving_geometry = getattr(result, "moving_geometry", None)
        if inverse_disp is not None and moving_geometry is not None:
            inverse = grid_transform_node_from_field(self.scene, inverse_disp, moving_geometry,
                                                     name=f"{fixed_name} to {base} transform",
                                                     node=outputs["inverse transform"])
            inverse.SetAttribute(ROLE_ATTRIBUTE, "inverse-transform")
        warped = volume_node_from_image(self.scene, result.warped, name=f"{base} registered",
                                        node=outputs["warped volume"])
        warped.SetAttribute(ROLE_ATTRIBUTE, "warped")
        source = movingVolumeNode.GetDisplayNode()
        if (source is not None and source.IsA("vtkMRMLScalarVolumeDisplayNode")  # a label map's has no window
                and warped.GetDisplayNode() is not None and 0 < source.GetWindow() < math.inf
                and math.isfinite(source.GetLevel())):  # an infinite window would break the display's sliders
            warped.GetDisplayNode().AutoWindowLevelOff()  # shown like the moving volume, for comparison
            warped.GetDisplayNode().SetWindowLevel(source.GetWindow(), source.GetLevel())
        jacobian = jacobian_volume_node(self.scene, result.jacobian, name=f"{base} Jacobian",
                                        node=outputs["Jacobian"])
        no_value = int(np.count_nonzero(~np.isfinite(result.jacobian.array)))
        if no_value:  # the heatmap must not paint them as folds
            log.add(f"Jacobian: {no_value} voxels have no determinant (NaN or infinite, stored as NaN); the heatmap "
                    "leaves them transparent")
        table = None
        if fixed_points is not None:
            k = len(fixed_points)
            before_mm = tre_per_landmark(result.metrics, "tre_before", k,
                                         np.linalg.norm(moving_points - fixed_points, axis=1))
            warped_points = result.warped_fixed_landmarks
            fallback_after = (np.linalg.norm(warped_points - moving_points, axis=1) if warped_points is not None
                              else np.full(k, np.nan))
            after_mm = tre_per_landmark(result.metrics, "tre_after", k, fallback_after)
            start_mm = None  # with a starting transform: what the views showed before registration
            if initial is not None:
                started = fixed_points @ initial[:3, :3].T + initial[:3, 3]
                start_mm = tre_per_landmark(result.metrics, "tre_start", k,
                                            np.linalg.norm(started - moving_points, axis=1))
            table = tre_table_node(self.scene, pair_labels(fixedLandmarksNode, movingLandmarksNode), before_mm,
                                   after_mm, name=f"{base} TRE", node=outputs["TRE table"], start_mm=start_mm)
        changes = local_change_node(self.scene, result.metrics, f"{base} local change")
        made = [n for n in (transform, inverse, warped, jacobian, table, changes) if n is not None]
        for node in (transform, inverse, warped, jacobian):  # results live in the fixed volume's frame
            parent = None if node is None else node.GetParentTransformNode()
            if parent is not None:
                node.SetAndObserveTransformNodeID(None)
                log.add(f"'{node.GetName()}' was under the transform '{parent.GetName()}' and was taken out of it: "
                        "the result lies in the fixed volume's frame")
        log.add("outputs: " + ", ".join(f"'{n.GetName()}'" for n in made))
        log_node = log_text_node(self.scene, log, f"{base} registration log")
        return RegistrationNodes(transform, warped, jacobian, table, inverse, log_node, dict(result.metrics), result,
                                 localChangeNode=changes)

    # ------------------------------------------------------------------ display helpers (no Qt)
    @staticmethod
    def setMovingUnderTransform(movingVolumeNode, transformNode, show: bool, movingLandmarksNode=None) -> None:
        """Show the moving volume (and its point list) registered under the result transform, or take it out."""
        show_under_result(transformNode, movingVolumeNode, [movingLandmarksNode], show)


def _affine(matrix44_lps: np.ndarray):
    """The engine's AffineMap for a (4, 4) LPS fixed -> moving matrix (the matrix itself if AffineMap is absent)."""
    try:
        from ADRegNetLib.spatial.affine import AffineMap
    except ImportError:
        return np.asarray(matrix44_lps)
    return AffineMap.from_homogeneous(matrix44_lps)
