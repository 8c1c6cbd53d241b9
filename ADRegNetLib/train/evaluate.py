r"""Validation of AD-RegNet weights on held-out synthetic pairs (TRE, Dice, folds), with ablations.

Run from the repository root::

    python -m ADRegNetLib.train.evaluate --weights Resources/weights/adregnet_default.pt --out eval.json

It prints a Markdown table and writes JSON: for the identity transform, the trained network, and the
trained network with each attention part switched off *at inference* (the module is removed and the
remaining weights are kept; the network was not retrained without it — a stress test of how much
the trained network relies on the part, not an equal-budget ablation). ``--ablation-weights
NAME=PATH`` adds networks retrained with a part off.

Held-out pairs: SynthSeg subjects 9 and 10 (never used for training), and new random fields,
crops and intensities on the brain T1, the lung CT and random shapes (those subjects *are* seen in
training, with other fields). Seeded: the same command gives the same pairs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..losses.functional import landmark_loss
from ..model.checkpoint import load_checkpoint, load_model
from ..model.network import ADRegNet, ADRegNetConfig
from ..spatial.flow import disp_mm_to_flow_norm, flow_norm_to_disp_mm
from ..spatial.jacobian import jacobian_determinant
from ..spatial.warp import warp_norm
from .data import SYNTHSEG_VAL, PairSampler, load_sources
from .synthetic import SyntheticPair

__all__ = ["validation_pairs", "evaluate_field", "evaluate_model", "ablated_model", "ABLATIONS", "main"]

ABLATIONS = ("cross_attention", "regional_attention", "multires", "diffeomorphic")


def validation_pairs(n_pairs: int = 16, seed: int = 1234, spacing_mm: float = 2.5,
                     crop_zyx: Sequence[int] = (64, 64, 64), data_root: Optional[Path] = None) -> list[SyntheticPair]:
    """Held-out synthetic pairs (see the module docstring), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    vols = load_sources(["brain_t1", "synthseg", "lung_ct", "shapes"], data_root, spacing_mm, rng, tuple(crop_zyx),
                        synthseg_subjects=SYNTHSEG_VAL)
    sampler = PairSampler(vols, crop_zyx=tuple(crop_zyx))
    return [sampler.sample(rng) for _ in range(n_pairs)]


def _dice_mean(a: np.ndarray, b: np.ndarray) -> float:
    ids = [i for i in np.unique(a) if i != 0]
    scores = []
    for i in ids:
        x, y = a == i, b == i
        denom = x.sum() + y.sum()
        if denom:
            scores.append(2.0 * np.logical_and(x, y).sum() / denom)
    return float(np.mean(scores)) if scores else float("nan")


def evaluate_field(pair: SyntheticPair, flow_norm: torch.Tensor) -> dict:
    """TRE (mm), mean Dice over fixed labels, % voxels with det J <= 0, for a (1, 3, Z, Y, X) normalised flow."""
    g = pair.fixed.geometry
    disp = flow_norm_to_disp_mm(flow_norm.double(), g)
    tre = float(landmark_loss(disp, g, pair.fixed_points, pair.moving_points))
    det = jacobian_determinant(disp, g)
    out = {"tre_mm": tre, "folds_pct": float((det <= 0).double().mean() * 100)}
    if pair.moving_labels is not None:
        lab = torch.as_tensor(pair.moving_labels.array, dtype=torch.float64)[None, None]
        warped = warp_norm(lab, flow_norm.double(), mode="nearest", padding_mode="zeros")[0, 0].numpy()
        out["dice"] = _dice_mean(pair.fixed_labels.array, np.rint(warped).astype(np.int64))
    return out


def _tensor(img) -> torch.Tensor:
    return torch.as_tensor(img.array, dtype=torch.float32)[None, None]


@torch.no_grad()
def evaluate_model(model: Optional[ADRegNet], pairs: Sequence[SyntheticPair]) -> dict:
    """Mean metrics over ``pairs`` (``model=None`` = identity transform); also seconds per pair."""
    rows = []
    for pair in pairs:
        t0 = time.perf_counter()
        if model is None:
            flow = torch.zeros(1, 3, *pair.fixed.geometry.shape)
        else:
            flow = model(_tensor(pair.fixed), _tensor(pair.moving))["flow_norm"]
        seconds = time.perf_counter() - t0
        rows.append({**evaluate_field(pair, flow), "seconds": seconds})
    keys = rows[0].keys()
    summary = {k: float(np.nanmean([r[k] for r in rows if k in r])) for k in keys}
    summary["tre_mm_median"] = float(np.median([r["tre_mm"] for r in rows]))
    summary["pairs"] = len(rows)
    return summary


def ablated_model(path: str | Path, part: str) -> ADRegNet:
    """The trained network of ``path`` with ``part`` switched off at inference (other weights kept)."""
    if part not in ABLATIONS:
        raise ValueError(f"part must be one of {ABLATIONS}, got {part!r}")
    payload = load_checkpoint(path)
    config = replace(ADRegNetConfig.from_dict(dict(payload["config"])), **{part: False})
    model = ADRegNet(config)
    missing, _unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing:
        raise RuntimeError(f"ablating {part} left parameters without weights: {missing[:5]}")
    return model.eval()


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m ADRegNetLib.train.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="AD-RegNet checkpoint (.pt)")
    parser.add_argument("--out", required=True, help="output JSON file")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--spacing", type=float, default=2.5)
    parser.add_argument("--crop", type=int, nargs=3, default=[64, 64, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--ablation-weights", nargs="*", default=[], metavar="NAME=PATH",
                        help="networks retrained with a part off, e.g. no_cross_attention=runs/x/model_final.pt")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pairs = validation_pairs(args.pairs, args.seed, args.spacing, args.crop)
    results = {"identity": evaluate_model(None, pairs)}
    model = load_model(args.weights)
    results["network"] = evaluate_model(model, pairs)
    if not args.no_ablations:
        for part in ABLATIONS:
            results[f"network_without_{part}_at_inference"] = evaluate_model(ablated_model(args.weights, part), pairs)
    for item in args.ablation_weights:
        name, _, path = item.partition("=")
        results[f"retrained_{name}"] = evaluate_model(load_model(path), pairs)
    report = {"weights": str(args.weights), "metadata": getattr(model, "metadata", {}), "pairs": args.pairs,
              "seed": args.seed, "spacing_mm": args.spacing, "crop_zyx": args.crop, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print("| model | TRE mean (mm) | TRE median (mm) | Dice | folds (%) | s/pair |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['tre_mm']:.2f} | {r['tre_mm_median']:.2f} | {r.get('dice', float('nan')):.3f} | "
              f"{r['folds_pct']:.3f} | {r['seconds']:.2f} |")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
