"""Volume node <-> Image (RAS <-> LPS) on the real MRML classes."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import vtk

from ADRegNetLib.io.image import Image, to_sitk
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetMRML.geometry import (
    VolumeNodeError, image_from_volume_node, points_lps_to_ras, points_ras_to_lps, vectors_lps_to_ras,
    volume_node_from_image,
)
from mrml_helpers import blob_image, oblique_geometry


def _ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


@pytest.mark.parametrize("geometry", [
    oblique_geometry(),
    oblique_geometry(size=(9, 23, 7), spacing=(0.45, 3.1, 1.7), origin=(120.0, -300.5, -1400.25),
                     angles=(-0.6, 0.35, 2.2)),
    Geometry((10, 12, 8), [1.0, 1.0, 1.0], [0, 0, 0], np.eye(3)),
    # a left-handed (flipped) direction matrix, as in some DICOM series
    Geometry((8, 9, 10), [0.7, 0.8, 2.0], [5.0, 6.0, 7.0], np.diag([1.0, -1.0, 1.0])),
], ids=["oblique", "oblique-far-origin", "axis-aligned", "flipped"])
def test_volume_round_trip_is_exact(scene, geometry):
    image = blob_image(geometry, "round trip")
    image.array[0, 0, 0] = -7.5  # mark the first voxel (x fastest in VTK memory)
    node = volume_node_from_image(scene, image)
    back = image_from_volume_node(node, "fixed")
    np.testing.assert_array_equal(back.array, image.array)
    assert back.geometry.size == geometry.size
    np.testing.assert_allclose(back.geometry.spacing, geometry.spacing, atol=1e-12)
    np.testing.assert_allclose(back.geometry.origin, geometry.origin, atol=1e-9)
    np.testing.assert_allclose(back.geometry.direction, geometry.direction, atol=1e-12)


def test_node_voxel_positions_match_simpleitk_in_ras(scene):
    """Independent check of the LPS->RAS convention: node IJK->RAS == flip(SimpleITK index->LPS)."""
    geometry = oblique_geometry()
    image = blob_image(geometry)
    node = volume_node_from_image(scene, image)
    ijk_to_ras = _ijk_to_ras(node)
    ref = to_sitk(image)
    for ijk in [(0, 0, 0), (17, 0, 0), (3, 14, 2), (17, 14, 10), (5.5, 2.25, 7.75)]:
        lps = np.array(ref.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk]))
        ras = ijk_to_ras @ np.array([*ijk, 1.0])
        np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-9)
    # voxel value at (i, j, k) lands at array[k, j, i] on both sides
    assert node.GetImageData().GetScalarComponentAsDouble(3, 14, 2, 0) == pytest.approx(
        float(sitk.GetArrayViewFromImage(ref)[2, 14, 3]))


def test_points_and_vectors_flip_x_and_y():
    p = np.array([[1.0, -2.0, 3.0], [4.5, 5.5, -6.5]])
    np.testing.assert_array_equal(points_lps_to_ras(p), [[-1, 2, 3], [-4.5, -5.5, -6.5]])
    np.testing.assert_array_equal(points_ras_to_lps(points_lps_to_ras(p)), p)
    field = np.arange(24, dtype=np.float32).reshape(3, 2, 2, 2)
    ras = vectors_lps_to_ras(field, axis=0)
    np.testing.assert_array_equal(ras[0], -field[0])
    np.testing.assert_array_equal(ras[1], -field[1])
    np.testing.assert_array_equal(ras[2], field[2])
    assert field[0, 0, 0, 1] == 1  # input untouched


def test_a_single_slice_is_taken_and_a_line_is_refused_with_its_size(scene):
    image = Image(np.arange(600, dtype=np.float32).reshape(1, 20, 30), Geometry((30, 20, 1), origin=(1, 2, 3)), "slice")
    node = volume_node_from_image(scene, image, name="slice")
    back = image_from_volume_node(node, "fixed")  # two single slices register in their plane (engine.planar)
    np.testing.assert_array_equal(back.array, image.array)
    assert back.geometry.allclose(image.geometry, atol=1e-9)
    line = volume_node_from_image(scene, Image(np.zeros((1, 1, 30), np.float32), Geometry((30, 1, 1)), "line"),
                                  name="line")
    with pytest.raises(VolumeNodeError, match=r"fixed volume 'line' is a line or a point \(size 30 x 1 x 1 voxels\); "
                                              r"registration needs a 3-D volume, or a single slice against another"):
        image_from_volume_node(line, "fixed")


def test_vector_volume_is_refused(scene):
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    data = vtk.vtkImageData()
    data.SetDimensions(6, 5, 4)
    data.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    node.SetAndObserveImageData(data)
    with pytest.raises(VolumeNodeError, match=r"moving volume 'rgb' is a vector/RGB volume.*scalar \(grayscale\)"):
        image_from_volume_node(node, "moving")


def test_multicomponent_scalar_node_is_refused(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "two comps")
    data = vtk.vtkImageData()
    data.SetDimensions(6, 5, 4)
    data.AllocateScalars(vtk.VTK_FLOAT, 2)
    node.SetAndObserveImageData(data)
    with pytest.raises(VolumeNodeError, match=r"has 2 components per voxel"):
        image_from_volume_node(node, "fixed")


def test_empty_and_missing_volumes_are_refused(scene):
    with pytest.raises(VolumeNodeError, match="fixed volume is not set"):
        image_from_volume_node(None, "fixed")
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(VolumeNodeError, match="'empty' has no image data"):
        image_from_volume_node(node, "moving")
