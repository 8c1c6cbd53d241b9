r"""One image blurrier than the other on the same grid (``engine/sharpness.py``): TRE without and with the match.

Each benchmark case (built by ``benchmarks.cases`` under OUT) is registered with its moving image changed by each
variant, once with the sharpness match and once without (``engine.pipeline.matched_sharpness`` replaced by a
pass-through for that run). Prints one table row per run: TRE mean, the blur the engine measured and applied
(``metrics.json`` ``sharpness_matching``), seconds.

Variants (the moving image's array on its own grid): ``none``; ``blur:S`` a Gaussian of S voxels; ``blurz:S`` the
same along z only; ``thick:K`` K slices averaged into one and linearly interpolated back onto the grid (a thick-sliced
scan resampled onto a thin grid); ``noise:F`` Gaussian noise of F times the 1-99 percentile range; ``hu:H`` noise of H
(Hounsfield units on CT); ``circle:V`` everything outside the cylinder along z inscribed in the grid set to V (a
scanner's circular field of view). A leading ``f`` (``fblur:1``) changes the fixed image instead.

Usage (from the repository root)::

    .venv/bin/python scripts/sharpness_check.py OUT --cases brain,lung --variants none,blur:1,thick:3 \
        --seed 0 --quality balanced
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

import ADRegNetLib.engine.pipeline as pipeline  # noqa: E402
from ADRegNetLib.engine import register  # noqa: E402
from ADRegNetLib.io import read_image  # noqa: E402
from ADRegNetLib.spatial.filters import gaussian_smooth  # noqa: E402
from ADRegNetLib.spatial.image import Image  # noqa: E402
from benchmarks.cases import build_case  # noqa: E402
from benchmarks.evaluate import evaluate_field  # noqa: E402


def changed(image: Image, variant: str) -> Image:
    """The moving image changed by one variant (see the module docstring)."""
    kind, _, value = variant.partition(":")
    array = np.ascontiguousarray(image.array, dtype=np.float32)
    volume = torch.from_numpy(array)[None, None]
    if kind == "none":
        return image
    if kind == "blur":
        return image.with_array(gaussian_smooth(volume, float(value))[0, 0].numpy())
    if kind == "blurz":
        return image.with_array(gaussian_smooth(volume, (float(value), 0.0, 0.0))[0, 0].numpy())
    if kind == "thick":
        k = int(value)
        slabs = array[:(array.shape[0] // k) * k].reshape(array.shape[0] // k, k, *array.shape[1:]).mean(axis=1)
        centres = np.arange(len(slabs)) * k + (k - 1) / 2.0
        z = np.clip(np.arange(array.shape[0], dtype=np.float64), centres[0], centres[-1])
        low = np.clip(np.searchsorted(centres, z, side="right") - 1, 0, len(centres) - 2)
        weight = ((z - centres[low]) / k)[:, None, None]
        return image.with_array((slabs[low] * (1 - weight) + slabs[low + 1] * weight).astype(np.float32))
    if kind == "circle":  # a scanner's circular field of view: outside a cylinder along z set to the value given
        yy, xx = np.indices(array.shape[1:])
        radius = 0.5 * min(array.shape[1:])
        centre = np.array(array.shape[1:]) / 2.0 - 0.5
        outside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 > radius ** 2
        out = array.copy()
        out[:, outside] = float(value)
        return image.with_array(out)
    rng = np.random.default_rng(5)
    if kind == "noise":
        scale = float(np.percentile(array, 99) - np.percentile(array, 1))
        return image.with_array(array + rng.normal(0.0, float(value) * scale, array.shape).astype(np.float32))
    if kind == "hu":
        return image.with_array(array + rng.normal(0.0, float(value), array.shape).astype(np.float32))
    raise ValueError(f"unknown variant {variant!r} (none, blur:S, blurz:S, thick:K, noise:F, hu:H)")


def changed_pair(fixed: Image, moving: Image, variant: str) -> tuple[Image, Image]:
    """(fixed, moving) with one of them changed by ``variant`` (a leading ``f``: the fixed image)."""
    if variant.startswith("f"):
        return changed(fixed, variant[1:]), moving
    return fixed, changed(moving, variant)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="folder for the benchmark cases")
    parser.add_argument("--cases", default="brain,lung")
    parser.add_argument("--variants", default="none,blur:1,blurz:1.5,thick:3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality", default="balanced")
    parser.add_argument("--modes", default="without,with", help="without, with, or both (comma-separated)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    matched = pipeline.matched_sharpness

    def unmatched(fixed_w, moving_w, *args):
        return fixed_w, moving_w, {"applied": False, "reason": "switched off by scripts/sharpness_check.py"}

    print("| case | change | match | TRE (mm) | applied (fixed / moving, z y x) | measured | s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        case = build_case(name, Path(args.out) / f"s{args.seed}", seed=args.seed)
        fixed = read_image(case.fixed_path, name="fixed")
        moving = read_image(case.moving_path, name="moving")
        for variant in args.variants.split(","):
            fixed_v, moving_v = changed_pair(fixed, moving, variant)
            for mode in args.modes.split(","):
                pipeline.matched_sharpness = matched if mode == "with" else unmatched
                start = time.perf_counter()
                result = register(fixed_v, moving_v, preset=case.preset, quality=args.quality, seed=0,
                                  compute_inverse=False)
                seconds = time.perf_counter() - start
                info = result.metrics["sharpness_matching"]
                tre = evaluate_field(case, result.disp_mm)["tre_mean"]
                print(f"| {name} | {variant} | {mode} | {tre:.3f} | {info.get('fixed_blur_voxels')} / "
                      f"{info.get('moving_blur_voxels')} | {info.get('measured')} | {seconds:.1f} |", flush=True)
    pipeline.matched_sharpness = matched


if __name__ == "__main__":
    main()
