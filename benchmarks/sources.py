r"""The real anatomy the cases are made from, and the grids the cases live on.

A :class:`Source` is a real image (or none, for label maps) with its labels on the source grid.
Files are read through the library (:func:`ADRegNetLib.io.read_image`); the data folder is
``../shared/data`` beside the repository (each sub-folder has a SOURCE.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from scipy import ndimage

from ADRegNetLib.io import read_image
from ADRegNetLib.spatial.geometry import Geometry

__all__ = ["Source", "load_source", "load_synthseg", "prefilter", "bbox_geometry", "oblique_geometry", "default_data_dir"]


def default_data_dir() -> Path:
    """``<repo>/../shared/data``: where the real images live (CI clones the repo with shared/ beside it)."""
    return Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@dataclass
class Source:
    """Real anatomy on its own grid.

    Attributes:
        image: (Z, Y, X) float32 intensities on ``geometry`` (pre-blurred by :func:`prefilter`), or None
            for a label map without intensities.
        labels: (Z, Y, X) int16 labels on ``geometry``.
        geometry: the source grid, LPS mm.
        background: intensity outside the source (0 for MRI, -1024 HU for CT).
        mask_fn: labels -> (Z, Y, X) bool foreground (where landmarks are drawn).
    """

    image: Optional[np.ndarray]
    labels: np.ndarray
    geometry: Geometry
    background: float
    mask_fn: Callable[[np.ndarray], np.ndarray]


def _load_brain(data_dir: Path) -> Source:
    path = data_dir / "brain-vxm-test-scan" / "test_scan.npz"
    if not path.is_file():
        raise FileNotFoundError(f"brain case needs {path} (the real T1 with labels); "
                                "pass --data-dir to the shared data folder")
    d = np.load(path)
    vol = d["vol"].astype(np.float32)
    seg = d["seg"].astype(np.int16)
    geom = Geometry(vol.shape[::-1])  # 1 mm, identity direction, origin 0 (as the source documents)
    return Source(vol, seg, geom, 0.0, lambda lab: lab > 0)


def _load_lung(data_dir: Path) -> Source:
    folder = data_dir / "lung-ct-thorax"
    ct_path, mask_path = folder / "thorax_ct.nii.gz", folder / "lung_mask.nii.gz"
    for p in (ct_path, mask_path):
        if not p.is_file():
            raise FileNotFoundError(f"lung case needs {p}; pass --data-dir to the shared data folder")
    ct = read_image(ct_path, dtype=np.float32)
    mask = read_image(mask_path, dtype=np.int16).array
    return Source(ct.array, mask, ct.geometry, -1024.0, lambda lab: lab > 0)


def load_synthseg(data_dir: Path, subject: int = 1) -> Source:
    """SynthSeg subject ``subject``'s label map (no image); the brain is labels 1-99."""
    path = data_dir / "brain-synthseg-labelmaps" / f"training_seg_{subject:02d}.nii.gz"
    if not path.is_file():
        raise FileNotFoundError(f"synthseg case needs {path}; pass --data-dir to the shared data folder")
    img = read_image(path, dtype=None)
    labels = np.rint(img.array).astype(np.int16)
    return Source(None, labels, img.geometry, 0.0, lambda lab: (lab > 0) & (lab < 100))


_LOADERS = {"brain": _load_brain, "lung": _load_lung, "synthseg": load_synthseg}


def load_source(kind: str, data_dir: Path) -> Source:
    """Read the real anatomy ``kind`` ("brain", "lung" or "synthseg") from ``data_dir``.

    Raises:
        FileNotFoundError: the data is missing (the message names the file).
        ValueError: unknown kind.
    """
    if kind not in _LOADERS:
        raise ValueError(f"unknown source {kind!r}; expected one of {', '.join(_LOADERS)}")
    return _LOADERS[kind](Path(data_dir))


def prefilter(image: np.ndarray, geometry: Geometry, target_spacing: float) -> np.ndarray:
    """Anti-alias (Gaussian) intensities on ``geometry`` before sampling them at ``target_spacing`` mm.

    Args:
        image: (Z, Y, X) intensities on ``geometry``.
        geometry: their grid.
        target_spacing: the finest spacing they will be sampled at, mm.

    Returns:
        (Z, Y, X) float32 (``image`` itself when no smoothing is needed).
    """
    sigma = np.maximum(target_spacing / geometry.spacing - 1.0, 0.0) * 0.5
    if np.any(sigma > 0):
        return ndimage.gaussian_filter(image, sigma=sigma[::-1]).astype(np.float32)
    return image


def _crop_geometry(g: Geometry, lo_xyz: Sequence[int], hi_xyz: Sequence[int]) -> Geometry:
    lo = np.asarray(lo_xyz)
    size = np.asarray(hi_xyz) - lo + 1
    origin = g.index_to_physical(lo[None].astype(float))[0]
    return Geometry(tuple(int(s) for s in size), g.spacing.copy(), origin, g.direction.copy())


def bbox_geometry(g: Geometry, mask: np.ndarray, margin_vox: int) -> Geometry:
    """The part of grid ``g`` covering ``mask`` ((Z, Y, X) bool on ``g``) plus ``margin_vox`` voxels."""
    nz = np.nonzero(mask)
    lo_zyx = [max(int(a.min()) - margin_vox, 0) for a in nz]
    hi_zyx = [min(int(a.max()) + margin_vox, n - 1) for a, n in zip(nz, mask.shape)]
    return _crop_geometry(g, lo_zyx[::-1], hi_zyx[::-1])


def oblique_geometry(src_geom: Geometry, fg_mask: np.ndarray, angle_deg: float, spacing: Sequence[float],
                     margin_mm: float = 6.0) -> Geometry:
    """A grid rotated by ``angle_deg`` about (1, 1, 1) with ``spacing`` (x, y, z) mm covering the foreground.

    Args:
        src_geom: the source grid.
        fg_mask: (Z, Y, X) bool foreground on ``src_geom``.
        angle_deg: rotation angle, degrees.
        spacing: (3,) spacing of the new grid, mm.
        margin_mm: margin around the foreground, mm.
    """
    axis = np.asarray([1.0, 1.0, 1.0]) / math.sqrt(3.0)
    a = math.radians(angle_deg)
    k = np.asarray([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k)
    nz = np.nonzero(fg_mask)
    lo, hi = [int(v.min()) for v in nz][::-1], [int(v.max()) for v in nz][::-1]
    corners = np.asarray([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], float)
    phys = src_geom.index_to_physical(corners)
    local = phys @ rot  # coordinates along the rotated axes (rot columns)
    mn, mx = local.min(0) - margin_mm, local.max(0) + margin_mm
    spacing = np.asarray(spacing, float)
    size = np.ceil((mx - mn) / spacing).astype(int) + 1
    return Geometry(tuple(int(s) for s in size), spacing, rot @ mn, rot)
