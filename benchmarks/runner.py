r"""Running one method on one case, each in its own child process, and measuring its field.

The parent starts ``python -m benchmarks --run-one --case DIR --method M --work DIR --threads N``
(from the repository root, which is put on ``PYTHONPATH``). The child isolates thread settings
(``--threads``, default 2) and reads its own peak resident memory (VmHWM, see below); it writes its
field (``disp.nii.gz``: ITK displacement on the fixed grid, LPS mm, fixed x -> moving x + u(x)) and
``run.json`` (timing, notes). The parent measures every field with the same code
(:func:`.evaluate.evaluate_field`):

* TRE mean / p95 (mm): fixed landmarks mapped through the field with trilinear interpolation,
  compared with the true moving landmarks at their continuous positions (no voxel snapping);
* Dice: mean over the case's labels, moving labels warped by nearest neighbour vs fixed labels;
* folds (%): fixed voxels with det J <= 0; std log J over the whole fixed grid;
* time (s): the registration call as timed inside the child (reading files excluded);
  ``wall_s`` in the CSV is the whole child process (imports, file I/O);
* peak RSS (MB): the child's resident-memory high-water mark (``VmHWM`` of /proc/self/status, read
  by the child at its end; ``os.wait4``'s ``ru_maxrss`` is not used because Linux folds the forking
  parent's peak into it at exec);
* preset: for AD-RegNet, the preset the engine ran with (what ``auto`` chose, and why, in the CSV).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ADRegNetLib.io import read_displacement_field, read_image, write_displacement_field

from .cases import Case
from .evaluate import evaluate_field
from .methods import BASELINES, QUICK_SETTINGS, is_adregnet_method, register_settings

__all__ = ["REPO_ROOT", "run_method", "run_one", "run_child", "child_command", "start_child", "jsonable"]

REPO_ROOT = Path(__file__).resolve().parents[1]
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
                "NUMEXPR_NUM_THREADS")


def jsonable(obj):
    """``obj`` with numpy scalars and small arrays turned into plain Python (anything else: its repr)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, np.ndarray) and obj.size <= 16:
        return obj.tolist()
    return repr(obj)[:200]


# --------------------------------------------------------------------------- the child process
def _run_adregnet(case: Case, method: str, threads: int) -> tuple[np.ndarray, float, dict]:
    import torch  # noqa: PLC0415

    from ADRegNetLib.engine import register  # noqa: PLC0415

    torch.set_num_threads(max(threads, 1))
    settings = register_settings(method)
    fixed = read_image(case.fixed_path, name="fixed")
    moving = read_image(case.moving_path, name="moving")
    t0 = time.perf_counter()
    # Only the forward field is measured (as for the peers): the inverse is not asked for.
    result = register(fixed, moving, preset=case.preset, device="cpu", seed=0, compute_inverse=False, **settings)
    seconds = time.perf_counter() - t0
    metrics = result.metrics
    described = " ".join(f"{k}={v}" for k, v in settings.items())
    notes = {"tool": "AD-RegNet", "settings": f"preset={case.preset} {described} compute_inverse=False",
             "preset_used": metrics.get("preset"), "preset_reason": metrics.get("preset_reason"),
             "multimodal": metrics.get("multimodal"), "engine_metrics": jsonable(metrics)}
    return np.asarray(result.disp_mm, dtype=np.float32), seconds, notes


