"""Tests of the ablation summary over training seeds (``train.ablation_summary``).

The statistics are checked against scipy's own tests; the end-to-end test trains tiny variants with
two seeds through the real ablation command and summarises its tables.
"""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from scipy import stats

from ADRegNetLib.train.ablation_summary import main as summary_main
from ADRegNetLib.train.ablation_summary import seed_effect, summarize
from train_helpers import make_prepared, tiny_config


def _table(seed_pairs: int, results: dict, steps: int = 3000, source: str = "t.json") -> dict:
    return {"config": "configs/ablation_scratch.json", "steps": steps, "pairs": 4, "seed": seed_pairs,
            "init_weights": None, "source": source, "results": results}


def _result(per_pair, training_seed, identity=4.0) -> dict:
    return {"tre_mm_per_pair": list(per_pair), "training_seed": training_seed, "identity_tre_mm": identity}


def test_seed_effect_matches_scipy_paired_and_welch_tests():
    variant, full = [3.10, 3.32, 2.95, 3.20], [2.90, 3.05, 2.88, 2.97]
    e = seed_effect(variant, full)
    paired = stats.ttest_rel(variant, full)
    welch = stats.ttest_ind(variant, full, equal_var=False)
    assert e["seeds"] == 4
    assert e["mean_diff_mm"] == pytest.approx(np.mean(np.subtract(variant, full)))
    assert e["t"] == pytest.approx(paired.statistic) and e["p"] == pytest.approx(paired.pvalue)
    assert e["welch_t"] == pytest.approx(welch.statistic) and e["welch_p"] == pytest.approx(welch.pvalue)
    lo, hi = e["ci95_mm"]
    assert lo < e["mean_diff_mm"] < hi and lo > 0  # consistently worse: the interval excludes 0
    assert e["established"] is bool(paired.pvalue < 0.05)


@pytest.mark.parametrize("variant, full, established", [
    ([3.0, 2.6, 3.4], [2.8, 2.9, 3.0], False),   # differences of both signs: within the seeds' spread
    ([3.30, 3.52, 3.41], [3.00, 3.20, 3.12], True),  # 0.29-0.32 mm worse with every seed
])
def test_seed_effect_says_whether_the_effect_stands_out_from_the_seeds(variant, full, established):
    assert seed_effect(variant, full)["established"] is established


def test_one_seed_establishes_nothing_and_unpaired_lists_are_refused():
    e = seed_effect([3.0], [2.5])
    assert e["mean_diff_mm"] == pytest.approx(0.5) and np.isnan(e["p"]) and e["established"] is False
    with pytest.raises(ValueError, match="one TRE per training seed"):
        seed_effect([3.0, 3.1], [2.5])


def _seeded_tables(effect_mm: float, rng: np.random.Generator) -> list[dict]:
    """Three training seeds on two pair sets: a seed offset shared by the seed's variants, and a variant
    ``effect_mm`` worse than the full model."""
    tables = []
    for pairs_seed in (1234, 4321):
        base = rng.uniform(2.0, 4.0, size=4)
        for train_seed, luck in zip((0, 1, 2), (0.0, 0.4, -0.2)):
            full = base + luck + rng.normal(0, 0.01, 4)
            tables.append(_table(pairs_seed, {"full": _result(full, train_seed),
                                              "no_regional_attention": _result(full + effect_mm + rng.normal(0, 0.01, 4),
                                                                                      train_seed)},
                                 source=f"t{train_seed}_{pairs_seed}.json"))
    return tables


