"""Masks read where they are shown: the rule of point lists, with the moving volume shown registered; what the
user is told; the resampling (the engine's linear rule); the temporary nodes of an export.

(test_mrml_masks.py has masks as stored, segments, and warping a segmentation.)
"""
from __future__ import annotations

import numpy as np
import pytest

from ADRegNetLib.engine.masks import map_mask
from ADRegNetLib.spatial.affine import AffineMap
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetMRML.geometry import LPS_TO_RAS, VolumeNodeError, volume_node_from_image
from ADRegNetMRML.logic import ADRegNetMRMLLogic
from ADRegNetMRML.masks import (READ_WHERE_SHOWN_ATTRIBUTE, labelmap_from_segmentation, mask_image_from_node,
                                warp_segmentation)
from mrml_helpers import AnalyticEngine, blob_image, node_ids, oblique_geometry, rotation, voxel_centres

FIXED = oblique_geometry()
MOVING = oblique_geometry(size=(16, 14, 12), spacing=(1.4, 1.0, 2.2), origin=(-30.0, 13.0, 47.0))


def _linear(scene, name, rotation_ras=np.eye(3), translation_ras=(0.0, 0.0, 0.0)):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, float(rotation_ras[r, c]))
        matrix.SetElement(r, 3, float(translation_ras[r]))
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(matrix)
    return node


def _label_map(scene, array, geometry, name):
    return volume_node_from_image(scene, Image(np.asarray(array, np.uint8), geometry, name), name=name,
                                  class_name="vtkMRMLLabelMapVolumeNode")


def _segmentation(scene, array, geometry, name):
    import slicer

    labels = _label_map(scene, array, geometry, "l")
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labels, node)
    node.CreateDefaultDisplayNodes()
    scene.RemoveNode(labels)
    return node


def _ball(geometry, centre_lps, radius):
    return (np.linalg.norm(voxel_centres(geometry) - np.asarray(centre_lps), axis=-1) < radius).astype(np.uint8)


def _shown_registered(scene, start: bool):
    """Fixed and moving volumes registered, the moving one (with a starting shift when ``start``) shown under the
    result R. Returns fixed, moving, R."""
    fixed = volume_node_from_image(scene, blob_image(FIXED, "fixed"), name="fixed")
    moving = volume_node_from_image(scene, blob_image(MOVING, "moving"), name="moving")
    if start:
        moving.SetAndObserveTransformNodeID(_linear(scene, "A", translation_ras=(2.0, 0.0, 0.0)).GetID())
    logic = ADRegNetMRMLLogic(scene, runner=AnalyticEngine())
    result = logic.registerNodes(fixed, moving).transformNode
    logic.setMovingUnderTransform(moving, result, True)
    assert moving.GetParentTransformNode() is result
    return fixed, moving, result


def test_a_mask_beside_the_registered_volume_is_read_in_its_frame_as_before_registration(scene):
    """With the moving volume shown registered (under the result R, starting transform A), a mask under no transform
    is mapped into the volume's frame as it was before registration (through A, not R): read the same whether the
    volume is shown registered or not, and the note says so (4c40e80 read it through R, and moved masks under R)."""
    fixed, moving, result = _shown_registered(scene, start=True)
    start = moving.GetNodeReference("ADRegNet.previousParent")
    assert start is not None and start.GetName() == "A"
    mask = _label_map(scene, _ball(MOVING, MOVING.center(), 4.0), MOVING, "painted")  # no transform
    notes = []
    shown = mask_image_from_node(mask, moving, "moving mask", notes).array
    assert notes == ["moving mask 'painted' is under no transform but its volume 'moving' was under the transform 'A' "
                     f"before registration (it is shown registered, under the result '{result.GetName()}'): the mask "
                     "is read where it is shown, mapped into the volume's frame as it was before registration (put the "
                     "mask under the volume's transform 'A' if it marks the volume's voxels as stored)"]
    ADRegNetMRMLLogic.setMovingUnderTransform(moving, result, False)
    assert moving.GetParentTransformNode() is start and mask.GetParentTransformNode() is None
    np.testing.assert_array_equal(mask_image_from_node(mask, moving, "moving mask").array, shown)


def test_without_a_starting_transform_a_mask_beside_the_registered_volume_is_read_as_stored(scene):
    """With no starting transform, a mask under no transform is in the moving volume's frame as it was before
    registration: read as stored, shown registered or not (the run log says how it is read; no warning)."""
    import warnings

    fixed, moving, result = _shown_registered(scene, start=False)
    stored = _ball(MOVING, MOVING.center() + [1.0, 2.0, 0.0], 5.0)
    mask = _label_map(scene, stored, MOVING, "beside")
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = mask_image_from_node(mask, moving, "moving mask", notes).array
    np.testing.assert_array_equal(got, stored > 0)
    assert notes == ["moving mask 'beside' is under no transform, as the moving volume 'moving' was before "
                     "registration: read as stored, on the volume as it was before registration"]


