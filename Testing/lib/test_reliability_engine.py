"""Bad input at the engine layer: every case gets a clear error (or a stated warning) naming the
problem and the fix, before any expensive work. Message TEXT is asserted, not only the type.

Inputs are small (a 40x40x32 crop of the demo lung CT, or synthetic 20-24 voxel volumes); the few
cases that must run the pipeline use ``prealignment="none"`` and/or ``instance_optimization=False``.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ADRegNetLib.engine import RegistrationError, register
from ADRegNetLib.io import ImageError, ImageWarning, LandmarkError, from_sitk, read_image
from ADRegNetLib.io.image import Image
from ADRegNetLib.model.checkpoint import CheckpointError
from ADRegNetLib.spatial.geometry import Geometry, GeometryError

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "SampleData"
CHEAP = dict(quality="fast", use_network=False, device="cpu", prealignment="none", instance_optimization=False)


@pytest.fixture(scope="module")
def crop() -> Image:
    """40x40x32 crop of the demo lung CT (2.7 x 2.7 x 5 mm), HU."""
    path = SAMPLE / "lung_fixed.nii.gz"
    if not path.is_file():
        pytest.skip("demo data Resources/SampleData/lung_fixed.nii.gz missing")
    full = read_image(path, name="lung")
    g = full.geometry
    origin = g.index_to_physical(np.array([[8, 20, 16]], dtype=np.float64))[0]
    return Image(np.ascontiguousarray(full.array[16:48, 20:60, 8:48]), Geometry((40, 40, 32), g.spacing, origin),
                 "crop")


def noise_image(size_xyz=(24, 24, 24), spacing=(2.0, 2.0, 2.0), seed=0, name="img") -> Image:
    rng = np.random.default_rng(seed)
    arr = rng.normal(100.0, 20.0, size_xyz[::-1]).astype(np.float32)
    return Image(arr, Geometry(size_xyz, spacing, (0.0, 0.0, 0.0)), name)


# ------------------------------------------------------------------------- image content/shape
def test_2d_image_is_rejected():
    with pytest.raises(ImageError, match=r"expected a 3-D \(Z, Y, X\) array, got shape \(32, 32\)"):
        Image(np.zeros((32, 32), np.float32), Geometry((32, 32, 1), (1, 1, 1), (0, 0, 0)), "slice")
    assert from_sitk(sitk.Image([32, 30], sitk.sitkFloat32), name="slice").array.shape == (1, 30, 32)  # one slice


def test_4d_image_is_rejected_with_the_time_series_hint():
    with pytest.raises(ImageError, match=r"is 4-D with size \(20, 20, 20, 3\); registration needs a 3-D volume "
                                         r"\(for a time series, extract one 3-D frame first\)"):
        from_sitk(sitk.Image([20, 20, 20, 3], sitk.sitkFloat32), name="cine")


def test_vector_rgb_image_is_rejected(tmp_path):
    rgb = sitk.Image([20, 20, 20], sitk.sitkVectorUInt8, 3)
    path = tmp_path / "rgb.nii.gz"
    sitk.WriteImage(rgb, str(path))
    with pytest.raises(ImageError, match=r"rgb.nii.gz: has 3 components per voxel \(a vector/RGB image\).*"
                                         r"convert it to grayscale first"):
        read_image(path)


def test_constant_image_is_rejected(crop):
    const = Image(np.full(crop.array.shape, -1000.0, np.float32), crop.geometry, "blank")
    with pytest.raises(ImageError, match=r"moving image 'blank' is constant \(every voxel is -1000\); it holds no "
                                         r"structure to register"):
        register(crop, const, **CHEAP)


def test_nearly_blank_image_is_rejected_naming_the_share_of_one_value():
    arr = np.zeros((24, 24, 24), np.float32)
    arr[10:13, 10:13, 10:13] = np.linspace(0.5, 1.0, 27).reshape(3, 3, 3)  # 27 voxels of 13,824, not labels
    blank = Image(arr, Geometry((24, 24, 24), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0)), "nearly blank")
    with pytest.raises(ImageError, match=r"nearly blank: 99\.80% of its voxels hold the value 0, so its intensity "
                                         r"window \[0, 0\] is empty: the volume is nearly blank"):
        register(noise_image(), blank, preset="brain-mri", **CHEAP)


def test_nan_voxels_are_rejected(crop):
    arr = crop.array.copy()
    arr[3, 4, 5] = np.nan
    arr[0, 0, 0] = np.inf
    with pytest.raises(ImageError, match=r"fixed image 'crop' has 2 NaN or infinite voxels \(of 51200\); replace them"):
        register(Image(arr, crop.geometry, "crop"), crop, **CHEAP)


def test_zero_spacing_is_rejected_by_geometry():
    with pytest.raises(GeometryError, match=r"spacing must be positive in every axis, got \[1\.0, 0\.0, 1\.0\] mm; "
                                            r"fix the image header"):
        Geometry((20, 20, 20), (1.0, 0.0, 1.0), (0.0, 0.0, 0.0))


def test_100mm_spacing_is_rejected():
    img = noise_image(spacing=(100.0, 100.0, 100.0))
    with pytest.raises(ImageError, match=r"voxel size of 100 mm along x .* more than 50 mm; the header is probably "
                                         r"in cm or m: fix the spacing"):
        register(img, noise_image(seed=1), **CHEAP)


def test_extreme_anisotropy_is_rejected():
    img = noise_image(spacing=(0.5, 0.5, 30.0))
    with pytest.raises(ImageError,
                       match=r"an anisotropy of 60\.0 \(largest/smallest voxel size, at most 50 accepted\)"):
        register(noise_image(), img, **CHEAP)


def test_clinical_anisotropy_is_registered():
    """0.4 x 0.4 mm in-plane with 10 mm slices (anisotropy 25), as thick-slice clinical MR comes."""
    fixed = noise_image(size_xyz=(160, 160, 16), spacing=(0.4, 0.4, 10.0))
    moving = noise_image(size_xyz=(160, 160, 16), spacing=(0.4, 0.4, 10.0), seed=2)
    result = register(fixed, moving, **CHEAP)
    assert result.disp_mm.shape == (3, 16, 160, 160)
    assert np.all(np.isfinite(result.disp_mm))
    assert result.metrics["working_grid"]["spacing_mm"] == pytest.approx([2.0, 2.0, 2.0], abs=0.1)


def test_tiny_volume_is_rejected():
    img = noise_image(size_xyz=(24, 24, 8))
    with pytest.raises(ImageError, match=r"has only 8 voxels along z \(size \[24, 24, 8\] x, y, z\); at least 16 are "
                                         r"needed on every axis: is this a 2-D slice or a thin slab\?"):
        register(img, noise_image(size_xyz=(24, 24, 8), seed=2), **CHEAP)


def test_label_map_as_image_gives_a_warning_in_the_metrics(crop):
    labels = Image(np.where(crop.array > -500, 2.0, 0.0).astype(np.float32), crop.geometry, "seg")
    with pytest.warns(ImageWarning, match="looks like a label map"):
        result = register(labels, crop, **CHEAP)
    assert result.metrics["warnings"] == [
        "fixed image 'seg' holds only 2 distinct whole-number values: it looks like a label map (segmentation), "
        "not an intensity image; register the intensity volumes and warp the labels with the result"]


# ------------------------------------------------------------------------------------ overlap
def _far_copy(crop: Image, shift_mm: float) -> Image:
    """The crop moved 2 slices (10 mm) inferior in content and ``shift_mm`` along x in space."""
    g = crop.geometry
    return Image(np.roll(crop.array, 2, axis=0).copy(),
                 Geometry(g.size, g.spacing, g.origin + np.array([shift_mm, 0.0, 0.0]), g.direction), "far")


def test_no_overlap_without_prealignment_is_an_error(crop):
    with pytest.raises(RegistrationError, match=r"the moving image does not overlap the fixed image after "
                                                r"pre-alignment; check that both scans show the same anatomy"):
        register(crop, _far_copy(crop, 500.0), quality="fast", use_network=False, device="cpu", prealignment="none")


def test_no_overlap_is_rescued_by_the_centre_of_mass_start(crop):
    """Documented behaviour: images 500 mm apart are brought together by the pre-alignment's
    centre-of-mass start, and the result is sane (u ~ the true (500, 0, 10) mm shift)."""
    moving = _far_copy(crop, 500.0)
    result = register(crop, moving, quality="fast", use_network=False, device="cpu")
    pre = result.metrics["prealignment"]
    assert pre["physical_overlap"] == 0.0 and pre["start"] == "centre of mass"
    inner = result.disp_mm[:, 4:-4, 4:-4, 4:-4].reshape(3, -1)
    np.testing.assert_allclose(np.median(inner, axis=1), [500.0, 0.0, 10.0], atol=1.5)
    assert result.metrics["similarity_before"]["ncc"] is None  # nothing overlaps before
    assert result.metrics["similarity_after"]["ncc"] > 0.85
    assert result.jacobian.array.min() > 0


# ---------------------------------------------------------------------------------- landmarks
def test_landmarks_of_different_lengths(crop):
    pts = crop.geometry.index_to_physical(np.array([[5, 5, 5], [10, 10, 10], [20, 20, 20]], dtype=np.float64))
    with pytest.raises(LandmarkError, match=r"fixed and moving landmark counts differ: 3 fixed vs 2 moving; pairs are "
                                            r"matched by order"):
        register(crop, crop, fixed_landmarks=pts, moving_landmarks=pts[:2], **CHEAP)


def test_landmarks_for_one_image_only(crop):
    pts = crop.geometry.index_to_physical(np.array([[5, 5, 5]], dtype=np.float64))
    with pytest.raises(RegistrationError, match="landmarks were given for only one image; give fixed and moving "
                                                "landmarks in pairs"):
        register(crop, crop, moving_landmarks=pts, **CHEAP)


def test_empty_landmarks(crop):
    with pytest.raises(LandmarkError, match="fixed landmarks is empty: no landmark points were given"):
        register(crop, crop, fixed_landmarks=np.zeros((0, 3)), moving_landmarks=np.zeros((0, 3)), **CHEAP)


def test_landmark_outside_the_image(crop):
    pts = crop.geometry.index_to_physical(np.array([[5, 5, 5], [10, 10, 10]], dtype=np.float64))
    bad = pts.copy()
    bad[1, 2] += 1000.0
    with pytest.raises(LandmarkError, match=r"moving landmark 1 at .* mm \(LPS\) lies 892\.50 mm outside the moving "
                                            r"image .* 1 of 2 points are outside"):
        register(crop, crop, fixed_landmarks=pts, moving_landmarks=bad, **CHEAP)


def test_nan_landmark(crop):
    pts = crop.geometry.index_to_physical(np.array([[5, 5, 5], [10, 10, 10]], dtype=np.float64))
    bad = pts.copy()
    bad[0, 0] = np.nan
    with pytest.raises(LandmarkError, match=r"1 point\(s\) have NaN or infinite coordinates, first at index 0"):
        register(crop, crop, fixed_landmarks=bad, moving_landmarks=pts, **CHEAP)


# ----------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("kwargs, message", [
    (dict(preset="liver"), "unknown preset 'liver'; choose one of auto, lung-ct, brain-mri, generic"),
    (dict(quality="ultra"), "unknown quality 'ultra'; choose one of instant, fast, balanced, best"),
    (dict(regularization=0.0), r"regularization must be a positive number \(1 = default\), got 0.0"),
    (dict(regularization=-2.0), r"regularization must be a positive number \(1 = default\), got -2.0"),
    (dict(regularization=float("nan")), r"regularization must be a positive number \(1 = default\), got nan"),
])
def test_bad_settings(crop, kwargs, message):
    base = dict(CHEAP, **kwargs)
    t0 = time.perf_counter()
    with pytest.raises(RegistrationError, match=message):
        register(crop, crop, **base)
    assert time.perf_counter() - t0 < 1.0  # rejected before any work


def test_not_an_image(crop):
    with pytest.raises(RegistrationError, match=r"moving must be an ADRegNetLib Image \(read it with "
                                                r"ADRegNetLib.io.read_image\)"):
        register(crop, crop.array, **CHEAP)


def test_mask_elsewhere_in_space(crop):
    """A mask is mapped by physical position (any grid); one that lies outside the fixed image is refused."""
    mask = Image(np.ones((16, 16, 16), bool), Geometry((16, 16, 16), (1, 1, 1), (0, 0, 0)), "mask")
    with pytest.raises(RegistrationError, match=r"the fixed mask does not overlap the fixed image in physical space"):
        register(crop, crop, fixed_mask=mask, **CHEAP)


def test_unknown_device(crop):
    with pytest.raises(ValueError, match="unknown device 'tpu'; use 'auto', 'cpu' or 'cuda'"):
        register(crop, crop, **dict(CHEAP, device="tpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback only happens without a GPU")
def test_cuda_without_gpu_falls_back_to_cpu_with_a_warning(crop):
    with pytest.warns(RuntimeWarning, match="CUDA was requested"):
        result = register(crop, crop, **dict(CHEAP, device="cuda"))
    assert result.metrics["device"] == "cpu"
    assert result.metrics["warnings"] == [
        "CUDA was requested but no CUDA GPU is available here; running on the CPU instead (slower)."]


# ------------------------------------------------------------------------------------- files
def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"nothere.nii.gz: no such file; check the path"):
        read_image(tmp_path / "nothere.nii.gz")


def test_unreadable_file(tmp_path):
    """A file named as an image that is none says so; one of an unknown kind names the formats read."""
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(b"this is not an image" * 50)
    with pytest.raises(ImageError, match=r"garbage.nii.gz: cannot be read as an image \(.*\); its name says "
                                         r"NIfTI, but its contents are not a valid NIfTI file"):
        read_image(path)
    other = tmp_path / "garbage.xyz"
    other.write_bytes(b"this is not an image" * 50)
    with pytest.raises(ImageError, match=r"garbage.xyz: cannot be read as an image \(.*\); supported formats are "
                                         r"NIfTI"):
        read_image(other)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.nrrd"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.nrrd: the file is empty \(0 bytes\)"):
        read_image(path)


def test_truncated_weights_fail_fast_naming_the_file(crop, tmp_path):
    bad = tmp_path / "half.pt"
    real = REPO / "Resources" / "weights" / "adregnet_default.pt"
    bad.write_bytes(real.read_bytes()[:2000] if real.is_file() else b"PK\x03\x04 truncated")
    t0 = time.perf_counter()
    # default pre-alignment: the weights must be checked before it, not after
    with pytest.raises(CheckpointError, match=rf"cannot read AD-RegNet weights {bad}: the file is truncated or not a "
                                              r"torch checkpoint \(torch: .+\)\. Give a \.pt file .*copy the file again, or retrain it"):
        register(crop, crop, quality="fast", use_network=True, weights=bad, device="cpu")
    assert time.perf_counter() - t0 < 1.0


def test_missing_weights_file_names_it(crop, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"AD-RegNet weights not found: {tmp_path / 'nope.pt'}\. Train them"):
        register(crop, crop, quality="fast", use_network=True, weights=tmp_path / "nope.pt", device="cpu")


def test_no_network_weights_at_all_is_a_warning_not_an_error(crop, monkeypatch, tmp_path):
    """register() with the default weights missing falls back to instance optimisation and says so."""
    import ADRegNetLib.model.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "default_weights_path", lambda: tmp_path / "absent.pt")
    result = register(crop, crop, **dict(CHEAP, use_network=True))
    assert result.metrics["network_used"] is False
    assert result.metrics["warnings"] == [f"no network weights at {tmp_path / 'absent.pt'}; running instance "
                                          "optimisation only"]


def test_all_inputs_untouched_after_a_failure(crop):
    """A rejected call leaves its inputs as they were (no in-place normalisation before the error)."""
    before = crop.array.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RegistrationError):
            register(crop, _far_copy(crop, 500.0), quality="fast", use_network=False, device="cpu", prealignment="none")
    np.testing.assert_array_equal(crop.array, before)


def test_a_prediction_left_out_is_no_warning_for_the_optimising_qualities(crop):
    """Before: every pair without motion warned "the network prediction did not improve the similarity" at
    fast / balanced, where the optimisation simply starts from the identity (as with --no-network)."""
    result = register(crop, crop, quality="fast", use_network=True, device="cpu", prealignment="none",
                      compute_inverse=False)
    assert result.metrics["network"]["used"] is False  # identical images: nothing to predict
    assert not [w for w in result.metrics["warnings"] if "network" in w], result.metrics["warnings"]
