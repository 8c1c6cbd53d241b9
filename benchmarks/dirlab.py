r"""DIR-Lab 4DCT (``--dirlab DIR``): real inhale/exhale pairs with 300 expert landmarks, T00 -> T50.

Each DIR-Lab case found under DIR is written once as a case folder (``fixed.nii.gz``,
``moving.nii.gz``, landmark CSVs, ``case.json``) through the library's io, then every method runs on
it in a child process as for the other cases. There is no true field, so only the landmark error
is reported (DIR-Lab style: mean (std) mm before and after, continuous positions).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import numpy as np

from ADRegNetLib.io import (ImageError, load_dirlab_case, read_displacement_field, write_image,
                            write_landmarks)
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.transform import map_points

from .cases import Case
from .runner import start_child

__all__ = ["prepare_dirlab", "run_dirlab"]


def prepare_dirlab(root: Path, out_dir: Path, hu_offset: float, log: Callable[[str], None]) -> list[Case]:
    """Write each DIR-Lab case found under ``root`` as a benchmark case folder (T00 fixed, T50 moving)."""
    cases = []
    for n in range(1, 11):
        try:
            dl = load_dirlab_case(root, n, hu_offset=hu_offset)
        except (ImageError, ValueError, FileNotFoundError) as exc:
            log(f"[benchmark] DIR-Lab case {n}: skipped ({exc})")
            continue
        name = f"dirlab{n:02d}"
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for role, phase in (("fixed", "T00"), ("moving", "T50")):
            image = dl.images[phase]
            write_image(Image(image.array.astype(np.float32), image.geometry), folder / f"{role}.nii.gz")
            write_landmarks(dl.landmarks[phase], folder / f"{role}_landmarks.csv")
        (folder / "case.json").write_text(json.dumps({"name": name, "preset": "lung-ct", "label_ids": [],
                                                      "dirlab_case": n, "description": f"DIR-Lab case {n}"}))
        cases.append(Case.load(folder))
    return cases


def run_dirlab(args: argparse.Namespace, methods: list[str], log: Callable[[str], None]) -> list[dict]:
    """Run ``methods`` on every DIR-Lab case under ``args.dirlab``; one row per (case, method)."""
    cases = prepare_dirlab(args.dirlab, args.output / "dirlab", args.dirlab_hu_offset, log)
    rows = []
    for case in cases:
        f_lm, m_lm = case.fixed_landmarks(), case.moving_landmarks()
        before = np.linalg.norm(f_lm - m_lm, axis=1)
        for method in methods:
            if method == "truth":  # no true field for real 4DCT pairs
                continue
            if method == "identity":
                row = {"method": method, "status": "ok", "after_mean": float(before.mean()),
                       "after_std": float(before.std()), "seconds": 0.0}
            else:
                row = _run_dirlab_method(case, method, args, f_lm, m_lm)
            row.update({"case": case.info["dirlab_case"], "before_mean": float(before.mean()),
                        "before_std": float(before.std())})
            rows.append(row)
            log(f"[benchmark] DIR-Lab {case.info['dirlab_case']} {method}: {row.get('status')} "
                f"TRE {row.get('after_mean', float('nan')):.2f} mm")
    return rows


def _run_dirlab_method(case: Case, method: str, args: argparse.Namespace, f_lm: np.ndarray,
                       m_lm: np.ndarray) -> dict:
    work = args.output / "runs" / case.name / method
    work.mkdir(parents=True, exist_ok=True)
    code, peak_mb, timed_out = start_child(case, method, work, args.threads, args.timeout)
    row = {"method": method, "peak_rss_mb": peak_mb}
    if timed_out or code != 0:
        row["status"] = "timeout" if timed_out else f"failed (exit {code})"
        return row
    disp, geom = read_displacement_field(work / "disp.nii.gz")
    err = np.linalg.norm(map_points(disp, geom, f_lm) - m_lm, axis=1)
    info = json.loads((work / "run.json").read_text())
    row.update({"status": "ok", "after_mean": float(err.mean()), "after_std": float(err.std()),
                "seconds": info["seconds"]})
    return row
