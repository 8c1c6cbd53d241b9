"""Masks from label maps, volumes and Segmentation nodes; warping a Segmentation moving -> fixed."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetLib.io.image import from_sitk, to_sitk
from ADRegNetLib.spatial.image import Image
from ADRegNetMRML.geometry import VolumeNodeError, image_from_volume_node, volume_node_from_image
from ADRegNetMRML.logic import ADRegNetMRMLLogic
from ADRegNetMRML.masks import labelmap_from_segmentation, mask_image_from_node, warp_segmentation
from mrml_helpers import AnalyticEngine, blob_image, node_ids, oblique_geometry, sitk_displacement_transform
from ADRegNetMRML.geometry import LPS_TO_RAS
from ADRegNetMRML.runlog import RunLog

LABEL_AWARE = importlib.util.find_spec("ADRegNetLib.spatial.labels") is not None


def _labels(geometry):
    labels = np.zeros(geometry.shape, np.int32)
    labels[2:8, 3:10, 4:12] = 4
    labels[5:9, 8:13, 9:16] = 7  # overlaps the first block's corner
    return labels


def _translation(ras):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        matrix.SetElement(r, 3, float(ras[r]))
    return matrix


def _segmentation(scene, geometry, name="organs"):
    import slicer

    labelmap = volume_node_from_image(scene, Image(_labels(geometry), geometry, "l"), name="l",
                                      class_name="vtkMRMLLabelMapVolumeNode")
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, node)
    segmentation = node.GetSegmentation()
    for k, (label, color) in enumerate((("liver", (0.8, 0.2, 0.1)), ("tumour", (0.1, 0.9, 0.3)))):
        segmentation.GetNthSegment(k).SetName(label)
        segmentation.GetNthSegment(k).SetColor(*color)
    scene.RemoveNode(labelmap)
    return node


@pytest.fixture
def pair(scene):
    fixed_geometry = oblique_geometry()
    moving_geometry = oblique_geometry(size=(16, 14, 12), spacing=(1.4, 1.0, 2.2), origin=(-30.0, 13.0, 47.0))
    fixed = volume_node_from_image(scene, blob_image(fixed_geometry, "fixed"), name="fixed")
    moving = volume_node_from_image(scene, blob_image(moving_geometry, "moving"), name="moving")
    return fixed, moving, fixed_geometry, moving_geometry


def test_masks_reach_the_engine_on_their_own_grids(scene, pair):
    fixed, moving, fixed_geometry, moving_geometry = pair
    coarse = fixed_geometry.with_spacing(2 * fixed_geometry.spacing)
    fixed_mask = volume_node_from_image(scene, Image(np.ones(coarse.shape, np.uint8), coarse, "m"), name="coarse mask",
                                        class_name="vtkMRMLLabelMapVolumeNode")
    moving_mask = _segmentation(scene, moving_geometry, "moving organs")
    engine = AnalyticEngine()
    ids = node_ids(scene)
    ADRegNetMRMLLogic(scene, runner=engine).registerNodes(fixed, moving, fixedMaskNode=fixed_mask,
                                                           movingMaskNode=moving_mask)
    call = engine.calls[0]
    assert call["fixed_mask"].array.dtype == np.bool_ and call["fixed_mask"].geometry.allclose(coarse, atol=1e-9)
    got = call["moving_mask"]
    assert got.geometry.allclose(moving_geometry, atol=1e-9)  # exported on the moving volume's grid
    np.testing.assert_array_equal(got.array, _labels(moving_geometry) > 0)  # any segment
    assert set(node_ids(scene)) - set(ids) and not set(ids) - set(node_ids(scene))  # no input removed
    assert not [i for i in node_ids(scene) if "temporary" in (scene.GetNodeByID(i).GetName() or "")]


def test_the_local_change_mask_reaches_the_engine(scene, pair):
    """The panel's "Local change" (a Segmentation here) reaches register() as ``local_region``, on the fixed
    volume's grid, read as the masks are."""
    fixed, moving, fixed_geometry, moving_geometry = pair
    region = _segmentation(scene, fixed_geometry, "grown lesion")
    engine = AnalyticEngine()
    ADRegNetMRMLLogic(scene, runner=engine).registerNodes(fixed, moving, localRegionNode=region)
    got = engine.calls[0]["local_region"]
    assert got.array.dtype == np.bool_ and got.geometry.allclose(fixed_geometry, atol=1e-9)
    np.testing.assert_array_equal(got.array, _labels(fixed_geometry) > 0)
    assert "fixed_mask" not in engine.calls[0]


