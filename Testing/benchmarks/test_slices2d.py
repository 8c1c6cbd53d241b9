"""``python -m benchmarks.slices2d``: two people's brain slices, Dice of the manual labels (one pair here; the
ten-pair table is in the README)."""
from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest

from benchmarks.slices2d import DATA, _pairs, dice, run_pairs
from benchmarks.sources import default_data_dir


def test_dice_counts_labels_of_the_fixed_slice_with_enough_pixels():
    fixed = np.zeros((1, 10, 10), np.int32)
    fixed[0, :5] = 3
    fixed[0, 5:, :4] = 7
    fixed[0, 9, 9] = 9  # one pixel: left out
    warped = fixed.copy()
    warped[0, 5:, :4] = 0
    assert dice(fixed, fixed) == 1.0
    assert dice(fixed, warped) == pytest.approx(0.5)


def test_pairs_are_moving_fixed_subjects():
    assert _pairs("2:1,20:19") == [(2, 1), (20, 19)]
    for bad in ("2-1", "1:1", "0:3", "3:21"):
        with pytest.raises(argparse.ArgumentTypeError):
            _pairs(bad)


@pytest.mark.skipif(not (default_data_dir() / DATA).is_dir(), reason=f"../shared/data/{DATA} is not available")
def test_one_pair_registers_and_the_labels_overlap_more(tmp_path):
    rows = run_pairs([(2, 1)], tmp_path, ["identity", "adregnet-fast"], log=lambda text: None)
    by_method = {row["method"]: row for row in rows}
    assert by_method["identity"]["dice"] == pytest.approx(0.4186, abs=1e-4)  # the slices as stored
    assert by_method["adregnet-fast"]["dice"] > by_method["identity"]["dice"] + 0.05
    assert by_method["adregnet-fast"]["folds_pct"] == 0.0
    with open(tmp_path / "results.csv") as fh:
        assert [r["method"] for r in csv.DictReader(fh)] == ["identity", "adregnet-fast"]
    assert "| adregnet-fast |" in (tmp_path / "summary.md").read_text()
