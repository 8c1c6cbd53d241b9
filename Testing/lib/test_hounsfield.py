"""Two CT scans of one body whose Hounsfield units disagree (``engine.hounsfield.ct_disagreement``), and a CT shown
through a display curve beside a CT (``engine.hounsfield.curved_calibration``).

A wrong rescale intercept, a cone-beam CT's offset or an export rescaled by hand keep a scan's air below -500 HU,
so both still read as CT; the preset's window then cut them at different tissues (benchmark lung seed 1 with its
moving image 300 HU brighter, balanced: 0.221 -> 0.403 mm). Such a scan is now mapped onto the other's units by
a line through the two images' intensity percentiles; breathing, fields of view and the benchmark's own small
changes are left alone. Real images: the demo pair (Resources/SampleData, a chest CT and the same chest breathing).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.engine import register
from ADRegNetLib.engine.hounsfield import ct_disagreement, curved_calibration, hounsfield_pair, is_ct
from ADRegNetLib.io import read_image, read_landmarks
from ADRegNetLib.metrics.landmarks import tre
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.transform import map_points
from brain_helpers import needs_t1, t1_array

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
needs_sample = pytest.mark.skipif(not (SAMPLE / "lung_fixed.nii.gz").is_file(), reason="demo data missing")


def _pair() -> tuple[Image, Image]:
    return read_image(SAMPLE / "lung_fixed.nii.gz"), read_image(SAMPLE / "lung_moving.nii.gz")


def _changed(image: Image, scale: float, offset: float) -> Image:
    return Image((image.array.astype(np.float32) * scale + offset).astype(np.float32), image.geometry, image.name)


@needs_sample
def test_a_ct_whose_units_are_off_is_mapped_onto_the_other_ct():
    """Either image off, by an offset or a scale: the one whose air lies further from -1000 HU is mapped back."""
    fixed, moving = _pair()
    assert ct_disagreement(fixed, moving) is None  # the demo pair agrees (air and water within 11 HU)
    for scale, offset in ((1.0, 300.0), (1.0, -200.0), (0.85, 100.0), (1.1, -80.0)):
        off = _changed(moving, scale, offset)
        assert is_ct(off)  # still CT: nothing else would have read it
        role, fitted_scale, fitted_offset = ct_disagreement(fixed, off)
        assert role == "moving"
        # the fitted line undoes the change (within the pair's own small difference, 11 HU at air)
        for hu in (-1000.0, 0.0, 300.0):
            assert abs(fitted_scale * (scale * hu + offset) + fitted_offset - hu) < 20.0
        role, fitted_scale, fitted_offset = ct_disagreement(_changed(fixed, scale, offset), moving)
        assert role == "fixed"
        for hu in (-1000.0, 0.0, 300.0):
            assert abs(fitted_scale * (scale * hu + offset) + fitted_offset - hu) < 20.0


@needs_sample
def test_breathing_a_field_of_view_and_small_changes_are_left_alone():
    """The lungs denser by up to 200 HU (breathing out: the line turns about water), the benchmark's own CT changes (scale 0.96-1.04, offset
    +-20 HU) and a moving image cut to the middle of the chest (other percentiles, no line: residual 0.03 of the
    range, which would have read as 190 HU at air) are no disagreement."""
    fixed, moving = _pair()
    for denser in (50.0, 100.0, 200.0):
        breathed = moving.array.astype(np.float32).copy()
        lungs = (breathed > -950) & (breathed < -500)
        breathed[lungs] += denser
        assert ct_disagreement(fixed, Image(breathed, moving.geometry, "moving")) is None
    for scale, offset in ((0.96, 20.0), (1.04, -20.0), (1.02, 15.0)):
        assert ct_disagreement(fixed, _changed(moving, scale, offset)) is None
    z, y, x = moving.array.shape
    middle = np.ascontiguousarray(moving.array[:, y // 5: y - y // 5, x // 5: x - x // 5])
    origin = moving.geometry.index_to_physical(np.array([[x // 5, y // 5, 0]], dtype=float))[0]
    cut = Image(middle, Geometry(middle.shape[::-1], moving.geometry.spacing, origin, moving.geometry.direction), "moving")
    assert ct_disagreement(fixed, cut) is None


@needs_sample
def test_the_pair_reads_the_mapped_copy_and_keeps_the_users_image():
    fixed, moving = _pair()
    off = _changed(moving, 1.0, 300.0)
    kept = off.array.copy()
    fixed_hu, moving_hu, fixed_ct, moving_ct, info = hounsfield_pair(fixed, off)
    assert fixed_hu is fixed and fixed_ct and moving_ct
    assert info["image"] == "moving" and info["both_ct"] and abs(info["offset"] + 300.0) < 20.0
    np.testing.assert_allclose(moving_hu.array, off.array * np.float32(info["scale"]) + np.float32(info["offset"]),
                               atol=1e-2)
    np.testing.assert_array_equal(off.array, kept)  # a copy was mapped
    assert hounsfield_pair(fixed, moving)[2:] == (True, True, None)


@needs_sample
def test_a_ct_300_hu_off_registers_as_the_ct_in_its_units():
    """The demo pair with its moving CT 300 HU brighter (or its fixed one): TRE as with the unchanged pair (fast, no
    network), the record names the map, the warped image keeps the user's units."""
    fixed, moving = _pair()
    landmarks = [read_landmarks(SAMPLE / f"lung_{role}_landmarks.csv") for role in ("fixed", "moving")]

    def registered(f: Image, m: Image):
        result = register(f, m, quality="fast", device="cpu", use_network=False, compute_inverse=False, seed=0)
        mapped = np.asarray(map_points(result.disp_mm, f.geometry, landmarks[0]))
        return result, tre(mapped, landmarks[1])["mean"]

    _, unchanged = registered(fixed, moving)
    off = _changed(moving, 1.0, 300.0)
    result, shifted = registered(fixed, off)
    assert result.metrics["hounsfield_calibration"]["image"] == "moving" and result.metrics["preset"] == "lung-ct"
    assert shifted < unchanged + 0.05, f"{shifted:.3f} mm against {unchanged:.3f} unchanged"
    inside = result.warped.array[result.warped.array > -500]
    assert float(np.median(inside)) > float(np.median(moving.array[moving.array > -500]))  # user's units, +300 HU
    result, fixed_off = registered(_changed(fixed, 1.0, 300.0), moving)
    assert result.metrics["hounsfield_calibration"]["image"] == "fixed"
    assert fixed_off < unchanged + 0.05, f"{fixed_off:.3f} mm against {unchanged:.3f} unchanged"