def test_bad_masks_are_refused(scene, pair):
    fixed, moving, fixed_geometry, _ = pair
    empty = volume_node_from_image(scene, Image(np.zeros(fixed_geometry.shape, np.uint8), fixed_geometry, "e"),
                                   name="empty", class_name="vtkMRMLLabelMapVolumeNode")
    with pytest.raises(VolumeNodeError, match="fixed mask 'empty' is empty"):
        mask_image_from_node(empty, fixed, "fixed mask")
    empty.GetImageData().GetPointData().GetScalars().SetValue(0, 1)
    shifted = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    shifted.SetMatrixTransformToParent(_translation((0.0, 0.0, 500.0)))
    empty.SetAndObserveTransformNodeID(shifted.GetID())
    # before: "put the mask under the volume's transform", which the fixed volume (never under one) does not have
    with pytest.raises(VolumeNodeError, match="fixed mask 'empty' is under the transform 'shift' but its volume "
                                              "'fixed' under no transform: where it is shown, the mask marks no voxel "
                                              "of the volume; take the mask out of its transform if it was made on "
                                              "the volume's voxels, or clear the mask selector"):
        mask_image_from_node(empty, fixed, "fixed mask")
    moving.SetAndObserveTransformNodeID(shifted.GetID())  # a volume under a transform: that is where it belongs
    empty.SetAndObserveTransformNodeID(None)
    with pytest.raises(VolumeNodeError, match="moving mask 'empty' is under no transform but its volume 'moving' "
                                              "under the transform 'shift': where it is shown, the mask marks no "
                                              "voxel of the volume; put the mask under the volume's transform "
                                              "'shift' if it was made on the volume's voxels"):
        mask_image_from_node(empty, moving, "moving mask")
    moving.SetAndObserveTransformNodeID(None)
    no_segments = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "blank")
    with pytest.raises(VolumeNodeError, match="segmentation 'blank' has no segments"):
        mask_image_from_node(no_segments, moving, "moving mask")


def test_a_segment_that_does_not_reach_the_fixed_volume_is_named(scene, pair):
    """Before: Warp segmentation dropped an empty segment without a word."""
    fixed, moving, _, moving_geometry = pair
    segmentation = _segmentation(scene, moving_geometry)
    segmentation.GetSegmentation().AddEmptySegment("", "not drawn yet")
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(fixed, moving)
    with pytest.warns(UserWarning, match=r"1 segment\(s\) of 'organs' have no voxel on the fixed volume and are left "
                                         r"out: not drawn yet"):
        warped = warp_segmentation(segmentation, out.transformNode, moving, fixed)
    assert warped.GetAttribute("ADRegNet.segmentsNotWarped") == "not drawn yet"
    assert warped.GetSegmentation().GetNumberOfSegments() == 2


def test_a_scan_chosen_as_a_mask_is_refused(scene, pair):
    """Before: the fixed CT chosen as its own mask (the selector lists every volume) was read as 'voxels above
    0', which left out all air and lung: the lung pair's TRE 0.29 -> 1.08 mm, with no word."""
    fixed, _, fixed_geometry, _ = pair
    ct_like = np.round(blob_image(fixed_geometry, "ct").array * 1400.0 - 1000.0).astype(np.int16)
    scan = volume_node_from_image(scene, Image(ct_like, fixed_geometry, "ct"), name="the CT")
    assert len(np.unique(ct_like)) > 64 and ct_like.min() < 0
    with pytest.raises(VolumeNodeError, match=r"fixed mask 'the CT' holds \d+ distinct values \(from -\d+ to \d+\): it "
                                              r"looks like a scan, not a mask; choose a label map or a segmentation"):
        mask_image_from_node(scan, fixed, "fixed mask")
    labels = volume_node_from_image(scene, Image(_labels(fixed_geometry), fixed_geometry, "l"), name="labels")
    assert mask_image_from_node(labels, fixed, "fixed mask").array.sum() == (_labels(fixed_geometry) > 0).sum()


