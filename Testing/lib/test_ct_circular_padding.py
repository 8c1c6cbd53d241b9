"""A CT whose circular field of view cuts the body (a cone-beam CT, a large patient), padded below air outside it.

The padding (-3024 HU here; scanners write -1024 ... -32768) was read as air through the CT window, so the circle
looked like the body's outline: the pre-alignment scaled the demo pair by 0.78 to fit one outline to the other and
the registration ended at 7.9 mm. Voxels below air are now left out of the pre-alignment's fit (both images' masks)
and, with a margin, out of the similarity (``engine/pipeline.py``, ``results.below_air``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.engine import register
from ADRegNetLib.io import read_image
from ADRegNetLib.io.landmarks import read_landmarks
from ADRegNetLib.spatial.image import Image

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
needs_sample = pytest.mark.skipif(not (SAMPLE / "lung_fixed.nii.gz").is_file(), reason="demo data missing")


def _cut_by_circle(image: Image, padding: float) -> Image:
    """Everything outside the cylinder along z inscribed in the grid set to ``padding`` (it cuts the demo's body)."""
    array = np.ascontiguousarray(image.array, dtype=np.float32).copy()
    yy, xx = np.indices(array.shape[1:])
    centre = np.array(array.shape[1:]) / 2.0 - 0.5
    outside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 > (0.5 * min(array.shape[1:])) ** 2
    array[:, outside] = padding
    return image.with_array(array)


@needs_sample
@pytest.mark.parametrize("cut", ["fixed", "moving"])
def test_a_ct_cut_by_its_circular_field_of_view_registers_as_the_whole_ct(cut):
    """Demo pair, fast, no network, TRE over its 51 landmarks (uncut 0.256 mm): the fixed CT cut 7.201 mm before
    (pre-alignment scales 1.05 / 0.87 / 0.78), 0.253 now; the moving CT cut 0.516 before, 0.255 now."""
    fixed, moving = read_image(SAMPLE / "lung_fixed.nii.gz"), read_image(SAMPLE / "lung_moving.nii.gz")
    fixed_points, moving_points = (read_landmarks(SAMPLE / f"lung_{role}_landmarks.csv") for role in ("fixed", "moving"))
    if cut == "fixed":
        fixed = _cut_by_circle(fixed, -3024.0)
    else:
        moving = _cut_by_circle(moving, -3024.0)
    result = register(fixed, moving, preset="lung-ct", quality="fast", use_network=False, device="cpu",
                      compute_inverse=False, seed=0)
    scales = np.linalg.svd(np.asarray(result.metrics["prealignment"]["matrix"]))[1]
    assert np.all(np.abs(scales - 1.0) < 0.05), scales
    tre = float(np.linalg.norm(result.transform.map_points(fixed_points) - moving_points, axis=1).mean())
    assert tre < 0.35, tre
    # the original values are kept in the outputs: the warped moving image still holds its padding where it was cut
    if cut == "moving":
        assert float(result.warped.array.min()) == pytest.approx(-3024.0, abs=1.0)
