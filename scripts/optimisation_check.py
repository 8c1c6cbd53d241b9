r"""The check of the MIND optimisation by mutual information (``engine.refinement_stage.checked_optimisation``): TRE
and the check's figures per case.

Cases: ``flat`` (the demo's moving CT through a soft-tissue window, -160 to 240 HU mapped to 0-1000 with 1 % noise
added after: lungs flat, against the demo's fixed CT; TRE over its 51 landmark pairs), ``mr`` (the same CT rendered
MR-like: lungs dark but not flat, a non-monotone tissue curve), and benchmark cases ``name:seed`` (built by
``benchmarks.cases`` under OUT). Prints one table row per case: TRE mean, seconds, ``metrics.json``
``instance_optimization.nmi_check``. The figures of ``docs/benchmarks/wave29-2026-12-03.md``.

Usage (from the repository root)::

    .venv/bin/python scripts/optimisation_check.py OUT --cases flat,mr,synthseg:0,brain-t1t2:0 --quality balanced
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ADRegNetLib.engine import register  # noqa: E402
from ADRegNetLib.io import read_image, read_landmarks  # noqa: E402
from ADRegNetLib.spatial.image import Image  # noqa: E402
from benchmarks.cases import build_case  # noqa: E402
from benchmarks.evaluate import evaluate_field  # noqa: E402

SAMPLE = REPO / "Resources" / "SampleData"
#: (HU, value / 1000) curves: the soft-tissue window, and an MR-like rendering (lungs dark, fat and muscle apart)
CURVES = {"flat": ([-1100, -160, 240, 1500], [0.0, 0.0, 1.0, 1.0]),
          "mr": ([-1100, -900, -500, -100, -50, 0, 100, 300, 1500], [0.0, 0.02, 0.08, 0.9, 0.85, 0.5, 0.45, 0.15, 0.1])}


def demo_through(curve: str) -> Image:
    """The demo's moving CT through one of ``CURVES``, times 1000, with Gaussian noise of 10 added after (seed 0)."""
    moving = read_image(SAMPLE / "lung_moving.nii.gz")
    hu, values = CURVES[curve]
    noise = np.random.default_rng(0).normal(0.0, 10.0, moving.array.shape)
    return Image((np.interp(moving.array, hu, values) * 1000.0 + noise).astype(np.float32), moving.geometry, curve)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="folder for the benchmark cases")
    parser.add_argument("--cases", default="flat,mr,synthseg:0,brain-t1t2:0")
    parser.add_argument("--quality", default="balanced")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| case | quality | TRE (mm) | s | NMI start | NMI after | relative gain | kept |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        start = time.perf_counter()
        if name in CURVES:
            fixed = read_image(SAMPLE / "lung_fixed.nii.gz")
            fixed_points, moving_points = (read_landmarks(SAMPLE / f"lung_{role}_landmarks.csv")
                                           for role in ("fixed", "moving"))
            result = register(fixed, demo_through(name), quality=args.quality, seed=0, compute_inverse=False)
            tre = float(np.linalg.norm(result.transform.map_points(fixed_points) - moving_points, axis=1).mean())
        else:
            case_name, _, seed = name.partition(":")
            case = build_case(case_name, Path(args.out) / f"s{seed or 0}", seed=int(seed or 0))
            result = register(read_image(case.fixed_path), read_image(case.moving_path), preset=case.preset,
                              quality=args.quality, seed=0, compute_inverse=False)
            tre = evaluate_field(case, result.disp_mm)["tre_mean"]
        check = (result.metrics.get("instance_optimization") or {}).get("nmi_check") or {}
        print(f"| {name} | {args.quality} | {tre:.3f} | {time.perf_counter() - start:.1f} | {check.get('nmi_start')} | "
              f"{check.get('nmi_after')} | {check.get('relative_gain')} | {check.get('kept')} |", flush=True)


if __name__ == "__main__":
    main()
