"""Resolution matching of thick slices against thin ones (spatial/resolution.py) and its use in register()."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ADRegNetLib.engine import register
from ADRegNetLib.engine.stages import matched_resolution
from ADRegNetLib.spatial.affine import AffineMap
from ADRegNetLib.spatial.filters import gaussian_smooth, gaussian_smooth_covariance
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.resolution import matching_blur, matching_covariances, psf_covariance

FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _rotation_x(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])


def test_psf_covariance_follows_spacing_floor_and_direction():
    thick = Geometry((8, 8, 8), (1.0, 1.0, 6.0))
    cov = psf_covariance(thick, finest_mm=2.0)  # 1 mm in-plane counts as the 2 mm working spacing
    assert np.allclose(cov, np.diag(np.array([2.0, 2.0, 6.0]) ** 2) / FWHM ** 2)
    turned = Geometry((8, 8, 8), (1.0, 1.0, 6.0), direction=_rotation_x(90))  # slices along y now
    assert np.allclose(np.diag(psf_covariance(turned, 2.0)), np.array([2.0, 6.0, 2.0]) ** 2 / FWHM ** 2)
    # a linear map of the moving frame turns the slice axis the same way
    assert np.allclose(psf_covariance(thick, 2.0, linear=_rotation_x(90)), psf_covariance(turned, 2.0))


@pytest.mark.parametrize("fixed_mm, moving_mm, fixed_sigma, moving_sigma", [
    # thick moving slices: the fixed image is blurred along z by sqrt(6^2 - 2^2) / 2.355 mm = 1.20 voxels
    ((2.0, 2.0, 2.0), (2.0, 2.0, 6.0), (np.sqrt(32) / FWHM / 2, 0, 0), (0, 0, 0)),
    # and the other way round
    ((2.0, 2.0, 6.0), (2.0, 2.0, 2.0), (0, 0, 0), (np.sqrt(32) / FWHM / 2, 0, 0)),
    # each thick along another axis: each is blurred along the other's
    ((6.0, 2.0, 2.0), (2.0, 2.0, 6.0), (np.sqrt(32) / FWHM / 2, 0, 0), (0, 0, np.sqrt(32) / FWHM / 2)),
    # same resolution, or a difference under the threshold (3 mm slices: 0.47 voxel): nothing
    ((2.0, 2.0, 2.0), (2.0, 2.0, 2.0), (0, 0, 0), (0, 0, 0)),
    ((2.0, 2.0, 2.0), (2.0, 2.0, 3.0), (0, 0, 0), (0, 0, 0)),
    # both finer than the working grid: nothing either
    ((0.5, 0.5, 0.5), (1.0, 1.0, 1.5), (0, 0, 0), (0, 0, 0)),
])
def test_matching_blur_gives_both_the_coarser_resolution(fixed_mm, moving_mm, fixed_sigma, moving_sigma):
    work = Geometry((16, 16, 16), (2.0, 2.0, 2.0))
    blur_fixed, blur_moving = matching_blur(Geometry((16, 16, 16), fixed_mm), Geometry((16, 16, 16), moving_mm),
                                            work, min_sigma_voxels=0.5)
    assert blur_fixed == pytest.approx(fixed_sigma, abs=1e-9)  # (z, y, x)
    assert blur_moving == pytest.approx(moving_sigma, abs=1e-9)


def test_matching_blur_sees_the_moving_slices_through_the_prealignment():
    """A moving image with slices along its z, turned by 90 degrees about x onto the fixed frame: the
    fixed image is blurred along its y instead."""
    work = Geometry((16, 16, 16), (2.0, 2.0, 2.0))
    fixed, moving = Geometry((16, 16, 16), (2.0, 2.0, 2.0)), Geometry((16, 16, 16), (2.0, 2.0, 6.0))
    blur_fixed, _ = matching_blur(fixed, moving, work, moving_linear=_rotation_x(90))
    assert blur_fixed == pytest.approx((0, np.sqrt(32) / FWHM / 2, 0), abs=1e-9)


def test_blurred_sharp_image_looks_like_the_thick_one():
    """The model behind the blur: a sharp volume blurred along z as matching_blur says is closer to
    its thick-slice version (slice profile of the slice's FWHM, linearly interpolated back) than
    the sharp volume itself."""
    gen = torch.Generator().manual_seed(4)
    sharp = gaussian_smooth(torch.rand((1, 1, 60, 24, 24), generator=gen, dtype=torch.float64), 1.0)
    sigma_slice = 3.0 / FWHM  # 6 mm slices from 2 mm voxels: FWHM 3 voxels
    profile = gaussian_smooth(sharp, [sigma_slice, 0.0, 0.0])[:, :, ::3]
    thick = torch.nn.functional.interpolate(profile, size=(58, 24, 24), mode="trilinear", align_corners=True)
    blur, _ = matching_blur(Geometry((24, 24, 60), (2.0, 2.0, 2.0)), Geometry((24, 24, 20), (2.0, 2.0, 6.0)),
                            Geometry((24, 24, 60), (2.0, 2.0, 2.0)))
    matched = gaussian_smooth(sharp, blur.tolist())[:, :, :58]
    inner = (slice(None), slice(None), slice(6, -6))
    error_matched = float((matched - thick)[inner].abs().mean())
    error_sharp = float((sharp[:, :, :58] - thick)[inner].abs().mean())
    # measured: 0.0058 against 0.0175
    assert error_matched < 0.5 * error_sharp, (error_matched, error_sharp)


def test_register_reports_the_resolution_matching():
    geometry = Geometry((32, 32, 48), (2.0, 2.0, 2.0))
    gen = torch.Generator().manual_seed(5)
    arr = gaussian_smooth(torch.rand((1, 1, 48, 32, 32), generator=gen), 1.5)[0, 0].numpy()
    arr = (arr - arr.min()) / (arr.max() - arr.min()) * 1000.0
    kw = dict(quality="fast", use_network=False, device="cpu", preset="generic", compute_inverse=False)
    thick = register(Image(arr, geometry, "fixed"),
                     Image(np.ascontiguousarray(arr[::3]), Geometry((32, 32, 16), (2.0, 2.0, 6.0)), "moving"), **kw)
    matching = thick.metrics["resolution_matching"]
    assert matching["fixed_blur_voxels"][0] == pytest.approx(np.sqrt(32) / FWHM / 2, abs=1e-3)
    assert matching["moving_blur_voxels"] == [0.0, 0.0, 0.0]
    same = register(Image(arr, geometry, "fixed"), Image(np.roll(arr, 1, axis=2).copy(), geometry, "moving"), **kw)
    assert same.metrics["resolution_matching"] == {"fixed_blur_voxels": [0.0, 0.0, 0.0],
                                                   "moving_blur_voxels": [0.0, 0.0, 0.0], "oblique": False,
                                                   "widest_blur_voxels": 0.0}
    assert matching["widest_blur_voxels"] == pytest.approx(np.sqrt(32) / FWHM / 2, abs=1e-3)
    assert matching["oblique"] is False


def test_oblique_smoothing_has_the_covariance_it_is_given_and_a_diagonal_one_is_separable():
    """A point blurred by an oblique Gaussian: its mass kept (up to the ringing of a kernel thinner than a
    voxel across, cut at the crop), centred, second moments equal to the covariance (z, y, x voxels); a
    diagonal covariance gives exactly the separable smoothing."""
    volume = torch.zeros((1, 1, 41, 41, 41), dtype=torch.float64)
    volume[0, 0, 20, 20, 20] = 1.0
    turn = _rotation_x(30)[::-1, ::-1]  # a turn in the z-y plane, (z, y, x) order
    cov = turn @ np.diag([9.0, 1.0, 1.0]) @ turn.T  # wide enough to vanish at the Nyquist frequency
    blurred = gaussian_smooth_covariance(volume, cov)[0, 0].numpy()
    assert blurred.sum() == pytest.approx(1.0, abs=1e-3)
    offsets = np.stack(np.meshgrid(*[np.arange(41) - 20.0] * 3, indexing="ij")).reshape(3, -1)
    weights = blurred.reshape(-1)
    np.testing.assert_allclose(offsets @ weights, 0.0, atol=1e-6)
    np.testing.assert_allclose((offsets * weights) @ offsets.T, cov, atol=0.02)
    diagonal = np.diag([1.44, 0.0, 0.36])
    assert torch.equal(gaussian_smooth_covariance(volume, diagonal), gaussian_smooth(volume, [1.2, 0.0, 0.6]))
    with pytest.raises(ValueError, match="positive semi-definite"):
        gaussian_smooth_covariance(volume, -np.eye(3))


def test_oblique_thick_slices_are_matched_along_their_own_direction():
    """Moving slices of 6 mm tilted by 30 degrees against a 2 mm fixed image: the fixed image's blur
    lies along the slices' normal (in working voxels), with the variance the slice profile lacks."""
    work = fixed = Geometry((24, 24, 24), (2.0, 2.0, 2.0))
    moving = Geometry((24, 24, 8), (2.0, 2.0, 6.0), direction=_rotation_x(30))
    cov_fixed, cov_moving = matching_covariances(fixed, moving, work, min_sigma_voxels=0.5)
    assert not cov_moving.any()
    values, vectors = np.linalg.eigh(cov_fixed)
    assert values[-1] == pytest.approx((36.0 - 4.0) / FWHM ** 2 / 4.0, rel=1e-6) and values[:2] == pytest.approx(0)
    normal_zyx = _rotation_x(30)[:, 2][::-1]  # the slices' normal (x, y, z) -> (z, y, x)
    assert abs(float(vectors[:, -1] @ normal_zyx)) == pytest.approx(1.0, abs=1e-9)
    gen = torch.Generator().manual_seed(3)
    fixed_w = gaussian_smooth(torch.rand((1, 1, 24, 24, 24), generator=gen), 1.0)
    moving_w = fixed_w.clone()
    matched_fixed, matched_moving, info = matched_resolution(fixed_w, moving_w, fixed, moving, work, AffineMap.identity())
    assert info["oblique"] is True and info["moving_blur_voxels"] == [0.0, 0.0, 0.0]
    assert matched_moving is moving_w and not torch.equal(matched_fixed, fixed_w)
