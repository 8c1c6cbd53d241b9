"""Numbers given to the command line, and in the landmark files it reads, are read strictly.

Before: ``--regularization 1_0`` ran at 10 and ``--seed 1_0`` / ``--threads 1_0`` at 10 (Python's
``float`` and ``int`` read the underscore as a digit separator), ``--regularization nan`` reached the
engine's check, and a landmark CSV with ``1_0`` registered with that landmark 9 mm off. Each is now
refused before any work: one clear line, exit code 2, nothing written.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.cli.main import main
from ADRegNetLib.io import write_displacement_field, write_image
from ADRegNetLib.io.image import Image
from ADRegNetLib.spatial.geometry import Geometry
from cli_helpers import assert_no_outputs, expect_cli_error

GEOMETRY = Geometry((24, 24, 24), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("numbers")
    rng = np.random.default_rng(0)
    paths = {"fixed": root / "fixed.nii.gz", "moving": root / "moving.nii.gz", "result": root / "result"}
    for key in ("fixed", "moving"):
        write_image(Image(rng.normal(100, 20, GEOMETRY.shape).astype(np.float32), GEOMETRY), paths[key])
    write_displacement_field(np.zeros((3, *GEOMETRY.shape), np.float32), GEOMETRY,
                             paths["result"] / "displacement.nii.gz")
    paths["good"] = root / "good.csv"
    paths["good"].write_text("x,y,z\n10,12,14\n20,22,24\n")
    paths["typo"] = root / "typo.csv"
    paths["typo"].write_text("x,y,z\n10,12,14\n20,2_2,24\n")
    return paths


@pytest.mark.parametrize("option, value, reason", [
    ("--regularization", "1_0", r"'1_0' holds '_', which Python would read as a digit separator \(1_0 as 10\); write "
                                r"it as a plain decimal number"),
    ("--regularization", "nan", r"'nan' is not a finite number"),
    ("--regularization", "inf", r"'inf' is not a finite number"),
    ("--regularization", "1e400", r"'1e400' is beyond the range of a 64-bit floating-point number"),
    ("--seed", "1_0", r"'1_0' holds '_', .*; write it as a plain whole number \(e\.g\. 2\)"),
    ("--threads", "1_0", r"'1_0' holds '_', .*; write it as a plain whole number"),
    ("--threads", "2.0", r"'2\.0' is not a whole number"),
])
def test_settings_are_read_strictly(files, capsys, tmp_path, option, value, reason):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["register", str(files["fixed"]), str(files["moving"]), "-o", str(out), f"{option}={value}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"adregnet register: error: argument {option}: " in err and "Traceback" not in err
    assert re.search(reason, err), err
    assert not out.exists()


def test_register_refuses_a_landmark_file_with_1_0_before_any_work(files, capsys, tmp_path):
    out = tmp_path / "out"
    expect_cli_error(["register", str(files["fixed"]), str(files["moving"]), "-o", str(out), "--fixed-landmarks",
                      str(files["good"]), "--moving-landmarks", str(files["typo"]), "--no-network", "-q"], capsys,
                     r"typo\.csv, line 3, column 2 \(y\): '2_2' holds '_', which Python would read as a digit "
                     r"separator \(1_0 as 10\); write it as a plain decimal number")
    assert_no_outputs(out)


def test_warp_refuses_points_with_1_0_and_writes_nothing(files, capsys, tmp_path):
    out = tmp_path / "mapped.csv"
    expect_cli_error(["warp", str(files["result"]), "--points", str(files["typo"]), "-o", str(out),
                      "--direction", "fixed-to-moving"], capsys, r"typo\.csv, line 3, column 2 \(y\): '2_2' holds '_'",
                     command="warp")
    assert not out.exists()
    assert main(["warp", str(files["result"]), "--points", str(files["good"]), "-o", str(out),
                 "--direction", "fixed-to-moving", "-q"]) == 0
    assert out.read_text().splitlines()[0] == "x,y,z"


@pytest.mark.parametrize("option, value", [("--workers", "1_0"), ("--threads", "1_0"), ("--threads-per-worker", "2.0"),
                                           ("--memory-per-worker", "1_0"), ("--regularization", "nan")])
def test_batch_settings_are_read_strictly(capsys, tmp_path, option, value):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("id,fixed,moving\n")
    with pytest.raises(SystemExit) as info:
        main(["batch", str(pairs), "-o", str(tmp_path / "out"), f"{option}={value}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {option}: '{value}'" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
