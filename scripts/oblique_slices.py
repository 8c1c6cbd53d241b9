r"""TRE when one image of a benchmark case is re-sliced onto an oblique, thick-sliced grid.

For each case folder the moving (or fixed) image is resampled onto a grid turned by ``--degrees``
about x and half that about y, around the image centre, on a fine in-plane grid (``--in-plane`` mm),
given a Gaussian slice profile of FWHM ``--slice`` mm along the turned z, then sampled every
``--slice`` mm: an oblique thick-sliced acquisition of the same anatomy (SimpleITK, linear
interpolation, zero outside). The landmarks and the known field do not change. ``register()`` runs at
each quality; printed: the initial and final TRE (mm), the seconds and the resolution matching the
engine applied (``metrics.json`` ``resolution_matching``). The figures behind the oblique rows of
``docs/benchmarks/wave13-2026-12-01.md`` (section 4).

Usage (from the repository root)::

    .venv/bin/python scripts/oblique_slices.py CASE_DIR [CASE_DIR ...] [--image moving] [--degrees 20]
        [--slice 5] [--in-plane 1.2] [--qualities fast,balanced]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ADRegNetLib.engine import register  # noqa: E402
from ADRegNetLib.io import read_image  # noqa: E402
from benchmarks.cases import Case  # noqa: E402


def _turn(degrees: float) -> np.ndarray:
    a, b = np.deg2rad(degrees), np.deg2rad(degrees / 2.0)
    about_x = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])
    about_y = np.array([[np.cos(b), 0.0, np.sin(b)], [0.0, 1.0, 0.0], [-np.sin(b), 0.0, np.cos(b)]])
    return about_x @ about_y


def oblique_slices(path: Path, degrees: float, slice_mm: float, in_plane_mm: float, out: Path) -> Path:
    """Write ``path`` re-sliced as the module docstring says to ``out``."""
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    direction = _turn(degrees)
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint((np.array(image.GetSize()) - 1) / 2.0))

    def grid(spacing: np.ndarray, size: np.ndarray) -> tuple[list, list, list, list]:
        origin = centre - direction @ ((size - 1) * spacing / 2.0)
        return [int(v) for v in size], origin.tolist(), spacing.tolist(), direction.flatten().tolist()

    fine_spacing = np.full(3, in_plane_mm)
    fine_size = np.ceil(extent * 1.15 / fine_spacing).astype(int)  # the turned grid covers the corners
    size, origin, spacing, axes = grid(fine_spacing, fine_size)
    fine = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, origin, spacing, axes, 0.0, sitk.sitkFloat32)
    profile = sitk.RecursiveGaussianImageFilter()
    profile.SetSigma(slice_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))))
    profile.SetDirection(2)
    fine = profile.Execute(fine)
    thick_spacing = fine_spacing.copy()
    thick_spacing[2] = slice_mm
    thick_size = fine_size.copy()
    thick_size[2] = int(round(fine_size[2] * in_plane_mm / slice_mm))
    size, origin, spacing, axes = grid(thick_spacing, thick_size)
    sitk.WriteImage(sitk.Resample(fine, size, sitk.Transform(), sitk.sitkLinear, origin, spacing, axes, 0.0,
                                  sitk.sitkFloat32), str(out))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="+", type=Path, help="benchmark case folders (python -m benchmarks ...)")
    parser.add_argument("--image", choices=("moving", "fixed"), default="moving")
    parser.add_argument("--degrees", type=float, default=20.0)
    parser.add_argument("--slice", type=float, default=5.0, help="slice spacing and profile FWHM, mm")
    parser.add_argument("--in-plane", type=float, default=1.2, help="in-plane spacing, mm")
    parser.add_argument("--qualities", default="fast,balanced")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp())
    for folder in args.cases:
        case = Case.load(folder)
        paths = {"fixed": case.fixed_path, "moving": case.moving_path}
        paths[args.image] = oblique_slices(paths[args.image], args.degrees, args.slice, args.in_plane,
                                           scratch / f"{args.image}.nii.gz")
        fixed, moving = read_image(paths["fixed"]), read_image(paths["moving"])
        fixed_points, moving_points = case.fixed_landmarks(), case.moving_landmarks()
        initial = np.linalg.norm(fixed_points - moving_points, axis=1).mean()
        print(f"{folder}: {args.image} on {args.degrees:g}-degree {args.in_plane:g} x {args.in_plane:g} x "
              f"{args.slice:g} mm slices, initial TRE {initial:.3f} mm", flush=True)
        for quality in args.qualities.split(","):
            t0 = time.perf_counter()
            result = register(fixed, moving, preset=case.preset, quality=quality, seed=0, compute_inverse=False)
            seconds = time.perf_counter() - t0
            err = np.linalg.norm(result.transform.map_points(fixed_points) - moving_points, axis=1)
            coarse = (result.metrics["instance_optimization"] or {}).get("coarse_start") or {}
            local = (result.metrics["refinement"] or {}).get("local_continuation") or {}
            print(f"  {quality:>8s}  TRE {err.mean():.3f} mm  {seconds:.1f} s  resolution matching "
                  f"{result.metrics['resolution_matching']}; coarse start kept {coarse.get('kept')}, "
                  f"continuation {local.get('applied')}", flush=True)


if __name__ == "__main__":
    main()
