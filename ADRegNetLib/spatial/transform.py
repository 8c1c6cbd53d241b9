r"""The :class:`Transform` every front end receives: a displacement field on a grid, then an affine.

``T(x) = A(x + d(x))`` maps a fixed point x (LPS mm) to its moving point; ``d`` is a displacement
field on the fixed grid (zero outside it, as ITK's ``DisplacementFieldTransform``) and ``A`` an
optional affine (identity when None). The total displacement ``u(x) = T(x) - x`` on the fixed grid
is what the outputs (``displacement.nii.gz``, ``transform.h5``) hold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..typing import ArrayLike
from .affine import AffineMap
from .geometry import Geometry
from .image import Image
from .jacobian import jacobian_determinant
from .warp import warp_image

__all__ = ["Transform", "map_points", "background_value"]


def map_points(disp_mm: ArrayLike, geometry: Geometry, points_lps: ArrayLike) -> ArrayLike:
    """Map points through the field: ``x + u(x)`` with trilinear interpolation of u (torch).

    Matches ITK's ``DisplacementFieldTransform.TransformPoint``: zero displacement outside the
    grid, edge values within half a voxel beyond the outermost voxel centres. Differentiable
    in ``disp_mm`` and ``points_lps`` when they are tensors.

    Args:
        disp_mm: (3, Z, Y, X) or (1, 3, Z, Y, X), LPS mm, (x, y, z) components, on ``geometry``.
        geometry: the field's (fixed) grid.
        points_lps: (K, 3) fixed points, LPS mm.

    Returns:
        (K, 3) moving points, LPS mm; a tensor if ``points_lps`` is one (dtype/device of the
        field when it is a floating tensor, else float64), else a float64 numpy array.
    """
    return_numpy = not isinstance(points_lps, torch.Tensor)
    if isinstance(disp_mm, torch.Tensor) and disp_mm.is_floating_point():
        field = disp_mm
    else:
        field = torch.as_tensor(np.asarray(disp_mm), dtype=torch.float64)
    if field.ndim == 4:
        field = field.unsqueeze(0)
    if field.ndim != 5 or field.shape[:2] != (1, 3):
        raise ValueError(f"disp_mm must have shape (3, Z, Y, X) or (1, 3, Z, Y, X), got {tuple(field.shape)}")
    if tuple(field.shape[2:]) != geometry.shape:
        raise ValueError(f"disp_mm grid {tuple(field.shape[2:])} does not match the geometry {geometry.shape} (Z, Y, X)")
    pts = torch.as_tensor(points_lps).to(dtype=field.dtype, device=field.device)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points_lps must be (K, 3) LPS mm points, got shape {tuple(pts.shape)}")
    a, b = geometry.physical_to_normalized_affine()
    a_t = torch.as_tensor(a, dtype=field.dtype, device=field.device)
    b_t = torch.as_tensor(b, dtype=field.dtype, device=field.device)
    norm = pts @ a_t.T + b_t  # (K, 3) grid_sample coordinates (x, y, z)
    sampled = F.grid_sample(field, norm.view(1, 1, 1, -1, 3), mode="bilinear", padding_mode="border",
                            align_corners=True)  # (1, 3, 1, 1, K)
    u = sampled.view(3, -1).T
    # Inside ITK's buffer: continuous index in [-0.5, size - 0.5] on every axis.
    inv = torch.as_tensor(np.linalg.inv(geometry.index_to_physical_matrix), dtype=field.dtype, device=field.device)
    index = (pts - torch.as_tensor(geometry.origin, dtype=field.dtype, device=field.device)) @ inv.T
    size = torch.as_tensor(geometry.size, dtype=field.dtype, device=field.device)
    inside = ((index >= -0.5) & (index <= size - 0.5)).all(dim=1, keepdim=True)
    out = pts + u * inside.to(u.dtype)
    return out.detach().cpu().numpy() if return_numpy else out


def background_value(image: Image) -> float:
    """The value of an image's background: the median of its six faces (air for CT, 0 for most MR)."""
    a = image.array
    faces = [a[0], a[-1], a[:, 0], a[:, -1], a[:, :, 0], a[:, :, -1]]
    return float(np.median(np.concatenate([f.reshape(-1) for f in faces])))


