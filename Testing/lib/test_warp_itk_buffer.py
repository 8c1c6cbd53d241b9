"""One rule fills the voxels beyond ITK's extent of an image, for ``Transform.warp`` and ``adregnet warp``.

ITK's resampling takes the edge voxel's value up to half a voxel beyond the edge voxels' centres
(continuous index -0.5 .. size - 0.5) and its default value beyond. ``spatial.warp.fill_outside_itk_buffer``
is that rule; ``warp_image(..., itk_buffer=True)`` (behind ``Transform.warp``) and the CLI's image and label
paths both call it (before, each had its own code: one on normalised coordinates, one on voxel indices).
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from geometry_helpers import rotation_matrix as rotation
from ADRegNetLib.cli.warp import _warp_image, _warp_labels
from ADRegNetLib.io import field_to_sitk
from ADRegNetLib.io.image import Image
from ADRegNetLib.spatial import Geometry
from ADRegNetLib.spatial.transform import Transform, background_value
from ADRegNetLib.spatial.warp import fill_outside_itk_buffer, within_itk_buffer

FIXED = Geometry((18, 16, 14), [2.0, 2.2, 2.5], [-20.0, 15.0, -30.0], rotation([6.0, -4.0, 9.0]))
MOVING = Geometry((14, 13, 11), [2.1, 2.0, 2.4], [-14.0, 19.0, -25.0], rotation([-5.0, 7.0, 2.0]))


def _field() -> np.ndarray:
    """(3, Z, Y, X) mm on FIXED: up to 6 mm, so part of the grid maps beyond the (smaller) moving image."""
    z, y, x = np.meshgrid(*(np.linspace(0.0, 2.0, n) for n in FIXED.shape), indexing="ij")
    return np.stack([6.0 * np.sin(x + z), -4.0 * np.cos(y), 3.0 * np.sin(x * y)]).astype(np.float32)


def _moving_image(dtype=np.float32) -> Image:
    z, y, x = np.indices(MOVING.shape)
    return Image((100.0 * np.sin(0.5 * x) * np.cos(0.3 * y) + 7.0 * z + 50.0).astype(dtype), MOVING, "moving")


def test_within_the_buffer_means_continuous_index_from_minus_half_to_size_minus_half():
    rng = np.random.default_rng(0)
    size = np.asarray(MOVING.size, dtype=np.float64)  # (x, y, z)
    index = rng.uniform(-2.0, size + 1.0, (20000, 3))
    index = index[np.all(np.abs(np.abs(index - (size - 1) / 2) - size / 2) > 1e-6, axis=1)]  # no ties at the edge
    a, b = MOVING.physical_to_normalized_affine()
    grid = torch.as_tensor(MOVING.index_to_physical(index) @ a.T + b).view(1, 1, 1, -1, 3)
    expected = np.all((index >= -0.5) & (index <= size - 0.5), axis=1)
    np.testing.assert_array_equal(within_itk_buffer(grid, MOVING).view(-1).numpy(), expected)
    assert 0.2 < expected.mean() < 0.8
    values = torch.arange(grid.shape[3], dtype=torch.float64).view(1, 1, 1, 1, -1)
    filled, reached = fill_outside_itk_buffer(values, grid, MOVING, -7.5)
    np.testing.assert_array_equal(reached.view(-1).numpy(), expected)
    np.testing.assert_array_equal(filled.view(-1).numpy(), np.where(expected, values.view(-1).numpy(), -7.5))


def test_cli_warp_and_transform_warp_fill_the_same_voxels_as_simpleitk():
    moving = _moving_image()
    disp = _field()
    background = background_value(moving)
    ours = Transform(FIXED, disp).warp(moving)
    cli, share = _warp_image(moving, torch.as_tensor(disp), FIXED, FIXED, "linear", "cpu")
    outside = cli == np.float32(background)
    assert 0.05 < outside.mean() < 0.9 and share == pytest.approx(1.0 - outside.mean(), abs=0.01)
    np.testing.assert_array_equal(ours.array == np.float32(background), outside)  # the same voxels filled
    np.testing.assert_allclose(cli, ours.array, atol=1e-3)
    # and those ITK fills: SimpleITK's resampling with the background as its default value
    reference = sitk.Image([int(s) for s in FIXED.size], sitk.sitkFloat32)
    FIXED.apply_to_sitk(reference)
    image = sitk.GetImageFromArray(moving.array)
    MOVING.apply_to_sitk(image)
    transform = sitk.DisplacementFieldTransform(field_to_sitk(disp, FIXED))
    itk = sitk.GetArrayFromImage(sitk.Resample(image, reference, transform, sitk.sitkLinear, background))
    np.testing.assert_allclose(cli, itk, atol=1e-2)


def test_cli_labels_get_0_beyond_the_same_extent():
    z, y, x = np.indices(MOVING.shape)
    labels = Image((1 + (x // 4) + 4 * (y // 5)).astype(np.int64), MOVING, "labels")  # no 0 inside the map
    cli, share = _warp_labels(labels, torch.as_tensor(_field()), FIXED, FIXED, "cpu")
    intensities = Transform(FIXED, _field()).warp(_moving_image())
    np.testing.assert_array_equal(cli == 0, intensities.array == np.float32(background_value(_moving_image())))
    assert share == pytest.approx((cli != 0).mean())

