r"""The network alone on benchmark case folders (fixed/moving/landmarks files): TRE, folds, time.

    python -m ADRegNetLib.train.case_check --weights Resources/weights/adregnet_default.pt \
        /path/to/cases/brain /path/to/cases/lung

A quick check of trained weights on the benchmark's cases (``fixed.nii.gz``, ``moving.nii.gz``,
``fixed_landmarks.csv``, ``moving_landmarks.csv`` on one grid): intensities are scaled to [0, 1]
(CT: HU window [-1000, 400], as in training; otherwise the 1st..99th percentiles), the network
predicts on the case's own grid (no pre-alignment, no instance optimisation) and TRE is measured at
the landmarks. It reads image files through ``ADRegNetLib.io`` (SimpleITK), so unlike the training
path it needs SimpleITK; the official figures come from the engine's ``--quality instant``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..losses.functional import sample_field_at_points
from ..model.checkpoint import load_model
# ADRegNetLib.numbers, not ADRegNetLib.io.numbers: ADRegNetLib/io/__init__.py imports SimpleITK, which the GPU
# host does not have.
from ..numbers import argument_type
from ..spatial.flow import flow_norm_to_disp_mm
from ..spatial.jacobian import jacobian_determinant
from ..spatial.transforms import resize_flow

__all__ = ["check_case", "build_parser", "main"]


def _unit(array: np.ndarray) -> np.ndarray:
    if np.percentile(array, 1) < -500:  # CT in HU
        return np.clip((array + 1000.0) / 1400.0, 0, 1).astype(np.float32)
    lo, hi = np.percentile(array, [1, 99])
    return np.clip((array - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


@torch.no_grad()
def check_case(model: torch.nn.Module, folder: str | Path) -> dict:
    """TRE before/after (mm), % folds and prediction seconds of ``model`` on one case folder."""
    from ..io import read_image  # lazy: SimpleITK

    folder = Path(folder)
    fixed, moving = read_image(folder / "fixed.nii.gz"), read_image(folder / "moving.nii.gz")
    if fixed.array.shape != moving.array.shape:
        raise ValueError(f"{folder}: fixed {fixed.array.shape} and moving {moving.array.shape} must share a grid")
    fpts = np.loadtxt(folder / "fixed_landmarks.csv", delimiter=",", skiprows=1)
    mpts = np.loadtxt(folder / "moving_landmarks.csv", delimiter=",", skiprows=1)
    f = torch.as_tensor(_unit(fixed.array))[None, None]
    m = torch.as_tensor(_unit(moving.array))[None, None]
    t0 = time.perf_counter()
    flow = model(f, m)["flow_norm"]
    seconds = time.perf_counter() - t0
    g = fixed.geometry
    disp = flow_norm_to_disp_mm(resize_flow(flow, g.shape).double(), g)
    u = sample_field_at_points(disp, g, fpts)[0].numpy()
    det = jacobian_determinant(disp, g)
    return {"case": folder.name, "tre_before_mm": float(np.linalg.norm(mpts - fpts, axis=1).mean()),
            "tre_after_mm": float(np.linalg.norm(fpts + u - mpts, axis=1).mean()),
            "folds_pct": float((det <= 0).double().mean() * 100), "seconds": seconds, "shape_zyx": list(g.shape)}


def build_parser() -> argparse.ArgumentParser:
    """The command's options; numbers are read strictly (``--threads 1_0`` was 10 to Python's ``int``)."""
    parser = argparse.ArgumentParser(prog="python -m ADRegNetLib.train.case_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", help="case folders")
    parser.add_argument("--weights", default=None, help="weights (default: the shipped ones)")
    parser.add_argument("--threads", type=argument_type(whole=True, example="2", positive=True), default=2)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.weights)
    rows = [check_case(model, c) for c in args.cases]
    print(f"weights: {args.weights or 'default'} ({model.metadata.get('training_steps')} steps)")
    print("| case | TRE before (mm) | TRE after (mm) | ratio | folds (%) | s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['tre_before_mm']:.2f} | {r['tre_after_mm']:.2f} | "
              f"{r['tre_after_mm'] / r['tre_before_mm']:.2f} | {r['folds_pct']:.3f} | {r['seconds']:.2f} |")
    return rows


if __name__ == "__main__":
    main()
