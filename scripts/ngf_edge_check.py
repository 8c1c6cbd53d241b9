r"""The edge parameter of normalised gradient fields from the images' noise (``engine.refinement_stage.ngf_edge``):
TRE with the rule and with the former fixed 0.0025 per mm.

Each benchmark case (built by ``benchmarks.cases`` under OUT, ``name@seed``) and the bundled demo pair (``demo``,
TRE on its landmarks, which only measure) is registered with its images changed by each variant of
``scripts/sharpness_check.py`` (``none``, ``hu:H`` noise of H HU on the moving image, ``fhu:H`` on the fixed one,
...), once per mode: ``rule`` (the engine as shipped) or ``fixed`` (``ngf_edge`` replaced by the floor). Prints one
table row per run: TRE mean, the edge parameter used, the two working images' noise, seconds.

Usage (from the repository root)::

    .venv/bin/python scripts/ngf_edge_check.py OUT --cases lung,lung@1,demo --variants none,hu:100 \
        --modes fixed,rule --quality balanced
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import ADRegNetLib.engine.refinement_stage as refinement_stage  # noqa: E402
from ADRegNetLib.engine import register  # noqa: E402
from ADRegNetLib.io import read_image, read_landmarks  # noqa: E402
from ADRegNetLib.spatial.transform import map_points  # noqa: E402
from benchmarks.cases import build_case  # noqa: E402
from benchmarks.evaluate import evaluate_field  # noqa: E402
from sharpness_check import changed_pair  # noqa: E402

SAMPLE = REPO / "Resources" / "SampleData"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="folder for the benchmark cases")
    parser.add_argument("--cases", default="lung,demo", help="benchmark cases as name or name@seed, and demo")
    parser.add_argument("--variants", default="none,hu:100")
    parser.add_argument("--modes", default="fixed,rule")
    parser.add_argument("--quality", default="balanced")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rule = refinement_stage.ngf_edge

    def fixed_edge(fixed_w, moving_w, work, floor):
        return {"eps_per_mm": floor, "noise_std": None, "noise_gradient_per_mm": None}

    print("| case | change | mode | TRE (mm) | edge parameter (per mm) | noise (fixed, moving) | s |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.cases.split(","):
        if spec == "demo":
            fixed, moving = (read_image(SAMPLE / f"lung_{r}.nii.gz", name=r) for r in ("fixed", "moving"))
            points = [read_landmarks(SAMPLE / f"lung_{r}_landmarks.csv") for r in ("fixed", "moving")]
            preset = "lung-ct"

            def tre(disp_mm, fixed=fixed, points=points):
                mapped = map_points(np.asarray(disp_mm, np.float32), fixed.geometry, points[0])
                return float(np.linalg.norm(mapped - points[1], axis=1).mean())
        else:
            name, _, seed = spec.partition("@")
            case = build_case(name, Path(args.out) / f"s{int(seed or 0)}", seed=int(seed or 0))
            fixed, moving = read_image(case.fixed_path, name="fixed"), read_image(case.moving_path, name="moving")
            preset = case.preset

            def tre(disp_mm, case=case):
                return evaluate_field(case, disp_mm)["tre_mean"]
        for variant in args.variants.split(","):
            fixed_v, moving_v = changed_pair(fixed, moving, variant)
            for mode in args.modes.split(","):
                refinement_stage.ngf_edge = rule if mode == "rule" else fixed_edge
                start = time.perf_counter()
                result = register(fixed_v, moving_v, preset=preset, quality=args.quality, seed=0,
                                  compute_inverse=False)
                seconds = time.perf_counter() - start
                edge = result.metrics["refinement"].get("ngf_edge", {})
                print(f"| {spec} | {variant} | {mode} | {tre(result.disp_mm):.3f} | {edge.get('eps_per_mm')} | "
                      f"{edge.get('noise_std')} | {seconds:.1f} |", flush=True)
    refinement_stage.ngf_edge = rule


if __name__ == "__main__":
    main()
