"""Contrast detection (engine/modality.py) and normalised mutual information (metrics.nmi).

A T1 against a T2-like rendering of the same anatomy (inverted tissue contrast) must be recognised
as two contrasts, so that the pre-alignment uses mutual information; a deformed, intensity-changed
copy of the same contrast must not. Images synthesised from one label map with a contrast per
tissue still correlate (the start test says one contrast), but after the optimisation their
swapped edges are seen and the refinement runs as for two contrasts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.cli.main import main
from ADRegNetLib.engine import register
from ADRegNetLib.engine.hounsfield import hounsfield_calibration, hounsfield_pair, is_ct
from ADRegNetLib.engine.modality import contrast_correlation, detect_preset, guess_multimodal, inverted_edge_share
from ADRegNetLib.engine.normalization import normalized_for_preset as _normalized
from ADRegNetLib.engine.normalization import normalized_pair
from ADRegNetLib.spatial.affine import AffineMap
from ADRegNetLib.io import read_image, write_image
from ADRegNetLib.metrics import nmi
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.engine.settings import TWO_CONTRAST_EDGE_SHARE
from benchmarks.intensities import intensity_change_mri, render_t2_like, synth_image_from_labels
from brain_helpers import needs_t1 as needs_brain, t1_image, t1_labels

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "lung_fixed.nii.gz"


@pytest.fixture(scope="module")
def t1_t2():
    """The real T1 at 4 mm and its T2-like rendering (same grid, inverted tissue contrast)."""
    t1 = t1_image(4)
    t2 = render_t2_like(t1.array, t1.array > np.percentile(t1.array[t1.array > 0], 75))
    return t1, t1.with_array(t2, name="t2")


@pytest.fixture(scope="module")
def synth_pair():
    """Two images synthesised from the real 4 mm label map with their own random tissue contrasts
    (the moving one's labels shifted by a voxel): the tissues correlate 0.67 but several swap order."""
    seg = np.ascontiguousarray(t1_labels()[2::4, 2::4, 2::4])
    geometry = Geometry(seg.shape[::-1], (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    fixed = synth_image_from_labels(seg, geometry, np.random.default_rng(0))
    moving = synth_image_from_labels(np.roll(seg, 1, axis=2), geometry, np.random.default_rng(1))
    return Image(fixed, geometry, "fixed"), Image(moving, geometry, "moving")


def _guess(fixed: Image, moving: Image) -> tuple[bool, str]:
    return guess_multimodal(fixed, moving, _normalized(fixed, "mr", None), _normalized(moving, "mr", None))


@needs_brain
def test_ct_is_told_by_hounsfield_units_not_by_negative_values(t1_t2):
    """Before: an MR image stored as full-range int16 (background -32768) had its 1st percentile below -500
    HU and was taken for CT (the CT window flattened it; registration then failed). A CT padded with
    -32768 outside its field of view stays CT."""
    t1, _ = t1_t2
    full_range = np.round(t1.array / t1.array.max() * 65535.0 - 32768.0).astype(np.int16)
    mr = Image(full_range, t1.geometry, "mr_int16")
    assert float(np.percentile(full_range, 1)) < -500
    assert not is_ct(mr)
    assert detect_preset(mr, mr)[0] == "brain-mri"
    ct = read_image(SAMPLE, dtype=None)
    assert is_ct(ct)
    zz, yy, xx = np.indices(ct.array.shape)
    outside = (yy - ct.array.shape[1] / 2) ** 2 + (xx - ct.array.shape[2] / 2) ** 2 > (0.45 * ct.array.shape[2]) ** 2
    padded = np.where(outside, -32768, ct.array).astype(np.int16)
    assert outside.mean() > 0.1
    assert is_ct(Image(padded, ct.geometry, "ct_padded"))
    assert detect_preset(Image(padded, ct.geometry, "ct_padded"), ct)[0] == "lung-ct"


@needs_brain
def test_t1_against_t2_like_is_two_contrasts(t1_t2):
    t1, t2 = t1_t2
    multimodal, reason = _guess(t1, t2)
    assert multimodal, reason
    assert "different contrasts" in reason
    assert contrast_correlation(_normalized(t1, "mr", None), _normalized(t2, "mr", None)) < 0


@needs_brain
def test_shifted_rescaled_same_contrast_is_one_contrast(t1_t2):
    """Same contrast, moved by 16 mm, gain and bias changed, noise added: still one contrast."""
    t1, _ = t1_t2
    rng = np.random.default_rng(0)
    top = float(t1.array.max())
    moved = (np.roll(t1.array, 4, axis=2) * 0.6 + 0.1 * top * (np.roll(t1.array, 4, axis=2) > 0)
             + rng.normal(0, 0.02 * top, t1.array.shape))
    multimodal, reason = _guess(t1, Image(moved.astype(np.float32), t1.geometry, "moved"))
    assert not multimodal, reason
    assert "same contrast" in reason


def test_ct_against_non_ct_is_two_contrasts():
    if not SAMPLE.is_file():
        pytest.skip("demo data missing")
    ct = read_image(SAMPLE)
    mr_like = Image(np.clip(ct.array + 1000.0, 0, None).astype(np.float32), ct.geometry, "mr-like")
    multimodal, reason = guess_multimodal(ct, mr_like, _normalized(ct, "ct", (-1000.0, 200.0)),
                                          _normalized(mr_like, "mr", None))
    assert multimodal and "CT" in reason
    # two CT scans share a contrast whatever their alignment: HU are calibrated
    far = Image(np.roll(ct.array, 10, axis=2).copy(), ct.geometry, "shifted ct")
    same, why = guess_multimodal(ct, far, _normalized(ct, "ct", (-1000.0, 200.0)), _normalized(far, "ct", (-1000.0, 200.0)))
    assert not same and "both images are CT" in why


@needs_brain
def test_ct_stored_in_other_units_is_mapped_back_to_hounsfield_units_and_mri_is_not(t1_t2):
    if not SAMPLE.is_file():
        pytest.skip("demo data missing")
    ct = read_image(SAMPLE)
    moving = read_image(SAMPLE.with_name("lung_moving.nii.gz"))  # the same chest, breathing
    raw = Image((moving.array + 1024).clip(0).astype(np.uint16), moving.geometry, "raw")  # no rescale intercept
    assert not is_ct(raw)
    scale, offset = hounsfield_calibration(raw, ct)
    assert scale == 1.0 and abs(offset + 1024) < 15  # the two scans' histograms differ a little
    scaled = Image(moving.array * 0.001, moving.geometry, "scaled")
    scale, offset = hounsfield_calibration(scaled, ct)
    assert scale == 1000.0 and abs(offset) < 15
    # MRI is no CT in other units: its percentiles do not lie on a line with the CT's
    t1 = t1_t2[0]
    assert hounsfield_calibration(t1, ct) is None and hounsfield_calibration(Image(t1.array * 3 - 800, t1.geometry, "t1"), ct) is None
    fixed_hu, moving_hu, fixed_ct, moving_ct, info = hounsfield_pair(ct, raw)
    assert fixed_hu is ct and fixed_ct and moving_ct and info["image"] == "moving" and info["scale"] == 1.0
    np.testing.assert_allclose(moving_hu.array, raw.array.astype(np.float32) + info["offset"], atol=1e-3)
    assert hounsfield_pair(t1, ct)[2:] == (False, True, None)


def test_a_ct_against_itself_stored_with_an_offset_is_not_moved():
    """Before, the copy stored as HU + 2000 was taken as another contrast: 0.19 mm of invented motion (demo CT)."""
    if not SAMPLE.is_file():
        pytest.skip("demo data missing")
    ct = read_image(SAMPLE)
    crop = np.ascontiguousarray(ct.array[8:40, 16:56, 8:48])
    geometry = Geometry(crop.shape[::-1], ct.geometry.spacing, ct.geometry.index_to_physical(np.array([[8.0, 16.0, 8.0]]))[0],
                        ct.geometry.direction)
    fixed = Image(crop, geometry, "fixed")
    stored = Image((crop + 2000).clip(0).astype(np.uint32), geometry, "moving")
    result = register(fixed, stored, quality="fast", use_network=False, compute_inverse=False)
    assert result.metrics["hounsfield_calibration"]["image"] == "moving" and not result.metrics["multimodal"]
    assert float(np.abs(result.disp_mm).max()) < 0.05
    assert abs(float(result.warped.array.mean()) - float(stored.array.mean())) < 5  # the output keeps the user's units


@needs_brain
def test_nmi_is_high_for_a_contrast_map_and_low_for_unrelated_images(t1_t2):
    t1, t2 = t1_t2
    rng = np.random.default_rng(1)
    shuffled = rng.permutation(t2.array.ravel()).reshape(t2.array.shape)
    assert nmi(t1.array, t1.array) == pytest.approx(2.0)
    related, unrelated = nmi(t1.array, t2.array), nmi(t1.array, shuffled)
    assert related > unrelated + 0.1, (related, unrelated)
    assert unrelated == pytest.approx(1.0, abs=0.05)
    assert np.isnan(nmi(np.ones((4, 4, 4)), t1.array[:4, :4, :4]))


@needs_brain
def test_engine_uses_mutual_information_across_contrasts(t1_t2):
    t1, t2 = t1_t2
    kw = dict(quality="fast", use_network=False, device="cpu", instance_optimization=False, compute_inverse=False)
    auto = register(t1, t2, **kw).metrics
    assert auto["multimodal"] and "different contrasts" in auto["multimodal_reason"]
    assert auto["prealignment"]["metric"] == "Mattes mutual information"
    assert auto["similarity_after"]["nmi"] > 1.0
    forced = register(t1, t2, multimodal=False, **kw).metrics
    assert not forced["multimodal"] and forced["multimodal_reason"] == "chosen by the user"
    assert forced["prealignment"]["metric"] == "correlation"


@needs_brain
def test_cli_contrast_option_overrides_the_guess(t1_t2, tmp_path, capsys):
    t1, t2 = t1_t2
    write_image(t1, tmp_path / "t1.nii.gz")
    write_image(t2, tmp_path / "t2.nii.gz")
    code = main(["register", str(tmp_path / "t1.nii.gz"), str(tmp_path / "t2.nii.gz"), "-o", str(tmp_path / "out"),
                 "--quality", "instant", "--no-inverse", "--contrast", "same", "-q"])
    assert code == 0
    import json

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["multimodal"] is False and metrics["multimodal_reason"] == "chosen by the user"
    assert "NCC" in capsys.readouterr().out


@needs_brain
def test_instant_returns_no_deformation_when_the_prediction_does_not_help(t1_t2, monkeypatch):
    """quality instant keeps the network's prediction only when it improves the similarity by 2%; a
    prediction that does not (here forced: gain -1%) gives the identity field and a warning."""
    from ADRegNetLib.engine import prediction

    def no_help(model, fixed_w, moving_w, mask_w, always_keep, **options):
        assert always_keep is False
        return None, {"relative_gain": -0.01, "kept": False,
                      "left_out_because": "it changed the local similarity by -1.0% (a prediction must improve it by 2%)"}

    monkeypatch.setattr(prediction, "network_stage", no_help)
    t1, t2 = t1_t2
    result = register(t1, t2, quality="instant", device="cpu", compute_inverse=False, prealignment="none")
    assert result.metrics["network_used"] is False
    assert not np.any(result.disp_mm)
    assert any("no deformation was applied" in w and "two contrasts" in w and "-1.0%" in w
               for w in result.metrics["warnings"])


@needs_brain
def test_instant_leaves_identical_images_alone(t1_t2):
    t1, _ = t1_t2
    result = register(t1, t1, quality="instant", device="cpu", compute_inverse=False)
    assert not np.any(result.disp_mm)
    assert result.metrics["network"]["kept"] is False


def test_multimodal_must_be_a_bool_or_none():
    from ADRegNetLib.engine.api import RegistrationError
    from ADRegNetLib.spatial.geometry import Geometry

    arr = np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32)
    img = Image(arr, Geometry((20, 20, 20), (2.0, 2.0, 2.0)), "x")
    with pytest.raises(RegistrationError, match=r"multimodal must be True .* got 'yes'"):
        register(img, img, multimodal="yes", quality="fast", use_network=False)


def test_network_sees_ct_in_its_training_window():
    import torch

    from ADRegNetLib.engine.modality import rewindowed_for_network as _rewindowed
    from ADRegNetLib.engine.settings import NETWORK_CT_WINDOW

    assert NETWORK_CT_WINDOW == (-1000.0, 400.0)  # train/prep.py scales CT by (HU + 1000) / 1400
    lung_window = (-1000.0, 200.0)
    hu = torch.tensor([-1000.0, -500.0, 0.0, 200.0])
    normalised = (hu - lung_window[0]) / (lung_window[1] - lung_window[0])
    expected = (hu + 1000.0) / 1400.0
    torch.testing.assert_close(_rewindowed(normalised, lung_window), expected)


def _as_tensor(image: Image):
    import torch

    return torch.from_numpy(_normalized(image, "mr", None).array)[None, None]


@needs_brain
def test_inverted_edge_share_separates_tissue_orders_from_intensity_changes(t1_t2, synth_pair):
    import torch

    t1, t2 = t1_t2
    changed = intensity_change_mri(t1.array, t1.geometry, np.random.default_rng(3))  # gamma, bias, noise
    noisy = t1.array + np.random.default_rng(4).normal(0, 0.2 * np.percentile(t1.array, 99), t1.array.shape)
    same = [inverted_edge_share(_as_tensor(t1), _as_tensor(Image(a.astype(np.float32), t1.geometry, "m")))
            for a in (t1.array, changed, noisy)]
    assert same[0] == 0.0
    assert max(same) <= TWO_CONTRAST_EDGE_SHARE / 2, same
    assert inverted_edge_share(_as_tensor(t1), _as_tensor(t2)) > 10 * TWO_CONTRAST_EDGE_SHARE  # T2: edges inverted
    fixed, moving = synth_pair
    aligned = Image(np.roll(moving.array, -1, axis=2).copy(), moving.geometry, "aligned")
    assert inverted_edge_share(_as_tensor(fixed), _as_tensor(aligned)) > 2 * TWO_CONTRAST_EDGE_SHARE
    empty = torch.zeros_like(_as_tensor(t1))
    assert inverted_edge_share(_as_tensor(t1), empty) == 0.0  # no tissue in both: nothing to judge


@needs_brain
def test_tissues_in_another_order_are_refined_as_two_contrasts(synth_pair):
    fixed, moving = synth_pair
    kw = dict(quality="fast", use_network=False, device="cpu", compute_inverse=False)
    guessed = register(fixed, moving, **kw).metrics
    # the start test says one contrast, the check after the optimisation two, and the result says so
    assert guessed["multimodal"] is True
    assert "same contrast; two contrasts: after the optimisation" in guessed["multimodal_reason"]
    refinement = guessed["refinement"]
    assert refinement["contrasts"] == "two contrasts"
    assert refinement["similarity"].startswith("normalised gradient fields")
    check = refinement["contrast_check"]
    assert check["inverted_edge_share"] > check["threshold"] == TWO_CONTRAST_EDGE_SHARE
    assert check["decision"].startswith("two contrasts")
    # the user's word stands: no check, local NCC
    forced = register(fixed, moving, multimodal=False, **kw).metrics["refinement"]
    assert forced["contrasts"] == "one contrast" and "contrast_check" not in forced
    assert forced["similarity"].startswith("local NCC")


@needs_brain
def test_one_contrast_with_intensity_change_keeps_local_ncc(t1_t2):
    t1, _ = t1_t2
    moving = Image(intensity_change_mri(np.roll(t1.array, 1, axis=1), t1.geometry, np.random.default_rng(5)),
                   t1.geometry, "moving")
    refinement = register(t1, moving, quality="fast", use_network=False, device="cpu",
                          compute_inverse=False).metrics["refinement"]
    assert refinement["contrasts"] == "one contrast"
    assert refinement["contrast_check"]["inverted_edge_share"] <= TWO_CONTRAST_EDGE_SHARE / 2
    assert refinement["similarity"].startswith("local NCC")


@needs_brain
def test_one_contrast_taken_for_two_before_alignment_is_one_after_it(t1_t2):
    """A bias field changing the brightness 50-fold across the head (a ramp, exp(+-2)) drops the start
    test's correlation of one contrast below its threshold; once aligned, no edge has changed sign and
    the refinement runs on local NCC. The T2-like image stays two contrasts through the same check."""
    t1, t2 = t1_t2
    ramp = np.linspace(-1.0, 1.0, t1.array.shape[2], dtype=np.float32)[None, None, :]
    moving = Image(np.roll(t1.array, 1, axis=1) * np.exp(2.0 * ramp), t1.geometry, "biased")
    kw = dict(quality="fast", use_network=False, device="cpu", compute_inverse=False)
    metrics = register(t1, moving, **kw).metrics
    assert "(< 0.3): different contrasts; one contrast after all" in metrics["multimodal_reason"]
    assert metrics["multimodal"] is False
    refinement = metrics["refinement"]
    assert refinement["contrasts"] == "one contrast" and refinement["similarity"].startswith("local NCC")
    assert refinement["contrast_check"]["inverted_edge_share"] <= TWO_CONTRAST_EDGE_SHARE

    t2_metrics = register(t1, t2, **kw).metrics
    assert t2_metrics["multimodal"] is True
    assert t2_metrics["refinement"]["contrasts"] == "two contrasts"
    assert t2_metrics["refinement"]["contrast_check"]["inverted_edge_share"] > 10 * TWO_CONTRAST_EDGE_SHARE


def _head_with_bright_scalp(t1: Image, pad: int, origin_shift_mm) -> Image:
    """``t1``'s content on a grid ``pad`` voxels wider along x (the new voxels first), with a scalp-like shell
    far brighter than any tissue around its centre box, at the same physical place plus ``origin_shift_mm``."""
    arr = np.pad(t1.array, ((0, 0), (0, 0), (pad, 0)))
    arr[:, :, :pad + 3] = 4.0 * float(t1.array.max())
    g = t1.geometry
    geometry = Geometry((g.size[0] + pad, g.size[1], g.size[2]), g.spacing,
                        g.origin - np.array([pad * g.spacing[0], 0.0, 0.0]) + np.asarray(origin_shift_mm), g.direction)
    return Image(arr, geometry, "moving")


@needs_brain
@pytest.mark.parametrize("shift_mm", [(0.0, 0.0, 0.0), (12.0, -8.0, 4.0)])
def test_a_fixed_region_normalises_both_images_over_the_same_anatomy(t1_t2, shift_mm):
    """With a fixed mask, each image's percentiles come from the same anatomy: the moving image over the mask
    as it lies on the moving grid (physical position, through the start), so one tissue gets one value in
    both, whatever lies outside the mask (a bright scalp only in the moving image, a wider moving grid)."""
    t1 = t1_t2[0]
    moving = _head_with_bright_scalp(t1, pad=5, origin_shift_mm=shift_mm)
    initial = None if not any(shift_mm) else AffineMap(np.eye(3), np.asarray(shift_mm))
    region = np.zeros(t1.array.shape, bool)
    z, y, x = t1.array.shape
    region[z // 4:3 * z // 4, y // 4:3 * y // 4, x // 4:3 * x // 4] = True
    fixed_n, moving_n, record = normalized_pair(t1, moving, "mr", None, region, initial)
    assert record == {"fixed": "the fixed region", "moving": "the fixed region on the moving grid"}
    same_place = moving_n.array[:, :, 5:]
    np.testing.assert_allclose(same_place[region], fixed_n.array[region], atol=1e-5)
    # each image's own percentiles (the rule before): the scalp sets the moving image's scale
    own = _normalized(moving, "mr", None).array[:, :, 5:]
    assert np.abs(own[region] - fixed_n.array[region]).mean() > 0.1


@needs_brain
def test_a_fixed_region_off_the_moving_image_falls_back_to_its_own_percentiles(t1_t2):
    t1 = t1_t2[0]
    g = t1.geometry
    far = Image(t1.array.copy(), Geometry(g.size, g.spacing, g.origin + np.array([1000.0, 0.0, 0.0]), g.direction), "moving")
    region = np.zeros(t1.array.shape, bool)
    region[4:12, 4:12, 4:12] = True
    fixed_n, moving_n, record = normalized_pair(t1, far, "mr", None, region)
    assert record["moving"].startswith("the whole image")
    np.testing.assert_array_equal(moving_n.array, _normalized(far, "mr", None).array)
    np.testing.assert_array_equal(fixed_n.array, _normalized(t1, "mr", None, mask=region).array)
    # without a region both use their own percentiles, as always
    _, _, record = normalized_pair(t1, far, "mr", None, None)
    assert record == {"fixed": "the whole image", "moving": "the whole image"}