def test_segmentation_is_warped_onto_the_fixed_grid_with_its_names_and_colours(scene, pair):
    fixed, moving, fixed_geometry, moving_geometry = pair
    segmentation = _segmentation(scene, moving_geometry)
    out = ADRegNetMRMLLogic(scene, runner=AnalyticEngine()).registerNodes(fixed, moving)
    source_labels, segments = labelmap_from_segmentation(segmentation, moving)
    ids = node_ids(scene)
    warped = warp_segmentation(segmentation, out.transformNode, moving, fixed)
    assert [i for i in node_ids(scene) if i not in ids][0] == warped.GetID()
    assert warped.GetName() == "organs warped" and warped.GetAttribute("ADRegNet.role") == "warped-segmentation"
    result = warped.GetSegmentation()
    names = [result.GetNthSegment(k).GetName() for k in range(result.GetNumberOfSegments())]
    assert sorted(names) == ["liver", "tumour"]
    tumour = result.GetSegment(result.GetSegmentIdBySegmentName("tumour"))
    assert tuple(round(c, 6) for c in tumour.GetColor()) == (0.1, 0.9, 0.3)
    labels, _ = labelmap_from_segmentation(warped, fixed)
    assert labels.geometry.allclose(fixed_geometry, atol=1e-9)
    # independent reference: SimpleITK nearest-neighbour resampling through the same field
    reference = sitk.Resample(to_sitk(Image(source_labels.array.astype(np.int32), moving_geometry, "l")),
                              to_sitk(image_from_volume_node(fixed)),
                              sitk_displacement_transform(out.result.disp_mm, fixed_geometry), sitk.sitkNearestNeighbor, 0)
    expected = from_sitk(reference, dtype=None).array
    by_name = {s.name: s.label for s in segments}
    new_label = {result.GetNthSegment(k).GetName(): k + 1 for k in range(result.GetNumberOfSegments())}
    for name in ("liver", "tumour"):
        a, b = labels.array == new_label[name], expected == by_name[name]
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice >= (0.9 if LABEL_AWARE else 0.999), (name, dice)
    src_ids = [segmentation.GetSegmentation().GetNthSegmentID(k) for k in range(2)]
    assert src_ids == [s.segment_id for s in segments]  # the input segmentation is unchanged


def _started(scene, moving, moving_geometry, steps: int = 3):
    """Put the moving volume under a starting transform that shifts it by ``steps`` voxels along its first axis."""
    shift_ras = LPS_TO_RAS @ (moving_geometry.direction[:, 0] * moving_geometry.spacing[0] * steps)
    start = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "start")
    start.SetMatrixTransformToParent(_translation(shift_ras))
    moving.SetAndObserveTransformNodeID(start.GetID())
    return start


def test_label_maps_and_segmentations_are_read_where_they_are_shown(scene, pair):
    """Before: a label map left out of the moving volume's starting transform was read as if it were in it (3
    voxels off what the views showed under it), while a segmentation there was read where it is shown. Now both
    are read where they are shown; a mask in the volume's transform is read as stored."""
    fixed, moving, _, moving_geometry = pair
    stored = _labels(moving_geometry) > 0
    start = _started(scene, moving, moving_geometry, steps=3)
    shown = np.zeros_like(stored)
    shown[:, :, :-3] = stored[:, :, 3:]  # moving voxel p is shown 3 voxels on, where the mask holds stored[p + 3]
    label_map = volume_node_from_image(scene, Image(stored.astype(np.uint8), moving_geometry, "m"), name="label map",
                                       class_name="vtkMRMLLabelMapVolumeNode")
    segmentation = _segmentation(scene, moving_geometry, "painted")
    for node in (label_map, segmentation):  # not under the starting transform: shown 3 voxels off the stored mask
        notes = []
        got = mask_image_from_node(node, moving, "moving mask", notes)
        assert got.geometry.allclose(moving_geometry, atol=1e-6)
        np.testing.assert_array_equal(got.array, shown)
        assert any("is under no transform but its volume 'moving' under the transform 'start': the mask is read "
                   "where it is shown" in n for n in notes), notes
    for node in (label_map, segmentation):  # in the volume's transform: as stored
        node.SetAndObserveTransformNodeID(start.GetID())
        notes = []
        np.testing.assert_array_equal(mask_image_from_node(node, moving, "moving mask", notes).array, stored)
        assert not any("where it is shown" in n for n in notes)


