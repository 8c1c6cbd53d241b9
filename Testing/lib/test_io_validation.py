"""Input validation by the physics of the file: truncated/corrupt data, sheared directions, physical overlap.

Every refusal is checked for the file name, the reason and the fix. The bad files are written by
hand in ``tmp_path`` (headers as text or patched bytes), so each row is a real file that
SimpleITK alone would read silently or coerce (asserted where it matters).
"""
from __future__ import annotations

import gzip
import struct
import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from geometry_helpers import rotation_matrix
from ADRegNetLib.io import ImageError, ImageWarning, TransformFileError, read_image, write_displacement_field
from ADRegNetLib.io.transforms import read_displacement_field
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.overlap import grid_corners, physical_overlap

ARRAY = np.random.default_rng(7).normal(size=(10, 9, 8)).astype(np.float32)  # (Z, Y, X)
TRUNCATED = ("truncated or corrupt", "re-export or re-copy it")
NOT_ROTATION = ("is not a rotation", "Direction (columns = voxel axes x, y, z)", "resample it onto an orthonormal grid")


def _write(path, compress):
    image = sitk.GetImageFromArray(ARRAY)
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(path), compress)
    return path


def _cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if keep < 1 else len(data) - int(keep)])


def _flip(path, at):
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def _drop_line(path, key):
    """Remove a header line (without CompressedDataSize, ITK inflates the wrong bytes and returns garbage)."""
    data = path.read_bytes()
    start = data.index(key)
    path.write_bytes(data[:start] + data[data.index(b"\n", start) + 1:])


def _regzip_truncated(path):
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) - 100]))  # a valid gzip stream of a short .nii


# (file name, compress, file to damage, damage, words in the message)
DAMAGED = [
    ("a.nii.gz", True, "a.nii.gz", lambda p: _cut(p, 0.5), ("stops after",)),
    ("a.nii.gz", True, "a.nii.gz", lambda p: _cut(p, 4), ("stops after",)),  # only the length trailer lost
    ("a.nii.gz", True, "a.nii.gz", lambda p: _flip(p, 0.6), ("damaged",)),
    ("a.nii.gz", True, "a.nii.gz", _regzip_truncated, ("header describes", "holds only")),
    ("a.nii", False, "a.nii", lambda p: _cut(p, 0.7), ("header describes", "holds only")),
    ("a.hdr", False, "a.img", lambda p: _cut(p, 0.5), ("header describes",)),
    ("a.mha", True, "a.mha", lambda p: _cut(p, 0.5), ("CompressedDataSize = ", "bytes of compressed data")),
    ("a.mha", True, "a.mha", lambda p: _drop_line(p, b"CompressedDataSize"), ("no CompressedDataSize",)),
    ("a.mha", False, "a.mha", lambda p: _cut(p, 0.5), ("header describes", "holds only")),
    ("a.mhd", False, "a.raw", lambda p: _cut(p, 0.5), ("header describes",)),
    ("a.mhd", True, "a.zraw", lambda p: _cut(p, 0.5), ("stops after",)),
    ("a.nrrd", True, "a.nrrd", lambda p: _cut(p, 0.5), ("stops after",)),
    ("a.nrrd", False, "a.nrrd", lambda p: _cut(p, 0.5), ("header describes", "holds only")),
]


@pytest.mark.parametrize("name,compress,damaged,damage,words", DAMAGED,
                         ids=[f"{row[0]}-{row[2]}-{k}" for k, row in enumerate(DAMAGED)])
def test_damaged_file_is_refused_naming_file_and_fix(tmp_path, name, compress, damaged, damage, words):
    path = _write(tmp_path / name, compress)
    np.testing.assert_array_equal(read_image(path).array, ARRAY)  # intact: read as written
    damage(tmp_path / damaged)
    with pytest.raises(ImageError) as err:
        read_image(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    for word in TRUNCATED + words:
        assert word in message, message


def test_simpleitk_alone_zero_fills_a_truncated_nii_gz(tmp_path):
    """Why the check exists: ITK reads the cut file and fills the missing voxels with 0."""
    path = _write(tmp_path / "a.nii.gz", True)
    _cut(path, 0.5)
    silently = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert silently.shape == ARRAY.shape and np.mean(silently == 0) > 0.3
    with pytest.raises(ImageError, match="truncated or corrupt"):
        read_image(path)


@pytest.mark.parametrize("name,dtype", [("a.nii", np.float32), ("a.nii.gz", np.float32), ("a.nii.gz", np.float64),
                                        ("a.hdr", np.float32)])
def test_nan_or_inf_voxels_of_nifti_are_refused_not_read_as_zero(tmp_path, name, dtype):
    """Before: ITK reads NaN and infinite NIfTI voxels as 0, so the NaN check of registration never saw
    them (the same voxels in .mha or .nrrd were refused)."""
    array = ARRAY.astype(dtype)
    array[2, 3, 4], array[5, 5, 5], array[9, 8, 7] = np.nan, np.inf, -np.inf
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
    silently = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name)))
    assert np.isfinite(silently).all() and silently[2, 3, 4] == 0
    with pytest.raises(ImageError, match=rf"{name}: holds 3 NaN or infinite voxels \(of 720\), which ITK would read "
                                         r"as 0; replace them \(e.g. numpy.nan_to_num"):
        read_image(tmp_path / name)
    array[2, 3, 4], array[5, 5, 5], array[9, 8, 7] = 0.0, 1e30, -1e30
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
    np.testing.assert_array_equal(read_image(tmp_path / name, dtype=None).array, array)  # finite: read as before


