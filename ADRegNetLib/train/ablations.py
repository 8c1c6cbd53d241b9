r"""Equal-budget ablations: retrain AD-RegNet without each part and evaluate all on the same pairs.

    OMP_NUM_THREADS=1 nice -n 19 python -m ADRegNetLib.train.ablations --config configs/train_default.json \
        --steps 300 --out runs/ablations --table Resources/weights/ablations.json

Variants (each trained with the same config, seed, data and number of steps; only the architecture
switch differs): ``full``, ``no_cross_attention``, ``no_regional_attention``, ``no_multires`` (one
flow head at the finest level instead of the coarse-to-fine heads). Each variant's weights go to
``<out>/<name>.pt``; an interrupted run resumes (finished variants are skipped, an unfinished one
continues from its checkpoint). The table (JSON and Markdown printed) holds the held-out metrics of
:func:`.evaluate.evaluate_model` on the same seeded held-out pairs, and each variant's training seed;
``--train-seed`` runs the same variants again from another seed, and ``train.ablation_summary``
combines the tables of several seeds (each seed's variant against the same seed's full model).

Two budgets:

* from scratch (default): every variant starts from a fresh initialisation; informative only at a
  budget where the full model learns (thousands of steps: hours per variant on a 2-core CPU);
* ``--init-weights W`` (fine-tuning ablation): every variant, the full model included, starts from
  the tensors of trained weights ``W`` that it has (``model.checkpoint.load_matching``; a removed
  part's tensors are dropped, a new one, such as ``no_multires``'s single head, keeps any shared
  tensor of the same name) and trains the same number of steps. The table then also holds each
  variant right after the removal, before any training (``removed``): the part's weight in the
  trained model, and how much of it the same budget of training recovers.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..model.checkpoint import load_checkpoint, load_matching, load_model, save_model
from ..model.network import ADRegNet, ADRegNetConfig
from ..numbers import TORCH_MAX_SEED, argument_type
from .evaluate import evaluate_model, heldout_pairs
from .config import TrainConfig
from .trainer import Trainer

__all__ = ["VARIANTS", "run_ablations", "paired_difference", "build_parser", "main"]

#: variant name -> model config overrides.
VARIANTS = {
    "full": {},
    "no_cross_attention": {"cross_attention": False},
    "no_regional_attention": {"regional_attention": False},
    "no_multires": {"multires": False},
}


def _variant_model(base: TrainConfig, name: str) -> dict:
    """The architecture config of variant ``name``: the base run's with the variant's switch."""
    return {**base.model, **VARIANTS[name]}


def paired_difference(variant: Sequence[float], full: Sequence[float]) -> dict:
    """Per-pair TRE of a variant minus the full model's on the same pairs: mean, standard error, pairs worse.

    A mean difference within about two standard errors of 0 is not distinguishable from noise on
    these pairs.
    """
    diff = np.asarray(variant, dtype=np.float64) - np.asarray(full, dtype=np.float64)
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return {"mean_diff_mm": float(diff.mean()), "se_mm": se, "worse_pairs": int((diff > 0).sum()),
            "pairs": int(len(diff))}


def run_ablations(base: TrainConfig, steps: int, out_dir: str | Path, names: Sequence[str] = tuple(VARIANTS),
                  val_pairs: int = 24, device: str = "cpu", init_weights: Optional[str | Path] = None,
                  seed: Optional[int] = None) -> dict:
    """Train every variant for ``steps`` steps (resumable) and evaluate all on the same held-out pairs.

    ``init_weights``: start every variant from the matching tensors of these weights (see the module
    docstring); each result then also has ``removed``: the variant evaluated before training.
    ``seed``: of the held-out pairs (default: the config's ``val_seed``). With ``full`` among the
    names, every other result has ``paired_vs_full`` (:func:`paired_difference`).
    """
    out_dir = Path(out_dir)
    for name in names:
        if name not in VARIANTS:
            raise ValueError(f"unknown ablation {name!r}; choose from {sorted(VARIANTS)}")
    init = str(init_weights) if init_weights else None
    for name in names:
        weights = out_dir / f"{name}.pt"
        if not weights.is_file():
            cfg = replace(base, out_dir=str(out_dir / name), steps=steps, time_limit_min=None, export_path=None,
                          export_every_min=0.0, init_weights=init, init_matching_only=init is not None,
                          model=_variant_model(base, name))
            trainer = Trainer(cfg, device=device)
            t0 = time.perf_counter()
            trainer.train()
            save_model(trainer.model, weights, extra={"training_steps": trainer.step,
                                                      "training_wall_s": round(trainer.elapsed_s, 1),
                                                      "ablation": name, "init_weights": init,
                                                      "training_config": asdict(cfg)})
            print(f"[ablations] {name}: {trainer.step} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    pairs = heldout_pairs(base.prepared_dir, val_pairs, base.val_seed if seed is None else seed, base.crop_zyx)
    start = load_checkpoint(init)["state_dict"] if init else None
    results = {}
    for name in names:
        model = load_model(out_dir / f"{name}.pt")
        r = evaluate_model(model.to(device), pairs, device=device)
        r["training_steps"] = model.metadata.get("training_steps")
        r["training_wall_s"] = model.metadata.get("training_wall_s")
        r["parameters"] = model.metadata.get("parameters")
        r["training_seed"] = (model.metadata.get("training_config") or {}).get("seed")
        if start is not None:  # the same variant right after the removal, before any training
            removed = ADRegNet(ADRegNetConfig.from_dict(_variant_model(base, name)))
            report = load_matching(removed, start)
            r["removed"] = evaluate_model(removed.to(device).eval(), pairs, device=device)
            r["fresh_tensors"] = report["fresh"]
            r["dropped_tensors"] = report["unused"]
        results[name] = r
    if "full" in results:
        for name, r in results.items():
            if name != "full":
                r["paired_vs_full"] = paired_difference(r["tre_mm_per_pair"], results["full"]["tre_mm_per_pair"])
    return results


def build_parser() -> argparse.ArgumentParser:
    """The command's options; numbers are read strictly (``--pairs 1_0`` was 10 to Python's ``int``)."""
    parser = argparse.ArgumentParser(prog="python -m ADRegNetLib.train.ablations", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/train_default.json")
    parser.add_argument("--steps", type=argument_type(whole=True, example="300", positive=True), default=300,
                        help="training steps of every variant")
    parser.add_argument("--out", default="runs/ablations", help="folder for the variants' runs and weights")
    parser.add_argument("--table", default=None, help="JSON file for the results table")
    parser.add_argument("--pairs", type=argument_type(whole=True, example="24", positive=True), default=24,
                        help="held-out pairs")
    parser.add_argument("--seed", type=argument_type(whole=True, example="1234", maximum=TORCH_MAX_SEED), default=None,
                        help="seed of the held-out pairs (default: the config's val_seed)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--train-seed", type=argument_type(whole=True, example="1", maximum=TORCH_MAX_SEED), default=None,
                        help="training seed instead of the config's (initialisation and sampled pairs): a second "
                             "run of a variant measures how much the result moves with the seed alone")
    parser.add_argument("--init-weights", default=None,
                        help="start every variant from these trained weights' matching tensors (fine-tuning ablation)")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda: where the variants train and are evaluated (default cpu)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    base = TrainConfig.from_json(args.config)
    if args.train_seed is not None:
        base = replace(base, seed=args.train_seed)
    torch.set_num_threads(base.num_threads)
    results = run_ablations(base, args.steps, args.out, args.variants, args.pairs, device=args.device,
                            init_weights=args.init_weights, seed=args.seed)
    first = next(iter(results.values()))
    print(f"held-out pairs: {args.pairs}; identity TRE {first['identity_tre_mm']:.2f} mm, Dice {first['identity_dice']:.3f}")
    removed = "| removed, untrained: TRE reduction " if args.init_weights else ""
    print("| variant | steps | parameters | TRE mean (mm) | TRE median (mm) | TRE reduction | TRE - full's, paired "
          "(mm, +- s.e.; pairs worse) | Dice | folds (%) " + removed + "|")
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if removed else ""))
    for name, r in results.items():
        paired = r.get("paired_vs_full")
        versus = (f"{paired['mean_diff_mm']:+.3f} +- {paired['se_mm']:.3f}; {paired['worse_pairs']}/{paired['pairs']}"
                  if paired else "-")
        print(f"| {name} | {r['training_steps']} | {r['parameters']} | {r['tre_mm']:.2f} | {r['tre_mm_median']:.2f} | "
              f"{r['tre_reduction_pct']:.1f}% | {versus} | {r['dice']:.3f} | {r['folds_pct']:.3f} |"
              + (f" {r['removed']['tre_reduction_pct']:.0f}% |" if removed else ""))
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(json.dumps({"steps": args.steps, "config": args.config, "pairs": args.pairs, "seed": args.seed,
                                                "init_weights": args.init_weights,
                                                "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
