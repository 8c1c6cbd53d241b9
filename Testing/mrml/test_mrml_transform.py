"""Displacement field -> grid transform node, checked against SimpleITK and ADRegNetLib."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetMRML.geometry import points_lps_to_ras, points_ras_to_lps
from ADRegNetMRML.transform import (
    field_from_grid_transform_node, grid_transform_from_field, grid_transform_node_from_field,
)
from mrml_helpers import analytic_field, oblique_geometry, sitk_displacement_transform


def _inside_points(geometry, n=60, seed=0):
    """Random LPS points at least one voxel inside the grid (VTK clamps outside, ITK uses zero)."""
    rng = np.random.default_rng(seed)
    idx = rng.uniform(1.0, np.asarray(geometry.size) - 2.0, size=(n, 3))
    return geometry.index_to_physical(idx)


def _map_ras(transform, points_lps):
    ras = points_lps_to_ras(points_lps)
    return points_ras_to_lps(np.array([transform.TransformPoint(*map(float, p)) for p in ras]))


@pytest.mark.parametrize("geometry", [
    oblique_geometry(),
    oblique_geometry(size=(14, 19, 9), spacing=(2.0, 0.6, 3.3), origin=(80.0, 150.0, -900.0), angles=(0.5, 0.2, -1.1)),
], ids=["oblique", "oblique-far"])
def test_linear_grid_transform_equals_itk_displacement_field(scene, geometry):
    disp = analytic_field(geometry)
    node = grid_transform_node_from_field(scene, disp, geometry)
    pts = _inside_points(geometry)
    ref = sitk_displacement_transform(disp, geometry)
    expected = np.array([ref.TransformPoint(p.tolist()) for p in pts])
    got = _map_ras(node.GetTransformFromParent(), pts)
    assert np.abs(got - expected).max() < 1e-4  # measured about 3e-6 mm
    # and the points really moved (the field is a few mm)
    assert np.linalg.norm(expected - pts, axis=1).mean() > 1.0


def test_cubic_interpolation_does_not_reproduce_itk(scene):
    """Why the node uses linear interpolation: cubic differs from ITK's trilinear field between voxels."""
    geometry = oblique_geometry()
    disp = analytic_field(geometry)
    pts = _inside_points(geometry)
    ref = sitk_displacement_transform(disp, geometry)
    expected = np.array([ref.TransformPoint(p.tolist()) for p in pts])
    linear = np.abs(_map_ras(grid_transform_from_field(disp, geometry, "linear"), pts) - expected).max()
    cubic = np.abs(_map_ras(grid_transform_from_field(disp, geometry, "cubic"), pts) - expected).max()
    assert linear < 1e-4 < cubic


def test_fixed_landmarks_map_to_moving_landmarks(scene):
    """Fixed landmarks (RAS) go where the field says, as ADRegNetLib.io.transforms.transform_points computes."""
    transforms = pytest.importorskip("ADRegNetLib.io.transforms")
    geometry = oblique_geometry()
    disp = analytic_field(geometry, amplitude=4.0)
    fixed_lps = _inside_points(geometry, n=12, seed=3)
    moving_lps = np.asarray(transforms.transform_points(disp, geometry, fixed_lps))
    node = grid_transform_node_from_field(scene, disp, geometry)
    got_ras = np.array([node.GetTransformFromParent().TransformPoint(*map(float, p))
                        for p in points_lps_to_ras(fixed_lps)])
    assert np.linalg.norm(got_ras - points_lps_to_ras(moving_lps), axis=1).max() <= 0.1
    # the inverse (to parent) brings moving back to fixed within the inverse tolerance
    back = np.array([node.GetTransformToParent().TransformPoint(*map(float, p)) for p in got_ras])
    assert np.abs(back - points_lps_to_ras(fixed_lps)).max() < 0.01


def test_field_reads_back_from_node(scene):
    geometry = oblique_geometry()
    disp = analytic_field(geometry)
    node = grid_transform_node_from_field(scene, disp, geometry)
    back, back_geometry = field_from_grid_transform_node(node)
    np.testing.assert_allclose(back, disp, atol=1e-6)
    assert back_geometry.allclose(geometry, atol=1e-9)


def test_output_node_is_reused_and_bad_field_refused(scene):
    geometry = oblique_geometry()
    disp = analytic_field(geometry)
    mine = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "my output")
    count = scene.GetNumberOfNodes()
    out = grid_transform_node_from_field(scene, disp, geometry, node=mine)
    assert out is mine and out.GetName() == "my output"
    assert scene.GetNumberOfNodes() == count + 1  # only its display node was added
    with pytest.raises(ValueError, match=r"must be \(3, Z, Y, X\) = \(3, 11, 15, 18\).*got shape \(3, 11, 15, 17\)"):
        grid_transform_from_field(disp[..., :17], geometry)
    bad = disp.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        grid_transform_from_field(bad, geometry)


@pytest.mark.parametrize("suffix", [".h5", ".nii.gz"])
def test_storage_node_round_trip(scene, tmp_path, suffix):
    """Written by vtkMRMLTransformStorageNode, read by a fresh storage node: the same field and grid."""
    geometry = oblique_geometry()
    disp = analytic_field(geometry)
    node = grid_transform_node_from_field(scene, disp, geometry)
    path = str(tmp_path / f"transform{suffix}")
    writer = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    writer.SetFileName(path)
    assert writer.WriteData(node) == 1
    reader = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    reader.SetFileName(path)
    loaded = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "loaded")
    assert reader.ReadData(loaded) == 1
    back, back_geometry = field_from_grid_transform_node(loaded)
    np.testing.assert_allclose(back, disp, atol=1e-6)
    assert back_geometry.allclose(geometry, atol=1e-6)
    # Slicer reads grid files with cubic interpolation; at voxel centres both agree exactly.
    centres = geometry.index_to_physical(np.array([[2, 3, 4], [10, 7, 5], [15, 12, 9]], float))
    ref = sitk_displacement_transform(disp, geometry)
    expected = np.array([ref.TransformPoint(p.tolist()) for p in centres])
    np.testing.assert_allclose(_map_ras(loaded.GetTransformFromParent(), centres), expected, atol=1e-4)
    if suffix == ".nii.gz":
        # ITK's displacement field file is LPS: SimpleITK reads the field we put in, unchanged.
        image = sitk.ReadImage(path)
        assert image.GetNumberOfComponentsPerPixel() == 3
        np.testing.assert_allclose(np.moveaxis(sitk.GetArrayFromImage(image), -1, 0), disp, atol=1e-6)
        np.testing.assert_allclose(image.GetOrigin(), geometry.origin, atol=1e-6)
        np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), geometry.direction, atol=1e-6)