def _through_curve(image: Image, gamma: float) -> Image:
    values = image.array.astype(np.float32)
    lowest, highest = float(values.min()), float(values.max())
    return Image(((values - lowest) / (highest - lowest)) ** np.float32(gamma), image.geometry, "curved")


@needs_sample
def test_a_ct_shown_through_a_curve_is_read_back_and_lines_stay_lines():
    """A CT scaled to 0-1 and raised to a power (an export's display curve, a user's contrast change) follows no line
    of the CT's values: it was registered as another contrast (benchmark lung case, gamma 3: 0.78-0.81 mm, in HU
    0.22), or, through gamma 2, read by a line that did not fit it (the demo pair, residual 0.048). A curve is read
    back where it fits twice as well as a line; a CT stored shifted, scaled or through the lung window keeps its line."""
    fixed, moving = _pair()
    for gamma in (0.5, 2.0, 3.0):
        curved = _through_curve(moving, gamma)
        low, high, fitted = curved_calibration(curved, fixed)
        assert abs(np.log2(fitted / gamma)) <= 0.25  # within a quarter of an octave of the true curve
        fixed_hu, read, fixed_ct, moving_ct, info = hounsfield_pair(fixed, curved)
        assert fixed_ct and moving_ct and info["image"] == "moving" and info["correlation"] > 0.9
        assert info["display_gamma"] == round(fitted, 3) and info["range_hu"] == [round(low, 1), round(high, 1)]
        # read back close to the CT as stored (its lowest value and its bone are where the fit can err most)
        body = (moving.array > -900) & (moving.array < 400)
        assert float(np.median(np.abs(read.array[body] - moving.array[body]))) < 30.0
    array = moving.array.astype(np.float32)
    for stored in ((array + 1024).clip(0).astype(np.uint16), array * 0.001,
                   np.round((np.clip(array, -1000, 200) + 1000) / 1200 * 255).astype(np.uint8)):
        image = Image(stored, moving.geometry, "stored")
        assert curved_calibration(image, fixed) is None
        assert "scale" in hounsfield_pair(fixed, image)[4]


@needs_t1
def test_an_mri_beside_a_ct_is_not_read_as_a_curved_ct():
    """A brain T1 against the demo CT: the best curve leaves 0.063 of the range over the closest levels (0.26 over
    all), far from a CT's."""
    fixed, _ = _pair()
    t1 = t1_array()
    image = Image(t1, Geometry(t1.shape[::-1], (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)), "t1")
    assert curved_calibration(image, fixed) is None
    assert curved_calibration(_through_curve(image, 2.0), fixed) is None
    assert hounsfield_pair(fixed, image)[2:] == (True, False, None)


@needs_sample
def test_a_ct_through_gamma_3_registers_as_the_ct():
    """The demo pair with its moving CT through gamma 3: fast, no network, TRE as in HU (+0.05 mm at most)."""
    fixed, moving = _pair()
    landmarks = [read_landmarks(SAMPLE / f"lung_{role}_landmarks.csv") for role in ("fixed", "moving")]
    errors = []
    for image in (moving, _through_curve(moving, 3.0)):
        result = register(fixed, image, quality="fast", device="cpu", use_network=False, compute_inverse=False, seed=0)
        errors.append(tre(np.asarray(map_points(result.disp_mm, fixed.geometry, landmarks[0])), landmarks[1])["mean"])
    assert result.metrics["hounsfield_calibration"]["display_gamma"] > 2.0 and not result.metrics["multimodal"]
    assert errors[1] < errors[0] + 0.05, f"{errors[1]:.3f} mm through gamma 3 against {errors[0]:.3f} in HU"
    assert float(result.warped.array.max()) <= 1.0 + 1e-4  # the output keeps the user's 0-1 values
