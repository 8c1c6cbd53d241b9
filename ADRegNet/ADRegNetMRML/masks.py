r"""Masks from label map, scalar volume or Segmentation nodes, and warping a Segmentation moving -> fixed.

Where a mask is read (one rule for label maps, volumes and segmentations, the rule of Slicer's own
segmentation export): **a mask marks the anatomy shown under it.** A mask in its volume's frame is read
on its own grid as stored: under the transform the volume is under now, or under the one it had before
this module showed it registered (``registration_parent``; or, like the volume then, under none). So a
mask or a segmentation made with the moving volume is read as stored whether it is chosen before or
after Apply shows the volume registered; the module never moves it. Any other mask (a label map left
out of the moving volume's starting transform, a segmentation painted over the transformed moving
volume) is read where it is shown: mapped through the transforms between them into the volume's frame
(while the volume is shown registered: its frame as it was before registration), onto the volume's grid.
The run log, a warning, an attribute of the output (``READ_WHERE_SHOWN_ATTRIBUTE``) and the panel say
when a mask or the segmentation to warp was read where it is shown, and how to have it read as stored.

Resampling a mask shown elsewhere is what the engine does with a mask on another grid (``map_mask``):
linear interpolation of the indicator, kept above one half, so its boundary lands at the same physical
place whatever the two grids (nearest neighbour moved it by up to a voxel and lost thin structures).
Labels (Warp segmentation) go through Slicer's export onto the volume's grid (nearest neighbour).

**Segments used:** the visible ones (the eye in the Segmentations module; hiding the whole node does
not count), as Slicer's "Export visible segments"; hidden segments are left out, and the run log (a
mask) or the warped segmentation's attribute and warning (Warp segmentation) name them.

Exports go through temporary nodes, hidden from editors from the start, that are removed again with
everything the export added, whatever happens, so the scene's node set is unchanged.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image

from .frames import ROLE_ATTRIBUTE, check_result_volumes, is_result_transform, registration_parent
from .geometry import VolumeNodeError, image_from_volume_node, volume_node_from_image
from .maskresample import export_segments, resampled_where_shown, temporary_labelmap
from .nodes import rollback_on_error, temporary_nodes

__all__ = ["MASK_NODE_CLASSES", "SegmentInfo", "visible_segments", "labelmap_from_segmentation", "in_volume_frame",
           "read_where_shown", "mask_image_from_node", "warp_label_image", "warp_segmentation",
           "SEGMENTS_NOT_WARPED_ATTRIBUTE", "SEGMENTS_HIDDEN_ATTRIBUTE", "READ_WHERE_SHOWN_ATTRIBUTE"]

#: node classes a mask selector accepts (label map volumes are scalar volumes too)
MASK_NODE_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode")
#: attribute of an output (the result transform, a warped segmentation): the masks or the segmentation read
#: where they are shown rather than as stored (:func:`read_where_shown`'s sentences, "; " between them)
READ_WHERE_SHOWN_ATTRIBUTE = "ADRegNet.readWhereShown"


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
    """True when ``node`` sits in its volume's frame: the volume's transform now, or the one it had before this
    module showed it registered (then a mask made with the volume is read as stored: module docstring)."""
    parent = node.GetParentTransformNode()
    return parent is volume_node.GetParentTransformNode() or parent is registration_parent(volume_node)


def _frame(node, volume_node):
    """The transform the volume's voxels are read under for ``node``: its own when in the volume's frame (no
    mapping), else the volume's registration frame (``registration_parent``)."""
    return node.GetParentTransformNode() if in_volume_frame(node, volume_node) else registration_parent(volume_node)


def _transform_name(transform_node) -> str:
    return f"the transform '{transform_node.GetName()}'" if transform_node is not None else "no transform"


def _noun(role: str) -> str:
    return "segmentation" if "segmentation" in role else "mask"


def _shown_registered(volume_node) -> bool:
    """The volume is under a registration result other than its registration frame (shown registered)."""
    parent = volume_node.GetParentTransformNode()
    return is_result_transform(parent) and parent is not registration_parent(volume_node)


def _where(node, volume_node, role: str) -> str:
    """'<role> 'name' is under ... but its volume 'name' under ...' (while shown registered: the result it is
    shown under and the transform it had before, its frame)."""
    parent = volume_node.GetParentTransformNode()
    head = f"{role} '{node.GetName()}' is under {_transform_name(node.GetParentTransformNode())} but its volume "
    if _shown_registered(volume_node):
        return (head + f"'{volume_node.GetName()}' was under {_transform_name(registration_parent(volume_node))} "
                f"before registration (it is shown registered, under the result '{parent.GetName()}')")
    return head + f"'{volume_node.GetName()}' under {_transform_name(parent)}"


