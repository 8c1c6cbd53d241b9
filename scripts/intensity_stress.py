r"""TRE of ``register()`` when the moving image of a benchmark case gets a further intensity change.

For each case folder and each (gamma, bias amplitude) pair the moving image is re-expressed as
``(m / p99.5) ** gamma * exp(amplitude * b) * p99.5``, with ``b`` one smooth random field (control
values 80 mm apart, the benchmark's own bias generator, seed 7), and registered at the given quality;
the known field of the case gives the TRE (the landmarks and the deformation do not change). The
figures behind the stress paragraph of docs/PERFORMANCE.md, "Gain-normalised refinement" (brain
seeds 0 and 1, balanced; the "before" column is the same command at the commit before that change),
and the README's strong-bias row ("Where it is weaker").

Usage (from the repository root)::

    .venv/bin/python scripts/intensity_stress.py CASE_DIR [CASE_DIR ...] [--quality balanced]
        [--changes 1:0,0.5:0,2:0,1:0.5,0.5:0.5,2:0.5]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ADRegNetLib.engine import register  # noqa: E402
from ADRegNetLib.io import read_image  # noqa: E402
from ADRegNetLib.spatial.image import Image  # noqa: E402
from benchmarks.cases import Case  # noqa: E402
from benchmarks.deformations import smooth_noise  # noqa: E402
from benchmarks.evaluate import evaluate_field  # noqa: E402


def bias_field(moving: Image) -> np.ndarray:
    """The smooth random field ``b`` of the module docstring, on the moving grid (seed 7)."""
    return smooth_noise(moving.array.shape, moving.geometry, 80.0, np.random.default_rng(7), 1)[0]


def changed(moving: Image, bias: np.ndarray, gamma: float, amplitude: float) -> Image:
    """The moving image with a further gamma and the bias field ``bias`` times ``amplitude``."""
    hi = float(np.percentile(moving.array, 99.5)) or 1.0
    arr = np.clip(moving.array / hi, 0, None) ** gamma * np.exp(amplitude * bias) * hi
    return Image(arr.astype(np.float32), moving.geometry, "moving")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", help="benchmark case folders (case.json inside)")
    parser.add_argument("--quality", default="balanced")
    parser.add_argument("--changes", default="1:0,0.5:0,2:0,1:0.5,0.5:0.5,2:0.5",
                        help="comma-separated gamma:bias-amplitude pairs (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    changes = [tuple(float(v) for v in pair.split(":")) for pair in args.changes.split(",")]
    print("| case | gamma | bias amplitude | TRE (mm) | refined as | why |")
    print("|---|---|---|---|---|---|")
    for folder in args.cases:
        case = Case.load(folder)
        fixed, moving = read_image(case.fixed_path, name="fixed"), read_image(case.moving_path, name="moving")
        bias = bias_field(moving)  # one field per case, as many changes as asked
        for gamma, amplitude in changes:
            result = register(fixed, changed(moving, bias, gamma, amplitude), preset=case.preset, quality=args.quality,
                              device="cpu", seed=0, compute_inverse=False)
            tre = evaluate_field(case, result.disp_mm)["tre_mean"]
            refinement = result.metrics.get("refinement") or {}
            print(f"| {folder} | {gamma:g} | {amplitude:g} | {tre:.3f} | {refinement.get('contrasts', '-')} | "
                  f"{result.metrics['multimodal_reason']} |", flush=True)


if __name__ == "__main__":
    main()
