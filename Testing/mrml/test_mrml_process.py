"""Child-process runner: progress lines, cancel kills the whole process tree, temp folder removed, no console
window on Windows, robust output reading (defect 9 of issue 14), files through ADRegNetLib.io."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.engine.api import RegistrationCancelled
from ADRegNetLib.spatial.image import Image
from ADRegNetMRML.process import (
    CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, ChildProcessError, ChildProcessRunner, parse_progress_line, popen_options,
    run_child,
)
from mrml_helpers import blob_image, oblique_geometry


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_parse_progress_lines():
    assert parse_progress_line("<filter-progress>0.25</filter-progress>") == (0.25, None, None)
    assert parse_progress_line("<filter-progress>1.7</filter-progress>")[0] == 1.0
    assert parse_progress_line("<filter-comment> network </filter-comment>") == (None, "network", None)
    assert parse_progress_line("<filter-error>bad spacing</filter-error>") == (None, None, "bad spacing")
    assert parse_progress_line("plain log line") == (None, None, None)


def test_progress_is_forwarded_in_order():
    script = textwrap.dedent("""
        import sys
        for i, stage in enumerate(["load", "network", "optimize"]):
            print(f"<filter-progress>{i / 3:.3f}</filter-progress>", flush=True)
            print(f"<filter-comment>{stage}</filter-comment>", flush=True)
        print("done")
    """)
    seen = []
    output = run_child([sys.executable, "-c", script], progress=lambda f, t: seen.append((round(f, 3), t)))
    assert seen[-1] == (0.667, "optimize")
    assert list(dict.fromkeys(t for _, t in seen if t)) == ["load", "network", "optimize"]
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)
    assert output[-1] == "done"


def test_failure_reports_the_child_error_line():
    script = "print('<filter-error>moving image is empty</filter-error>', flush=True); raise SystemExit(2)"
    with pytest.raises(ChildProcessError, match=r"exit code 2\): moving image is empty"):
        run_child([sys.executable, "-c", script])


def test_cancel_kills_child_and_grandchild(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(g.pid))
        print("<filter-progress>0.1</filter-progress>", flush=True)
        time.sleep(60)
    """)
    state = {"started": None}

    def progress(fraction, text):
        state["started"] = time.monotonic()

    def should_stop():
        return state["started"] is not None and pid_file.exists()

    t0 = time.monotonic()
    with pytest.raises(RegistrationCancelled):
        run_child([sys.executable, "-c", script], progress=progress, should_stop=should_stop)
    assert time.monotonic() - t0 < 20
    grandchild = int(pid_file.read_text())
    for _ in range(50):
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(grandchild)


def test_runner_cancel_removes_its_temp_folder():
    geometry = oblique_geometry()
    image = blob_image(geometry)
    runner = ChildProcessRunner()
    with pytest.raises(RegistrationCancelled):
        runner(image, image, should_stop=lambda: True)
    assert runner.last_temp_dir is not None and not Path(runner.last_temp_dir).exists()


def test_windows_children_get_no_console_window_and_their_own_group():
    """Defect 9: on Windows each run opened a console; closing it killed the run."""
    options = popen_options("nt")
    assert options["creationflags"] & CREATE_NO_WINDOW and options["creationflags"] & CREATE_NEW_PROCESS_GROUP
    if hasattr(subprocess, "STARTUPINFO"):  # only on Windows: the hidden-window startup info Slicer itself uses
        assert options["startupinfo"].wShowWindow == 0
    assert popen_options("posix") == {"start_new_session": True}


def test_undecodable_output_does_not_stop_the_run():
    script = ("import sys; sys.stdout.buffer.write(b'\\xff\\xfe not utf-8\\n'); sys.stdout.flush(); "
              "print('<filter-progress>1.0</filter-progress>', flush=True)")
    seen = []
    output = run_child([sys.executable, "-c", script], progress=lambda f, t: seen.append(f))
    assert "\ufffd" in output[0] and seen == [1.0]


def test_a_dead_output_reader_stops_the_run_instead_of_hanging(monkeypatch):
    """Defect 9: an exception in the reader thread left the run waiting until Cancel."""
    import ADRegNetMRML.process as process_module

    class BrokenStdout:
        def __init__(self, stream):
            self.stream = stream

        def __iter__(self):
            yield self.stream.readline()
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

        def close(self):
            self.stream.close()

    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        process = real_popen(*args, **kwargs)
        process.stdout = BrokenStdout(process.stdout)
        return process

    monkeypatch.setattr(process_module.subprocess, "Popen", popen)
    script = "import time; print('<filter-progress>0.1</filter-progress>', flush=True); time.sleep(60)"
    t0 = time.monotonic()
    with pytest.raises(ChildProcessError, match="lost the registration process's output.*UnicodeDecodeError"):
        run_child([sys.executable, "-c", script])
    assert time.monotonic() - t0 < 20


