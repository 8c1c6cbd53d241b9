"""Bad input at the command line: ``adregnet register|evaluate`` must answer every case with ONE
line ``adregnet <command>: error: <what is wrong and what to do>`` on stderr, exit code 2, no
traceback, and no output files written. The exact message text is asserted.

All calls run ``main()`` in process (no subprocess start-up per case) on small files written once
per module; every case fails before any registration work.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetLib.cli.main import main
from ADRegNetLib.io import read_image, write_image, write_landmarks
from ADRegNetLib.io.image import Image
from ADRegNetLib.spatial.geometry import Geometry
from cli_helpers import assert_no_outputs, expect_cli_error

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "SampleData"


def _write_sitk(array: np.ndarray, spacing, path: Path) -> Path:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing([float(s) for s in spacing])
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good inputs (a 40x40x32 crop of the demo CT, landmark pairs inside it) and one file per bad case."""
    src = SAMPLE / "lung_fixed.nii.gz"
    if not src.is_file():
        pytest.skip("demo data Resources/SampleData/lung_fixed.nii.gz missing")
    d = tmp_path_factory.mktemp("bad_inputs")
    full = read_image(src)
    g = full.geometry
    origin = g.index_to_physical(np.array([[8, 20, 16]], dtype=np.float64))[0]
    crop = Image(np.ascontiguousarray(full.array[16:48, 20:60, 8:48]), Geometry((40, 40, 32), g.spacing, origin),
                 "crop")
    f: dict[str, Path] = {"dir": d}
    f["good"] = d / "good.nii.gz"
    write_image(crop, f["good"])
    pts = crop.geometry.index_to_physical(np.array([[5, 5, 5], [20, 20, 10], [30, 12, 25]], dtype=np.float64))
    f["lm3"], f["lm2"] = d / "lm3.csv", d / "lm2.csv"
    write_landmarks(pts, f["lm3"])
    write_landmarks(pts[:2], f["lm2"])
    outside = pts.copy()
    outside[2] += [0.0, 0.0, 1000.0]
    f["lm_out"] = d / "lm_out.csv"
    write_landmarks(outside, f["lm_out"])
    f["lm_empty"] = d / "lm_empty.csv"
    f["lm_empty"].write_text("x,y,z\n")
    f["lm_bad"] = d / "lm_bad.csv"
    f["lm_bad"].write_text("x,y,z\n1.0,2.0\n")
    rng = np.random.default_rng(0)
    f["2d"] = d / "2d.nii.gz"
    sitk.WriteImage(sitk.Image([32, 32], sitk.sitkFloat32) + 1.0, str(f["2d"]))
    f["4d"] = d / "4d.nii.gz"
    sitk.WriteImage(sitk.Image([20, 20, 20, 3], sitk.sitkFloat32), str(f["4d"]))
    f["rgb"] = d / "rgb.nii.gz"
    sitk.WriteImage(sitk.Image([20, 20, 20], sitk.sitkVectorUInt8, 3), str(f["rgb"]))
    f["constant"] = _write_sitk(np.full((20, 20, 20), 5.0, np.float32), (2, 2, 2), d / "constant.nii.gz")
    nan = rng.normal(0, 1, (20, 20, 20)).astype(np.float32)
    nan[1, 2, 3] = np.nan
    f["nan"] = _write_sitk(nan, (2, 2, 2), d / "nan.nrrd")  # NRRD keeps NaN exactly
    f["spacing100"] = _write_sitk(rng.normal(0, 1, (20, 20, 20)).astype(np.float32), (100, 100, 100), d / "s100.nii.gz")
    f["aniso"] = _write_sitk(rng.normal(0, 1, (20, 20, 20)).astype(np.float32), (0.5, 0.5, 30), d / "aniso.nii.gz")
    f["tiny"] = _write_sitk(rng.normal(0, 1, (8, 24, 24)).astype(np.float32), (2, 2, 2), d / "tiny.nii.gz")
    f["garbage"] = d / "garbage.nii.gz"
    f["garbage"].write_bytes(b"definitely not a NIfTI file " * 40)
    f["empty"] = d / "empty.nii.gz"
    f["empty"].write_bytes(b"")
    f["intensity_as_labels"] = _write_sitk(rng.normal(0, 1, (32, 40, 40)).astype(np.float32), g.spacing,
                                           d / "intensity.nii.gz")
    real_weights = REPO / "Resources" / "weights" / "adregnet_default.pt"
    f["weights_truncated"] = d / "truncated.pt"
    f["weights_truncated"].write_bytes(real_weights.read_bytes()[:3000] if real_weights.is_file() else b"PK\x03\x04")
    f["weights_text"] = d / "weights.pt"
    f["weights_text"].write_text("these are not weights")
    return f


