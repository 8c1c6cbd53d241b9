"""Which images read as CT (``engine.ct_values.is_ct``) and a non-CT image's padding (``normalization.padding_below``).

An MR image resampled with a CT's -1024 outside its field of view was read as CT (its padding was taken for air):
the CT window flattened it and the pair registered as two contrasts (brain benchmark case, balanced: 3.42 mm for
0.17 unpadded). A CT's air is now read without its lowest value, and a non-CT image's padding far below its values
is left out of its normalisation (0.19 mm). CT stays CT clipped, noisy, with its units off, or masked to its body or
its lungs. Real images: the brain T1, the demo chest CT and the thorax CT with its masks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.engine import register
from ADRegNetLib.engine.ct_values import is_ct
from ADRegNetLib.engine.normalization import normalized_for_preset, padding_below
from ADRegNetLib.io import read_image
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from brain_helpers import needs_t1, t1_image

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "lung_fixed.nii.gz"


def _outside_circle(image: Image, value: float) -> Image:
    """``image`` with ``value`` outside the circle inscribed in each axial slice (a CT's field of view)."""
    array = image.array.astype(np.float32).copy()
    _, y, x = np.indices(array.shape)
    ny, nx = array.shape[1:]
    array[((y - (ny - 1) / 2) / (ny / 2)) ** 2 + ((x - (nx - 1) / 2) / (nx / 2)) ** 2 > 0.95] = value
    return image.with_array(array)


def _changed(image: Image, scale: float, offset: float) -> Image:
    return image.with_array((image.array.astype(np.float32) * scale + offset).astype(np.float32))


@needs_t1
@pytest.mark.parametrize("padding", [-1024.0, -3024.0])
def test_an_mri_padded_like_a_ct_is_not_ct_and_its_padding_is_left_out(padding):
    t1 = t1_image(2)
    padded = _outside_circle(t1, padding)
    assert not is_ct(padded)
    assert padding_below(padded) == padding and padding_below(t1) is None
    normalised = normalized_for_preset(padded, "mr", None).array
    inside = padded.array > padding
    # the T1's own percentiles, not the padding's: its background stays dark, as in the unpadded image
    reference = normalized_for_preset(t1, "mr", None).array
    assert np.abs(normalised[inside] - reference[inside]).max() < 0.02
    assert normalised[~inside].max() == 0.0


def test_a_binary_image_or_a_zero_background_is_no_padding():
    array = np.zeros((12, 12, 12), np.float32)
    array[3:9, 3:9, 3:9] = 1.0
    geometry = Geometry((12, 12, 12), (1.0, 1.0, 1.0))
    assert padding_below(Image(array, geometry)) is None
    assert padding_below(Image(array * 1500.0, geometry)) is None  # tissue far above a background of 0: its own dark
    assert padding_below(Image(np.where(array > 0, 1500.0, -1.0).astype(np.float32), geometry)) is None  # no range


@pytest.mark.skipif(not SAMPLE.is_file(), reason="demo data missing")
@pytest.mark.parametrize("scale, offset, low, noise", [(1.0, 0.0, None, 0.0), (1.0, 0.0, -1000.0, 0.0),
                                                       (1.0, 0.0, -1024.0, 0.0), (1.0, 300.0, None, 0.0),
                                                       (1.0, -300.0, None, 0.0), (0.85, 100.0, None, 0.0),
                                                       (1.0, 0.0, None, 100.0), (1.0, 0.0, -1024.0, 150.0)])
def test_a_chest_ct_reads_as_ct_clipped_noisy_or_with_its_units_off(scale, offset, low, noise):
    ct = read_image(SAMPLE)
    array = ct.array.astype(np.float32) * scale + offset + np.random.default_rng(0).normal(0.0, noise, ct.array.shape)
    assert is_ct(ct.with_array((array if low is None else np.maximum(array, low)).astype(np.float32)))


@pytest.mark.parametrize("mask", ["body_mask", "lung_mask"])
def test_a_ct_masked_to_its_body_or_its_lungs_reads_as_ct(shared_data, mask):
    """Everything outside the mask set to a padding: the lungs inside are its air."""
    folder = shared_data / "lung-ct-thorax"
    ct, inside = read_image(folder / "thorax_ct.nii.gz"), read_image(folder / f"{mask}.nii.gz").array > 0
    for padding in (-1024.0, -3024.0):
        assert is_ct(ct.with_array(np.where(inside, ct.array, padding).astype(np.float32)))


@needs_t1
def test_an_mri_padded_like_a_ct_registers_as_the_mri():
    """The T1 against itself shifted by a voxel and padded with -1024 outside a circle: one contrast, no Hounsfield
    calibration, the brain preset, and the same motion as without the padding."""
    fixed = t1_image(4)
    moving = fixed.with_array(np.roll(fixed.array, 1, axis=2))
    kw = dict(quality="fast", use_network=False, device="cpu", compute_inverse=False)
    plain = register(fixed, moving, **kw)
    padded = register(fixed, _outside_circle(moving, -1024.0), **kw)
    for key in ("preset", "multimodal", "hounsfield_calibration"):
        assert padded.metrics[key] == plain.metrics[key], key
    assert padded.metrics["preset"] == "brain-mri" and padded.metrics["multimodal"] is False
    inside = fixed.array > np.percentile(fixed.array, 60)
    shift, reference = padded.disp_mm[0][inside], plain.disp_mm[0][inside]  # x: the voxel's 4 mm
    assert abs(float(np.median(reference))) > 2.0
    assert abs(float(np.median(shift)) - float(np.median(reference))) < 0.3
