"""CT stored through a display window (engine/hounsfield.py ``windowed_calibration``): read back in Hounsfield
units beside a CT (linear, curved or inverted windows) and registered as one contrast, while an MRI stored as 8 bits
beside a CT is not taken for such a window (only named as a possible one)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ADRegNetLib.engine import register
from ADRegNetLib.engine.hounsfield import hounsfield_pair, windowed_calibration, windowed_ct_hint
from ADRegNetLib.io import read_image, read_landmarks
from ADRegNetLib.metrics.landmarks import tre
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.transform import map_points
from brain_helpers import needs_t1 as needs_brain, t1_image

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "lung_fixed.nii.gz"


def _as_8_bits(t1: Image, top: float) -> Image:
    """``t1`` clipped at its tissue's ``top`` percentile and stored as 8 bits (0-255)."""
    level = np.percentile(t1.array[t1.array > 0], top)
    return Image(np.round(np.clip(t1.array, 0, level) / level * 255).astype(np.uint8), t1.geometry, "t1 8-bit")


def _stored_through(image: Image, low: float, high: float, gamma: float = 1.0) -> Image:
    """``image`` (HU) as an 8-bit export through the display window [low, high] (with a display curve ``gamma``)."""
    shown = ((np.clip(image.array.astype(np.float32), low, high) - low) / (high - low)) ** gamma
    return Image(np.round(shown * 255).astype(np.uint8), image.geometry, image.name + " (8-bit)")


def test_a_ct_stored_through_a_display_window_is_read_in_hounsfield_units_and_registered_as_one_contrast():
    """A chest CT stored as 8 bits through a soft-tissue or bone window no longer reads as CT (nothing at air): before,
    it registered as another contrast, worse than not at all on the demo pair (3.45 -> 13.6 mm soft tissue, 4.3 mm
    bone). Its values inside the window lie on a line with the CT's: mapped back to HU, the CT cut to the same
    window, both one contrast (fixed or moving alike). The lung window, whose lowest value is air, and an MR image
    beside a CT are not taken for such a window."""
    ct = read_image(SAMPLE)
    moving = read_image(SAMPLE.with_name("lung_moving.nii.gz"))
    for low, high, role in ((-160.0, 240.0, "moving"), (-600.0, 1400.0, "fixed")):
        stored = _stored_through(moving, low, high)
        pair = (ct, stored) if role == "moving" else (stored, ct)
        fixed_hu, moving_hu, fixed_ct, moving_ct, info = hounsfield_pair(*pair)
        assert (fixed_ct, moving_ct) == (False, False) and info["image"] == role
        assert abs(info["window_hu"][0] - low) < 0.05 * (high - low) and abs(info["window_hu"][1] - high) < 0.1 * (high - low)
        cut, mapped = (fixed_hu, moving_hu) if role == "moving" else (moving_hu, fixed_hu)
        assert cut.array.min() >= info["window_hu"][0] - 0.1 and cut.array.max() <= info["window_hu"][1] + 0.1
        assert np.corrcoef(mapped.array.ravel(), cut.array.ravel())[0, 1] > 0.9  # one contrast, the same units
        assert windowed_ct_hint(fixed_hu, moving_hu, fixed_ct, moving_ct) is None
        assert windowed_calibration(ct, stored) is None  # the CT itself is no window
    # the lung window keeps the whole line to air: mapped back whole, both CT, as before
    assert hounsfield_pair(ct, _stored_through(moving, -1000.0, 200.0))[2:4] == (True, True)


@needs_brain
def test_mri_stored_as_8_bits_beside_a_ct_is_not_read_as_a_windowed_ct():
    """An 8-bit MR image holds its lowest value over its whole background and, clipped, its highest over bright
    tissue, as a windowed CT does, and over two thirds of the levels its percentiles can lie close to a curve of the
    CT's (the fit alone took this T1 for a window with gamma 0.42): the two images so read must also correlate where
    both show tissue (``WINDOWED_MIN_CORRELATION``), which an MR image and a CT do not (-0.18 to -0.01)."""
    ct = read_image(SAMPLE)
    t1 = t1_image(4)
    for top in (90, 99):
        mr = _as_8_bits(t1, top)
        assert hounsfield_pair(ct, mr)[2:] == (True, False, None)
        assert hounsfield_pair(mr, ct)[2:] == (False, True, None)


