r"""How the engine fares on deformations other than the benchmark's: larger, or more local.

The benchmark's cases all use a mean true displacement of 4-5 mm and random velocity control values
40 mm apart (``benchmarks.recipes``). This script builds the same kinds of case (same anatomy, same
generator, same intensity changes) with another mean size and control spacing, named
``<case>_m<mean>_c<spacing>`` (e.g. ``brain:4:20``: brain, 4 mm mean, control values 20 mm apart,
a more local deformation; the lung cases' breathing-like field has no control spacing, only
its size changes), and runs ``register()`` on each at the chosen qualities, printing the
landmark TRE (mean, 95th percentile), the seconds and the share of folding voxels.

``--compare-local`` runs each quality twice, without the refinement's continuation with less
smoothing (``QualitySettings.local_steps`` set to 0) and as shipped, and says whether it ran and the
refinement's gain (the thirteenth session's table in ``docs/benchmarks/wave13-2026-12-01.md``:
``brain:3:15``, ``brain:8:25``, ``brain:8:40``, ``brain:4:30``, ``brain:2:20``, ``brain:6:60``).

Usage (from the repository root; cases are cached under OUT/s<seed>)::

    .venv/bin/python scripts/deformation_families.py OUT brain:4:20 brain:6:30 lung:10:0 \
        --seed 1 --qualities fast,balanced [--compare-local] [--greedy]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import ADRegNetLib.engine.pipeline as pipeline  # noqa: E402
from ADRegNetLib.engine import QUALITIES, register  # noqa: E402
from ADRegNetLib.io import read_image  # noqa: E402
from benchmarks import recipes  # noqa: E402
from benchmarks.cases import build_case  # noqa: E402


def family_case(spec: str, out_dir: Path, seed: int):
    """Build (or reuse) the case ``CASE:MEAN_MM:CONTROL_SPACING_MM`` under ``out_dir/s<seed>``."""
    try:
        base, mean, spacing = spec.split(":")
        mean_mm, spacing_mm = float(mean), float(spacing)
    except ValueError:
        raise SystemExit(f"case spec {spec!r} must be CASE:MEAN_MM:CONTROL_SPACING_MM, e.g. brain:4:20") from None
    if base not in recipes.RECIPES:
        raise SystemExit(f"unknown case {base!r}; expected one of {', '.join(recipes.CASE_NAMES)}")
    name = f"{base}_m{mean}_c{spacing}"
    recipes.RECIPES[name] = dataclasses.replace(recipes.RECIPES[base], name=name, target_mean_mm=mean_mm,
                                                control_spacing_mm=spacing_mm)
    return build_case(name, out_dir / f"s{seed}", seed=seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder for the cases")
    parser.add_argument("cases", nargs="+", help="CASE:MEAN_MM:CONTROL_SPACING_MM, e.g. brain:4:20")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--qualities", default="balanced")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compare-local", action="store_true",
                        help="each quality without and with the refinement's continuation with less smoothing")
    parser.add_argument("--greedy", action="store_true",
                        help="also PICSL Greedy at the benchmark's settings (pip install picsl-greedy)")
    args = parser.parse_args(argv)
    qualities = args.qualities.split(",")
    unknown = [q for q in qualities if q not in QUALITIES]
    if unknown:
        raise SystemExit(f"unknown quality {unknown[0]!r}; expected one of {', '.join(QUALITIES)}")
    torch.set_num_threads(args.threads)
    for spec in args.cases:
        case = family_case(spec, args.out, args.seed)
        info = case.info
        print(f"{case.name} seed {args.seed}: initial TRE {info['initial_tre_mean_mm']:.2f} mm "
              f"(p95 {info['initial_tre_p95_mm']:.2f}), true det J in [{info['true_jacobian_min']:.2f}, "
              f"{info['true_jacobian_max']:.2f}]", flush=True)
        fixed, moving = read_image(case.directory / "fixed.nii.gz"), read_image(case.directory / "moving.nii.gz")
        fixed_points, moving_points = case.fixed_landmarks(), case.moving_landmarks()
        for quality in qualities:
            shipped = pipeline.QUALITY_SETTINGS[quality]
            for local in ((False, True) if args.compare_local else (True,)):
                pipeline.QUALITY_SETTINGS[quality] = (shipped if local else
                                                      dataclasses.replace(shipped, local_steps=0))
                try:
                    t0 = time.perf_counter()
                    result = register(fixed, moving, preset=case.preset, quality=quality, seed=0,
                                      compute_inverse=False)
                    seconds = time.perf_counter() - t0
                finally:
                    pipeline.QUALITY_SETTINGS[quality] = shipped
                err = np.linalg.norm(result.transform.map_points(fixed_points) - moving_points, axis=1)
                folds = result.metrics["jacobian"].get("folding_fraction")
                continuation = (result.metrics.get("refinement") or {}).get("local_continuation") or {}
                label = "" if not args.compare_local else ("  with continuation" if local else "  without")
                extra = (f"  refinement gain {continuation['refinement_gain']:.4f}, continuation "
                         f"{'ran' if continuation['applied'] else 'not run'}") if continuation and local else ""
                print(f"  {quality:>8s}{label}  TRE {err.mean():.3f} mm (p95 {np.percentile(err, 95):.2f})  "
                      f"{seconds:.1f} s  network used {result.metrics['network_used']}  folding {folds}{extra}",
                      flush=True)
        if args.greedy:
            print(f"  {'Greedy':>8s}  {_greedy(case, fixed_points, moving_points, args.threads)}", flush=True)


def _greedy(case, fixed_points: np.ndarray, moving_points: np.ndarray, threads: int) -> str:
    """PICSL Greedy on one case at the benchmark's settings (``benchmarks.peers.external.run_greedy``): TRE, seconds."""
    import SimpleITK as sitk  # noqa: PLC0415 - only with --greedy

    from benchmarks.peers.external import run_greedy  # noqa: PLC0415 - optional peer

    fixed_path = case.directory / "fixed.nii.gz"
    peer = run_greedy(fixed_path, case.directory / "moving.nii.gz", case.directory / "greedy", threads=threads)
    field = sitk.GetImageFromArray(np.moveaxis(peer.disp_mm, 0, -1).astype(np.float64), isVector=True)
    field.CopyInformation(sitk.ReadImage(str(fixed_path)))
    transform = sitk.DisplacementFieldTransform(field)
    err = np.linalg.norm(np.array([transform.TransformPoint(p.tolist()) for p in fixed_points]) - moving_points, axis=1)
    return f"TRE {err.mean():.3f} mm (p95 {np.percentile(err, 95):.2f})  {peer.seconds:.1f} s"


if __name__ == "__main__":
    main()
