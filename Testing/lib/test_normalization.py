"""A clipped moving image sets the fixed image's top (engine/normalization.py).

A moving image clipped by a display window or an 8-bit export holds its largest value over a whole plateau;
the fixed image's top is cut at the same share over the region both show, so the two show one plateau over
the same tissue. Counted on the images' own voxels over their overlap: a wider moving field of view with more
background must not change the cut. Only for one contrast and never for CT.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.engine import register
from ADRegNetLib.engine.normalization import (SATURATION_MATCH_MIN_CORRELATION, SATURATION_MATCH_MIN_SHARE, matched_top,
                                              normalized_for_preset, normalized_pair, saturated_share)
from ADRegNetLib.io import read_image
from ADRegNetLib.spatial.affine import AffineMap
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from benchmarks.intensities import render_t2_like
from brain_helpers import needs_t1 as needs_brain, t1_image

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "lung_fixed.nii.gz"


@pytest.fixture(scope="module")
def t1() -> Image:
    """The real T1 at 4 mm, with scanner-like noise (a clipped copy then holds its top only where clipped)."""
    image = t1_image(4)
    noise = np.random.default_rng(0).normal(0.0, 0.01, image.array.shape).astype(np.float32)
    return image.with_array(np.ascontiguousarray(image.array + noise, dtype=np.float32))


def _clipped(image: Image, tissue_percentile: float, name: str = "moving") -> Image:
    arr = image.array
    top = np.float32(np.percentile(arr[arr > 0.1 * arr.max()], tissue_percentile))
    return Image(np.minimum(arr, top), image.geometry, name)


@needs_brain
def test_the_saturated_share_is_the_plateau_at_the_largest_value_and_nothing_else(t1):
    assert saturated_share(t1) < 1e-4  # an unclipped scan holds its largest value in one voxel
    clipped = _clipped(t1, 80.0)
    share = saturated_share(clipped)
    tissue = np.count_nonzero(t1.array > 0.1 * t1.array.max()) / t1.array.size
    assert share == pytest.approx(0.2 * tissue, rel=0.02)
    # a white background or padding in the corners is not clipped tissue; a label map is not a scan
    white = clipped.array.copy()
    white[t1.array < 0.05 * t1.array.max()] = white.max()
    assert saturated_share(Image(white, t1.geometry, "white")) == 0.0
    labels = np.digitize(t1.array, np.linspace(0, t1.array.max(), 5)).astype(np.float32)
    assert saturated_share(Image(labels, t1.geometry, "labels")) == 0.0


@needs_brain
def test_a_clipped_moving_image_is_recorded_and_a_ct_one_is_not(t1):
    _, _, record = normalized_pair(t1, _clipped(t1, 80.0), "mr", None, None)
    assert record["moving_saturated_share"] >= SATURATION_MATCH_MIN_SHARE
    _, _, record = normalized_pair(t1, _clipped(t1, 99.9), "mr", None, None)
    assert "moving_saturated_share" not in record  # under twice the normalisation's own 1 %
    ct = read_image(SAMPLE)
    hu = ct.array
    clipped_ct = Image(np.minimum(hu, np.percentile(hu, 80)), ct.geometry, "moving")
    _, _, record = normalized_pair(ct, clipped_ct, "ct", (-1000.0, 500.0), None)
    assert "moving_saturated_share" not in record  # calibrated Hounsfield units: the window cuts the top already


@needs_brain
@pytest.mark.parametrize("pad", [0, 12])
def test_the_fixed_top_is_cut_where_the_moving_image_is_clipped_over_the_region_both_show(t1, pad):
    """The moving image = the fixed one clipped at the 80th percentile of its tissue (optionally on a grid
    widened by ``pad`` planes of background on both sides, which changes its whole-image share): after the
    cut the two normalised images agree; before it the fixed image kept its bright contrast."""
    clipped = _clipped(t1, 80.0)
    moving = clipped
    if pad:
        arr = np.pad(clipped.array, ((pad, pad), (0, 0), (0, 0)))
        g = t1.geometry
        moving = Image(arr, Geometry((g.size[0], g.size[1], g.size[2] + 2 * pad), g.spacing,
                                     g.origin - np.array([0.0, 0.0, pad * g.spacing[2]]), g.direction), "moving")
    fixed_n, moving_n, record = normalized_pair(t1, moving, "mr", None, None)
    assert "moving_saturated_share" in record
    same = moving_n.array[pad:pad + t1.array.shape[0]]
    before = np.abs(fixed_n.array - same).mean()
    cut, info = matched_top(fixed_n.array, fixed_n, moving_n, t1.geometry, AffineMap.identity())
    assert info["applied"] and info["moving_plateau_share"] == pytest.approx(0.2 * 0.45, abs=0.05)
    after = np.abs(cut - same)
    assert after.mean() < 0.25 * before
    assert np.percentile(after, 99) < 0.05
    assert cut.dtype == np.float32 and cut.max() == pytest.approx(1.0)


@needs_brain
def test_a_plateau_outside_the_overlap_cuts_nothing(t1):
    """The moving image's plateau lies where the pre-alignment puts it outside the working grid: nothing cut."""
    fixed_n = normalized_for_preset(t1, "mr", None)
    arr = np.zeros_like(t1.array)
    arr[:, :, : arr.shape[2] // 2] = t1.array[:, :, : arr.shape[2] // 2]
    arr[:, :, arr.shape[2] // 2:] = 2.0 * t1.array.max()  # its clipped half
    moving_n = normalized_for_preset(Image(arr, t1.geometry, "moving"), "mr", None)
    half = Geometry((t1.array.shape[2] // 2 - 1, t1.array.shape[1], t1.array.shape[0]), t1.geometry.spacing,
                    t1.geometry.origin, t1.geometry.direction)
    fixed_w = fixed_n.array[:, :, : half.shape[2]]
    cut, info = matched_top(fixed_w, fixed_n, moving_n, half, AffineMap.identity())
    assert not info["applied"] and cut is fixed_w


@needs_brain
def test_register_cuts_the_fixed_top_for_one_contrast_and_not_for_two(t1):
    moving = _clipped(t1, 75.0)
    result = register(t1, moving, preset="brain-mri", quality="fast", device="cpu", use_network=False,
                      compute_inverse=False)
    record = result.metrics["intensity_normalization"]
    assert record["fixed_top_cut"]["applied"]
    assert record["moving_saturated_share"] == pytest.approx(record["fixed_top_cut"]["moving_plateau_share"], abs=0.02)
    t2 = render_t2_like(t1.array, t1.array > np.percentile(t1.array[t1.array > 0], 75))
    t2 = _clipped(Image(t2, t1.geometry, "t2"), 75.0)
    result = register(t1, t2, preset="brain-mri", quality="fast", device="cpu", use_network=False,
                      compute_inverse=False, multimodal=True)
    record = result.metrics["intensity_normalization"]
    assert "moving_saturated_share" in record and "fixed_top_cut" not in record
    # told one contrast, the pre-aligned images still must correlate clearly for the cut: tissue brightness inverted
    arr, top = t1.array, float(t1.array.max())
    inverted = _clipped(Image(np.where(arr > 0.1 * top, 1.2 * top - arr, 0.0).astype(np.float32), t1.geometry, "inv"),
                        75.0)
    result = register(t1, inverted, preset="brain-mri", quality="fast", device="cpu", use_network=False,
                      compute_inverse=False, multimodal=False)
    cut = result.metrics["intensity_normalization"]["fixed_top_cut"]
    assert not cut["applied"] and cut["correlation"] < SATURATION_MATCH_MIN_CORRELATION