def test_nan_in_a_nifti_displacement_field_is_refused(tmp_path):
    geometry = Geometry((8, 9, 10), [1.0, 1.0, 2.0])
    disp = np.random.default_rng(3).normal(size=(3,) + geometry.shape)
    disp[1, 2, 3, 4] = np.nan
    write_displacement_field(disp, geometry, tmp_path / "d.nii.gz")
    with pytest.raises(TransformFileError, match=r"d.nii.gz.*holds 1 NaN or infinite voxels"):
        read_displacement_field(tmp_path / "d.nii.gz")


@pytest.mark.parametrize("name", ["d.nii.gz", "d.mha"])
def test_truncated_displacement_field_is_refused(tmp_path, name):
    geometry = Geometry((8, 9, 10), [1.0, 1.0, 2.0])
    disp = np.random.default_rng(3).normal(size=(3,) + geometry.shape)
    write_displacement_field(disp, geometry, tmp_path / name)
    np.testing.assert_allclose(read_displacement_field(tmp_path / name)[0], disp.astype(np.float32))
    _cut(tmp_path / name, 0.5)
    with pytest.raises(TransformFileError, match=rf"{name}: the file is truncated or corrupt.*re-copy"):
        read_displacement_field(tmp_path / name)


# --------------------------------------------------------------------------------- direction
def _mha(path, matrix, spacing="1 1 2"):
    header = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
              f"CompressedData = False\nTransformMatrix = {matrix}\nOffset = -5 10 20\nElementSpacing = {spacing}\n"
              f"DimSize = 8 9 10\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + ARRAY.tobytes())
    return path


def _nrrd(path, directions):
    header = (f"NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: 8 9 10\n"
              f"space directions: {directions}\nkinds: domain domain domain\nendian: little\nencoding: raw\n"
              f"space origin: (-5,10,20)\n\n")
    path.write_bytes(header.encode() + ARRAY.tobytes())
    return path


def _nifti(path, srow, qform_code=1, pixdim=None):
    """A NIfTI-1 file written by SimpleITK, then its sform (RAS, 3x4 row-major) patched."""
    _write(path, False)
    header = bytearray(path.read_bytes())
    struct.pack_into("<12f", header, 280, *srow)
    struct.pack_into("<h", header, 252, qform_code)
    if pixdim is not None:
        struct.pack_into("<3f", header, 80, *pixdim)
    path.write_bytes(bytes(header))
    return path


SHEARED = [  # (writer, words besides NOT_ROTATION)
    (lambda p: _mha(p / "shear.mha", "1 0 0 0.25 1 0 0 0 1"),
     ("TransformMatrix", "axes x and y meet at 75.96 degrees", "[[1.0, 0.25, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]")),
    (lambda p: _mha(p / "scaled.mha", "2 0 0 0 1 0 0 0 1"), ("axis x has length 2 instead of 1",)),
    (lambda p: _mha(p / "flat.mha", "1 0 0 1 0 0 0 0 1"), ("axes x and y meet at 0 degrees",)),
    (lambda p: _nrrd(p / "shear.nrrd", "(1,0,0) (0.25,1,0) (0,0,2)"),
     ("space directions", "axes x and y meet at 75.96 degrees")),
    (lambda p: _nifti(p / "shear.nii", [-1, -0.25, 0, 0, 0, -1, 0, 0, 0, 0, 2, 0]),
     ("NIfTI sform", "75.96 degrees", "set sform_code to 0")),
    (lambda p: _nifti(p / "shear_no_qform.nii", [-1, -0.25, 0, 0, 0, -1, 0, 0, 0, 0, 2, 0], qform_code=0),
     ("NIfTI sform", "75.96 degrees")),
]


