"""Property tests of the landmark parsers (hypothesis; few examples to stay fast)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ADRegNetLib.io import LandmarkError, read_landmarks, write_landmarks
from ADRegNetLib.io.landmarks import parse_dirlab_text
from ADRegNetLib.spatial.geometry import Geometry

FLOATS = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
POINTS = st.integers(1, 12).flatmap(lambda k: arrays(np.float64, (k, 3), elements=FLOATS))
FAST = settings(max_examples=40, deadline=None)


def _round_trip(points, name, **kwargs):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        write_landmarks(points, path, **kwargs)
        return read_landmarks(path), path.read_text()


@FAST
@given(points=POINTS, name=st.sampled_from(["p.mrk.json", "p.fcsv", "p.csv", "p.txt"]),
       system=st.sampled_from(["LPS", "RAS"]))
def test_write_read_round_trip_is_exact(points, name, system):
    back, _ = _round_trip(points, name, coordinate_system=system)
    np.testing.assert_array_equal(back, points)  # shortest-repr floats and sign flips are exact


@FAST
@given(points=POINTS)
def test_ras_files_hold_negated_x_y(points):
    _, text = _round_trip(points, "p.mrk.json", coordinate_system="RAS")
    stored = np.array([cp["position"] for cp in json.loads(text)["markups"][0]["controlPoints"]])
    np.testing.assert_array_equal(stored, points * np.array([-1.0, -1.0, 1.0]))
    _, text = _round_trip(points, "p.fcsv", coordinate_system="RAS")
    rows = [line.split(",") for line in text.splitlines() if not line.startswith("#")]
    np.testing.assert_array_equal(np.array([[float(v) for v in r[1:4]] for r in rows]),
                                  points * np.array([-1.0, -1.0, 1.0]))


@FAST
@given(points=POINTS)
def test_fcsv_old_numeric_coordinate_system(points):
    """An old-style file with CoordinateSystem = 0 (RAS) reads as the LPS negation of its values."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "old.fcsv"
        path.write_text("# CoordinateSystem = 0\n" + "".join(
            f"{k},{x!r},{y!r},{z!r},0,0,0,1,1,1,0,F,,\n" for k, (x, y, z) in enumerate(points.tolist())))
        np.testing.assert_array_equal(read_landmarks(path), points * np.array([-1.0, -1.0, 1.0]))


@FAST
@given(index=st.integers(1, 10).flatmap(lambda k: arrays(np.int64, (k, 3), elements=st.integers(0, 40))))
def test_dirlab_write_read_round_trip(index):
    g = Geometry((41, 41, 41), [0.97, 0.97, 2.5], [10.0, -20.0, 30.0], np.diag([1.0, 1.0, -1.0]))
    points = g.index_to_physical(index)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case_xyz.txt"
        write_landmarks(points, path, fmt="dirlab", geometry=g)
        rows = [[int(v) for v in line.split()] for line in path.read_text().splitlines()]
        np.testing.assert_array_equal(rows, index + 1)  # whole 1-based indices on disk
        np.testing.assert_allclose(read_landmarks(path, geometry=g), points, atol=1e-9)


_TOKEN = st.one_of(st.integers(-5, 500).map(str), FLOATS.map(repr), st.sampled_from(
    ["nan", "inf", "-inf", "x", "", "1e999", "0x1f", "1,2", "#", "\t", "１２"]), st.text(max_size=4))
_LINE = st.lists(_TOKEN, min_size=0, max_size=5).map(" ".join)


@settings(max_examples=50, deadline=None)
@given(lines=st.lists(_LINE, max_size=8), zero_based=st.booleans())
def test_dirlab_parser_only_raises_landmark_error(lines, zero_based):
    text = "\n".join(lines)
    try:
        out = parse_dirlab_text(text, "fuzz.txt", zero_based=zero_based)
    except LandmarkError as exc:
        assert str(exc).startswith("fuzz.txt")
        return
    assert out.ndim == 2 and out.shape[1] == 3 and len(out) >= 1
    assert np.all(np.isfinite(out)) and out.min() >= -0.5


@FAST
@given(index=st.lists(st.tuples(*[st.integers(1, 300)] * 3), min_size=1, max_size=10),
       sep=st.sampled_from([" ", "\t", "   ", " \t "]))
def test_dirlab_parser_valid_lines(index, sep):
    text = "".join(sep.join(map(str, row)) + sep + "\n" for row in index)
    np.testing.assert_array_equal(parse_dirlab_text(text), np.asarray(index) - 1)


@settings(max_examples=50, deadline=None)
@given(text=st.text(max_size=200), name=st.sampled_from(["f.fcsv", "f.csv", "f.mrk.json", "f.txt"]))
def test_readers_on_arbitrary_text_only_raise_landmark_error(text, name):
    g = Geometry((5, 5, 5))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8")
        try:
            out = read_landmarks(path, geometry=g)
        except LandmarkError:
            return
        assert out.ndim == 2 and out.shape[1] == 3 and np.all(np.isfinite(out))


# ------------------------------------------------------------------------------ landmark arrays
@FAST
@given(shape=st.lists(st.integers(0, 7), min_size=0, max_size=3).map(tuple))
def test_landmark_arrays_are_never_reshaped(shape):
    """Only (K, 3) with K >= 1 is accepted; every other shape is a LandmarkError naming the shape."""
    from ADRegNetLib.io.landmarks import as_points

    points = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    try:
        out = as_points(points, "fuzz landmarks")
    except LandmarkError as exc:
        assert not (len(shape) == 2 and shape[1] == 3 and shape[0] >= 1)
        assert "fuzz landmarks" in str(exc)
        return
    assert len(shape) == 2 and shape[1] == 3 and shape[0] >= 1
    np.testing.assert_array_equal(out, points)


# ------------------------------------------------------------------------------ damaged images
def _image_bytes(name, compress):
    """Bytes of a small random volume written by SimpleITK as ``name``, and its array."""
    import SimpleITK as sitk

    array = np.random.default_rng(5).normal(size=(6, 7, 8)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path), compress)
        return path.read_bytes(), array


_ORIGINALS = {(name, compress): _image_bytes(name, compress)
              for name, compress in [("a.nii.gz", True), ("a.nii", False), ("a.mha", True), ("a.mha", False),
                                     ("a.nrrd", True), ("a.nrrd", False)]}


@settings(max_examples=60, deadline=None)
@given(which=st.sampled_from(sorted(_ORIGINALS)), keep=st.floats(0.0, 1.0), flip=st.booleans())
def test_damaged_image_is_refused_or_read_exactly(which, keep, flip):
    """A cut or a flipped byte in the compressed data never yields zero-filled or altered voxels silently."""
    from ADRegNetLib.io import ImageError, read_image

    data, array = _ORIGINALS[which]
    if flip:
        if not which[1]:
            return  # a flipped byte in an uncompressed file is a changed voxel or header: nothing can tell
        damaged = bytearray(data)
        damaged[min(int(keep * len(data)), len(data) - 1)] ^= 0x5A
        damaged = bytes(damaged)
    else:
        damaged = data[: int(keep * len(data))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / which[0]
        path.write_bytes(damaged)
        try:
            image = read_image(path)
        except ImageError as exc:
            assert str(exc).startswith(str(path))
            return
    assert damaged == data or flip  # a cut file is never accepted
    np.testing.assert_array_equal(image.array, array)
