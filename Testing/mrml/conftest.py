"""Fixtures for the ADRegNetMRML tests: a fresh MRML scene (real MRML classes from slicer-core)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
pytest.importorskip("slicer", reason="slicer-core (MRML classes) is not installed")
pytest.importorskip("SimpleITK")

import mrml_helpers  # noqa: E402,F401  (puts the repo and ADRegNet/ on sys.path)
import slicer  # noqa: E402


@pytest.fixture
def scene():
    s = slicer.vtkMRMLScene()
    slicer.mrmlScene = s
    yield s
    s.Clear(True)
