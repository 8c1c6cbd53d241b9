r"""The public registration API: :func:`register` and what it returns.

Every front end (Slicer module, CLI, Python users) calls :func:`register`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..io.image import Image
from ..spatial.geometry import Geometry

__all__ = ["RegistrationCancelled", "RegistrationError", "RegistrationResult", "PRESETS", "QUALITIES"]

PRESETS = ("auto", "lung-ct", "brain-mri", "generic")
QUALITIES = ("fast", "balanced", "best")


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
    """

    disp_mm: np.ndarray
    geometry: Geometry
    warped: Image
    jacobian: Image
    metrics: dict[str, Any] = field(default_factory=dict)
    warped_fixed_landmarks: Optional[np.ndarray] = None
