r"""Masks from label map, scalar volume or Segmentation nodes, and warping a Segmentation moving -> fixed.

A mask is passed to the engine on its own grid (the engine maps it by physical position); a
Segmentation is first exported onto its volume's grid. Exports go through a temporary label map
node that is removed again with everything the export added, so the scene's node set is unchanged.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image

from .frames import ROLE_ATTRIBUTE, check_mask_frame
from .geometry import VolumeNodeError, image_from_volume_node, volume_node_from_image
from .nodes import rollback_on_error, temporary_nodes

__all__ = ["MASK_NODE_CLASSES", "SegmentInfo", "labelmap_from_segmentation",
           "mask_image_from_node", "warp_label_image", "warp_segmentation", "SEGMENTS_NOT_WARPED_ATTRIBUTE"]

#: node classes a mask selector accepts (label map volumes are scalar volumes too)
MASK_NODE_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode")


@dataclass(frozen=True)
class SegmentInfo:
    """One segment as exported: its label value in the label map, name and colour (RGB in [0, 1])."""

    label: int
    segment_id: str
    name: str
    color: tuple[float, float, float]


def labelmap_from_segmentation(segmentation_node, reference_volume_node) -> tuple[Image, list[SegmentInfo]]:
    """Every segment of a Segmentation node as one label map on the reference volume's grid.

    Args:
        segmentation_node: vtkMRMLSegmentationNode.
        reference_volume_node: the volume whose grid the labels are exported on.

    Returns:
        ((Z, Y, X) int64 label image in LPS, where segment k of the list has label k + 1 and 0 is
        background; where segments overlap the later one wins), the segments.

    Raises:
        VolumeNodeError: no segments, or the export failed.
    """
    import slicer
    import vtk

    segmentation = segmentation_node.GetSegmentation()
    count = segmentation.GetNumberOfSegments()
    if count == 0:
        raise VolumeNodeError(f"segmentation '{segmentation_node.GetName()}' has no segments; add a segment first")
    ids = vtk.vtkStringArray()
    segments = []
    for k in range(count):
        segment_id = segmentation.GetNthSegmentID(k)
        segment = segmentation.GetSegment(segment_id)
        ids.InsertNextValue(segment_id)
        segments.append(SegmentInfo(k + 1, segment_id, segment.GetName(), tuple(float(c) for c in segment.GetColor())))
    scene = segmentation_node.GetScene()
    with temporary_nodes(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "ADRegNet temporary labels")
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_volume_node)
        if not ok or labelmap.GetImageData() is None:
            raise VolumeNodeError(f"segmentation '{segmentation_node.GetName()}' could not be exported as a label map")
        image = image_from_volume_node(labelmap, "segmentation", dtype=np.int64)
    return Image(image.array, image.geometry, segmentation_node.GetName()), segments


def mask_image_from_node(mask_node, volume_node, role: str) -> Image:
    """A boolean mask (voxels above 0 / any segment) on the mask's own grid, in its volume's frame.

    Args:
        mask_node: label map or scalar volume node, or Segmentation node (exported on ``volume_node``'s grid).
        volume_node: the fixed or moving volume the mask belongs to.
        role: "fixed mask" or "moving mask" (messages).

    Raises:
        VolumeNodeError: wrong node type, wrong transform, a scan (not a mask), or an empty mask.
    """
    check_mask_frame(mask_node, volume_node, role)
    if mask_node.IsA("vtkMRMLSegmentationNode"):
        labels, _ = labelmap_from_segmentation(mask_node, volume_node)
        image = labels
    elif mask_node.IsA("vtkMRMLScalarVolumeNode"):
        image = image_from_volume_node(mask_node, role, dtype=None)
        _check_not_a_scan(image.array, mask_node, role)
    else:
        raise VolumeNodeError(f"{role} '{mask_node.GetName()}' is a {mask_node.GetClassName()}; choose a label map, "
                              "a scalar volume or a segmentation")
    inside = image.array > 0
    if not inside.any():
        raise VolumeNodeError(f"{role} '{mask_node.GetName()}' is empty (no voxel above 0); paint the region of "
                              "interest or clear the mask selector")
    return Image(inside, image.geometry, mask_node.GetName())


def _check_not_a_scan(array: np.ndarray, mask_node, role: str) -> None:
    """Refuse a scan chosen as a mask (the selector lists every volume): a CT read as 'voxels above 0' leaves
    out all air and lung (the lung pair's TRE 0.29 -> 1.08 mm with the fixed CT as its own mask)."""
    from ADRegNetLib.engine.masks import scan_like

    scan = scan_like(array)
    if scan is not None:
        raise VolumeNodeError(f"{role} '{mask_node.GetName()}' holds {scan.count} distinct values (from {scan.lowest:g} "
                              f"to {scan.highest:g}): it looks like a scan, not a mask; choose a label map or a "
                              "segmentation that marks the region of interest with values above 0, or clear the mask "
                              "selector")


def warp_label_image(labels: Image, disp_mm: np.ndarray, fixed_geometry: Geometry) -> Image:
    """Labels of the moving grid sampled at x + u(x) for every fixed voxel x (label-aware when available).

    Args:
        labels: (Zm, Ym, Xm) integer labels on the moving grid (LPS).
        disp_mm: (3, Z, Y, X) LPS mm on ``fixed_geometry`` (fixed x -> moving x + u(x)).
        fixed_geometry: the fixed grid.

    Returns:
        (Z, Y, X) int64 labels on the fixed grid (0 outside the moving image).
    """
    from ADRegNetLib.spatial.transform import Transform

    transform = Transform(fixed_geometry, np.asarray(disp_mm, dtype=np.float32))
    try:
        warped = transform.warp(labels, mode="labels", default=0)
    except ImportError:  # ADRegNetLib.spatial.labels not there yet: nearest neighbour
        warped = transform.warp(labels, mode="nearest", default=0)
    return Image(np.asarray(warped.array).astype(np.int64), fixed_geometry, labels.name)


#: the warped segmentation's attribute listing the segments that have no voxel there (``warp_segmentation``)
SEGMENTS_NOT_WARPED_ATTRIBUTE = "ADRegNet.segmentsNotWarped"


def warp_segmentation(segmentation_node, transform_node, moving_volume_node, fixed_volume_node,
                      name: Optional[str] = None):
    """A new Segmentation node: ``segmentation_node`` (on the moving volume) warped onto the fixed volume.

    Args:
        segmentation_node: Segmentation of the moving volume (same transform as the moving volume, or none).
        transform_node: an AD-RegNet result grid transform (fixed -> moving, "from parent").
        moving_volume_node, fixed_volume_node: the registered pair.
        name: name of the new node (default: "<segmentation> warped").

    Returns:
        The new vtkMRMLSegmentationNode with the same segment names and colours, on the fixed grid.
    """
    import slicer

    from .transform import field_from_grid_transform_node

    check_mask_frame(segmentation_node, moving_volume_node, "segmentation")
    disp, geometry = field_from_grid_transform_node(transform_node)
    labels, segments = labelmap_from_segmentation(segmentation_node, moving_volume_node)
    warped = warp_label_image(labels, disp, geometry)
    scene = segmentation_node.GetScene()
    with rollback_on_error(scene):
        output = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                         scene.GenerateUniqueName(name or f"{segmentation_node.GetName()} warped"))
        output.CreateDefaultDisplayNodes()
        output.SetReferenceImageGeometryParameterFromVolumeNode(fixed_volume_node)
        with temporary_nodes(scene):
            labelmap = volume_node_from_image(scene, Image(warped.array.astype(np.int32), geometry, "labels"),
                                              name="ADRegNet temporary labels", class_name="vtkMRMLLabelMapVolumeNode")
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, output):
                raise VolumeNodeError("the warped labels could not be imported into a segmentation")
        by_label = {s.label: s for s in segments}
        segmentation = output.GetSegmentation()
        present = set()
        for k in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(k)
            info = by_label.get(int(segment.GetLabelValue()))
            if info is not None:
                segment.SetName(info.name)
                segment.SetColor(*info.color)
                present.add(info.label)
        output.SetAttribute(ROLE_ATTRIBUTE, "warped-segmentation")
        missing = [s.name for s in segments if s.label not in present]
        if missing:  # empty, hidden under a later segment, or warped outside the fixed volume: said, not dropped silently
            output.SetAttribute(SEGMENTS_NOT_WARPED_ATTRIBUTE, ", ".join(missing))
            warnings.warn(f"'{output.GetName()}': {len(missing)} segment(s) of '{segmentation_node.GetName()}' have no "
                          f"voxel on the fixed volume and are left out: {', '.join(missing)} (empty, covered by a later "
                          "segment, or moved outside the fixed volume)", stacklevel=2)
    return output