def test_masks_and_warping_read_a_moving_volume_shown_registered_as_stored(scene, pair):
    """Before: once the module showed the moving volume registered (under the result), a segmentation of it was
    exported through the result transform: Warp segmentation warped it twice, a second run's mask was deformed.
    It stays where it is (the module never moves it), in the volume's frame as it was before registration: read
    as stored, with no warning (the run log says how it is read)."""
    import warnings

    fixed, moving, _, moving_geometry = pair
    segmentation = _segmentation(scene, moving_geometry)
    logic = ADRegNetMRMLLogic(scene, runner=AnalyticEngine())
    out = logic.registerNodes(fixed, moving)
    expected, _ = labelmap_from_segmentation(warp_segmentation(segmentation, out.transformNode, moving, fixed), fixed)
    logic.setMovingUnderTransform(moving, out.transformNode, True)
    assert segmentation.GetParentTransformNode() is None  # not moved
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read as stored: nothing to warn about
        warped = warp_segmentation(segmentation, out.transformNode, moving, fixed)
    got, _ = labelmap_from_segmentation(warped, fixed)
    np.testing.assert_array_equal(got.array, expected.array)
    assert warped.GetAttribute("ADRegNet.readWhereShown") is None
    notes = []
    np.testing.assert_array_equal(mask_image_from_node(segmentation, moving, "moving mask", notes).array,
                                  _labels(moving_geometry) > 0)
    assert not any("where it is shown" in n for n in notes)
    assert any("is under no transform, as the moving volume 'moving' was before registration: read as stored" in n
               for n in notes), notes
    logic.setMovingUnderTransform(moving, out.transformNode, False)
    assert segmentation.GetParentTransformNode() is None and moving.GetParentTransformNode() is None


def test_hidden_segments_are_left_out_and_named(scene, pair):
    """Before: a segment hidden in the views still made up part of the mask and of the warped segmentation."""
    fixed, moving, _, moving_geometry = pair
    segmentation = _segmentation(scene, moving_geometry)
    segmentation.CreateDefaultDisplayNodes()
    display = segmentation.GetDisplayNode()
    display.SetSegmentVisibility(segmentation.GetSegmentation().GetSegmentIdBySegmentName("tumour"), False)
    engine = AnalyticEngine()
    log = RunLog()
    out = ADRegNetMRMLLogic(scene, runner=engine).registerNodes(fixed, moving, movingMaskNode=segmentation, log=log)
    liver = _labels(moving_geometry) == 4  # the tumour block overlaps the liver's corner: that corner is tumour
    np.testing.assert_array_equal(engine.calls[0]["moving_mask"].array, liver)
    assert "moving mask 'organs': segments used: liver; hidden, left out: tumour" in log.text()
    with pytest.warns(UserWarning, match=r"1 hidden segment\(s\) of 'organs' are not warped: tumour"):
        warped = warp_segmentation(segmentation, out.transformNode, moving, fixed)
    names = [warped.GetSegmentation().GetNthSegment(k).GetName()
             for k in range(warped.GetSegmentation().GetNumberOfSegments())]
    assert names == ["liver"] and warped.GetAttribute("ADRegNet.segmentsHidden") == "tumour"
    display.SetAllSegmentsVisibility(False)
    ids = node_ids(scene)
    with pytest.raises(VolumeNodeError, match=r"every segment of the moving mask 'organs' is hidden \(liver, tumour\); "
                                              r"only visible segments are used: show the segments to use"):
        ADRegNetMRMLLogic(scene, runner=engine).registerNodes(fixed, moving, movingMaskNode=segmentation)
    assert node_ids(scene) == ids
