r"""The network alone on synthetic pairs of each source kind, training subjects and held-out ones apart.

Pairs as in the model card's held-out table (64³ crops at the prepared spacing, mean field 1–6 mm,
seeded), 12 per source kind and split, one pass: the gap between subjects seen in training and
subjects never seen, per kind (SynthSeg label maps, random shapes, brain T1, thorax CT).

Usage (from the repository root)::

    .venv/bin/python scripts/network_per_source.py [--weights Resources/weights/adregnet_default.pt]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ADRegNetLib.model.checkpoint import load_model  # noqa: E402
from ADRegNetLib.train.evaluate import evaluate_model, evaluation_pairs  # noqa: E402
from ADRegNetLib.train.sampler import load_prepared  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=str(REPO / "Resources" / "weights" / "adregnet_default.pt"))
    parser.add_argument("--prepared", default="runs/prepared")
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(args.weights).eval()
    print("| split | kind | volumes | identity TRE (mm) | network TRE (mm) | reduction |")
    print("|---|---|---|---|---|---|")
    for split in ("train", "heldout"):
        volumes = load_prepared(args.prepared, split)
        for kind in sorted({v.kind for v in volumes}):
            chosen = [v for v in volumes if v.kind == kind]
            r = evaluate_model(model, evaluation_pairs(chosen, args.pairs, args.seed))
            print(f"| {split} | {kind} | {len(chosen)} | {r['identity_tre_mm']:.2f} | {r['tre_mm']:.2f} | "
                  f"{r['tre_reduction_pct']:.0f}% |", flush=True)


if __name__ == "__main__":
    main()