def _register(files, *extra, fixed=None, moving=None) -> list[str]:
    out = files["dir"] / "out"
    return ["register", str(fixed or files["good"]), str(moving or files["good"]), "-o", str(out), "-q",
            "--quality", "fast", "--no-network", "--device", "cpu", *map(str, extra)]


@pytest.fixture(autouse=True)
def _no_outputs_left(files):
    """After every failing case the output folder holds none of the output files."""
    yield
    assert_no_outputs(files["dir"] / "out")


# ----------------------------------------------------------------------------------- images
@pytest.mark.parametrize("case, role, pattern", [
    ("2d", "fixed", r"the fixed image is a single slice \(size \[32, 32, 1\]\) and the moving image is not: "
                    r"slice-to-volume registration is not supported; give two single slices \(2-D images\) to "
                    r"register in their plane, or two volumes$"),
    ("4d", "moving", r"4d.nii.gz: is 4-D with size \(20, 20, 20, 3\); registration needs a 3-D volume \(for a time "
                     r"series, extract one 3-D frame first\)$"),
    ("rgb", "fixed", r"rgb.nii.gz: has 3 components per voxel \(a vector/RGB image\); registration needs a scalar "
                     r"\(grayscale\) volume: convert it to grayscale first$"),
    ("constant", "moving", r"moving image 'constant.nii.gz' is constant \(every voxel is 5\); it holds no structure "
                           r"to register: check that the right volume was loaded$"),
    ("nan", "fixed", r"fixed image 'nan.nrrd' has 1 NaN or infinite voxels \(of 8000\); replace them \(e.g. with the "
                     r"background value\) before registering$"),
    ("spacing100", "fixed", r"fixed image 's100.nii.gz' has a voxel size of 100 mm along x \(spacing \[100.0, 100.0, "
                            r"100.0\] mm\), more than 50 mm; the header is probably in cm or m: fix the spacing$"),
    ("aniso", "moving", r"moving image 'aniso.nii.gz' has spacing \[0.5, 0.5, 30.0\] mm, an anisotropy of 60.0 .*"
                        r"resample the image to a less anisotropic grid$"),
    ("tiny", "fixed", r"fixed image 'tiny.nii.gz' has only 8 voxels along z \(size \[24, 24, 8\] x, y, z\); at least "
                      r"16 are needed on every axis: is this a 2-D slice or a thin slab\?$"),
    ("garbage", "moving", r"garbage.nii.gz: cannot be read as an image \(.+\); its name says NIfTI, but its contents "
                          r"are not a valid NIfTI file \(damaged, or another kind of file under that name\): "
                          r"re-export or re-copy it$"),
    ("empty", "fixed", r"empty.nii.gz: the file is empty \(0 bytes\); it was not written completely: re-export or re-copy it$"),
])
def test_bad_image_files(files, capsys, case, role, pattern):
    kw = {role: files[case]}
    if role == "fixed" and case in ("constant", "nan", "spacing100", "aniso", "tiny"):
        kw["moving"] = files["good"]
    expect_cli_error(_register(files, **kw), capsys, pattern)


def test_missing_image_file(files, capsys):
    missing = files["dir"] / "no_such_scan.nii.gz"
    expect_cli_error(_register(files, moving=missing), capsys,
                  rf"{re.escape(str(missing))}: no such file; check the path$")


def test_folder_without_dicom(files, capsys):
    empty_dir = files["dir"] / "not_dicom"
    empty_dir.mkdir(exist_ok=True)
    expect_cli_error(_register(files, fixed=empty_dir), capsys,
                  r"not_dicom: is a folder without a DICOM series; give an image file")


# -------------------------------------------------------------------------------- landmarks
def test_landmark_counts_differ(files, capsys):
    expect_cli_error(_register(files, "--fixed-landmarks", files["lm3"], "--moving-landmarks", files["lm2"]), capsys,
                  r"fixed and moving landmark counts differ: 3 fixed vs 2 moving; pairs are matched by order, so both "
                  r"files must list the same landmarks$")


def test_only_one_landmark_file(files, capsys):
    expect_cli_error(_register(files, "--fixed-landmarks", files["lm3"]), capsys,
                  r"give both --fixed-landmarks and --moving-landmarks \(pairs match by order\), or neither$")


def test_empty_landmark_file(files, capsys):
    expect_cli_error(_register(files, "--fixed-landmarks", files["lm_empty"], "--moving-landmarks", files["lm3"]), capsys,
                  r"lm_empty.csv: holds no landmark points$")


