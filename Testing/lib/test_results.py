"""engine/results.py: similarity on a subsample for large grids, the before-image only on that subsample."""
from __future__ import annotations

import numpy as np

from ADRegNetLib.engine import results
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.transform import Transform
from brain_helpers import needs_t1, t1_image


def test_subsampled_before_similarity_equals_the_full_before_image_at_those_voxels(oblique_geometry, monkeypatch, rng):
    fixed_geometry = oblique_geometry.with_size((30, 28, 26))
    fixed = Image(rng.normal(size=fixed_geometry.shape).astype(np.float32), fixed_geometry, "fixed")
    moving_geometry = fixed_geometry.with_size((25, 24, 22))
    moving = Image((rng.normal(size=moving_geometry.shape) + 3.0).astype(np.float32), moving_geometry, "moving")
    monkeypatch.setattr(results, "SIMILARITY_MAX_VOXELS", 2_000)  # stride 3 on this grid
    before, inside = Transform(fixed_geometry).warp(moving, return_inside=True)
    mask = np.zeros(fixed_geometry.shape, bool)
    mask[3:-3, 4:-4, 2:-2] = True
    full = results.similarity(fixed.array, before.array, inside & mask)
    sub = results.similarity_on_subsample(fixed, moving, mask)
    assert full["ncc"] is not None
    assert sub["ncc"] == full["ncc"] and sub["nmi"] == full["nmi"]


def test_similarity_of_an_empty_region_is_none():
    arr = np.ones((4, 4, 4), np.float32)
    assert results.similarity(arr, arr, np.zeros((4, 4, 4), bool)) == {"ncc": None, "nmi": None}


def test_a_result_worse_than_the_unregistered_pair_is_reported():
    from ADRegNetLib.engine.results import worse_than_before

    before = {"ncc": 0.99, "nmi": 1.60}
    assert worse_than_before(before, {"ncc": 0.985, "nmi": 1.58}, two_contrasts=False) is None  # noise-level change
    message = worse_than_before(before, {"ncc": 0.60, "nmi": 1.58}, two_contrasts=False)
    assert message and "NCC 0.99 -> 0.60" in message and "probably wrong" in message
    # two contrasts: NCC says nothing, mutual information does
    assert worse_than_before(before, {"ncc": 0.10, "nmi": 1.58}, two_contrasts=True) is None
    # interpolation blur of a good result lowers NMI too (27 % of its excess seen): not reported
    assert worse_than_before(before, {"ncc": 0.10, "nmi": 1.40}, two_contrasts=True) is None
    message = worse_than_before(before, {"ncc": 0.10, "nmi": 1.20}, two_contrasts=True)
    assert message and "1.600 -> 1.200" in message and "NCC" not in message
    assert worse_than_before({"ncc": None, "nmi": None}, {"ncc": 0.5, "nmi": 1.2}, two_contrasts=False) is None


def test_images_that_share_no_information_are_reported():
    before = {"ncc": 0.0, "nmi": 1.0}
    notes = results.similarity_warnings(before, {"ncc": 0.002, "nmi": 1.004}, two_contrasts=True)
    assert len(notes) == 1 and "share almost no information" in notes[0] and "1.004" in notes[0]
    assert results.similarity_warnings({"ncc": 0.56, "nmi": 1.097}, {"ncc": 0.61, "nmi": 1.109}, True) == []
    assert results.similarity_warnings({"ncc": None, "nmi": None}, {"ncc": None, "nmi": None}, False) == []
    both = results.similarity_warnings({"ncc": 0.99, "nmi": 1.6}, {"ncc": 0.0, "nmi": 1.01}, two_contrasts=False)
    assert len(both) == 2 and "worse than before" in both[0]


@needs_t1
def test_a_moving_image_of_noise_registers_with_that_warning():
    """The real T1 against Gaussian noise on its grid: nothing to register (mutual information 1.000)."""
    from ADRegNetLib.engine import register

    fixed = t1_image(4)
    noise = fixed.with_array(np.random.default_rng(0).normal(0.0, 1.0, fixed.array.shape).astype(np.float32))
    metrics = register(fixed, noise, quality="fast", use_network=False, device="cpu", compute_inverse=False).metrics
    assert metrics["similarity_after"]["nmi"] < results.UNRELATED_MAX_NMI
    assert any("share almost no information" in note for note in metrics["warnings"])
    plain = register(fixed, fixed.with_array(np.roll(fixed.array, 1, axis=2)), quality="fast", use_network=False,
                     device="cpu", compute_inverse=False).metrics
    assert not any("share almost no information" in note for note in plain["warnings"])
