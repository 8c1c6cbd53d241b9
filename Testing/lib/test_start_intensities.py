"""One contrast with a curve between the scans, undone before the optimisation (``engine.refinement_stage.start_intensities``).

The refinement already put two aligned images of one contrast half-way between their intensity curves; the MIND
optimisation before it saw them as given, and a strong curve (a histogram-equalised moving image) pulled it off
(the brain benchmark case: 0.54 mm, in its own intensities 0.18). The map now runs before the optimisation too.
"""
from __future__ import annotations

import numpy as np
import torch

from ADRegNetLib.engine import register
from ADRegNetLib.engine.refinement_stage import start_intensities
from ADRegNetLib.spatial.filters import gaussian_smooth
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.transform import Transform
from benchmarks.deformations import integrate_svf, random_smooth_svf, scale_svf
from brain_helpers import needs_t1, t1_array



def _tissue_like(shape=(24, 26, 28), seed=0) -> torch.Tensor:
    """(1, 1, Z, Y, X) smooth intensities in [0, 1] with background slabs."""
    vol = gaussian_smooth(torch.rand((1, 1, *shape), generator=torch.Generator().manual_seed(seed)), 1.5)
    vol = (vol - vol.min()) / (vol.max() - vol.min())
    vol[..., :3, :, :] = 0.0
    vol[..., :, :3, :] = 0.0
    return vol


def test_a_curve_between_unaligned_scans_is_undone_on_the_region_both_show_tissue():
    fixed = _tissue_like()
    moving = torch.roll(fixed, 2, dims=4) ** 2 * 0.8  # another curve, not aligned: quantiles do not need it
    work = Geometry(tuple(fixed.shape[2:][::-1]), (2.0, 2.0, 2.0))
    fixed_m, moving_m, info = start_intensities(fixed, moving, None, work, work, work)
    assert info["applied"] and info["largest_quantile_gap"] > 0.1
    aligned_before = (fixed - torch.roll(moving, -2, dims=4))[..., 4:-4].abs().mean()
    aligned_after = (fixed_m - torch.roll(moving_m, -2, dims=4))[..., 4:-4].abs().mean()
    assert float(aligned_after) < 0.1 * float(aligned_before), (float(aligned_before), float(aligned_after))
    # identical images: the map is the identity
    same_f, same_m, same = start_intensities(fixed, fixed.clone(), None, work, work, work)
    assert same["largest_quantile_gap"] == 0.0 and torch.allclose(same_f, fixed, atol=1e-6)
    # nothing in the region: left alone, and said why
    empty = torch.zeros_like(fixed, dtype=torch.bool)
    left_f, left_m, none = start_intensities(fixed, moving, empty, work, work, work)
    assert not none["applied"] and left_f is fixed and left_m is moving and "too few voxels" in none["reason"]


def test_a_bias_field_is_no_curve_and_is_left_to_the_refinement():
    """A smooth gain across the image (a bias field, amplitude 0.6 in the log) bends the whole image's quantiles:
    the smoothed images correlate 0.45 there (a curve: 0.88-0.95), so the start map is left out, and says why."""
    fixed = _tissue_like(seed=2)
    work = Geometry(tuple(fixed.shape[2:][::-1]), (2.0, 2.0, 2.0))
    ramp = torch.linspace(-1.0, 1.0, fixed.shape[4]).view(1, 1, 1, 1, -1).expand_as(fixed)
    biased = fixed * torch.exp(0.6 * ramp)
    same_f, same_m, info = start_intensities(fixed, biased, None, work, work, work)
    assert not info["applied"] and info["correlation"] < 0.82 and "bias field" in info["reason"]
    assert same_f is fixed and same_m is biased
    assert start_intensities(fixed, fixed ** 2, None, work, work, work)[2]["correlation"] > 0.82


def test_a_much_blurrier_image_is_not_matched_by_quantiles():
    fixed = _tissue_like(seed=1)
    work = Geometry(tuple(fixed.shape[2:][::-1]), (2.0, 2.0, 2.0))
    thick = Geometry(tuple(fixed.shape[2:][::-1]), (2.0, 2.0, 6.0))
    same_f, same_m, info = start_intensities(fixed, fixed ** 2, None, work, work, thick)
    assert not info["applied"] and "3.0 times" in info["reason"] and same_f is fixed


def test_register_records_the_start_map_for_one_mri_contrast_only():
    geometry = Geometry((32, 32, 32), (2.0, 2.0, 2.0))
    arr = gaussian_smooth(torch.rand((1, 1, 32, 32, 32), generator=torch.Generator().manual_seed(6)), 1.5)[0, 0].numpy()
    arr = (arr - arr.min()) / (arr.max() - arr.min())
    kw = dict(quality="fast", use_network=False, device="cpu", preset="generic", compute_inverse=False)
    mri = register(Image(arr * 1000.0, geometry, "fixed"),
                   Image((np.roll(arr, 1, axis=2) ** 1.5 * 700.0).astype(np.float32), geometry, "moving"), **kw)
    assert mri.metrics["intensity_normalization"]["start_intensity_map"]["applied"]
    ct = arr * 300.0 - 1000.0  # HU: CT keeps its Hounsfield window instead
    as_ct = register(Image(ct, geometry, "fixed"), Image(np.roll(ct, 1, axis=2).copy(), geometry, "moving"), **kw)
    assert "start_intensity_map" not in as_ct.metrics["intensity_normalization"]
    two = register(Image(arr * 1000.0, geometry, "fixed"), Image((1.0 - np.roll(arr, 1, axis=2)) * 700.0, geometry,
                                                                 "moving"), multimodal=True, **kw)
    assert "start_intensity_map" not in two.metrics["intensity_normalization"]


def _sigmoid(array: np.ndarray, steepness: float) -> np.ndarray:
    """``array`` through a sigmoid about its median (a strong monotone curve: dark and bright tissue compressed)."""
    scaled = (array - np.percentile(array, 50)) / (np.percentile(array, 99) - np.percentile(array, 1))
    return (1.0 / (1.0 + np.exp(-steepness * scaled))).astype(np.float32)


@needs_t1
def test_a_brain_through_a_strong_curve_registers_about_as_closely_as_in_its_own_intensities():
    """The real T1 at 2 mm (cropped to 64 x 80 x 96 voxels about the brain), deformed by a smooth random field (3 mm
    mean inside the brain), the moving image through a steep sigmoid: fast, no network, mean field error inside the
    brain 0.563 mm without the start map, 0.250 with it (0.239 in its own intensities; the whole image: 0.224 and
    0.216)."""
    t1 = np.ascontiguousarray(t1_array()[16:144:2, 16:176:2, 16:208:2])
    geometry = Geometry(t1.shape[::-1], (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    brain = t1 > 0.1 * t1.max()
    velocity, truth = scale_svf(random_smooth_svf(geometry, np.random.default_rng(0), 40.0), geometry, brain, 3.0)
    moving = Transform(geometry, integrate_svf(-velocity, geometry)).warp(Image(t1, geometry, "moving")).array
    errors = []
    for shown in (moving, _sigmoid(moving, 6.0)):
        result = register(Image(t1, geometry, "fixed"), Image(np.ascontiguousarray(shown), geometry, "moving"),
                          quality="fast", use_network=False, device="cpu", compute_inverse=False, seed=0,
                          preset="brain-mri")
        errors.append(float(np.linalg.norm(result.disp_mm - truth, axis=0)[brain].mean()))
    assert result.metrics["intensity_normalization"]["start_intensity_map"]["largest_quantile_gap"] > 0.3
    assert errors[1] < errors[0] + 0.1, errors