def _linear_lookup(array, index_xyz):
    """Trilinear interpolation of a (Z, Y, X) array at continuous (x, y, z) indices, 0 outside."""
    from scipy.ndimage import map_coordinates

    return map_coordinates(array, index_xyz[:, ::-1].T, order=1, mode="constant", cval=0.0)


def test_showing_the_volume_registered_never_moves_its_masks(scene):
    """4c40e80 moved masks under the result along with the volume and did not always put them back (a mask
    deselected meanwhile stayed 7 mm off its anatomy). Now only the volume and its point list move; masks in
    its starting transform stay there, read as stored; hiding puts the volume back under A."""
    fixed = volume_node_from_image(scene, blob_image(FIXED, "fixed"), name="fixed")
    moving = volume_node_from_image(scene, blob_image(MOVING, "moving"), name="moving")
    start = _linear(scene, "A", translation_ras=(2.0, 0.0, 0.0))
    moving.SetAndObserveTransformNodeID(start.GetID())
    ball = _ball(MOVING, MOVING.center(), 5.0)
    label_map, segmentation = _label_map(scene, ball, MOVING, "lm"), _segmentation(scene, ball, MOVING, "seg")
    for node in (label_map, segmentation):
        node.SetAndObserveTransformNodeID(start.GetID())
    logic = ADRegNetMRMLLogic(scene, runner=AnalyticEngine())
    result = logic.registerNodes(fixed, moving).transformNode
    logic.setMovingUnderTransform(moving, result, True)
    assert [n.GetParentTransformNode() for n in (moving, label_map, segmentation)] == [result, start, start]
    for node in (label_map, segmentation):  # still read as stored
        notes = []
        np.testing.assert_array_equal(mask_image_from_node(node, moving, "moving mask", notes).array, ball > 0)
        assert not any("where it is shown" in n for n in notes)
        assert any("as the moving volume 'moving' was before registration: read as stored" in n for n in notes)
    logic.setMovingUnderTransform(moving, result, False)
    assert [n.GetParentTransformNode() for n in (moving, label_map, segmentation)] == [start, start, start]


def test_the_user_is_told_when_a_mask_or_the_segmentation_to_warp_is_read_where_it_is_shown(scene):
    """Before: Warp segmentation mapped a segmentation from outside the moving volume's frame with no message, and a
    label-map mask there got only a run-log line."""
    fixed = volume_node_from_image(scene, blob_image(FIXED, "fixed"), name="fixed")
    moving = volume_node_from_image(scene, blob_image(MOVING, "moving"), name="moving")
    ball = _ball(MOVING, MOVING.center(), 5.0)
    segmentation = _segmentation(scene, ball, MOVING, "organ")
    mask = _label_map(scene, ball, MOVING, "roi")
    logic = ADRegNetMRMLLogic(scene, runner=AnalyticEngine())
    moving.SetAndObserveTransformNodeID(_linear(scene, "A", translation_ras=(3.0, 0.0, 0.0)).GetID())
    said = "is under no transform but its volume 'moving' under the transform 'A'"
    with pytest.warns(UserWarning, match=f"moving mask 'roi' {said}: the mask is read where it is shown"):
        out = logic.registerNodes(fixed, moving, movingMaskNode=mask)
    assert len(out.notes) == 1 and said in out.notes[0]
    assert out.transformNode.GetAttribute(READ_WHERE_SHOWN_ATTRIBUTE) == out.notes[0]
    assert said in out.logNode.GetText()
    with pytest.warns(UserWarning, match=f"'organ warped': segmentation to warp 'organ' {said}: the segmentation is "
                                         "read where it is shown, mapped into the volume's frame \\(put the "
                                         "segmentation under the volume's transform 'A' if it marks"):
        warped = warp_segmentation(segmentation, out.transformNode, moving, fixed)
    assert said in warped.GetAttribute(READ_WHERE_SHOWN_ATTRIBUTE)
    mask.SetAndObserveTransformNodeID(moving.GetParentTransformNode().GetID())  # in its frame: nothing to say
    again = logic.registerNodes(fixed, moving, movingMaskNode=mask, outputTransformNode=out.transformNode)
    assert again.notes == [] and again.transformNode.GetAttribute(READ_WHERE_SHOWN_ATTRIBUTE) is None


