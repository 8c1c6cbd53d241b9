"""Hostile command-line input around the output folder: an empty -o, a dangling symbolic link, an output
name taken by a folder, earlier outputs the run does not write, the staged folder's commit and mode. Before,
these crashed after the run, left a folder half replaced or mixed two runs' files; now one clear line, exit
code 2 and nothing changed, or the run works (two tiny registrations, ``fast``, no network).
"""
from __future__ import annotations

import json
import os
import re
import stat

import pytest

from ADRegNetLib.cli.main import main
from ADRegNetLib.cli.outputs import INVERSE_FILES, OUTPUT_FILES, check_outputs, staged_output
from cli_helpers import expect_cli_error
from hostile_cli_helpers import files, nothing_written, register_argv, result  # noqa: F401 - fixtures


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
    expect_cli_error(register_argv(files, out=link), capsys,
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
    expect_cli_error(register_argv(files, *extra, out=out), capsys,
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
    assert main(register_argv(files, out=out)) == 0
    assert all((out / n).is_file() for n in INVERSE_FILES)
    capsys.readouterr()
    assert main(register_argv(files, "--overwrite", "--no-inverse", moving=files["moving_steps"], out=out)) == 0
    captured = capsys.readouterr()
    assert not any((out / n).exists() for n in INVERSE_FILES)
    assert "removed displacement_inverse.nii.gz, transform_inverse.h5 of an earlier run" in captured.out
    assert json.loads((out / "metrics.json").read_text())["inputs"]["moving"] == str(files["moving_steps"])
    label_lines = [line for line in captured.err.splitlines() if "looks like a label map" in line]
    assert len(label_lines) == 1, captured.err
    (tmp_path / "made_by_mkdir").mkdir()
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE((tmp_path / "made_by_mkdir").stat().st_mode)


@pytest.mark.skipif(not os.path.isdir("/proc/sys"), reason="needs Linux's /proc, a folder nobody may write in")
@pytest.mark.parametrize("out", ["/proc/adregnet_out", "/proc/sys/adregnet_out", "/proc/sys"])
def test_an_unwritable_output_folder_is_refused_before_any_work(files, capsys, result, out):
    """Before: ``os.access`` said yes to root on /proc, the registration ran to its end and then failed to
    write ('No such file or directory: /proc/.adregnet_out.partial-...'); batch named no fix. Now every command
    tries to create something there first."""
    pattern = r"cannot (write to|make) the output folder .*\(.+\); choose a writable -o folder$"
    expect_cli_error(register_argv(files, out=out), capsys, pattern)
    pairs = files["dir"] / "pairs_unwritable.csv"
    pairs.write_text(f"id,fixed,moving\np1,{files['fixed']},{files['moving']}\n")
    expect_cli_error(["batch", str(pairs), "-o", out, "-q"], capsys, pattern, command="batch")
    if out != "/proc/sys":
        expect_cli_error(["warp", str(result), "--image", str(files["moving"]), "-o", f"{out}.nii.gz"], capsys,
                         r"cannot write .*adregnet_out\.nii\.gz \(.+\); choose -o in a writable folder$", command="warp")
        expect_cli_error(["evaluate", str(result), "-o", f"{out}.json"], capsys,
                         r"cannot write .*adregnet_out\.json \(.+\); choose -o in a writable folder$", command="evaluate")


def _chattr(flag: str, folder) -> bool:
    """Sets a file-system attribute (+i immutable, +a append-only); False where it cannot (not root, not ext4)."""
    import shutil as _shutil
    import subprocess

    if not _shutil.which("chattr"):
        return False
    return subprocess.run(["chattr", flag, str(folder)], capture_output=True).returncode == 0


def test_an_output_folder_in_an_immutable_folder_is_refused_before_any_work(files, capsys, tmp_path):
    """Before: an existing -o folder inside a folder nobody may change passed the check (the folder itself is
    writable), the registration ran, and staging its results beside it failed with a PermissionError traceback."""
    project = tmp_path / "project"
    (project / "out").mkdir(parents=True)
    if not _chattr("+i", project):
        pytest.skip("chattr +i is not available here (needs root on ext2/3/4)")
    try:
        expect_cli_error(register_argv(files, out=project / "out"), capsys,
                         r"cannot write to the output folder .*project/out, whose results are first made in "
                         r".*project \(.+\); choose a writable -o folder$")
    finally:
        _chattr("-i", project)


def test_file_outputs_go_into_an_append_only_folder(files, capsys, tmp_path, result):
    """Before: the write check made and removed a folder, which an append-only folder refuses to remove, so
    ``evaluate -o`` there was refused (and each try left a folder behind); files can be written there."""
    folder = tmp_path / "append_only"
    folder.mkdir()
    if not _chattr("+a", folder):
        pytest.skip("chattr +a is not available here (needs root on ext2/3/4)")
    try:
        assert main(["evaluate", str(result), "-o", str(folder / "metrics.json"), "-q"]) == 0
        assert (folder / "metrics.json").is_file()
    finally:
        _chattr("-a", folder)
