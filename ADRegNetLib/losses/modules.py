r"""Thin ``nn.Module`` wrappers of :mod:`.functional` (settings in the constructor, tensors in ``forward``)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..spatial.geometry import Geometry
from . import functional as LF

__all__ = [
    "LocalNCCLoss",
    "MSELoss",
    "MINDSSCLoss",
    "NGFLoss",
    "DiffusionLoss",
    "BendingEnergyLoss",
    "FoldingLoss",
    "LandmarkLoss",
]


class LocalNCCLoss(nn.Module):
    """``1 - mean(local NCC^2)`` over a ``window``-voxel box (see :func:`functional.local_ncc`)."""

    def __init__(self, window: int = 9, eps: float = 1e-5) -> None:
        super().__init__()
        self.window = int(window)
        self.eps = float(eps)

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return LF.local_ncc(fixed, warped, self.window, mask, self.eps)

    def extra_repr(self) -> str:
        return f"window={self.window}, eps={self.eps}"


class MSELoss(nn.Module):
    """Mean squared intensity difference (see :func:`functional.mse`)."""

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return LF.mse(fixed, warped, mask)


class MINDSSCLoss(nn.Module):
    """SSD of MIND-SSC descriptors of both images (multi-modal; see :func:`functional.mind_ssc`)."""

    def __init__(self, radius: int = 1, dilation: int = 2) -> None:
        super().__init__()
        self.radius = int(radius)
        self.dilation = int(dilation)

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return LF.mind_loss(LF.mind_ssc(fixed, self.radius, self.dilation),
                            LF.mind_ssc(warped, self.radius, self.dilation), mask)

    def extra_repr(self) -> str:
        return f"radius={self.radius}, dilation={self.dilation}"


class NGFLoss(nn.Module):
    """Normalised gradient fields loss (see :func:`functional.ngf`)."""

    def __init__(self, eps: float = 1e-2, spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.eps = float(eps)
        self.spacing_xyz = tuple(float(s) for s in spacing_xyz)

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return LF.ngf(fixed, warped, self.eps, self.spacing_xyz, mask)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, spacing_xyz={self.spacing_xyz}"


class DiffusionLoss(nn.Module):
    """Mean squared Frobenius norm of the displacement gradient (see :func:`functional.diffusion`)."""

    def __init__(self, spacing_xyz: Sequence[float] | float = 1.0) -> None:
        super().__init__()
        self.spacing_xyz = tuple(np.broadcast_to(np.asarray(spacing_xyz, dtype=float), (3,)).tolist())

    def forward(self, disp_mm: torch.Tensor) -> torch.Tensor:
        return LF.diffusion(disp_mm, self.spacing_xyz)

    def extra_repr(self) -> str:
        return f"spacing_xyz={self.spacing_xyz}"


class BendingEnergyLoss(nn.Module):
    """Bending energy of the displacement (see :func:`functional.bending_energy`)."""

    def __init__(self, spacing_xyz: Sequence[float] | float = 1.0) -> None:
        super().__init__()
        self.spacing_xyz = tuple(np.broadcast_to(np.asarray(spacing_xyz, dtype=float), (3,)).tolist())

    def forward(self, disp_mm: torch.Tensor) -> torch.Tensor:
        return LF.bending_energy(disp_mm, self.spacing_xyz)

    def extra_repr(self) -> str:
        return f"spacing_xyz={self.spacing_xyz}"


class FoldingLoss(nn.Module):
    """Mean ``relu(-det J)`` of x -> x + u(x) on ``geometry`` (see :func:`functional.folding_penalty`)."""

    def __init__(self, geometry: Geometry) -> None:
        super().__init__()
        self.geometry = geometry

    def forward(self, disp_mm: torch.Tensor) -> torch.Tensor:
        return LF.folding_penalty(disp_mm, self.geometry)


class LandmarkLoss(nn.Module):
    """Mean landmark distance ``||x + u(x) - y||`` in mm on the fixed ``geometry`` (see :func:`functional.landmark_loss`)."""

    def __init__(self, geometry: Geometry) -> None:
        super().__init__()
        self.geometry = geometry

    def forward(self, disp_mm: torch.Tensor, fixed_points: torch.Tensor, moving_points: torch.Tensor) -> torch.Tensor:
        return LF.landmark_loss(disp_mm, self.geometry, fixed_points, moving_points)
