r"""Clipped images: TRE with and without the fixed image's top cut alike (``engine.normalization``), and CT
stored through a display window (``engine.hounsfield.windowed_calibration``).

Builds variants of benchmark case folders under OUT (the case's own landmarks and true field; only one image's
intensities change) and runs ``register()`` on each, printing one table row per case and quality:

* ``clipP``: the moving image clipped at the P-th percentile of its tissue (voxels above 10 % of its largest
  value), as a display window would;
* ``u8wP``: the moving image stored as 8 bits with the window's top at the P-th percentile of all its voxels;
* ``fclipP`` / ``fu8wP``: the same done to the fixed image instead (left as it is by the engine);
* ``hwLO_HI`` (``fhwLO_HI`` for the fixed image): a CT stored as 8 bits through the display window LO to HI HU
  (``hw-160_240``: soft tissue), ``hwLO_HI_gG`` shown through the curve gamma G;
* ``huS_O`` (``fhuS_O``): a CT whose units are off, S x HU + O (``hu1_300``: 300 HU brighter), still read as CT
  (``engine.hounsfield.ct_disagreement``); ``cbctO_B``: O HU off, a smooth bias of B HU at most (control values
  80 mm apart) and noise of 30 HU, as a cone-beam CT might be;
* ``gammaG`` (``fgammaG``): a CT shown whole through the curve gamma G (scaled to 0-1 by its lowest and highest
  value, float32; ``engine.hounsfield.curved_calibration``).

``--no-cut`` runs the engine without the cut (the rule before the twenty-third session), ``--no-window`` without
reading windowed CT (before the twenty-fourth), ``--no-agree`` without mapping a CT whose units disagree with the
other's and without reading a CT through a curve (``--no-curve``; both before the twenty-fifth), for comparison.

Usage (from the repository root; cases from ``python -m benchmarks -o BENCH --seed S --cases brain,oblique
--methods identity``)::

    .venv/bin/python scripts/clipped_check.py OUT BENCH/cases/brain BENCH/cases/oblique \
        --variants clip90,clip80,u8w80 --qualities fast,balanced [--no-cut]
    .venv/bin/python scripts/clipped_check.py OUT BENCH/cases/lung --variants hw-160_240,fhw-160_240,hw-600_1400 [--no-window]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import ADRegNetLib.engine.hounsfield as hounsfield  # noqa: E402
import ADRegNetLib.engine.pipeline as pipeline  # noqa: E402
from ADRegNetLib.engine import register  # noqa: E402
from ADRegNetLib.io import read_image  # noqa: E402
from benchmarks.cases import Case  # noqa: E402
from ADRegNetLib.spatial.geometry import Geometry  # noqa: E402
from benchmarks.deformations import smooth_noise  # noqa: E402
from benchmarks.evaluate import evaluate_field  # noqa: E402


VARIANT = re.compile(r"^(f?)(clip|u8w)(\d+(?:\.\d+)?)$")
WINDOW = re.compile(r"^(f?)hw(-?\d+)_(-?\d+)(?:_g(\d+(?:\.\d+)?))?$")
UNITS = re.compile(r"^(f?)(hu|cbct)(-?\d+(?:\.\d+)?)_(-?\d+(?:\.\d+)?)$")
CURVE = re.compile(r"^(f?)gamma(\d+(?:\.\d+)?)$")


def clipped(array: np.ndarray, variant: str, geometry=None) -> np.ndarray:
    """``array`` clipped (or its units changed) as ``variant`` says (module docstring); ``geometry``: its grid."""
    curve = CURVE.match(variant)
    if curve:
        values = array.astype(np.float32)
        lowest, highest = float(values.min()), float(values.max())
        return ((values - lowest) / (highest - lowest)) ** np.float32(curve.group(2))
    units = UNITS.match(variant)
    if units:
        _, kind, first, second = units.groups()
        values = array.astype(np.float32)
        if kind == "hu":
            return values * np.float32(first) + np.float32(second)
        bias = smooth_noise(values.shape, geometry, 80.0, np.random.default_rng(7), 1)[0]
        noise = np.random.default_rng(3).normal(0.0, 30.0, values.shape).astype(np.float32)
        return values + float(first) + float(second) * bias / np.abs(bias).max() + noise
    window = WINDOW.match(variant)
    if window:
        low, high, gamma = float(window.group(2)), float(window.group(3)), float(window.group(4) or 1.0)
        shown = ((np.clip(array.astype(np.float32), low, high) - low) / (high - low)) ** gamma
        return np.round(shown * 255.0).astype(np.uint8)
    _, kind, percentile = VARIANT.match(variant).groups()
    if kind == "clip":
        top = np.percentile(array[array > 0.1 * array.max()], float(percentile))
        return np.minimum(array, top).astype(array.dtype)
    low, top = float(array.min()), float(np.percentile(array, float(percentile)))  # u8wP: 8 bits, window top at P
    return np.round((np.minimum(array, top) - low) / (top - low) * 255.0).astype(np.uint8)


def build(source: Path, out: Path, variant: str) -> Path:
    """The case ``source`` with one image clipped, as ``out/<case>-s<seed>_<variant>`` (built once)."""
    seed = json.loads((source / "case.json").read_text()).get("settings", {}).get("seed", "")
    folder = out / f"{source.name}-s{seed}_{variant}"
    if not (folder / "case.json").is_file():
        shutil.copytree(source, folder, dirs_exist_ok=True)
        path = folder / ("fixed.nii.gz" if variant.startswith("f") else "moving.nii.gz")
        image = sitk.ReadImage(str(path))
        result = sitk.GetImageFromArray(clipped(sitk.GetArrayFromImage(image), variant, Geometry.from_sitk(image)))
        result.CopyInformation(image)
        sitk.WriteImage(result, str(path))
        meta = json.loads((folder / "case.json").read_text())
        meta["name"] = folder.name
        (folder / "case.json").write_text(json.dumps(meta, indent=1))
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the built cases")
    parser.add_argument("cases", nargs="+", type=Path, help="benchmark case folders (case.json inside)")
    parser.add_argument("--variants", default="clip90,clip80,clip60,u8w80")
    parser.add_argument("--qualities", default="fast,balanced")
    parser.add_argument("--no-cut", action="store_true", help="without the fixed image's top cut (the rule before)")
    parser.add_argument("--no-window", action="store_true", help="without reading windowed CT (the rule before)")
    parser.add_argument("--no-agree", action="store_true", help="without mapping disagreeing CT units (the rule before)")
    parser.add_argument("--no-curve", action="store_true", help="without reading a CT through a curve (the rule before)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants.split(",")
               if not (VARIANT.match(v) or WINDOW.match(v) or UNITS.match(v) or CURVE.match(v))]
    if unknown:
        parser.error(f"unknown variants {unknown}: clipP, u8wP, fclipP or fu8wP (P a percentile), [f]hwLO_HI[_gG], "
                     "[f]huS_O, [f]cbctO_B, [f]gammaG")
    torch.set_num_threads(args.threads)
    if args.no_cut:
        pipeline.matched_top = lambda fixed_w, *rest: (fixed_w, {"applied": False, "reason": "--no-cut"})
    if args.no_window:
        hounsfield.windowed_calibration = lambda image, ct: None
    if args.no_agree:
        hounsfield.ct_disagreement = lambda fixed, moving: None
    if args.no_curve:
        hounsfield.curved_calibration = lambda image, ct: None
    print("| case | quality | TRE (mm) | p95 | moving plateau share | fixed value cut at | read as (HU) |")
    print("|---|---|---|---|---|---|---|")
    for source in args.cases:
        for variant in args.variants.split(","):
            case = Case.load(build(source, args.out, variant))
            fixed, moving = read_image(case.fixed_path, name="fixed"), read_image(case.moving_path, name="moving")
            for quality in args.qualities.split(","):
                result = register(fixed, moving, preset=case.preset, quality=quality, device="cpu", seed=0,
                                  compute_inverse=False)
                tre = evaluate_field(case, result.disp_mm)
                cut = result.metrics["intensity_normalization"].get("fixed_top_cut", {})
                print(f"| {case.name} | {quality} | {tre['tre_mean']:.3f} | {tre['tre_p95']:.2f} | "
                      f"{cut.get('moving_plateau_share', '-')} | "
                      f"{cut.get('fixed_value', '-') if cut.get('applied') else 'not cut'} | "
                      f"{_read_as(result.metrics.get('hounsfield_calibration'))} |", flush=True)


def _read_as(hounsfield) -> str:
    """The table's last column: the window read, or the map of a CT's units (``hounsfield_calibration``)."""
    if not hounsfield:
        return "-"
    if "window_hu" in hounsfield:
        return str(hounsfield["window_hu"])
    if "range_hu" in hounsfield:
        return f"{hounsfield['image']}: {hounsfield['range_hu']} through gamma {hounsfield['display_gamma']}"
    return f"{hounsfield['image']}: {hounsfield['scale']} x + {hounsfield['offset']}"


if __name__ == "__main__":
    main()
