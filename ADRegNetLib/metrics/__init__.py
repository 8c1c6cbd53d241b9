"""Registration quality metrics: TRE, Dice, NCC/MSE/NMI/SSIM and Jacobian statistics (numpy or torch in)."""
from __future__ import annotations

from .jacobian import jacobian_stats
from .landmarks import tre
from .overlap import dice
from .similarity import gaussian_kernel_1d, mse, ncc, nmi, ssim3d

__all__ = ["tre", "dice", "ncc", "mse", "nmi", "ssim3d", "gaussian_kernel_1d", "jacobian_stats"]
