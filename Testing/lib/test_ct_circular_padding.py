"""A CT whose circular field of view cuts the body (a cone-beam CT, a large patient), padded outside it.

The padding (scanners write -1024 ... -32768 HU, some cone-beam CTs -1000 or 0) was read as air (or tissue) through
the CT window, so the circle looked like the body's outline: the pre-alignment scaled the demo pair by 0.78 to fit
one outline to the other and the registration ended at 7.2 mm. Voxels below air, or one value outside a circle
along a grid axis, are now left out of the pre-alignment's fit (both images' masks) and, with a margin, out of the
similarity (``engine/pipeline.py``, ``results.ct_padding``, ``spatial.padding.circular_padding``).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.engine import register
from ADRegNetLib.io import read_image
from ADRegNetLib.io.landmarks import read_landmarks
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.padding import circular_padding

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


def test_circular_padding_is_found_along_any_axis_and_clipped_air_is_not():
    rng = np.random.default_rng(0)
    body = rng.normal(-1000.0, 20.0, (12, 40, 40)).astype(np.float32)  # noisy air
    body[:, 8:32, 6:34] = rng.normal(40.0, 20.0, (12, 24, 28))  # a box of tissue, cut by the circle below
    yy, xx = np.indices((40, 40))
    outside = (yy - 19.5) ** 2 + (xx - 19.5) ** 2 > 18.0 ** 2
    for value in (-1024.0, 0.0):
        padded = body.copy()
        padded[:, outside] = value
        found = circular_padding(padded, (2.0, 1.0, 1.0))
        assert found is not None and np.array_equal(found, np.broadcast_to(outside, padded.shape))
        along_y = np.ascontiguousarray(np.moveaxis(padded, 0, 1))  # the cylinder along another grid axis
        assert np.array_equal(circular_padding(along_y, (1.0, 2.0, 1.0)), np.moveaxis(found, 0, 1))
    # air outside a box-shaped body clipped to -1024: one value at the corners, but no circle
    clipped = body.copy()
    clipped[body < -900.0] = -1024.0
    assert circular_padding(clipped, (2.0, 1.0, 1.0)) is None
    assert circular_padding(body, (2.0, 1.0, 1.0)) is None  # noisy air: the corners differ


@needs_sample
@pytest.mark.parametrize("cut, padding", [("fixed", -3024.0), ("moving", -3024.0), ("moving", -1024.0)])
def test_a_ct_cut_by_its_circular_field_of_view_registers_as_the_whole_ct(cut, padding, monkeypatch):
    """Demo pair, fast, no network, TRE over its 51 landmarks (uncut 0.256 mm): the fixed CT cut (-3024 HU) 7.201 mm
    before (pre-alignment scales 1.05 / 0.87 / 0.78), 0.253 now; the moving CT cut 0.516 before, 0.255 now; padded
    with -1024 (air by value, found as a circle) 0.511 before (with the network), 0.255 now. Each image's padding
    is found once (the pre-alignment's is reused for the similarity figures)."""
    import ADRegNetLib.engine.pipeline as pipeline
    import ADRegNetLib.engine.results as results

    found, original = [], results.ct_padding

    def counted(image):
        found.append(image.name)
        return original(image)

    for module in (pipeline, results):
        monkeypatch.setattr(module, "ct_padding", counted)
    fixed, moving = read_image(SAMPLE / "lung_fixed.nii.gz"), read_image(SAMPLE / "lung_moving.nii.gz")
    fixed_points, moving_points = (read_landmarks(SAMPLE / f"lung_{role}_landmarks.csv") for role in ("fixed", "moving"))
    if cut == "fixed":
        fixed = _cut_by_circle(fixed, padding)
    else:
        moving = _cut_by_circle(moving, padding)
    result = register(fixed, moving, preset="lung-ct", quality="fast", use_network=False, device="cpu",
                      compute_inverse=False, seed=0)
    scales = np.linalg.svd(np.asarray(result.metrics["prealignment"]["matrix"]))[1]
    assert np.all(np.abs(scales - 1.0) < 0.05), scales
    tre = float(np.linalg.norm(result.transform.map_points(fixed_points) - moving_points, axis=1).mean())
    assert tre < 0.35, tre
    # the similarity figures leave the padding out too, whatever its value
    counts = re.search(r"(\d+) fixed, (\d+) moving voxels", result.metrics["similarity_region"])
    assert counts is not None and int(counts[1 if cut == "fixed" else 2]) > 0, result.metrics["similarity_region"]
    # measured 0.975 -> 0.995 for each cut and padding value (the uncut pair over its whole grid: 0.983 -> 0.996)
    assert result.metrics["similarity_before"]["ncc"] > 0.97 and result.metrics["similarity_after"]["ncc"] > 0.99
    assert sorted(found) == sorted([fixed.name, moving.name]), found
    # the original values are kept in the outputs: the warped moving image still holds its padding where it was cut
    if cut == "moving":
        assert float(result.warped.array.min()) <= padding + 1.0
