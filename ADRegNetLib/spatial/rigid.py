r"""Rigid regions: keep the motion of labelled regions rigid inside a deformable field.

Inside each labelled region (a tumour, an implant, a bone) the displacement is replaced by the
rigid motion that best matches it: the rotation R and translation t minimising
``sum |R x + t - (x + u(x))|^2`` over the region's voxel centres x (Kabsch / orthogonal
Procrustes, proper rotations only). Outside, the field blends back to the deformable one over
``blend_mm``: with d the distance to the region (mm), h the largest voxel spacing and
w = 1 - smoothstep((d - h) / blend_mm),

    u_new = (1 - w) u + w u_rigid        (w = 1 inside the region and one voxel around it,
                                          0 beyond h + blend_mm).

The one-voxel rigid shell makes the finite-difference Jacobian of every voxel of the region
exactly that of a rotation (det = 1).

Where the blend zones of several regions overlap the weights are normalised to sum to at most
one; a voxel inside one region takes that region's motion alone.

:class:`RigidRegions` does the per-grid work once (distances, weights, coordinates), so that
projecting a field costs a few small reductions per region: cheap enough to call after every
optimisation step. :func:`rigidify` is the one-call form.

Distances use the grid spacing along each voxel axis (exact Euclidean distance up to
``blend_mm`` for grids with an orthonormal direction matrix, as medical images have).
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

from .geometry import Geometry

__all__ = ["RigidRegions", "rigidify"]

ArrayLike = Union[np.ndarray, torch.Tensor]
DeviceLike = Union[str, torch.device]


def _distance_mm(inside: torch.Tensor, spacing_zyx: tuple[float, float, float], limit_mm: float) -> torch.Tensor:
    """Euclidean distance (mm) of each voxel to the nearest ``inside`` voxel, exact up to ``limit_mm``.

    Separable squared distance transform, each 1-D pass a brute-force minimum over offsets
    within ``limit_mm`` (a point closer than the limit has every per-axis offset within it too).
    Farther voxels get a value above ``limit_mm`` (or inf).
    """
    d2 = torch.where(inside, 0.0, math.inf).to(torch.float32)
    for axis, h in enumerate(spacing_zyx):
        reach = min(int(math.ceil(limit_mm / h)), d2.shape[axis] - 1)
        if reach <= 0:
            continue
        pad = [0, 0] * 3
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = reach
        padded = torch.nn.functional.pad(d2[None, None], pad, value=math.inf)[0, 0]
        best = d2
        for offset in range(-reach, reach + 1):
            if offset:
                shifted = padded.narrow(axis, reach + offset, d2.shape[axis])
                best = torch.minimum(best, shifted + (offset * h) ** 2)
        d2 = best
    return d2.sqrt()


class RigidRegions:
    """The rigid regions of a label map on one grid, ready to project fields.

    Args:
        region_labels: (Z, Y, X) integer label map on ``geometry``; each value > 0 is one rigid
            region (0 and negative values: deformable).
        geometry: the grid of the fields to project (the working grid of the optimisation).
        blend_mm: width of the zone outside each region over which the field returns from rigid
            to deformable, mm (0: a hard edge).
        device: torch device of the precomputed arrays (fields are moved to it).

    Raises:
        ValueError: shape mismatch, non-integer labels, negative ``blend_mm``.
    """

    def __init__(self, region_labels: ArrayLike, geometry: Geometry, blend_mm: float = 10.0,
                 device: DeviceLike = "cpu") -> None:
        lab = region_labels if isinstance(region_labels, torch.Tensor) else torch.as_tensor(np.asarray(region_labels))
        if tuple(lab.shape) != geometry.shape:
            raise ValueError(f"region_labels must be (Z, Y, X) = {geometry.shape} on the field's grid, got {tuple(lab.shape)}")
        if lab.is_floating_point() and not torch.equal(lab, lab.round()):
            raise ValueError("region_labels must be a label map (whole numbers), got fractional values")
        if not blend_mm >= 0:
            raise ValueError(f"blend_mm must be >= 0 mm, got {blend_mm}")
        self.geometry = geometry
        self.blend_mm = float(blend_mm)
        self.device = torch.device(device)
        lab = lab.to(self.device).long()
        self.region_ids = [int(v) for v in torch.unique(lab) if int(v) > 0]
        spacing_zyx = tuple(float(s) for s in geometry.spacing[::-1])
        reach = [int(math.ceil((self.blend_mm + float(np.max(geometry.spacing))) / h)) for h in spacing_zyx]
        m = torch.as_tensor(geometry.index_to_physical_matrix, dtype=torch.float64, device=self.device)
        origin = torch.as_tensor(geometry.origin, dtype=torch.float64, device=self.device)
        shell = float(np.max(geometry.spacing))
        self._regions = []
        for rid in self.region_ids:
            inside = lab == rid
            nz = torch.nonzero(inside)
            lo = [max(int(nz[:, k].min()) - reach[k], 0) for k in range(3)]
            hi = [min(int(nz[:, k].max()) + reach[k] + 1, lab.shape[k]) for k in range(3)]
            box = tuple(slice(a, b) for a, b in zip(lo, hi))
            inside_box = inside[box]
            # Rigid up to one voxel outside the region, so that the finite-difference Jacobian of the
            # region's own voxels sees rigid neighbours only, then the smooth blend.
            dist = _distance_mm(inside_box, spacing_zyx, shell + self.blend_mm)
            if self.blend_mm > 0:
                t = ((dist - shell) / self.blend_mm).clamp(min=0.0, max=1.0)
                weight = 1.0 - t * t * (3.0 - 2.0 * t)
            else:
                weight = (dist <= shell).to(torch.float32)
            # voxel centres of the box, LPS mm, relative to the region's centroid (float64: mm-scale
            # origins would cost float32 precision in the Procrustes sums)
            zz, yy, xx = torch.meshgrid(*(torch.arange(a, b, dtype=torch.float64, device=self.device)
                                          for a, b in zip(lo, hi)), indexing="ij")
            coords = torch.einsum("ij,jzyx->izyx", m, torch.stack([xx, yy, zz])) + origin[:, None, None, None]
            centroid = coords[:, inside_box].mean(dim=1)
            coords = coords - centroid[:, None, None, None]
            self._regions.append({"box": box, "inside": inside_box, "weight": weight.to(torch.float64),
                                  "dist": dist, "core": dist <= shell,
                                  "coords": coords, "points": coords[:, inside_box], "centroid": centroid})
        boxes = [r["box"] for r in self._regions]
        self._union = tuple(slice(min(b[k].start for b in boxes), max(b[k].stop for b in boxes)) for k in range(3)) \
            if boxes else None
        # A voxel of a region or of its one-voxel shell (its core) takes that region's motion alone;
        # where two cores meet (regions two voxels apart or less) the nearer region wins.
        for reg in self._regions:
            for other in self._regions:
                overlap = tuple(slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(reg["box"], other["box"]))
                if other is reg or any(s.start >= s.stop for s in overlap):
                    continue
                mine = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(overlap, reg["box"]))
                theirs = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(overlap, other["box"]))
                keep = reg["core"][mine] & (reg["dist"][mine] <= other["dist"][theirs])
                lose = other["core"][theirs] & ~keep
                reg["weight"][mine] = torch.where(lose, 0.0, reg["weight"][mine])
        # The weights never change: precompute each region's share and what is kept of the field.
        if self._regions:
            shape = tuple(u.stop - u.start for u in self._union)
            total = torch.zeros(shape, dtype=torch.float64, device=self.device)
            for reg in self._regions:
                reg["local"] = tuple(slice(b.start - u.start, b.stop - u.start) for b, u in zip(reg["box"], self._union))
                total[reg["local"]] += reg["weight"]
            scale = total.clamp(min=1.0)
            self._keep = (1.0 - total / scale).to(torch.float32)
            for reg in self._regions:
                reg["share"] = (reg["weight"] / scale[reg["local"]]).to(torch.float32)
                reg["coords32"] = reg["coords"].to(torch.float32)
                del reg["dist"], reg["core"], reg["coords"], reg["weight"]

    def fit(self, disp_mm: ArrayLike) -> list[tuple[np.ndarray, np.ndarray]]:
        """The best rigid motion of each region, in ``region_ids`` order.

        Args:
            disp_mm: (3, Z, Y, X) or (1, 3, Z, Y, X) LPS mm, (x, y, z) components, on the grid.

        Returns:
            One (R (3, 3), t (3,)) per region, float64 numpy: fixed x -> moving R @ x + t (LPS mm).
        """
        field = self._as_field(disp_mm)
        out = []
        for reg in self._regions:
            rot, shift = self._procrustes(reg, field)
            c = reg["centroid"]
            out.append(((rot).cpu().numpy(), (c + shift - rot @ c).cpu().numpy()))
        return out

    def project(self, disp_mm: ArrayLike) -> ArrayLike:
        """The field with each region's motion made rigid and blended back outside.

        Args:
            disp_mm: (3, Z, Y, X) or (1, 3, Z, Y, X) float, LPS mm, (x, y, z) components, on the grid.

        Returns:
            The projected field: same shape and kind (numpy, or a tensor on the input's device and
            dtype). Gradients flow through it when the input requires them.
        """
        field = self._as_field(disp_mm)
        if not self._regions:
            return disp_mm
        out = field.clone()
        inner = (slice(None),) + self._union  # outside the union of the regions' boxes the field is unchanged
        blended = field[inner] * self._keep.to(field.dtype)
        for reg in self._regions:
            rot, shift = self._procrustes(reg, field)
            eye = torch.eye(3, dtype=torch.float32, device=self.device)
            rigid = torch.einsum("ij,jzyx->izyx", rot.to(torch.float32) - eye, reg["coords32"])
            rigid += shift.to(torch.float32)[:, None, None, None]
            blended[(slice(None),) + reg["local"]] += (reg["share"] * rigid).to(field.dtype)
        out[inner] = blended
        return self._like(out, disp_mm)

    # ------------------------------------------------------------------------------ helpers
    def _as_field(self, disp_mm: ArrayLike) -> torch.Tensor:
        t = disp_mm if isinstance(disp_mm, torch.Tensor) else torch.as_tensor(np.asarray(disp_mm))
        if t.ndim == 5 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 4 or t.shape[0] != 3 or tuple(t.shape[1:]) != self.geometry.shape:
            raise ValueError(f"disp_mm must be (3, Z, Y, X) = (3, {', '.join(map(str, self.geometry.shape))}) on the "
                             f"regions' grid, got {tuple(t.shape)}")
        return t.to(device=self.device, dtype=t.dtype if t.is_floating_point() else torch.float32)

    @staticmethod
    def _like(out: torch.Tensor, original: ArrayLike) -> ArrayLike:
        shaped = out[None] if original.ndim == 5 else out
        if isinstance(original, torch.Tensor):
            return shaped.to(device=original.device, dtype=original.dtype)
        return shaped.cpu().numpy().astype(np.asarray(original).dtype, copy=False)

    @staticmethod
    def _procrustes(reg: dict, field: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, s): the region's centred points x map to R x + s (centred coordinates, mm)."""
        u = field[(slice(None),) + reg["box"]][:, reg["inside"]].to(torch.float64)  # (3, K)
        x = reg["points"]  # (3, K), mean zero
        y = x + u
        shift = y.mean(dim=1)
        h = x @ (y - shift[:, None]).T  # (3, 3) cross-covariance
        uu, _, vt = torch.linalg.svd(h)
        d = torch.sign(torch.linalg.det(vt.T @ uu.T))
        d = torch.where(d == 0, torch.ones_like(d), d)
        fix = torch.diag(torch.stack([torch.ones_like(d), torch.ones_like(d), d]))
        return vt.T @ fix @ uu.T, shift


def rigidify(disp_mm: ArrayLike, geometry: Geometry, region_labels: ArrayLike, blend_mm: float = 10.0) -> ArrayLike:
    """Make the motion rigid inside each labelled region, blended smoothly outside (one call).

    For repeated projections on one grid (every optimisation step), build :class:`RigidRegions`
    once and call its ``project``.

    Args:
        disp_mm: (3, Z, Y, X) or (1, 3, Z, Y, X) float, LPS mm, (x, y, z) components, on ``geometry``.
        geometry: the field's grid.
        region_labels: (Z, Y, X) integer label map on ``geometry``; each value > 0 is one rigid region.
        blend_mm: width of the blend zone outside each region, mm.

    Returns:
        The projected field, same shape and kind as ``disp_mm``.
    """
    device = disp_mm.device if isinstance(disp_mm, torch.Tensor) else "cpu"
    return RigidRegions(region_labels, geometry, blend_mm, device).project(disp_mm)
