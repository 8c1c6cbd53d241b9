r"""What every peer adapter shares: the result type and conversions of the tools' outputs."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from ADRegNetLib.io import read_image, sitk_to_field, to_sitk

__all__ = ["PeerResult", "read_sitk", "field_on_fixed", "transform_to_field", "set_threads"]


@dataclass
class PeerResult:
    """What a peer returns.

    Attributes:
        disp_mm: (3, Z, Y, X) float32 on the fixed grid, LPS mm, fixed x -> moving x + u(x).
        seconds: wall time of the registration itself (reading/converting files excluded where possible).
        notes: settings used, tool version.
        transform_points: optional exact point mapping (K, 3) -> (K, 3), LPS mm.
    """

    disp_mm: np.ndarray
    seconds: float
    notes: dict = field(default_factory=dict)
    transform_points: Optional[Callable[[np.ndarray], np.ndarray]] = None


def read_sitk(path: str | Path) -> sitk.Image:
    """An image file as a float32 SimpleITK image (read through the library), for the tools that take one."""
    return to_sitk(read_image(path, dtype=np.float32))


def field_on_fixed(disp: sitk.Image, fixed: sitk.Image) -> np.ndarray:
    """A tool's ITK displacement image as (3, Z, Y, X) float32 LPS mm on ``fixed``'s grid.

    The field is resampled (linearly, in physical space) only when its grid is not ``fixed``'s;
    the tolerances allow for NIfTI's float32 header storage.
    """
    same = (disp.GetSize() == fixed.GetSize()
            and np.allclose(disp.GetSpacing(), fixed.GetSpacing(), atol=1e-5)
            and np.allclose(disp.GetOrigin(), fixed.GetOrigin(), atol=1e-4)
            and np.allclose(disp.GetDirection(), fixed.GetDirection(), atol=1e-6))
    if not same:
        disp = sitk.Resample(sitk.Cast(disp, sitk.sitkVectorFloat64), fixed, sitk.Transform(), sitk.sitkLinear, 0.0,
                             sitk.sitkVectorFloat64)
    return sitk_to_field(disp, dtype=np.float32)[0]


def transform_to_field(transform: sitk.Transform, fixed: sitk.Image) -> np.ndarray:
    """Sample a SimpleITK transform T(x) - x on the fixed grid: (3, Z, Y, X) float32 LPS mm."""
    f = sitk.TransformToDisplacementFieldFilter()
    f.SetReferenceImage(fixed)
    f.SetOutputPixelType(sitk.sitkVectorFloat64)
    return field_on_fixed(f.Execute(transform), fixed)


def set_threads(threads: int) -> None:
    """Limit ITK, OpenMP and BLAS to ``threads`` threads in this process."""
    threads = max(int(threads), 1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    for var in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS",
                "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
