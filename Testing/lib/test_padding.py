"""Padding that cuts through anatomy (spatial/padding.py, engine/stages.py ``without_padding``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ADRegNetLib.engine import register
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.padding import box_geometry, constant_border_box, crop_to_box, data_box, working_box
from ADRegNetLib.spatial.transforms import upsampled_disp_mm


def _head(shape=(30, 34, 38), seed=0) -> np.ndarray:
    """A textured ellipsoid ("head") of intensities 50-150 in a noisy background of about 2, min 0."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = (x / 0.8) ** 2 + (y / 0.8) ** 2 + (z / 0.8) ** 2 < 1
    arr = np.where(inside, 100 + 50 * np.sin(6 * x) * np.cos(5 * y) * np.sin(4 * z), 2.0)
    return np.clip(arr + rng.normal(0, 1.0, shape), 0, None).astype(np.float32)


def test_planes_cutting_through_anatomy_are_found_and_background_planes_are_not():
    head = _head()
    assert data_box(head, 0.05, 0.1) is None  # no plane of only the minimum
    stripped = np.where(head > 20, head, 0).astype(np.float32)  # skull-stripped: zero planes around the head
    assert data_box(stripped, 0.05, 0.1) is None  # the head ends on its own
    cut = stripped.copy()
    cut[..., :19] = 0  # a scan that covered only the right half, padded onto the whole grid
    assert data_box(cut, 0.05, 0.1) == (slice(0, 30), slice(0, 34), slice(19, 38))
    both = cut.copy()
    both[22:] = 0
    assert data_box(both, 0.05, 0.1) == (slice(0, 22), slice(0, 34), slice(19, 38))


def test_padding_of_another_value_than_the_minimum_is_found_too():
    """A CT resampled with 0 HU as its default value: planes of 0 (soft-tissue-like) next to a cut body."""
    ct = np.where(_head() > 20, 40.0 + _head() / 10.0, -1000.0).astype(np.float32)  # body about 45-55 HU in air
    ct[22:] = 0.0
    assert data_box(ct, 0.05, 0.1) == (slice(0, 22), slice(0, 34), slice(0, 38))
    assert data_box(np.where(_head() > 20, 40.0, -1000.0).astype(np.float32), 0.05, 0.1) is None  # air all round


def test_cropping_keeps_every_voxel_at_its_physical_position():
    angle = np.deg2rad(20)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1.0]])
    geometry = Geometry((38, 34, 30), (1.5, 2.0, 3.0), (10.0, -20.0, 5.0), direction)
    image = Image(_head(), geometry, "head")
    box = (slice(2, 25), slice(4, 34), slice(19, 38))
    cropped = crop_to_box(image, box)
    assert cropped.array.shape == (23, 30, 19) and cropped.array[0, 0, 0] == image.array[2, 4, 19]
    corner = np.array([[0.0, 0.0, 0.0], [18.0, 29.0, 22.0]])
    np.testing.assert_allclose(cropped.geometry.index_to_physical(corner),
                               geometry.index_to_physical(corner + [19, 4, 2]), atol=1e-9)


def test_engine_leaves_padding_out_and_keeps_the_users_images_and_grids():
    geometry = Geometry((38, 34, 30), (2.0, 2.0, 2.0))
    fixed = Image(_head(seed=1), geometry, "fixed")
    arr = np.roll(_head(seed=2), 1, axis=2)
    arr[..., :19] = arr.min()
    moving = Image(arr, geometry, "moving")
    before = moving.array.copy()
    result = register(fixed, moving, quality="fast", use_network=False, device="cpu", preset="brain-mri")
    padding = result.metrics["padding"]
    padding_box = (slice(0, 30), slice(0, 34), slice(19, 38))
    assert padding["fixed"] is None
    assert padding["moving"] == {"planes_kept_zyx": {"z": [0, 30], "y": [0, 34], "x": [19, 38]},
                                 "size_zyx": [30, 34, 38]}
    assert any("moving image holds one constant value in whole planes" in w and "treated as padding" in w
               for w in result.metrics["warnings"])
    np.testing.assert_array_equal(moving.array, before)  # the user's image untouched
    unpadded = register(fixed, Image(np.ascontiguousarray(arr[..., 19:]), crop_to_box(moving, padding_box).geometry,
                                     "cut"), quality="fast", use_network=False, device="cpu", preset="brain-mri")
    # measured where the moving image has data: the same figures as for the cut image (two runs, whose sums
    # differ in the last digits with the thread count: 5e-5 of NMI alone, 0 in the whole suite)
    for key in ("similarity_before", "similarity_after"):
        assert result.metrics[key] == pytest.approx(unpadded.metrics[key], abs=5e-4), key
    assert result.inverse_disp_mm.shape[1:] == moving.geometry.shape  # outputs on the moving image's own grid
    assert result.warped.geometry.shape == fixed.geometry.shape


