r"""Run a registration in a child Python process, with progress lines and a real cancel.

The child (``worker.py``) reads its inputs from files in a temporary folder, calls
``ADRegNetLib.engine.register`` and writes the CLI's output layout (displacement.nii.gz,
warped.nii.gz, jacobian.nii.gz, metrics.json, the inverse when computed) plus the warped fixed
landmarks, and the Jacobian as NRRD when it has NaN or infinite voxels (jacobian.nii.gz stores them, but
ITK's NIfTI reader reads them as 0, which the heatmap paints as folds, and ``ADRegNetLib.io`` refuses to read
it); both sides read and write through ``ADRegNetLib.io``. It reports on stdout with the
lines Slicer's CLI machinery understands::

    <filter-progress>0.42</filter-progress>
    <filter-comment>instance optimization</filter-comment>

Cancel kills the child and everything it started (its process group / tree). The temporary
folder is removed in ``finally`` whatever happens. On Windows the child gets no console window
(a console would flash up for each run, and closing it would kill the run). The child's output is
decoded as UTF-8 with undecodable bytes replaced, and the reader thread always signals its end,
so a bad byte can neither hang the run nor kill the reader.
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
           "parse_progress_line", "popen_options"]

_PROGRESS = re.compile(r"<filter-progress>\s*([-+0-9.eE]+)\s*</filter-progress>")
_COMMENT = re.compile(r"<filter-comment>(.*)</filter-comment>")
_ERROR = re.compile(r"<filter-error>(.*)</filter-error>")
WORKER = Path(__file__).resolve().with_name("worker.py")
#: Windows process-creation flags (constants from the Win32 API; subprocess defines them only on Windows)
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
STARTF_USESHOWWINDOW = 0x00000001
SW_HIDE = 0


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


def popen_options(os_name: Optional[str] = None) -> dict:
    """Keyword arguments for ``subprocess.Popen`` so the child can be killed as a tree and shows no window.

    Args:
        os_name: ``os.name`` to build them for (default: this system's; tests pass "nt").

    Returns:
        On Windows: a new process group, no console window (``CREATE_NO_WINDOW``) and a hidden-window
        ``startupinfo`` (what ``slicer.util.launchConsoleProcess`` does); elsewhere: a new session.
    """
    os_name = os.name if os_name is None else os_name
    if os_name != "nt":
        return {"start_new_session": True}
    options = {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    if hasattr(subprocess, "STARTUPINFO"):
        info = subprocess.STARTUPINFO()
        info.dwFlags |= STARTF_USESHOWWINDOW
        info.wShowWindow = SW_HIDE
        options["startupinfo"] = info
    return options


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

    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               encoding="utf-8", errors="replace", bufsize=1, env=env, cwd=cwd, **popen_options())
    lines: "queue.Queue[Optional[str]]" = queue.Queue()
    reader_errors: list[str] = []

    def reader() -> None:
        try:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line.rstrip("\n"))
        except Exception as exc:  # noqa: BLE001 - the main loop stops the run with this message
            reader_errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            lines.put(None)  # always: the main loop must never wait for a reader that is gone

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
            if finished_reading and reader_errors:
                kill_process_tree(process)
                raise ChildProcessError(f"lost the registration process's output ({reader_errors[0]}); the run was "
                                        "stopped")
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
        env["PYTHONIOENCODING"] = "utf-8"
        return env

    def __call__(self, fixed, moving, *, fixed_landmarks=None, moving_landmarks=None, fixed_mask=None,
                 moving_mask=None, initial_transform=None, local_region=None, preset: str = "auto",
                 quality: str = "balanced",
                 regularization: float = 1.0, device: str = "auto", progress=None, should_stop=None, seed: int = 0,
                 **options):
        """Run ``register()`` in a child process; same arguments and result (see ``ADRegNetLib.engine``).

        Inputs and outputs travel as files in a temporary folder (removed afterwards); ``options``
        are further ``register()`` keyword arguments (JSON values).

        Raises:
            RegistrationCancelled: ``should_stop()`` returned True (the child is dead).
            RegistrationError: the child failed; the message has its error line.
        """
        temp = Path(tempfile.mkdtemp(prefix="adregnet-"))
        self.last_temp_dir = str(temp)
        try:
            args = self._write_inputs(temp, fixed, moving, fixed_landmarks, moving_landmarks, fixed_mask, moving_mask,
                                      initial_transform, local_region)
            args += ["-o", str(temp / "out"), "--preset", preset, "--quality", quality, "--regularization",
                     repr(float(regularization)), "--device", str(device), "--seed", str(seed)]
            args += [f"--option={name}={json.dumps(value)}" for name, value in options.items()]
            try:
                run_child([self.python, str(WORKER), *args], progress=progress, should_stop=should_stop,
                          env=self._env())
            except ChildProcessError as exc:
                from ADRegNetLib.engine.api import RegistrationError

                raise RegistrationError(str(exc)) from exc
            return _read_result(temp / "out", moving.name)
        finally:
            if not self.keep_temp:
                shutil.rmtree(temp, ignore_errors=True)

    @staticmethod
    def _write_inputs(temp: Path, fixed, moving, fixed_landmarks, moving_landmarks, fixed_mask, moving_mask,
                      initial_transform, local_region=None) -> list[str]:
        """Write the inputs through ADRegNetLib.io; returns the worker's input arguments."""
        from ADRegNetLib.io import write_image, write_landmarks

        # NRRD reads back float32 voxels exactly, NaN included (ITK reads NaN from NIfTI as 0)
        write_image(fixed, temp / "fixed.nrrd")
        write_image(moving, temp / "moving.nrrd")
        args = [str(temp / "fixed.nrrd"), str(temp / "moving.nrrd")]
        if fixed_landmarks is not None and moving_landmarks is not None:
            write_landmarks(fixed_landmarks, temp / "fixed_landmarks.csv")
            write_landmarks(moving_landmarks, temp / "moving_landmarks.csv")
            args += ["--fixed-landmarks", str(temp / "fixed_landmarks.csv"),
                     "--moving-landmarks", str(temp / "moving_landmarks.csv")]
        for flag, mask in (("--fixed-mask", fixed_mask), ("--moving-mask", moving_mask),
                           ("--local-region", local_region)):
            if mask is not None:
                path = temp / f"{flag[2:]}.nrrd"
                write_image(mask, path)
                args += [flag, str(path)]
        if initial_transform is not None:
            from ADRegNetLib.io.linear import write_linear_transform
            from ADRegNetLib.spatial.affine import AffineMap

            affine = initial_transform if isinstance(initial_transform, AffineMap) else \
                AffineMap.from_homogeneous(np.asarray(initial_transform, dtype=np.float64))
            write_linear_transform(affine, temp / "initial.tfm")
            args += ["--initial-transform", str(temp / "initial.tfm")]
        return args


def _read_result(out: Path, moving_name: str):
    """The worker's output folder as a RegistrationResult (read through ADRegNetLib.io)."""
    import dataclasses

    from ADRegNetLib.engine.api import RegistrationResult
    from ADRegNetLib.io import read_displacement_field, read_image, read_landmarks

    from .worker import JACOBIAN_NO_VALUE, WARPED_LANDMARKS

    disp, geometry = read_displacement_field(out / "displacement.nii.gz")
    jacobian = out / JACOBIAN_NO_VALUE if (out / JACOBIAN_NO_VALUE).exists() else out / "jacobian.nii.gz"
    values = dict(disp_mm=disp.astype(np.float32), geometry=geometry,
                  warped=read_image(out / "warped.nii.gz", name=f"{moving_name} warped"),
                  jacobian=read_image(jacobian, name="jacobian"),  # NaN / inf kept: shown transparent, not as folds
                  metrics=json.loads((out / "metrics.json").read_text()),
                  warped_fixed_landmarks=read_landmarks(out / WARPED_LANDMARKS) if (out / WARPED_LANDMARKS).exists()
                  else None)
    if (out / "displacement_inverse.nii.gz").exists():
        inverse, moving_geometry = read_displacement_field(out / "displacement_inverse.nii.gz")
        values.update(inverse_disp_mm=inverse.astype(np.float32), moving_geometry=moving_geometry)
    known = {f.name for f in dataclasses.fields(RegistrationResult)}
    if "transform" in known:
        from ADRegNetLib.spatial.transform import Transform

        values["transform"] = Transform(geometry, values["disp_mm"])
    return RegistrationResult(**{k: v for k, v in values.items() if k in known})
