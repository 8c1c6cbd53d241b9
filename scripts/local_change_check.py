r"""One local change in an otherwise still scan: a lesion that grew or shrank, as a follow-up scan shows it.

Builds, from the benchmark's brain case (its fixed image: the real T1 at 2 mm), a moving image that is the same
scan with one radial change about a point ``c`` inside the brain: fixed point ``x`` maps to ``x + u(x)``,
``u(x) = A (x - c) / s exp(-|x - c|^2 / (2 s^2))`` (``A`` > 0 grows, < 0 shrinks; largest displacement
``0.61 |A|`` at ``|x - c| = s``; det J at ``c`` is ``(1 + A / s)^3``). The moving image is the fixed one resampled
through the inverse field (SimpleITK's ``InvertDisplacementField``, cubic B-spline), so outside the change the two
are the same voxels; ``--noise`` adds Gaussian noise (a share of the 99th percentile) to the moving image, as an
independent second acquisition has. Landmarks: 200 random brain points within ``2 s`` of ``c`` ("near") and the
case's first 100 ("far" ones mostly), written beside the moving image. Prints TRE mean (all / near / far), the folding share and the seconds of
``register()`` at each quality as shipped (it looks for a local change: ``engine.local_change``) and with
``find_local_change=False`` ("no search"), with ``--region-radius R`` also with ``local_region`` a sphere of R mm about the
change's centre (``--region-shift`` mm off it), and, with ``--greedy``, of PICSL Greedy at the benchmark's settings
and at the smoothing given by ``--greedy-smoothing``.

Usage (from the repository root; the brain case is built or reused under OUT)::

    .venv/bin/python scripts/local_change_check.py OUT --changes 8:12,4:12,-4:12 --qualities balanced \
        [--noise 0.02] [--region-radius 24 [--region-shift 8,0,0]] [--greedy] \
        [--greedy-smoothing "2.0vox 0.5vox,5.0vox 1.5vox"]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ADRegNetLib.engine import register  # noqa: E402
from ADRegNetLib.io import read_image  # noqa: E402
from ADRegNetLib.spatial.image import Image  # noqa: E402
from ADRegNetLib.spatial.geometry import Geometry  # noqa: E402
from benchmarks.cases import build_case  # noqa: E402
from benchmarks.sampling import grid_points  # noqa: E402

#: the change's centre, brain-mask voxels (x, y, z) from the mask's centroid (off the midline and the ventricles)
CENTRE_OFFSET_VOXELS = (12, 8, 6)
NEAR_LANDMARKS = 200
FAR_LANDMARKS = 100


def radial_change(points: np.ndarray, centre: np.ndarray, amplitude: float, sigma: float) -> np.ndarray:
    """``u(x) = A (x - c) / s exp(-|x - c|^2 / (2 s^2))`` at (N, 3) points, mm."""
    d = points - centre
    return amplitude * d / sigma * np.exp(-np.sum(d * d, axis=-1, keepdims=True) / (2.0 * sigma * sigma))


def build(case_dir: Path, out: Path, amplitude: float, sigma: float, noise: float, seed: int) -> dict:
    """The moving image and landmarks of one change (see the module docstring), written into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    fixed = sitk.ReadImage(str(case_dir / "fixed.nii.gz"), sitk.sitkFloat32)
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "fixed_mask.nii.gz"))) > 0
    inside = np.argwhere(brain)[:, ::-1]  # (x, y, z) voxels
    centre_index = inside.mean(axis=0) + np.asarray(CENTRE_OFFSET_VOXELS, dtype=np.float64)
    centre = np.asarray(fixed.TransformContinuousIndexToPhysicalPoint(centre_index.tolist()))
    disp = radial_change(grid_points(Geometry.from_sitk(fixed)), centre, amplitude, sigma).reshape(
        *fixed.GetSize()[::-1], 3)
    field = sitk.GetImageFromArray(disp.astype(np.float64), isVector=True)
    field.CopyInformation(fixed)
    inverse = sitk.InvertDisplacementField(field, maximumNumberOfIterations=100, maxErrorToleranceThreshold=1e-3,
                                           meanErrorToleranceThreshold=1e-4, enforceBoundaryCondition=False)
    moving = sitk.Resample(fixed, fixed, sitk.DisplacementFieldTransform(inverse), sitk.sitkBSpline, 0.0,
                           sitk.sitkFloat32)
    rng = np.random.default_rng(seed)
    array = sitk.GetArrayFromImage(moving)
    if noise > 0:
        array = array + rng.normal(0.0, noise * np.percentile(array, 99), array.shape).astype(np.float32)
    spacing = np.asarray(fixed.GetSpacing())
    near = inside[np.linalg.norm((inside - centre_index) * spacing, axis=1) < 2.0 * sigma]
    near = near[rng.choice(len(near), min(NEAR_LANDMARKS, len(near)), replace=False)]
    fixed_near = np.array([fixed.TransformContinuousIndexToPhysicalPoint((p + rng.uniform(-0.5, 0.5, 3)).tolist())
                           for p in near])
    fixed_far = np.loadtxt(case_dir / "fixed_landmarks.csv", delimiter=",", skiprows=1)[:FAR_LANDMARKS]
    fixed_points = np.vstack([fixed_near, fixed_far])
    moving_points = fixed_points + radial_change(fixed_points, centre, amplitude, sigma)
    np.savetxt(out / "fixed_landmarks.csv", fixed_points, delimiter=",", header="x,y,z", comments="")
    np.savetxt(out / "moving_landmarks.csv", moving_points, delimiter=",", header="x,y,z", comments="")
    moving_image = sitk.GetImageFromArray(array)
    moving_image.CopyInformation(fixed)
    sitk.WriteImage(moving_image, str(out / "moving.nii.gz"))
    return {"fixed": case_dir / "fixed.nii.gz", "moving": out / "moving.nii.gz", "fixed_points": fixed_points,
            "moving_points": moving_points, "near": len(fixed_near), "centre": centre,
            "det_j_centre": (1.0 + amplitude / sigma) ** 3, "largest_mm": float(np.linalg.norm(disp, axis=-1).max())}