def test_the_registration_reads_a_windowed_ct_beside_a_ct():
    """The demo pair with its moving CT stored through a soft-tissue window: the lung preset is still chosen, the
    record and a warning name the window, the lungs (flat in the window) follow their outline: TRE 3.45 -> 2.0 mm
    (13.6 before); the warped image keeps the user's 8-bit values."""
    ct = read_image(SAMPLE)
    moving = read_image(SAMPLE.with_name("lung_moving.nii.gz"))
    landmarks = [read_landmarks(SAMPLE.with_name(f"lung_{role}_landmarks.csv")) for role in ("fixed", "moving")]
    stored = _stored_through(moving, -160.0, 240.0)
    result = register(ct, stored, quality="fast", device="cpu", use_network=False, compute_inverse=False, seed=0)
    assert result.metrics["preset"] == "lung-ct" and not result.metrics["multimodal"]
    assert result.metrics["hounsfield_calibration"]["image"] == "moving"
    assert len(result.metrics["hounsfield_calibration"]["window_hu"]) == 2
    before = tre(landmarks[0], landmarks[1])["mean"]
    after = tre(np.asarray(map_points(result.disp_mm, ct.geometry, landmarks[0])), landmarks[1])["mean"]
    assert after < 0.7 * before, f"TRE {before:.2f} -> {after:.2f} mm"
    assert 0 <= float(result.warped.array.min()) and float(result.warped.array.max()) <= 255.5
    # the warning says what the window costs: the lungs are flat in both
    named = [w for w in result.metrics["warnings"] if "display window" in w]
    assert named == [windowed_ct_hint(ct, stored, False, False, result.metrics["hounsfield_calibration"])]
    assert named[0].startswith("the moving image is a CT stored through a display window") and "the lungs" in named[0]


def test_a_ct_stored_through_a_curved_display_window_is_read_too():
    """A window shown through a curve is no straight line with the CT's values: where the line does not fit, the
    image's values raised to a power (the display curve's gamma) are fitted instead. Before, a gamma-3 export of the
    demo CT registered as another contrast with its lungs flat, far off (3.45 -> 19.4 mm); now 2.5 mm."""
    moving = read_image(SAMPLE.with_name("lung_moving.nii.gz"))
    ct = read_image(SAMPLE)
    for gamma in (3.0, 6.0):
        curved = _stored_through(moving, -160.0, 240.0, gamma=gamma)
        fixed_hu, moving_hu, fixed_ct, moving_ct, info = hounsfield_pair(ct, curved)
        assert (fixed_ct, moving_ct) == (False, False) and info["display_gamma"] > 2.0
        assert np.corrcoef(moving_hu.array.ravel(), fixed_hu.array.ravel())[0, 1] > 0.9
    linear = hounsfield_pair(ct, _stored_through(moving, -160.0, 240.0))[4]
    assert linear["display_gamma"] == 1.0  # a linear window is taken as such wherever it fits


@needs_brain
def test_an_8_bit_mri_beside_a_ct_is_named_as_a_possible_window():
    """An 8-bit MR image windowed at its tissue's 90th percentile holds its lowest value over its background and its
    highest over bright tissue, as a windowed CT: it is not read as one (its values follow no curve of the CT's) and
    registers as another contrast; the warning says what to do if it was a CT. An image beside one of its own kind is
    never named."""
    ct = read_image(SAMPLE)
    mr = _as_8_bits(t1_image(4), 90)
    fixed_hu, moving_hu, fixed_ct, moving_ct, mapped = hounsfield_pair(ct, mr)
    assert fixed_ct and not moving_ct and mapped is None
    hint = windowed_ct_hint(fixed_hu, moving_hu, fixed_ct, moving_ct)
    assert hint is not None and hint.startswith("the moving image is not in Hounsfield units")
    assert windowed_ct_hint(mr, mr, False, False) is None


def test_an_inverted_display_window_is_read_as_its_negative():
    """An export with air white (MONOCHROME1) holds its highest value over air and the lungs: read as the window
    of its negative (the demo pair so stored registered as another contrast before: 3.45 -> 13.4 mm; now 2.0)."""
    ct = read_image(SAMPLE)
    moving = read_image(SAMPLE.with_name("lung_moving.nii.gz"))
    stored = _stored_through(moving, -160.0, 240.0)
    inverted = Image((255 - stored.array).astype(np.uint8), stored.geometry, "inverted")
    fixed_hu, moving_hu, fixed_ct, moving_ct, info = hounsfield_pair(ct, inverted)
    assert (fixed_ct, moving_ct) == (False, False) and info["inverted"]
    assert abs(info["window_hu"][0] + 160.0) < 20.0 and abs(info["window_hu"][1] - 240.0) < 40.0
    np.testing.assert_allclose(moving_hu.array, hounsfield_pair(ct, stored)[1].array, atol=3.0)
    assert not hounsfield_pair(ct, stored)[4]["inverted"]