@pytest.mark.parametrize("writer,words", [
    (lambda p: _mha(p, "1 0 0 0 1 0 0 0 1", "1 0 2"), r"its header gives ElementSpacing '1 0 2': every voxel size must be "
                                                     r"a positive number of mm; fix the header's spacing"),
    (lambda p: _mha(p, "1 0 0 0 1 0 0 0 1", "1 nan 2"), r"ElementSpacing '1 nan 2'"),
    (lambda p: _mha(p, "1 0 0 0 1 0 0 0 1", "-1 1 2"), r"ElementSpacing '-1 1 2'"),
    (lambda p: _nrrd(p, "(1,0,0) (0,0,0) (0,0,2)"), r"its header's space directions .* give a voxel axis no length"),
], ids=["mha-zero", "mha-nan", "mha-negative", "nrrd-zero"])
def test_a_voxel_size_of_zero_or_nan_is_named(tmp_path, writer, words):
    """Before: ITK's 'Zero-valued spacing' (also for NaN) and 'damaged ... re-export or re-copy it'."""
    path = writer(tmp_path / ("a.nrrd" if "directions" in words else "a.mha"))
    with pytest.raises(ImageError, match=words):
        read_image(path)


@pytest.mark.parametrize("writer,words", SHEARED, ids=["mha-shear", "mha-scaled", "mha-singular", "nrrd-shear",
                                                       "nii-sform-shear", "nii-sform-shear-no-qform"])
