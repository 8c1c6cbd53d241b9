"""The spatial core against SimpleITK/ITK: Transform (field then affine), the one resampler, masks
mapped by physical position. Small oblique, anisotropic grids: where frame mistakes show."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from geometry_helpers import make_oblique_geometry, rotation_matrix
from ADRegNetLib.io.image import to_sitk
from ADRegNetLib.spatial.affine import AffineMap
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.transform import Transform, background_value
from ADRegNetLib.spatial.warp import resample



def _smooth_field(geometry: Geometry, rng: np.random.Generator, amplitude: float = 3.0) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.linspace(0, np.pi, n) for n in geometry.shape), indexing="ij")
    comps = [amplitude * np.sin(x + p) * np.cos(y - p) * np.sin(z + 2 * p) for p in rng.uniform(0, 1, 3)]
    return np.stack(comps).astype(np.float32)


def _affine(rng: np.random.Generator) -> AffineMap:
    return AffineMap(rotation_matrix(rng.uniform(-8, 8, 3)) * 1.05, rng.uniform(-4, 4, 3))


def _sitk_transform(transform: Transform) -> sitk.Transform:
    field = sitk.GetImageFromArray(np.moveaxis(transform.disp_mm, 0, -1).astype(np.float64), isVector=True)
    transform.geometry.apply_to_sitk(field)
    composite = sitk.CompositeTransform(3)
    if transform.affine is not None:  # ITK applies the last added transform first
        aff = sitk.AffineTransform(3)
        aff.SetMatrix(transform.affine.matrix.reshape(-1).tolist())
        aff.SetTranslation(transform.affine.offset.tolist())
        composite.AddTransform(aff)
    composite.AddTransform(sitk.DisplacementFieldTransform(field))
    return composite


@pytest.mark.parametrize("with_affine", [False, True])
def test_map_points_matches_itk_transform_point(rng, with_affine):
    g = make_oblique_geometry((14, 12, 10))
    t = Transform(g, _smooth_field(g, rng), _affine(rng) if with_affine else None)
    idx = rng.uniform(-0.4, np.asarray(g.size) - 0.6, size=(40, 3))
    pts = np.vstack([g.index_to_physical(idx), g.index_to_physical(np.array([[-5.0, 3, 3]]))])  # last: outside
    ref = np.array([_sitk_transform(t).TransformPoint(p.tolist()) for p in pts])
    np.testing.assert_allclose(t.map_points(pts), ref, atol=1e-4)


@pytest.mark.parametrize("with_affine", [False, True])
def test_warp_matches_simpleitk_resample_on_other_grids(rng, with_affine):
    fixed_g = make_oblique_geometry((14, 12, 10))
    moving_g = Geometry((20, 18, 16), (1.1, 1.0, 1.4), fixed_g.origin - 6.0, rotation_matrix([5, 10, -8]))
    moving = Image(rng.normal(0, 1, moving_g.shape).astype(np.float32), moving_g, "moving")
    t = Transform(fixed_g, _smooth_field(fixed_g, rng, 1.5), _affine(rng) if with_affine else None)
    ref_img = sitk.Image(list(fixed_g.size), sitk.sitkFloat32)
    fixed_g.apply_to_sitk(ref_img)
    ref = sitk.GetArrayFromImage(sitk.Resample(to_sitk(moving), ref_img, _sitk_transform(t), sitk.sitkLinear, 7.0))
    warped, inside = t.warp(moving, default=7.0, return_inside=True)
    assert warped.geometry == fixed_g
    # everywhere, edges included: like ITK, the image reaches half a voxel beyond its edge voxels'
    # centres (taking the edge voxel there) and the padding value begins beyond that
    np.testing.assert_allclose(warped.array, ref, atol=2e-4)
    # "inside" (what the similarity counts) ends at the edge voxels' centres: the band beyond holds edge
    # values, outside it the padding
    band = ~inside & (warped.array != 7.0)
    assert band.any() and (~inside & (warped.array == 7.0)).any()
    assert not np.any(np.isclose(ref[inside], 7.0, atol=1e-6))


def test_total_displacement_and_jacobian_of_an_affine(rng):
    g = make_oblique_geometry((9, 8, 7))
    aff = _affine(rng)
    t = Transform(g, np.zeros((3, *g.shape), np.float32), aff)
    u = t.total_displacement()
    x = g.index_to_physical(np.array([[3.0, 2.0, 4.0]]))[0]
    np.testing.assert_allclose(u[:, 4, 2, 3], aff.apply(x[None])[0] - x, atol=1e-4)
    np.testing.assert_allclose(t.jacobian().array, np.linalg.det(aff.matrix), rtol=1e-4)


def test_resample_with_affine_matches_simpleitk(rng):
    src_g = make_oblique_geometry((16, 14, 12))
    image = Image(rng.normal(size=src_g.shape).astype(np.float32), src_g)
    out_g = Geometry((10, 9, 8), (1.5, 1.5, 2.0), src_g.center() - 7.0)
    aff = _affine(rng)
    ref_img = sitk.Image(list(out_g.size), sitk.sitkFloat32)
    out_g.apply_to_sitk(ref_img)
    itk_aff = sitk.AffineTransform(3)
    itk_aff.SetMatrix(aff.matrix.reshape(-1).tolist())
    itk_aff.SetTranslation(aff.offset.tolist())
    ref = sitk.GetArrayFromImage(sitk.Resample(to_sitk(image), ref_img, itk_aff, sitk.sitkLinear, 0.0))
    np.testing.assert_allclose(resample(image, out_g, affine=aff).array, ref, atol=2e-4)


def test_labels_and_masks_keep_their_type_through_nearest(rng):
    g = make_oblique_geometry((12, 10, 8))
    labels = Image(rng.integers(0, 5, g.shape).astype(np.int16), g)
    out = resample(labels, g, mode="nearest")
    assert out.array.dtype == np.int16 and np.array_equal(out.array, labels.array)
    mask = Image(labels.array > 2, g)
    assert resample(mask, g, mode="nearest").array.dtype == np.bool_


def test_background_value_is_the_image_border():
    a = np.full((10, 10, 10), -1000.0, np.float32)
    a[2:8, 2:8, 2:8] = 40.0
    assert background_value(Image(a, Geometry((10, 10, 10)))) == -1000.0


def test_affine_map_algebra(rng):
    a, b = _affine(rng), _affine(rng)
    pts = rng.normal(size=(5, 3)) * 20
    np.testing.assert_allclose(a.then(b).apply(pts), b.apply(a.apply(pts)), atol=1e-9)
    np.testing.assert_allclose(a.inverse_apply(a.apply(pts)), pts, atol=1e-9)
    np.testing.assert_allclose(AffineMap.from_homogeneous(a.to_homogeneous()).matrix, a.matrix)
    with pytest.raises(ValueError, match="singular"):
        AffineMap(np.zeros((3, 3)), np.zeros(3))


def test_an_update_smoothed_over_its_region_keeps_its_strength_at_the_edge():
    """Normalised convolution (``spatial.filters.smooth_over_support``): an update that is zero beyond its region
    (the moving image's field of view, a mask) no longer halves at the region's edge (what it measured: the
    docstring of ``smooth_over_support``)."""
    import torch

    from ADRegNetLib.spatial.filters import gaussian_smooth, smooth_over_support, support_of

    weight = torch.zeros((1, 1, 20, 24, 28))
    weight[..., :14] = 1.0  # the region: the first half along x
    update = torch.zeros((1, 3, 20, 24, 28))
    update[:, 0] = weight[:, 0] * 2.0  # a uniform update inside, nothing beyond
    plain = gaussian_smooth(update, 3.0)
    support = support_of(weight, 3.0)
    kept = smooth_over_support(update, 3.0, support)
    edge = (0, 0, 10, 12, 13)
    assert 0.9 < float(plain[edge]) < 1.2  # about half at the last voxel inside
    assert abs(float(kept[edge]) - 2.0) < 0.05 and abs(float(kept[0, 0, 10, 12, 5]) - 2.0) < 1e-4
    assert float(kept[0, 0, 10, 12, 16]) > float(plain[0, 0, 10, 12, 16])  # continued just beyond
    assert support_of(None, 3.0) is None and support_of(torch.ones((1, 1, 4, 4, 4)), 3.0) is None
    torch.testing.assert_close(smooth_over_support(update, 3.0, None), plain)
