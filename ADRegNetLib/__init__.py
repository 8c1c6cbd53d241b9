"""AD-RegNet engine: attention-driven non-rigid registration of 3D medical images.

This package never imports Slicer, Qt or VTK. Physical space is LPS millimetres
(as in ITK/SimpleITK); see ``spatial.geometry`` for the conventions every part uses.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