def test_direction_that_is_not_a_rotation_is_refused(tmp_path, capfd, writer, words):
    path = writer(tmp_path)
    with pytest.raises(ImageError) as err:
        read_image(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    for word in NOT_ROTATION + words:
        assert word in message, message
    assert "WARNING: In" not in capfd.readouterr().err  # refused before ITK could print its own warning


def test_simpleitk_alone_keeps_a_sheared_mha_and_its_writer_coerces_it(tmp_path, capfd):
    """Why the check exists: the sheared direction reaches the outputs, and the NIfTI writer rotates it."""
    image = sitk.ReadImage(str(_mha(tmp_path / "shear.mha", "1 0 0 0.25 1 0 0 0 1")))
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    assert abs(direction[0, 1] - 0.25) < 1e-12
    sitk.WriteImage(image, str(tmp_path / "out.nii.gz"))
    assert "coerced to orthogonal" in capfd.readouterr().err
    written = np.asarray(sitk.ReadImage(str(tmp_path / "out.nii.gz")).GetDirection()).reshape(3, 3)
    assert np.max(np.abs(written - direction)) > 0.1


ACCEPTED = [  # (writer, expected direction (LPS), expected spacing, header off a rotation by more than 1e-6)
    (lambda p: _mha(p / "rounded.mha", "0.7071 0.7071 0 -0.7071 0.7071 0 0 0 1"),
     rotation_matrix([0, 0, 45]), [1.0, 1.0, 2.0], True),
    (lambda p: _nrrd(p / "oblique.nrrd", "(0.9659258,0.2588190,0) (-0.5176381,1.9318517,0) (0,0,3)"),
     rotation_matrix([0, 0, 15]), [1.0, 2.0, 3.0], False),
    (lambda p: _nifti(p / "flipped.nii", [1, 0, 0, 5, 0, -1, 0, -10, 0, 0, 2, 20]), np.diag([-1.0, 1.0, 1.0]),
     [1.0, 1.0, 2.0], False),
]


@pytest.mark.parametrize("writer,direction,spacing,snapped", ACCEPTED,
                         ids=["mha-4-decimals", "nrrd-oblique", "nii-flip"])
def test_rotation_and_rounded_rotation_are_accepted(tmp_path, writer, direction, spacing, snapped):
    path = writer(tmp_path)
    image = read_image(path)
    d = image.geometry.direction
    raw = np.asarray(sitk.ReadImage(str(path)).GetDirection()).reshape(3, 3)
    assert (np.max(np.abs(raw.T @ raw - np.eye(3))) > 1e-6) == snapped
    # a header within 0.1 voxel of a rotation is snapped to that rotation; an exact one is kept as it is
    np.testing.assert_allclose(d.T @ d, np.eye(3), atol=1e-12 if snapped else 1e-6)
    np.testing.assert_allclose(d, direction, atol=1e-4)
    if not snapped:
        np.testing.assert_array_equal(d, raw)
    np.testing.assert_allclose(image.geometry.spacing, spacing, atol=1e-5)
    np.testing.assert_array_equal(image.array, ARRAY)


def test_nifti_sform_and_pixdim_disagree_gives_a_clean_warning(tmp_path, capfd):
    path = _nifti(tmp_path / "scales.nii", [-2, 0, 0, 0, 0, -1, 0, 0, 0, 0, 2, 0])  # sform: 2 mm in x, pixdim 1 mm
    with pytest.warns(ImageWarning) as record:
        image = read_image(path)
    message = str(record[0].message)
    assert message.startswith("scales.nii: its NIfTI header holds two voxel sizes"), message
    assert "[2.0, 1.0, 2.0] mm in the sform" in message and "uses pixdim" in message and "fix the header" in message
    np.testing.assert_allclose(image.geometry.spacing, [1.0, 1.0, 2.0])
    assert "WARNING" not in capfd.readouterr().err  # ITK's console warning (with its source path) silenced
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(_nifti(tmp_path / "agree.nii", [-1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 2, 0]))


# ---------------------------------------------------------------------------- physical overlap
def _grid(origin=(0.0, 0.0, 0.0), size=(10, 10, 10), spacing=(1.0, 1.0, 1.0), angles=(0.0, 0.0, 0.0), flip=False):
    direction = rotation_matrix(angles) @ (np.diag([1.0, -1.0, 1.0]) if flip else np.eye(3))
    return Geometry(size, spacing, origin, direction)


OVERLAP = [  # (a, b, expected fraction of the smaller box)
    (_grid(), _grid(), 1.0),
    (_grid(), _grid(origin=(5.0, 0.0, 0.0)), 0.5),
    (_grid(), _grid(origin=(10.0, 0.0, 0.0)), 0.0),  # faces touch: no shared volume
    (_grid(), _grid(origin=(5000.0, 0.0, 0.0)), 0.0),  # 5 m apart
    (_grid(), _grid(origin=(2.0, 2.0, 2.0), size=(3, 3, 3)), 1.0),  # small box inside
    (_grid(origin=(-4.5, -4.5, -4.5)), _grid(origin=(-4.5, -4.5, -4.5), spacing=(0.5, 1.0, 1.0)), 1.0),
    # a square turned 45 degrees about its centre shares a regular octagon: 2 (sqrt 2 - 1) of its area
    (_grid(origin=(-4.5, -4.5, -4.5)), Geometry((10, 10, 10), [1.0] * 3, rotation_matrix([0, 0, 45]) @ np.full(3, -4.5),
                                                rotation_matrix([0, 0, 45])), 2 * (np.sqrt(2) - 1)),
    (_grid(origin=(-4.5, -4.5, -4.5)), _grid(origin=(-4.5, 4.5, -4.5), flip=True), 1.0),  # same box, y flipped
    (_grid(size=(20, 20, 20)), _grid(origin=(0.0, 0.0, 500.0), size=(20, 20, 20)), 0.0),  # mask 50 cm away
]


@pytest.mark.parametrize("a,b,expected", OVERLAP)
def test_physical_overlap_table(a, b, expected):
    assert physical_overlap(a, b) == pytest.approx(expected, abs=1e-9)
    assert physical_overlap(b, a) == pytest.approx(expected, abs=1e-9)


def test_physical_overlap_oblique_matches_sampling(rng):
    """Random oblique, anisotropic, flipped pairs: the exact volume agrees with 100k sampled points."""
    for _ in range(3):
        a = _grid(rng.uniform(-10, 10, 3), tuple(rng.integers(5, 25, 3)), rng.uniform(0.5, 3, 3),
                  rng.uniform(-60, 60, 3))
        b = _grid(rng.uniform(-10, 10, 3), tuple(rng.integers(5, 25, 3)), rng.uniform(0.5, 3, 3),
                  rng.uniform(-60, 60, 3), flip=True)
        volumes = [abs(np.linalg.det(g.index_to_physical_matrix)) * np.prod(g.size) for g in (a, b)]
        small, big = (a, b) if volumes[0] <= volumes[1] else (b, a)
        points = small.index_to_physical(rng.uniform(-0.5, np.asarray(small.size) - 0.5, size=(100_000, 3)))
        sampled = big.contains(points, margin_voxels=0.5).mean()
        assert physical_overlap(a, b) == pytest.approx(sampled, abs=0.006)


def test_grid_corners_are_voxel_edges(oblique_geometry):
    corners = grid_corners(oblique_geometry)
    index = oblique_geometry.physical_to_index(corners)
    assert corners.shape == (8, 3)
    np.testing.assert_allclose(np.sort(np.unique(np.round(index, 9))),
                               np.sort(np.unique([-0.5] + [s - 0.5 for s in oblique_geometry.size])))