def test_a_mask_shown_elsewhere_is_resampled_as_the_engine_maps_masks(scene):
    """Before: nearest neighbour, which moved the boundary by up to a mask voxel; the engine's map_mask interpolates
    the indicator linearly and keeps it above one half. A coarse oblique mask under a rotation, on a finer oblique
    volume, must come out as map_mask gives it."""
    volume_geometry = oblique_geometry(size=(40, 36, 30), spacing=(0.7, 0.8, 0.9), origin=(-14.0, -12.0, -9.0),
                                       angles=(0.1, 0.2, -0.3))
    volume = volume_node_from_image(scene, blob_image(volume_geometry, "v"), name="volume")
    centre = volume_geometry.center()
    size, spacing, direction = np.array([16, 14, 11]), np.array([2.1, 2.5, 3.0]), rotation(-0.3, 0.25, 0.2)
    coarse = Geometry(tuple(size), tuple(spacing), tuple(centre - direction @ ((size - 1) / 2 * spacing)), direction)
    stored = _ball(coarse, centre + [1.0, -1.5, 0.5], 7.0) | _ball(coarse, centre + [-6.0, 4.0, 1.0], 2.6)
    rot_ras, shift_ras = rotation(0.15, -0.1, 0.2), np.array([1.5, -2.0, 1.0])
    shown_under = _linear(scene, "T", rot_ras, shift_ras)
    for make in (_label_map, _segmentation):
        mask = make(scene, stored, coarse, make.__name__)
        mask.SetAndObserveTransformNodeID(shown_under.GetID())
        got = mask_image_from_node(mask, volume, "fixed mask").array
        # the volume voxel p shows the mask's local T^-1(p): in LPS, F (R^T (F p - t))
        to_mask = np.eye(4)
        to_mask[:3, :3] = LPS_TO_RAS @ rot_ras.T @ LPS_TO_RAS
        to_mask[:3, 3] = -(LPS_TO_RAS @ rot_ras.T @ shift_ras)
        expected = map_mask(Image(stored, coarse, "m"), volume_geometry, "fixed mask", "volume",
                            affine=AffineMap.from_homogeneous(to_mask))
        assert expected.sum() > 2000
        assert np.count_nonzero(got != expected) <= 3, np.count_nonzero(got != expected)  # nearest: 463


def _record_added(scene):
    """(class, name, hidden from editors) of every node added from now on, as it is added."""
    import vtk

    added = []

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def on_added(caller, event, node):
        added.append((node.GetClassName(), node.GetName(), node.GetHideFromEditors()))

    return added, scene.AddObserver(scene.NodeAddedEvent, on_added)


def test_temporary_nodes_are_hidden_from_the_start_and_removed_on_every_path(scene, monkeypatch):
    """Before: the temporary reference volume was added visible (AddNewNodeByClass): it showed in the volume
    selectors for a moment, as did the colour table Slicer's export adds."""
    import slicer

    slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)  # as in Slicer (the export asks for it)
    fixed = volume_node_from_image(scene, blob_image(FIXED, "fixed"), name="fixed")
    moving = volume_node_from_image(scene, blob_image(MOVING, "moving"), name="moving")
    ball = _ball(MOVING, MOVING.center(), 5.0)
    segmentation = _segmentation(scene, ball, MOVING, "organ")
    result = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(fixed, moving).transformNode
    segmentation.SetAndObserveTransformNodeID(_linear(scene, "shift", translation_ras=(1.0, 0.0, 0.0)).GetID())
    ids = node_ids(scene)
    added, tag = _record_added(scene)
    mask_image_from_node(segmentation, moving, "moving mask")  # exported on its own grid, resampled
    labelmap_from_segmentation(segmentation, fixed)  # exported onto a reference grid
    assert node_ids(scene) == ids
    with pytest.warns(UserWarning):
        warped = warp_segmentation(segmentation, result, moving, fixed)
    scene.RemoveObserver(tag)
    temporary = [a for a in added if a[1] != warped.GetName() and "SegmentationDisplay" not in a[0]]
    assert {a[1] for a in temporary} >= {"ADRegNet temporary reference", "ADRegNet temporary labels"}
    assert all(hidden for _, _, hidden in temporary), [a for a in temporary if not a[2]]
    assert [i for i in node_ids(scene) if i not in ids] == [warped.GetID(), warped.GetDisplayNodeID()]

    real = slicer.vtkSlicerSegmentationsModuleLogic

    class Failing:  # the export adds its nodes, then fails
        @staticmethod
        def ExportSegmentsToLabelmapNode(*args):
            real.ExportSegmentsToLabelmapNode(*args)
            raise RuntimeError("export failed")

    monkeypatch.setattr(slicer, "vtkSlicerSegmentationsModuleLogic", Failing)
    ids = node_ids(scene)
    for read in (lambda: mask_image_from_node(segmentation, moving, "moving mask"),
                 lambda: labelmap_from_segmentation(segmentation, fixed),
                 lambda: warp_segmentation(segmentation, result, moving, fixed)):
        with pytest.raises(RuntimeError, match="export failed"):
            read()
        assert node_ids(scene) == ids

    class Refusing:
        @staticmethod
        def ExportSegmentsToLabelmapNode(*args):
            return False

    monkeypatch.setattr(slicer, "vtkSlicerSegmentationsModuleLogic", Refusing)
    with pytest.raises(VolumeNodeError, match="the visible segments of 'organ' could not be exported"):
        mask_image_from_node(segmentation, moving, "moving mask")
    assert node_ids(scene) == ids