def _rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``) in MB, from /proc; NaN without /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def run_one(case_dir: Path, method: str, work_dir: Path, threads: int) -> int:
    """Child: run one method on one case, write ``disp.nii.gz`` and ``run.json`` into ``work_dir``.

    Raises:
        ValueError: ``method`` is a baseline or unknown (baselines need no child).
    """
    from .peers import PEERS, run_peer  # noqa: PLC0415

    case = Case.load(case_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    rss_before = _rss_mb()
    if is_adregnet_method(method):
        disp, seconds, notes = _run_adregnet(case, method, threads)
    elif method in PEERS:
        settings = QUICK_SETTINGS.get(method, {}) if case.name == "quick" else {}
        res = run_peer(method, case.fixed_path, case.moving_path, work_dir / "tool", threads, **settings)
        disp, seconds, notes = res.disp_mm, res.seconds, res.notes
    else:
        raise ValueError(f"method {method!r} cannot run in a child process")
    write_displacement_field(disp, case.fixed_geometry(), work_dir / "disp.nii.gz", dtype=np.float32)
    (work_dir / "run.json").write_text(json.dumps({"method": method, "case": case.name, "seconds": seconds,
                                                   "rss_before_mb": rss_before, "peak_hwm_mb": _rss_mb("VmHWM"),
                                                   "notes": jsonable(notes)}, indent=1))
    return 0


def child_command(case: Case, method: str, work: Path, threads: int) -> list[str]:
    """The command line of the child that runs ``method`` on ``case`` (``python -m benchmarks --run-one``)."""
    return [sys.executable, "-m", "benchmarks", "--run-one", "--case", str(case.directory), "--method", method,
            "--work", str(work), "--threads", str(threads)]


def _child_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in _THREAD_VARS:
        env[var] = str(threads)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _wait_child(proc: subprocess.Popen, timeout: float) -> tuple[int, float, bool]:
    """Wait for ``proc`` with ``os.wait4``: (exit code, peak RSS in MB, timed out)."""
    deadline = time.monotonic() + timeout
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        if time.monotonic() > deadline and not timed_out:
            timed_out = True
            proc.send_signal(signal.SIGKILL)
        time.sleep(0.2)
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # so Popen does not wait for it again
    return code, usage.ru_maxrss / 1024.0, timed_out


def start_child(case: Case, method: str, work: Path, threads: int, timeout: float) -> tuple[int, float, bool]:
    """Run the child for ``method`` on ``case`` (output in ``work/log.txt``): (exit code, peak MB, timed out)."""
    with open(work / "log.txt", "w") as log_fh:
        proc = subprocess.Popen(child_command(case, method, work, threads), stdout=log_fh, stderr=subprocess.STDOUT,
                                env=_child_env(threads), cwd=str(REPO_ROOT))
        return _wait_child(proc, timeout)


# --------------------------------------------------------------------------- the parent
def run_method(case: Case, method: str, work_root: Path, threads: int = 2, timeout: float = 3600.0,
               log: Callable[[str], None] = print, reuse: bool = False) -> dict:
    """Run one method on one case and measure it (see the module docstring).

    Returns:
        One result row: ``case``, ``method``, the measures of :func:`.evaluate.evaluate_field`,
        ``seconds``, ``wall_s``, ``peak_rss_mb``, ``status`` ("ok", "failed: ...", "timeout"),
        ``tool``/``settings`` notes and, for AD-RegNet, ``preset``/``preset_reason``/``multimodal``.
        With ``reuse``, a finished run of the same method on the same case files (its field, timing
        and peak memory in ``work_root/<case>/<method>``) is measured again instead of being run
        again (``cached`` = True in the row).
    """
    row: dict = {"case": case.name, "method": method}
    if method in BASELINES:
        disp = case.true_disp() if method == "truth" else np.zeros_like(case.true_disp())
        row.update(evaluate_field(case, disp))
        row.update({"seconds": 0.0, "status": "ok", "tool": "reference"})
        return row
    work = Path(work_root) / case.name / method
    work.mkdir(parents=True, exist_ok=True)
    if reuse and _cached(work, case):
        return _measure(case, work, row, cached=True)
    if not run_child(case, method, work, threads, timeout, row):
        return row
    return _measure(case, work, row)


def run_child(case: Case, method: str, work: Path, threads: int, timeout: float, row: dict) -> bool:
    """Run ``method`` on ``case`` in a child process writing into ``work`` (earlier results removed first).

    Puts ``wall_s``, ``peak_rss_mb`` and, when it did not finish, ``status`` into ``row``; on success
    ``work/run.json`` gets the wall time and peak memory too.

    Returns:
        True when the child wrote its field (``work/disp.nii.gz``).
    """
    for stale in ("disp.nii.gz", "run.json"):
        (work / stale).unlink(missing_ok=True)
    t0 = time.perf_counter()
    code, peak_mb, timed_out = start_child(case, method, work, threads, timeout)
    row["wall_s"] = time.perf_counter() - t0
    row["peak_rss_mb"] = peak_mb
    if timed_out:
        row["status"] = f"timeout after {timeout:.0f} s"
        return False
    if code != 0 or not (work / "disp.nii.gz").is_file():
        tail = (work / "log.txt").read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        row["status"] = f"failed (exit {code}): {tail[0][:160]}"
        return False
    info = json.loads((work / "run.json").read_text())
    # The child's own high-water mark since exec (VmHWM). wait4's ru_maxrss is kept only as a fallback:
    # Linux folds the forking parent's peak into it at exec, so it reports the parent's size.
    peak = info.get("peak_hwm_mb")
    info.update({"wall_s": row["wall_s"], "peak_rss_mb": peak if peak is not None and np.isfinite(peak) else peak_mb})
    (work / "run.json").write_text(json.dumps(info, indent=1))
    return True


def _cached(work: Path, case: Case) -> bool:
    """A finished run of this method on this very case (newer than the case's files) is on disk."""
    run_json, disp = work / "run.json", work / "disp.nii.gz"
    if not (run_json.is_file() and disp.is_file()):
        return False
    info = json.loads(run_json.read_text())
    return (("peak_rss_mb" in info or "peak_hwm_mb" in info)
            and run_json.stat().st_mtime > (case.directory / "case.json").stat().st_mtime)


def _measure(case: Case, work: Path, row: dict, cached: bool = False) -> dict:
    info = json.loads((work / "run.json").read_text())
    disp, geom = read_displacement_field(work / "disp.nii.gz")
    if not geom.allclose(case.fixed_geometry(), atol=1e-3):
        row["status"] = "failed: the field is not on the fixed grid"
        return row
    row.update(evaluate_field(case, disp.astype(np.float32)))
    notes = info["notes"]
    row["seconds"] = info["seconds"]
    row["wall_s"] = info.get("wall_s", row.get("wall_s"))
    row["peak_rss_mb"] = info.get("peak_rss_mb", info.get("peak_hwm_mb", row.get("peak_rss_mb")))
    row["harness_rss_mb"] = info.get("rss_before_mb")  # the child's memory before the method started
    row["status"] = "ok"
    row["cached"] = cached
    if notes.get("preset_used") is not None:
        row.update({"preset": notes["preset_used"], "preset_reason": notes.get("preset_reason"),
                    "multimodal": notes.get("multimodal")})
    row["tool"] = notes.get("tool", "")
    row["settings"] = notes.get("settings", "")
    return row
