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

``make test`` runs the suite in several processes (pytest-xdist, ``-n logical``, at most four): each
takes its share of the CPUs' threads (``OMP_NUM_THREADS``, set here before torch is imported, inherited
by the processes the tests start), so that two processes on two CPUs do not run four threads.
"""
from __future__ import annotations

import os
from pathlib import Path

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:  # before torch (imported below through ADRegNetLib) reads it
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)
                                        if hasattr(os, "sched_getaffinity") else 1)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ADRegNetLib.spatial.geometry import Geometry  # noqa: E402
from geometry_helpers import make_oblique_geometry  # noqa: E402

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
