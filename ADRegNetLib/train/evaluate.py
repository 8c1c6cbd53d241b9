r"""Held-out evaluation of AD-RegNet weights on synthetic pairs with known fields (TRE, Dice, folds).

    python -m ADRegNetLib.train.evaluate --weights Resources/weights/adregnet_default.pt \
        --prepared runs/prepared --out Resources/weights/evaluation.json

Held-out pairs come only from subjects never used for training: SynthSeg subjects 9 and 10
(images synthesised from their labels with random contrasts) and two held-out random-shape
volumes (``split == "heldout"`` in the prepared files), each with new random fields, crops and
intensities. ``--seen`` adds a second table on the training subjects (the brain T1 and the thorax
CT) with new fields: a check of fit, not of generalisation. Seeded: the same command gives the
same pairs.

Metrics per pair: TRE = mean over all foreground voxels of the fixed crop of |u_pred(x) - u_true(x)|
in mm (every foreground voxel is a landmark); Dice = mean over the labels of the fixed crop after
warping the moving labels; folds = % voxels with det J <= 0 of the predicted field.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..model.checkpoint import load_model
from ..model.inference import predict_in_passes
# ADRegNetLib.numbers, not ADRegNetLib.io.numbers: ADRegNetLib/io/__init__.py imports SimpleITK, which the GPU
# host does not have.
from ..numbers import TORCH_MAX_SEED, argument_type
from ..spatial.flow import vector_length
from ..spatial.geometry import Geometry
from ..spatial.jacobian import jacobian_determinant
from ..spatial.transforms import resize_flow
from .sampler import PairBatch, PairSampler, PreparedVolume, load_prepared
from .synthetic import norm_to_mm, warp

__all__ = ["evaluation_pairs", "heldout_pairs", "evaluate_field", "evaluate_model", "build_parser", "main"]


def evaluation_pairs(volumes: Sequence[PreparedVolume], n_pairs: int = 12, seed: int = 1234,
                     crop_zyx: Sequence[int] = (64, 64, 64)) -> list[PairBatch]:
    """Reproducible evaluation pairs (batch 1 each, CPU) of ``volumes``: mean field 1-6 mm, 25-50 mm smooth."""
    sampler = PairSampler(volumes, crop_zyx, mean_disp_mm=(1.0, 6.0), smoothness_mm=(25.0, 50.0))
    gen = torch.Generator().manual_seed(seed)
    return [sampler.sample(1, gen) for _ in range(n_pairs)]


def heldout_pairs(prepared_dir: str | Path, n_pairs: int = 12, seed: int = 1234,
                  crop_zyx: Sequence[int] = (64, 64, 64), seen: bool = False) -> list[PairBatch]:
    """:func:`evaluation_pairs` of the held-out subjects, or of training subjects if ``seen``."""
    if seen:
        vols = load_prepared(prepared_dir, "train", kinds=("brain_t1", "lung_ct"))
    else:
        vols = load_prepared(prepared_dir, "heldout")
    return evaluation_pairs(vols, n_pairs, seed, crop_zyx)


def _dice_mean(a: torch.Tensor, b: torch.Tensor) -> float:
    scores = []
    for i in torch.unique(a).tolist():
        if i == 0:
            continue
        x, y = a == i, b == i
        denom = int(x.sum() + y.sum())
        if denom:
            scores.append(2.0 * float((x & y).sum()) / denom)
    return float(np.mean(scores)) if scores else float("nan")


def evaluate_field(pair: PairBatch, disp_mm: torch.Tensor) -> dict:
    """TRE (mm), Dice and folds (%) of a (1, 3, Z, Y, X) predicted field in mm along the voxel axes."""
    fg = pair.fixed_labels[0, 0] > 0
    err = vector_length((disp_mm - pair.disp_mm)[0], dim=0)
    geometry = Geometry(tuple(pair.fixed.shape[2:][::-1]), spacing=(pair.spacing_mm,) * 3)
    det = jacobian_determinant(disp_mm.double(), geometry)
    warped = warp(pair.moving_labels, disp_mm, pair.spacing_mm, mode="nearest")
    return {"tre_mm": float(err[fg].mean()), "folds_pct": float((det <= 0).double().mean() * 100),
            "dice": _dice_mean(pair.fixed_labels[0, 0], warped[0, 0])}


@torch.no_grad()
def evaluate_model(model: Optional[torch.nn.Module], pairs: Sequence[PairBatch],
                   device: str | torch.device = "cpu", passes: int = 1,
                   refine_downsample: Optional[float] = None,
                   residual: Optional[tuple[torch.nn.Module, Optional[float]]] = None) -> dict:
    """Mean metrics over ``pairs`` for ``model`` and for the identity (``identity_*`` keys); seconds per pair.

    Also ``tre_mm_median`` and ``tre_mm_per_pair`` (in the order of ``pairs``, for paired comparisons).

    ``passes`` > 1: the prediction in passes (``model.inference.predict_in_passes``), the later ones
    with the network's input downsampled by ``refine_downsample`` (None: as the first); ``residual``
    (network, input downsampling): a last pass by the residual-motion weights.
    """
    rows, ident = [], []
    for pair in pairs:
        pair = pair.to(device)
        ident.append(evaluate_field(pair, torch.zeros_like(pair.disp_mm)))
        if model is None:
            continue
        t0 = time.perf_counter()
        if passes > 1 or residual is not None:
            flow, _ = predict_in_passes(model, pair.fixed, pair.moving, passes=passes,
                                        refine_downsample=refine_downsample, residual=residual)
        else:
            flow = model(pair.fixed, pair.moving)["flow_norm"]
        seconds = time.perf_counter() - t0
        flow = resize_flow(flow, tuple(pair.fixed.shape[2:]))
        disp = norm_to_mm(flow, pair.spacing_mm)
        rows.append({**evaluate_field(pair, disp), "seconds": seconds})
    out = {f"identity_{k}": float(np.nanmean([r[k] for r in ident])) for k in ident[0]}
    if rows:
        out.update({k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]})
        out["tre_mm_median"] = float(np.median([r["tre_mm"] for r in rows]))
        out["tre_mm_per_pair"] = [round(r["tre_mm"], 5) for r in rows]  # for paired comparisons
        out["tre_reduction_pct"] = 100.0 * (1 - out["tre_mm"] / out["identity_tre_mm"])
    out["pairs"] = len(pairs)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command's options; numbers are read strictly (``--pairs 1_0`` was 10 to Python's ``int``)."""
    parser = argparse.ArgumentParser(prog="python -m ADRegNetLib.train.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="AD-RegNet checkpoint (.pt)")
    parser.add_argument("--prepared", default="runs/prepared", help="folder of prepared volumes (train.prep)")
    parser.add_argument("--out", required=True, help="output JSON file")
    parser.add_argument("--pairs", type=argument_type(whole=True, example="24", positive=True), default=24)
    parser.add_argument("--seed", type=argument_type(whole=True, example="1234", maximum=TORCH_MAX_SEED), default=1234)
    parser.add_argument("--crop", type=argument_type(whole=True, example="64", positive=True), nargs=3,
                        default=[64, 64, 64], metavar=("Z", "Y", "X"), help="crop size, voxels (default 64 64 64)")
    parser.add_argument("--threads", type=argument_type(whole=True, example="2", positive=True), default=2)
    parser.add_argument("--seen", action="store_true", help="also evaluate on training subjects (new fields)")
    parser.add_argument("--passes", type=argument_type(whole=True, example="2", positive=True), nargs="+", default=[1],
                        help="network passes per prediction; several values give a row each (instant uses 2)")
    parser.add_argument("--refine-downsample", type=argument_type(example="2", positive=True), nargs="+",
                        default=[None],
                        help="network input downsampling of the passes after the first (1: full resolution; "
                             "several values give a row each; default: as the first pass)")
    parser.add_argument("--residual-weights", default=None,
                        help="residual-motion weights (adregnet_residual.pt): each row with more than one pass "
                             "gets a twin with a last residual pass")
    parser.add_argument("--residual-downsample", type=argument_type(example="1", positive=True), default=1.0,
                        help="input downsampling of that residual pass (1: full resolution)")
    parser.add_argument("--ablation-weights", nargs="*", default=[], metavar="NAME=PATH",
                        help="more networks on the same pairs, e.g. no_cross_attention=runs/ablations/x.pt")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sets = {"heldout": heldout_pairs(args.prepared, args.pairs, args.seed, args.crop)}
    if args.seen:
        sets["seen_subjects"] = heldout_pairs(args.prepared, args.pairs, args.seed, args.crop, seen=True)
    models = {"AD-RegNet": args.weights, **dict(item.partition("=")[::2] for item in args.ablation_weights)}
    report = {"weights": str(args.weights), "pairs": args.pairs, "seed": args.seed, "crop_zyx": args.crop,
              "results": {}}
    residual = None if args.residual_weights is None else (load_model(args.residual_weights), args.residual_downsample)
    if residual is not None:
        report["residual_weights"] = str(args.residual_weights)
    for set_name, pairs in sets.items():
        results = {}
        for name, path in models.items():
            model = load_model(path)
            for passes in args.passes:
                for refine in (args.refine_downsample if passes > 1 else [None]):
                    label = name if passes == 1 else f"{name}, {passes} passes" + (
                        "" if refine is None else f" (later ones at input / {refine:g})")
                    results[label] = evaluate_model(model, pairs, passes=passes, refine_downsample=refine)
                    results[label]["training_steps"] = getattr(model, "metadata", {}).get("training_steps")
                    if residual is not None and passes > 1:
                        twin = f"{label} + residual pass at / {args.residual_downsample:g}"
                        results[twin] = evaluate_model(model, pairs, passes=passes, refine_downsample=refine,
                                                       residual=residual)
                        results[twin]["training_steps"] = results[label]["training_steps"]
        report["results"][set_name] = results
        first = next(iter(results.values()))
        print(f"\n{set_name} ({len(pairs)} pairs): identity TRE {first['identity_tre_mm']:.2f} mm, "
              f"Dice {first['identity_dice']:.3f}")
        print("| model | steps | TRE mean (mm) | TRE median (mm) | TRE reduction | Dice | folds (%) | s/pair |")
        print("|---|---|---|---|---|---|---|---|")
        for name, r in results.items():
            print(f"| {name} | {r['training_steps']} | {r['tre_mm']:.2f} | {r['tre_mm_median']:.2f} | "
                  f"{r['tre_reduction_pct']:.0f}% | {r['dice']:.3f} | {r['folds_pct']:.3f} | {r['seconds']:.2f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
