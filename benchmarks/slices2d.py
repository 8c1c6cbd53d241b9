r"""Two people's brain slices (2-D, real T1 intensities, manual labels): Dice of warped label maps.

The data (``shared/data/brain2d-oasis-trt20-slices``): slice 118 of twenty OASIS-TRT-20 subjects (Mindboggle-101),
216 x 291 pixels at 1 mm on one shared grid (roughly pre-aligned, preprocessing undocumented), each with its
manual DKT31 cortical and CMA subcortical labels (45-49 per slice). AD-RegNet registers two single slices in their
plane (``engine.planar``); PICSL Greedy runs in 2-D (``Greedy2D``: a 6-parameter 2-D affine by NMI from the image
centres, then its deformable NCC stage, as the 3-D benchmark runs it: 2x2 patches, ``-s 2.0vox 0.5vox``,
100x50x20 iterations). Dice: the moving labels read through each method's field (nearest) at every fixed pixel,
mean over the labels with at least 20 pixels in the fixed slice. Folds: the share of pixels with det J <= 0. Time:
the registration call alone (images in memory), one run each, in this process, one after the other.

Usage (from the repository root)::

    python -m benchmarks.slices2d -o OUT [--pairs 2:1,4:3,...] [--methods identity,adregnet-fast,greedy]
        [--threads 2]

Writes ``OUT/results.csv`` (a row per pair and method) and ``OUT/summary.md`` (mean, sd and minimum of the
mean Dice over pairs, the largest fold share, the median seconds).
"""
from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ADRegNetLib.engine import register
from ADRegNetLib.io import read_image
from ADRegNetLib.spatial.image import Image

from .methods import is_adregnet_method, register_settings
from .sources import default_data_dir

DATA = "brain2d-oasis-trt20-slices"
DEFAULT_PAIRS = tuple((2 * k + 2, 2 * k + 1) for k in range(10))  # (moving, fixed): 2 -> 1, 4 -> 3, ... 20 -> 19
DEFAULT_METHODS = ("identity", "adregnet-fast", "adregnet-balanced", "adregnet-fast-reg0.25",
                   "adregnet-balanced-reg0.25", "greedy")


def _files(subject: int, data_dir: Path) -> tuple[Path, Path]:
    return (data_dir / "Atlases" / f"OASIS-TRT-20-{subject}_slice118.nii.gz",
            data_dir / "Labels" / f"OASIS-TRT-20-{subject}_DKT31_CMA_labels_slice118.nii.gz")


def dice(fixed_labels: np.ndarray, warped_labels: np.ndarray, min_pixels: int = 20) -> float:
    """Mean Dice over the labels (> 0) with at least ``min_pixels`` pixels in ``fixed_labels``."""
    scores = []
    for value in np.unique(fixed_labels):
        inside = fixed_labels == value
        if value <= 0 or np.count_nonzero(inside) < min_pixels:
            continue
        there = warped_labels == value
        scores.append(2.0 * np.count_nonzero(inside & there) / (np.count_nonzero(inside) + np.count_nonzero(there)))
    return float(np.mean(scores))


def _adregnet(method: str, fixed: Image, moving: Image, moving_labels: Image, threads: int) -> dict:
    settings = dict(register_settings(method), device="cpu", compute_inverse=False)
    t0 = time.perf_counter()
    result = register(fixed, moving, **settings)
    seconds = time.perf_counter() - t0
    warped = result.transform.warp(moving_labels, mode="nearest").array
    return {"warped": warped, "seconds": seconds, "folds_pct": 100 * result.metrics["jacobian"]["folding_fraction"]}


def _greedy(fixed_path: Path, moving_path: Path, moving_labels_path: Path, threads: int) -> dict:
    from picsl_greedy import Greedy2D  # noqa: PLC0415 - optional peer (benchmarks/requirements-peers.txt)

    fixed, moving = sitk.ReadImage(str(fixed_path), sitk.sitkFloat32), sitk.ReadImage(str(moving_path), sitk.sitkFloat32)
    g = Greedy2D()
    t0 = time.perf_counter()
    g.execute(f"-threads {threads} -V 0 -d 2 -a -dof 6 -i fix mov -ia-image-centers -m NMI -n 100x50x10 -o aff",
              fix=fixed, mov=moving, aff=None)
    g.execute(f"-threads {threads} -V 0 -d 2 -i fix mov -it aff -m NCC 2x2 -n 100x50x20 -s 2.0vox 0.5vox -sv -o warp",
              warp=None)
    seconds = time.perf_counter() - t0
    g.execute(f"-threads {threads} -d 2 -rf fix -rc comp -r warp aff", comp=None)
    field = sitk.Cast(g["comp"], sitk.sitkVectorFloat64)
    det = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field))
    labels = sitk.ReadImage(str(moving_labels_path))
    warped = sitk.Resample(labels, fixed, sitk.DisplacementFieldTransform(sitk.Image(field)), sitk.sitkNearestNeighbor, 0)
    return {"warped": sitk.GetArrayFromImage(warped)[None], "seconds": seconds,
            "folds_pct": 100 * float(np.mean(det <= 0))}