def test_the_working_region_leaves_out_constant_border_planes_but_a_margin():
    head = np.where(_head() > 20, _head(), 0).astype(np.float32)  # skull-stripped: exact zeros round the head
    assert working_box(_head(), (2.0, 2.0, 2.0), 16.0, 16) is None  # a noisy background: nothing constant
    padded = np.zeros((60, 34, 38), dtype=np.float32)
    padded[15:45] = head  # 15 planes of zeros above and below, plus the head's own empty planes
    first, last = constant_border_box(padded)[0].start, constant_border_box(padded)[0].stop
    assert 15 < first and last < 45
    z, y, x = working_box(padded, (2.0, 2.0, 2.0), 16.0, 16)
    assert (z.start, z.stop) == (max(0, first - 8), min(60, last + 8)) and y == slice(0, 34) and x == slice(0, 38)
    thin = np.zeros((60, 34, 38), dtype=np.float32)
    thin[29:31] = 50.0 + head[14:16]  # two planes of data: widened to 16 planes around them
    z = working_box(thin, (2.0, 2.0, 2.0), 2.0, 16)[0]
    assert z.stop - z.start == 16 and z.start <= 29 and z.stop >= 31


def test_a_field_on_the_working_region_keeps_its_face_values_beyond_it():
    geometry = Geometry((12, 10, 9), (1.5, 2.0, 2.5), (3.0, -4.0, 7.0))
    box = (slice(2, 7), slice(0, 10), slice(3, 12))
    gen = torch.Generator().manual_seed(0)
    flow = torch.randn((1, 3, 3, 4, 5), generator=gen) * 0.1
    inner = upsampled_disp_mm(flow, box_geometry(geometry, box))
    got = upsampled_disp_mm(flow, geometry, box=box)
    expected = np.pad(inner, [(0, 0)] + [(b.start, n - b.stop) for b, n in zip(box, geometry.shape)], mode="edge")
    np.testing.assert_array_equal(got, expected)


def test_a_fixed_scan_padded_onto_a_larger_grid_is_registered_on_its_own_region():
    """Before, the working grid spanned the padding: a coarser spacing within the quality's working voxels and a
    grid off the scan's own (a sweep's brain case padded by 20 planes of zeros: fast 0.199 -> 0.298 mm). Now 20
    planes of zeros give the result of 8 (the margin the working region keeps) on the same working grid."""
    geometry = Geometry((38, 34, 30), (2.0, 2.0, 2.0))
    moving = Image(np.roll(_head(seed=2), 1, axis=2), geometry, "moving")

    def padded(planes: int) -> Image:
        arr = np.zeros((30 + 2 * planes, 34, 38), dtype=np.float32)
        arr[planes:planes + 30] = _head(seed=1)
        origin = geometry.index_to_physical(np.array([[0.0, 0.0, -float(planes)]]))[0]
        return Image(arr, Geometry((38, 34, 30 + 2 * planes), (2.0, 2.0, 2.0), origin), "fixed")

    kwargs = dict(quality="fast", use_network=False, device="cpu", preset="brain-mri", compute_inverse=False,
                  max_working_voxels=60_000)
    margin = register(padded(8), moving, **kwargs)
    result = register(padded(20), moving, **kwargs)
    assert margin.metrics["padding"]["working_region"] is None  # 8 planes of 2 mm: all within the margin
    assert result.metrics["padding"]["working_region"] == {"z": [12, 58], "y": [0, 34], "x": [0, 38]}
    assert result.metrics["working_grid"] == margin.metrics["working_grid"]  # not coarsened by the padding
    # inside the head (its centre's block) both find the 2 mm roll; the padding still changes the pre-alignment
    # (20 planes: an affine kept, 8: none), so the two fields differ towards the background
    centre = (slice(None), slice(10, 20), slice(12, 22), slice(14, 24))
    padded_centre = result.disp_mm[:, 12:58][centre]
    assert abs(float(padded_centre[0].mean()) - 2.0) < 0.1 and abs(float(margin.disp_mm[centre][0].mean()) - 2.0) < 0.1
    assert np.isfinite(result.disp_mm).all() and result.metrics["jacobian"]["folding_fraction"] == 0


def test_padding_that_cuts_anatomy_gets_no_margin_in_the_working_region():
    """Left out of the similarity anyway (the fixed mask): the working grid ends where the data ends."""
    geometry = Geometry((38, 34, 30), (2.0, 2.0, 2.0))
    arr = _head(seed=1)
    arr[..., :19] = arr.min()  # a scan of the right half, padded onto the whole grid
    result = register(Image(arr, geometry, "fixed"), Image(np.roll(_head(seed=2), 1, axis=2), geometry, "moving"),
                      quality="fast", use_network=False, device="cpu", preset="brain-mri", compute_inverse=False)
    assert result.metrics["padding"]["fixed"]["planes_kept_zyx"]["x"] == [19, 38]
    assert result.metrics["padding"]["working_region"] == {"z": [0, 30], "y": [0, 34], "x": [19, 38]}
    assert result.metrics["working_grid"]["size"] == [19, 34, 30]
