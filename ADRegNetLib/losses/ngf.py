r"""Normalised gradient fields with the gradient the refinement needs (two contrasts).

``L = 1 - mean_w (g_f . g_m)^2 / ((|g_f|^2 + eps^2)(|g_m|^2 + eps^2))`` (``functional.ngf``): edges
that are parallel or anti-parallel agree, whatever the intensities on either side, so T1 against T2
compares like with like. ``eps`` (normalised intensity per mm) is the gradient magnitude below which
an edge counts as noise. The derivative by the warped intensities comes from autograd through this
image-level expression (central differences and element-wise terms only: no resampling), and the
gradient with respect to a displacement is that derivative times the spatial gradient of the warped
image, as for :class:`.lncc.LocalNCC`, whose interface this class shares.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .features import central_gradient
from .functional import ngf

__all__ = ["NormalizedGradientFields"]


class NormalizedGradientFields:
    """NGF loss of a fixed image against warped moving images, with its gradient.

    Args:
        fixed: (1, 1, Z, Y, X) fixed intensities (normalised, ~[0, 1]).
        weight: optional (1, 1, Z, Y, X) float 0/1 region of interest.
        spacing_xyz: voxel size (x, y, z), mm.
        eps: edge parameter, normalised intensity per mm.
    """

    def __init__(self, fixed: torch.Tensor, weight: Optional[torch.Tensor] = None,
                 spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0), eps: float = 0.0025) -> None:
        if fixed.ndim != 5 or fixed.shape[:2] != (1, 1):
            raise ValueError(f"fixed must be (1, 1, Z, Y, X), got {tuple(fixed.shape)}")
        if weight is not None and tuple(weight.shape) != tuple(fixed.shape):
            raise ValueError(f"weight must be {tuple(fixed.shape)}, got {tuple(weight.shape)}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0 (intensity per mm), got {eps}")
        self.fixed = fixed
        self.weight = weight
        self.spacing = tuple(float(s) for s in spacing_xyz)
        self.eps = float(eps)

    def loss(self, warped: torch.Tensor) -> float:
        """The loss in [0, 1) (0: every edge parallel or anti-parallel)."""
        with torch.no_grad():
            return float(ngf(self.fixed, warped, eps=self.eps, spacing_xyz=self.spacing, mask=self.weight))

    def gradient(self, warped: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(dL/du (1, 3, Z, Y, X) per voxel, (x, y, z) components; the loss L) at the warped image."""
        if warped.shape != self.fixed.shape:
            raise ValueError(f"warped must be {tuple(self.fixed.shape)}, got {tuple(warped.shape)}")
        with torch.enable_grad():
            m = warped.detach().requires_grad_(True)
            value = ngf(self.fixed, m, eps=self.eps, spacing_xyz=self.spacing, mask=self.weight)
            (d_m,) = torch.autograd.grad(value, m)
        grads = central_gradient(warped.detach())  # x, y, z components, value per voxel
        return torch.cat([g.mul_(d_m) for g in grads], dim=1), float(value.detach())
