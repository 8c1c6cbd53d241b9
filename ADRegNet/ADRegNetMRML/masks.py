r"""Masks from label map, scalar volume or Segmentation nodes, and warping a Segmentation moving -> fixed.

Where a mask is read (one rule for label maps, volumes and segmentations, the rule of landmarks and of
Slicer's own segmentation export): **a mask marks the anatomy shown under it.** A mask in its volume's
frame (the same transform as the volume, or as it had before this module showed it registered; or
neither under a transform) is read on its own grid as stored. Any other mask (a label map left out of
the moving volume's starting transform, a segmentation painted over the transformed moving volume) is
read where it is shown: mapped through the transforms between them into the volume's frame, onto the
volume's grid (nearest neighbour, Slicer's resampler). Before, a label map outside its volume's
transform was read as if it were in it, while a segmentation was read where shown, and a segmentation
of a moving volume shown registered was exported through the result transform.

**Segments used:** the visible ones (the eye in the Segmentations module; hiding the whole node does
not count), as Slicer's "Export visible segments"; hidden segments are left out, and the run log (a
mask) or the warped segmentation's attribute and warning (Warp segmentation) name them.

Exports go through temporary nodes that are removed again with everything the export added, so the
scene's node set is unchanged.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image

from .frames import ROLE_ATTRIBUTE, registration_parent
from .geometry import VolumeNodeError, geometry_from_volume_node, image_from_volume_node, volume_node_from_image
from .nodes import rollback_on_error, temporary_nodes

__all__ = ["MASK_NODE_CLASSES", "SegmentInfo", "visible_segments", "labelmap_from_segmentation", "in_volume_frame",
           "mask_image_from_node", "warp_label_image", "warp_segmentation", "SEGMENTS_NOT_WARPED_ATTRIBUTE",
           "SEGMENTS_HIDDEN_ATTRIBUTE"]

#: node classes a mask selector accepts (label map volumes are scalar volumes too)
MASK_NODE_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode")


@dataclass(frozen=True)
class SegmentInfo:
    """One segment as exported: its label value in the label map, name and colour (RGB in [0, 1])."""

    label: int
    segment_id: str
    name: str
    color: tuple[float, float, float]


def visible_segments(segmentation_node, role: str = "segmentation") -> tuple[list[str], list[str]]:
    """The IDs of the segments to use (the visible ones) and the names of the hidden ones.

    Raises:
        VolumeNodeError: no segments, or every segment hidden.
    """
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(k) for k in range(segmentation.GetNumberOfSegments())]
    name = segmentation_node.GetName()
    if not ids:
        raise VolumeNodeError(f"segmentation '{name}' has no segments; add a segment first")
    display = segmentation_node.GetDisplayNode()
    shown = [i for i in ids if display is None or display.GetSegmentVisibility(i)]
    hidden = [segmentation.GetSegment(i).GetName() for i in ids if i not in shown]
    if not shown:
        raise VolumeNodeError(f"every segment of the {role} '{name}' is hidden ({', '.join(hidden)}); only visible "
                              "segments are used: show the segments to use (the eye in the Segmentations module or "
                              "the Data module)")
    return shown, hidden


def in_volume_frame(node, volume_node) -> bool:
    """True when ``node`` sits in its volume's frame: the volume's transform, or the one it had before this module
    showed it registered (then a mask made with the volume is read as stored)."""
    parent = node.GetParentTransformNode()
    return parent is volume_node.GetParentTransformNode() or parent is registration_parent(volume_node)


def _reference_node(scene, volume_node, parent):
    """A temporary volume node with ``volume_node``'s grid (no voxels) under ``parent``: where an export lands."""
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ADRegNet temporary reference")
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    grid = vtk.vtkImageData()
    grid.SetExtent(volume_node.GetImageData().GetExtent())
    node.SetAndObserveImageData(grid)
    node.SetAndObserveTransformNodeID(parent.GetID() if parent is not None else None)
    return node


