"""register() inputs that carry geometry: masks on other grids mapped by physical position, a
moving mask, an initial transform, landmark shapes, padding with the moving image's background.
Small crops of the demo lung CT, no network, few steps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.engine import RegistrationError, register
from ADRegNetLib.engine.masks import map_mask
from ADRegNetLib.io import read_image
from ADRegNetLib.io.images import check_pair_sizes
from ADRegNetLib.spatial.affine import AffineMap
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.transform import background_value

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
CHEAP = dict(quality="fast", use_network=False, device="cpu", prealignment="none", instance_optimization=False,
             compute_inverse=False)


@pytest.fixture(scope="module")
def crop() -> Image:
    full = read_image(SAMPLE / "lung_fixed.nii.gz", name="lung")
    g = full.geometry
    origin = g.index_to_physical(np.array([[8, 20, 16]], dtype=np.float64))[0]
    return Image(np.ascontiguousarray(full.array[16:48, 20:60, 8:48]), Geometry((40, 40, 32), g.spacing, origin), "crop")


def _box_mask(image: Image, lo_xyz, hi_xyz) -> np.ndarray:
    m = np.zeros(image.geometry.shape, bool)
    m[lo_xyz[2]:hi_xyz[2], lo_xyz[1]:hi_xyz[1], lo_xyz[0]:hi_xyz[0]] = True
    return m


def test_mask_on_a_half_resolution_grid_is_mapped_by_position(crop):
    box = _box_mask(crop, (10, 10, 8), (30, 30, 24))
    half_g = crop.geometry.with_size([(s + 1) // 2 for s in crop.geometry.size])
    half = Image(np.zeros(half_g.shape, bool), half_g)
    idx = half_g.physical_to_index(crop.geometry.index_to_physical(np.argwhere(box)[:, ::-1].astype(float)))
    idx = np.round(idx).astype(int)
    half.array[idx[:, 2], idx[:, 1], idx[:, 0]] = True
    mapped = map_mask(half, crop.geometry, "fixed mask", "fixed image")
    dice = 2 * (mapped & box).sum() / (mapped.sum() + box.sum())
    assert dice > 0.9
    result = register(crop, crop, fixed_mask=half, **CHEAP)  # accepted by register() too
    assert result.metrics["jacobian"]["num_voxels"] == int(mapped.sum())
    # CT: both images in the Hounsfield window whatever the mask (metrics.json says so)
    assert result.metrics["intensity_normalization"] == {"fixed": "Hounsfield window", "moving": "Hounsfield window"}


def test_mask_shifted_50_mm_acts_50_mm_away(crop):
    box = _box_mask(crop, (5, 5, 4), (20, 20, 14))
    shift = np.array([50.0, 0.0, 0.0])
    g = crop.geometry
    big = Geometry((60, 40, 32), g.spacing, g.origin - np.array([20.0, 0.0, 0.0]), g.direction)
    moved = Image(np.zeros(big.shape, bool), big)
    idx = big.physical_to_index(g.index_to_physical(np.argwhere(box)[:, ::-1].astype(float)) + shift)
    idx = np.round(idx).astype(int)
    keep = np.all((idx >= 0) & (idx < np.asarray(big.size)), axis=1)
    moved.array[idx[keep, 2], idx[keep, 1], idx[keep, 0]] = True
    mapped = map_mask(moved, g, "fixed mask", "fixed image")
    centre = g.index_to_physical(np.argwhere(mapped)[:, ::-1].astype(float)).mean(axis=0)
    centre0 = g.index_to_physical(np.argwhere(box)[:, ::-1].astype(float)).mean(axis=0)
    assert abs((centre - centre0)[0] - 50.0) < 8.0  # the part inside the image sits 50 mm away (clipped at the edge)


def test_mask_that_misses_the_fixed_image_is_refused(crop):
    g = crop.geometry
    far = Image(np.ones(g.shape, bool), Geometry(g.size, g.spacing, g.origin + 500.0, g.direction), "far mask")
    with pytest.raises(RegistrationError, match="does not overlap the fixed image in physical space"):
        register(crop, crop, fixed_mask=far, **CHEAP)
    with pytest.raises(RegistrationError, match="fixed mask is empty"):
        register(crop, crop, fixed_mask=Image(np.zeros(g.shape, bool), g), **CHEAP)


@pytest.mark.parametrize("role", ["fixed", "moving"])
def test_mask_mostly_off_its_image_is_warned_about(crop, role):
    """Before: a mask whose header flips x about the same origin (RAS against LPS) kept 1.6 % of itself on
    the sample CT and was used without a word. Here the same mistake on the crop: its box lands beside
    the image, a few voxels overlapping."""
    g = crop.geometry
    box = _box_mask(crop, (0, 5, 4), (36, 35, 28))
    flipped = Geometry(g.size, g.spacing, g.origin, g.direction @ np.diag([-1.0, 1.0, 1.0]))
    kwargs = {f"{role}_mask": Image(box, flipped, "flipped mask")}
    result = register(crop, crop, **kwargs, **CHEAP)
    notes = [w for w in result.metrics["warnings"] if f"of the {role} mask's marked volume lies on the {role} image" in w]
    assert len(notes) == 1 and "RAS against LPS" in notes[0], result.metrics["warnings"]
    share = float(notes[0].split("only ")[1].split("%")[0])
    assert 0 < share < 10
    kwargs = {f"{role}_mask": Image(box, g, "mask")}
    assert not [w for w in register(crop, crop, **kwargs, **CHEAP).metrics["warnings"] if "marked volume" in w]


def test_a_mask_of_a_few_voxels_is_refused_with_what_is_needed(crop):
    """Before: a one-voxel mask failed inside the losses with 'the mask is empty on this grid'."""
    g = crop.geometry
    with pytest.raises(RegistrationError, match=r"^the fixed mask leaves \d+ voxels of the .* mm working grid to compare "
                                                r"\(at least 512 are needed.*mark a larger region of interest"):
        register(crop, crop, fixed_mask=Image(_box_mask(crop, (10, 10, 10), (12, 12, 12)), g), **CHEAP)
    register(crop, crop, fixed_mask=Image(_box_mask(crop, (6, 6, 6), (26, 26, 26)), g), **CHEAP)  # enough


def test_inverse_consistency_of_a_moving_image_without_foreground():
    """Before: a two-valued moving image whose border holds its upper value (a body label of the lung crop) had no
    'foreground' by the consistency check's rule, and the run failed at its end with 'no point to measure: the
    mask is empty or the fixed and moving grids do not overlap' (no mask was given; the grids overlap)."""
    fixed = read_image(SAMPLE / "lung_fixed.nii.gz")
    moving = read_image(SAMPLE / "lung_moving.nii.gz")
    body = Image((moving.array > -400).astype(np.float32), moving.geometry, "body label")  # 1 on every face
    with pytest.warns(Warning, match="looks like a label map"):
        result = register(fixed, body, **{**CHEAP, "compute_inverse": True})
    info = result.metrics["inverse_consistency_mm"]
    assert info["region"] == "the whole moving grid (no foreground found)" and np.isfinite(info["mean"])


