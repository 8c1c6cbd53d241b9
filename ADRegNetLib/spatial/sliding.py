r"""Smoothing that lets a field slide along a boundary (the lungs along the inside of the chest wall).

The optimisation and the refinement regularise the field by Gaussian smoothing (the update, fluid; the field,
elastic). A Gaussian averages both sides of a boundary alike, so where the lungs slide along a still chest wall (as
they do in breathing) the wall holds the lungs' edge back and the lungs drag the wall along. Here each side of a
region's boundary is smoothed from its own side (normalised convolution inside the region and inside its
complement), with ``leak`` of the other side's weight: 0 lets the two sides move independently, 1 is the plain
Gaussian.

For a region ``r`` (1 inside), a field ``v`` and a Gaussian ``G``, with ``A = G(v r)`` and ``B = G(v) - A``::

    inside  = (A + leak B) / (G(w r) + leak G(w (1 - r)))
    outside = (B + leak A) / (G(w (1 - r)) + leak G(w r))

where ``w`` is the similarity's region for an update (already applied to ``v``; the denominators are floored at
``filters.SUPPORT_FLOOR`` of the region's own share, as :func:`~.filters.smooth_over_support`), 1 for a field.
Two smoothings of the field per call instead of one (the denominators are cached per level).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .filters import SUPPORT_FLOOR, gaussian_smooth

__all__ = ["SlidingRegion", "closed_then_opened"]

#: coefficient pairs kept (a step smooths its update and its field: two; the level or stage before: two more)
_CACHED = 4


class SlidingRegion:
    """A region of the working grid along whose boundary the field may slide, at the grid of any level.

    Args:
        inside: (1, 1, Z, Y, X) bool or 0/1 float on the working grid.
    """

    def __init__(self, inside: torch.Tensor) -> None:
        if inside.ndim != 5 or inside.shape[:2] != (1, 1):
            raise ValueError(f"inside must be (1, 1, Z, Y, X), got {tuple(inside.shape)}")
        self.inside = (inside > 0.5 if inside.is_floating_point() else inside.bool()).to(torch.float32)
        self._levels: dict[tuple, torch.Tensor] = {}
        self._norms: OrderedDict[tuple, tuple] = OrderedDict()  # the last few (a step's update and field smoothing)

    @property
    def share(self) -> float:
        """The share of the working grid inside the region."""
        return float(self.inside.mean())

    def at(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """The region (1, 1, *shape) as 0/1 on a level grid of that shape (spanning the working grid), ``like``'s
        dtype and device."""
        key = (tuple(int(s) for s in shape), like.dtype, like.device)
        if key not in self._levels:
            region = self.inside.to(device=like.device, dtype=like.dtype)
            if tuple(region.shape[2:]) != key[0]:
                region = (F.interpolate(region, size=key[0], mode="trilinear", align_corners=True) > 0.5).to(like.dtype)
            self._levels[key] = region
        return self._levels[key]

    def smooth(self, volume: torch.Tensor, sigma_voxels: float, leak: float, edges: str = "replicate",
               weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``volume`` (1, C, Z, Y, X) smoothed by a Gaussian of ``sigma_voxels`` on each side of the boundary.

        Args:
            volume: the field or update on a level grid (an update already multiplied by ``weight``).
            sigma_voxels: the Gaussian's sigma, voxels of that grid.
            leak: share of the other side's weight, 0 to 1 (1: the plain Gaussian).
            edges: at the grid's faces (:func:`~.filters.gaussian_smooth`).
            weight: optional (1, 1, Z, Y, X) similarity region of an update (None: a field, weight 1).

        Returns:
            (1, C, Z, Y, X), a new tensor.
        """
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"leak must be within [0, 1], got {leak}")
        region = self.at(volume.shape[2:], volume)
        to_inside, to_total = self._coefficients(region, float(sigma_voxels), float(leak), edges, weight)
        inside = gaussian_smooth(volume * region, sigma_voxels, edges)
        total = gaussian_smooth(volume, sigma_voxels, edges)
        return inside.mul_(to_inside).addcmul_(total, to_total)

    def _coefficients(self, region: torch.Tensor, sigma: float, leak: float, edges: str,
                      weight: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)`` with the smoothed volume ``a G(v r) + b G(v)`` (cached per grid, sigma, leak, edges and weight
        tensor): inside ``((1 - leak) A + leak T) / norm_in``, outside ``(T - (1 - leak) A) / norm_out``."""
        key = (tuple(region.shape), sigma, leak, edges, region.dtype, region.device)
        cached = self._norms.get(key)
        if cached is not None and cached[0] is weight:
            self._norms.move_to_end(key)
            return cached[1], cached[2]
        share_in = gaussian_smooth(region, sigma, edges)
        share_out = 1.0 - share_in  # a Gaussian of ones is one at every voxel, at the faces too (either edge rule)
        if weight is None:
            norm_in = (share_in + leak * share_out).clamp_min_(1e-6)
            norm_out = (share_out + leak * share_in).clamp_min_(1e-6)
        else:
            w = weight.to(region.dtype)
            w_in = gaussian_smooth(w * region, sigma, edges)
            w_out = gaussian_smooth(w, sigma, edges).sub_(w_in)
            # far from any data the smoothed update stays small, as smooth_over_support's floor
            floor_in = SUPPORT_FLOOR * (share_in + leak * share_out)
            floor_out = SUPPORT_FLOOR * (share_out + leak * share_in)
            norm_in = torch.maximum(w_in + leak * w_out, floor_in).clamp_min_(1e-6)
            norm_out = torch.maximum(w_out + leak * w_in, floor_out).clamp_min_(1e-6)
        by_in, by_out = region / norm_in, (1.0 - region) / norm_out
        to_inside = (by_in - by_out).mul_(1.0 - leak)
        to_total = by_in.mul_(leak).add_(by_out)
        self._norms[key] = (weight, to_inside, to_total)
        while len(self._norms) > _CACHED:  # two volumes each: a level's or a stage's smoothings, not every one run
            self._norms.popitem(last=False)
        return to_inside, to_total


def closed_then_opened(region: torch.Tensor, close_voxels: Sequence[int], open_voxels: Sequence[int]) -> torch.Tensor:
    """A (1, 1, Z, Y, X) bool region closed (gaps and holes up to twice ``close_voxels`` across filled: vessels
    inside the lungs), then opened (pieces narrower than twice ``open_voxels`` removed: gas pockets), with box
    structuring elements of those half-widths (z, y, x)."""
    x = region.to(torch.float32)

    def dilate(v: torch.Tensor, half: Sequence[int]) -> torch.Tensor:
        kernel = tuple(2 * int(h) + 1 for h in half)
        return F.max_pool3d(v, kernel, stride=1, padding=tuple(int(h) for h in half))

    def erode(v: torch.Tensor, half: Sequence[int]) -> torch.Tensor:
        return dilate(v.neg(), half).neg_()

    x = erode(dilate(x, close_voxels), close_voxels)
    x = dilate(erode(x, open_voxels), open_voxels)
    return x > 0.5
