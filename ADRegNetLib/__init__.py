"""AD-RegNet engine: attention-driven non-rigid registration of 3D medical images.

This package never imports Slicer, Qt or VTK. Physical space is LPS millimetres
(as in ITK/SimpleITK); see ``spatial.geometry`` for the conventions every part uses.
"""
from __future__ import annotations

import os

# OpenMP threads waiting for work sleep instead of spinning. Read once, when torch loads its OpenMP
# runtime, so it is set here, before any torch import of this package (a value the user set is kept).
# Measured (fifteenth session, 2 cores, whole CLI processes, farm-bench): one run alone as fast (brain
# balanced, paired A/B wall 1.01, cpu 0.95); two demo registrations started together finished in 7.0 s
# (median of 3) instead of 13.8 s (max 34.6 s): spinning threads of one run took the cores from the other.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

__all__ = ["__version__"]
