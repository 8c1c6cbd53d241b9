r"""Run a registration in a child Python process, with progress lines and a real cancel.

The child (``worker.py``) reads its inputs from files in a temporary folder, calls
``ADRegNetLib.engine.register`` and writes the CLI's output layout (displacement.nii.gz,
warped.nii.gz, jacobian.nii.gz, metrics.json) plus the warped fixed landmarks. It reports on
stdout with the lines Slicer's CLI machinery understands::

    <filter-progress>0.42</filter-progress>
    <filter-comment>instance optimization</filter-comment>

Cancel kills the child and everything it started (its process group / tree). The temporary
folder is removed in ``finally`` whatever happens.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

__all__ = ["ChildProcessRunner", "ChildProcessError", "run_child", "kill_process_tree", "python_executable",
           "parse_progress_line"]

_PROGRESS = re.compile(r"<filter-progress>\s*([-+0-9.eE]+)\s*</filter-progress>")
_COMMENT = re.compile(r"<filter-comment>(.*)</filter-comment>")
_ERROR = re.compile(r"<filter-error>(.*)</filter-error>")
WORKER = Path(__file__).resolve().with_name("worker.py")


class ChildProcessError(RuntimeError):
    """The child process failed; the message carries its error text."""


def python_executable() -> str:
    """The Python to start: PythonSlicer inside Slicer (sys.executable is the Slicer app there)."""
    try:
        import slicer

        if hasattr(slicer, "app"):
            found = shutil.which("PythonSlicer")
            if found:
                return found
    except ImportError:
        pass
    return sys.executable


def parse_progress_line(line: str) -> tuple[Optional[float], Optional[str], Optional[str]]:
    """(fraction, comment, error) found in one stdout line; each None when absent."""
    fraction = comment = error = None
    m = _PROGRESS.search(line)
    if m:
        try:
            fraction = min(max(float(m.group(1)), 0.0), 1.0)
        except ValueError:
            fraction = None
    m = _COMMENT.search(line)
    if m:
        comment = m.group(1).strip()
    m = _ERROR.search(line)
    if m:
        error = m.group(1).strip()
    return fraction, comment, error


def kill_process_tree(process: subprocess.Popen, grace_s: float = 2.0) -> None:
    """Stop a child started by :func:`run_child` and every process it started."""
    if process.poll() is not None:
        return
    try:
        import psutil  # present in Slicer's Python; optional here

        parent = psutil.Process(process.pid)
        family = parent.children(recursive=True) + [parent]
        for p in family:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(family, timeout=grace_s)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        process.wait(timeout=grace_s)
        return
    except ImportError:
        pass
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
    else:
        # The child leads its own session (start_new_session=True): signal the whole group.
        pgid = process.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=grace_s)
                break
            except subprocess.TimeoutExpired:
                continue
    process.wait(timeout=grace_s * 2)


def run_child(command: Sequence[str], progress: Optional[Callable[[float, str], None]] = None,
              should_stop: Optional[Callable[[], bool]] = None, env: Optional[dict] = None,
              cwd: Optional[str] = None, poll_s: float = 0.05) -> list[str]:
    """Run ``command``, forwarding ``<filter-progress>``/``<filter-comment>`` lines to ``progress``.

    Args:
        command: argv of the child.
        progress: called as progress(fraction, text) for each progress or comment line.
        should_stop: polled every ``poll_s``; True kills the process tree and raises.
        env, cwd: passed to subprocess.Popen.
        poll_s: polling interval, seconds.

    Returns:
        All stdout/stderr lines of the child.

    Raises:
        RegistrationCancelled: should_stop() returned True (the child is dead when this is raised).
        ChildProcessError: non-zero exit; the message has the child's error line or last output.
    """
    from ADRegNetLib.engine.api import RegistrationCancelled

    kwargs = {}
    if os.name == "nt":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        kwargs["start_new_session"] = True
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               bufsize=1, env=env, cwd=cwd, **kwargs)
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    output: list[str] = []
    errors: list[str] = []
    fraction, text = 0.0, ""
    finished_reading = False
    try:
        while True:
            while True:
                try:
                    line = lines.get_nowait()
                except queue.Empty:
                    break
                if line is None:
                    finished_reading = True
                    break
                output.append(line)
                new_fraction, comment, error = parse_progress_line(line)
                if error:
                    errors.append(error)
                if new_fraction is not None or comment is not None:
                    fraction = new_fraction if new_fraction is not None else fraction
                    text = comment if comment is not None else text
                    if progress is not None:
                        progress(fraction, text)
            if should_stop is not None and should_stop():
                kill_process_tree(process)
                raise RegistrationCancelled("registration cancelled by the user")
            if finished_reading and process.poll() is not None:
                break
            time.sleep(poll_s)
    finally:
        if process.poll() is None:
            kill_process_tree(process)
        if process.stdout is not None:
            process.stdout.close()
    if process.returncode != 0:
        detail = errors[-1] if errors else "\n".join(output[-15:])
        raise ChildProcessError(f"registration process failed (exit code {process.returncode}): {detail}")
    return output


def _write_points_csv(path: Path, points_lps: np.ndarray) -> None:
    with open(path, "w") as f:
        f.write("x,y,z\n")
        for p in np.asarray(points_lps, dtype=np.float64).reshape(-1, 3):
            f.write(f"{float(p[0])!r},{float(p[1])!r},{float(p[2])!r}\n")


def _read_points_csv(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2).reshape(-1, 3)


class ChildProcessRunner:
    """Callable with ``register()``'s signature that runs the engine in a child process.

    Args:
        python: interpreter for the child (default: :func:`python_executable`).
        extra_pythonpath: folders the child needs on its path (default: the folder holding
            ADRegNetLib and the one holding ADRegNetMRML).
        keep_temp: keep the temporary folder (debugging only).
    """

    def __init__(self, python: Optional[str] = None, extra_pythonpath: Optional[Sequence[str]] = None,
                 keep_temp: bool = False) -> None:
        self.python = python or python_executable()
        if extra_pythonpath is None:
            import ADRegNetLib

            extra_pythonpath = [str(Path(ADRegNetLib.__file__).resolve().parents[1]), str(WORKER.parents[1])]
        self.extra_pythonpath = list(extra_pythonpath)
        self.keep_temp = keep_temp
        self.last_temp_dir: Optional[str] = None

    def _env(self) -> dict:
        env = dict(os.environ)
        parts = self.extra_pythonpath + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env["PYTHONPATH"] = os.pathsep.join(parts)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def __call__(self, fixed, moving, *, fixed_landmarks=None, moving_landmarks=None, fixed_mask=None,
                 preset: str = "auto", quality: str = "balanced", regularization: float = 1.0,
                 device: str = "auto", progress=None, should_stop=None, seed: int = 0):
        import SimpleITK as sitk

        from ADRegNetLib.engine.api import RegistrationResult
        from ADRegNetLib.io.image import from_sitk, to_sitk
        from ADRegNetLib.spatial.geometry import Geometry

        temp = Path(tempfile.mkdtemp(prefix="adregnet-"))
        self.last_temp_dir = str(temp)
        try:
            sitk.WriteImage(to_sitk(fixed, np.float32), str(temp / "fixed.nii.gz"))
            sitk.WriteImage(to_sitk(moving, np.float32), str(temp / "moving.nii.gz"))
            args = [self.python, str(WORKER), str(temp / "fixed.nii.gz"), str(temp / "moving.nii.gz"),
                    "-o", str(temp / "out"), "--preset", preset, "--quality", quality,
                    "--regularization", repr(float(regularization)), "--device", str(device), "--seed", str(seed)]
            if fixed_landmarks is not None and moving_landmarks is not None:
                _write_points_csv(temp / "fixed_landmarks.csv", fixed_landmarks)
                _write_points_csv(temp / "moving_landmarks.csv", moving_landmarks)
                args += ["--fixed-landmarks", str(temp / "fixed_landmarks.csv"),
                         "--moving-landmarks", str(temp / "moving_landmarks.csv")]
            if fixed_mask is not None:
                sitk.WriteImage(to_sitk(fixed_mask, np.uint8), str(temp / "fixed_mask.nii.gz"))
                args += ["--fixed-mask", str(temp / "fixed_mask.nii.gz")]
            try:
                run_child(args, progress=progress, should_stop=should_stop, env=self._env())
            except ChildProcessError as exc:
                from ADRegNetLib.engine.api import RegistrationError

                raise RegistrationError(str(exc)) from exc
            out = temp / "out"
            field = sitk.ReadImage(str(out / "displacement.nii.gz"))
            geometry = Geometry.from_sitk(field)
            disp = np.moveaxis(sitk.GetArrayFromImage(field), -1, 0).astype(np.float32)
            warped = from_sitk(sitk.ReadImage(str(out / "warped.nii.gz")), name=f"{moving.name} warped")
            jacobian = from_sitk(sitk.ReadImage(str(out / "jacobian.nii.gz")), name="jacobian")
            metrics = json.loads((out / "metrics.json").read_text())
            warped_landmarks = None
            if (out / "warped_fixed_landmarks.csv").exists():
                warped_landmarks = _read_points_csv(out / "warped_fixed_landmarks.csv")
            return RegistrationResult(disp, geometry, warped, jacobian, metrics, warped_landmarks)
        finally:
            if not self.keep_temp:
                shutil.rmtree(temp, ignore_errors=True)