@pytest.mark.parametrize("role", ["fixed_mask", "moving_mask", "rigid_regions"])
def test_a_scan_given_as_a_mask_is_refused_by_the_engine(crop, role):
    """Before: only the CLI refused a scan as a mask; ``register(F, M, fixed_mask=F)`` ran and left out every voxel
    below 0 HU (all of the lung)."""
    with pytest.raises(RegistrationError, match=r"holds \d+ distinct values \(from -\d+ to \d+\): it looks like an "
                                                r"intensity image \(a scan\), not a mask or label map"):
        register(crop, crop, **{role: crop}, **CHEAP)


def test_moving_mask_is_used_and_checked(crop):
    g = crop.geometry
    mask = Image(_box_mask(crop, (5, 5, 4), (35, 35, 28)), g, "moving mask")
    register(crop, crop, moving_mask=mask, **CHEAP)
    with pytest.raises(RegistrationError, match="moving mask"):
        register(crop, crop, moving_mask=Image(np.zeros(g.shape, bool), g), **CHEAP)


@pytest.mark.parametrize("shape", [(6, 2), (5, 2), (3,), (4, 4)])
def test_landmark_arrays_of_the_wrong_shape_are_refused(crop, shape):
    pts = np.zeros(shape)
    with pytest.raises(ValueError, match=r"shape \(K, 3\)"):
        register(crop, crop, fixed_landmarks=pts, moving_landmarks=pts, **CHEAP)


