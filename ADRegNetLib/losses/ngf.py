r"""Normalised gradient fields with the gradient the refinement needs (two contrasts).

``L = 1 - mean_w (g_f . g_m)^2 / ((|g_f|^2 + eps^2)(|g_m|^2 + eps^2))`` (``functional.ngf``): edges
that are parallel or anti-parallel agree, whatever the intensities on either side, so T1 against T2
compares like with like. ``eps`` (normalised intensity per mm) is the gradient magnitude below which
an edge counts as noise. The gradient with respect to a displacement is the loss's derivative by
the warped intensities times the spatial gradient of the warped image, as for
:class:`.lncc.LocalNCC`, whose interface this class shares.

The derivative by the warped intensities is written out: with ``d = g_f . g_m``, ``n_f`` and ``n_m``
the two regularised squared norms and ``w`` the normalised weights, ``dL/dg_m = -2 w d / (n_f n_m)
(g_f - (d / n_m) g_m)``, taken back to the intensities by the adjoint of the central differences.
The fixed image's gradient and norm are computed once. Against autograd through ``functional.ngf``
(which it replaced, sixteenth session): the same values to float rounding, and one gradient on the
lung case's working grid (148 x 118 x 121, 2 cores) 0.10-0.11 s -> 0.024-0.028 s (three rounds of
three calls each, one process; ``docs/benchmarks/wave16-2026-12-01.md``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .features import central_gradient

__all__ = ["NormalizedGradientFields"]


def _central_adjoint(v: torch.Tensor, dim: int) -> torch.Tensor:
    """Adjoint of ``features.central_gradient`` along ``dim`` (without its factor 1/2; edges replicated).

    ``g[i] = x[min(i + 1, n - 1)] - x[max(i - 1, 0)]``, so ``x``'s derivative collects ``v[j - 1] -
    v[j + 1]`` inside, ``-(v[0] + v[1])`` at the first voxel and ``v[n - 2] + v[n - 1]`` at the last.
    """
    n = v.shape[dim]
    out = torch.zeros_like(v)
    if n < 2:
        return out
    out.narrow(dim, 1, n - 1).add_(v.narrow(dim, 0, n - 1))
    out.narrow(dim, 0, n - 1).sub_(v.narrow(dim, 1, n - 1))
    out.narrow(dim, 0, 1).sub_(v.narrow(dim, 0, 1))
    out.narrow(dim, n - 1, 1).add_(v.narrow(dim, n - 1, 1))
    return out


class NormalizedGradientFields:
    """NGF loss of a fixed image against warped moving images, with its gradient.

    Args:
        fixed: (1, 1, Z, Y, X) fixed intensities (normalised, ~[0, 1]).
        weight: optional (1, 1, Z, Y, X) float 0/1 region of interest.
        spacing_xyz: voxel size (x, y, z), mm.
        eps: edge parameter, normalised intensity per mm.

    Raises:
        ValueError: inputs of the wrong shape, an empty region, or ``eps`` not > 0.
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
        self.spacing = tuple(float(s) for s in spacing_xyz)
        self.eps = float(eps)
        # per-mm fixed gradient (x, y, z) and its regularised squared norm, once
        self._fixed_grad = [g.div_(h) for g, h in zip(central_gradient(fixed), self.spacing)]
        self._fixed_norm = sum(g * g for g in self._fixed_grad) + self.eps ** 2
        if weight is None:
            self._scale: torch.Tensor | float = 1.0 / fixed.numel()
        else:
            total = float(weight.sum())
            if not total > 0:
                raise ValueError("weight is empty: no voxel to evaluate NGF on; pass weight=None or a non-empty region")
            self._scale = weight / total

    def _terms(self, warped: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, float]:
        """The warped image's per-voxel gradient, ``d``, ``n_m`` and the loss."""
        if warped.shape != self.fixed.shape:
            raise ValueError(f"warped must be {tuple(self.fixed.shape)}, got {tuple(warped.shape)}")
        per_voxel = central_gradient(warped.detach())  # x, y, z, value per voxel
        dot = torch.zeros_like(self._fixed_norm)
        norm = torch.full_like(self._fixed_norm, self.eps ** 2)
        for g, gf, h in zip(per_voxel, self._fixed_grad, self.spacing):
            dot.addcmul_(g, gf, value=1.0 / h)
            norm.addcmul_(g, g, value=1.0 / (h * h))
        agreement = dot * dot / (self._fixed_norm * norm)
        loss = 1.0 - float((agreement * self._scale).sum())
        return per_voxel, dot, norm, loss

    def loss(self, warped: torch.Tensor) -> float:
        """The loss in [0, 1) (0: every edge parallel or anti-parallel)."""
        with torch.no_grad():
            return self._terms(warped)[3]

    def gradient(self, warped: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(dL/du (1, 3, Z, Y, X) per voxel, (x, y, z) components; the loss L) at the warped image."""
        with torch.no_grad():
            per_voxel, dot, norm, loss = self._terms(warped)
            factor = dot.mul(-2.0).div_(self._fixed_norm * norm).mul_(self._scale)  # -2 w d / (n_f n_m)
            ratio = dot.div_(norm)  # d / n_m (dot is not needed any more)
            d_warped = torch.zeros_like(self.fixed)
            for dim, g, gf, h in zip((4, 3, 2), per_voxel, self._fixed_grad, self.spacing):
                # dL/dg_m per mm, then back through g_m = 0.5 * central difference / h
                d_grad = gf - ratio * g / h
                d_grad.mul_(factor)
                d_warped.add_(_central_adjoint(d_grad, dim), alpha=0.5 / h)
            return torch.cat([g.mul_(d_warped) for g in per_voxel], dim=1), loss
