"""The refinement's continuation with less smoothing (engine/refine.py ``refine_locally``): its gate and
what it does on motion finer than the refinement's smoothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ADRegNetLib.engine import register
from ADRegNetLib.engine.refine import RefineSettings, refine_field, refine_locally
from ADRegNetLib.engine.settings import LOCAL_REFINE_FACTORS, LOCAL_REFINE_MIN_GAIN
from ADRegNetLib.spatial.filters import gaussian_smooth
from ADRegNetLib.spatial.flow import flow_norm_to_disp_mm, identity_grid
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
    assert "no motion finer than its smoothing" in info["reason"]
    large = {"loss_first": 0.75, "loss_last": 0.68}
    kept, info = refine_locally(fixed, fixed, GEOMETRY, flow, settings, large, 0, 0.03, (0.7, 0.5))
    assert kept is flow and "regularization above 1" in info["reason"]
    edges = RefineSettings(similarity="ngf")
    kept, info = refine_locally(fixed, fixed, GEOMETRY, flow, edges, large, 12, 0.03, (0.7, 0.5))
    assert kept is flow and info["applied"] is False and "normalised gradient fields" in info["reason"]


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


def test_engine_reports_the_continuation_and_a_smoother_regularization_turns_it_off():
    geometry = Geometry((32, 32, 32), (2.0, 2.0, 2.0))
    arr = _texture()[0, 0, :32, :32, :32].numpy() * 1000.0
    fixed, moving = Image(arr, geometry, "fixed"), Image(np.roll(arr, 1, axis=2).copy(), geometry, "moving")
    kw = dict(quality="fast", use_network=False, device="cpu", preset="generic", compute_inverse=False)
    local = register(fixed, moving, **kw).metrics["refinement"]["local_continuation"]
    assert local["min_gain"] == LOCAL_REFINE_MIN_GAIN and local["refinement_gain"] >= 0
    assert local["applied"] == (local["refinement_gain"] > LOCAL_REFINE_MIN_GAIN)
    smoother = register(fixed, moving, regularization=2.0, **kw).metrics["refinement"]["local_continuation"]
    assert smoother["applied"] is False and "regularization above 1" in smoother["reason"]