def test_initial_transform_is_composed_into_the_result(crop):
    shift = np.array([4.0, -3.0, 5.0])
    g = crop.geometry
    moving = Image(crop.array, Geometry(g.size, g.spacing, g.origin + shift, g.direction), "shifted")
    points = g.index_to_physical(np.array([[10.0, 12.0, 8.0], [25.0, 20.0, 16.0]]))
    result = register(crop, moving, initial_transform=AffineMap(np.eye(3), shift), fixed_landmarks=points,
                      moving_landmarks=points + shift, landmarks_guide=False, **CHEAP)
    np.testing.assert_allclose(result.disp_mm.reshape(3, -1).mean(axis=1), shift, atol=1e-4)
    assert result.metrics["prealignment"]["start"] == "the initial transform given by the user"
    # TRE as stored (before) and as the registration started (through the given transform: the shift is undone)
    assert result.metrics["tre_before"]["mean"] == pytest.approx(float(np.linalg.norm(shift)))
    assert result.metrics["tre_start"]["mean"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(RegistrationError, match="AffineMap"):
        register(crop, moving, initial_transform=np.eye(4), **CHEAP)


def test_a_rough_initial_transform_is_refined_by_the_pre_alignment(crop):
    """The user's start is where the pre-alignment begins, not where it ends: a start 8 mm off the
    true shift is refined towards it (kept because it fits better), an exact start is kept as given."""
    shift = np.array([4.0, -3.0, 5.0])
    g = crop.geometry
    moving = Image(crop.array, Geometry(g.size, g.spacing, g.origin + shift, g.direction), "shifted")
    kw = dict(CHEAP, prealignment=None)
    rough = register(crop, moving, initial_transform=AffineMap(np.eye(3), shift + [5.0, 4.0, -4.0]), **kw)
    info = rough.metrics["prealignment"]
    assert info["start"] == "the initial transform given by the user" and info["kept"] == "optimised"
    error = np.abs(rough.disp_mm.reshape(3, -1).mean(axis=1) - shift).max()
    assert error < 1.0, error  # from 5 mm off
    exact = register(crop, moving, initial_transform=AffineMap(np.eye(3), shift), **kw)
    np.testing.assert_allclose(exact.disp_mm.reshape(3, -1).mean(axis=1), shift, atol=0.05)


def test_warped_ct_is_padded_with_air_and_similarity_uses_the_overlap(crop):
    g = crop.geometry
    moving = Image(crop.array, Geometry(g.size, g.spacing, g.origin + np.array([30.0, 0, 0]), g.direction), "moved")
    result = register(crop, moving, **CHEAP)
    outside = ~result.transform.warp(moving, return_inside=True)[1]
    assert outside.any()
    pad = background_value(moving)
    assert pad < -500  # air, not soft tissue (0 HU)
    assert np.mean(np.isclose(result.warped.array[outside], pad)) > 0.9
    assert result.before is not None and result.before.geometry == g
    assert "moving image has data" in result.metrics["similarity_region"]


def test_fixed_and_moving_far_apart_get_a_warning_and_a_centre_of_mass_start(crop):
    g = crop.geometry
    far = Image(crop.array, Geometry(g.size, g.spacing, g.origin + 5000.0, g.direction), "far")
    result = register(crop, far, **dict(CHEAP, prealignment="rigid"))
    assert any("do not overlap in physical space" in w for w in result.metrics["warnings"])
    assert result.metrics["prealignment"]["start"] == "centre of mass"


@pytest.mark.parametrize("scale, refused", [(1e-3, True), (0.1, False)])
def test_a_header_in_other_units_is_named(crop, scale, refused):
    """Spacing in metres (x 1/1000) is refused before any work; in cm (x 1/10) warned about."""
    g = crop.geometry
    small = Image(crop.array, Geometry(g.size, g.spacing * scale, g.origin * scale, g.direction), "in metres")
    if refused:
        with pytest.raises(ValueError, match="moving image spans .* 1000 times less; .*other units.*fix the spacing"):
            register(crop, small, **CHEAP)
    else:  # the warning only (so small an image does not overlap the crop: register() refuses that next)
        (warning,) = check_pair_sizes(crop, small)
        assert "10 times less" in warning and "spacing of both headers is in mm" in warning
        assert check_pair_sizes(crop, crop) == []


def test_landmarks_that_only_measure_leave_the_field_as_without_them(crop):
    """``landmarks_guide=False``: the pairs are reported (TRE before / after) and said to be an
    independent check, and the field is bit for bit the one registered without them; guiding pairs
    pull it towards themselves."""
    g = crop.geometry
    moving = Image(np.roll(crop.array, 1, axis=1).copy(), g, "moved")
    fixed_pts = g.index_to_physical(np.array([[12.0, 14.0, 10.0], [26.0, 20.0, 16.0], [18.0, 28.0, 20.0]]))
    moving_pts = fixed_pts + np.array([0.0, 4.0, 0.0])  # pairs that disagree with the images (a 4 mm pull)
    kw = dict(quality="fast", use_network=False, device="cpu", prealignment="none", compute_inverse=False)
    plain = register(crop, moving, **kw)
    measured = register(crop, moving, fixed_landmarks=fixed_pts, moving_landmarks=moving_pts, landmarks_guide=False, **kw)
    guided = register(crop, moving, fixed_landmarks=fixed_pts, moving_landmarks=moving_pts, **kw)
    assert np.array_equal(measured.disp_mm, plain.disp_mm)
    assert measured.metrics["landmarks"]["guided_registration"] is False
    assert "independent check" in measured.metrics["landmarks"]["role"]
    assert guided.metrics["landmarks"]["guided_registration"] is True
    assert guided.metrics["tre_after"]["mean"] < measured.metrics["tre_after"]["mean"] - 1.0
    assert measured.metrics["tre_before"]["mean"] == guided.metrics["tre_before"]["mean"]


@pytest.mark.parametrize("mode", [dict(quality="instant"), dict(quality="fast", instance_optimization=False)])
def test_landmarks_only_measure_the_network_prediction_alone(crop, mode):
    """The network's prediction alone does not take the pairs: asked to guide, they are reported as
    measured only (an independent check), with a warning saying why, and the field is the unguided one."""
    g = crop.geometry
    moving = Image(np.roll(crop.array, 1, axis=1).copy(), g, "moved")
    fixed_pts = g.index_to_physical(np.array([[12.0, 14.0, 10.0], [26.0, 20.0, 16.0]]))
    kw = dict(device="cpu", prealignment="none", compute_inverse=False, **mode)
    plain = register(crop, moving, **kw)
    asked = register(crop, moving, fixed_landmarks=fixed_pts, moving_landmarks=fixed_pts + [0.0, 4.0, 0.0], **kw)
    assert np.array_equal(asked.disp_mm, plain.disp_mm)
    assert asked.metrics["landmarks"]["guided_registration"] is False
    assert "independent check" in asked.metrics["landmarks"]["role"]
    assert any("landmark pairs were only measured" in w for w in asked.metrics["warnings"])
    assert not any("landmark pairs" in w for w in plain.metrics["warnings"])


def test_coarse_start_judge_prefers_the_field_that_aligns(crop):
    """The coarse start is judged by local NCC of the gain-normalised images: the true shift scores
    lower than no motion and than a shift the wrong way, whatever a smooth gain on the moving image."""
    import torch

    from ADRegNetLib.engine.refinement_stage import coarse_start_judge
    from ADRegNetLib.spatial.flow import disp_mm_to_flow_norm

    g = crop.geometry
    fixed = torch.from_numpy(np.clip((crop.array + 1000.0) / 1200.0, 0, 1).astype(np.float32))[None, None]
    moving = torch.roll(fixed, 2, dims=4)  # fixed x is found at moving x + 2 voxels along x
    gain = torch.linspace(0.5, 2.0, fixed.shape[4]).view(1, 1, 1, 1, -1)
    for ct, moving_seen in ((True, moving), (False, moving * gain)):
        judge = coarse_start_judge(fixed, moving_seen, g, None, ct=ct)

        def shift(voxels):
            disp = torch.zeros((1, 3, *g.shape))
            disp[:, 0] = voxels * float(g.spacing[0])
            return disp_mm_to_flow_norm(disp, g)

        assert judge(shift(2.0)) < judge(shift(0.0)) < judge(shift(-2.0))
