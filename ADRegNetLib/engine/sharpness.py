r"""One image blurrier than the other on the same grid: the sharper one blurred to match, measured from content.

``spatial.resolution`` matches what the voxel sizes say (thick slices against thin ones). A scan resampled onto a
finer grid than it was acquired on, or reconstructed with a smoother kernel, keeps a fine voxel size and a blurred
content; the similarity then compares sharp edges with wide weak ones, and both the MIND levels and the refinement
end off. Where the pair is one contrast (the same modality: CT against CT, T1 against T1) and the voxel sizes matched
nothing, :func:`~ADRegNetLib.spatial.sharpness.blur_to_match` measures, per working axis, the Gaussian that brings the
sharper working image to the other's sharpness, and it is applied where it reaches
``SHARPNESS_MATCH_MIN_SIGMA_VOXELS``. Two contrasts are left alone (their edges' spectra differ by tissue, not by
blur).

Measured (twenty-seventh session, balanced, seed 0 benchmark cases, one run each; `scripts/sharpness_check.py`;
the moving image changed, TRE mm without -> with; the blur read in brackets, z / y / x working voxels):

| case | change of the moving image | without | with |
|---|---|---|---|
| brain | Gaussian blur 1 voxel (1.04 / 1.04 / 1.09) | 0.609 | 0.419 |
| brain | Gaussian blur 0.7 voxel (0.76 / 0.73 / 0.78) | 0.347 | 0.285 |
| brain | Gaussian blur 1.5 voxels along z (1.48 / 0.16 / 0.27) | 0.443 | 0.309 |
| brain | 6 mm slices resampled back to 2 mm (1.09 / 0.22 / 0.31) | 0.484 | 0.376 |
| lung | Gaussian blur 1 voxel (0.87 / 0.82 / 0.85) | 0.462 | 0.264 |
| lung | Gaussian blur 0.6 voxel (0.58 / 0.53 / 0.56) | 0.296 | 0.199 |
| lung | 3 slices averaged into one, back to the grid (0.91 / 0.30 / 0.30) | 0.408 | 0.322 |

Blurring the fixed image by the true blur instead (the best a match can do): brain blur 1 voxel 0.404, along z
0.320. The demo pair (its moving CT resampled along the 5 mm slices by the deformation): the fixed image
blurred by 0.56 voxel along z, fast 0.280 -> 0.250 mm, balanced 0.276 -> 0.245. Unchanged (every axis below the threshold): the benchmark brain seeds 0-2, lung, synthseg (the moving
image, interpolated once by the benchmark's deformation, reads 0.1-0.3 voxel blurrier), brain-t1t2 (two contrasts),
oblique (its voxel sizes differ: ``SIZES_DIFFER_VOXELS``). White noise reads as sharpness: Gaussian noise of 3 % / 6 % of the range on the
moving brain reads 0.22 / 0.39 voxel (unchanged: 0.214 / 0.288 mm), 10 % 0.51 / 0.48 / 0.44 (its z blurred: 0.420 ->
0.388); on the lung case 50 / 100 HU read 0.27 / 0.45 (unchanged), 150 HU 0.54 (0.626 -> 0.621). A moving image
warped once with linear interpolation reads 0.37-0.41 voxel blurrier (linear interpolation at random offsets: mean
variance 1/6 voxel^2); matching it (a threshold of 0.3) gave 0.213 / 0.209 -> 0.204 / 0.193 mm on the T1 under two
smooth 3 mm fields, but the benchmark lung case reads 0.31 and the 6 %-noise brain 0.39, so 0.5 is kept.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..spatial.filters import gaussian_smooth
from ..spatial.sharpness import blur_to_match

__all__ = ["SHARPNESS_MATCH_MIN_SIGMA_VOXELS", "SHARPNESS_PROBE_VOXELS", "SHARPNESS_MAX_SIGMA_VOXELS",
           "SIZES_DIFFER_VOXELS", "matched_sharpness"]

#: a measured blur is applied along an axis from this many working voxels up. Below it the benchmark's own pairs
#: (0.1-0.3: the moving image's interpolation) and noise up to 6 % of the range or 100 HU (up to 0.45); blurring
#: the brain case's fixed image by its measured 0.1-0.2 cost 0.174 -> 0.188 mm.
SHARPNESS_MATCH_MIN_SIGMA_VOXELS = 0.5
#: the further blur whose energy loss measures sharpness (1.5 and 2.5 read the same within 0.01 voxel)
SHARPNESS_PROBE_VOXELS = 1.5
#: the largest blur applied, working voxels
SHARPNESS_MAX_SIGMA_VOXELS = 3.0
#: voxel sizes that call for a blur this wide or wider (``resolution_matching`` ``widest_blur_voxels``, before its own
#: threshold) leave the match to them: the oblique case (1.5 x 1.5 x 3 mm against 2 mm, 0.47 voxel, below the voxel
#: sizes' threshold) reads its moving image 0.53 voxel sharper along z, and blurring it cost 0.210 -> 0.222 mm.
SIZES_DIFFER_VOXELS = 0.25


def matched_sharpness(fixed_w: torch.Tensor, moving_w: torch.Tensor, region: Optional[torch.Tensor],
                      one_contrast: bool, sizes_blur_voxels: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The sharper working image blurred, per axis, to the other's measured sharpness.

    Args:
        fixed_w, moving_w: (1, 1, Z, Y, X) the working images (moving pre-aligned), after the voxel sizes' match.
        region: optional (1, 1, Z, Y, X) bool, where both images show the anatomy (the mask and the moving image's
            field of view); None: the whole grid.
        one_contrast: the pair reads as one contrast (two contrasts are left alone).
        sizes_blur_voxels: the widest blur the two voxel sizes call for (``spatial.resolution``, before its
            threshold): from ``SIZES_DIFFER_VOXELS`` up the pair is left to that match.

    Returns:
        (fixed, moving, info): info has "applied", "reason", the blurs "fixed_blur_voxels" / "moving_blur_voxels"
        applied (z, y, x) and the ones "measured".
    """
    zero = [0.0, 0.0, 0.0]
    info = {"applied": False, "fixed_blur_voxels": zero, "moving_blur_voxels": zero}
    if not one_contrast:
        return fixed_w, moving_w, {**info, "reason": "two contrasts: their edges differ by tissue, not by blur"}
    if sizes_blur_voxels >= SIZES_DIFFER_VOXELS:
        return fixed_w, moving_w, {**info, "reason": "the voxel sizes differ: left to their match (resolution_matching)"}
    measured = blur_to_match(fixed_w, moving_w, region, probe_voxels=SHARPNESS_PROBE_VOXELS,
                             max_sigma_voxels=SHARPNESS_MAX_SIGMA_VOXELS)
    applied = [[s if s >= SHARPNESS_MATCH_MIN_SIGMA_VOXELS else 0.0 for s in blur] for blur in measured]
    out = []
    for image, blur in zip((fixed_w, moving_w), applied):
        out.append(gaussian_smooth(image, blur) if any(blur) else image)
    rounded = [np.round(b, 2).tolist() for b in applied]
    info = {"applied": any(any(b) for b in applied), "fixed_blur_voxels": rounded[0], "moving_blur_voxels": rounded[1],
            "measured": {"fixed_blur_voxels": np.round(measured[0], 2).tolist(),
                         "moving_blur_voxels": np.round(measured[1], 2).tolist()}}
    info["reason"] = ("the sharper image blurred to the other's measured sharpness" if info["applied"] else
                      f"the two are as sharp within {SHARPNESS_MATCH_MIN_SIGMA_VOXELS} working voxel")
    return out[0], out[1], info
