r"""Qt-free bridge between the Slicer scene (MRML nodes, RAS) and ADRegNetLib (arrays, LPS).

Everything here imports only the MRML classes (``slicer`` from Slicer or the ``slicer-core``
wheel), ``vtk``, ``numpy`` and ADRegNetLib, so it runs and is tested without a Slicer window.
RAS<->LPS conversion happens in :mod:`ADRegNetMRML.geometry` and nowhere else.
"""
from __future__ import annotations