def test_runner_end_to_end_writes_and_reads_the_cli_layout():
    """The child runs the real engine and writes through ADRegNetLib.io / the CLI's output writer."""
    from ADRegNetLib.cli.outputs import INVERSE_FILES, OUTPUT_FILES

    geometry = oblique_geometry(size=(24, 24, 24), spacing=(2.0, 2.0, 2.0), origin=(-23.0, -23.0, -23.0),
                                angles=(0.0, 0.0, 0.0))
    fixed = blob_image(geometry, "fixed")
    moving = blob_image(geometry, "moving", shift=(2.0, -1.0, 1.0))
    pts = np.array([[3.0, 2.0, 0.0], [-4.0, -1.0, -2.0]]) + geometry.center()
    seen = []
    runner = ChildProcessRunner(keep_temp=True)
    try:
        result = runner(fixed, moving, fixed_landmarks=pts, moving_landmarks=pts + [2.0, -1.0, 1.0],
                        quality="instant", device="cpu", progress=lambda f, t: seen.append(f))
        written = sorted(p.name for p in (Path(runner.last_temp_dir) / "out").iterdir())
    finally:
        shutil.rmtree(runner.last_temp_dir, ignore_errors=True)
    expected = set(OUTPUT_FILES) - {"report.png"} | {"warped_fixed_landmarks.csv"}
    if result.inverse_disp_mm is not None:
        expected |= set(INVERSE_FILES)
        assert result.inverse_disp_mm.shape == (3, 24, 24, 24) and result.moving_geometry.allclose(geometry)
    assert set(written) == expected
    assert result.disp_mm.shape == (3, 24, 24, 24) and result.geometry.allclose(geometry)
    assert result.warped_fixed_landmarks.shape == (2, 3)
    assert result.metrics["quality"] == "instant"
    assert seen and seen[-1] == 1.0


def test_runner_passes_engine_options_such_as_landmarks_that_only_measure():
    """Further register() keywords (here ``landmarks_guide=False``, the panel's unchecked "Landmark pairs
    guide the registration") reach the child's register() and come back in its metrics."""
    geometry = oblique_geometry(size=(24, 24, 24), spacing=(2.0, 2.0, 2.0), origin=(-23.0, -23.0, -23.0),
                                angles=(0.0, 0.0, 0.0))
    fixed = blob_image(geometry, "fixed")
    moving = blob_image(geometry, "moving", shift=(2.0, -1.0, 1.0))
    pts = np.array([[3.0, 2.0, 0.0], [-4.0, -1.0, -2.0]]) + geometry.center()
    result = ChildProcessRunner()(fixed, moving, fixed_landmarks=pts, moving_landmarks=pts + [2.0, -1.0, 1.0],
                                  quality="instant", device="cpu", landmarks_guide=False)
    assert result.metrics["landmarks"]["guided_registration"] is False
    assert "independent check" in result.metrics["landmarks"]["role"]


def test_runner_passes_the_local_change_region_to_the_child():
    """``local_region`` travels as a file to the child's register(): with ``instant`` it says it was not used."""
    geometry = oblique_geometry(size=(24, 24, 24), spacing=(2.0, 2.0, 2.0), origin=(-23.0, -23.0, -23.0),
                                angles=(0.0, 0.0, 0.0))
    fixed = blob_image(geometry, "fixed")
    moving = blob_image(geometry, "moving", shift=(2.0, -1.0, 1.0))
    region = np.zeros(geometry.shape, np.uint8)
    region[8:16, 8:16, 8:16] = 1
    result = ChildProcessRunner()(fixed, moving, quality="instant", device="cpu",
                                  local_region=Image(region, geometry, "region"))
    assert any("local-change region" in w and "not used" in w for w in result.metrics["warnings"])


def test_a_jacobian_with_no_value_voxels_comes_back_from_the_child_as_it_was(tmp_path):
    """Before: the child's Jacobian travelled as jacobian.nii.gz, which ITK reads with NaN and inf as 0, so
    ADRegNetLib.io refuses it: a run in a child process (the module's default) whose Jacobian had such voxels failed
    after the registration had finished, naming a file in a temporary folder. The child now also writes them as
    NRRD, which the parent reads, values kept (the heatmap leaves them transparent)."""
    from ADRegNetLib.engine.api import RegistrationResult
    from ADRegNetLib.io import read_image
    from ADRegNetLib.spatial.image import Image, ImageError
    from ADRegNetMRML.process import _read_result
    from ADRegNetMRML.worker import JACOBIAN_NO_VALUE, write_results

    geometry = oblique_geometry(size=(6, 5, 4))
    fixed = blob_image(geometry, "fixed")
    det = np.full(geometry.shape, 1.25, np.float32)
    det[0, 0, :3] = [np.nan, np.inf, -np.inf]
    result = RegistrationResult(np.zeros((3, *geometry.shape), np.float32), geometry, fixed.with_array(fixed.array),
                                Image(det, geometry, "jacobian"), {"jacobian": {"folding_count": 0}}, None)
    write_results(result, tmp_path, fixed)
    with pytest.raises(ImageError, match="NaN or infinite voxels"):
        read_image(tmp_path / "jacobian.nii.gz")  # what the parent read before
    back = _read_result(tmp_path, "moving").jacobian.array
    np.testing.assert_array_equal(back, det)  # NaN included (assert_array_equal treats NaN as equal)
    finite = tmp_path / "finite"
    finite.mkdir()
    write_results(RegistrationResult(result.disp_mm, geometry, result.warped, Image(np.ones(geometry.shape, np.float32),
                                                                                     geometry, "jacobian"),
                                     result.metrics, None), finite, fixed)
    assert not (finite / JACOBIAN_NO_VALUE).exists()  # only when needed
    np.testing.assert_array_equal(_read_result(finite, "moving").jacobian.array, 1.0)
