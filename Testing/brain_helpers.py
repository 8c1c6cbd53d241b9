"""The real brain T1 of ``../shared/data/brain-vxm-test-scan`` for the tests: read once per process.

``test_scan.npz`` holds ``vol`` (the skull-stripped T1, (Z, Y, X) = (160, 192, 224) at 1 mm) and ``seg``
(its label map). The tests take it at the resolutions they need from here; each call returns a new
array, so a test may change what it gets.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image

T1_SCAN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brain-vxm-test-scan" / "test_scan.npz"
needs_t1 = pytest.mark.skipif(not T1_SCAN.is_file(), reason="shared/data/brain-vxm-test-scan missing")


@lru_cache(maxsize=1)
def _scan() -> dict[str, np.ndarray]:
    with np.load(T1_SCAN) as data:
        return {key: data[key] for key in data.files}


def t1_array() -> np.ndarray:
    """The T1 at 1 mm, (Z, Y, X) float32."""
    return _scan()["vol"].astype(np.float32)


def t1_labels() -> np.ndarray:
    """The T1's label map at 1 mm, (Z, Y, X), its own integer type."""
    return _scan()["seg"].copy()


def t1_block_mean(factor: int) -> np.ndarray:
    """The T1 as the means of ``factor``^3 blocks (the voxels past the last whole block left out), (Z, Y, X)."""
    vol = t1_array()
    z, y, x = (s // factor * factor for s in vol.shape)
    blocks = vol[:z, :y, :x].reshape(z // factor, factor, y // factor, factor, x // factor, factor)
    return np.ascontiguousarray(blocks.mean(axis=(1, 3, 5)))


def t1_image(factor: int, name: str = "t1") -> Image:
    """:func:`t1_block_mean` on a grid of ``factor`` mm voxels with its origin at 0."""
    array = t1_block_mean(factor)
    return Image(array, Geometry(array.shape[::-1], (factor,) * 3, (0.0, 0.0, 0.0)), name)
