"""The refinement's continuation with less smoothing (engine/refine.py ``refine_locally``): its gate and
what it does on motion finer than the refinement's smoothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ADRegNetLib.engine import register
from ADRegNetLib.engine.refine import RefineSettings, fine_part, fine_share, refine_field, refine_locally
from ADRegNetLib.engine.refine_settings import (LOCAL_REFINE_MIN_FINE_MM_TWO_CONTRASTS,
                                                LOCAL_REFINE_MIN_FINE_SHARE_TWO_CONTRASTS)
from ADRegNetLib.engine.settings import (LOCAL_REFINE_FACTORS, LOCAL_REFINE_FINE_SIGMA_MM, LOCAL_REFINE_MIN_FINE_SHARE,
                                         LOCAL_REFINE_MIN_GAIN)
from ADRegNetLib.spatial.filters import gaussian_smooth
from ADRegNetLib.spatial.flow import disp_mm_to_flow_norm, flow_norm_to_disp_mm, identity_grid
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image

SHAPE = (40, 40, 40)
GEOMETRY = Geometry(SHAPE[::-1], (2.0, 2.0, 2.0))


def _texture(seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    image = gaussian_smooth(torch.rand((1, 1, *SHAPE), generator=gen), 1.2)
    return (image - image.min()) / (image.max() - image.min())


def _local_motion(amplitude_vox: float = 1.2, wavelength_vox: float = 14.0) -> torch.Tensor:
    """(1, 3, Z, Y, X) displacement in voxels (x, y, z order): each component a product of sines whose
    wavelength is well below the refinement's smoothing (sigma 5 voxels) scale."""
    z, y, x = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in SHAPE], indexing="ij")
    k = 2 * np.pi / wavelength_vox
    ux = amplitude_vox * torch.sin(k * y) * torch.sin(k * z)
    uy = amplitude_vox * torch.sin(k * x + 1.0) * torch.sin(k * z)
    uz = amplitude_vox * torch.sin(k * x) * torch.sin(k * y + 2.0)
    return torch.stack([ux, uy, uz])[None]


def _warped(image: torch.Tensor, disp_vox: torch.Tensor) -> torch.Tensor:
    """``image`` sampled at x + disp(x) (trilinear, border)."""
    size = torch.tensor(SHAPE[::-1], dtype=torch.float32).view(1, 3, 1, 1, 1)
    grid = identity_grid(SHAPE, image) + (disp_vox * 2.0 / (size - 1)).permute(0, 2, 3, 4, 1)
    return torch.nn.functional.grid_sample(image, grid, align_corners=True, padding_mode="border")


def _error_vox(flow: torch.Tensor, truth_vox: torch.Tensor) -> float:
    disp_vox = flow_norm_to_disp_mm(flow, GEOMETRY) / 2.0  # 2 mm voxels, axes aligned
    return float((disp_vox - truth_vox)[..., 8:-8, 8:-8, 8:-8].norm(dim=1).mean())


def test_gate_keeps_the_field_below_the_gain_or_without_steps_or_for_edges():
    fixed = _texture()
    flow = torch.full((1, 3, *SHAPE), 0.01)
    settings = RefineSettings()
    small = {"loss_first": 0.700, "loss_last": 0.690}
    kept, info = refine_locally(fixed, fixed, GEOMETRY, flow, settings, small, 12, 0.03, (0.7, 0.5))
    assert kept is flow and info["applied"] is False
    assert info["refinement_gain"] == pytest.approx(0.01) and info["min_gain"] == 0.03
    assert info["reason"].startswith("neither the refinement's gain nor its update's fine share")
    large = {"loss_first": 0.75, "loss_last": 0.68}
    kept, info = refine_locally(fixed, fixed, GEOMETRY, flow, settings, large, 0, 0.03, (0.7, 0.5))
    assert kept is flow and "regularization above 1" in info["reason"]
    # edge directions (two contrasts): the engine gates by the fine share and its length (an infinite min_gain)
    edges = RefineSettings(similarity="ngf")
    kept, info = refine_locally(fixed, fixed, GEOMETRY, flow, edges, large, 12, float("inf"), (0.7, 0.5),
                                fine=LOCAL_REFINE_MIN_FINE_SHARE_TWO_CONTRASTS - 0.01,
                                min_fine=LOCAL_REFINE_MIN_FINE_SHARE_TWO_CONTRASTS)
    assert kept is flow and info["applied"] is False and info["reason"].startswith("neither")
    # the share above its threshold but the finer part too short (noise raises the share, not the length)
    kept, info = refine_locally(fixed, fixed, GEOMETRY, flow, edges, large, 12, float("inf"), (0.7, 0.5),
                                fine=0.9, min_fine=LOCAL_REFINE_MIN_FINE_SHARE_TWO_CONTRASTS,
                                fine_mm=0.5, min_fine_mm=LOCAL_REFINE_MIN_FINE_MM_TWO_CONTRASTS)
    assert kept is flow and info["applied"] is False and info["fine_mm"] == 0.5
    assert info["min_fine_mm"] == LOCAL_REFINE_MIN_FINE_MM_TWO_CONTRASTS


