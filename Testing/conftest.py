"""Shared pytest fixtures for the AD-RegNet tests (rootdir conftest; Testing/ is not a package).

* ``shared_data``: path of the real data folder ``../shared/data`` beside the repository (CI
  clones the repo with ``shared/`` next to it); tests using it are skipped when it is missing.
* ``oblique_geometry``: a small grid with an oblique direction, anisotropic spacing and a
  non-zero origin: the case where axis-order and frame mistakes show.
* ``rng``: a seeded numpy Generator.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.spatial.geometry import Geometry

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT / ".." / "shared" / "data"


def rotation_matrix(angles_deg) -> np.ndarray:
    """Proper rotation R = Rz @ Ry @ Rx from angles (degrees) about x, y, z."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_oblique_geometry(size=(11, 9, 7)) -> Geometry:
    """Oblique (rotated ~20-30 degrees about each axis), anisotropic, off-origin grid."""
    return Geometry(size, spacing=[1.3, 0.8, 2.1], origin=[-40.0, 12.5, -300.0],
                    direction=rotation_matrix([20.0, -15.0, 30.0]))


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
