"""A moving image mirrored left-right against the fixed one (``engine.mirror.mirror_check``): a header that lost a
flip. Reported with a warning, never undone; a chest (the heart on one side) is told, a head (nearly symmetric) is
not, so a head as stored must not be reported either. Real images: the demo chest CT pair and the brain T1."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.engine import register
from ADRegNetLib.io import read_image
from brain_helpers import needs_t1, t1_image

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
KW = dict(quality="fast", use_network=False, device="cpu", compute_inverse=False)


@pytest.mark.skipif(not (SAMPLE / "lung_fixed.nii.gz").is_file(), reason="demo data missing")
def test_a_chest_ct_mirrored_left_right_is_reported_and_registered_as_given():
    fixed, moving = read_image(SAMPLE / "lung_fixed.nii.gz"), read_image(SAMPLE / "lung_moving.nii.gz")
    assert np.allclose(moving.geometry.direction, np.eye(3))  # array x is LPS x: the flip below is left-right
    stored = register(fixed, moving, **KW).metrics
    assert stored["prealignment"]["mirror_check"]["mirrored"] is False
    assert not any("mirrored left-right" in note for note in stored["warnings"])
    mirrored = moving.with_array(np.ascontiguousarray(moving.array[:, :, ::-1]))
    result = register(fixed, mirrored, **KW)
    check = result.metrics["prealignment"]["mirror_check"]
    assert check["mirrored"] is True and check["gain"] > 0.5 and check["local_mirrored"] < check["local_usual"]
    assert any("mirrored left-right" in note and "check both images' orientation" in note
               for note in result.metrics["warnings"])


@needs_t1
def test_a_head_as_stored_is_not_reported():
    fixed = t1_image(4)
    moving = fixed.with_array(np.roll(fixed.array, 1, axis=2))
    check = register(fixed, moving, **KW).metrics["prealignment"]["mirror_check"]
    assert check["mirrored"] is False and check["gain"] < 0


@needs_t1
def test_no_check_without_a_pre_alignment_or_with_the_users_start():
    from ADRegNetLib.spatial.affine import AffineMap

    fixed = t1_image(4)
    assert "mirror_check" not in register(fixed, fixed, prealignment="none", **KW).metrics["prealignment"]
    given = register(fixed, fixed, initial_transform=AffineMap.identity(), **KW).metrics["prealignment"]
    assert "mirror_check" not in given
