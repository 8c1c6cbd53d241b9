"""Geometry helpers shared by the tests (plain functions; fixtures live in conftest.py)."""
from __future__ import annotations

import numpy as np

from ADRegNetLib.spatial.geometry import Geometry


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
