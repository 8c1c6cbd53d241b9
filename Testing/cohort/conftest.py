"""Fixtures for the cohort (``adregnet batch``) tests; the helpers are in cohort_helpers.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from cohort_helpers import make_cohort


@pytest.fixture
def cohort_factory(tmp_path):
    """``cohort_factory(n_good=4, corrupt=False)`` -> PAIRS.csv path in a fresh tmp folder."""
    def factory(n_good: int = 4, corrupt: bool = False, name: str = "data") -> Path:
        return make_cohort(tmp_path / name, n_good, corrupt)

    return factory
