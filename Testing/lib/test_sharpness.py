"""One image blurrier than the other on the same grid: measured from content (``spatial/sharpness.py``) and matched
before the optimisation (``engine/sharpness.py``)."""
from __future__ import annotations


import numpy as np
import pytest
import torch

import ADRegNetLib.engine.pipeline as pipeline
from ADRegNetLib.engine import register
from ADRegNetLib.engine.sharpness import SHARPNESS_MATCH_MIN_SIGMA_VOXELS, matched_sharpness
from ADRegNetLib.spatial.filters import gaussian_smooth
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.sharpness import blur_to_match, edge_taper
from ADRegNetLib.spatial.transform import Transform
from benchmarks.deformations import integrate_svf, random_smooth_svf, scale_svf
from brain_helpers import needs_t1, t1_array



def _t1(step: int = 2, crop: int = 0) -> np.ndarray:
    """The real T1 (1 mm) taken every ``step`` voxels, less ``crop`` voxels at each face, (Z, Y, X) float32."""
    vol = t1_array()[::step, ::step, ::step]
    return np.ascontiguousarray(vol[crop:vol.shape[0] - crop, crop:vol.shape[1] - crop, crop:vol.shape[2] - crop])


def _volume(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]


@needs_t1
@pytest.mark.parametrize("blur, expected, gain", [
    # (z, y, x) Gaussian of the second image, the blur read for the first (measured 0.97 / 1.02 / 1.01 for 1 voxel)
    ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 1.0),
    ((1.5, 0.0, 0.0), (1.5, 0.0, 0.0), 1.0),
    ((0.0, 0.8, 0.0), (0.0, 0.8, 0.0), 1.0),
    # an intensity gain changes nothing (the log ratio of energies)
    ((0.8, 0.8, 0.8), (0.8, 0.8, 0.8), 3.0),
])
def test_the_blur_of_a_real_brain_is_read_back_per_axis(blur, expected, gain):
    sharp = _volume(_t1())
    blurred = gaussian_smooth(sharp, blur) * gain
    for_sharp, for_blurred = blur_to_match(sharp, blurred)
    assert for_sharp == pytest.approx(expected, abs=0.12)
    assert max(for_blurred) < 0.1  # along an axis left sharp both read alike, within 0.04
    assert all(a == 0.0 or b == 0.0 for a, b in zip(for_sharp, for_blurred))  # one image blurred per axis
    # the other way round: the same blur, now for the second image
    swapped = blur_to_match(blurred, sharp)
    assert swapped[0] + swapped[1] == pytest.approx(for_blurred + for_sharp, abs=1e-9)


@needs_t1
def test_a_shift_and_a_deformation_are_not_read_as_blur():
    """The power spectrum ignores where things are: the T1 against itself moved by a smooth 3 mm field reads 0.38-0.41
    voxel, the blur of linear interpolation at random offsets (mean variance 1/6 voxel^2: 0.41), under the match's
    threshold; against itself shifted by whole voxels, nothing."""
    t1 = _t1(crop=8)
    geometry = Geometry(t1.shape[::-1], (2.0, 2.0, 2.0))
    brain = t1 > 0.1 * t1.max()
    velocity, _ = scale_svf(random_smooth_svf(geometry, np.random.default_rng(1), 40.0), geometry, brain, 3.0)
    moved = Transform(geometry, integrate_svf(-velocity, geometry)).warp(Image(t1, geometry, "moving")).array
    for_fixed, for_moving = blur_to_match(_volume(t1), _volume(moved))
    assert max(for_fixed + for_moving) < SHARPNESS_MATCH_MIN_SIGMA_VOXELS, (for_fixed, for_moving)
    whole = _t1()  # rolled round through its background only
    shifted = blur_to_match(_volume(whole), _volume(np.roll(whole, 3, axis=1)))
    assert max(shifted[0] + shifted[1]) < 0.05


