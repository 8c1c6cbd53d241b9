"""Numbers in landmark files and image headers are read strictly (ADRegNetLib.io.numbers).

Before: every landmark reader used Python's ``float``, which reads ``1_0`` as 10 (an underscore is a digit
separator in Python source), so a coordinate typed as ``1_0`` (meant 1.0 or 1,0) moved the landmark
9 mm without a word; the elastix point count went through ``int``, which does the same; a MetaImage
``DimSize = 1_0 ...`` passed the integrity check as 10 and ITK then failed with "File cannot be read
... No such file or directory". Each is now refused naming the file, line, column, value and the fix.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from ADRegNetLib.io import ImageError, LandmarkError, read_image, read_landmarks
from ADRegNetLib.io.numbers import number_problem, parse_number, parse_whole_number
from ADRegNetLib.spatial import Geometry

GRID = Geometry((40, 40, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
FIX = r"; write it as a plain decimal number with '\.' as the decimal point \(e\.g\. 10, -3\.5 or 1\.2e-3\)$"


@pytest.mark.parametrize("text, value", [("12", 12.0), ("-3.5", -3.5), (".5", 0.5), ("4.", 4.0), ("1e-3", 1e-3),
                                         ("+2E+2", 200.0), (" 7 ", 7.0), ("-0", 0.0), ("1e-400", 0.0)])
def test_plain_decimal_numbers_are_read(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text, reason", [
    ("1_0", r"holds '_', which Python would read as a digit separator \(1_0 as 10\)"),
    ("nan", "is not a finite number"), ("-inf", "is not a finite number"), ("Infinity", "is not a finite number"),
    ("1e400", r"is beyond the range of a 64-bit floating-point number \(about 1\.8e308\)"),
    ("5,5", "uses ',' as the decimal point"),
    ("\u0665", "holds characters other than the ASCII digits"),  # an Arabic-Indic 5: float() reads it
    ("0x10", "is not a number"), ("1.2.3", "is not a number"), ("", "is empty"),
])
def test_what_python_would_read_otherwise_is_refused_with_the_reason(text, reason):
    assert re.match(reason, number_problem(text))
    with pytest.raises(ValueError, match=re.escape(repr(text.strip())) + " " + reason):
        parse_number(text)


def test_whole_numbers():
    assert parse_whole_number(" 12 ") == 12 and parse_whole_number("-3") == -3
    for text in ("1_0", "2.0", "1e3", "nan"):
        with pytest.raises(ValueError):
            parse_whole_number(text)
    assert int("1_0") == 10 and float("1_0") == 10.0  # what was read before


@pytest.mark.parametrize("name, text, where", [
    ("points.csv", "x,y,z\n1,2,3\n4,1_0,6\n", r"line 3, column 2 \(y\)"),
    ("points.csv", "id,x_lps_mm,y_lps_mm,z_lps_mm\nA,1,2,3\nB,4,5,1_0\n", r"line 3, column 4 \(z_lps_mm\)"),
    ("points.fcsv", "# CoordinateSystem = LPS\n1,1_0,2,3\n", r"line 2, column 2 \(x\)"),
    ("points.txt", "1 2 3\n4 5 1_0\n", r"line 2, column 3 \(k\)"),  # DIR-Lab voxel indices
    ("points.txt", "point\n2\n1 2 3\n1_0 5 6\n", r"line 4, column 1 \(x\)"),  # elastix point file
    ("outputpoints.txt", "Point 0 ; InputIndex = [ 1 2 3 ] ; OutputPoint = [ 1.0 2_0 3.0 ]\n",
     r"line 1, OutputPoint value 2 \(y\)"),  # transformix output
])
def test_landmark_files_refuse_1_0_naming_file_line_column_value_and_fix(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    value = re.search(r"\b\d_\d\b", text).group(0)
    with pytest.raises(LandmarkError, match=re.escape(str(path)) + ", " + where + f": '{value}' holds '_', which "
                       r"Python would read as a digit separator \(1_0 as 10\)" + FIX):
        read_landmarks(path, geometry=GRID)


@pytest.mark.parametrize("token, reason", [("nan", "is not a finite number"), ("inf", "is not a finite number"),
                                           ("1e400", "is beyond the range of a 64-bit floating-point number")])
def test_landmark_csv_refuses_non_finite_values_by_name(tmp_path, token, reason):
    path = tmp_path / "points.csv"
    path.write_text(f"x,y,z\n1,2,{token}\n")
    with pytest.raises(LandmarkError, match=rf"line 2, column 3 \(z\): '{token}' {reason}"):
        read_landmarks(path)


def test_elastix_point_count_refuses_1_0(tmp_path):
    path = tmp_path / "points.txt"
    path.write_text("point\n1_0\n" + "1 2 3\n" * 10)  # int() read the count as 10 and accepted the file
    with pytest.raises(LandmarkError, match=r"line 2: expected the number of points, got '1_0': it holds '_', .*; "
                                            r"write the count as a whole number \(e\.g\. 12\)$"):
        read_landmarks(path)


def test_markups_json_string_coordinates_are_read_strictly(tmp_path):
    path = tmp_path / "points.mrk.json"

    def write(position) -> None:
        path.write_text(json.dumps({"markups": [{"type": "Fiducial", "coordinateSystem": "LPS",
                                                 "controlPoints": [{"position": position}]}]}))

    write([1, "2.5", 3])
    np.testing.assert_array_equal(read_landmarks(path), [[1.0, 2.5, 3.0]])
    write([1, "1_0", 3])
    with pytest.raises(LandmarkError, match=r"control point 0, coordinate y: '1_0' holds '_'.*" + FIX):
        read_landmarks(path)
    path.write_text('{"markups": [{"controlPoints": [{"position": [1, 1e400, 3]}]}]}')  # JSON reads inf
    with pytest.raises(LandmarkError, match=r"control point 0 position is not finite: \[1, inf, 3\]; every coordinate "
                                            r"must be a finite number of mm"):
        read_landmarks(path)


def test_metaimage_header_with_1_0_is_refused_by_name(tmp_path):
    path = tmp_path / "image.mha"
    header = ("ObjectType = Image\nNDims = 3\nDimSize = 1_0 10 10\nElementSpacing = 1 1 1\nElementType = MET_UCHAR\n"
              "ElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + bytes(1000))
    with pytest.raises(ImageError, match=r"image\.mha: its header gives DimSize '1_0 10 10': '1_0' is no plain whole "
                                         r"number \(it holds '_', .*\), and ITK cannot read it; fix the header"):
        read_image(path)
    path.write_bytes(header.replace("1_0", "10").encode() + bytes(1000))
    assert read_image(path).array.shape == (10, 10, 10)


def test_one_reader_for_files_and_command_lines():
    """ADRegNetLib.io.numbers re-exports ADRegNetLib.numbers (which imports no SimpleITK, for the training command);
    the register, batch and train options use its one argparse wrapper."""
    import argparse

    from ADRegNetLib import numbers as top
    from ADRegNetLib.io import numbers as io_numbers

    for name in io_numbers.__all__:
        assert getattr(io_numbers, name) is getattr(top, name)
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'1_0' holds '_', .*" + FIX):
        top.argument_type()("1_0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'2\.5' is not a whole number; write it as a plain whole "
                                                         r"number \(e\.g\. 2\)$"):
        top.argument_type(whole=True)("2.5")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'-0' is not above 0; .*\(e\.g\. 3e-5\)$"):
        top.argument_type(example="3e-5", positive=True)("-0")
    assert top.argument_type(whole=True, positive=True)(" 7 ") == 7
    assert top.argument_type()("-3.5") == -3.5
