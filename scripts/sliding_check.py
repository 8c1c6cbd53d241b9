r"""The lungs sliding along the chest wall (``engine/sliding.py``): TRE with ``sliding`` off and on.

Cases: the benchmark's ``lung`` (its breathing field decays smoothly over 15 mm beyond the lungs) and
``lung-sliding`` (the same field stopping at the lungs' boundary within 1.5 mm), built by ``benchmarks.cases``;
and the whole POPI thorax CT (``../shared/data/lung-ct-thorax``, arms, body wall and abdomen) resampled to 3 mm,
``thorax-smooth`` (a random smooth field over the body: 5 mm mean, control values 40 mm apart, nothing slides)
or ``thorax-sliding`` (the sliding breathing field, 5 mm mean in the lungs), 200 landmarks in the body or the lungs,
10-HU noise on the moving image. Prints one table row per run: TRE mean, 95th percentile, the landmarks within 10 mm
of the lungs' boundary and the others, folding share, seconds, the lungs' share of the working grid.

Usage (from the repository root; cases are cached under OUT)::

    .venv/bin/python scripts/sliding_check.py OUT --cases lung-sliding,lung,thorax-smooth,thorax-sliding \
        --seeds 0,1 --qualities fast,balanced --modes off,auto
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ADRegNetLib.engine import register  # noqa: E402
from ADRegNetLib.io import read_image  # noqa: E402
from ADRegNetLib.spatial.image import Image  # noqa: E402
from benchmarks.cases import build_case  # noqa: E402
from benchmarks.deformations import breathing_svf, random_smooth_svf, scale_svf  # noqa: E402
from benchmarks.landmarks import sample_landmarks, true_moving_landmarks  # noqa: E402
from benchmarks.sampling import grid_points, invert_field_at, sample_at  # noqa: E402

THORAX = REPO / ".." / "shared" / "data" / "lung-ct-thorax"


def _resampled(image: sitk.Image, spacing: float, interpolator, background: float) -> sitk.Image:
    size = [int(round(s * o / spacing)) for s, o in zip(image.GetSize(), image.GetSpacing())]
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(), (spacing,) * 3,
                         image.GetDirection(), background)


def thorax_case(kind: str, seed: int, out: Path):
    """(fixed, moving, fixed landmarks, moving landmarks, lung mask) of the whole thorax at 3 mm."""
    folder = out / f"thorax-{kind}" / f"s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    ct = _resampled(sitk.ReadImage(str(THORAX / "thorax_ct.nii.gz")), 3.0, sitk.sitkLinear, -1000.0)
    sitk.WriteImage(ct, str(folder / "fixed.nii.gz"))
    fixed = read_image(folder / "fixed.nii.gz")
    g = fixed.geometry

    def mask(name: str) -> np.ndarray:
        labels = _resampled(sitk.ReadImage(str(THORAX / name)), 3.0, sitk.sitkNearestNeighbor, 0.0)
        return sitk.GetArrayFromImage(labels) > 0

    body, lungs = mask("body_mask.nii.gz"), mask("lung_mask.nii.gz")
    rng = np.random.default_rng(seed)
    if kind == "smooth":
        velocity, disp = scale_svf(random_smooth_svf(g, rng, 40.0), g, body, 5.0)
        region = body
    else:
        velocity, disp = scale_svf(breathing_svf(g, lungs, rng, boundary_sigma_mm=1.5), g, lungs, 5.0)
        region = lungs
    points = grid_points(g)
    inverse, _ = invert_field_at(disp, g, points)
    moving = sample_at(fixed.array, g, points + inverse, 1, -1000.0).reshape(g.shape).astype(np.float32)
    moving += np.random.default_rng(seed + 1).normal(0.0, 10.0, moving.shape).astype(np.float32)
    fixed_points = sample_landmarks(region, g, np.random.default_rng(seed + 2), 200)
    return fixed, Image(moving, g, "moving"), fixed_points, true_moving_landmarks(fixed_points, disp, g), lungs


def benchmark_case(name: str, seed: int, out: Path):
    case = build_case(name, out / f"s{seed}", seed=seed)
    fixed, moving = read_image(case.directory / "fixed.nii.gz"), read_image(case.directory / "moving.nii.gz")
    lungs = read_image(case.directory / "fixed_mask.nii.gz").array > 0
    return fixed, moving, case.fixed_landmarks(), case.moving_landmarks(), lungs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder for the cases")
    parser.add_argument("--cases", default="lung-sliding,lung,thorax-smooth,thorax-sliding")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--qualities", default="balanced")
    parser.add_argument("--modes", default="off,auto", help="register(sliding=...) values to compare")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("| case | seed | quality | sliding | TRE mean | p95 | within 10 mm of the lungs' boundary (n) | farther | "
          "folding | s | lungs' share |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            if name.startswith("thorax-"):
                fixed, moving, fp, mp, lungs = thorax_case(name.split("-", 1)[1], seed, args.out)
            else:
                fixed, moving, fp, mp, lungs = benchmark_case(name, seed, args.out)
            g = fixed.geometry
            spacing = g.spacing[::-1]
            boundary = ndimage.distance_transform_edt(lungs, sampling=spacing) + \
                ndimage.distance_transform_edt(~lungs, sampling=spacing)
            index = np.clip(np.round(g.physical_to_index(fp)).astype(int), 0, np.array(g.size) - 1)
            near = boundary[index[:, 2], index[:, 1], index[:, 0]] < 10.0
            for quality in args.qualities.split(","):
                for mode in args.modes.split(","):
                    t0 = time.perf_counter()
                    result = register(fixed, moving, preset="lung-ct", quality=quality, seed=0, compute_inverse=False,
                                      sliding=mode)
                    seconds = time.perf_counter() - t0
                    err = np.linalg.norm(result.transform.map_points(fp) - mp, axis=1)
                    print(f"| {name} | {seed} | {quality} | {mode} | {err.mean():.3f} | {np.percentile(err, 95):.2f} | "
                          f"{err[near].mean():.3f} ({int(near.sum())}) | {err[~near].mean():.3f} | "
                          f"{result.metrics['jacobian'].get('folding_fraction'):.1e} | {seconds:.1f} | "
                          f"{result.metrics['sliding'].get('lung_share', '-')} |", flush=True)


if __name__ == "__main__":
    main()