def _fix(volume_node, role: str) -> str:
    """What makes a mask be read as stored: under the volume's (starting) transform; out of any when it has none
    (the fixed volume never has one)."""
    frame = registration_parent(volume_node)
    if frame is None:
        return f"take the {_noun(role)} out of its transform"
    return f"put the {_noun(role)} under the volume's transform '{frame.GetName()}'"


def _read_as_stored_before_registration(node, volume_node, role: str) -> Optional[str]:
    """The run log's line for a mask in the starting frame of a volume shown registered; None otherwise."""
    if node.GetParentTransformNode() is volume_node.GetParentTransformNode() or not _shown_registered(volume_node):
        return None
    return (f"{role} '{node.GetName()}' is under {_transform_name(node.GetParentTransformNode())}, as the moving volume "
            f"'{volume_node.GetName()}' was before registration: read as stored, on the volume as it was before "
            "registration")


def read_where_shown(node, volume_node, role: str) -> Optional[str]:
    """None when ``node`` is read as stored (in its volume's frame), else the sentence saying that it is read
    where it is shown and how to have it read as stored (the run log, warnings, ``READ_WHERE_SHOWN_ATTRIBUTE``).

    Args:
        node: a mask or segmentation node.
        volume_node: the volume it belongs to.
        role: "fixed mask", "moving mask", "segmentation to warp" (messages).
    """
    if node is None or volume_node is None or in_volume_frame(node, volume_node):
        return None
    frame = "volume's frame as it was before registration" if _shown_registered(volume_node) else "volume's frame"
    return (f"{_where(node, volume_node, role)}: the {_noun(role)} is read where it is shown, mapped into the "
            f"{frame} ({_fix(volume_node, role)} if it marks the volume's voxels as stored)")


def labelmap_from_segmentation(segmentation_node, reference_volume_node,
                               role: str = "segmentation") -> tuple[Image, list[SegmentInfo]]:
    """The visible segments of a Segmentation node as one label map on the reference volume's grid, in its frame.

    Args:
        segmentation_node: vtkMRMLSegmentationNode.
        reference_volume_node: the volume whose grid and frame the labels are exported on; a segmentation
            outside that frame is read where it is shown (module docstring; Slicer's export, nearest neighbour).
        role: what the segmentation is for (messages).

    Returns:
        ((Z, Y, X) int64 label image in LPS, where visible segment k of the list has label k + 1 and 0 is
        background; where segments overlap the later one wins), the segments used.

    Raises:
        VolumeNodeError: no segments, none visible, or the export failed.
    """
    ids, _ = visible_segments(segmentation_node, role)
    segmentation = segmentation_node.GetSegmentation()
    segments = []
    for k, segment_id in enumerate(ids):
        segment = segmentation.GetSegment(segment_id)
        segments.append(SegmentInfo(k + 1, segment_id, segment.GetName(), tuple(float(c) for c in segment.GetColor())))
    with temporary_nodes(segmentation_node.GetScene()):
        image, _ = export_segments(segmentation_node, ids, reference_volume_node,
                                   _frame(segmentation_node, reference_volume_node))
    return Image(image.array, image.geometry, segmentation_node.GetName()), segments


def _segmentation_inside(mask_node, ids: list[str], volume_node, shown_elsewhere: bool) -> Image:
    """Any of the segments ``ids``, as a bool image on the volume's grid in its frame: exported there when in
    the volume's frame, else exported on its own grid and resampled where it is shown like a label map."""
    with temporary_nodes(mask_node.GetScene()):
        if not shown_elsewhere:
            image, _ = export_segments(mask_node, ids, volume_node, mask_node.GetParentTransformNode())
            return Image(image.array > 0, image.geometry, mask_node.GetName())
        own, labelmap = export_segments(mask_node, ids, None)  # on its own grid, under its transform
        return resampled_where_shown(own.array > 0, labelmap, mask_node.GetParentTransformNode(), volume_node,
                                     mask_node.GetName())


