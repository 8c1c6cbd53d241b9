r"""Presets and quality levels: every number the engine uses, in one place."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.image import Image

__all__ = ["PresetSettings", "QualitySettings", "PRESET_SETTINGS", "QUALITY_SETTINGS", "detect_preset"]


@dataclass(frozen=True)
class PresetSettings:
    """Per-anatomy choices.

    Attributes:
        modality: intensity normalisation ("ct" HU window, "mr" robust percentiles, "generic").
        ct_window: HU window mapped to [0, 1] for CT.
        similarity: "mind" (MIND-SSC + SSD, robust to intensity changes; every preset uses it, and
            all benchmark figures were measured with it) or "lncc".
    """

    modality: str
    ct_window: tuple[float, float] = (-1000.0, 400.0)
    similarity: str = "mind"


PRESET_SETTINGS: dict[str, PresetSettings] = {
    "lung-ct": PresetSettings(modality="ct", ct_window=(-1000.0, 200.0), similarity="mind"),
    "brain-mri": PresetSettings(modality="mr", similarity="mind"),
    "generic": PresetSettings(modality="generic", similarity="mind"),
}


@dataclass(frozen=True)
class QualitySettings:
    """Speed/accuracy trade-off.

    Attributes:
        working_spacing_mm: target voxel size of the working grid (never finer than the fixed image).
        max_working_voxels: cap on the working grid (larger inputs get a coarser grid, and say so).
        levels: instance-optimisation levels as (working-grid downsampling, iterations), coarse first.
        step_voxels: largest update per optimisation step, voxels of the level grid.
        prealign: "affine", "rigid" or "none".
    """

    working_spacing_mm: float
    max_working_voxels: int
    levels: tuple[tuple[int, int], ...]
    step_voxels: float = 0.5
    prealign: str = "affine"
    prealign_iterations: int = 60


QUALITY_SETTINGS: dict[str, QualitySettings] = {
    "fast": QualitySettings(working_spacing_mm=2.0, max_working_voxels=96 ** 3, levels=((4, 60), (2, 40), (1, 10))),
    "balanced": QualitySettings(working_spacing_mm=2.0, max_working_voxels=128 ** 3, levels=((4, 80), (2, 60), (1, 30))),
    "best": QualitySettings(working_spacing_mm=1.5, max_working_voxels=160 ** 3, levels=((4, 100), (2, 80), (1, 60)),
                            prealign_iterations=120),
}


def detect_preset(fixed: Image, moving: Image) -> tuple[str, str]:
    """Choose a preset from the images.

    CT is recognised by Hounsfield values (air near -1000 and a wide range); among CT scans a large
    share of lung-density voxels (-950..-500 HU) inside the field of view means a chest scan. MR with
    a mostly empty background and a head-sized field of view is taken as brain MRI; anything else is
    "generic".

    Returns:
        (preset name, one-line reason).
    """
    arr = fixed.array
    sample = arr[:: max(1, arr.shape[0] // 32), :: max(1, arr.shape[1] // 64), :: max(1, arr.shape[2] // 64)].astype(np.float32)
    lo, hi = np.percentile(sample, [1, 99])
    if lo < -500 and hi > -200:
        lung_share = float(np.mean((sample > -950) & (sample < -500)))
        if lung_share > 0.05:
            return "lung-ct", f"CT intensities (HU) with {100 * lung_share:.0f}% lung-density voxels"
        return "generic", "CT intensities (HU) without lung tissue"
    extent = fixed.geometry.extent_mm
    background = float(np.mean(sample <= lo + 1e-3 * max(hi - lo, 1e-6)))
    if np.all(extent > 100) and np.all(extent < 300) and background > 0.3:
        return "brain-mri", f"non-CT intensities, head-sized field of view, {100 * background:.0f}% empty background"
    return "generic", "non-CT intensities without a head-sized, skull-stripped field of view"

