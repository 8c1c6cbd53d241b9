r"""Helpers of :mod:`ADRegNetMRML.masks`: exporting segments to a label map and resampling a mask where it
is shown onto a volume's grid, through temporary nodes hidden from editors.

Call them inside a :func:`ADRegNetMRML.nodes.temporary_nodes` block: it removes the temporary nodes and
whatever the export adds to the scene (a display node, a colour table) on every path, errors included.
"""
from __future__ import annotations

import numpy as np

from ADRegNetLib.spatial.image import Image

from .frames import registration_parent
from .geometry import VolumeNodeError, geometry_from_volume_node, image_from_volume_node
from .nodes import add_hidden_node

__all__ = ["temporary_labelmap", "export_segments", "resampled_where_shown"]


def temporary_labelmap(scene, colors: bool = True):
    """A label map node, hidden from editors, with a hidden display node.

    Args:
        scene: vtkMRMLScene.
        colors: give it a hidden user colour table, for an export to fill (else Slicer's export adds a visible
            '<segmentation>_ColorTable' node); False for an import, which would otherwise name the segments
            after the table and keep a reference to it.
    """
    display = add_hidden_node(scene, "vtkMRMLLabelMapVolumeDisplayNode", "ADRegNet temporary labels display")
    if colors:
        table = add_hidden_node(scene, "vtkMRMLColorTableNode", "ADRegNet temporary colors")
        table.SetTypeToUser()
        table.SetNumberOfColors(1)
        table.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
        display.SetAndObserveColorNodeID(table.GetID())
    labels = add_hidden_node(scene, "vtkMRMLLabelMapVolumeNode", "ADRegNet temporary labels")
    labels.SetAndObserveDisplayNodeID(display.GetID())
    return labels


def _reference_node(scene, volume_node, frame):
    """A temporary volume node, hidden from editors, with ``volume_node``'s grid (no voxels) under the transform
    ``frame`` (None: none): where an export lands."""
    import vtk

    node = add_hidden_node(scene, "vtkMRMLScalarVolumeNode", "ADRegNet temporary reference")
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    grid = vtk.vtkImageData()
    grid.SetExtent(volume_node.GetImageData().GetExtent())
    node.SetAndObserveImageData(grid)
    node.SetAndObserveTransformNodeID(frame.GetID() if frame is not None else None)
    return node


def export_segments(segmentation_node, ids: list[str], reference_volume_node, frame=None):
    """Export segments as one label map, inside a ``temporary_nodes`` block.

    Args:
        segmentation_node: vtkMRMLSegmentationNode.
        ids: the IDs of the segments to export; segment k of the list gets label k + 1.
        reference_volume_node: export onto this volume's grid, placed under ``frame`` (Slicer maps the
            segmentation from where it is shown, nearest neighbour); None: on the segmentation's own grid,
            under its transform (no resampling).
        frame: the transform node the volume's voxels are read under (None: none): the segmentation's own
            when it is in the volume's frame, else the volume's ``registration_parent``.

    Returns:
        ((Z, Y, X) int64 labels in LPS, the temporary label map node holding them).

    Raises:
        VolumeNodeError: the export failed or gave no voxels.
    """
    import slicer
    import vtk

    scene = segmentation_node.GetScene()
    id_array = vtk.vtkStringArray()
    for segment_id in ids:
        id_array.InsertNextValue(segment_id)
    reference = _reference_node(scene, reference_volume_node, frame) if reference_volume_node is not None else None
    labelmap = temporary_labelmap(scene)
    ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        segmentation_node, id_array, labelmap, reference)
    image_data = labelmap.GetImageData()
    if not ok or image_data is None or image_data.GetNumberOfPoints() == 0:
        raise VolumeNodeError(f"the visible segments of '{segmentation_node.GetName()}' could not be exported as a "
                              "label map (are they all empty?); paint the segments or show others")
    return image_from_volume_node(labelmap, "segmentation", dtype=np.int64), labelmap


def _oriented(ijk_to_ras, extent):
    import slicer

    image = slicer.vtkOrientedImageData()
    image.SetExtent(extent)
    image.SetGeometryFromImageToWorldMatrix(ijk_to_ras)
    return image


def resampled_where_shown(inside: np.ndarray, grid_node, source_parent, volume_node, name: str) -> Image:
    """A mask resampled where it is shown onto the volume's grid, in the volume's frame (the transform it has
    for registration, ``registration_parent``: while the module shows it registered, the one it had before).

    The indicator (bytes 0/255) is interpolated linearly and kept above 127 (Slicer's oriented-image
    resampler): the engine's ``map_mask`` rule (linear, above one half), so the boundary stays where it is
    shown whatever the two grids; nearest neighbour moved it by up to a voxel and lost thin structures.

    Args:
        inside: (Z, Y, X) bool on ``grid_node``'s grid.
        grid_node: the volume node whose grid ``inside`` is on (its IJK-to-RAS and extent).
        source_parent: the transform node the mask is shown under (None: world).
        volume_node: the volume whose grid and frame the mask is read on.
        name: the mask's name (messages).

    Returns:
        (Z, Y, X) bool image on the volume's geometry (LPS); False where the mask does not reach.
    """
    import slicer
    import vtk
    from vtk.util import numpy_support

    matrix = vtk.vtkMatrix4x4()
    grid_node.GetIJKToRASMatrix(matrix)
    e = grid_node.GetImageData().GetExtent()
    # one voxel of background around it: VTK's reslice extends the edge voxels half a voxel outwards (its
    # border mode), which grew a mask touching its grid's edge (a segment exported on its tight extent)
    source = _oriented(matrix, (e[0] - 1, e[1] + 1, e[2] - 1, e[3] + 1, e[4] - 1, e[5] + 1))
    source.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    padded = np.zeros(tuple(s + 2 for s in inside.shape), np.uint8)
    padded[1:-1, 1:-1, 1:-1] = np.where(inside, 255, 0)
    numpy_support.vtk_to_numpy(source.GetPointData().GetScalars())[:] = padded.reshape(-1)
    geometry = geometry_from_volume_node(volume_node)
    volume_matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(volume_matrix)
    reference = _oriented(volume_matrix, (0, geometry.size[0] - 1, 0, geometry.size[1] - 1, 0, geometry.size[2] - 1))
    to_frame = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(source_parent, registration_parent(volume_node), to_frame)
    output = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            source, reference, output, True, False, to_frame):
        raise VolumeNodeError(f"mask '{name}' could not be resampled onto '{volume_node.GetName()}'")
    array = np.zeros(geometry.shape, bool)
    e = output.GetExtent()
    if output.GetPointData().GetScalars() is not None and e[0] <= e[1] and e[2] <= e[3] and e[4] <= e[5]:
        values = numpy_support.vtk_to_numpy(output.GetPointData().GetScalars()).reshape(
            e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)
        lo = [max(e[2 * a], 0) for a in range(3)]  # x, y, z
        hi = [min(e[2 * a + 1], geometry.size[a] - 1) for a in range(3)]
        if all(l <= h for l, h in zip(lo, hi)):
            array[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = values[
                lo[2] - e[4]:hi[2] - e[4] + 1, lo[1] - e[2]:hi[1] - e[2] + 1, lo[0] - e[0]:hi[0] - e[0] + 1] > 127
    return Image(array, geometry, name)
