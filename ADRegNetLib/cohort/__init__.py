r"""Cohort registration: many pairs on a Dask cluster (``adregnet batch``, :func:`register_cohort`).

Importing this package does not import Dask; only running a cohort does (``pip install "adregnet[batch]"``).
"""
from __future__ import annotations

from .pairs import Pair, PairsError, pairs_from_atlas, read_pairs_csv
from .results import RESULT_COLUMNS
from .run import BatchError, CohortRows, CohortWarning, register_cohort

__all__ = ["Pair", "PairsError", "BatchError", "CohortRows", "CohortWarning", "RESULT_COLUMNS", "pairs_from_atlas",
           "read_pairs_csv", "register_cohort"]
