"""``adregnet warp`` keeps the input's pixel type, as ITK's resampling does, checked against SimpleITK.

Before: a uint8 image came back as float32 and a uint32 label map as int64 (or narrowed to uint8), so a
segmentation pipeline or a viewer expecting the input's type got another file. Now label maps keep their
exact type; integer images interpolated linearly or by B-spline are rounded to the nearest whole number
and clipped to their type's range (SimpleITK clips too, but truncates toward zero: at most 1 below ours).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from geometry_helpers import rotation_matrix as rotation
from ADRegNetLib.cli.warp import as_pixel_type
from ADRegNetLib.cli.warp import main as warp_cli
from ADRegNetLib.io import write_displacement_field
from ADRegNetLib.spatial import Geometry

FIXED = Geometry((20, 18, 16), [2.0, 2.1, 2.4], [-10.0, 5.0, -100.0], rotation([5.0, -4.0, 8.0]))
MOVING = Geometry((22, 20, 17), [1.9, 2.0, 2.3], [-12.0, 3.0, -102.0], rotation([-3.0, 6.0, 2.0]))


def _field() -> np.ndarray:
    """A smooth field of a few mm on FIXED, (3, Z, Y, X) LPS mm."""
    z, y, x = np.meshgrid(*(np.linspace(0.0, np.pi, n) for n in FIXED.shape), indexing="ij")
    return np.stack([2.5 * np.sin(z) * np.cos(y), -1.5 * np.sin(x + y), 2.0 * np.cos(x) * np.sin(z)]).astype(np.float32)


def _sitk_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    geometry.apply_to_sitk(image)
    return image


def _faces_median(array: np.ndarray) -> float:
    faces = (array[0], array[-1], array[:, 0], array[:, -1], array[:, :, 0], array[:, :, -1])
    return float(np.median(np.concatenate([f.reshape(-1) for f in faces])))


def _sitk_resample(path: Path, field_path: Path, interpolator, output_type=None) -> np.ndarray:
    image = sitk.ReadImage(str(path))
    reference = sitk.Image([int(s) for s in FIXED.size], sitk.sitkUInt8)
    FIXED.apply_to_sitk(reference)
    transform = sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(str(field_path)), sitk.sitkVectorFloat64))
    default = _faces_median(sitk.GetArrayFromImage(image))
    pixel = image.GetPixelID() if output_type is None else output_type
    return sitk.GetArrayFromImage(sitk.Resample(image, reference, transform, interpolator, default, pixel))


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pixel_types") / "result"
    write_displacement_field(_field(), FIXED, folder / "displacement.nii.gz")
    return folder


def _sharp_uint8() -> np.ndarray:
    """0 / 255 blocks with a few mid values: B-spline overshoots above 255 and below 0 at their edges."""
    z, y, x = np.indices(MOVING.shape)
    array = np.where(((x // 4) + (y // 4) + (z // 3)) % 2 == 0, 255, 0).astype(np.uint8)
    array[5:9, 5:9, 5:9] = 37
    return array


def _warp(result: Path, tmp_path: Path, array: np.ndarray, *extra: str, kind: str = "--image") -> tuple[Path, Path]:
    source = tmp_path / "data.nii.gz"
    sitk.WriteImage(_sitk_image(array, MOVING), str(source))
    output = tmp_path / "out.nii.gz"
    assert warp_cli([str(result), kind, str(source), "-o", str(output), "-q", *extra]) == 0
    return source, output


@pytest.mark.parametrize("interpolation, interpolator", [("linear", sitk.sitkLinear), ("bspline", sitk.sitkBSpline)])
def test_uint8_image_stays_uint8_rounded_and_clipped(result, tmp_path, interpolation, interpolator):
    source, output = _warp(result, tmp_path, _sharp_uint8(), "--interpolation", interpolation)
    written = sitk.ReadImage(str(output))
    assert written.GetPixelID() == sitk.sitkUInt8, written.GetPixelIDTypeAsString()  # before: 32-bit float
    ours = sitk.GetArrayFromImage(written).astype(np.int64)
    exact = _sitk_resample(source, result / "displacement.nii.gz", interpolator, sitk.sitkFloat64)
    ties = np.abs(exact - np.floor(exact) - 0.5) < 1e-3  # a half: either whole number is the nearest
    expected = np.clip(np.rint(exact), 0, 255)
    assert np.all((ours == expected) | ties), np.abs(ours - expected).max()
    assert np.abs(ours - np.clip(exact, 0, 255)).max() <= 0.5 + 1e-3
    itk_uint8 = _sitk_resample(source, result / "displacement.nii.gz", interpolator).astype(np.int64)
    assert set(np.unique(ours - itk_uint8)) <= {0, 1}  # ITK truncates what we round
    if interpolation == "bspline":  # the overshoot is really there, and clipped like ITK clips it
        assert exact.max() > 255.5 and exact.min() < -0.5
        assert ours[exact > 255.5].min() == 255 and ours[exact < -0.5].max() == 0


def test_int16_ct_keeps_int16_and_negative_values(result, tmp_path):
    rng = np.random.default_rng(3)
    array = np.clip(rng.normal(-300, 600, MOVING.shape), -1024, 3071).astype(np.int16)
    source, output = _warp(result, tmp_path, array)
    written = sitk.ReadImage(str(output))
    assert written.GetPixelID() == sitk.sitkInt16
    exact = _sitk_resample(source, result / "displacement.nii.gz", sitk.sitkLinear, sitk.sitkFloat64)
    assert np.abs(sitk.GetArrayFromImage(written) - exact).max() <= 0.5 + 1e-2  # sampled in float32


@pytest.mark.parametrize("dtype, pixel", [(np.float32, sitk.sitkFloat32), (np.float64, sitk.sitkFloat64)])
def test_floating_images_keep_their_type(result, tmp_path, dtype, pixel):
    array = (_sharp_uint8().astype(np.float64) / 7.0).astype(dtype)
    _, output = _warp(result, tmp_path, array)
    assert sitk.ReadImage(str(output)).GetPixelID() == pixel


@pytest.mark.parametrize("dtype, pixel", [(np.uint32, sitk.sitkUInt32), (np.int64, sitk.sitkInt64),
                                          (np.int16, sitk.sitkInt16), (np.uint8, sitk.sitkUInt8)])
def test_label_maps_keep_their_exact_type_and_values(result, tmp_path, dtype, pixel):
    """Large uint32 ids (beyond int32) come back exactly: the same map as small ids renumbered."""
    z, y, x = np.indices(MOVING.shape)
    small = (((x // 6) + 3 * (y // 7) + (z > 8)) % 10).astype(np.int64)  # ids 0..9
    ids = np.array([0, 7, 200, 1_000, 40_000, 70_000, 2_147_483_648, 3_000_000_000, 4_000_000_000, 4_294_967_295])
    if dtype != np.uint32:
        ids = np.arange(10) * (3 if dtype != np.int64 else 1_000_000_007)
    _, output = _warp(result, tmp_path, ids[small].astype(dtype), kind="--labels")
    written = sitk.ReadImage(str(output))
    assert written.GetPixelID() == pixel, written.GetPixelIDTypeAsString()  # before: int64 or narrowed
    ours = sitk.GetArrayFromImage(written)
    (tmp_path / "small").mkdir()
    _, small_out = _warp(result, tmp_path / "small", small.astype(np.uint8), kind="--labels")
    np.testing.assert_array_equal(ours, ids[sitk.GetArrayFromImage(sitk.ReadImage(str(small_out)))].astype(dtype))


def test_as_pixel_type_rounds_and_clips_at_every_integer_range():
    values = np.array([-1e30, -0.5, 0.49, 0.5, 1.5, 2.5000001, 1e30])
    np.testing.assert_array_equal(as_pixel_type(values, np.uint8), [0, 0, 0, 0, 2, 3, 255])
    for dtype in (np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64):
        info = np.iinfo(dtype)
        out = as_pixel_type(values, dtype)
        assert out.dtype == dtype
        assert int(out[0]) == info.min and info.max - int(out[-1]) < (1 << 11)  # 64-bit: the largest float64 below
        assert int(out[-1]) > 0  # no wrap-around
    np.testing.assert_array_equal(as_pixel_type(values[1:-1], np.float32), values[1:-1].astype(np.float32))
