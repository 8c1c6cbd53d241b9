"""Hostile input to ``adregnet evaluate`` and ``adregnet warp``: outputs that are inputs, folders or existing
files, voxel-index landmarks without a grid, label maps on other grids, scans given as label maps, values
beyond float32. Each case now gets one clear line, exit code 2 and nothing written, or works; in process
through ``main()`` on a result folder of zero fields (``hostile_cli_helpers.result``).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetLib.cli.main import main
from ADRegNetLib.io import read_image, read_landmarks, write_image, write_landmarks
from ADRegNetLib.io.image import Image
from ADRegNetLib.spatial.geometry import Geometry
from cli_helpers import expect_cli_error
from hostile_cli_helpers import (FIXED_GEOMETRY, MOVING_GEOMETRY, SIZE, files, nothing_written, result,  # noqa: F401
                                 smooth)


# -------------------------------------------------------------------------------------- evaluate
def test_evaluate_never_overwrites_an_input(files, capsys, tmp_path, result):
    """Before: -o equal to a landmark file replaced it with the metrics JSON."""
    landmarks = tmp_path / "lm.csv"
    landmarks.write_bytes(files["lm_fixed"].read_bytes())
    expect_cli_error(["evaluate", str(result), "--fixed-landmarks", str(landmarks), "--moving-landmarks",
                   str(files["lm_moving"]), "-o", str(landmarks)], capsys,
                  r"-o .*lm.csv is the input .*lm.csv; choose another file \(inputs are never overwritten\)$",
                  command="evaluate")
    assert landmarks.read_bytes() == files["lm_fixed"].read_bytes()


def test_evaluate_output_folder_or_existing_file(capsys, tmp_path, result):
    """Before: -o FOLDER gave an IsADirectoryError traceback; an existing file was replaced silently."""
    expect_cli_error(["evaluate", str(result), "-o", str(tmp_path)], capsys,
                  r"-o .* is a folder; give the name of the JSON file to write$", command="evaluate")
    existing = tmp_path / "eval.json"
    existing.write_text("keep")
    expect_cli_error(["evaluate", str(result), "-o", str(existing)], capsys,
                  r"eval.json already exists; choose another -o file or add --overwrite$", command="evaluate")
    assert existing.read_text() == "keep"
    assert main(["evaluate", str(result), "-o", str(existing), "--overwrite"]) == 0
    assert "jacobian" in json.loads(existing.read_text())


def test_evaluate_dirlab_moving_landmarks_use_the_inverse_fields_grid(files, capsys, tmp_path, result):
    """Before: 'pass the image geometry to convert them to mm', which a command-line user cannot do."""
    index = np.array([[1, 1, 1], [5, 6, 7]])  # 1-based DIR-Lab voxel indices
    path = tmp_path / "lm.txt"
    path.write_text("\n".join(" ".join(map(str, row)) for row in index) + "\n")
    capsys.readouterr()
    assert main(["evaluate", str(result), "--fixed-landmarks", str(path), "--moving-landmarks", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    fixed_mm = FIXED_GEOMETRY.index_to_physical(index - 1.0)
    moving_mm = Geometry((20, 20, 20), (3.0, 3.0, 3.0), (-5.0, -5.0, -5.0)).index_to_physical(index - 1.0)
    np.testing.assert_allclose(out["tre_before"]["per_landmark"], np.linalg.norm(fixed_mm - moving_mm, axis=1),
                               atol=1e-4)
    no_inverse = tmp_path / "forward_only"
    no_inverse.mkdir()
    (no_inverse / "displacement.nii.gz").write_bytes((result / "displacement.nii.gz").read_bytes())
    expect_cli_error(["evaluate", str(no_inverse), "--fixed-landmarks", str(path), "--moving-landmarks", str(path)],
                  capsys, r"--moving-landmarks .*lm.txt holds voxel indices of the moving image \(DIR-Lab \.txt or an "
                          r"elastix 'index' file\), and .*forward_only has no displacement_inverse.nii.gz .* give "
                          r"--moving-image \(the image they were placed on\), or the moving landmarks in mm",
                  command="evaluate")


def test_evaluate_voxel_index_landmarks_with_moving_image(files, capsys, tmp_path, result):
    """Before: an elastix 'index' file as --moving-landmarks was refused with 'pass the image geometry',
    which evaluate had no option for; --moving-image now gives the grid (also without an inverse field)."""
    index = np.array([[0, 0, 0], [4, 5, 6]])  # 0-based, as elastix writes them
    elastix = tmp_path / "moving_index.txt"
    elastix.write_text("index\n2\n" + "\n".join(" ".join(map(str, row)) for row in index) + "\n")
    fixed_csv = tmp_path / "fixed.csv"
    write_landmarks(FIXED_GEOMETRY.index_to_physical(index.astype(float)), fixed_csv)
    no_inverse = tmp_path / "forward_only"
    no_inverse.mkdir()
    (no_inverse / "displacement.nii.gz").write_bytes((result / "displacement.nii.gz").read_bytes())
    args = ["evaluate", str(no_inverse), "--fixed-landmarks", str(fixed_csv), "--moving-landmarks", str(elastix)]
    expect_cli_error(args, capsys, r"elastix 'index' file\), and .*forward_only has no displacement_inverse.nii.gz",
                     command="evaluate")
    capsys.readouterr()
    assert main(args + ["--moving-image", str(files["moving_far"])]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = np.linalg.norm(FIXED_GEOMETRY.index_to_physical(index.astype(float))
                              - MOVING_GEOMETRY.index_to_physical(index.astype(float)), axis=1)
    np.testing.assert_allclose(out["tre_before"]["per_landmark"], expected, atol=1e-4)  # 200 mm along x
    np.testing.assert_allclose(expected, 200.0)


def test_evaluate_fixed_labels_on_another_grid(files, capsys, tmp_path, result):
    """Before: 'labels_a and labels_b must have the same shape', or with equal shapes a Dice of voxels
    that are not at the same place."""
    shifted = tmp_path / "labels_shifted.nii.gz"
    write_image(Image(np.ones(FIXED_GEOMETRY.shape, np.int64), Geometry(SIZE, (2.0, 2.0, 2.0), (10.0, 0.0, 0.0)),
                      "l"), shifted)
    expect_cli_error(["evaluate", str(result), "--fixed-labels", str(shifted), "--moving-labels", str(files["mask"])],
                  capsys, r"--fixed-labels .*labels_shifted.nii.gz is on a grid of \[24, 24, 24\] voxels at origin "
                          r"\[10.0, 0.0, 0.0\] mm.*but the result's fixed grid is \[24, 24, 24\] voxels at origin "
                          r"\[0.0, 0.0, 0.0\] mm.*Dice compares voxel by voxel", command="evaluate")


def test_evaluate_refuses_scans_as_label_maps_and_labels_elsewhere(files, capsys, tmp_path, result):
    """Before: two intensity images as --fixed/--moving-labels gave 'Dice 0.006 -> 0.007 (2165 labels)', and a
    moving label map 1000 mm away 'Dice 0.000 -> 0.000', both with exit 0."""
    expect_cli_error(["evaluate", str(result), "--fixed-labels", str(files["ct_like"]), "--moving-labels",
                      str(files["mask"])], capsys,
                     r"--fixed-labels ct_like.nii.gz holds \d+ distinct values .* it looks like an intensity image \(a "
                     r"scan\), not a label map", command="evaluate")
    far = tmp_path / "labels_far.nii.gz"
    write_image(Image((smooth(0) > 100.0).astype(np.int64), Geometry(SIZE, (2.0, 2.0, 2.0), (1000.0, 0.0, 0.0)),
                      "far"), far)
    expect_cli_error(["evaluate", str(result), "--fixed-labels", str(files["mask"]), "--moving-labels", str(far)],
                     capsys, r"--moving-labels .*labels_far.nii.gz: no label lands on the fixed grid, neither as "
                             r"placed nor through the transform", command="evaluate")
    capsys.readouterr()
    assert main(["evaluate", str(result), "--fixed-labels", str(files["mask"]), "--moving-labels",
                 str(files["mask"])]) == 0
    assert json.loads(capsys.readouterr().out)["dice_before"]["mean"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ warp
def test_warp_dirlab_points_use_the_fields_grid(capsys, tmp_path, result):
    """Before: 'pass the image geometry to convert them to mm'."""
    path = tmp_path / "lm.txt"
    path.write_text("3 4 5\n10 11 12\n")
    out = tmp_path / "mapped.csv"
    assert main(["warp", str(result), "--points", str(path), "-o", str(out), "--direction", "fixed-to-moving"]) == 0
    expected = FIXED_GEOMETRY.index_to_physical(np.array([[2.0, 3.0, 4.0], [9.0, 10.0, 11.0]]))
    np.testing.assert_allclose(read_landmarks(out), expected, atol=1e-9)  # zero field: the points themselves


def test_warp_refuses_a_scan_as_labels(files, capsys, tmp_path, result):
    expect_cli_error(["warp", str(result), "--labels", str(files["ct_like"]), "-o", str(tmp_path / "w.nii.gz")], capsys,
                  r"--labels ct_like.nii.gz holds \d+ distinct values .*not a label map; give the segmentation file$",
                  command="warp")
    assert not (tmp_path / "w.nii.gz").exists()


def test_warp_keeps_float64_values_beyond_float32(capsys, tmp_path, result):
    """Before: 'overflow encountered in cast' and an output full of inf."""
    source = tmp_path / "huge.mha"
    image = sitk.GetImageFromArray(smooth(3).astype(np.float64) * 1e300)
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(source))
    out = tmp_path / "warped.mha"
    assert main(["warp", str(result), "--image", str(source), "-o", str(out)]) == 0
    assert "overflow" not in capsys.readouterr().err
    warped = read_image(out, dtype=None).array
    assert warped.dtype == np.float64 and np.all(np.isfinite(warped)) and warped.max() > 1e300
