"""Pre-alignment (engine/prealign.py): a start that leaves nothing to gain is not optimised."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.engine.pipeline import _normalized
from ADRegNetLib.engine.prealign import prealign
from ADRegNetLib.io import read_image
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"


@pytest.fixture(scope="module")
def lung() -> Image:
    path = SAMPLE / "lung_fixed.nii.gz"
    if not path.is_file():
        pytest.skip("demo data missing")
    return _normalized(read_image(path), "ct", (-1000.0, 200.0))


def test_an_already_aligned_pair_is_not_optimised(lung, rng):
    noisy = Image((lung.array + rng.normal(0, 0.01, lung.array.shape)).astype(np.float32), lung.geometry, "noisy")
    affine, info = prealign(lung, noisy, mode="affine", min_relative_improvement=0.05)
    assert affine.is_identity()
    assert "not optimised" in info["kept"] and -info["metric_before"] > 1 / 1.05


def test_a_shifted_pair_is_still_optimised(lung):
    g = lung.geometry
    shifted = Image(lung.array, Geometry(g.size, g.spacing, g.origin + np.array([8.0, -6.0, 10.0]), g.direction), "shifted")
    affine, info = prealign(lung, shifted, mode="rigid", min_relative_improvement=0.05)
    assert info["kept"] == "optimised", info
    # the same voxels in a frame moved by +shift: fixed x is moving x + shift
    centre = g.center()[None]
    np.testing.assert_allclose(affine.apply(centre)[0] - centre[0], [8.0, -6.0, 10.0], atol=1.5)
    assert abs(float(np.linalg.det(affine.matrix)) - 1.0) < 0.05