def test_summary_pairs_each_variant_with_the_full_model_of_its_seed():
    tables = _seeded_tables(0.1, np.random.default_rng(0))
    summary = summarize(tables)
    assert set(summary["pair_sets"]) == {"1234", "4321"} and "all_pairs" in summary
    row = summary["pair_sets"]["1234"]["variants"]["no_regional_attention"]
    full = summary["pair_sets"]["1234"]["variants"]["full"]
    # per seed the mean over that seed's pairs, reduction against the identity
    first = tables[0]["results"]["full"]["tre_mm_per_pair"]
    assert full["tre_mm"][0] == pytest.approx(np.mean(first))
    assert full["tre_reduction_pct"][0] == pytest.approx(100 * (1 - np.mean(first) / 4.0))
    # the seeds' luck (0 / +0.4 / -0.2 mm) cancels in the pairing: the 0.1 mm effect is established
    e = row["versus_full"]
    assert e["seeds"] == 3 and e["mean_diff_mm"] == pytest.approx(0.1, abs=0.02) and e["established"]
    assert e["welch_p"] > 0.05  # ignoring the pairing, the seeds' spread hides it
    pooled = summary["all_pairs"]["variants"]["no_regional_attention"]["versus_full"]
    assert pooled["mean_diff_mm"] == pytest.approx(0.1, abs=0.02) and pooled["established"]


@pytest.mark.parametrize("change, message", [
    (lambda ts: ts[1].update(steps=1500), "steps"),
    (lambda ts: ts[1].update(config="configs/other.json"), "config"),
    (lambda ts: ts[1]["results"]["full"].update(training_seed=0), "given twice"),
    (lambda ts: ts[0]["results"]["full"].pop("training_seed"), "re-evaluate"),
    (lambda ts: [t["results"].pop("full") for t in ts], "no 'full' model"),
])
def test_tables_that_cannot_be_combined_are_refused_with_the_reason(change, message):
    tables = _seeded_tables(0.1, np.random.default_rng(1))
    change(tables)
    with pytest.raises(ValueError, match=message):
        summarize(tables)


def test_ablation_command_tables_of_two_training_seeds_summarise(tmp_path):
    from ADRegNetLib.train.ablations import main as ablations_main

    prepared = make_prepared(tmp_path / "prepared")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(asdict(tiny_config(tmp_path / "unused", prepared, 1))))
    paths = []
    for seed in (7, 8):
        path = tmp_path / f"table{seed}.json"
        ablations_main(["--config", str(config), "--steps", "1", "--out", str(tmp_path / f"abl{seed}"), "--pairs", "2",
                        "--variants", "full", "no_cross_attention", "--train-seed", str(seed), "--table", str(path)])
        paths.append(path)
        table = json.loads(path.read_text())
        assert {r["training_seed"] for r in table["results"].values()} == {seed}
    out = tmp_path / "summary.json"
    summary_main([str(p) for p in paths] + ["--out", str(out)])
    summary = json.loads(out.read_text())
    block = next(iter(summary["pair_sets"].values()))
    tables = [json.loads(p.read_text())["results"] for p in paths]
    expected = [np.mean(t["no_cross_attention"]["tre_mm_per_pair"]) - np.mean(t["full"]["tre_mm_per_pair"])
                for t in tables]
    effect = block["variants"]["no_cross_attention"]["versus_full"]
    assert effect["seeds"] == 2 and effect["mean_diff_mm"] == pytest.approx(np.mean(expected))
    assert block["variants"]["full"]["training_seeds"] == [7, 8]


def test_summary_command_names_a_missing_table(tmp_path):
    with pytest.raises(SystemExit, match="no ablation table"):
        summary_main([str(tmp_path / "missing.json")])


def test_markdown_gives_every_variant_a_row_and_no_test_for_one_seed():
    from ADRegNetLib.train.ablation_summary import markdown

    tables = _seeded_tables(0.1, np.random.default_rng(2))
    text = markdown(summarize(tables))
    assert text.count("| no_regional_attention | 3 |") == 3  # two pair sets and both together
    assert "| yes |" in text
    one_seed = markdown(summarize([t for t in tables if t["results"]["full"]["training_seed"] == 0]))
    assert "no (one seed)" in one_seed and "nan" not in one_seed
