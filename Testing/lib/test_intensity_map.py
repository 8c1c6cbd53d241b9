"""Monotone intensity maps (spatial/intensity_map.py) and the refinement's midway map (engine/modality.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ADRegNetLib.engine import register
from ADRegNetLib.engine.modality import midway_intensities
from ADRegNetLib.spatial.filters import gaussian_smooth
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.intensity_map import midway_knots, piecewise_linear


def _tissue_like(shape=(24, 26, 28), seed=0) -> torch.Tensor:
    """(1, 1, Z, Y, X) smooth intensities in [0, 1], with a dark background around a bright block."""
    gen = torch.Generator().manual_seed(seed)
    vol = gaussian_smooth(torch.rand((1, 1, *shape), generator=gen), 1.5)
    vol = (vol - vol.min()) / (vol.max() - vol.min())
    vol[..., :3, :, :] = 0.0  # background slabs
    vol[..., :, :3, :] = 0.0
    return vol


@pytest.mark.parametrize("knots_in, knots_out, values, expected, slopes", [
    # identity, extended below the first and above the last knot
    ([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.5, 1.5, 3.0, -1.0], [0.5, 1.5, 3.0, -1.0], [1, 1, 1, 1]),
    # a bend at 1: slope 2 then 0.5, both ends extended along their own segment
    ([0.0, 1.0, 3.0], [0.0, 2.0, 3.0], [0.5, 2.0, 5.0, -1.0], [1.0, 2.5, 4.0, -2.0], [2, 0.5, 0.5, 2]),
])
def test_piecewise_linear_values_and_slopes(knots_in, knots_out, values, expected, slopes):
    mapped, slope = piecewise_linear(torch.tensor(values), torch.tensor(knots_in, dtype=torch.float64),
                                     torch.tensor(knots_out, dtype=torch.float64))
    assert mapped.tolist() == pytest.approx(expected)
    assert slope.tolist() == pytest.approx(slopes)


@pytest.mark.parametrize("knots_in, knots_out, message", [
    ([0.0, 1.0, 1.0], [0.0, 1.0, 2.0], "strictly increasing"),
    ([0.0], [0.0], "K >= 2"),
    ([0.0, 1.0], [0.0, 1.0, 2.0], "K >= 2"),
])
def test_piecewise_linear_rejects_bad_knots(knots_in, knots_out, message):
    with pytest.raises(ValueError, match=message):
        piecewise_linear(torch.zeros(4), torch.tensor(knots_in), torch.tensor(knots_out))


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_midway_maps_undo_a_gamma_between_two_aligned_images(gamma):
    fixed = _tissue_like()
    moving = fixed ** gamma * 300.0  # another intensity curve and scale, same anatomy
    tissue = (fixed > 0.05) & (moving > 0.05 * 300.0)
    qf, qm, mid = midway_knots(fixed, moving, tissue)
    assert bool((qf[1:] > qf[:-1]).all()) and bool((qm[1:] > qm[:-1]).all()) and float(mid[0]) == 0.0
    f_mapped, _ = piecewise_linear(fixed, qf, mid)
    m_mapped, slope = piecewise_linear(moving, qm, mid)
    scale = float(mid[-1])
    gap_before = float((fixed * scale - moving * scale / 300.0).abs()[tissue].mean()) / scale
    gap_after = float((f_mapped - m_mapped).abs()[tissue].mean()) / scale
    # measured: 0.20 / 0.24 before, 0.0002 after (gamma 0.5 / 2; piecewise-linear over 32 quantiles)
    assert gap_after < 0.002 and gap_after < 0.01 * gap_before, (gap_before, gap_after)
    assert bool((slope >= 0).all())


def test_sample_quantiles_match_torch_quantile():
    from ADRegNetLib.spatial.intensity_map import sample_quantiles

    values = torch.rand(10_001, generator=torch.Generator().manual_seed(2))
    levels = [0.0, 0.005, 0.25, 0.5, 0.99, 1.0]
    expected = torch.quantile(values.double(), torch.tensor(levels, dtype=torch.float64))
    assert torch.allclose(sample_quantiles(values, levels), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="no values"):
        sample_quantiles(torch.zeros(0), levels)


def test_midway_knots_need_tissue():
    fixed = _tissue_like()
    none = torch.zeros_like(fixed, dtype=torch.bool)
    assert midway_knots(fixed, fixed, none) is None
    flat = torch.ones_like(fixed)  # no intensity range: nothing to match
    assert midway_knots(flat, flat, flat > 0) is None
    with pytest.raises(ValueError, match="one shape"):
        midway_knots(fixed, fixed[..., 1:], none)


def test_midway_intensities_leave_identical_images_unchanged():
    """Two identical images: the map is the identity, so a pair without motion stays without motion."""
    image = _tissue_like(seed=3)
    zero = torch.zeros((1, 3, *image.shape[2:]))
    fixed_m, moving_m, slope, info = midway_intensities(image, image.clone(), zero)
    assert info["applied"] and info["largest_quantile_gap"] == 0.0
    assert torch.allclose(fixed_m, image, atol=1e-6) and torch.allclose(moving_m, image, atol=1e-6)
    assert torch.allclose(slope, torch.ones_like(slope), atol=1e-4)


def test_midway_intensities_follow_the_field_and_the_mask():
    fixed = _tissue_like(seed=4)
    shifted = torch.roll(fixed, 2, dims=4) ** 2  # moving = fixed shifted by 2 voxels along x, gamma 2
    size_x = fixed.shape[4]
    flow = torch.zeros((1, 3, *fixed.shape[2:]))
    flow[:, 0] = 2 * 2.0 / (size_x - 1)  # sample the moving image 2 voxels further along x: aligned
    fixed_m, moving_m, _, info = midway_intensities(fixed, shifted, flow)
    assert info["applied"] and info["largest_quantile_gap"] > 0.1
    aligned = torch.roll(moving_m, -2, dims=4)[..., 4:-4]
    assert float((fixed_m[..., 4:-4] - aligned).abs().mean()) < 0.01
    empty = torch.zeros_like(fixed, dtype=torch.bool)
    same_f, same_m, slope, info = midway_intensities(fixed, shifted, flow, empty)
    assert not info["applied"] and slope is None and same_f is fixed and same_m is shifted
    assert "too few voxels" in info["reason"]


def test_register_reports_the_intensity_map_for_one_mri_contrast_only():
    geometry = Geometry((32, 32, 32), (2.0, 2.0, 2.0))
    gen = torch.Generator().manual_seed(6)
    arr = gaussian_smooth(torch.rand((1, 1, 32, 32, 32), generator=gen), 1.5)[0, 0].numpy()
    arr = (arr - arr.min()) / (arr.max() - arr.min())
    kw = dict(quality="fast", use_network=False, device="cpu", preset="generic", compute_inverse=False)
    mri = register(Image(arr * 1000.0, geometry, "fixed"),
                   Image((np.roll(arr, 1, axis=2) ** 1.5 * 700.0).astype(np.float32), geometry, "moving"), **kw)
    mapped = mri.metrics["refinement"]["intensity_map"]
    start = mri.metrics["intensity_normalization"]["start_intensity_map"]  # undone before the optimisation already
    assert start["applied"] and start["largest_quantile_gap"] > 0.02, start
    assert mapped["applied"] and mapped["knots"] >= 3 and mapped["largest_quantile_gap"] < start["largest_quantile_gap"]
    ct = arr * 300.0 - 1000.0  # HU: air-like, so recognised as CT
    as_ct = register(Image(ct, geometry, "fixed"), Image(np.roll(ct, 1, axis=2).copy(), geometry, "moving"), **kw)
    assert as_ct.metrics["refinement"]["intensity_map"] is None


@pytest.mark.parametrize("fixed_mm, moving_mm, working_mm, expected", [
    ((2.0, 2.0, 2.0), (2.0, 2.0, 6.0), 2.0, 3.0),    # thick moving slices
    ((1.0, 1.0, 1.0), (1.0, 1.0, 5.0), 2.0, 2.5),    # both finer than the working grid in-plane
    ((1.5, 1.5, 3.0), (2.0, 2.0, 2.0), 2.0, 1.5),    # the benchmark's oblique case
    ((0.5, 0.5, 0.5), (1.0, 1.0, 1.0), 2.0, 1.0),    # both finer than the working grid
])
def test_voxel_volume_ratio_as_seen_on_the_working_grid(fixed_mm, moving_mm, working_mm, expected):
    from ADRegNetLib.spatial.resolution import voxel_volume_ratio

    def image(spacing):
        return Geometry((4, 4, 4), spacing)

    assert voxel_volume_ratio(image(fixed_mm), image(moving_mm), working_mm) == pytest.approx(expected)
    assert voxel_volume_ratio(image(moving_mm), image(fixed_mm), working_mm) == pytest.approx(expected)


def test_register_leaves_the_map_out_for_a_much_blurrier_image():
    """Moving slices three times as thick as the fixed image's: no quantile map, and the metrics say why."""
    geometry = Geometry((32, 32, 48), (2.0, 2.0, 2.0))
    gen = torch.Generator().manual_seed(9)
    arr = gaussian_smooth(torch.rand((1, 1, 48, 32, 32), generator=gen), 1.5)[0, 0].numpy()
    arr = (arr - arr.min()) / (arr.max() - arr.min())
    thick = Geometry((32, 32, 16), (2.0, 2.0, 6.0))  # every third slice, 6 mm apart
    moving = Image(np.ascontiguousarray(arr[::3]) * 700.0, thick, "moving")
    result = register(Image(arr * 1000.0, geometry, "fixed"), moving, quality="fast", use_network=False,
                      device="cpu", preset="generic", compute_inverse=False)
    mapped = result.metrics["refinement"]["intensity_map"]
    assert not mapped["applied"] and "3.0 times" in mapped["reason"], mapped
