r"""The settings of the instance optimisation (:func:`.optimizer.optimize_field`), re-exported by
:mod:`.optimizer`; the presets and qualities fill them in (``pipeline.register``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

__all__ = ["OptimizerSettings"]


@dataclass(frozen=True)
class OptimizerSettings:
    """Settings of :func:`optimize_field`.

    Attributes:
        levels: (downsampling factor of the working grid, most iterations) per level, coarse first.
        step_voxels: longest update per step, voxels of the level grid (the Gauss-Newton step is
            taken when it is shorter).
        sigma_update: Gaussian sigma smoothing each update (fluid regularisation), working-grid voxels.
        sigma_field: Gaussian sigma smoothing the field after each step (elastic), working-grid voxels.
        features: "mind" (MIND-SSC, robust to intensity changes and modalities) or "intensity"
            (the images themselves; same modality and contrast only).
        mind_dilation: MIND-SSC neighbour distance, working-grid voxels.
        mind_var_floor: MIND-SSC variance floor relative to the image-wide mean (see
            ``losses.features.mind_ssc_fast``).
        landmark_fraction: share of each landmark pair's residual removed per step near it
            (0: landmarks are only reported).
        min_improvement: a level stops when its loss fell by less than this fraction over the last
            ``patience`` steps (negative: never stop early).
        patience: see ``min_improvement``.
        coarse_start: levels run before ``levels`` whose result is kept only when it found large
            motion and matches better: the 95th percentile of the displacement over the region (the
            mask, or where the fixed image shows tissue, above ``settings.TISSUE_THRESHOLD``) of at
            least ``coarse_keep_mm``, and then the first of ``levels``, run from it and from the
            initial field, ending with a loss lower by ``coarse_min_gain`` (relative) from it;
            otherwise ``levels`` go on from the initial field. Such a level catches motion beyond
            the reach of ``levels``; on smaller motion it costs accuracy, and a strong intensity
            change can make it invent motion (the result's ``coarse_start`` entry says what was
            measured).
        coarse_keep_mm, coarse_min_gain: see ``coarse_start``.
        coarse_more_steps: most steps the last coarse-start level goes on for when it found such motion
            (before the comparison), so that motion of 20-30 mm is followed further.
        coarse_judge: the loss the comparison uses, of a normalised flow on any level grid (lower is
            better); default: the first regular level's own MIND-SSC loss.
        large_motion_more_steps: a regular level coarser than the working grid that used all its steps
            goes on for this many more where the motion it found reaches ``coarse_keep_mm`` (95th
            percentile, as above): breathing of 15-20 mm was still being followed when the steps ran out.
        small_level_voxels, small_level_threads: levels with fewer voxels run with at most this many
            torch threads (restored afterwards). Their operations are small, and each parallel
            operation waits for every thread: on the shared 2-core machine (load 4-5) an
            element-wise product on a 57x49x41 field took 8 ms with 2 threads and 0.06 ms with 1.
        sliding_leak: with a sliding region (``optimize_field(sliding=)``), the share of the other side's weight
            in each side's smoothing (0: the sides move independently; ``engine.sliding.OPTIMIZER_LEAK``).
    """

    levels: Sequence[tuple[float, int]] = ((2, 12), (1, 6))
    step_voxels: float = 1.0
    sigma_update: float = 5.0
    sigma_field: float = 1.5
    features: str = "mind"
    mind_dilation: int = 2
    mind_var_floor: float = 0.03
    landmark_fraction: float = 1.0
    min_improvement: float = 2e-3
    patience: int = 3
    coarse_start: Sequence[tuple[float, int]] = ()
    coarse_keep_mm: float = float("inf")
    coarse_min_gain: float = 0.0
    coarse_more_steps: int = 0
    coarse_judge: Optional[Callable[[torch.Tensor], float]] = None
    sliding_leak: float = 0.2
    large_motion_more_steps: int = 0
    small_level_voxels: int = 300_000
    small_level_threads: int = 1
