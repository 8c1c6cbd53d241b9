"""Hostile or unusual inputs at the ``ADRegNetLib.io`` layer that earlier slipped through: each is
refused with a message naming the problem and the fix (text asserted), or read correctly.

Small synthetic images and files only; nothing here registers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetLib.io import (ImageError, LandmarkError, from_sitk, normalize_intensity, read_image, read_landmarks,
                            validate_image, write_landmarks)
from ADRegNetLib.io.image import Image
from ADRegNetLib.io.images import MAX_ABS_INTENSITY
from ADRegNetLib.io.linear import LinearTransformError, read_linear_transform
from ADRegNetLib.spatial.geometry import Geometry

GEOMETRY = Geometry((20, 20, 20), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
POINTS = np.array([[4.0, 6.0, 8.0], [10.0, 12.0, 14.0], [20.0, 22.0, 24.0]])


def noise(seed: int = 0, scale: float = 20.0, dtype=np.float32) -> np.ndarray:
    return (np.random.default_rng(seed).normal(100.0, 1.0, (20, 20, 20)) * scale).astype(dtype)


def _sitk(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 2.0))
    return image


# -------------------------------------------------------------------------------- voxel values
def test_float64_values_beyond_float32_are_refused_not_turned_into_inf(tmp_path):
    """Before: 'overflow encountered in cast', then 'has 7999 NaN or infinite voxels' (there were none)."""
    array = noise(dtype=np.float64) * 1e300
    path = tmp_path / "huge.mha"
    sitk.WriteImage(_sitk(array), str(path))
    with pytest.raises(ImageError, match=r"huge.mha: holds voxel values up to \d\.\d+e\+30\d in magnitude, beyond the "
                                         r"float32 range \(\+-3\.4e\+38\) .*rescale the image \(or fix its scaling "
                                         r"slope/intercept\) and give that file$"):
        read_image(path)
    assert read_image(path, dtype=None).array.dtype == np.float64  # the file's own type is still readable


def test_float64_values_within_float32_are_read():
    image = from_sitk(_sitk(noise(dtype=np.float64)), name="f64")
    assert image.array.dtype == np.float32 and np.all(np.isfinite(image.array))


@pytest.mark.parametrize("pixel", [sitk.sitkComplexFloat32, sitk.sitkComplexFloat64])
def test_complex_image_is_refused_naming_the_magnitude(pixel):
    real = sitk.Cast(_sitk(noise()), sitk.sitkFloat32 if pixel == sitk.sitkComplexFloat32 else sitk.sitkFloat64)
    image = sitk.RealAndImaginaryToComplex(real, real)
    assert image.GetPixelID() == pixel
    with pytest.raises(ImageError, match=r"^kspace: holds complex voxel values \(raw MR data: real and imaginary "
                                         r"parts\); registration needs a real-valued volume: save its magnitude image"):
        from_sitk(image, name="kspace")


@pytest.mark.parametrize("array, pattern", [
    (noise().astype(np.complex64), r"fixed image 'a' holds complex values \(complex64\); registration needs a "
                                   r"real-valued volume: give its magnitude \(numpy.abs\) instead$"),
    (noise().astype(object), r"fixed image 'a' has voxels of type object, not numbers; give a numeric"),
    (noise() * np.float32(1e15), r"fixed image 'a' has intensities up to 2\.\d+e\+18 in magnitude .*beyond the 1e\+15 "
                                 r"the registration's float32 arithmetic handles; .*rescale the image"),
])
def test_validate_image_refuses_arrays_the_engine_cannot_use(array, pattern):
    """Before: complex silently lost its imaginary part; object raised a raw TypeError from numpy; 3e38
    ended in 'no point to measure: the mask is empty or the grids do not overlap'."""
    with pytest.raises(ImageError, match=pattern):
        validate_image(Image(array, GEOMETRY, "a"), role="fixed")


@pytest.mark.parametrize("origin, refused", [((1e6, 0.0, 0.0), False), ((0.0, -2e6, 0.0), True), ((0.0, 0.0, 1e9), True)])
def test_an_origin_kilometres_away_is_refused(origin, refused):
    """Before: a pair placed at 1e9 mm registered up to 4.5 mm off the same pair at the usual origin, and its
    overlap warning read 'do not overlap (centres 0 mm apart)'; 1e6 mm (a moving image 1 km away) still
    registers from a centre-of-mass start."""
    array = np.random.default_rng(0).normal(100.0, 10.0, GEOMETRY.shape).astype(np.float32)
    image = Image(array, Geometry(GEOMETRY.size, GEOMETRY.spacing, origin), "far")
    if refused:
        with pytest.raises(ImageError, match=r"fixed image 'far' has its origin at .* km from the scanner's origin "
                                             r"\(at most 1 km accepted.*fix the header's origin"):
            validate_image(image, role="fixed")
    else:
        assert validate_image(image, role="fixed") == []


def test_a_torch_tensor_as_an_image_array_is_named():
    """Before: Image(torch_tensor, ...) was accepted and register() failed deep inside numpy ('Cannot interpret
    torch.float32 as a data type')."""
    import torch

    with pytest.raises(ImageError, match=r"t: the array must be a numpy array, got a Tensor \(a torch tensor: give "
                                         r"tensor.detach\(\).cpu\(\).numpy\(\)\)"):
        Image(torch.zeros(GEOMETRY.shape), GEOMETRY, "t")
    with pytest.raises(ImageError, match="the array must be a numpy array, got a list"):
        Image([[[0.0]]], GEOMETRY, "l")


def test_large_but_plausible_intensities_are_accepted():
    array = noise() * np.float32(1e4)  # PET-like values around 2e7
    assert np.abs(array).max() < MAX_ABS_INTENSITY
    assert validate_image(Image(array, GEOMETRY, "pet"), role="moving") == []


def test_one_voxel_image_message_counts_voxels_instead_of_rounding_to_100_percent():
    """Before: '100.00% of its voxels hold the value 0' for an image that is not constant."""
    array = np.zeros((40, 40, 40), np.float32)
    array[10, 10, 10] = 1.0
    with pytest.raises(ImageError, match=r"^dot: all but 1 of its 64000 voxels hold the value 0, so its intensity "
                                         r"window \[0, 0\] is empty: the volume is nearly blank"):
        normalize_intensity(Image(array, Geometry((40, 40, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), "dot"), "generic")


def test_folder_without_dicom_gives_one_line_and_no_gdcm_warning(tmp_path, capfd):
    (tmp_path / "notes.txt").write_text("no DICOM here")
    with pytest.raises(ImageError, match=r"is a folder without a DICOM series; give an image file"):
        read_image(tmp_path)
    assert "GDCMSeriesFileNames" not in capfd.readouterr().err


# ---------------------------------------------------------------------------------- landmarks
def test_landmark_path_that_is_a_folder(tmp_path):
    """Before: a raw IsADirectoryError traceback from the CLI."""
    folder = tmp_path / "points.csv"
    folder.mkdir()
    with pytest.raises(LandmarkError, match=r"points.csv: is a folder, not a landmark file; give the \.mrk\.json, "
                                            r"\.fcsv, \.csv or \.txt file$"):
        read_landmarks(folder)


def _markups(tmp_path: Path, status=None, position=None) -> Path:
    path = tmp_path / "points.mrk.json"
    write_landmarks(POINTS, path)
    doc = json.loads(path.read_text())
    point = doc["markups"][0]["controlPoints"][1]
    if status is not None:
        point["positionStatus"] = status
    if position is not None:
        point["position"] = position
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("status", ["undefined", "preview", "missing"])
def test_unplaced_slicer_control_point_is_refused(tmp_path, status):
    """Before: the placeholder position (0, 0, 0 in Slicer) was read as a landmark, shifting every pair after it
    when the partner file skips it, or pairing a real point with the origin."""
    path = _markups(tmp_path, status=status, position=[0.0, 0.0, 0.0])
    with pytest.raises(LandmarkError, match=rf"control point 1 \('F-2'\) is not placed \(positionStatus '{status}'\); "
                                            r"its position is a placeholder\. Place it in Slicer, or delete it and its "
                                            r"partner in the other file, since pairs are matched by order$"):
        read_landmarks(path)


def test_placed_control_points_are_read(tmp_path):
    np.testing.assert_array_equal(read_landmarks(_markups(tmp_path, status="defined")), POINTS)


def test_boolean_coordinate_is_refused(tmp_path):
    path = _markups(tmp_path, position=[True, 2.0, 3.0])
    with pytest.raises(LandmarkError, match=r"control point 1 position is not numeric: \[True, 2\.0, 3\.0\]$"):
        read_landmarks(path)


_NO_XYZ = r"points.csv, line 1: header .* does not name x, y, z columns; "


@pytest.mark.parametrize("text, pattern", [
    ("x;y;z\n1;2;3\n", _NO_XYZ + r"its columns are separated by semicolons: save it as comma-separated values \(with "
                       r"'\.' as the decimal point\), header 'x,y,z' \(LPS mm\)$"),
    ("x;y;z\n1,5;2,5;3,5\n", _NO_XYZ + r"its columns are separated by semicolons"),
    ("x\ty\tz\n1\t2\t3\n", _NO_XYZ + r"its columns are separated by tabs"),
    ("1.0,2.0,3.0\n4.0,5.0,6.0\n", _NO_XYZ + r"it holds numbers, so the file has no header: add the line 'x,y,z' "
                                   r"\(LPS mm\) at the top$"),
    ("name,value\na,1\n", _NO_XYZ + r"the first line must be a header such as 'x,y,z' \(LPS mm\)$"),
])
def test_csv_without_a_usable_header_says_why(tmp_path, text, pattern):
    """Before: every case got the same 'the first line must be a header' whatever was wrong."""
    path = tmp_path / "points.csv"
    path.write_text(text)
    with pytest.raises(LandmarkError, match=pattern):
        read_landmarks(path)


def test_initial_transform_that_is_a_folder(tmp_path):
    with pytest.raises(LinearTransformError, match=r"initial transform .* is a folder; give an ITK \.h5/\.tfm/\.txt/"
                                                   r"\.mat rigid or affine transform file$"):
        read_linear_transform(tmp_path)
