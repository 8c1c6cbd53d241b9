r"""What a fixed mask does to the TRE: each case registered without and with its own ``fixed_mask.nii.gz``.

For each benchmark case folder given (built by ``python -m benchmarks``), ``register()`` runs at the chosen
quality without a mask and with the case's fixed mask, and prints the TRE (the benchmark's own evaluation) and
``metrics.json``'s ``intensity_normalization``. ``--each-own-percentiles`` runs the masked registration as
before the twenty-second session (the fixed image's percentiles inside its mask, the moving image's over all of
it), for the comparison in docs/PERFORMANCE.md ("A fixed mask sets the intensity scale of both images").

Usage (from the repository root)::

    .venv/bin/python scripts/mask_check.py CASE_DIR [CASE_DIR ...] [--quality balanced] [--each-own-percentiles]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import ADRegNetLib.engine.pipeline as pipeline  # noqa: E402
from ADRegNetLib.engine import register  # noqa: E402
from ADRegNetLib.engine.normalization import normalized_for_preset  # noqa: E402
from ADRegNetLib.io import read_image, read_label_map  # noqa: E402
from benchmarks.cases import Case  # noqa: E402
from benchmarks.evaluate import evaluate_field  # noqa: E402


def each_own_percentiles(fixed, moving, modality, ct_window, region, initial=None):
    """The rule before: the fixed image over its region, the moving image over all of itself."""
    return (normalized_for_preset(fixed, modality, ct_window, mask=region),
            normalized_for_preset(moving, modality, ct_window),
            {"fixed": "whole image" if region is None else "region", "moving": "whole image (the rule before)"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", help="benchmark case folders (case.json and fixed_mask.nii.gz inside)")
    parser.add_argument("--quality", default="balanced")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--each-own-percentiles", action="store_true",
                        help="the masked run scales the moving image by its own percentiles (the rule before)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.each_own_percentiles:
        pipeline.normalized_pair = each_own_percentiles
    print("| case | mask | TRE (mm) | intensity_normalization |")
    print("|---|---|---|---|")
    for folder in args.cases:
        case = Case.load(folder)
        fixed, moving = read_image(case.fixed_path, name="fixed"), read_image(case.moving_path, name="moving")
        mask = read_label_map(case.directory / "fixed_mask.nii.gz")
        for fixed_mask in (None, mask):
            result = register(fixed, moving, preset=case.preset, quality=args.quality, device="cpu", seed=0,
                              fixed_mask=fixed_mask, compute_inverse=False)
            tre = evaluate_field(case, result.disp_mm)["tre_mean"]
            print(f"| {Path(folder).name} | {'no' if fixed_mask is None else 'yes'} | {tre:.3f} | "
                  f"{result.metrics['intensity_normalization']} |", flush=True)


if __name__ == "__main__":
    main()