def labelmap_from_segmentation(segmentation_node, reference_volume_node,
                               role: str = "segmentation") -> tuple[Image, list[SegmentInfo]]:
    """The visible segments of a Segmentation node as one label map on the reference volume's grid, in its frame.

    Args:
        segmentation_node: vtkMRMLSegmentationNode.
        reference_volume_node: the volume whose grid and frame the labels are exported on; a segmentation
            outside that frame is read where it is shown (module docstring).
        role: what the segmentation is for (messages).

    Returns:
        ((Z, Y, X) int64 label image in LPS, where visible segment k of the list has label k + 1 and 0 is
        background; where segments overlap the later one wins), the segments used.

    Raises:
        VolumeNodeError: no segments, none visible, or the export failed.
    """
    import slicer
    import vtk

    ids, _ = visible_segments(segmentation_node, role)
    segmentation = segmentation_node.GetSegmentation()
    id_array = vtk.vtkStringArray()
    segments = []
    for k, segment_id in enumerate(ids):
        segment = segmentation.GetSegment(segment_id)
        id_array.InsertNextValue(segment_id)
        segments.append(SegmentInfo(k + 1, segment_id, segment.GetName(), tuple(float(c) for c in segment.GetColor())))
    scene = segmentation_node.GetScene()
    frame = (segmentation_node.GetParentTransformNode() if in_volume_frame(segmentation_node, reference_volume_node)
             else registration_parent(reference_volume_node))
    with temporary_nodes(scene):
        reference = _reference_node(scene, reference_volume_node, frame)
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "ADRegNet temporary labels")
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, id_array, labelmap, reference)
        if not ok or labelmap.GetImageData() is None:
            raise VolumeNodeError(f"segmentation '{segmentation_node.GetName()}' could not be exported as a label map")
        image = image_from_volume_node(labelmap, "segmentation", dtype=np.int64)
    return Image(image.array, image.geometry, segmentation_node.GetName()), segments


