r"""The public registration API: :func:`register` and what it returns.

Every front end (Slicer module, CLI, Python users) calls :func:`register`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ..spatial.image import Image
from ..spatial.geometry import Geometry
from .settings import PRESETS, QUALITIES  # listed in __all__: importable from here as well

if TYPE_CHECKING:  # the annotation only; spatial.transform imports torch
    from ..spatial.transform import Transform

__all__ = ["RegistrationCancelled", "RegistrationError", "RegistrationResult", "PRESETS", "QUALITIES"]



class RegistrationError(ValueError):
    """Inputs or settings that cannot be registered; the message names the problem and the fix."""


class RegistrationCancelled(RuntimeError):
    """The user cancelled; nothing partial is returned."""


@dataclass
class RegistrationResult:
    """Everything one registration produces, on the fixed grid.

    Attributes:
        disp_mm: (3, Z, Y, X) float32 displacement, LPS mm, (x, y, z) components, on ``geometry``
            (the fixed grid); fixed point x maps to moving point x + u(x).
        geometry: the fixed image's grid.
        warped: the moving image resampled onto the fixed grid.
        jacobian: det(d(x + u)/dx) on the fixed grid (float32).
        metrics: timings, Jacobian statistics, similarity before/after, TRE before/after
            (when landmarks were given), the chosen preset and working resolution.
        warped_fixed_landmarks: (K, 3) LPS mm, x + u(x) at each fixed landmark, or None.
        before: the moving image resampled onto the fixed grid without the registration
            (padded with the moving image's background), for before/after displays.
        transform: the result as a :class:`Transform` (map points, warp other images, Jacobian).
        inverse_disp_mm: (3, Zm, Ym, Xm) float32, LPS mm, on the moving grid: moving point y maps
            to fixed point y + v(y); None when not computed.
        moving_geometry: the moving image's grid (the inverse field's grid).
    """

    disp_mm: np.ndarray
    geometry: Geometry
    warped: Image
    jacobian: Image
    metrics: dict[str, Any] = field(default_factory=dict)
    warped_fixed_landmarks: Optional[np.ndarray] = None
    before: Optional[Image] = None
    transform: Optional[Transform] = None
    inverse_disp_mm: Optional[np.ndarray] = None
    moving_geometry: Optional[Geometry] = None
