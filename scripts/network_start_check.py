r"""Does ``balanced`` gain from the network's start? TRE and stage times with and without it, same run.

For each benchmark case folder given (built by ``python -m benchmarks``), ``register()`` runs at the
chosen quality with the network and with ``use_network=False``, back to back, and prints the TRE
(the benchmark's own evaluation), whether the prediction was kept, and the seconds of the network,
the MIND optimisation levels and the local-NCC refinement (``metrics.json["timings_s"]``).

Usage (from the repository root; pause other jobs, times are ratios within a case)::

    .venv/bin/python scripts/network_start_check.py CASE_DIR [CASE_DIR ...] [--quality balanced]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ADRegNetLib.engine import register  # noqa: E402
from ADRegNetLib.io import read_image  # noqa: E402
from benchmarks.cases import Case  # noqa: E402
from benchmarks.evaluate import evaluate_field  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", help="benchmark case folders (case.json inside)")
    parser.add_argument("--quality", default="balanced")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("| case | network | kept | TRE (mm) | network (s) | optimisation levels (s) | refinement (s) | optimisation + refinement (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in args.cases:
        case = Case.load(folder)
        fixed, moving = read_image(case.fixed_path, name="fixed"), read_image(case.moving_path, name="moving")
        for use_network in (True, False):
            result = register(fixed, moving, preset=case.preset, quality=args.quality, device="cpu", seed=0,
                              use_network=use_network, compute_inverse=False)
            tre = evaluate_field(case, result.disp_mm)["tre_mean"]
            m, t = result.metrics, result.metrics["timings_s"]
            levels = [round(level["seconds"], 2) for level in (m.get("instance_optimization") or {}).get("levels", [])]
            work = t.get("optimize", 0.0) + t.get("refine", 0.0)
            print(f"| {Path(folder).name} | {'yes' if use_network else 'no'} | {'yes' if m['network_used'] else 'no'} | "
                  f"{tre:.3f} | {t.get('network', 0.0):.2f} | {levels} | {t.get('refine', 0.0):.2f} | {work:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