def test_edge_taper_and_shape_checks():
    window = edge_taper((40, 6, 20), width=8)
    assert window.shape == (40, 6, 20) and float(window.max()) <= 1.0 and float(window.min()) > 0.0
    assert float(window[20, 3, 10]) == pytest.approx(1.0)  # the inside untouched
    assert float(window[0, 3, 10]) < 0.05  # the faces fall to near 0
    with pytest.raises(ValueError, match=r"\(1, 1, Z, Y, X\)"):
        blur_to_match(torch.zeros(1, 2, 8, 8, 8), torch.zeros(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="region must be"):
        blur_to_match(torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 8, 8, 8), region=torch.ones(1, 1, 8, 8, 9))


def test_matched_sharpness_blurs_the_sharper_image_for_one_contrast_only():
    gen = torch.Generator().manual_seed(3)
    sharp = gaussian_smooth(torch.rand((1, 1, 40, 40, 40), generator=gen), 1.0)
    blurred = gaussian_smooth(sharp, 1.2)
    fixed, moving, info = matched_sharpness(sharp, blurred, None, one_contrast=True, sizes_blur_voxels=0.0)
    assert info["applied"] and moving is blurred and not torch.equal(fixed, sharp)
    assert min(info["fixed_blur_voxels"]) >= SHARPNESS_MATCH_MIN_SIGMA_VOXELS
    assert info["moving_blur_voxels"] == [0.0, 0.0, 0.0] and info["measured"]["fixed_blur_voxels"] == \
        info["fixed_blur_voxels"]
    # matched: now as sharp as the other within the threshold (0.40 left on this white-noise texture, whose energy
    # near the highest frequencies the sampled Gaussian kernel cuts less than the model's continuous one)
    again = blur_to_match(fixed, moving)
    assert max(again[0] + again[1]) < SHARPNESS_MATCH_MIN_SIGMA_VOXELS, again
    for kwargs, reason in (({"one_contrast": False, "sizes_blur_voxels": 0.0}, "two contrasts"),
                           ({"one_contrast": True, "sizes_blur_voxels": 0.47}, "voxel sizes differ")):
        left_f, left_m, left = matched_sharpness(sharp, blurred, None, **kwargs)
        assert left_f is sharp and left_m is blurred and not left["applied"] and reason in left["reason"]
    same_f, _, same = matched_sharpness(sharp, sharp.clone(), None, one_contrast=True, sizes_blur_voxels=0.0)
    assert same_f is sharp and not same["applied"] and "as sharp" in same["reason"]


@needs_t1
def test_a_blurred_moving_brain_registers_closer_with_the_match(monkeypatch):
    """The real T1 at 2 mm (less 16 mm at each face, for time), deformed by a smooth random field (3 mm mean inside
    the brain), the moving image blurred by a Gaussian of 1 voxel (a scan resampled or reconstructed smoother):
    fast, no network, mean field error inside the brain, measured 0.736 mm without the match, 0.400 with it (the
    whole T1: 0.722 / 0.377, 0.216 unblurred)."""
    t1 = _t1(crop=8)
    geometry = Geometry(t1.shape[::-1], (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    brain = t1 > 0.1 * t1.max()
    velocity, truth = scale_svf(random_smooth_svf(geometry, np.random.default_rng(0), 40.0), geometry, brain, 3.0)
    moving = Transform(geometry, integrate_svf(-velocity, geometry)).warp(Image(t1, geometry, "moving")).array
    moving = gaussian_smooth(_volume(moving), 1.0)[0, 0].numpy()
    kw = dict(quality="fast", use_network=False, device="cpu", compute_inverse=False, seed=0, preset="brain-mri")
    matched = register(Image(t1, geometry, "fixed"), Image(moving, geometry, "moving"), **kw)
    info = matched.metrics["sharpness_matching"]
    assert info["applied"] and min(info["fixed_blur_voxels"]) > 0.8 and info["moving_blur_voxels"] == [0.0] * 3
    monkeypatch.setattr(pipeline, "matched_sharpness", lambda f, m, *args: (f, m, {"applied": False}))
    unmatched = register(Image(t1, geometry, "fixed"), Image(moving, geometry, "moving"), **kw)
    errors = [float(np.linalg.norm(r.disp_mm - truth, axis=0)[brain].mean()) for r in (unmatched, matched)]
    assert errors[1] < 0.7 * errors[0], errors