def _resampled_where_shown(inside: np.ndarray, mask_node, volume_node) -> Image:
    """A (Z, Y, X) bool mask of ``mask_node`` (on its own grid) resampled where it is shown onto the volume's grid,
    in the volume's frame (Slicer's oriented-image resampler, nearest neighbour)."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    def oriented(node, extent):
        image = slicer.vtkOrientedImageData()
        image.SetExtent(extent)
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        image.SetGeometryFromImageToWorldMatrix(matrix)
        return image

    source = oriented(mask_node, mask_node.GetImageData().GetExtent())
    source.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(source.GetPointData().GetScalars())[:] = inside.reshape(-1)
    geometry = geometry_from_volume_node(volume_node)
    reference = oriented(volume_node, (0, geometry.size[0] - 1, 0, geometry.size[1] - 1, 0, geometry.size[2] - 1))
    to_frame = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(mask_node.GetParentTransformNode(),
                                                         registration_parent(volume_node), to_frame)
    output = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            source, reference, output, False, False, to_frame):
        raise VolumeNodeError(f"mask '{mask_node.GetName()}' could not be resampled onto '{volume_node.GetName()}'")
    array = np.zeros(geometry.shape, bool)
    e = output.GetExtent()
    if output.GetPointData().GetScalars() is not None and e[0] <= e[1] and e[2] <= e[3] and e[4] <= e[5]:
        values = numpy_support.vtk_to_numpy(output.GetPointData().GetScalars()).reshape(
            e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)
        lo = [max(e[2 * a], 0) for a in range(3)]  # x, y, z
        hi = [min(e[2 * a + 1], geometry.size[a] - 1) for a in range(3)]
        if all(l <= h for l, h in zip(lo, hi)):
            array[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = values[
                lo[2] - e[4]:hi[2] - e[4] + 1, lo[1] - e[2]:hi[1] - e[2] + 1, lo[0] - e[0]:hi[0] - e[0] + 1] > 0
    return Image(array, geometry, mask_node.GetName())


def _transform_name(transform_node) -> str:
    return f"the transform '{transform_node.GetName()}'" if transform_node is not None else "no transform"


def mask_image_from_node(mask_node, volume_node, role: str, notes: Optional[list] = None) -> Image:
    """A boolean mask (voxels above 0 / any visible segment) in its volume's frame, read where it is shown.

    Args:
        mask_node: label map or scalar volume node (read on its own grid when it is in the volume's frame,
            else resampled where it is shown onto the volume's grid), or Segmentation node (its visible
            segments, exported onto ``volume_node``'s grid).
        volume_node: the fixed or moving volume the mask belongs to.
        role: "fixed mask" or "moving mask" (messages).
        notes: a list that gets one line per thing the run log should say (segments used and hidden, a
            mask read where it is shown).

    Raises:
        VolumeNodeError: wrong node type, a scan (not a mask), every segment hidden, or an empty mask.
    """
    name = mask_node.GetName()
    shown_elsewhere = not in_volume_frame(mask_node, volume_node)
    lines = []
    if mask_node.IsA("vtkMRMLSegmentationNode"):
        image, used = labelmap_from_segmentation(mask_node, volume_node, role)
        _, hidden = visible_segments(mask_node, role)
        lines.append(f"{role} '{name}': segments used: {', '.join(s.name for s in used)}"
                     + (f"; hidden, left out: {', '.join(hidden)}" if hidden else " (every segment; none is hidden)"))
    elif mask_node.IsA("vtkMRMLScalarVolumeNode"):
        image = image_from_volume_node(mask_node, role, dtype=None)
        _check_not_a_scan(image.array, mask_node, role)
        if shown_elsewhere:
            image = _resampled_where_shown(image.array > 0, mask_node, volume_node)
    else:
        raise VolumeNodeError(f"{role} '{name}' is a {mask_node.GetClassName()}; choose a label map, "
                              "a scalar volume or a segmentation")
    where = (f"{role} '{name}' is under {_transform_name(mask_node.GetParentTransformNode())} but its volume "
             f"'{volume_node.GetName()}' under {_transform_name(registration_parent(volume_node))}")
    if shown_elsewhere:
        lines.append(f"{where}: the mask is read where it is shown, mapped into the volume's frame (put the mask "
                     "under the volume's transform if it marks the volume's voxels as stored)")
    inside = image.array > 0
    if not inside.any():
        if shown_elsewhere:
            raise VolumeNodeError(f"{where}: where it is shown, the mask marks no voxel of the volume; put the mask "
                                  "under the volume's transform if it was made on the volume's voxels, or clear the "
                                  "mask selector")
        raise VolumeNodeError(f"{role} '{name}' is empty (no voxel above 0); paint the region of "
                              "interest or clear the mask selector")
    if notes is not None:
        notes.extend(lines)
    return Image(inside, image.geometry, name)


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
#: the warped segmentation's attribute listing the hidden segments of the source, which were not warped
SEGMENTS_HIDDEN_ATTRIBUTE = "ADRegNet.segmentsHidden"


def warp_segmentation(segmentation_node, transform_node, moving_volume_node, fixed_volume_node,
                      name: Optional[str] = None):
    """A new Segmentation node: the visible segments of ``segmentation_node`` (on the moving volume) warped onto
    the fixed volume.

    Args:
        segmentation_node: Segmentation of the moving volume, read where it is shown (module docstring): in the
            moving volume's transform, or none when the moving volume had none before it was shown registered.
        transform_node: an AD-RegNet result grid transform (fixed -> moving, "from parent").
        moving_volume_node, fixed_volume_node: the registered pair.
        name: name of the new node (default: "<segmentation> warped").

    Returns:
        The new vtkMRMLSegmentationNode with the same segment names and colours, on the fixed grid; its
        attributes name the hidden segments left out (``SEGMENTS_HIDDEN_ATTRIBUTE``) and the segments that
        have no voxel there (``SEGMENTS_NOT_WARPED_ATTRIBUTE``), and a warning says so.
    """
    import slicer

    from .transform import field_from_grid_transform_node

    disp, geometry = field_from_grid_transform_node(transform_node)
    labels, segments = labelmap_from_segmentation(segmentation_node, moving_volume_node, "segmentation to warp")
    _, hidden = visible_segments(segmentation_node)
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
        if hidden:  # what you see is what is warped: said, not dropped silently
            output.SetAttribute(SEGMENTS_HIDDEN_ATTRIBUTE, ", ".join(hidden))
            warnings.warn(f"'{output.GetName()}': {len(hidden)} hidden segment(s) of '{segmentation_node.GetName()}' "
                          f"are not warped: {', '.join(hidden)} (show them and warp again to include them)", stacklevel=2)
        missing = [s.name for s in segments if s.label not in present]
        if missing:  # empty, hidden under a later segment, or warped outside the fixed volume: said, not dropped silently
            output.SetAttribute(SEGMENTS_NOT_WARPED_ATTRIBUTE, ", ".join(missing))
            warnings.warn(f"'{output.GetName()}': {len(missing)} segment(s) of '{segmentation_node.GetName()}' have no "
                          f"voxel on the fixed volume and are left out: {', '.join(missing)} (empty, covered by a later "
                          "segment, or moved outside the fixed volume)", stacklevel=2)
    return output
