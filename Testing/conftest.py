"""Shared pytest fixtures for the AD-RegNet tests (rootdir conftest; Testing/ is not a package).

* ``shared_data``: path of the real data folder ``../shared/data`` beside the repository (CI
  clones the repo with ``shared/`` next to it); tests using it are skipped when it is missing.
* ``oblique_geometry``: a small grid with an oblique direction, anisotropic spacing and a
  non-zero origin: the case where axis-order and frame mistakes show.
* ``rng``: a seeded numpy Generator.

Tests compare registrations bit for bit, so the thread count stays fixed for the whole session
(``ADREGNET_FIXED_THREADS``, inherited by the CLI processes they start): by default a stage runs with
fewer threads while other programs keep the CPUs busy, which sums in another order; that rule is
tested on its own in ``lib/test_cpu_threads.py``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.spatial.geometry import Geometry
from geometry_helpers import make_oblique_geometry

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT / ".." / "shared" / "data"
os.environ["ADREGNET_FIXED_THREADS"] = "1"


@pytest.fixture
def shared_data() -> Path:
    """Path of ../shared/data; skips the test when the folder is not there."""
    path = SHARED_DATA.resolve()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is not available")
    return path


@pytest.fixture
def oblique_geometry() -> Geometry:
    return make_oblique_geometry()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def geometry_factory():
    """``geometry_factory(size=(x, y, z))``: the oblique grid at another size."""
    return make_oblique_geometry
