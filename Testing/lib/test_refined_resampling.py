"""Resampling onto the working grid through the refined image (spatial.bspline.refined, warp mode "refined")."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ADRegNetLib.spatial.bspline import bspline_coefficients, bspline_sample, refined
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.warp import refined_axes, resample, warp_image


@pytest.mark.parametrize("shape, axes", [((9, 11, 13), (2, 3, 4)), ((5, 30, 40), (3, 4)), ((2, 3, 3), (2,)),
                                         ((20, 4, 2), (2, 4))])
def test_refined_is_the_cubic_b_spline_at_half_the_spacing(shape, axes):
    volume = torch.from_numpy(np.random.default_rng(4).normal(size=(1, 2, *shape)))
    out = refined(volume, axes)
    expected_shape = [2 * n - 1 if dim in axes else n for dim, n in zip((2, 3, 4), shape)]
    assert list(out.shape[2:]) == expected_shape
    # the samples stay: every second value along a refined axis is the volume's own
    kept = out[(slice(None), slice(None), *[slice(None, None, 2 if dim in axes else 1) for dim in (2, 3, 4)])]
    torch.testing.assert_close(kept, volume, atol=1e-8, rtol=0)  # the prefilter stops at 1e-10
    # and between them the cubic B-spline that ITK's interpolator samples (spatial.bspline.bspline_sample)
    lines = [torch.linspace(-1.0, 1.0, m, dtype=torch.float64) for m in expected_shape]
    zz, yy, xx = torch.meshgrid(*lines, indexing="ij")
    spline = bspline_sample(bspline_coefficients(volume), torch.stack([xx, yy, zz], -1)[None].expand(2, -1, -1, -1, -1)[:1])
    torch.testing.assert_close(out[:1], spline, atol=1e-8, rtol=0)


def test_refined_refuses_axes_it_cannot_refine():
    with pytest.raises(ValueError, match="axes to refine"):
        refined(torch.zeros(1, 1, 1, 4, 4), (2,))
    with pytest.raises(ValueError, match="axes to refine"):
        refined(torch.zeros(1, 1, 4, 4, 4), (1,))
    with pytest.raises(ValueError, match="float"):
        refined(torch.zeros(1, 1, 4, 4, 4, dtype=torch.int64))


@pytest.mark.parametrize("spacing, axes", [((1.0, 1.0, 1.0), ()), ((1.0, 1.0, 5.0), (2,)), ((2.0, 2.0, 2.0), (2, 3, 4)),
                                           ((0.8, 2.5, 1.2), (2, 3))])
def test_refined_axes_are_those_coarser_than_half_the_output_spacing(spacing, axes):
    image = Geometry((40, 40, 30), spacing)
    assert refined_axes(image, Geometry((30, 30, 30), (2.0, 2.0, 2.0))) == axes


def test_refined_axes_drop_the_finest_first_beyond_the_voxel_budget():
    image = Geometry((100, 100, 20), (2.0, 1.5, 6.0))
    output = Geometry((100, 100, 60), (2.0, 2.0, 2.0))
    assert refined_axes(image, output) == (2, 3, 4)
    # refined: 39 x 199 x 199; without y (the finest): 39 x 100 x 199; then z alone: 39 x 100 x 100
    assert refined_axes(image, output, max_voxels=39 * 199 * 199 - 1) == (2, 4)
    assert refined_axes(image, output, max_voxels=39 * 100 * 199 - 1) == (2,)
    assert refined_axes(image, output, max_voxels=100) == ()


def _smooth(points: np.ndarray) -> np.ndarray:
    """A smooth pattern with detail near the sampling limit of a 2 mm grid (wavelength 9 mm), LPS mm."""
    return np.sin(2 * np.pi * points[:, 0] / 9.0) * np.cos(2 * np.pi * points[:, 1] / 11.0) + 0.3 * np.sin(points[:, 2] / 5.0)


def _sampled(geometry: Geometry) -> Image:
    zyx = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij"), -1).reshape(-1, 3)
    values = _smooth(geometry.index_to_physical(zyx[:, ::-1].astype(float)))
    return Image(values.reshape(geometry.shape).astype(np.float32), geometry, "pattern")


def test_a_grid_half_a_voxel_off_loses_far_less_detail_refined_than_linear():
    output = Geometry((30, 28, 26), (2.0, 2.0, 2.0), (-30.0, -28.0, -26.0))
    off = Geometry((32, 30, 28), (2.0, 2.0, 2.0), (-31.0, -29.0, -27.0))  # one voxel larger, half a voxel off
    image = _sampled(off)
    truth = _sampled(output).array
    core = (slice(2, -2),) * 3
    error_linear = np.abs(resample(image, output).array - truth)[core].mean()
    error_refined = np.abs(resample(image, output, mode="refined").array - truth)[core].mean()
    assert error_refined < 0.3 * error_linear, (error_refined, error_linear)
    # on its own grid the image comes back as it is, refined or not
    np.testing.assert_allclose(resample(image, off, mode="refined").array, image.array, atol=1e-5)


def test_refined_resampling_marks_the_same_voxels_inside_as_linear():
    output = Geometry((20, 20, 20), (2.0, 2.0, 2.0), (-20.0, -20.0, -20.0))
    moving = Geometry((14, 16, 12), (2.0, 2.0, 2.0), (-11.3, -15.1, -9.7))
    image = _sampled(moving)
    source = torch.from_numpy(image.array)[None, None]
    _, inside_linear = warp_image(source, None, output, moving, return_inside=True)
    refined_out, inside_refined = warp_image(source, None, output, moving, mode="refined", return_inside=True)
    assert torch.equal(inside_linear, inside_refined) and bool(inside_refined.any()) and not bool(inside_refined.all())
    assert float(refined_out[~inside_refined].abs().max()) < 1.0  # blends into the padding like linear
