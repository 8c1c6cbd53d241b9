"""The lungs sliding along the chest wall: the smoothing that honours a boundary, the lungs found on a CT, and a
registration of a real CT whose lungs slide (``spatial/sliding.py``, ``engine/sliding.py``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ADRegNetLib.engine import RegistrationError, register
from ADRegNetLib.engine.sliding import LUNG_MAX_HU, lung_region, sliding_for
from ADRegNetLib.io import read_image
from ADRegNetLib.spatial.filters import gaussian_smooth, smooth_over_support, support_of
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.sliding import SlidingRegion, closed_then_opened
from ADRegNetLib.io.transforms import transform_points
from ADRegNetLib.spatial import disp_mm_to_flow_norm, flow_norm_to_disp_mm, integrate_velocity, warp_image

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
LUNG_WINDOW = (-1000.0, 200.0)


def _half_region(shape=(20, 22, 24)) -> torch.Tensor:
    region = torch.zeros((1, 1, *shape))
    region[..., :, :, : shape[2] // 2] = 1.0
    return region


def test_full_leak_is_the_plain_smoothing_of_a_field_and_of_an_update():
    torch.manual_seed(0)
    region = SlidingRegion(_half_region())
    field = torch.randn(1, 3, 20, 22, 24)
    assert torch.allclose(region.smooth(field, 2.0, leak=1.0), gaussian_smooth(field, 2.0), atol=1e-5)
    weight = (torch.rand(1, 1, 20, 22, 24) > 0.3).float()
    update = field * weight
    plain = smooth_over_support(update, 2.0, support_of(weight, 2.0))
    assert torch.allclose(region.smooth(update, 2.0, leak=1.0, weight=weight), plain, atol=1e-5)


def test_no_leak_keeps_each_side_of_a_jump_while_the_gaussian_blurs_it():
    region = SlidingRegion(_half_region())
    field = torch.where(_half_region().bool(), torch.tensor(2.0), torch.tensor(-1.0)).expand(1, 3, 20, 22, 24)
    slid = region.smooth(field.contiguous(), 3.0, leak=0.0)
    assert torch.allclose(slid, field, atol=1e-5)  # each side averaged over itself only
    blurred = gaussian_smooth(field.contiguous(), 3.0)
    assert float((blurred - field).abs().max()) > 1.0  # the plain Gaussian mixes the two sides at the boundary
    partly = region.smooth(field.contiguous(), 3.0, leak=0.1)
    gap = (partly - field).abs()
    assert 0.0 < float(gap.max()) < float((blurred - field).abs().max())
    with pytest.raises(ValueError, match="leak"):
        region.smooth(field.contiguous(), 3.0, leak=1.5)


def test_the_region_is_taken_to_coarser_levels():
    region = SlidingRegion(_half_region())
    coarse = region.at((10, 11, 12), torch.zeros(1))
    assert coarse.shape == (1, 1, 10, 11, 12)
    assert float(coarse[..., :5].min()) == 1.0 and float(coarse[..., 7:].max()) == 0.0


def test_closing_fills_vessels_and_opening_drops_pockets():
    region = torch.zeros((1, 1, 40, 40, 40), dtype=torch.bool)
    region[..., 20:38, 20:38, 20:38] = True
    region[..., 28:30, 28:30, 20:38] = False  # a vessel two voxels across
    region[..., 6:9, 6:9, 6:9] = True  # a pocket three voxels across, apart
    cleaned = closed_then_opened(region, (2, 2, 2), (2, 2, 2))
    assert bool(cleaned[..., 28:30, 28:30, 23:35].all())
    assert not bool(cleaned[..., :15, :15, :15].any())
    assert bool(cleaned[..., 22:36, 22:36, 22:36].all())


def _working(image: Image) -> tuple[torch.Tensor, Geometry]:
    low, high = LUNG_WINDOW
    normalised = np.clip((image.array.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    return torch.from_numpy(normalised)[None, None], image.geometry


def test_the_lungs_of_the_demo_ct_are_found(shared_data):
    fixed = read_image(SAMPLE / "lung_fixed.nii.gz")
    fixed_w, geometry = _working(fixed)
    region = lung_region(fixed_w, LUNG_WINDOW, geometry)
    assert region is not None
    inside = region[0, 0].numpy()
    hu = fixed.array
    assert np.median(hu[inside]) < -800 and (hu[inside] > LUNG_MAX_HU).mean() < 0.1  # parenchyma, vessels filled in
    # the source's own lung mask (elastix test data, on the demo's grid): Dice 0.915 when this was written
    lungs = read_image(shared_data / "lung-ct-elastix-small" / "baseline_lung_mask_small_grid.nii.gz").array > 0
    assert 2 * (inside & lungs).sum() / (inside.sum() + lungs.sum()) > 0.88
    assert (inside & lungs).sum() / inside.sum() > 0.9  # hardly any air outside the body
    soft = np.full(hu.shape, 40.0, dtype=np.float32)  # a CT of soft tissue only (no lungs)
    assert lung_region(torch.from_numpy((soft + 1000) / 1200)[None, None], LUNG_WINDOW, geometry) is None


def test_the_choice_is_checked_and_the_record_says_why():
    fixed = read_image(SAMPLE / "lung_fixed.nii.gz")
    fixed_w, geometry = _working(fixed)
    region, info = sliding_for("auto", "lung-ct", True, fixed_w, LUNG_WINDOW, geometry)
    assert region is not None and info["applied"] and 0.15 < info["lung_share"] < 0.45
    assert sliding_for("auto", "brain-mri", True, fixed_w, LUNG_WINDOW, geometry)[0] is None
    off = sliding_for("off", "lung-ct", True, fixed_w, LUNG_WINDOW, geometry)
    assert off[0] is None and off[1]["reason"] == "switched off by the user"
    assert "not a CT" in sliding_for("auto", "lung-ct", False, fixed_w, LUNG_WINDOW, geometry)[1]["reason"]
    with pytest.raises(RegistrationError, match="CT fixed image"):
        sliding_for("on", "generic", False, fixed_w, LUNG_WINDOW, geometry)
    with pytest.raises(RegistrationError, match="auto, on, off"):
        register(fixed, fixed, sliding="yes")


def _slid_pair(shift_mm: float) -> tuple[Image, Image, np.ndarray, np.ndarray]:
    """The demo fixed CT and a moving image whose lungs alone moved about ``shift_mm`` towards the head (their
    velocity stops at the lungs' boundary within a Gaussian of one voxel, integrated by scaling and squaring: they
    slide along the chest wall), with landmark pairs on lung voxels near that boundary."""
    fixed = read_image(SAMPLE / "lung_fixed.nii.gz")
    fixed_w, g = _working(fixed)
    lungs = lung_region(fixed_w, LUNG_WINDOW, g)
    weight = gaussian_smooth(lungs.float(), 1.0)
    velocity = torch.zeros((1, 3, *g.shape))
    velocity[:, 2] = shift_mm * weight[:, 0]  # LPS z: superior
    u = flow_norm_to_disp_mm(integrate_velocity(disp_mm_to_flow_norm(velocity, g), 7), g)
    u_inv = flow_norm_to_disp_mm(integrate_velocity(disp_mm_to_flow_norm(-velocity, g), 7), g)
    moving = warp_image(torch.from_numpy(fixed.array)[None, None], u_inv, g, padding_mode="border")[0, 0].numpy()
    from scipy import ndimage
    inside = lungs[0, 0].numpy()
    depth = ndimage.distance_transform_edt(inside, sampling=g.spacing[::-1])
    candidates = np.argwhere((depth > 2.0) & (depth <= 8.0))
    candidates = candidates[(candidates > 3).all(axis=1) & (candidates < np.array(g.shape) - 4).all(axis=1)]
    picked = candidates[np.random.default_rng(0).choice(len(candidates), size=60, replace=False)]
    fixed_points = g.index_to_physical(picked[:, ::-1].astype(np.float64))
    moving_points = np.asarray(transform_points(u[0].numpy(), g, fixed_points))
    return fixed, Image(moving.astype(np.float32), g, "moving"), fixed_points, moving_points


@pytest.mark.slow
def test_lungs_that_slide_register_closer_with_sliding_than_without():
    fixed, moving, fixed_points, moving_points = _slid_pair(6.0)
    errors = {}
    for choice in ("off", "auto"):
        result = register(fixed, moving, quality="fast", preset="lung-ct", sliding=choice, compute_inverse=False,
                          use_network=False, fixed_landmarks=fixed_points, moving_landmarks=moving_points,
                          landmarks_guide=False)
        errors[choice] = result.metrics["tre_after"]["mean"]
        assert result.metrics["sliding"]["applied"] is (choice == "auto")
        assert result.metrics["jacobian"]["folding_fraction"] < 1e-3
    assert errors["auto"] < 0.75 * errors["off"], errors  # 0.75 against 1.34 mm when written


def test_the_lungs_are_found_whatever_the_grid_axes_the_scan_was_stored_along():
    fixed = read_image(SAMPLE / "lung_fixed.nii.gz")
    fixed_w, geometry = _working(fixed)
    # cut through the lungs at the 30th of 64 slices: they cover about 40 % of the new top face, which is not air
    # outside the body because that face's axis runs head to feet
    fixed_w = fixed_w[..., :30, :, :].contiguous()
    g = Geometry((geometry.size[0], geometry.size[1], 30), spacing=geometry.spacing, origin=geometry.origin,
                 direction=geometry.direction)
    axial = lung_region(fixed_w, LUNG_WINDOW, g)
    assert axial is not None and float(axial[0, 0, -1].float().mean()) > 0.3
    # the same scan stored with its grid axes permuted: array (x, z, y), grid axes (y, z, x)
    permuted = Geometry((g.size[1], g.size[2], g.size[0]), spacing=g.spacing[[1, 2, 0]], origin=g.origin,
                        direction=g.direction[:, [1, 2, 0]])
    array = np.ascontiguousarray(fixed_w[0, 0].numpy().transpose(2, 0, 1))
    stored = lung_region(torch.from_numpy(array)[None, None], LUNG_WINDOW, permuted)
    assert stored is not None
    assert np.array_equal(stored[0, 0].numpy().transpose(1, 2, 0), axial[0, 0].numpy())
