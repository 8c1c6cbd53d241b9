"""Landmark files (ADRegNetLib.io.landmarks): formats, frames, conventions and the error catalogue."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from ADRegNetLib.io import (LandmarkError, LandmarkWarning, check_landmark_pairs, landmark_format,
                            read_landmarks, write_landmarks)
from ADRegNetLib.io.landmarks import parse_dirlab_text, read_elastix_points
from ADRegNetLib.spatial.geometry import Geometry

PTS = np.array([[1.5, -2.25, 3.0], [-40.125, 12.0, -300.5], [0.1, 0.2, 0.3]])


@pytest.mark.parametrize("name", ["p.mrk.json", "p.fcsv", "p.csv", "p.txt"])
def test_round_trip_lps(tmp_path, name):
    write_landmarks(PTS, tmp_path / name)
    np.testing.assert_array_equal(read_landmarks(tmp_path / name), PTS)


@pytest.mark.parametrize("name", ["p.mrk.json", "p.fcsv"])
def test_round_trip_ras_file(tmp_path, name):
    write_landmarks(PTS, tmp_path / name, coordinate_system="RAS")
    text = (tmp_path / name).read_text()
    assert "RAS" in text
    np.testing.assert_array_equal(read_landmarks(tmp_path / name), PTS)


def test_markups_json_written_in_ras_holds_flipped_values(tmp_path):
    write_landmarks(PTS, tmp_path / "p.mrk.json", coordinate_system="RAS")
    doc = json.loads((tmp_path / "p.mrk.json").read_text())
    markup = doc["markups"][0]
    assert markup["coordinateSystem"] == "RAS" and markup["type"] == "Fiducial"
    np.testing.assert_array_equal(markup["controlPoints"][1]["position"], [40.125, -12.0, -300.5])


def _markups(system, positions):
    doc = {"markups": [{"type": "Fiducial", "controlPoints": [{"position": p} for p in positions]}]}
    if system is not None:
        doc["markups"][0]["coordinateSystem"] = system
    return json.dumps(doc)


@pytest.mark.parametrize("system,expected", [("LPS", [1, 2, 3]), ("RAS", [-1, -2, 3]), (None, [1, 2, 3])])
def test_markups_json_coordinate_systems(tmp_path, system, expected):
    (tmp_path / "a.mrk.json").write_text(_markups(system, [[1, 2, 3]]))
    np.testing.assert_array_equal(read_landmarks(tmp_path / "a.mrk.json"), [expected])


def test_markups_json_errors(tmp_path):
    p = tmp_path / "a.mrk.json"
    p.write_text(_markups("IJK", [[1, 2, 3]]))
    with pytest.raises(LandmarkError, match="unknown coordinate system 'IJK'.*'LPS' or 'RAS'"):
        read_landmarks(p)
    p.write_text(_markups("LPS", []))
    with pytest.raises(LandmarkError, match="holds no landmark points"):
        read_landmarks(p)
    p.write_text('{"markups": [{"controlPoints": [{"positionStatus": "missing"}]}]}')
    with pytest.raises(LandmarkError, match="control point 0 has no position.*'missing'"):
        read_landmarks(p)
    p.write_text("{not json")
    with pytest.raises(LandmarkError, match="not valid JSON"):
        read_landmarks(p)
    p.write_text('{"foo": 1}')
    with pytest.raises(LandmarkError, match="no 'markups' list"):
        read_landmarks(p)


@pytest.mark.parametrize("header,expected", [
    ("# CoordinateSystem = RAS\n", [-1, -2, 3]),
    ("# CoordinateSystem = LPS\n", [1, 2, 3]),
    ("# CoordinateSystem = 0\n", [-1, -2, 3]),   # old files: 0 = RAS
    ("# CoordinateSystem = 1\n", [1, 2, 3]),     # old files: 1 = LPS
    ("", [-1, -2, 3]),                           # no line: Slicer < 4.11 wrote RAS
])
def test_fcsv_coordinate_system_header(tmp_path, header, expected):
    p = tmp_path / "a.fcsv"
    p.write_text("# Markups fiducial file version = 4.10\n" + header
                 + "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
                 + 'vtkMRMLMarkupsFiducialNode_0,1,2,3,0,0,0,1,1,1,0,"F-1, quoted",,\n')
    np.testing.assert_array_equal(read_landmarks(p), [expected])


def test_fcsv_errors(tmp_path):
    p = tmp_path / "a.fcsv"
    p.write_text("# CoordinateSystem = 2\n1,1,2,3\n")
    with pytest.raises(LandmarkError, match=r"line 1: unknown coordinate system '2'"):
        read_landmarks(p)
    p.write_text("# CoordinateSystem = LPS\n1,1,2,3\n2,1,2\n")
    with pytest.raises(LandmarkError, match=r"line 3: expected 'id,x,y,z,...'"):
        read_landmarks(p)
    p.write_text("# CoordinateSystem = LPS\n1,1,abc,3\n")
    with pytest.raises(LandmarkError, match=r"line 2, column 3 \(y\): 'abc' is not a number; write it as a plain "
                                             r"decimal number"):
        read_landmarks(p)
    p.write_text("# CoordinateSystem = LPS\n")
    with pytest.raises(LandmarkError, match="holds no landmark points"):
        read_landmarks(p)


def test_csv_variants(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("label,x,y,z\nA,1,2,3\nB,4,5,6\n")
    np.testing.assert_array_equal(read_landmarks(p), [[1, 2, 3], [4, 5, 6]])
    p.write_text("x_ras,y_ras,z_ras\n1,2,3\n")
    np.testing.assert_array_equal(read_landmarks(p), [[-1, -2, 3]])
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(LandmarkError, match=r"line 1: header .* does not name x, y, z"):
        read_landmarks(p)
    p.write_text("x,y,z\n1,2,3\n4,nan,6\n")
    with pytest.raises(LandmarkError, match=r"line 3, column 2 \(y\): 'nan' is not a finite number"):
        read_landmarks(p)
    p.write_text("x,y,z\n")
    with pytest.raises(LandmarkError, match="holds no landmark points"):
        read_landmarks(p)


def test_real_csv_and_elastix_point_file_agree(shared_data):
    folder = shared_data / "lung-ct-elastix-small"
    from_csv = read_landmarks(folder / "landmarks_baseline.csv")
    from_txt = read_landmarks(folder / "3DCT_lung_baseline_landmarks.txt")
    assert landmark_format(folder / "3DCT_lung_baseline_landmarks.txt") == "elastix"
    assert from_txt.shape == (100, 3)
    np.testing.assert_allclose(from_csv, from_txt, atol=1e-9)


# ---------------------------------------------------------------------------------------- DIR-Lab
def test_dirlab_is_one_based_and_uses_geometry(tmp_path, oblique_geometry):
    p = tmp_path / "case_300_T00_xyz.txt"
    p.write_text("1\t1\t1\n  3   5  2\n\n11 9 7\n")
    pts = read_landmarks(p, geometry=oblique_geometry)
    expected = oblique_geometry.index_to_physical(np.array([[0, 0, 0], [2, 4, 1], [10, 8, 6]]))
    np.testing.assert_allclose(pts, expected, atol=1e-12)
    pts0 = read_landmarks(p, geometry=oblique_geometry, zero_based=True)
    np.testing.assert_allclose(pts0, oblique_geometry.index_to_physical(np.array([[1, 1, 1], [3, 5, 2], [11, 9, 7]])))


def test_dirlab_write_read(tmp_path, oblique_geometry):
    idx = np.array([[0, 0, 0], [2, 4, 1], [10, 8, 6]])
    pts = oblique_geometry.index_to_physical(idx)
    write_landmarks(pts, tmp_path / "d.txt", fmt="dirlab", geometry=oblique_geometry)
    assert (tmp_path / "d.txt").read_text().splitlines()[1] == "3\t5\t2"
    np.testing.assert_allclose(read_landmarks(tmp_path / "d.txt", geometry=oblique_geometry), pts, atol=1e-9)


def test_dirlab_errors(tmp_path, oblique_geometry):
    p = tmp_path / "d.txt"
    p.write_text("1 2 3\n4 5\n")
    with pytest.raises(LandmarkError, match=r"d\.txt, line 2: expected 3 voxel indices 'i j k', got 2"):
        read_landmarks(p, geometry=oblique_geometry)
    p.write_text("1 2 3\n0 5 6\n")
    with pytest.raises(LandmarkError, match=r"line 2: index 0 is before the first voxel.*zero_based=True"):
        read_landmarks(p, geometry=oblique_geometry)
    p.write_text("1 2 3\n")
    with pytest.raises(LandmarkError, match="pass the image geometry"):
        read_landmarks(p)
    p.write_text("\n\n")
    with pytest.raises(LandmarkError, match="holds no landmark points"):
        read_landmarks(p, geometry=oblique_geometry)


# ---------------------------------------------------------------------------------------- elastix
def test_elastix_index_file_and_count_mismatch(tmp_path, oblique_geometry):
    p = tmp_path / "e.txt"
    p.write_text("index\n2\n0 0 0\n2 4 1\n")
    np.testing.assert_allclose(read_landmarks(p, geometry=oblique_geometry),
                               oblique_geometry.index_to_physical(np.array([[0, 0, 0], [2, 4, 1]])))
    with pytest.raises(LandmarkError, match="voxel indices .*pass the image geometry"):
        read_landmarks(p)
    p.write_text("point\n3\n0 0 0\n2 4 1\n")
    with pytest.raises(LandmarkError, match="header says 3 points but the file holds 2 rows"):
        read_landmarks(p)


def test_transformix_output_file(tmp_path):
    p = tmp_path / "outputpoints.txt"
    p.write_text(
        "Point\t0\t; InputIndex = [ 1 2 3 ]\t; InputPoint = [ 1.000000 2.000000 3.000000 ]\t; "
        "OutputIndexFixed = [ 1 2 3 ]\t; OutputPoint = [ 1.500000 2.500000 3.500000 ]\t; Deformation = [ 0.5 0.5 0.5 ]\n"
    )
    assert landmark_format(p) == "elastix"
    np.testing.assert_array_equal(read_landmarks(p), [[1.5, 2.5, 3.5]])
    np.testing.assert_array_equal(read_elastix_points(p, which="InputPoint"), [[1, 2, 3]])


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(LandmarkError, match="unknown landmark file type"):
        landmark_format(tmp_path / "a.xyz")
    with pytest.raises(LandmarkError, match="no such landmark file"):
        read_landmarks(tmp_path / "missing.fcsv")


# ---------------------------------------------------------------------------------------- pairs
def test_pairs_ok():
    report = check_landmark_pairs(PTS, PTS + 1.0)
    assert report["count"] == 3 and report["warnings"] == []
    np.testing.assert_array_equal(report["fixed"], PTS)
    np.testing.assert_array_equal(report["moving"], PTS + 1.0)


@pytest.mark.parametrize("points", [PTS.tolist(), torch.as_tensor(PTS), PTS.astype(np.float32).astype(np.float64),
                                    np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]]),
                                    np.array([[1.0, 2.0, 3.0]], dtype=object)],
                         ids=["list", "torch", "float32-exact", "int", "object"])
def test_pairs_accept_any_numeric_k_by_3(points):
    report = check_landmark_pairs(points, points)
    expected = np.asarray(points.tolist() if hasattr(points, "tolist") else points, dtype=np.float64)
    assert report["fixed"].dtype == np.float64
    np.testing.assert_array_equal(report["fixed"], expected)


# (fixed, moving, words in the message): each says what was given and what is expected
BAD_PAIRS = [
    (np.zeros((6, 2)), np.zeros((6, 2)), ("fixed landmarks", "shape (K, 3)", "LPS mm", "got shape (6, 2)")),
    (np.zeros((5, 2)), np.zeros((5, 2)), ("fixed landmarks", "shape (K, 3)", "got shape (5, 2)")),
    (PTS, np.zeros((6, 2)), ("moving landmarks", "got shape (6, 2)")),  # never reshaped to (4, 3)
    (torch.zeros(6, 2), torch.zeros(6, 2), ("got shape (6, 2)",)),
    (np.zeros(3), np.zeros(3), ("got shape (3,)", "for a single point, give [[x, y, z]]")),
    (PTS.T[:, :2], PTS.T[:, :2], ("got shape (3, 2)", "points in columns? give the transpose")),
    (np.zeros((3, 3, 1)), np.zeros((3, 3, 1)), ("got shape (3, 3, 1)",)),
    ([[1.0, 2.0, 3.0], [4.0, 5.0]], PTS, ("fixed landmarks must be numbers", "shape (K, 3)")),
    ([["a", "b", "c"]], [["a", "b", "c"]], ("must be numbers", "LPS mm")),
    (None, PTS, ("fixed landmarks are missing (None)", "shape (K, 3)")),
    (np.zeros((0, 3)), np.zeros((0, 3)), ("fixed landmarks is empty",)),
    (PTS, np.where(np.arange(9).reshape(3, 3) == 5, np.nan, PTS), ("moving landmarks: 1 point", "index 1",
                                                                   "three finite coordinates")),
    (np.where(np.arange(9).reshape(3, 3) == 0, np.inf, PTS), PTS, ("fixed landmarks: 1 point", "index 0")),
    (PTS, PTS[:2], ("3 fixed vs 2 moving", "same landmarks")),
]


@pytest.mark.parametrize("fixed,moving,words", BAD_PAIRS, ids=[f"bad{k}" for k in range(len(BAD_PAIRS))])
def test_pairs_bad_input_table(fixed, moving, words):
    with pytest.raises(LandmarkError) as err:
        check_landmark_pairs(fixed, moving)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_pairs_count_mismatch_names_both():
    with pytest.raises(LandmarkError, match="3 fixed vs 2 moving"):
        check_landmark_pairs(PTS, PTS[:2])


def test_pairs_empty_and_nan():
    with pytest.raises(LandmarkError, match="fixed landmarks is empty"):
        check_landmark_pairs(np.zeros((0, 3)), np.zeros((0, 3)))
    bad = PTS.copy()
    bad[2, 1] = np.nan
    with pytest.raises(LandmarkError, match="moving landmarks: 1 point.*index 2"):
        check_landmark_pairs(PTS, bad)
    with pytest.raises(LandmarkError, match=r"must be an array of shape \(K, 3\)"):
        check_landmark_pairs(PTS[:, :2], PTS[:, :2])


def test_pairs_duplicates_warn():
    dup = np.vstack([PTS, PTS[:1]])
    with pytest.warns(LandmarkWarning, match="fixed landmarks: 1 duplicated point"):
        report = check_landmark_pairs(dup, dup + np.arange(4)[:, None])
    assert len(report["warnings"]) == 1


def test_pairs_outside_image_says_index_and_distance():
    g = Geometry((10, 10, 10), [1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    fixed = np.array([[1.0, 1.0, 1.0], [5.0, 5.0, 5.0], [5.0, 5.0, 12.5]])  # 12.5 is 3 mm past the 9.5 edge
    with pytest.raises(LandmarkError, match=r"fixed landmark 2 .* lies 3.00 mm outside the fixed image"):
        check_landmark_pairs(fixed, fixed, fixed_geometry=g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_landmark_pairs(fixed[:2], fixed[:2], fixed_geometry=g, moving_geometry=g)


def test_pairs_outside_suggests_ras():
    g = Geometry((10, 10, 10), [1.0, 1.0, 1.0], [-9.0, -9.0, 0.0])  # x, y in [-9, 0]
    ras = np.array([[2.0, 3.0, 4.0], [5.0, 6.0, 7.0]])  # inside once x, y are negated
    with pytest.raises(LandmarkError, match="written in RAS"):
        check_landmark_pairs(ras, ras, moving_geometry=g)


def test_parse_dirlab_text_returns_zero_based():
    np.testing.assert_array_equal(parse_dirlab_text("1 2 3\n"), [[0, 1, 2]])


def test_real_landmarks_against_real_image(shared_data):
    """49 of the 100 elastix landmarks lie in the left lung, which the cropped CT does not show."""
    from ADRegNetLib.io import read_image

    folder = shared_data / "lung-ct-elastix-small"
    image = read_image(folder / "3DCT_lung_baseline_small.mha")
    points = read_landmarks(folder / "3DCT_lung_baseline_landmarks.txt")
    inside = image.geometry.contains(points)
    assert inside.sum() == 51
    with pytest.raises(LandmarkError, match=r"fixed landmark 1 .*49 of 100 points are outside"):
        check_landmark_pairs(points, points, fixed_geometry=image.geometry)
    report = check_landmark_pairs(points[inside], points[inside] + 1.0, fixed_geometry=image.geometry)
    assert report["count"] == 51


def test_a_latin1_landmark_file_says_to_save_it_as_utf8(tmp_path):
    """Before: 'is not a text file (cannot decode as UTF-8)', of a text file in another encoding."""
    path = tmp_path / "points.csv"
    path.write_bytes("x,y,z,label\n1,2,3,Lésion\n".encode("latin-1"))
    with pytest.raises(LandmarkError, match=r"points.csv: cannot be read as UTF-8 text \(byte 19\): a binary file, or "
                                            r"text saved in another encoding \(Latin-1, UTF-16\): save it as UTF-8"):
        read_landmarks(path)


@pytest.mark.parametrize("markups, words", [
    ([("Fiducial", 2), ("Fiducial", 3)], r"holds 2 markups; only the first \(Fiducial, 2 points\) is read"),
    ([("Curve", 3)], r"is a Curve markup, not a point list"),
])
def test_markups_other_than_one_point_list_are_warned_about(tmp_path, markups, words):
    """Before: a file of several markups was read from its first without a word; curves passed as points."""
    doc = {"markups": [{"type": kind, "coordinateSystem": "LPS",
                        "controlPoints": [{"position": [float(k), 0.0, 0.0]} for k in range(n)]} for kind, n in markups]}
    path = tmp_path / "lm.mrk.json"
    path.write_text(json.dumps(doc))
    with pytest.warns(LandmarkWarning, match=rf"lm.mrk.json: {words}: landmark pairs are the control points of one "
                                             r"point list"):
        points = read_landmarks(path)
    assert points.shape == (markups[0][1], 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_landmarks(points, tmp_path / "one.mrk.json")
        read_landmarks(tmp_path / "one.mrk.json")


def test_a_row_with_more_values_than_the_header_is_refused(tmp_path):
    """Before: '1,5,2,3' under 'x,y,z' (decimal commas: 1.5 and 2.3) was read as (1, 5, 2) without a word."""
    path = tmp_path / "decimal_commas.csv"
    path.write_text("x,y,z\n1,5,2,3\n2,0,1,5\n")
    with pytest.raises(LandmarkError, match=r"line 2: 3 columns in the header, 4 values in this row \('1,5,2,3'\): "
                                            r"decimal commas\?"):
        read_landmarks(path)
    trailing = tmp_path / "trailing.csv"  # a spreadsheet's empty trailing cells are fine
    trailing.write_text("x,y,z\n1.5,2,3,,\n")
    np.testing.assert_allclose(read_landmarks(trailing), [[1.5, 2.0, 3.0]])