def run_pairs(pairs: Sequence[tuple[int, int]], out_dir: str | Path, methods: Sequence[str], threads: int = 2,
              data_dir: str | Path | None = None, log=print) -> list[dict]:
    """Every method on every (moving, fixed) pair of subjects; ``results.csv`` and ``summary.md`` after each run.
    ``threads``: Greedy's (AD-RegNet runs with the process's torch threads: ``main`` sets them)."""
    data = Path(data_dir) if data_dir is not None else default_data_dir() / DATA
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for moving_subject, fixed_subject in pairs:
        (fixed_path, fixed_labels_path), (moving_path, moving_labels_path) = (_files(fixed_subject, data),
                                                                              _files(moving_subject, data))
        fixed, moving = read_image(fixed_path), read_image(moving_path)
        fixed_labels = read_image(fixed_labels_path, dtype=np.int32)
        moving_labels = read_image(moving_labels_path, dtype=np.int32)
        for method in methods:
            if method == "identity":
                run = {"warped": moving_labels.array, "seconds": 0.0, "folds_pct": 0.0}
            elif method == "greedy":
                run = _greedy(fixed_path, moving_path, moving_labels_path, threads)
            elif is_adregnet_method(method):
                run = _adregnet(method, fixed, moving, moving_labels, threads)
            else:
                raise SystemExit(f"unknown method {method!r}: identity, greedy or an adregnet-* method")
            row = {"pair": f"{moving_subject}->{fixed_subject}", "method": method,
                   "dice": round(dice(fixed_labels.array, run["warped"]), 4), "folds_pct": round(run["folds_pct"], 4),
                   "seconds": round(run["seconds"], 2)}
            rows.append(row)
            log(f"[slices2d] {row['pair']} {method}: Dice {row['dice']:.3f}, folds {row['folds_pct']:.3f} %, "
                f"{row['seconds']:.1f} s")
            with open(out_dir / "results.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(row))
                writer.writeheader()
                writer.writerows(rows)
            (out_dir / "summary.md").write_text(_summary(rows, methods))
    return rows


def _summary(rows: Sequence[dict], methods: Sequence[str]) -> str:
    lines = ["Two people's brain slices (OASIS-TRT-20 slice 118, moving -> fixed subject), Dice over the manual "
             "DKT31/CMA labels with >= 20 pixels; one run each.", "",
             "| method | Dice mean | sd | min | folds (%) max | seconds (median) | pairs |", "|---|---|---|---|---|---|---|"]
    for method in methods:
        done = [r for r in rows if r["method"] == method]
        if done:
            scores = [r["dice"] for r in done]
            lines.append(f"| {method} | {np.mean(scores):.3f} | {statistics.stdev(scores) if len(scores) > 1 else 0:.3f} | "
                         f"{min(scores):.3f} | {max(r['folds_pct'] for r in done):.3f} | "
                         f"{statistics.median(r['seconds'] for r in done):.1f} | {len(done)} |")
    return "\n".join(lines) + "\n"


def _pairs(text: str) -> list[tuple[int, int]]:
    pairs = []
    for item in text.split(","):
        try:
            moving, fixed = (int(v) for v in item.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"pairs are MOVING:FIXED subject numbers (1-20), got {item!r}") from None
        if not (1 <= moving <= 20 and 1 <= fixed <= 20) or moving == fixed:
            raise argparse.ArgumentTypeError(f"pair {item!r}: two different subjects between 1 and 20")
        pairs.append((moving, fixed))
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.slices2d", description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder for results.csv and summary.md")
    parser.add_argument("--pairs", type=_pairs, default=list(DEFAULT_PAIRS),
                        help="comma-separated MOVING:FIXED subjects (default 2:1,4:3,...,20:19)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated (default {','.join(DEFAULT_METHODS)})")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=None, help=f"the {DATA} folder (default: ../shared/data)")
    args = parser.parse_args(argv)
    import torch  # noqa: PLC0415 - the engine's CPU threads, as many as Greedy's

    torch.set_num_threads(args.threads)
    run_pairs(args.pairs, args.output, [m.strip() for m in args.methods.split(",") if m.strip()], args.threads,
              args.data_dir)
    print((args.output / "summary.md").read_text(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
