r"""How much memory one pair needs, from the image headers alone (nothing is decompressed).

The scheduler reserves this amount of a worker's ``MEMORY`` resource (GB) while the pair runs, so a
worker only takes as many pairs at once as fit in the memory it declared.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..engine.settings import QUALITY_SETTINGS
from ..spatial.geometry import Geometry
from .pairs import Pair

__all__ = ["header_geometry", "estimate_pair_memory_gb", "PAIR_OVERHEAD_GB", "ENGINE_ESTIMATE_FACTOR",
           "WORKER_BASELINE_GB"]

log = logging.getLogger(__name__)

#: memory one pair adds to a worker whatever its size (first-use buffers, the report figure)
PAIR_OVERHEAD_GB = 0.1
#: the CLI path (outputs, inverse, warped labels, report) needs more than the engine's own estimate:
#: measured peak RSS increments with --quality fast on one thread (2026-11-30): a 24^3 crop 0.10 GB,
#: the 57x78x64 demo lung pair 0.31 GB (engine estimate 0.07), the 113x97x81 brain benchmark pair
#: 0.64 GB (engine estimate 0.23)
ENGINE_ESTIMATE_FACTOR = 3.0
#: resident memory of an idle worker process after importing torch, SimpleITK and the engine
#: (measured 0.35 GB); a local worker's MEMORY resource is its memory limit less this
WORKER_BASELINE_GB = 0.4
#: bytes per moving-image voxel held while registering (the image and its normalised copy, float32)
_BYTES_PER_MOVING_VOXEL = 8


def header_geometry(path: str | Path) -> Optional[Geometry]:
    """The grid of an image file read from its header only, or None when it cannot be read.

    DICOM folders and unreadable files give None (the caller then falls back to a default): a bad
    file must fail its own pair when it runs, with the registration's own message.
    """
    path = Path(path)
    if not path.is_file():
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        if reader.GetDimension() != 3:
            return None
        return Geometry(size=tuple(reader.GetSize()), spacing=reader.GetSpacing(), origin=reader.GetOrigin(),
                        direction=np.asarray(reader.GetDirection()).reshape(3, 3))
    except (RuntimeError, ValueError) as exc:
        log.debug("no header geometry for %s: %s", path, exc)
        return None


def estimate_pair_memory_gb(pair: Pair, quality: str = "balanced", default_gb: float = 2.0) -> float:
    """Estimated peak memory (GB) that registering ``pair`` adds to a worker.

    The engine's estimate (working grid of ``quality`` + full-resolution outputs) times
    :data:`ENGINE_ESTIMATE_FACTOR`, plus the moving image and :data:`PAIR_OVERHEAD_GB`.

    Args:
        pair: the pair (only the headers of its fixed and moving images are read).
        quality: the quality level the pair runs at ("fast", "balanced", "best").
        default_gb: the estimate when a header cannot be read (DICOM folder, corrupt file).

    Returns:
        GB, rounded up to 0.01.

    Raises:
        ValueError: unknown quality.
    """
    from ..engine.stages import estimate_memory_gb, working_geometry  # torch: not for `adregnet --help`

    if quality not in QUALITY_SETTINGS:
        raise ValueError(f"unknown quality {quality!r}; choose one of {', '.join(QUALITY_SETTINGS)}")
    fixed = header_geometry(pair.fixed)
    if fixed is None:
        return float(default_gb)
    q = QUALITY_SETTINGS[quality]
    work, _ = working_geometry(fixed, q.working_spacing_mm, q.max_working_voxels)
    moving = header_geometry(pair.moving)
    moving_gb = (moving.num_voxels if moving is not None else fixed.num_voxels) * _BYTES_PER_MOVING_VOXEL / 1e9
    total = ENGINE_ESTIMATE_FACTOR * estimate_memory_gb(fixed, work) + moving_gb + PAIR_OVERHEAD_GB
    return float(-(-total * 100 // 1) / 100)