def _row(label: str, mapped: np.ndarray, case: dict, seconds: float, folds: float | None) -> str:
    error = np.linalg.norm(mapped - case["moving_points"], axis=1)
    k = case["near"]
    folds_text = "-" if folds is None else f"{folds:.3f}"
    return (f"| {label} | {error.mean():.3f} | {error[:k].mean():.3f} | {error[k:].mean():.3f} | {folds_text} | "
            f"{seconds:.1f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--changes", default="8:12,4:12,-4:12", help="A:s pairs, mm (amplitude, Gaussian sigma)")
    parser.add_argument("--qualities", default="balanced")
    parser.add_argument("--noise", type=float, default=0.0, help="moving image noise, share of its 99th percentile")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--region-radius", type=float, default=None,
                        help="also register with local_region a sphere of this radius (mm) about the change")
    parser.add_argument("--region-shift", default="0,0,0", help="the sphere's centre off the change's, mm (x,y,z)")
    parser.add_argument("--greedy", action="store_true", help="also PICSL Greedy (pip install picsl-greedy)")
    parser.add_argument("--greedy-smoothing", default="2.0vox 0.5vox", help="comma-separated Greedy -s values")
    args = parser.parse_args(argv)
    out = Path(args.out)
    case = build_case("brain", out / f"s{args.seed}", seed=args.seed)
    fixed = read_image(case.directory / "fixed.nii.gz")
    print("| change | method | TRE all (mm) | near | far | folds (%) | seconds |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.changes.split(","):
        amplitude, sigma = (float(v) for v in spec.split(":"))
        folder = out / f"change_{amplitude:g}_{sigma:g}_noise{args.noise:g}"
        made = build(case.directory, folder, amplitude, sigma, args.noise, args.seed)
        label = f"A {amplitude:g} mm, s {sigma:g} mm (det J at c {made['det_j_centre']:.2f}, largest {made['largest_mm']:.1f} mm)"
        identity = _row(f"{label} | identity", made["fixed_points"], made, 0.0, None)
        print(identity)
        moving = read_image(made["moving"])
        regions = {"": None, ", no search": "off"}
        if args.region_radius is not None:
            centre = made["centre"] + np.asarray([float(v) for v in args.region_shift.split(",")])
            inside = np.linalg.norm(grid_points(fixed.geometry) - centre, axis=1) < args.region_radius
            regions[f" + {args.region_radius:g}-mm region"] = Image(inside.reshape(fixed.geometry.shape).astype(np.uint8),
                                                                    fixed.geometry, "region")
        for quality in args.qualities.split(","):
            for suffix, region in regions.items():
                t0 = time.perf_counter()
                result = register(fixed, moving, quality=quality, compute_inverse=False,
                                  local_region=None if isinstance(region, str) else region,
                                  find_local_change=region != "off")
                seconds = time.perf_counter() - t0
                jac = result.jacobian.array
                print(_row(f"{label} | AD-RegNet {quality}{suffix}", result.transform.map_points(made["fixed_points"]),
                           made, seconds, 100.0 * float(np.mean(jac <= 0))))
        if args.greedy:
            from benchmarks.peers.external import run_greedy  # noqa: PLC0415 - optional peer

            for smoothing in args.greedy_smoothing.split(","):
                peer = run_greedy(made["fixed"], made["moving"], folder / f"greedy_{smoothing.replace(' ', '_')}",
                                  smoothing=smoothing)
                field = sitk.GetImageFromArray(np.moveaxis(peer.disp_mm, 0, -1).astype(np.float64), isVector=True)
                field.CopyInformation(sitk.ReadImage(str(made["fixed"])))
                transform = sitk.DisplacementFieldTransform(field)
                mapped = np.array([transform.TransformPoint(p.tolist()) for p in made["fixed_points"]])
                print(_row(f"{label} | Greedy -s {smoothing}", mapped, made, peer.seconds, None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
