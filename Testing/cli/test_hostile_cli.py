"""Hostile or unusual command-line input that earlier crashed with a traceback, ran for hours, gave a
result that was silently wrong, or destroyed or mixed up user files: the entry point, settings, masks and
label maps, initial transforms. Each case now gets one line ``adregnet <command>: error: ...`` naming the
problem and the fix (text asserted), exit code 2 and nothing written, or works.

In process through ``main()`` on 24^3 synthetic volumes (``hostile_cli_helpers``); the output folder,
``evaluate`` and ``warp`` cases are in test_hostile_outputs_cli.py and test_hostile_evaluate_warp_cli.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from ADRegNetLib.cli.main import main
from cli_helpers import expect_cli_error
from hostile_cli_helpers import REPO, files, nothing_written, register_argv  # noqa: F401 - fixtures


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
    expect_cli_error(register_argv(files, *extra), capsys, pattern)


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


# ------------------------------------------------------------------------- masks and label maps
def test_mask_with_only_negative_values(files, capsys):
    """Before: 'the fixed mask does not overlap the fixed image in physical space' (it lies right on it)."""
    expect_cli_error(register_argv(files, "--mask-fixed", files["mask_negative"]), capsys,
                  r"--mask-fixed mask_negative.nii.gz has no voxel above 0 \(its values run from -1 to 0\); a mask "
                  r"marks the region of interest with values > 0: give a mask that marks it$")


@pytest.mark.parametrize("option, what", [("--mask-fixed", "mask"), ("--mask-moving", "mask"),
                                          ("--warp-labels", "label map")])
def test_scan_given_as_mask_or_label_map(files, capsys, option, what):
    """Before: a CT in HU (whole numbers) was taken as a mask (every voxel above 0 HU) or warped label by
    label, one per grey value."""
    expect_cli_error(register_argv(files, option, files["ct_like"]), capsys,
                  rf"{option} ct_like.nii.gz holds \d+ distinct values \(from -\d+ to \d+\), with negative values, "
                  rf"more than the 64 a label map holds: it looks like an intensity image \(a scan\), not a {what}")


# ----------------------------------------------------------------------------- initial transform
def test_initial_transform_that_maps_everything_outside(files, capsys):
    """Before: 'does not overlap the fixed image after pre-alignment ... give ... an initial alignment'."""
    expect_cli_error(register_argv(files, "--initial-transform", files["far"], moving=files["moving_far"]), capsys,
                  r"--initial-transform .*far.tfm maps the whole fixed image outside the moving image \(the fixed "
                  r"image's centre lands 999800 mm from the moving image's centre\); give the transform from fixed to "
                  r"moving space \(ITK's convention.*\) that belongs to these two images\.$")


def test_initial_transform_in_the_wrong_direction_says_so(files, capsys):
    expect_cli_error(register_argv(files, "--initial-transform", files["to_moving_reversed"], moving=files["moving_far"]),
                  capsys, r"maps the whole fixed image outside the moving image .* Its inverse does fit: the file "
                          r"probably holds the moving -> fixed transform; invert it")


def test_keep_initial_transform_uses_it_as_given(files, capsys, tmp_path):
    """By default the pre-alignment starts from --initial-transform and may refine it;
    --keep-initial-transform uses it exactly (no pre-alignment), and needs --initial-transform."""
    expect_cli_error(register_argv(files, "--keep-initial-transform"), capsys,
                     r"--keep-initial-transform keeps the transform given with --initial-transform; give that too$")
    for keep, out in ((False, tmp_path / "refined"), (True, tmp_path / "kept")):
        argv = register_argv(files, "--initial-transform", files["to_moving"], *(["--keep-initial-transform"] if keep else []),
                         moving=files["moving_far"], out=out)
        assert main(argv) == 0, capsys.readouterr().err
        prealignment = json.loads((out / "metrics.json").read_text())["prealignment"]
        assert prealignment["start"] == "the initial transform given by the user"
        assert prealignment["mode"] == ("none" if keep else "affine"), prealignment
