"""Helpers for the cohort (``adregnet batch``) tests: tiny real-CT pairs, child processes.

Each pair is a 24^3 crop of the demo lung pair (Resources/SampleData, 2.7x2.7x5 mm), registered at
``--quality fast`` in about 3 s on one thread. Pair 0 also has the demo landmarks that fall inside
its crop (TRE) and lung/body label maps made by thresholding HU (Dice).
"""
from __future__ import annotations

import csv
import os
import socket
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "Resources" / "SampleData"
#: voxel offsets (x, y, z) of the 24^3 crops; the first holds 19 of the demo landmarks
CROP_OFFSETS = ((24, 36, 36), (20, 30, 24), (24, 28, 16), (16, 24, 20), (28, 34, 30), (12, 34, 28))
CROP = 24


def _labels(image: sitk.Image) -> sitk.Image:
    arr = sitk.GetArrayFromImage(image)
    lab = np.where(arr < -400, 1, np.where(arr > -200, 2, 0)).astype(np.uint8)
    out = sitk.GetImageFromArray(lab)
    out.CopyInformation(image)
    return out


def _landmarks_inside(fixed_crop: sitk.Image, fixed_pts: np.ndarray, moving_pts: np.ndarray):
    idx = np.array([fixed_crop.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in fixed_pts])
    inside = np.all((idx >= 2) & (idx <= CROP - 3), axis=1)
    return fixed_pts[inside], moving_pts[inside]


def _write_points(path: Path, points: np.ndarray) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x", "y", "z"])
        writer.writerows(points.tolist())


def make_cohort(folder: Path, n_good: int = 4, corrupt: bool = False) -> Path:
    """Writes ``n_good`` tiny pairs (+ one corrupt moving image) and their PAIRS.csv; returns the CSV path.

    Paths in the CSV are relative to its folder (as users write them). The corrupt pair, when asked
    for, takes the place of the last good one in the list order ("bad").
    """
    folder.mkdir(parents=True, exist_ok=True)
    fixed = sitk.ReadImage(str(SAMPLE / "lung_fixed.nii.gz"))
    moving = sitk.ReadImage(str(SAMPLE / "lung_moving.nii.gz"))
    fixed_pts = np.loadtxt(SAMPLE / "lung_fixed_landmarks.csv", delimiter=",", skiprows=1)
    moving_pts = np.loadtxt(SAMPLE / "lung_moving_landmarks.csv", delimiter=",", skiprows=1)
    header = ["id", "fixed", "moving", "fixed_landmarks", "moving_landmarks", "labels", "fixed_labels"]
    rows = []
    for i, (x, y, z) in enumerate(CROP_OFFSETS[:n_good]):
        f = fixed[x:x + CROP, y:y + CROP, z:z + CROP]
        m = moving[x:x + CROP, y:y + CROP, z:z + CROP]
        sitk.WriteImage(f, str(folder / f"fixed_{i}.nii.gz"))
        sitk.WriteImage(m, str(folder / f"moving_{i}.nii.gz"))
        row = [f"pair{i}", f"fixed_{i}.nii.gz", f"moving_{i}.nii.gz", "", "", "", ""]
        if i == 0:
            fp, mp = _landmarks_inside(f, fixed_pts, moving_pts)
            _write_points(folder / "fixed_0.csv", fp)
            _write_points(folder / "moving_0.csv", mp)
            sitk.WriteImage(_labels(f), str(folder / "fixed_labels_0.nii.gz"))
            sitk.WriteImage(_labels(m), str(folder / "moving_labels_0.nii.gz"))
            row[3:] = ["fixed_0.csv", "moving_0.csv", "moving_labels_0.nii.gz", "fixed_labels_0.nii.gz"]
        rows.append(row)
    if corrupt:
        (folder / "corrupt.nii.gz").write_bytes(b"this is not a NIfTI file\n" * 8)
        rows.append(["bad", "fixed_0.nii.gz", "corrupt.nii.gz", "", "", "", ""])
    path = folder / "pairs.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dask_command(name: str) -> list[str]:
    """``dask scheduler`` / ``dask worker`` of this interpreter's environment."""
    exe = Path(sys.executable).with_name("dask")
    return [str(exe), name] if exe.exists() else [sys.executable, "-m", f"distributed.cli.dask_{name}"]


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def start_process(args: list[str], log: Path) -> subprocess.Popen:
    """Starts ``args`` in its own process group (so the test can kill it with its children)."""
    handle = log.open("w")
    # A shell's background jobs inherit SIGINT ignored, and Python then never raises KeyboardInterrupt:
    # restore the default so the test's SIGINT (a user's Ctrl-C) reaches the child wherever pytest runs.
    return subprocess.Popen(args, cwd=REPO_ROOT, env=child_env(), stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