def test_malformed_landmark_file(files, capsys):
    expect_cli_error(_register(files, "--fixed-landmarks", files["lm3"], "--moving-landmarks", files["lm_bad"]), capsys,
                  r"lm_bad.csv, line 2: expected 3 columns, got 2")


def test_missing_landmark_file(files, capsys):
    expect_cli_error(_register(files, "--fixed-landmarks", files["dir"] / "gone.csv", "--moving-landmarks", files["lm3"]),
                  capsys, r"gone.csv: no such landmark file$")


def test_landmark_outside_the_image(files, capsys):
    expect_cli_error(_register(files, "--fixed-landmarks", files["lm3"], "--moving-landmarks", files["lm_out"]), capsys,
                  r"moving landmark 2 at \[.*\] mm \(LPS\) lies \d+\.\d\d mm outside the moving image .*1 of 3 "
                  r"points are outside\. Check that the landmarks belong to this image\.$")


# --------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("extra, pattern", [
    (("--preset", "liver"), r"argument --preset: invalid choice: 'liver' \(choose from .*'lung-ct'"),
    (("--quality", "ultra"), r"argument --quality: invalid choice: 'ultra' \(choose from .*'fast'"),
    (("--regularization", "abc"), r"argument --regularization: 'abc' is not a number; write it as a plain decimal "
                                  r"number"),
    (("--contrast", "t2"), r"argument --contrast: invalid choice: 't2' \(choose from .*'different'"),
])
def test_argparse_rejects_bad_choices(files, capsys, extra, pattern):
    with pytest.raises(SystemExit) as exit_info:
        main(_register(files, *extra))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(r"adregnet register: error: " + pattern, err), err


@pytest.mark.parametrize("value", ["0", "-1.5"])  # 'nan' is refused as no finite number (test_numbers_cli.py)
def test_regularization_must_be_positive(files, capsys, value):
    expect_cli_error(_register(files, "--regularization", value), capsys,
                  rf"regularization must be a positive number \(1 = default\), got {re.escape(str(float(value)))}$")


def test_unknown_device(files, capsys):
    expect_cli_error(_register(files, "--device", "tpu"), capsys, r"unknown device 'tpu'; use 'auto', 'cpu' or 'cuda'$")


def test_negative_threads(files, capsys):
    expect_cli_error(_register(files, "--threads", "-2"), capsys,
                  r"--threads must be a positive number of CPU threads \(0 = torch's choice\), got -2$")


@pytest.mark.parametrize("case", ["weights_truncated", "weights_text"])
def test_bad_weights_file_names_the_file(files, capsys, case):
    argv = [a for a in _register(files, "--weights", files[case]) if a != "--no-network"]
    expect_cli_error(argv, capsys, rf"cannot read AD-RegNet weights {re.escape(str(files[case]))}: the file is truncated "
                                r"or not a torch checkpoint \((not a file of tensors torch can load safely|torch: .+)\)\. Give a \.pt file saved "
                                r"by adregnet train .*copy the file again, or retrain it\.$")


def test_missing_weights_file(files, capsys):
    gone = files["dir"] / "gone.pt"
    argv = [a for a in _register(files, "--weights", gone) if a != "--no-network"]
    expect_cli_error(argv, capsys, rf"AD-RegNet weights not found: {re.escape(str(gone))}\. Train them with")


def test_intensity_image_given_as_labels_fails_before_registering(files, capsys):
    expect_cli_error(_register(files, "--warp-labels", files["intensity_as_labels"]), capsys,
                  r"intensity.nii.gz: expected a label map \(whole numbers\), but the voxels have fractional values "
                  r"\(an intensity image\?\); give the segmentation file instead$")


def test_intensity_image_given_as_mask(files, capsys):
    expect_cli_error(_register(files, "--mask-fixed", files["intensity_as_labels"]), capsys,
                  r"intensity.nii.gz: expected a label map \(whole numbers\)")


# --------------------------------------------------------------------------------- evaluate
def test_evaluate_missing_result(files, capsys):
    gone = files["dir"] / "no_result"
    expect_cli_error(["evaluate", str(gone)], capsys,
                  rf"{re.escape(str(gone))} does not exist; give a displacement.nii.gz / "
                  r"transform.h5 or an output folder of adregnet register$", command="evaluate")


def test_evaluate_needs_both_landmark_files(files, capsys):
    field = files["dir"] / "field.nii.gz"
    disp = sitk.Image([20, 20, 20], sitk.sitkVectorFloat64, 3)
    sitk.WriteImage(disp, str(field))
    expect_cli_error(["evaluate", str(field), "--fixed-landmarks", str(files["lm3"])], capsys,
                  r"give both --fixed-landmarks and --moving-landmarks$", command="evaluate")
