r"""The lungs slide along the chest wall: where the lung preset lets the field slide, and how much.

In breathing the lungs slide along the inside of the chest wall and over the mediastinum (the pleura), so the
motion jumps at the lungs' boundary: the lung base moves by centimetres beside a rib cage that hardly moves. The
optimisation's and the refinement's Gaussian smoothing averaged both sides, holding the lungs' edge back and
dragging the wall along. With a CT fixed image under the lung preset, the lungs are found on the working grid
(:func:`lung_region`) and both stages smooth each side of their boundary from its own side
(:class:`~ADRegNetLib.spatial.sliding.SlidingRegion`): the MIND-SSC levels with no leak at all, the refinement
with ``REFINE_LEAK`` of the other side.

Measured (twenty-sixth session, one run each, training paused or at nice 19 beside; `lung-sliding`: the benchmark
lung case's breathing field stopping at the lungs' boundary within a Gaussian of 1.5 mm instead of 15 mm,
``benchmarks/recipes.py``), TRE mm, seeds 0 / 1, off -> on (landmarks within 10 mm of the lungs' boundary in brackets):

- lung-sliding, balanced 0.617 / 0.486 -> 0.369 / 0.275 (1.124 / 1.017 -> 0.621 / 0.503); fast 0.874 / 0.736 ->
  0.510 / 0.433.
- the benchmark lung case (its field decays smoothly over 15 mm beyond the lungs: nothing slides), balanced 0.222 /
  0.221 -> 0.236 / 0.233 (the cost); fast 0.394 / 0.391 -> 0.344 / 0.329.
- the demo pair (a smooth field), fast 0.285 -> 0.281, balanced 0.283 -> 0.274.

The leaks were chosen on a first version of the region (every voxel below -400 HU, outside air included; seed 0,
balanced, lung-sliding / lung): the refinement without leak 0.312 / 0.252, 0.1 0.340 / 0.236, 0.3 0.405 / 0.226,
no sliding in the refinement (the levels only) 0.513 / 0.219, in the refinement only 0.353 / 0.245. 0.1 is kept:
real breathing slides. Switch it off (``register(sliding="off")``, ``--sliding off``, the Slicer module's "Lungs
slide along the chest wall") for a chest deformed smoothly across the pleura (a phantom, a synthetic field).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..spatial.filters import gaussian_smooth
from ..spatial.geometry import Geometry
from ..spatial.sliding import SlidingRegion, closed_then_opened
from .api import RegistrationError

__all__ = ["LUNG_HU", "LUNG_SMOOTH_VOXELS", "LUNG_CLOSE_MM", "LUNG_OPEN_MM", "LUNG_MIN_SHARE", "OPTIMIZER_LEAK",
           "REFINE_LEAK", "SLIDING_CHOICES", "check_sliding", "lung_region", "sliding_for"]

#: the lungs on the working grid: voxels whose Hounsfield units, smoothed by ``LUNG_SMOOTH_VOXELS``, lie within this
#: range (lung parenchyma about -900 to -500; air outside the body and in the trachea below -950 goes with the
#: tissue around it, whose motion it follows)
LUNG_HU = (-950.0, -400.0)
#: see ``LUNG_HU`` (working voxels)
LUNG_SMOOTH_VOXELS = 1.0
#: the region is closed by this half-width, mm (vessels and airways inside the lungs filled), then opened by
#: ``LUNG_OPEN_MM`` (gas pockets and thin slivers of partial volume removed)
LUNG_CLOSE_MM = 4.0
#: see ``LUNG_CLOSE_MM``
LUNG_OPEN_MM = 4.0
#: below this share of the working grid the lungs are not looked for (a CT of the abdomen: no sliding)
LUNG_MIN_SHARE = 0.03
#: the share of the other side's weight in the MIND-SSC levels' smoothing (0: the sides move independently)
OPTIMIZER_LEAK = 0.0
#: ... and in the refinement's (see the module docstring)
REFINE_LEAK = 0.1
#: the user's choices: "auto" (the preset's: on for the lung preset with a CT fixed image), "on", "off"
SLIDING_CHOICES = ("auto", "on", "off")


def check_sliding(choice: str) -> None:
    """Raise a ``RegistrationError`` naming the choices unless ``choice`` is one of ``SLIDING_CHOICES``."""
    if choice not in SLIDING_CHOICES:
        raise RegistrationError(f"sliding must be one of {', '.join(SLIDING_CHOICES)} (the lungs sliding along the "
                                f"chest wall), got {choice!r}")


def lung_region(fixed_w: torch.Tensor, ct_window: tuple[float, float], work: Geometry) -> Optional[torch.Tensor]:
    """The lungs of a CT fixed image on the working grid, (1, 1, Z, Y, X) bool, or None where too few voxels are lung.

    Args:
        fixed_w: (1, 1, Z, Y, X) the fixed CT normalised by ``ct_window`` (HU ``low`` -> 0, ``high`` -> 1).
        ct_window: the preset's Hounsfield window (``PresetSettings.ct_window``).
        work: the working grid (its spacing sets the morphology's width in voxels).
    """
    low, high = ct_window
    lo, hi = ((value - low) / (high - low) for value in LUNG_HU)
    smoothed = gaussian_smooth(fixed_w.to(torch.float32), LUNG_SMOOTH_VOXELS)
    band = (smoothed > lo) & (smoothed < hi)
    spacing = work.spacing[::-1]  # z, y, x
    close = [int(round(LUNG_CLOSE_MM / float(s))) for s in spacing]
    opened = [int(round(LUNG_OPEN_MM / float(s))) for s in spacing]
    region = closed_then_opened(band, close, opened)
    if float(region.float().mean()) < LUNG_MIN_SHARE:
        return None
    return region


def sliding_for(choice: Optional[str], preset: str, fixed_ct: bool, fixed_w: torch.Tensor,
                ct_window: tuple[float, float], work: Geometry) -> tuple[Optional[SlidingRegion], dict]:
    """The region the field may slide along (None: smooth everywhere) and the record for ``metrics.json``.

    Args:
        choice: "auto" / None (on for the lung preset with a CT fixed image), "on" (any CT fixed image) or "off".
        preset: the preset in use; fixed_ct: the fixed image is CT (in Hounsfield units).
        fixed_w, ct_window, work: as :func:`lung_region`.

    Raises:
        RegistrationError: an unknown choice, or "on" for a fixed image that is not CT.
    """
    choice = "auto" if choice is None else choice
    check_sliding(choice)
    if choice == "off":
        return None, {"applied": False, "reason": "switched off by the user"}
    if choice == "auto" and preset != "lung-ct":
        return None, {"applied": False, "reason": f"preset {preset} (the lungs slide under the lung preset)"}
    if not fixed_ct:
        if choice == "on":
            raise RegistrationError("sliding 'on' needs a CT fixed image (its lungs are found by their Hounsfield "
                                    "units); use 'auto' or 'off' for this image")
        return None, {"applied": False, "reason": "the fixed image is not CT: its lungs are not found"}
    region = lung_region(fixed_w, ct_window, work)
    if region is None:
        return None, {"applied": False, "reason": f"under {100 * LUNG_MIN_SHARE:.0f}% of the working grid is lung"}
    sliding = SlidingRegion(region)
    return sliding, {"applied": True, "region": f"lungs ({LUNG_HU[0]:.0f} to {LUNG_HU[1]:.0f} HU, closed and opened "
                                                f"by {LUNG_CLOSE_MM:g} mm)",
                     "lung_share": round(float(np.float64(sliding.share)), 4), "optimizer_leak": OPTIMIZER_LEAK,
                     "refine_leak": REFINE_LEAK}
