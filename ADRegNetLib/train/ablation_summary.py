r"""Ablations over several training seeds: which part's effect stands out from the seed-to-seed spread.

    python -m ADRegNetLib.train.ablation_summary runs/ablations_scratch_trainseed*_seed*.json \
        --out Resources/weights/ablations_scratch_summary.json

One run of a variant (``train.ablations``) measures the variant *and* the luck of its training seed:
at a short budget the full model trained with another seed moves by as much as removing a part. Here
each training seed is the unit. The tables given (``ablations --table``, one per training seed and
held-out pair set, every variant of a seed trained on the same sampled pairs from the same seed) are
grouped by training seed; for every seed that has the full model and the variant, the variant's mean
TRE minus the full model's, on the same pairs, is one observation. Their mean over the seeds, its
standard error and a two-sided paired t-test (``n - 1`` degrees of freedom) say whether the part's
effect is distinguishable from the seeds' spread; a Welch test on the seeds' mean TREs, ignoring the
pairing, is reported beside it. Only tables of the same config, budget and pairs are combined.

With ``n`` seeds the test has ``n - 1`` degrees of freedom: three seeds need a difference about 4.3
standard errors from 0 for p < 0.05.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["summarize", "seed_effect", "main"]

#: p-value below which the summary calls a part's effect established
ALPHA = 0.05


def seed_effect(variant_tre: Sequence[float], full_tre: Sequence[float]) -> dict:
    """Effect of removing a part, training seeds as the unit.

    Args:
        variant_tre, full_tre: mean TRE (mm) of the variant and of the full model, one value per
            training seed, in the same seed order (the pairing).

    Returns:
        ``seeds``, ``mean_diff_mm`` (variant minus full), ``se_mm``, ``ci95_mm`` and ``t``, ``p`` of the
        paired t-test; ``welch_t``, ``welch_df``, ``welch_p`` of the unpaired test; ``established``:
        paired p < :data:`ALPHA` (with one seed nothing is established and the statistics are NaN).
    """
    v = np.asarray(variant_tre, dtype=np.float64)
    f = np.asarray(full_tre, dtype=np.float64)
    if v.shape != f.shape or v.ndim != 1:
        raise ValueError(f"one TRE per training seed for both, paired: got {v.shape} and {f.shape}")
    n = len(v)
    diff = v - f
    out = {"seeds": n, "mean_diff_mm": float(diff.mean()), "se_mm": float("nan"), "ci95_mm": [float("nan")] * 2,
           "t": float("nan"), "p": float("nan"), "welch_t": float("nan"), "welch_df": float("nan"),
           "welch_p": float("nan"), "established": False}
    if n < 2:
        return out
    from scipy import stats  # here only: the training path never imports scipy

    paired = stats.ttest_rel(v, f)
    se = float(diff.std(ddof=1) / np.sqrt(n))
    lo, hi = paired.confidence_interval(0.95) if se > 0 else (diff.mean(), diff.mean())
    out.update(se_mm=se, ci95_mm=[float(lo), float(hi)])
    if se > 0:
        out.update(t=float(paired.statistic), p=float(paired.pvalue))
    elif diff.mean() != 0:  # the same nonzero difference with every seed
        out.update(t=float(np.sign(diff.mean()) * np.inf), p=0.0)
    if v.var() + f.var() > 0:
        welch = stats.ttest_ind(v, f, equal_var=False)
        out.update(welch_t=float(welch.statistic), welch_df=float(welch.df), welch_p=float(welch.pvalue))
    out["established"] = bool(out["p"] < ALPHA)
    return out


def _seed_of(result: dict, table: str) -> int:
    seed = result.get("training_seed")
    if seed is None:
        raise ValueError(f"{table}: a result has no 'training_seed'; re-evaluate it with this version of "
                         "`python -m ADRegNetLib.train.ablations` (finished variants are not retrained)")
    return int(seed)


def summarize(tables: Sequence[dict]) -> dict:
    """Combine ablation tables of several training seeds (and pair sets) into per-variant effects.

    Args:
        tables: ``ablations --table`` contents, each with a ``source`` key naming its file (for errors).

    Returns:
        ``pair_sets``: per held-out pair seed, per variant: ``tre_mm`` and ``tre_reduction_pct`` by
        training seed, their mean and standard deviation, and (variants) the :func:`seed_effect`
        against the full model; ``all_pairs``: the same on every pair set together (the seed's TRE
        averaged over all its pairs; only seeds that have every pair set), when there are several.

    Raises:
        ValueError: tables of different configs, budgets or pair counts; a seed given twice for the
            same pairs; no full model.
    """
    if not tables:
        raise ValueError("no ablation tables given")
    first = tables[0]
    for t in tables[1:]:
        for key in ("config", "steps", "pairs", "init_weights"):
            if t.get(key) != first.get(key):
                raise ValueError(f"{t.get('source')}: {key} {t.get(key)!r} differs from {first.get('source')}'s "
                                 f"{first.get(key)!r}; only runs of one budget and one set of pairs can be combined")
    # per pair set -> variant -> training seed -> per-pair TRE
    per_pairs: dict[int, dict[str, dict[int, list[float]]]] = {}
    identity: dict[int, float] = {}
    for t in tables:
        pair_seed = int(t["seed"]) if t.get("seed") is not None else -1
        for name, r in t["results"].items():
            seeds = per_pairs.setdefault(pair_seed, {}).setdefault(name, {})
            seed = _seed_of(r, t.get("source", "a table"))
            if seed in seeds:
                raise ValueError(f"{t.get('source')}: {name} with training seed {seed} on pairs {pair_seed} is given twice")
            seeds[seed] = list(r["tre_mm_per_pair"])
            identity[pair_seed] = float(r["identity_tre_mm"])
    out = {"config": first.get("config"), "steps": first.get("steps"), "pairs": first.get("pairs"),
           "init_weights": first.get("init_weights"), "alpha": ALPHA, "pair_sets": {}}
    for pair_seed, variants in sorted(per_pairs.items()):
        out["pair_sets"][str(pair_seed)] = _effects(variants, identity[pair_seed])
    if len(per_pairs) > 1:
        pooled: dict[str, dict[int, list[float]]] = {}
        for name in per_pairs[next(iter(per_pairs))]:
            common = set.intersection(*(set(v.get(name, {})) for v in per_pairs.values()))
            pooled[name] = {s: sum((per_pairs[p][name][s] for p in sorted(per_pairs)), []) for s in sorted(common)}
        # every pair set has the same number of pairs (checked above): the identity TRE pools as a plain mean
        out["all_pairs"] = _effects(pooled, float(np.mean(list(identity.values()))))
    return out


def _effects(variants: dict[str, dict[int, list[float]]], identity_tre: float) -> dict:
    if "full" not in variants:
        raise ValueError("the tables hold no 'full' model: each variant is compared with the full model of the same seed")
    rows = {}
    for name, by_seed in variants.items():
        tre = {s: float(np.mean(v)) for s, v in sorted(by_seed.items())}
        reduction = {s: 100.0 * (1.0 - x / identity_tre) for s, x in tre.items()}
        values = np.array(list(reduction.values()))
        row = {"training_seeds": list(tre), "tre_mm": tre, "tre_reduction_pct": reduction,
               "tre_reduction_pct_mean": float(values.mean()),
               "tre_reduction_pct_sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan")}
        if name != "full":
            common = [s for s in tre if s in variants["full"]]
            full_tre = [float(np.mean(variants["full"][s])) for s in common]
            row["versus_full"] = seed_effect([tre[s] for s in common], full_tre)
        rows[name] = row
    return {"identity_tre_mm": identity_tre, "variants": rows}


def markdown(summary: dict) -> str:
    """The summary as Markdown tables, one per pair set (the model card's form)."""
    lines = []
    sets = dict(summary["pair_sets"])
    if "all_pairs" in summary:
        sets["all"] = summary["all_pairs"]
    for label, block in sets.items():
        lines += [f"pairs: {label} (identity TRE {block['identity_tre_mm']:.2f} mm)", "",
                  "| variant | training seeds | TRE reduction per seed | mean +- sd | TRE - full's, per seed (mm) | "
                  "paired t-test | Welch | established (p < 0.05) |", "|---|---|---|---|---|---|---|---|"]
        for name, r in block["variants"].items():
            per_seed = ", ".join(f"{v:.1f}" for v in r["tre_reduction_pct"].values())
            spread = f"{r['tre_reduction_pct_mean']:.1f}" + (f" +- {r['tre_reduction_pct_sd']:.1f}" if len(r["training_seeds"]) > 1 else "") + " %"
            e = r.get("versus_full")
            if e is None:
                lines.append(f"| {name} | {len(r['training_seeds'])} | {per_seed} | {spread} | - | - | - | - |")
                continue
            lo, hi = e["ci95_mm"]
            if e["seeds"] < 2:  # one seed: a difference, no test
                lines.append(f"| {name} | 1 | {per_seed} | {spread} | {e['mean_diff_mm']:+.3f} | - | - | no (one seed) |")
                continue
            lines.append(f"| {name} | {e['seeds']} | {per_seed} | {spread} | {e['mean_diff_mm']:+.3f} "
                         f"(95 % CI {lo:+.3f} to {hi:+.3f}) | t = {e['t']:.2f}, p = {e['p']:.3f} | "
                         f"p = {e['welch_p']:.3f} | {'yes' if e['established'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m ADRegNetLib.train.ablation_summary",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", help="ablation tables (ablations --table), one per training seed and pair set")
    parser.add_argument("--out", default=None, help="JSON file for the summary")
    args = parser.parse_args(argv)
    tables = []
    for path in args.tables:
        if not Path(path).is_file():
            raise SystemExit(f"no ablation table at {path}: give the files written by `ablations --table`")
        tables.append({**json.loads(Path(path).read_text()), "source": str(path)})
    summary = summarize(tables)
    summary["tables"] = [str(p) for p in args.tables]
    print(markdown(summary))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
