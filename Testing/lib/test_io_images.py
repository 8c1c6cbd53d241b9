"""Image I/O, resampling, normalisation and validation (ADRegNetLib.io.images)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetLib.io import (Image, ImageError, ImageWarning, normalize_intensity, read_image, read_label_map,
                            resample_image, validate_image, write_image)
from ADRegNetLib.spatial.geometry import Geometry


def _image(geometry, rng, name="img"):
    return Image(rng.normal(size=geometry.shape).astype(np.float32), geometry, name)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_write_read_round_trip_keeps_geometry(tmp_path, oblique_geometry, rng, ext):
    img = _image(oblique_geometry, rng)
    path = tmp_path / f"a{ext}"
    write_image(img, path)
    back = read_image(path)
    assert back.name == path.name
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, img.array)
    # NIfTI stores the header in float32: allow its rounding.
    assert back.geometry.allclose(oblique_geometry, atol=1e-4)


def test_physical_position_matches_sitk(tmp_path, oblique_geometry, rng):
    """The voxel our geometry maps a point to is the voxel SimpleITK maps it to."""
    img = _image(oblique_geometry, rng)
    write_image(img, tmp_path / "a.mha")
    ref = sitk.ReadImage(str(tmp_path / "a.mha"))
    back = read_image(tmp_path / "a.mha")
    for idx in [(0, 0, 0), (3, 5, 2), (10, 8, 6)]:
        p = back.geometry.index_to_physical(np.array([idx]))[0]
        np.testing.assert_allclose(p, ref.TransformIndexToPhysicalPoint(idx), atol=1e-9)
        assert back.array[idx[2], idx[1], idx[0]] == ref[idx]


def test_dicom_series_folder(tmp_path, rng):
    geom = Geometry((20, 18, 6), [0.7, 0.7, 2.0], [-10.0, 20.0, 30.0], np.eye(3))
    arr = rng.integers(-1000, 1000, size=geom.shape).astype(np.int16)
    vol = sitk.GetImageFromArray(arr)
    geom.apply_to_sitk(vol)
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(vol.GetDepth()):
        sl = vol[:, :, k]
        origin = vol.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.1")  # series UID
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in origin))
        sl.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0060", "CT")
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
    img = read_image(folder)
    assert img.array.shape == geom.shape
    np.testing.assert_array_equal(img.array, arr.astype(np.float32))
    np.testing.assert_allclose(img.geometry.origin, geom.origin, atol=1e-4)
    np.testing.assert_allclose(img.geometry.spacing, geom.spacing, atol=1e-4)


def test_label_map_is_int64(tmp_path, oblique_geometry, rng):
    labels = Image(rng.integers(0, 5, size=oblique_geometry.shape).astype(np.int64), oblique_geometry, "lab")
    write_image(labels, tmp_path / "lab.nii.gz")
    back = read_label_map(tmp_path / "lab.nii.gz")
    assert back.array.dtype == np.int64
    np.testing.assert_array_equal(back.array, labels.array)


def test_label_map_rejects_fractional_values(tmp_path, oblique_geometry, rng):
    write_image(_image(oblique_geometry, rng), tmp_path / "x.nii.gz")
    with pytest.raises(ImageError, match="fractional"):
        read_label_map(tmp_path / "x.nii.gz")


# ---------------------------------------------------------------------------------------- bad files
def test_missing_file_named(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.nii\.gz: no such file"):
        read_image(tmp_path / "nope.nii.gz")


def test_empty_file(tmp_path):
    (tmp_path / "empty.nrrd").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.nrrd: the file is empty"):
        read_image(tmp_path / "empty.nrrd")


def test_garbage_file_names_file_and_formats(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageError) as err:
        read_image(path)
    assert "junk.nii.gz" in str(err.value) and "cannot be read" in str(err.value) and "NIfTI" in str(err.value)


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageError, match="without a DICOM series"):
        read_image(tmp_path)


def test_vector_images_rejected(tmp_path):  # 2-D images are read as one slice: test_planar.py
    sitk.WriteImage(sitk.Image([20, 20, 20], sitk.sitkVectorFloat32, 3), str(tmp_path / "vec.mha"))
    with pytest.raises(ImageError, match="3 components"):
        read_image(tmp_path / "vec.mha")
    sitk.WriteImage(sitk.Image([8, 8, 8, 3], sitk.sitkFloat32), str(tmp_path / "t.nii.gz"))
    with pytest.raises(ImageError, match="4-D.*extract one 3-D frame"):
        read_image(tmp_path / "t.nii.gz")


def test_write_unknown_extension(tmp_path, oblique_geometry, rng):
    with pytest.raises(ImageError, match="unknown image extension"):
        write_image(_image(oblique_geometry, rng), tmp_path / "a.png")


# ---------------------------------------------------------------------------------------- resampling
def test_resample_linear_matches_sitk_and_is_exact_for_linear_ramp(oblique_geometry):
    # A linear function of physical position is reproduced exactly by linear interpolation.
    g = oblique_geometry
    z, y, x = np.meshgrid(*[np.arange(n) for n in g.shape], indexing="ij")
    pts = g.index_to_physical(np.stack([x.ravel(), y.ravel(), z.ravel()], 1))
    coef = np.array([0.3, -0.7, 0.2])
    img = Image((pts @ coef).reshape(g.shape).astype(np.float64), g, "ramp")
    target = Geometry((8, 7, 6), [1.0, 1.0, 1.5], g.center() - 3.0, np.eye(3))
    out = resample_image(img, target, "linear", default=np.nan)
    assert out.geometry is target and out.array.dtype == np.float32
    zt, yt, xt = np.meshgrid(*[np.arange(n) for n in target.shape], indexing="ij")
    tp = target.index_to_physical(np.stack([xt.ravel(), yt.ravel(), zt.ravel()], 1))
    expected = (tp @ coef).reshape(target.shape)
    inside = g.contains(tp, margin_voxels=0.0).reshape(target.shape)
    assert inside.sum() > 50
    np.testing.assert_allclose(out.array[inside], expected[inside], atol=1e-4)


def test_resample_nearest_keeps_labels(oblique_geometry, rng):
    labels = Image(rng.integers(0, 4, size=oblique_geometry.shape).astype(np.int64), oblique_geometry, "lab")
    out = resample_image(labels, oblique_geometry, "nearest")
    assert out.array.dtype == np.int64
    np.testing.assert_array_equal(out.array, labels.array)
    with pytest.raises(ValueError, match="mode must be one of"):
        resample_image(labels, oblique_geometry, "cubic")


# ---------------------------------------------------------------------------------------- intensity
def test_normalize_ct_window(oblique_geometry):
    arr = np.full(oblique_geometry.shape, -250.0, dtype=np.float32)
    arr[0, 0, 0], arr[0, 0, 1], arr[0, 0, 2] = -3000.0, 3000.0, -1000.0
    out = normalize_intensity(Image(arr, oblique_geometry), "ct")
    assert out.array.dtype == np.float32
    assert out.array[0, 0, 0] == 0.0 and out.array[0, 0, 1] == 1.0 and out.array[0, 0, 2] == 0.0
    np.testing.assert_allclose(out.array[1, 1, 1], 0.5, atol=1e-6)  # -250 is mid-window


def test_normalize_mr_percentiles(oblique_geometry, rng):
    arr = rng.normal(100, 20, size=oblique_geometry.shape).astype(np.float32)
    out = normalize_intensity(Image(arr, oblique_geometry), "mr")
    assert out.array.min() == 0.0 and out.array.max() == 1.0
    lo, hi = np.percentile(arr, [1, 99])
    np.testing.assert_allclose(np.mean(out.array == 0.0), np.mean(arr <= lo), atol=2e-3)
    mid = (arr > lo) & (arr < hi)
    np.testing.assert_allclose(out.array[mid], ((arr[mid] - lo) / (hi - lo)), atol=1e-5)


def test_normalize_errors(oblique_geometry):
    const = Image(np.ones(oblique_geometry.shape, np.float32), oblique_geometry, "c")
    with pytest.raises(ImageError, match="constant"):
        normalize_intensity(const, "generic")
    with pytest.raises(ValueError, match="modality must be"):
        normalize_intensity(const, "pet")


# ---------------------------------------------------------------------------------------- validation
def _big(rng, size=(20, 20, 20), spacing=(1.0, 1.0, 1.0)):
    g = Geometry(size, spacing)
    return Image(rng.normal(size=g.shape).astype(np.float32), g, "vol")


def test_validate_ok(rng):
    assert validate_image(_big(rng)) == []


@pytest.mark.parametrize("value,word", [(np.nan, "NaN"), (np.inf, "infinite")])
def test_validate_nonfinite(rng, value, word):
    img = _big(rng)
    img.array[3, 4, 5] = value
    with pytest.raises(ImageError, match=r"fixed image 'vol' has 1 NaN or infinite voxels"):
        validate_image(img)


def test_validate_constant(rng):
    img = _big(rng)
    img.array[:] = 7
    with pytest.raises(ImageError, match="constant.*7"):
        validate_image(img, role="moving")


def test_validate_spacing(rng):
    with pytest.raises(ImageError, match=r"60 mm along z.*cm or m"):
        validate_image(_big(rng, spacing=(1.0, 1.0, 60.0)))
    validate_image(_big(rng, spacing=(0.4, 0.4, 10.0)))  # 0.4 mm in-plane, 10 mm slices: a clinical scan
    with pytest.raises(ImageError, match=r"anisotropy of 75.0 \(largest/smallest voxel size, at most 50 accepted\)"):
        validate_image(_big(rng, spacing=(0.2, 0.2, 15.0)))


def test_validate_tiny_axis(rng):
    with pytest.raises(ImageError, match=r"only 5 voxels along y .*at least 16"):
        validate_image(_big(rng, size=(20, 5, 20)))


def test_validate_label_map_as_intensity(rng):
    g = Geometry((20, 20, 20))
    img = Image(rng.integers(0, 5, size=g.shape).astype(np.float32), g, "seg")
    with pytest.warns(ImageWarning, match="looks like a label map"):
        msgs = validate_image(img)
    assert len(msgs) == 1
    with pytest.raises(ImageError, match="looks like a label map"):
        validate_image(img, label_like="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate_image(img, label_like="ignore") == []


def test_validate_bool_mask(rng):
    g = Geometry((20, 20, 20))
    with pytest.raises(ImageError, match="binary mask"):
        validate_image(Image(rng.random(g.shape) > 0.5, g, "m"))


def test_real_lung_ct(shared_data):
    img = read_image(shared_data / "lung-ct-elastix-small" / "3DCT_lung_baseline_small.mha")
    assert img.geometry.size == (57, 78, 64)
    np.testing.assert_allclose(img.geometry.spacing, [2.732, 2.732, 5.0], atol=1e-3)
    assert validate_image(img) == []
    nii = read_image(shared_data / "lung-ct-elastix-small" / "baseline_small.nii.gz")
    assert nii.geometry.allclose(img.geometry, atol=1e-3)
    np.testing.assert_array_equal(nii.array, img.array)
    norm = normalize_intensity(img, "ct")
    assert 0.0 <= norm.array.min() and norm.array.max() <= 1.0


def test_large_float_nifti_gz_is_stored_gzip_that_reads_back_exactly(tmp_path):
    """Floats of >= STORED_GZIP_MIN_VOXELS go into .nii.gz undeflated (fast), read back bit for bit by
    SimpleITK, and replace an existing file without leaving temporaries; small ones are deflated."""
    from ADRegNetLib.io.images import STORED_GZIP_MIN_VOXELS
    from ADRegNetLib.io.transforms import write_displacement_field

    geometry = Geometry((160, 128, 100), (1.0, 1.2, 1.5), (3.0, -4.0, 5.0))
    assert geometry.num_voxels >= STORED_GZIP_MIN_VOXELS
    rng = np.random.default_rng(0)
    array = rng.standard_normal(geometry.shape).astype(np.float32)
    path = tmp_path / "big.nii.gz"
    path.write_bytes(b"old contents")
    write_image(Image(array, geometry, "big"), path)
    assert path.read_bytes()[:2] == b"\x1f\x8b" and path.stat().st_size > array.nbytes  # stored, not deflated
    back = sitk.ReadImage(str(path))
    assert np.array_equal(sitk.GetArrayFromImage(back), array)
    assert np.allclose(back.GetSpacing(), (1.0, 1.2, 1.5)) and np.allclose(back.GetOrigin(), (3.0, -4.0, 5.0))
    field = rng.standard_normal((3, *geometry.shape)).astype(np.float32)
    write_displacement_field(field, geometry, tmp_path / "field.nii.gz")
    vec = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "field.nii.gz")))  # (Z, Y, X, 3)
    assert np.array_equal(np.moveaxis(vec, -1, 0), field)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.nii.gz", "field.nii.gz"]
    small = tmp_path / "small.nii.gz"
    write_image(Image(np.zeros((20, 20, 20), np.float32), Geometry((20, 20, 20), (1.0, 1.0, 1.0)), "s"), small)
    assert small.stat().st_size < 20 ** 3 * 4 // 10  # zeros deflate


@pytest.mark.parametrize("values, stored", [((0, 1, 255), "8-bit unsigned integer"),
                                            ((-3, 0, 1000), "16-bit signed integer"),
                                            ((0, 40000), "16-bit unsigned integer"),
                                            ((0, 70000), "32-bit signed integer")])
def test_label_maps_are_written_in_the_smallest_type_that_holds_them(tmp_path, oblique_geometry, values, stored):
    """Label maps are read as int64; written, they take the first of uint8, int16, uint16 and int32 that
    holds their values (a uint8 segmentation comes back as uint8), and read back unchanged."""
    labels = np.resize(np.array(values, dtype=np.int64), oblique_geometry.shape)
    path = tmp_path / "labels.nii.gz"
    write_image(Image(labels, oblique_geometry, "labels"), path)
    assert sitk.ReadImage(str(path)).GetPixelIDTypeAsString() == stored
    np.testing.assert_array_equal(read_label_map(path).array, labels)


def test_a_pipe_or_a_folder_is_not_called_missing(tmp_path):
    """Before: a named pipe called 'x.nii.gz' (or /dev/null) was refused as 'no such file'."""
    import os

    from ADRegNetLib.io import ImageError, read_displacement_field

    fifo = tmp_path / "x.nii.gz"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match=r"x.nii.gz: is not a regular file \(a pipe or a device\); give the image file"):
        read_image(fifo)
    folder = tmp_path / "folder.nii.gz"
    folder.mkdir()
    with pytest.raises(Exception, match=r"folder.nii.gz: is a folder; give the displacement field file"):
        read_displacement_field(folder)


def test_a_clipped_scan_is_warned_about_and_an_unclipped_one_is_not(rng):
    """Intensities clipped by a display window or an 8-bit export (a sweep's brain case clipped at its 90th
    percentile: 0.18 -> 0.72 mm, no word before)."""
    g = Geometry((30, 30, 30))
    scan = np.clip(rng.normal(100.0, 30.0, size=g.shape), 1.0, None).astype(np.float32)
    scan[:5] = 0.0  # some background
    assert validate_image(Image(scan, g, "scan")) == []
    clipped = np.minimum(scan, np.percentile(scan, 80)).astype(np.float32)
    with pytest.warns(ImageWarning, match=r"holds its largest value .* in 2\d% of its voxels above the background"):
        msgs = validate_image(Image(clipped, g, "clipped"), role="moving")
    assert len(msgs) == 1 and "moving image 'clipped'" in msgs[0] and "register the original scan" in msgs[0]
    eight_bit = np.round(255 * np.minimum(scan / np.percentile(scan, 80), 1.0)).astype(np.uint8)
    with pytest.warns(ImageWarning, match="look clipped"):
        validate_image(Image(eight_bit, g, "u8"))
    mild = np.minimum(scan, np.percentile(scan, 97)).astype(np.float32)  # 3 % at the top: left alone
    assert validate_image(Image(mild, g, "mild")) == []


def test_a_white_background_is_not_taken_for_clipping(rng):
    g = Geometry((30, 30, 30))
    scan = np.clip(rng.normal(100.0, 30.0, size=g.shape), 1.0, 250.0).astype(np.float32)
    scan[:10] = 255.0  # padding of the largest value round the scan (corners included)
    scan[-10:] = 255.0
    assert validate_image(Image(scan, g, "white")) == []