def test_gate_counts_the_descents_not_the_step_of_the_switch_to_the_refined_image():
    """The loss falls when the refinement starts sampling the refined moving image (less blur), without
    any motion: the gate takes the gain without that step."""
    fixed = _texture()
    flow = torch.full((1, 3, *SHAPE), 0.01)
    switched = {"loss_first": 0.700, "loss_last": 0.660, "loss_at_switch": [0.680, 0.665]}
    kept, info = refine_locally(fixed, fixed, GEOMETRY, flow, RefineSettings(), switched, 12, 0.03, (0.7, 0.5))
    assert kept is flow and info["applied"] is False
    assert info["refinement_gain"] == pytest.approx(0.025)  # 0.04 less the switch's 0.015


def test_continuation_recovers_motion_finer_than_the_smoothing():
    """Motion of a 14-voxel wavelength: the refinement (sigma 5 voxels) leaves most of it and gains a
    lot of local NCC; the gate opens, the stages with less smoothing bring the field closer to the truth."""
    fixed = _texture()
    truth = _local_motion()
    moving = _warped(fixed, -truth)  # moving(x - u(x)) ~ fixed(x): fixed x is found at moving x + u(x)
    settings = RefineSettings(steps=12)
    flow, info = refine_field(fixed, moving, GEOMETRY, torch.zeros((1, 3, *SHAPE)), settings)
    gain = info["loss_first"] - info["loss_last"]
    assert gain > LOCAL_REFINE_MIN_GAIN, info
    after_refinement = _error_vox(flow, truth)
    continued, local = refine_locally(fixed, moving, GEOMETRY, flow, settings, info, 12, LOCAL_REFINE_MIN_GAIN,
                                      LOCAL_REFINE_FACTORS)
    assert local["applied"] is True and [s["factor"] for s in local["stages"]] == list(LOCAL_REFINE_FACTORS)
    assert local["stages"][-1]["loss_last"] < info["loss_last"]
    assert _error_vox(continued, truth) < 0.8 * after_refinement, (after_refinement, _error_vox(continued, truth))


def test_two_contrasts_continue_by_edge_directions_on_motion_finer_than_the_smoothing():
    """The same fine motion between the texture and its inverted contrast: normalised gradient fields refine, the
    update's fine share opens the gate (no gain asked for), and the stages with less smoothing come closer."""
    fixed = _texture()
    truth = _local_motion(amplitude_vox=2.0)
    moving = 1.0 - _warped(fixed, -truth)  # edges of the other sign
    settings = RefineSettings(steps=24, similarity="ngf")
    start = torch.zeros((1, 3, *SHAPE))
    flow, info = refine_field(fixed, moving, GEOMETRY, start, settings)
    everywhere = torch.ones((1, 1, *SHAPE), dtype=torch.bool)
    fine, fine_mm = fine_part(flow - start, GEOMETRY, everywhere, LOCAL_REFINE_FINE_SIGMA_MM)
    assert fine == pytest.approx(fine_share(flow - start, GEOMETRY, everywhere, LOCAL_REFINE_FINE_SIGMA_MM))
    assert fine >= LOCAL_REFINE_MIN_FINE_SHARE_TWO_CONTRASTS, fine
    assert fine_mm >= LOCAL_REFINE_MIN_FINE_MM_TWO_CONTRASTS, fine_mm  # motion of up to 4 mm in 28 mm waves
    after_refinement = _error_vox(flow, truth)
    continued, local = refine_locally(fixed, moving, GEOMETRY, flow, settings, info, 12, float("inf"),
                                      LOCAL_REFINE_FACTORS, fine=fine,
                                      min_fine=LOCAL_REFINE_MIN_FINE_SHARE_TWO_CONTRASTS, fine_mm=fine_mm,
                                      min_fine_mm=LOCAL_REFINE_MIN_FINE_MM_TWO_CONTRASTS)
    assert local["applied"] is True and local["reason"].startswith("the fine share")
    assert _error_vox(continued, truth) < 0.8 * after_refinement, (after_refinement, _error_vox(continued, truth))


