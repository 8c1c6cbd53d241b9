r"""Hounsfield units: is an image CT, and a CT stored otherwise read back in HU (``register()``'s first step).

CT is recognised by its values (air about -1000 HU among the darkest, nothing below air but one padding value:
:func:`is_ct`). Beside a CT, an image that is the same kind of scan stored in other units is read back: shifted or
scaled (HU + 1024 in unsigned integers, a scale: :func:`hounsfield_calibration`), shown whole through a display curve
(:func:`curved_calibration`), or stored through a display window as an 8-bit export (:func:`windowed_calibration`: the
other CT is then cut to the same window, and both register as one contrast). Two CT scans whose units disagree (an
offset, a rescale) are brought to one scale (:func:`ct_disagreement`). :func:`hounsfield_pair` does all of it;
:func:`windowed_ct_hint` says what a window costs, or names one that could not be read.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..io.image_checks import LABEL_MAP_MAX_VALUES
from ..spatial.image import Image
from .ct_values import PERCENTILE_LEVELS, air_level, is_ct, reads_as_ct, trimmed_line, voxel_sample
from .settings import CT_CALIBRATION_MAX_RESIDUAL

__all__ = ["voxel_sample", "is_ct", "hounsfield_calibration", "ct_disagreement", "in_hounsfield_units", "windowed_calibration",
           "curved_calibration", "through_window", "hounsfield_pair", "preset_reference", "windowed_ct_hint"]


def hounsfield_calibration(image: Image, ct: Image) -> Optional[tuple[float, float]]:
    """``(scale, offset)`` that turn ``image`` into the Hounsfield units of ``ct`` (a CT of the same anatomy),
    or None when ``image`` is not CT stored in other units.

    A CT is often stored shifted (HU + 1024 in unsigned integers, the scanner's raw values without the rescale
    intercept) or scaled; it then fails :func:`is_ct`, and against a CT it would be taken as another contrast:
    the demo pair with its moving image stored as HU + 1024 registered to 0.313 mm instead of 0.282, an image
    against itself stored as HU + 2000 got 0.19 mm of invented motion. The two images' intensity percentiles
    (2 to 98) must lie on a straight line of positive slope (least squares) with a root-mean-square residual
    below ``CT_CALIBRATION_MAX_RESIDUAL`` of the CT's percentile range, and the image so mapped must read as CT.
    A scale within 5 % of a power of ten is taken as that power.
    """
    levels = PERCENTILE_LEVELS
    sample = voxel_sample(image)
    values, reference = np.percentile(sample, levels), np.percentile(voxel_sample(ct), levels)
    span = float(reference[-1] - reference[0])
    if not span > 0 or not float(values[-1] - values[0]) > 0:
        return None
    scale, offset = np.polyfit(values.astype(np.float64), reference.astype(np.float64), 1)
    residual = float(np.sqrt(np.mean((reference - (scale * values + offset)) ** 2))) / span
    if not (scale > 0 and residual < CT_CALIBRATION_MAX_RESIDUAL):
        return None
    # stored CT is scaled by a power of ten if at all: a fitted scale close to one is taken as that one (the
    # two scans' histograms differ a little with breathing and field of view), the offset fitted again
    decade = 10.0 ** np.round(np.log10(scale))
    if abs(scale / decade - 1.0) < 0.05:
        scale = decade
        offset = float(np.median(reference - scale * values))
    if not reads_as_ct(sample.astype(np.float64) * scale + offset):
        return None
    return float(scale), float(offset)


#: two CT scans whose intensity percentiles (2 to 98) lie on a line (:func:`_trimmed_line`) with a root-mean-square
#: residual below this share of the range, a slope within ``CT_DISAGREEMENT_SCALES``, and which puts water (0 HU) of
#: one more than ``CT_DISAGREEMENT_MIN_HU`` from the other's are one body in Hounsfield units that disagree
#: (:func:`ct_disagreement`). Measured (twenty-fifth session): the benchmark lung pairs 0.0028-0.0037, the demo pair
#: 0.0009; two fields of view of one CT (one cut to the lungs or to the middle 60 % across) 0.026-0.035, whose lines
#: would have put water 62-73 HU off: a wider field of view is no offset, hence the tight residual
CT_DISAGREEMENT_MAX_RESIDUAL = 0.01
#: see ``CT_DISAGREEMENT_MAX_RESIDUAL``. Water, not air: breathing out makes the lungs denser, and the line through
#: the percentiles then turns about water (the demo pair's lungs 50 / 100 / 200 HU denser: slope 1.07 / 1.13 / 1.28,
#: air moved 68 / 133 / 291 HU, water 2-11 HU). The benchmark's own changes of CT (offsets up to 20 HU, smooth 20-HU
#: bias) put water 4-25 HU off
CT_DISAGREEMENT_MIN_HU = 50.0
#: see ``CT_DISAGREEMENT_MAX_RESIDUAL``: a line steeper or flatter than this is no CT's rescale
CT_DISAGREEMENT_SCALES = (0.8, 1.25)


def ct_disagreement(fixed: Image, moving: Image) -> Optional[tuple[str, float, float]]:
    """Two CT scans (:func:`is_ct`) of one body whose Hounsfield units disagree: ``(image, scale, offset)``, the
    image (``"moving"`` or ``"fixed"``) to map by ``scale * value + offset`` onto the other's units, or None.

    A wrong rescale intercept, a cone-beam CT's offset or an export rescaled by hand keep a scan's air below -500 HU,
    so it still reads as CT, but the preset's Hounsfield window then cuts the two at different tissues (the benchmark
    lung case with its moving image 300 HU brighter: fast 0.394 -> 0.639 mm, 200 HU darker 0.682). The image whose
    air (1st percentile above its padding) lies further from -1000 HU is mapped onto the other; the moving image
    where both lie as far. None where the two put water within ``CT_DISAGREEMENT_MIN_HU`` (breathing turns the line
    about water), where their percentiles follow no line (``CT_DISAGREEMENT_MAX_RESIDUAL``: other fields of view) or
    one too steep (``CT_DISAGREEMENT_SCALES``), or where the map would no longer read as CT.
    """
    levels = PERCENTILE_LEVELS
    fixed_sample, moving_sample = voxel_sample(fixed), voxel_sample(moving)
    fixed_levels = np.percentile(fixed_sample, levels).astype(np.float64)
    moving_levels = np.percentile(moving_sample, levels).astype(np.float64)
    span = float(fixed_levels[-1] - fixed_levels[0])
    if not span > 0 or not float(moving_levels[-1] - moving_levels[0]) > 0:
        return None
    residual, scale, offset = trimmed_line(moving_levels, fixed_levels)  # moving -> fixed
    if not (scale > 0 and residual < CT_DISAGREEMENT_MAX_RESIDUAL * span):
        return None
    if not (CT_DISAGREEMENT_SCALES[0] <= scale <= CT_DISAGREEMENT_SCALES[1] and abs(offset) >= CT_DISAGREEMENT_MIN_HU):
        return None  # (the line's value at 0 HU is its offset: water)
    if abs(air_level(fixed_sample) + 1000.0) > abs(air_level(moving_sample) + 1000.0):
        role, sample, scale, offset = "fixed", fixed_sample, 1.0 / scale, -offset / scale
    else:
        role, sample = "moving", moving_sample
    if not reads_as_ct(sample.astype(np.float64) * scale + offset):
        return None
    return role, float(scale), float(offset)


def in_hounsfield_units(image: Image, scale: float, offset: float) -> Image:
    """A float32 copy of ``image`` with its intensities mapped by ``scale * value + offset``.

    Args:
        image: any image (its array is not changed).
        scale, offset: the map (:func:`hounsfield_calibration`).

    Returns:
        the mapped copy on the same grid, with the same name.
    """
    values = image.array.astype(np.float32) * np.float32(scale) + np.float32(offset)
    return Image(values, image.geometry, image.name)


#: a non-CT image beside a CT holding its lowest value in this share of its voxels or more, and its highest in
#: ``WINDOWED_HIGH_SHARE`` or more, looks like a CT stored through a display window (:func:`windowed_calibration`
#: reads it, :func:`windowed_ct_hint` names it where it cannot)
WINDOWED_LOW_SHARE = 0.10
WINDOWED_HIGH_SHARE = 0.02


#: a CT stored through a display window is read as such (:func:`windowed_calibration`) when a straight line maps its
#: intensity percentiles inside the window onto the CT's with a root-mean-square residual below this share of the
#: CT's range there, over the ``ct_values.FIT_KEEP`` of the levels closest to the line (the lungs' density changes
#: with breathing and leaves it: over all levels the benchmark lung pair through a bone window read 0.066-0.084).
#: Measured (twenty-fourth session): the benchmark lung pairs (seeds 0, 1) with either image stored as 8 bits through
#: soft-tissue, mediastinal, bone or brain windows 0.0011-0.0040; brain T1 MRI (whole, clipped or windowed at
#: percentiles of its voxels or its tissue, 8 bits) and images synthesised from brain labels against the lung CT
#: 0.0147-0.156, but T2-like renderings clipped as 8 bits down to 0.0068 (and with a curve 0.003): the residual
#: alone does not tell them apart (``WINDOWED_MIN_CORRELATION`` does)
WINDOWED_CALIBRATION_MAX_RESIDUAL = 0.008
#: ... and when the two images, so read, correlate at least this well where both show tissue at the start alignment
#: (``modality.contrast_correlation``): percentile curves alone are monotone whatever the images, and over two thirds
#: of the levels many are close to a line. Measured (twenty-fourth session): the demo and benchmark lung pairs with
#: one image through soft-tissue, bone or brain windows, linear or curved, 0.76-0.98; brain T1 / T2-like MRI stored
#: as 8 bits against the lung CT -0.18 to -0.01 (their residuals 0.003-0.010, those of the windows 0.001-0.008)
WINDOWED_MIN_CORRELATION = 0.6
#: ... the display curves tried: the image's values (0 to 1 across the window) raised to 1 / gamma are a line in HU
#: (gamma 1: a linear window; gamma-2 exports of the benchmark lung cases were read as 1.83 / 2.00, gamma 3 as
#: 2.59 / 2.83, gamma 0.5 as 0.50)
WINDOWED_GAMMAS = tuple(2.0 ** (k / 8.0) for k in range(-16, 17))
#: ... over at least this many percentile levels (one apart) strictly inside the window
WINDOWED_MIN_LEVELS = 10
#: ... and with the window's lower end above air (-1000 HU) and the darkest lung: a lowest value at air is no window
#: but a CT stored in other units with its padding, or through the lung window (-1000 to 200 HU), which
#: :func:`hounsfield_calibration` maps back whole (the benchmark lung case so stored: 0.224 mm, as in HU)
WINDOWED_MIN_LOW_HU = -900.0


def windowed_calibration(image: Image, ct: Image) -> Optional[tuple[float, float, float]]:
    """``(low, high, gamma)`` when ``image`` is a CT of the same anatomy as ``ct`` stored through a display window
    (an 8-bit export), None otherwise: ``low`` / ``high`` are the window's ends in HU (its lowest and highest value)
    and ``gamma`` its display curve (:func:`through_window` maps it back to HU).

    Such an image holds its lowest value over a whole share of its voxels (``WINDOWED_LOW_SHARE``: air, and the
    lungs under a soft-tissue or bone window), often its highest too (bone under a soft-tissue window), so
    :func:`hounsfield_calibration`'s line through all percentiles does not fit or, fitted through the plateau, maps
    it wrongly (the demo pair through a bone window, -600 to 1400 HU, read as -909 to 2060: 3.45 -> 4.30 mm). Here
    only the percentiles strictly between the two plateaus are fitted (``WINDOWED_MIN_LEVELS`` or more), as a line
    against the image's values raised to each power of ``WINDOWED_GAMMAS`` (a linear window is gamma 1), the residual
    over the levels closest to it below ``WINDOWED_CALIBRATION_MAX_RESIDUAL``, and the window's lower end must lie
    above air (``WINDOWED_MIN_LOW_HU``). A linear window is taken wherever it fits: with the curve free, the
    two-thirds fit can trade it against the window's ends (a linear soft-tissue window read as gamma 1.3,
    -207 to 215 HU). A curve is tried only for an image that holds its highest value over a share of its voxels too
    (``WINDOWED_HIGH_SHARE``): a skull-stripped T1 (background, no bright plateau) beside the demo CT fitted one.
    """
    sample = voxel_sample(image).astype(np.float64)
    lowest, highest = float(sample.min()), float(sample.max())
    at_low, at_high = float(np.mean(sample == lowest)), float(np.mean(sample == highest))
    if at_low < WINDOWED_LOW_SHARE:
        return None
    if np.unique(sample[:: max(1, sample.size // 200_000)]).size <= LABEL_MAP_MAX_VALUES:
        return None  # a label map or a mask
    levels = np.arange(100.0 * at_low + 1.0, 100.0 * (1.0 - at_high) - 1.0 + 1e-9, 1.0)
    if levels.size < WINDOWED_MIN_LEVELS:
        return None
    values, reference = np.percentile(sample, levels), np.percentile(voxel_sample(ct).astype(np.float64), levels)
    span = float(reference[-1] - reference[0])
    if not span > 0 or not float(values[-1] - values[0]) > 0:
        return None
    shown = (values - lowest) / (highest - lowest)
    best = None
    # a linear window first, taken wherever it fits; a curve only for an image clipped at both ends
    for gamma in (1.0,) + (WINDOWED_GAMMAS if at_high >= WINDOWED_HIGH_SHARE else ()):
        residual, width, low = trimmed_line(shown ** (1.0 / gamma), reference)
        if best is None or residual / span < best[0]:
            best = (residual / span, width, low, float(gamma))
        if gamma == 1.0 and best[0] < WINDOWED_CALIBRATION_MAX_RESIDUAL:
            break
    residual, width, low, gamma = best
    if not (width > 0 and residual < WINDOWED_CALIBRATION_MAX_RESIDUAL):
        return None
    if not low > WINDOWED_MIN_LOW_HU:
        return None  # its lowest value is air: stored in other units, or padded (hounsfield_calibration)
    return low, low + width, gamma


#: a CT shown whole through a display curve (:func:`curved_calibration`) when a curve of ``WINDOWED_GAMMAS`` maps its
#: percentiles onto the CT's with a root-mean-square residual below this share of the range over the two thirds of
#: the levels closest to it (:func:`_trimmed_line`), and below ``CT_CALIBRATION_MAX_RESIDUAL`` over all of them.
#: Measured (twenty-fifth session): the benchmark lung case's moving CT through gamma 3 0.0016 at gamma 2.83 (all
#: levels 0.037: the pair's own differences, as for a line); a brain T1 MRI against the demo CT 0.063 (all 0.26)
CT_CURVE_MAX_RESIDUAL = 0.01
#: ... and leaves this share of a line's residual or less: where a line fits about as well, the line is taken
#: (:func:`hounsfield_calibration`). A line through gamma 2 fitted the demo pair with residual 0.048, within
#: ``CT_CALIBRATION_MAX_RESIDUAL``, and mapped it wrongly; the curve is tried first
CT_CURVE_MIN_GAIN = 0.5


def curved_calibration(image: Image, ct: Image) -> Optional[tuple[float, float, float]]:
    """``(low, high, gamma)`` when ``image`` is a CT of the same anatomy as ``ct`` shown whole through a display curve
    (its values scaled to 0-1 and raised to ``gamma``, an export's or a user's contrast change), None otherwise:
    :func:`through_window` maps it back to HU (``low`` and ``high`` the HU of its lowest and highest value).

    No line maps such an image onto the CT (:func:`hounsfield_calibration`), so it was registered as another contrast:
    the benchmark lung case with its moving CT through gamma 2 / 3, balanced, 0.274 / 0.808 mm (in HU 0.222). Here the
    image's percentiles (2 to 98), scaled to 0-1 by its lowest and highest value and raised to ``1 / gamma`` for each
    of ``WINDOWED_GAMMAS``, are fitted by a line against the CT's over the two thirds of the levels closest to it (the
    lungs' density changes with breathing); the best curve must leave a residual below ``CT_CURVE_MAX_RESIDUAL`` there
    and below ``CT_CALIBRATION_MAX_RESIDUAL`` over all levels, and map the image to values that read as CT.
    """
    array = image.array
    lowest, highest = float(array.min()), float(array.max())
    if not highest > lowest:
        return None
    levels = PERCENTILE_LEVELS
    sample = voxel_sample(image).astype(np.float64)
    if np.unique(sample[:: max(1, sample.size // 200_000)]).size <= LABEL_MAP_MAX_VALUES:
        return None  # a label map or a mask
    shown = np.clip((np.percentile(sample, levels) - lowest) / (highest - lowest), 0.0, 1.0)
    reference = np.percentile(voxel_sample(ct).astype(np.float64), levels)
    span = float(reference[-1] - reference[0])
    if not span > 0 or not float(shown[-1] - shown[0]) > 0:
        return None
    fits = {float(gamma): trimmed_line(shown ** (1.0 / gamma), reference) for gamma in WINDOWED_GAMMAS}
    gamma = min(fits, key=lambda g: fits[g][0])
    residual, width, low = fits[gamma]
    if not residual < CT_CURVE_MIN_GAIN * fits[1.0][0]:
        return None  # a line fits about as well (hounsfield_calibration)
    x = shown ** (1.0 / gamma)
    whole = float(np.sqrt(np.mean((reference - (width * x + low)) ** 2)))
    if not (width > 0 and residual < CT_CURVE_MAX_RESIDUAL * span and whole < CT_CALIBRATION_MAX_RESIDUAL * span):
        return None
    scaled = np.clip((sample - lowest) / (highest - lowest), 0.0, 1.0)
    if not reads_as_ct(low + width * scaled ** (1.0 / gamma)):
        return None
    return low, low + width, gamma


def through_window(image: Image, low: float, high: float, gamma: float) -> Image:
    """A float32 copy of ``image`` (a CT stored through a display window, :func:`windowed_calibration`) in HU: its
    lowest value ``low``, its highest ``high``, the curve ``gamma`` undone."""
    array = image.array.astype(np.float32)
    lowest, highest = float(array.min()), float(array.max())
    shown = np.clip((array - np.float32(lowest)) / np.float32(highest - lowest), 0.0, 1.0)
    values = np.float32(low) + np.float32(high - low) * shown ** np.float32(1.0 / gamma)
    return Image(values.astype(np.float32, copy=False), image.geometry, image.name)


def hounsfield_pair(fixed: Image, moving: Image) -> tuple[Image, Image, bool, bool, Optional[dict]]:
    """The two images as the registration reads their intensities, and whether each is CT.

    Where one is CT (:func:`is_ct`) and the other is CT stored in other units (:func:`hounsfield_calibration`) or
    shown through a display curve (:func:`curved_calibration`, tried first, kept where the two so read correlate),
    the other is mapped to Hounsfield units (a copy: the outputs keep the image as given). Where both are CT and
    their units disagree (:func:`ct_disagreement`), the one off is mapped onto the other's. Where the other is a CT
    stored through a display window (:func:`windowed_calibration`), it is mapped to Hounsfield units and the CT is
    cut to the same window (copies) where the two so read correlate (``WINDOWED_MIN_CORRELATION``): both then show
    the same tissues flat, neither reads as CT any more, and they are registered as one contrast
    (``docs/benchmarks/wave24-2026-12-02.md``).

    Returns:
        (fixed, moving, fixed is CT, moving is CT, None or what was mapped: {"image", "scale", "offset"} (with
        "both_ct" where two CT scans disagreed), {"image", "range_hu": [low, high], "display_gamma", "correlation"}
        for a curve, or {"image", "window_hu": [low, high], "display_gamma", "correlation", "inverted"} where the CT
        was cut to the other's window).
    """
    fixed_ct, moving_ct = is_ct(fixed), is_ct(moving)
    if fixed_ct and moving_ct:
        found = ct_disagreement(fixed, moving)
        if found is None:
            return fixed, moving, True, True, None
        role, scale, offset = found
        info = {"image": role, "scale": round(scale, 6), "offset": round(offset, 2), "both_ct": True}
        if role == "moving":
            return fixed, in_hounsfield_units(moving, scale, offset), True, True, info
        return in_hounsfield_units(fixed, scale, offset), moving, True, True, info
    if fixed_ct == moving_ct:
        return fixed, moving, fixed_ct, moving_ct, None
    other, ct = (moving, fixed) if fixed_ct else (fixed, moving)
    info = {"image": "moving" if fixed_ct else "fixed"}
    # an inverted export (MONOCHROME1: air white) is read as the window of its negative (the demo pair through
    # an inverted soft-tissue window, registered as another contrast: 3.45 -> 13.4 mm)
    for inverted in (False, True):
        shown = Image(-other.array.astype(np.float32), other.geometry, other.name) if inverted else other
        windowed = windowed_calibration(shown, ct)
        if windowed is None:
            continue
        low, high, gamma = windowed
        mapped = through_window(shown, low, high, gamma)
        cut = Image(np.clip(ct.array.astype(np.float32), np.float32(low), np.float32(high)), ct.geometry, ct.name)
        correlation = _window_correlation(cut, mapped, low, high)
        if correlation >= WINDOWED_MIN_CORRELATION:
            info.update(window_hu=[round(low, 1), round(high, 1)], display_gamma=round(gamma, 3),
                        correlation=round(correlation, 3), inverted=inverted)
            return (cut, mapped, False, False, info) if fixed_ct else (mapped, cut, False, False, info)
    curve = curved_calibration(other, ct)
    if curve is not None:
        low, high, gamma = curve
        mapped = through_window(other, low, high, gamma)
        correlation = _window_correlation(ct, mapped, low, high)
        if correlation >= WINDOWED_MIN_CORRELATION:
            info.update(range_hu=[round(low, 1), round(high, 1)], display_gamma=round(gamma, 3),
                        correlation=round(correlation, 3))
            return (fixed, mapped, True, True, info) if fixed_ct else (mapped, moving, True, True, info)
    found = hounsfield_calibration(other, ct)
    if found is None:
        return fixed, moving, fixed_ct, moving_ct, None
    mapped = in_hounsfield_units(other, *found)
    info.update(scale=round(found[0], 6), offset=round(found[1], 2))
    return (fixed, mapped, True, True, info) if fixed_ct else (mapped, moving, True, True, info)


def _window_correlation(cut: Image, mapped: Image, low: float, high: float) -> float:
    """How well a CT cut to a window and the image read through it agree where both show tissue, at the start
    alignment (``modality.contrast_correlation``, both scaled across the window)."""
    from .modality import contrast_correlation  # noqa: PLC0415 - modality imports this module

    def across(image: Image) -> Image:
        return Image(((image.array - np.float32(low)) / np.float32(high - low)).astype(np.float32), image.geometry,
                     image.name)

    return contrast_correlation(across(cut), across(mapped))


def preset_reference(fixed_hu: Image, fixed: Image, moving: Image, hounsfield: Optional[dict]) -> Image:
    """The image ``auto`` tells the preset from (``detect_preset``): the fixed one as read (:func:`hounsfield_pair`),
    or, where a CT was cut to the other image's display window, that CT as given (still a chest CT)."""
    if hounsfield and "window_hu" in hounsfield:
        return moving if hounsfield["image"] == "fixed" else fixed
    return fixed_hu


def windowed_ct_hint(fixed: Image, moving: Image, fixed_ct: bool, moving_ct: bool,
                     hounsfield: Optional[dict] = None) -> Optional[str]:
    """A warning for a CT stored through a display window beside a CT, None otherwise.

    Read (:func:`hounsfield_pair` gave ``hounsfield`` with "window_hu"): the tissue outside the window (the lungs
    under a soft-tissue window) is flat in both images and registered from its outline alone; the warning names the
    window (the benchmark lung case through -160 to 240 HU: 2.2-2.3 mm, against 0.22 in HU).

    Not read: one image is CT and the other, not read as CT, holds its lowest and its highest value over whole shares
    of its voxels, as a CT stored through a display window does, but :func:`windowed_calibration` found no curve of
    the CT's values for it or the two images so read did not correlate: an MR image stored as 8 bits beside a CT
    (registered as another contrast, as it should be), or a window that could not be read. The warning says what to
    do in the second case: before windows were read, a chest CT stored through a soft-tissue window registered
    worse than not at all (the demo pair 3.45 -> 13.6 mm, ``docs/benchmarks/wave24-2026-12-02.md``)."""
    if hounsfield and "window_hu" in hounsfield:
        low, high = hounsfield["window_hu"]
        return (f"the {hounsfield['image']} image is a CT stored through a display window (read as {low:.0f} to "
                f"{high:.0f} HU): the other CT was cut to the same window, and tissue outside it (below {low:.0f} or "
                f"above {high:.0f} HU: the lungs under a soft-tissue window) is flat in both and follows its outline only "
                "(a chest CT so stored through a soft-tissue window: 2.2 mm against 0.22 in Hounsfield units); register "
                "the scan in Hounsfield units (its DICOM or original NIfTI) where that tissue matters")
    if fixed_ct == moving_ct:
        return None
    role, image = ("moving", moving) if fixed_ct else ("fixed", fixed)
    sample = voxel_sample(image)
    at_low, at_high = float(np.mean(sample == sample.min())), float(np.mean(sample == sample.max()))
    if at_low < WINDOWED_LOW_SHARE or at_high < WINDOWED_HIGH_SHARE or np.unique(sample).size <= LABEL_MAP_MAX_VALUES:
        return None  # (a label map or a mask is named by the input checks)
    return (f"the {role} image is not in Hounsfield units beside a CT and holds its lowest value in {100 * at_low:.0f}% "
            f"and its highest in {100 * at_high:.0f}% of its voxels, but could not be read as a CT stored through a "
            "display window (its values follow no curve of the CT's where the two agree): it is registered as another "
            "contrast. If it is such a CT (an 8-bit export), register the scan in Hounsfield units (its DICOM or "
            "original NIfTI): a chest CT so stored and registered as another contrast ended worse than not at all")