@dataclass
class Transform:
    """``T(x) = A(x + d(x))``: fixed -> moving map (resampling convention), LPS mm.

    Attributes:
        geometry: the grid of ``disp_mm`` (the fixed image's grid).
        disp_mm: (3, Z, Y, X) float32 LPS mm on ``geometry`` (x, y, z components), or None.
        affine: optional :class:`AffineMap` applied after the displacement.
    """

    geometry: Geometry
    disp_mm: Optional[np.ndarray] = None
    affine: Optional[AffineMap] = None

    def __post_init__(self) -> None:
        if self.disp_mm is not None and tuple(self.disp_mm.shape) != (3, *self.geometry.shape):
            raise ValueError(f"disp_mm must be (3, Z, Y, X) = (3, {self.geometry.shape}) on its geometry, "
                             f"got {tuple(self.disp_mm.shape)}")

    def _disp_tensor(self) -> Optional[torch.Tensor]:
        if self.disp_mm is None:
            return None
        return torch.from_numpy(np.ascontiguousarray(self.disp_mm, dtype=np.float32))[None]

    def map_points(self, points_lps: np.ndarray) -> np.ndarray:
        """Map (K, 3) fixed LPS points (mm) to moving space: (K, 3) float64."""
        pts = np.asarray(points_lps, dtype=np.float64)
        if self.disp_mm is not None:
            pts = map_points(self.disp_mm, self.geometry, pts)
        return pts if self.affine is None else self.affine.apply(pts)

    def total_displacement(self, slab: int = 32, out: Optional[np.ndarray] = None) -> np.ndarray:
        """``u(x) = T(x) - x`` on the grid: (3, Z, Y, X) float32 LPS mm (computed in z-slabs).

        Args:
            slab: z-slices per step.
            out: optional (3, Z, Y, X) float32 array to write into; it may be this transform's own
                field (each slab is read before it is written), saving a full-size copy.
        """
        disp = np.zeros((3, *self.geometry.shape), np.float32) if self.disp_mm is None else self.disp_mm
        if self.affine is None or self.affine.is_identity():
            if out is None:
                return np.ascontiguousarray(disp, dtype=np.float32)
            out[:] = disp
            return out
        m, t = self.affine.matrix, self.affine.offset
        if out is None:
            out = np.empty((3, *self.geometry.shape), dtype=np.float32)
        elif out.shape != (3, *self.geometry.shape) or out.dtype != np.float32:
            raise ValueError(f"out must be a (3, {self.geometry.shape}) float32 array, got {out.shape} {out.dtype}")
        zs, ys, xs = self.geometry.shape
        jj, ii = np.meshgrid(np.arange(ys), np.arange(xs), indexing="ij")
        for z0 in range(0, zs, slab):
            z1 = min(zs, z0 + slab)
            kk = np.arange(z0, z1)[:, None, None] * np.ones((1, ys, xs))
            idx = np.stack([np.broadcast_to(ii, kk.shape), np.broadcast_to(jj, kk.shape), kk], axis=-1).reshape(-1, 3)
            x = self.geometry.index_to_physical(idx)
            d = disp[:, z0:z1].reshape(3, -1).T.astype(np.float64)
            out[:, z0:z1] = ((x + d) @ m.T + t - x).T.reshape(3, z1 - z0, ys, xs)
        return out

    def warp(self, image: Image, mode: str = "linear", default: Optional[float] = None,
             return_inside: bool = False):
        """The image sampled at ``T(x)`` for every voxel x of the grid.

        Args:
            image: the moving image (any grid).
            mode: "linear" (intensities), "nearest" (labels, masks) or "labels" (label-aware).
            default: value outside ``image``; None: the image's background (:func:`background_value`).
            return_inside: also return the (Z, Y, X) bool map of voxels that sampled inside ``image``.

        Returns:
            An :class:`Image` on ``geometry`` (and the inside map with ``return_inside``).
        """
        if mode == "labels":
            from .labels import warp_labels

            total = self.total_displacement()
            out = warp_labels(image.array, total, self.geometry, image.geometry)
            return Image(out, self.geometry, image.name)
        pad = background_value(image) if default is None else float(default)
        src = torch.from_numpy(np.ascontiguousarray(image.array, dtype=np.float32))[None, None]
        res = warp_image(src, self._disp_tensor(), self.geometry, image.geometry, mode=mode, affine=self.affine,
                         padding_value=pad, return_inside=return_inside, itk_buffer=True)
        out, inside = res if return_inside else (res, None)
        arr = out[0, 0].numpy()
        if mode == "nearest":
            arr = arr > 0.5 if image.array.dtype == np.bool_ else arr.astype(image.array.dtype)
        warped = Image(arr, self.geometry, image.name)
        return (warped, inside[0, 0].numpy()) if return_inside else warped

    def jacobian(self, slab_voxels: int = 1 << 21) -> Image:
        """det(d T / d x) on the grid, (Z, Y, X) float32, computed in z-slabs of at most about
        ``slab_voxels`` voxels (the 3x3 derivatives of a slab take about 150 bytes per voxel)."""
        disp = self.total_displacement()
        g = self.geometry
        zs = g.shape[0]
        slab = max(1, int(slab_voxels) // max(1, g.shape[1] * g.shape[2]))
        out = np.empty(g.shape, dtype=np.float32)
        for z0 in range(0, zs, slab):
            z1 = min(zs, z0 + slab)
            lo, hi = max(0, z0 - 1), min(zs, z1 + 1)
            origin = g.index_to_physical(np.array([[0, 0, lo]]))[0]
            sub = Geometry((g.size[0], g.size[1], hi - lo), g.spacing, origin, g.direction)
            det = jacobian_determinant(torch.from_numpy(np.ascontiguousarray(disp[:, lo:hi]))[None], sub)[0].numpy()
            out[z0:z1] = det[z0 - lo:z0 - lo + (z1 - z0)]
        return Image(out, g, "jacobian")
