r"""The lungs slide along the chest wall: where the lung preset lets the field slide, and how much.

In breathing the lungs slide along the inside of the chest wall and over the mediastinum (the pleura), so the
motion jumps at the lungs' boundary: the lung base moves by centimetres beside a rib cage that hardly moves. The
optimisation's and the refinement's Gaussian smoothing averaged both sides, holding the lungs' edge back and
dragging the wall along. With a CT fixed image under the lung preset, the lungs are found on the working grid
(:func:`lung_region`) and both stages smooth each side of their boundary from its own side
(:class:`~ADRegNetLib.spatial.sliding.SlidingRegion`), with ``OPTIMIZER_LEAK`` / ``REFINE_LEAK`` of the other
side's weight.

Measured (twenty-sixth session, one run each; probes in the session's notes). `lung-sliding`: the benchmark lung
case's breathing field stopping at the lungs' boundary within a Gaussian of 1.5 mm instead of 15 mm
(``benchmarks/recipes.py``); `thorax`: the whole POPI thorax CT at 3 mm (arms, body wall, abdomen), 200 landmarks,
either a random smooth field over the body (5 mm mean, control values 40 mm apart: nothing slides) or the sliding
breathing field (5 mm mean in the lungs). TRE mm, seed 0 unless named, off / leaks (0, 0.1) / leaks (0.2, 0.2):

| case | balanced | fast |
|---|---|---|
| lung-sliding | 0.617 / 0.374 / 0.413 | 0.874 / 0.498 / 0.567 |
| lung-sliding seed 1 | 0.486 / 0.274 / 0.315 | 0.736 / 0.402 / 0.456 |
| thorax, sliding breathing | 0.750 / 0.364 / 0.423 | 1.137 / 0.665 / 0.789 |
| benchmark lung (smooth beyond the lungs) | 0.222 / 0.237 / 0.228 | 0.394 / 0.349 / 0.339 |
| benchmark lung seed 1 | 0.221 / 0.232 / 0.224 | 0.391 / 0.332 / 0.332 |
| thorax, smooth field over the body | 1.470 / 1.588 / 1.501 | 2.535 / 2.671 / 2.686 |

Landmarks within 10 mm of the lungs' boundary carry the change (lung-sliding balanced 1.124 -> 0.628 with leaks
(0, 0.1)). Leaks (0.2, 0.2) are kept: most of the gain where the lungs slide, 1-3 % (balanced) where nothing does;
(0.1, 0.1) 1.594 / 0.379 / 0.379 / 0.236 (thorax smooth, thorax sliding, lung-sliding, lung; balanced), (0, 0.3)
1.522 / 0.455 / 0.439 / 0.225. The demo pair (a smooth field): fast 0.285 -> 0.280, balanced 0.283 -> 0.276. Switch
it off (``register(sliding="off")``, ``--sliding off``, the Slicer module's "Lungs slide along the chest wall") for
a chest deformed smoothly across the pleura (a phantom, a synthetic field).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch

from ..spatial.filters import gaussian_smooth
from ..spatial.geometry import Geometry
from ..spatial.sliding import SlidingRegion, closed_then_opened
from .api import RegistrationError
from .settings import SLIDING_CHOICES  # listed in __all__: importable from here as well

__all__ = ["LUNG_MAX_HU", "OUTSIDE_FACE_SHARE", "LUNG_SMOOTH_VOXELS", "LUNG_CLOSE_MM", "LUNG_OPEN_MM", "LUNG_MIN_SHARE",
           "OPTIMIZER_LEAK",
           "REFINE_LEAK", "SLIDING_CHOICES", "check_sliding", "lung_region", "sliding_for"]

#: the lungs on the working grid: connected pieces of the voxels whose Hounsfield units, smoothed by
#: ``LUNG_SMOOTH_VOXELS``, lie below this (lung parenchyma about -900 to -500, airways and air below), less the air
#: outside the body (``OUTSIDE_FACE_SHARE``) and pieces under ``LUNG_MIN_SHARE`` of the grid (gas pockets)
LUNG_MAX_HU = -400.0
#: see ``LUNG_MAX_HU`` (working voxels)
LUNG_SMOOTH_VOXELS = 1.0
#: a piece covering this share of a face of the grid across the body (of an axis other than the one closest to the
#: head-feet direction) or more is air outside the body.
#: Measured (twenty-sixth session; largest share per piece): the lungs of the benchmark lung case and of the whole
#: POPI thorax at 3 mm 0 (they reach the top and bottom faces only), of the demo pair (a crop of the right lung)
#: 0.058; air outside the body 0.139-1.0. (A threshold in HU does not tell them apart: the whole thorax's air
#: outside lies at -992 HU, within a few tens of the lungs' darkest.)
OUTSIDE_FACE_SHARE = 0.10
#: the region is closed by this half-width, mm (vessels and airway walls inside the lungs filled), then opened by
#: ``LUNG_OPEN_MM`` (slivers of partial volume removed)
LUNG_CLOSE_MM = 4.0
#: see ``LUNG_CLOSE_MM``
LUNG_OPEN_MM = 4.0
#: a piece of the region holding less than this share of the working grid is left out (gas in the bowel), and
#: without any larger one there is no sliding (a CT of the abdomen)
LUNG_MIN_SHARE = 0.01
#: the share of the other side's weight in the MIND-SSC levels' smoothing (0: the sides move independently)
OPTIMIZER_LEAK = 0.2
#: ... and in the refinement's (see the module docstring)
REFINE_LEAK = 0.2


def check_sliding(choice: str) -> None:
    """Raise a ``RegistrationError`` naming the choices unless ``choice`` is one of ``SLIDING_CHOICES``."""
    if choice not in SLIDING_CHOICES:
        raise RegistrationError(f"sliding must be one of {', '.join(SLIDING_CHOICES)} (the lungs sliding along the "
                                f"chest wall), got {choice!r}")


def lung_region(fixed_w: torch.Tensor, ct_window: tuple[float, float], work: Geometry) -> Optional[torch.Tensor]:
    """The lungs of a CT fixed image on the working grid, (1, 1, Z, Y, X) bool, or None where none are found.

    Args:
        fixed_w: (1, 1, Z, Y, X) the fixed CT normalised by ``ct_window`` (HU ``low`` -> 0, ``high`` -> 1).
        ct_window: the preset's Hounsfield window (``PresetSettings.ct_window``).
        work: the working grid (its spacing sets the morphology's width in voxels).
    """
    low, high = ct_window
    smoothed = gaussian_smooth(fixed_w.to(torch.float32), LUNG_SMOOTH_VOXELS)[0, 0]
    dark = (smoothed < (LUNG_MAX_HU - low) / (high - low)).cpu().numpy()
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(dark.astype(np.uint8)))  # faces touching: 6-connected
    pieces = sitk.GetArrayFromImage(components).astype(np.int64)
    count = int(pieces.max())
    if count == 0:
        return None
    sizes = np.bincount(pieces.ravel(), minlength=count + 1)
    keep = sizes >= LUNG_MIN_SHARE * dark.size
    keep[0] = False
    for face in _faces_across_the_body(pieces, work):
        touching = np.bincount(face.ravel(), minlength=count + 1)
        keep &= touching < OUTSIDE_FACE_SHARE * face.size
    if not keep[1:].any():
        return None
    lungs = torch.from_numpy(keep[pieces])[None, None].to(fixed_w.device)
    spacing = work.spacing[::-1]  # z, y, x
    close = [int(round(LUNG_CLOSE_MM / float(s))) for s in spacing]
    opened = [int(round(LUNG_OPEN_MM / float(s))) for s in spacing]
    region = closed_then_opened(lungs, close, opened)
    return region if bool(region.any()) else None


def _faces_across_the_body(volume: np.ndarray, work: Geometry) -> list[np.ndarray]:
    """The four faces of a (Z, Y, X) array on ``work`` whose grid axes run across the body: all but the two faces
    of the axis closest to the patient's superior-inferior direction (LPS z), whatever the scan's orientation."""
    head_to_feet = int(np.argmax(np.abs(work.direction[2])))  # grid axis x, y or z
    faces = []
    for grid_axis in range(3):
        if grid_axis != head_to_feet:
            along = 2 - grid_axis  # the array's axis order is (z, y, x)
            faces += [np.take(volume, 0, axis=along), np.take(volume, -1, axis=along)]
    return faces


def sliding_for(choice: str, preset: str, fixed_ct: bool, fixed_w: torch.Tensor,
                ct_window: tuple[float, float], work: Geometry) -> tuple[Optional[SlidingRegion], dict]:
    """The region the field may slide along (None: smooth everywhere) and the record for ``metrics.json``.

    Args:
        choice: "auto" (on for the lung preset with a CT fixed image), "on" (any CT fixed image) or "off".
        preset: the preset in use; fixed_ct: the fixed image is CT (in Hounsfield units).
        fixed_w, ct_window, work: as :func:`lung_region`.

    Raises:
        RegistrationError: an unknown choice, or "on" for a fixed image that is not CT.
    """
    check_sliding(choice)
    if choice == "off":
        return None, {"applied": False, "reason": "switched off by the user"}
    if choice == "auto" and preset != "lung-ct":
        return None, {"applied": False, "reason": f"preset {preset} (the lungs slide under the lung preset)"}
    if not fixed_ct:
        if choice == "on":
            raise RegistrationError("sliding 'on' needs a CT fixed image (its lungs are found by their Hounsfield "
                                    "units); use 'auto' or 'off' for this image")
        return None, {"applied": False, "reason": "the fixed image is not registered in Hounsfield units (not a CT, or a "
                                                  "CT cut to the other image's display window): its lungs are not "
                                                  "found"}
    region = lung_region(fixed_w, ct_window, work)
    if region is None:
        return None, {"applied": False, "reason": f"no lungs found (voxels below {LUNG_MAX_HU:.0f} HU inside the "
                                                  f"body, {100 * LUNG_MIN_SHARE:.0f}% of the working grid or more)"}
    sliding = SlidingRegion(region)
    return sliding, {"applied": True, "region": f"lungs (below {LUNG_MAX_HU:.0f} HU inside the body, closed and opened "
                                                f"by {LUNG_CLOSE_MM:g} mm)",
                     "lung_share": round(sliding.share, 4), "optimizer_leak": OPTIMIZER_LEAK,
                     "refine_leak": REFINE_LEAK}
