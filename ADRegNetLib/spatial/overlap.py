r"""How much two image grids share in physical space (LPS mm); exact for oblique grids.

A grid covers the parallelepiped between its outer voxel *edges*: continuous voxel index -0.5 to
``size - 0.5`` along each axis, mapped through ``origin + direction @ (spacing * index)``. Its
8 corners (:func:`grid_corners`) are where the fixed/moving/mask overlap checks start; the
overlap itself is the exact volume of the intersection of the two parallelepipeds (a convex
polyhedron: the vertices come from triples of the 12 face planes, the volume from pyramids on
its faces), so a rotated grid is not inflated to its axis-aligned bounding box.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from .geometry import Geometry

__all__ = ["grid_corners", "physical_overlap"]

_TRIPLES = np.asarray(list(combinations(range(12), 3)))


def grid_corners(geometry: Geometry) -> np.ndarray:
    """The 8 physical corners of a grid, voxel edge to voxel edge.

    Args:
        geometry: the grid (LPS mm).

    Returns:
        (8, 3) LPS points, mm, (x, y, z) per row.
    """
    hi = np.asarray(geometry.size, dtype=np.float64) - 0.5
    index = np.array([[i, j, k] for i in (-0.5, hi[0]) for j in (-0.5, hi[1]) for k in (-0.5, hi[2])])
    return geometry.index_to_physical(index)


def _half_spaces(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (6, 3) and offsets (6,) with ``normal @ x <= offset`` inside the grid's box."""
    inverse = np.linalg.inv(geometry.index_to_physical_matrix)  # row k: index_k = inverse[k] @ (x - origin)
    at_origin = inverse @ geometry.origin
    upper = np.asarray(geometry.size, dtype=np.float64) - 0.5
    normals = np.concatenate([inverse, -inverse])
    offsets = np.concatenate([upper + at_origin, 0.5 - at_origin])
    lengths = np.linalg.norm(normals, axis=1)
    return normals / lengths[:, None], offsets / lengths


def _volume(normals: np.ndarray, offsets: np.ndarray, tol: float) -> float:
    """Volume (mm^3) of the convex polyhedron ``normals @ x <= offsets`` (0 when it is flat or empty)."""
    planes = np.concatenate([normals, offsets[:, None]], axis=1)
    keep = [k for k in range(len(planes))
            if not any(np.allclose(planes[k], planes[j], atol=tol) for j in range(k))]  # coincident faces once
    normals, offsets = normals[keep], offsets[keep]
    triples = _TRIPLES[np.all(_TRIPLES < len(keep), axis=1)]
    a, b = normals[triples], offsets[triples]
    solvable = np.abs(np.linalg.det(a)) > 1e-12
    vertices = np.linalg.solve(a[solvable], b[solvable][..., None])[..., 0]
    vertices = vertices[np.all(vertices @ normals.T <= offsets + tol, axis=1)]
    if len(vertices) < 4:
        return 0.0
    inside = vertices.mean(axis=0)
    volume = 0.0
    for normal, offset in zip(normals, offsets):
        face = vertices[np.abs(vertices @ normal - offset) <= tol]
        if len(face) < 3:
            continue
        centre = face.mean(axis=0)
        u = face[np.argmax(np.linalg.norm(face - centre, axis=1))] - centre
        if not np.linalg.norm(u) > tol:
            continue
        u /= np.linalg.norm(u)
        w = np.cross(normal, u)
        rel = face - centre
        ring = rel[np.argsort(np.arctan2(rel @ w, rel @ u))]
        area = 0.5 * abs(float(np.sum(np.cross(ring, np.roll(ring, -1, axis=0)) @ normal)))
        volume += area * float(offset - normal @ inside) / 3.0
    return volume


def physical_overlap(geometry_a: Geometry, geometry_b: Geometry) -> float:
    """Fraction of the smaller grid's physical box that lies inside the other grid's box.

    Works for any directions (oblique, flipped, even sheared grids) and any distance apart.

    Args:
        geometry_a, geometry_b: the two grids (LPS mm), e.g. fixed and moving image, or an image
            and its mask or label map.

    Returns:
        A number in [0, 1]: 0 when the boxes share no volume (apart, or only touching), 1 when
        the smaller box lies entirely inside the larger one (e.g. identical grids).
    """
    volumes = [abs(float(np.linalg.det(g.index_to_physical_matrix))) * float(np.prod(g.size))
               for g in (geometry_a, geometry_b)]
    (na, da), (nb, db) = _half_spaces(geometry_a), _half_spaces(geometry_b)
    scale = 1.0 + float(np.max(np.abs(np.concatenate([grid_corners(geometry_a), grid_corners(geometry_b)]))))
    shared = _volume(np.concatenate([na, nb]), np.concatenate([da, db]), tol=1e-9 * scale)
    return float(np.clip(shared / min(volumes), 0.0, 1.0))
