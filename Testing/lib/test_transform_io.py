"""Displacement fields <-> ITK files, cross-checked against SimpleITK's own TransformPoint."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ADRegNetLib.io import (TransformFileError, field_to_sitk, read_transform, sitk_to_field, transform_points,
                            write_displacement_field, write_transform)
from ADRegNetLib.spatial.geometry import Geometry


def _field(geometry, rng, scale=3.0):
    return rng.normal(size=(3,) + geometry.shape) * scale


def _interior_points(geometry, rng, n=300):
    idx = rng.uniform(0.0, np.asarray(geometry.size) - 1.0, size=(n, 3))
    return geometry.index_to_physical(idx)


def _sitk_map(transform, points):
    return np.array([transform.TransformPoint(p.tolist()) for p in points])


def test_field_sitk_round_trip_and_axis_order(oblique_geometry, rng):
    disp = _field(oblique_geometry, rng)
    img = field_to_sitk(disp, oblique_geometry)
    assert img.GetPixelID() == sitk.sitkVectorFloat64 and img.GetSize() == oblique_geometry.size
    # voxel (x=3, y=2, z=1) holds the (x, y, z) components disp[:, 1, 2, 3]
    np.testing.assert_array_equal(img[3, 2, 1], disp[:, 1, 2, 3])
    back, geom = sitk_to_field(img)
    np.testing.assert_array_equal(back, disp)
    assert geom.allclose(oblique_geometry, atol=1e-12)
    # batch axis and torch accepted
    back2, _ = sitk_to_field(field_to_sitk(torch.as_tensor(disp)[None], oblique_geometry))
    np.testing.assert_array_equal(back2, disp)


@pytest.mark.parametrize("name", ["t.h5", "t.tfm"])
def test_transform_file_agrees_with_sitk(tmp_path, oblique_geometry, rng, name):
    disp = _field(oblique_geometry, rng)
    write_transform(disp, oblique_geometry, tmp_path / name)
    tx = sitk.ReadTransform(str(tmp_path / name))
    pts = _interior_points(oblique_geometry, rng)
    ours = transform_points(disp, oblique_geometry, pts)
    np.testing.assert_allclose(ours, _sitk_map(tx, pts), atol=1e-4)
    # reading back gives the same field on the same grid
    back, geom = read_transform(tmp_path / name)
    np.testing.assert_allclose(back, disp, atol=1e-9)
    assert geom.allclose(oblique_geometry, atol=1e-9)


@pytest.mark.parametrize("name", ["d.nii.gz", "d.nrrd", "d.mha"])
def test_displacement_image_agrees_with_sitk(tmp_path, oblique_geometry, rng, name):
    disp = _field(oblique_geometry, rng)
    write_displacement_field(disp, oblique_geometry, tmp_path / name)
    img = sitk.ReadImage(str(tmp_path / name))
    assert img.GetNumberOfComponentsPerPixel() == 3
    tx = sitk.DisplacementFieldTransform(sitk.Cast(img, sitk.sitkVectorFloat64))
    pts = _interior_points(oblique_geometry, rng)
    np.testing.assert_allclose(transform_points(disp, oblique_geometry, pts), _sitk_map(tx, pts), atol=1e-4)
    back, geom = read_transform(tmp_path / name)
    np.testing.assert_allclose(back, disp, atol=1e-5)  # stored as float32
    assert geom.allclose(oblique_geometry, atol=1e-4)


def test_transform_points_matches_itk_outside_and_at_the_edges(oblique_geometry, rng):
    """Zero displacement outside, edge value in the half-voxel band: as ITK."""
    disp = _field(oblique_geometry, rng)
    tx = sitk.DisplacementFieldTransform(field_to_sitk(disp, oblique_geometry))
    idx = rng.uniform(-2.0, np.asarray(oblique_geometry.size) + 1.0, size=(800, 3))
    pts = oblique_geometry.index_to_physical(idx)
    ours = transform_points(disp, oblique_geometry, pts)
    np.testing.assert_allclose(ours, _sitk_map(tx, pts), atol=1e-9)
    outside = ~oblique_geometry.contains(pts, margin_voxels=0.5)
    assert outside.sum() > 100
    np.testing.assert_array_equal(ours[outside], pts[outside])


def test_transform_points_exact_at_voxel_centres_and_torch(oblique_geometry, rng):
    disp = _field(oblique_geometry, rng)
    idx = np.array([[0, 0, 0], [3, 2, 1], [10, 8, 6]])
    pts = oblique_geometry.index_to_physical(idx)
    expected = pts + disp[:, idx[:, 2], idx[:, 1], idx[:, 0]].T
    np.testing.assert_allclose(transform_points(disp, oblique_geometry, pts), expected, atol=1e-10)
    field_t = torch.as_tensor(disp, dtype=torch.float64).requires_grad_(True)
    out = transform_points(field_t, oblique_geometry, torch.as_tensor(pts))
    assert isinstance(out, torch.Tensor)
    out.sum().backward()
    assert field_t.grad is not None and field_t.grad.abs().sum() > 0


def test_composite_and_affine_transforms_are_sampled(tmp_path, oblique_geometry, rng):
    disp = _field(oblique_geometry, rng, scale=1.0)
    field_tx = sitk.DisplacementFieldTransform(field_to_sitk(disp, oblique_geometry))
    affine = sitk.AffineTransform(3)
    affine.SetMatrix((1.02, 0.01, 0.0, -0.02, 0.98, 0.03, 0.0, 0.01, 1.01))
    affine.SetTranslation((1.0, -2.0, 0.5))
    composite = sitk.CompositeTransform([affine, field_tx])
    sitk.WriteTransform(composite, str(tmp_path / "c.h5"))
    back, geom = read_transform(tmp_path / "c.h5")
    assert geom.allclose(oblique_geometry, atol=1e-9)
    # at the grid's voxel centres the sampled field reproduces the composite exactly
    idx = np.array([[1, 1, 1], [4, 3, 2], [9, 7, 5]])
    pts = oblique_geometry.index_to_physical(idx)
    np.testing.assert_allclose(transform_points(back, geom, pts), _sitk_map(composite, pts), atol=1e-9)
    # a pure affine needs a grid
    sitk.WriteTransform(affine, str(tmp_path / "a.tfm"))
    with pytest.raises(TransformFileError, match=r"a.tfm: holds a AffineTransform with no displacement field grid to "
                                                 r"sample it on: give a displacement field .*geometry="):
        read_transform(tmp_path / "a.tfm")
    small = Geometry((4, 5, 6), [2.0, 2.0, 2.0], [-3.0, 0.0, 5.0])
    aff_disp, g = read_transform(tmp_path / "a.tfm", geometry=small)
    p = small.index_to_physical(np.array([[2, 3, 4]]))
    np.testing.assert_allclose(p + aff_disp[:, 4, 3, 2], _sitk_map(affine, p), atol=1e-9)


def test_errors(tmp_path, oblique_geometry, rng):
    disp = _field(oblique_geometry, rng)
    with pytest.raises(ValueError, match=r"must have shape \(3, Z, Y, X\)"):
        field_to_sitk(disp[:2], oblique_geometry)
    with pytest.raises(ValueError, match="does not match the geometry"):
        field_to_sitk(disp[:, :-1], oblique_geometry)
    with pytest.raises(TransformFileError, match="extension .h5"):
        write_transform(disp, oblique_geometry, tmp_path / "t.json")
    with pytest.raises(TransformFileError, match="needs one of .nii.gz"):
        write_displacement_field(disp, oblique_geometry, tmp_path / "t.h5")
    with pytest.raises(TransformFileError, match="no such transform file"):
        read_transform(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(TransformFileError, match=r"junk\.h5: cannot be read as an ITK transform"):
        read_transform(tmp_path / "junk.h5")
    sitk.WriteImage(sitk.Image([5, 5, 5], sitk.sitkFloat32), str(tmp_path / "scalar.nii.gz"))
    with pytest.raises(TransformFileError, match="3 components per voxel"):
        read_transform(tmp_path / "scalar.nii.gz")
    with pytest.raises(ValueError, match=r"points_lps must be \(K, 3\)"):
        transform_points(disp, oblique_geometry, np.zeros((4, 2)))


@pytest.mark.parametrize("name", ["d.mha", "d.nrrd"])
def test_a_field_with_nan_or_inf_is_refused_by_name(tmp_path, name):
    """Before: ``adregnet evaluate`` on such a field said 'det holds 6 NaN or infinite values' (neither the
    file nor a fix); ``warp`` sampled through it."""
    geometry = Geometry((6, 5, 4), [2.0, 2.0, 2.0])
    disp = np.zeros((3,) + geometry.shape)
    disp[0, 1, 2, 3], disp[2, 3, 2, 1] = np.nan, np.inf
    sitk.WriteImage(field_to_sitk(disp, geometry), str(tmp_path / name))
    with pytest.raises(TransformFileError, match=rf"{name}: holds 2 NaN or infinite displacement values \(of 360\); "
                                                 r"a displacement field must be finite everywhere"):
        read_transform(tmp_path / name)
    h5 = tmp_path / "t.h5"
    sitk.WriteTransform(sitk.DisplacementFieldTransform(field_to_sitk(disp, geometry)), str(h5))
    with pytest.raises(TransformFileError, match=r"t.h5: holds 2 NaN or infinite displacement values"):
        read_transform(h5)


def test_a_damaged_transform_file_is_named_without_itk_fragments(tmp_path):
    """Before: 'cannot be read as an ITK transform (    set the suffix to an unsupported type.)'."""
    path = tmp_path / "transform.h5"
    path.write_bytes(b"\x89HDF\r\n" + bytes(range(256)) * 8)
    with pytest.raises(TransformFileError) as info:
        read_transform(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot be read as an ITK transform")
    assert "set the suffix" not in message and "give the transform.h5 or displacement.nii.gz" in message