def test_engine_reports_the_continuation_and_a_smoother_regularization_turns_it_off():
    geometry = Geometry((32, 32, 32), (2.0, 2.0, 2.0))
    arr = _texture()[0, 0, :32, :32, :32].numpy() * 1000.0
    fixed, moving = Image(arr, geometry, "fixed"), Image(np.roll(arr, 1, axis=2).copy(), geometry, "moving")
    kw = dict(quality="fast", use_network=False, device="cpu", preset="generic", compute_inverse=False)
    local = register(fixed, moving, **kw).metrics["refinement"]["local_continuation"]
    assert local["min_gain"] == LOCAL_REFINE_MIN_GAIN and local["refinement_gain"] >= 0
    assert local["applied"] == (local["refinement_gain"] > LOCAL_REFINE_MIN_GAIN
                                or local["fine_share"] >= LOCAL_REFINE_MIN_FINE_SHARE)
    assert 0.0 <= local["fine_share"] <= 1.5 and local["min_fine_share"] == LOCAL_REFINE_MIN_FINE_SHARE
    smoother = register(fixed, moving, regularization=2.0, **kw).metrics["refinement"]["local_continuation"]
    assert smoother["applied"] is False and "regularization above 1" in smoother["reason"]


def test_fine_share_of_an_update_measures_what_is_finer_than_its_scale():
    """A uniform shift has no part finer than 10 mm, voxel-level noise and a 28 mm wavelength are nearly
    all finer, a 240 mm wavelength little; a region limits where it is measured."""
    everywhere = torch.ones((1, 1, *SHAPE), dtype=torch.bool)
    shift = disp_mm_to_flow_norm(torch.full((1, 3, *SHAPE), 1.5), GEOMETRY)
    assert fine_share(shift, GEOMETRY, everywhere, 10.0) < 1e-3
    noise = disp_mm_to_flow_norm(torch.randn((1, 3, *SHAPE), generator=torch.Generator().manual_seed(0)), GEOMETRY)
    assert fine_share(noise, GEOMETRY, everywhere, 10.0) > 0.95
    assert fine_share(disp_mm_to_flow_norm(_local_motion() * 2.0, GEOMETRY), GEOMETRY, everywhere, 10.0) > 0.9
    long_wave = disp_mm_to_flow_norm(_local_motion(wavelength_vox=120.0) * 2.0, GEOMETRY)
    assert fine_share(long_wave, GEOMETRY, everywhere, 10.0) < 0.3
    half = everywhere.clone()
    half[..., :20] = False
    mixed = torch.where(half.expand(1, 3, *SHAPE), noise, shift)
    assert fine_share(mixed, GEOMETRY, half, 10.0) > fine_share(mixed, GEOMETRY, ~half, 10.0)
    assert fine_share(torch.zeros_like(shift), GEOMETRY, everywhere, 10.0) == 0.0


def test_a_fine_update_opens_the_gate_below_the_gain():
    """Small local motion gains little local NCC; the fine share of the refinement's update opens the
    gate then (and only from ``min_fine`` on)."""
    fixed = _texture()
    truth = _local_motion(amplitude_vox=0.6)
    moving = _warped(fixed, -truth)
    settings = RefineSettings(steps=12)
    start = torch.zeros((1, 3, *SHAPE))
    flow, info = refine_field(fixed, moving, GEOMETRY, start, settings)
    share = fine_share(flow - start, GEOMETRY, torch.ones((1, 1, *SHAPE), dtype=torch.bool), 10.0)
    no_gain = float("inf")
    kept, closed = refine_locally(fixed, moving, GEOMETRY, flow, settings, info, 12, no_gain, LOCAL_REFINE_FACTORS,
                                  fine=share, min_fine=share + 0.01)
    assert kept is flow and closed["applied"] is False and closed["fine_share"] == pytest.approx(share, abs=1e-4)
    continued, opened = refine_locally(fixed, moving, GEOMETRY, flow, settings, info, 12, no_gain,
                                       LOCAL_REFINE_FACTORS, fine=share, min_fine=share)
    assert opened["applied"] is True and opened["reason"].startswith("the fine share of the refinement's update")
    assert _error_vox(continued, truth) < _error_vox(flow, truth)
