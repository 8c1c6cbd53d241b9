"""Hostile or unusual command-line input that earlier crashed with a traceback, ran for hours, gave a
result that was silently wrong, or destroyed or mixed up user files. Each case now gets one line
``adregnet <command>: error: ...`` naming the problem and the fix (text asserted), exit code 2 and
nothing written, or works.

In process through ``main()`` on 24^3 synthetic volumes; two tiny registrations (``fast``, no
network) check the output folder after a real run.
"""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetLib.cli.main import main
from ADRegNetLib.cli.outputs import INVERSE_FILES, OUTPUT_FILES, check_outputs, staged_output
from ADRegNetLib.io import read_image, read_landmarks, write_displacement_field, write_image, write_landmarks
from ADRegNetLib.io.image import Image
from ADRegNetLib.spatial.geometry import Geometry
from cli_helpers import assert_no_outputs, expect_cli_error

REPO = Path(__file__).resolve().parents[2]
SIZE = (24, 24, 24)
FIXED_GEOMETRY = Geometry(SIZE, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
MOVING_GEOMETRY = Geometry(SIZE, (2.0, 2.0, 2.0), (200.0, 0.0, 0.0))  # 200 mm away along x: no overlap


def _smooth(seed: int) -> np.ndarray:
    """(Z, Y, X) float32 blobs on a 24^3 grid: structure to register, thousands of distinct values."""
    rng = np.random.default_rng(seed)
    coarse = sitk.GetImageFromArray(rng.normal(0.0, 1.0, (6, 6, 6)).astype(np.float32))
    coarse.SetSpacing((8.0, 8.0, 8.0))
    fine = sitk.Resample(coarse, list(SIZE), sitk.Transform(), sitk.sitkBSpline, (-0.0, 0.0, 0.0), (2.0, 2.0, 2.0))
    return (100.0 + 40.0 * sitk.GetArrayFromImage(fine)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    f: dict[str, Path] = {"dir": d}
    fixed = _smooth(0)
    moving = np.roll(fixed, 1, axis=2) + np.random.default_rng(1).normal(0, 1, fixed.shape).astype(np.float32)
    for name, array, geometry in (("fixed", fixed, FIXED_GEOMETRY), ("moving", moving, FIXED_GEOMETRY),
                                  ("moving_far", moving, MOVING_GEOMETRY)):
        f[name] = d / f"{name}.nii.gz"
        write_image(Image(array, geometry, name), f[name])
    # whole numbers with few values: the engine warns that it looks like a label map (and goes on)
    f["moving_steps"] = d / "moving_steps.nii.gz"
    write_image(Image(np.round(moving / 20.0) * 20.0, FIXED_GEOMETRY, "steps"), f["moving_steps"])
    f["ct_like"] = d / "ct_like.nii.gz"  # a scan in HU given where a mask or label map belongs
    write_image(Image(np.round(fixed * 10.0 - 1000.0).astype(np.int64), FIXED_GEOMETRY, "ct"), f["ct_like"])
    f["mask_negative"] = d / "mask_negative.nii.gz"
    write_image(Image(-(fixed > 100.0).astype(np.int64), FIXED_GEOMETRY, "m"), f["mask_negative"])
    f["mask"] = d / "mask.nii.gz"
    write_image(Image((fixed > 100.0).astype(np.int64), FIXED_GEOMETRY, "m"), f["mask"])
    f["lm_fixed"], f["lm_moving"] = d / "lm_fixed.csv", d / "lm_moving.csv"
    points = FIXED_GEOMETRY.index_to_physical(np.array([[4.0, 5.0, 6.0], [12.0, 12.0, 12.0], [18.0, 9.0, 15.0]]))
    write_landmarks(points, f["lm_fixed"])
    write_landmarks(points + [1.0, 0.0, 0.0], f["lm_moving"])
    for name, offset in (("to_moving", 200.0), ("to_moving_reversed", -200.0), ("far", 1e6)):
        t = sitk.TranslationTransform(3, (offset, 0.0, 0.0))
        f[name] = d / f"{name}.tfm"
        sitk.WriteTransform(t, str(f[name]))
    return f


def _register(files, *extra, fixed=None, moving=None, out=None) -> list[str]:
    return ["register", str(fixed or files["fixed"]), str(moving or files["moving"]), "-o",
            str(out or files["dir"] / "out"), "-q", "--quality", "fast", "--no-network", "--device", "cpu",
            "--threads", "1", *map(str, extra)]


@pytest.fixture(autouse=True)
def _nothing_written(files):
    yield
    assert_no_outputs(files["dir"] / "out")


# ---------------------------------------------------------------------------------- entry point
def test_python_dash_m_cli_runs_the_command():
    """Before: 'No module named ADRegNetLib.cli.__main__'."""
    proc = subprocess.run([sys.executable, "-m", "ADRegNetLib.cli", "register", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: adregnet register" in proc.stdout and "--overwrite" in proc.stdout


# ------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("extra, pattern", [
    # before: 0 + 1 = 0 made SimpleITK seed the pre-alignment from the clock: a different result every run
    (("--seed", "-1"), r"--seed must be a whole number from 0 to 4294967294, got -1$"),
    # before: a raw OverflowError traceback from SimpleITK after the inputs were read
    (("--seed", str(2 ** 32 - 1)), r"--seed must be a whole number from 0 to 4294967294, got 4294967295$"),
    # before: 'Overflow when unpacking long'
    (("--threads", str(10 ** 11)), r"--threads 100000000000 is more than 1024; this machine has \d+ CPU cores: give "
                                   r"at most that many \(0 = torch's choice\)$"),
    # before: 1e30 raised a MemoryError traceback (53 PiB), 1e7 ran past any timeout
    (("--regularization", "1e7"), r"--regularization 1e\+07 is above 100: at 100 the smoothing is already wider than "
                                  r"any scan .* give at most 100 \(1 = default\)$"),
    (("--regularization", "1e-300"), r"--regularization 1e-300 is below 0.01: .* give at least 0.01"),
])
def test_absurd_settings_are_refused(files, capsys, extra, pattern):
    expect_cli_error(_register(files, *extra), capsys, pattern)


def test_more_threads_than_cores_is_warned_about():
    """Before: --threads 1000 on 2 cores ran without a word, 50 s instead of 7 s."""
    from ADRegNetLib.cli.register_cmd import check_threads

    cores = os.cpu_count() or 1
    with pytest.warns(UserWarning, match=rf"--threads {cores + 1} is more than this machine's {cores} CPU cores: .* "
                                         rf"give at most {cores}"):
        check_threads(cores + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_threads(cores)


@pytest.mark.parametrize("extra, pattern", [
    (("--regularization", "-1"), r"regularization must be a positive number \(1 = default\), got -1.0$"),
    (("--regularization", "1e9"), r"--regularization 1e\+09 is above 100"),
    (("--threads", "99999"), r"--threads 99999 is more than 1024; .*\(0 = automatic\)$"),
])
def test_batch_refuses_bad_settings_before_any_pair(files, capsys, tmp_path, extra, pattern):
    """Before: the cohort started and every pair failed on its own with the same error (exit 1)."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"id,fixed,moving\np1,{files['fixed']},{files['moving']}\n")
    expect_cli_error(["batch", str(pairs), "-o", str(tmp_path / "cohort"), "-q", *extra], capsys, pattern,
                  command="batch")
    assert not (tmp_path / "cohort").exists()


# ------------------------------------------------------------------------------- output folder
@pytest.mark.parametrize("command", ["register", "warp", "evaluate", "batch"])
def test_empty_output_path_is_refused(files, capsys, tmp_path, result, command, monkeypatch):
    """Before: ``register -o ''`` wrote every output into the working folder."""
    monkeypatch.chdir(tmp_path)
    argv = {"register": ["register", str(files["fixed"]), str(files["moving"]), "-o", ""], "warp": ["warp", str(result), "--image", str(files["moving"]), "-o", " "],
            "evaluate": ["evaluate", str(result), "-o", ""], "batch": ["batch", str(files["lm_fixed"]), "-o", ""]}[command]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "argument -o/--output: is empty; give the name of the output folder or file" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_dangling_symlink_as_output_folder(files, capsys, tmp_path):
    """Before: the whole registration ran, then a NotADirectoryError traceback."""
    link = tmp_path / "results"
    link.symlink_to(tmp_path / "gone" / "target")
    expect_cli_error(_register(files, out=link), capsys,
                  r"output path .*results is a symbolic link to .*gone/target, which does not exist; create that "
                  r"folder or choose another -o$")
    assert link.is_symlink() and not (tmp_path / "gone").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


@pytest.mark.parametrize("blocked", ["report.png", "displacement_inverse.nii.gz"])
def test_output_name_taken_by_a_folder_changes_nothing(files, capsys, tmp_path, blocked):
    """Before (with --overwrite): a traceback after the run, and the folder half replaced: new
    displacement.nii.gz beside the old transform.h5."""
    out = tmp_path / "previous"
    out.mkdir()
    for name in OUTPUT_FILES + INVERSE_FILES:
        if name != blocked:
            (out / name).write_text(f"old {name}")
    (out / blocked).mkdir()
    (out / blocked / "keep.txt").write_text("precious")
    extra = ("--overwrite", "--no-inverse") if blocked in INVERSE_FILES else ("--overwrite",)
    expect_cli_error(_register(files, *extra, out=out), capsys,
                  rf"{re.escape(blocked)} is a folder, not an output file of an earlier run; move it away or choose "
                  r"another -o folder \(it is never replaced, even with --overwrite\)$")
    assert (out / blocked / "keep.txt").read_text() == "precious"
    for name in OUTPUT_FILES + INVERSE_FILES:
        if name != blocked:
            assert (out / name).read_text() == f"old {name}"


def test_staged_folder_commit_checks_every_destination_first(tmp_path):
    """The move never starts when one destination is a folder (a folder made after check_outputs)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.txt").mkdir()
    with pytest.raises(Exception, match=r"b.txt is a folder, so the outputs cannot be moved into .*nothing was "
                                        r"changed there"):
        with staged_output(out) as tmp:
            (tmp / "a.txt").write_text("new")
            (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_new_output_folder_gets_the_users_umask_not_0700(tmp_path):
    """Before: the folder kept mkdtemp's mode 0700, so a group could not read the results."""
    old = os.umask(0o022)
    try:
        with staged_output(tmp_path / "out") as tmp:
            (tmp / "metrics.json").write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


def test_check_outputs_names_earlier_outputs_this_run_does_not_write(tmp_path):
    for name in INVERSE_FILES:
        (tmp_path / name).write_text("old")
    with pytest.raises(Exception, match=r"holds displacement_inverse.nii.gz, transform_inverse.h5 of an earlier run, "
                                        r"which this run does not write: they would not belong to the new result; "
                                        r"choose another -o folder or add --overwrite \(they are then removed\)$"):
        check_outputs(tmp_path, list(OUTPUT_FILES), [], overwrite=False)
    for name in OUTPUT_FILES:
        (tmp_path / name).write_text("old")
    with pytest.raises(Exception, match=r"already holds displacement.nii.gz, .*report.png; choose another -o folder "
                                        r"or add --overwrite$"):  # the files this run writes, as before
        check_outputs(tmp_path, list(OUTPUT_FILES), [], overwrite=False)
    assert check_outputs(tmp_path, list(OUTPUT_FILES), [], overwrite=True) == list(INVERSE_FILES)


def test_overwrite_without_inverse_removes_the_old_inverse_and_warns_once(files, capsys, tmp_path):
    """Before: --overwrite --no-inverse left the previous run's inverse beside the new forward field, and
    every warning raised during the run was printed twice."""
    out = tmp_path / "result"
    assert main(_register(files, out=out)) == 0
    assert all((out / n).is_file() for n in INVERSE_FILES)
    capsys.readouterr()
    assert main(_register(files, "--overwrite", "--no-inverse", moving=files["moving_steps"], out=out)) == 0
    captured = capsys.readouterr()
    assert not any((out / n).exists() for n in INVERSE_FILES)
    assert "removed displacement_inverse.nii.gz, transform_inverse.h5 of an earlier run" in captured.out
    assert json.loads((out / "metrics.json").read_text())["inputs"]["moving"] == str(files["moving_steps"])
    label_lines = [line for line in captured.err.splitlines() if "looks like a label map" in line]
    assert len(label_lines) == 1, captured.err
    (tmp_path / "made_by_mkdir").mkdir()
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE((tmp_path / "made_by_mkdir").stat().st_mode)


# ------------------------------------------------------------------------- masks and label maps
def test_mask_with_only_negative_values(files, capsys):
    """Before: 'the fixed mask does not overlap the fixed image in physical space' (it lies right on it)."""
    expect_cli_error(_register(files, "--mask-fixed", files["mask_negative"]), capsys,
                  r"--mask-fixed mask_negative.nii.gz has no voxel above 0 \(its values run from -1 to 0\); a mask "
                  r"marks the region of interest with values > 0: give a mask that marks it$")


@pytest.mark.parametrize("option, what", [("--mask-fixed", "mask"), ("--mask-moving", "mask"),
                                          ("--warp-labels", "label map")])
def test_scan_given_as_mask_or_label_map(files, capsys, option, what):
    """Before: a CT in HU (whole numbers) was taken as a mask (every voxel above 0 HU) or warped label by
    label, one per grey value."""
    expect_cli_error(_register(files, option, files["ct_like"]), capsys,
                  rf"{option} ct_like.nii.gz holds \d+ distinct values \(from -\d+ to \d+\), with negative values, "
                  rf"more than the 64 a label map holds: it looks like an intensity image \(a scan\), not a {what}")


# ----------------------------------------------------------------------------- initial transform
def test_initial_transform_that_maps_everything_outside(files, capsys):
    """Before: 'does not overlap the fixed image after pre-alignment ... give ... an initial alignment'."""
    expect_cli_error(_register(files, "--initial-transform", files["far"], moving=files["moving_far"]), capsys,
                  r"--initial-transform .*far.tfm maps the whole fixed image outside the moving image \(the fixed "
                  r"image's centre lands 999800 mm from the moving image's centre\); give the transform from fixed to "
                  r"moving space \(ITK's convention.*\) that belongs to these two images\.$")


def test_initial_transform_in_the_wrong_direction_says_so(files, capsys):
    expect_cli_error(_register(files, "--initial-transform", files["to_moving_reversed"], moving=files["moving_far"]),
                  capsys, r"maps the whole fixed image outside the moving image .* Its inverse does fit: the file "
                          r"probably holds the moving -> fixed transform; invert it")


# -------------------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def result(files) -> Path:
    """A result folder of zero fields: forward on the fixed grid, inverse on another (moving) grid."""
    folder = files["dir"] / "result"
    folder.mkdir()
    write_displacement_field(np.zeros((3, *FIXED_GEOMETRY.shape), np.float32), FIXED_GEOMETRY,
                             folder / "displacement.nii.gz")
    moving_grid = Geometry((20, 20, 20), (3.0, 3.0, 3.0), (-5.0, -5.0, -5.0))
    write_displacement_field(np.zeros((3, *moving_grid.shape), np.float32), moving_grid,
                             folder / "displacement_inverse.nii.gz")
    return folder


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
    write_image(Image((_smooth(0) > 100.0).astype(np.int64), Geometry(SIZE, (2.0, 2.0, 2.0), (1000.0, 0.0, 0.0)),
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
    image = sitk.GetImageFromArray(_smooth(3).astype(np.float64) * 1e300)
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(source))
    out = tmp_path / "warped.mha"
    assert main(["warp", str(result), "--image", str(source), "-o", str(out)]) == 0
    assert "overflow" not in capsys.readouterr().err
    warped = read_image(out, dtype=None).array
    assert warped.dtype == np.float64 and np.all(np.isfinite(warped)) and warped.max() > 1e300


def test_keep_initial_transform_uses_it_as_given(files, capsys, tmp_path):
    """By default the pre-alignment starts from --initial-transform and may refine it;
    --keep-initial-transform uses it exactly (no pre-alignment), and needs --initial-transform."""
    expect_cli_error(_register(files, "--keep-initial-transform"), capsys,
                     r"--keep-initial-transform keeps the transform given with --initial-transform; give that too$")
    for keep, out in ((False, tmp_path / "refined"), (True, tmp_path / "kept")):
        argv = _register(files, "--initial-transform", files["to_moving"], *(["--keep-initial-transform"] if keep else []),
                         moving=files["moving_far"], out=out)
        assert main(argv) == 0, capsys.readouterr().err
        prealignment = json.loads((out / "metrics.json").read_text())["prealignment"]
        assert prealignment["start"] == "the initial transform given by the user"
        assert prealignment["mode"] == ("none" if keep else "affine"), prealignment