def mask_image_from_node(mask_node, volume_node, role: str, notes: Optional[list] = None,
                         shown: Optional[list] = None) -> Image:
    """A boolean mask (voxels above 0 / any visible segment) in its volume's frame, read where it is shown.

    Args:
        mask_node: label map or scalar volume node (read on its own grid when it is in the volume's frame,
            else resampled where it is shown onto the volume's grid), or Segmentation node (its visible
            segments, on ``volume_node``'s grid).
        volume_node: the fixed or moving volume the mask belongs to.
        role: "fixed mask" or "moving mask" (messages).
        notes: a list that gets one line per thing the run log should say (segments used and hidden, a
            mask read where it is shown: :func:`read_where_shown`).
        shown: a list that gets :func:`read_where_shown`'s sentence when the mask is read where it is shown.

    Raises:
        VolumeNodeError: wrong node type, a scan (not a mask), every segment hidden, or an empty mask.
    """
    name = mask_node.GetName()
    if not any(mask_node.IsA(c) for c in MASK_NODE_CLASSES):
        raise VolumeNodeError(f"{role} '{name}' is a {mask_node.GetClassName()}; choose a label map, "
                              "a scalar volume or a segmentation")
    shown_elsewhere = read_where_shown(mask_node, volume_node, role)
    lines = []
    if mask_node.IsA("vtkMRMLSegmentationNode"):
        ids, hidden = visible_segments(mask_node, role)
        image = _segmentation_inside(mask_node, ids, volume_node, shown_elsewhere is not None)
        used = [mask_node.GetSegmentation().GetSegment(i).GetName() for i in ids]
        lines.append(f"{role} '{name}': segments used: {', '.join(used)}"
                     + (f"; hidden, left out: {', '.join(hidden)}" if hidden else " (every segment; none is hidden)"))
    else:
        image = image_from_volume_node(mask_node, role, dtype=None)
        _check_not_a_scan(image.array, mask_node, role)
        if shown_elsewhere:
            image = resampled_where_shown(image.array > 0, mask_node, mask_node.GetParentTransformNode(),
                                          volume_node, name)
    lines.append(shown_elsewhere or _read_as_stored_before_registration(mask_node, volume_node, role))
    lines = [line for line in lines if line]
    inside = image.array > 0
    if not inside.any():
        if shown_elsewhere:
            raise VolumeNodeError(f"{_where(mask_node, volume_node, role)}: where it is shown, the mask marks no voxel "
                                  f"of the volume; {_fix(volume_node, role)} if it was made on the volume's voxels, "
                                  "or clear the mask selector")
        raise VolumeNodeError(f"{role} '{name}' is empty (no voxel above 0); paint the region of "
                              "interest or clear the mask selector")
    if notes is not None:
        notes.extend(lines)
    if shown is not None and shown_elsewhere:
        shown.append(shown_elsewhere)
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
        segmentation_node: Segmentation of the moving volume, read where it is shown (module docstring): as
            stored in the moving volume's frame (its transform, or the one it had before it was shown
            registered), else mapped from where it is shown; the output's ``READ_WHERE_SHOWN_ATTRIBUTE`` and a warning then say so.
        transform_node: an AD-RegNet result grid transform (fixed -> moving, "from parent").
        moving_volume_node, fixed_volume_node: the registered pair.
        name: name of the new node (default: "<segmentation> warped").

    Returns:
        The new vtkMRMLSegmentationNode with the same segment names and colours, on the fixed grid; its
        attributes name the hidden segments left out (``SEGMENTS_HIDDEN_ATTRIBUTE``), the segments that
        have no voxel there (``SEGMENTS_NOT_WARPED_ATTRIBUTE``) and a segmentation read where it is shown
        (``READ_WHERE_SHOWN_ATTRIBUTE``), and a warning says each.

    Raises:
        VolumeNodeError: ``transform_node`` is the result of registering other volumes (nothing is added).
    """
    import slicer

    from .transform import field_from_grid_transform_node

    check_result_volumes(transform_node, f"warp a segmentation of '{moving_volume_node.GetName()}' onto "
                         f"'{fixed_volume_node.GetName()}'", fixed_volume_node, moving_volume_node)
    disp, geometry = field_from_grid_transform_node(transform_node)
    role = "segmentation to warp"
    shown_elsewhere = read_where_shown(segmentation_node, moving_volume_node, role)
    labels, segments = labelmap_from_segmentation(segmentation_node, moving_volume_node, role)
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
                                              node=temporary_labelmap(scene, colors=False))
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
        if shown_elsewhere:  # before: warped from where it is shown with no word
            output.SetAttribute(READ_WHERE_SHOWN_ATTRIBUTE, shown_elsewhere)
            warnings.warn(f"'{output.GetName()}': {shown_elsewhere}", stacklevel=2)
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
