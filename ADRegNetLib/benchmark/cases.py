r"""Benchmark cases from real anatomy, each warped by a KNOWN smooth diffeomorphic deformation.

A case is a folder that every method reads (AD-RegNet and the peers read the SAME files):

============================  =====================================================================
``fixed.nii.gz``              fixed image (float32) on the fixed grid
``moving.nii.gz``             moving image (float32) on the moving grid (often the fixed grid)
``fixed_labels.nii.gz``       labels on the fixed grid (int16), for Dice
``moving_labels.nii.gz``      the same labels carried to the moving image by the true deformation
``fixed_mask.nii.gz``         foreground of the fixed image (uint8), where landmarks are drawn
``true_disp.nii.gz``          the true field u: 3-component vector image on the fixed grid,
                              LPS mm, (x, y, z) components; fixed x -> moving x + u(x)
``fixed_landmarks.csv``       header ``x,y,z``: K fixed points, LPS mm
``moving_landmarks.csv``      header ``x,y,z``: the K matching moving points x + u(x)
``case.json``                 name, preset, labels used for Dice, initial TRE, generator settings
============================  =====================================================================

How a case is made (``S`` is a real image and its labels, resampled physically):

1. the fixed image is ``S`` sampled on the fixed grid, then given its own intensity change;
2. a random smooth stationary velocity field ``v`` on the fixed grid is integrated by scaling and
   squaring: ``u = exp(v) - id`` is diffeomorphic (checked: min det J > 0, stored in case.json);
3. the moving image is ``S`` sampled at ``y + w(y)`` for every moving voxel ``y``, where ``w`` is
   the inverse of ``u`` found by fixed-point iteration ``w = -u(y + w)`` (``u`` trilinear); so
   ``moving(x + u(x)) = S(x)``: the true transform maps fixed x to moving x + u(x). The moving image
   then gets a *different* intensity change (gamma, bias field, noise; per-label contrasts for the
   label-map cases; scale/offset/bias/noise in HU for CT);
4. landmarks are drawn uniformly in the fixed foreground at continuous positions; the moving
   landmarks are ``x + u(x)`` with ``u`` interpolated trilinearly (the same interpolation the TRE
   uses for every method's field).

Everything is seeded: the same name, seed and data give the same files.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from ..metrics import dice, jacobian_stats, tre
from ..spatial.flow import disp_mm_to_flow_norm, flow_norm_to_disp_mm
from ..spatial.geometry import Geometry
from ..spatial.jacobian import jacobian_determinant
from ..spatial.transforms import integrate_velocity
from ..spatial.warp import warp_image

__all__ = [
    "CASE_NAMES",
    "DEFAULT_CASES",
    "Case",
    "build_case",
    "build_cases",
    "default_data_dir",
    "evaluate_field",
    "interpolate_field",
    "invert_field_at",
    "read_field",
    "write_field",
]

#: Generator version: bump when the recipe changes so cached cases are rebuilt.
GENERATOR_VERSION = 3

DEFAULT_CASES = ("brain", "lung", "synthseg", "oblique")
#: Every case name ``build_case`` understands.
CASE_NAMES = DEFAULT_CASES + ("brain-full", "quick")

# The 30 FreeSurfer structures VoxelMorph scores Dice on (also in brain-vxm-test-scan/labels.npz).
VXM_DICE_LABELS = (2, 3, 4, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 28, 31,
                   41, 42, 43, 46, 47, 49, 50, 51, 52, 53, 54, 60, 63)


def default_data_dir() -> Path:
    """``<repo>/../shared/data``: where the real images live (CI clones the repo with shared/ beside it)."""
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


# --------------------------------------------------------------------------- the case on disk
@dataclass
class Case:
    """A benchmark case written to ``directory`` (see the module docstring for the files).

    Attributes:
        name: case name ("brain", "lung", ...).
        directory: the folder holding the files.
        preset: the AD-RegNet preset that fits the anatomy ("brain-mri", "lung-ct", "generic").
        label_ids: labels scored by Dice (those present in the fixed labels).
        info: everything else from case.json (initial TRE, field statistics, seed, sizes).
    """

    name: str
    directory: Path
    preset: str
    label_ids: list[int]
    info: dict = field(default_factory=dict)

    @property
    def fixed_path(self) -> Path:
        return self.directory / "fixed.nii.gz"

    @property
    def moving_path(self) -> Path:
        return self.directory / "moving.nii.gz"

    @property
    def fixed_labels_path(self) -> Path:
        return self.directory / "fixed_labels.nii.gz"

    @property
    def moving_labels_path(self) -> Path:
        return self.directory / "moving_labels.nii.gz"

    @property
    def fixed_mask_path(self) -> Path:
        return self.directory / "fixed_mask.nii.gz"

    @property
    def true_disp_path(self) -> Path:
        return self.directory / "true_disp.nii.gz"

    @property
    def fixed_landmarks_path(self) -> Path:
        return self.directory / "fixed_landmarks.csv"

    @property
    def moving_landmarks_path(self) -> Path:
        return self.directory / "moving_landmarks.csv"

    def fixed_landmarks(self) -> np.ndarray:
        """(K, 3) fixed landmarks, LPS mm."""
        return read_points_csv(self.fixed_landmarks_path)

    def moving_landmarks(self) -> np.ndarray:
        """(K, 3) moving landmarks (x + u(x) under the true field), LPS mm."""
        return read_points_csv(self.moving_landmarks_path)

    def fixed_geometry(self) -> Geometry:
        return read_geometry(self.fixed_path)

    def moving_geometry(self) -> Geometry:
        return read_geometry(self.moving_path)

    def true_disp(self) -> np.ndarray:
        """(3, Z, Y, X) float32 true field on the fixed grid, LPS mm, (x, y, z) components."""
        return read_field(self.true_disp_path)[0]

    @classmethod
    def load(cls, directory: str | Path) -> "Case":
        """Read ``case.json`` from a case folder.

        Raises:
            FileNotFoundError: the folder holds no case (build it with ``build_case``).
        """
        directory = Path(directory)
        meta_path = directory / "case.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory} is not a benchmark case folder (no case.json); "
                                    "build it with ADRegNetLib.benchmark.cases.build_case")
        meta = json.loads(meta_path.read_text())
        return cls(meta["name"], directory, meta["preset"], [int(v) for v in meta["label_ids"]], meta)


def read_geometry(path: str | Path) -> Geometry:
    """Geometry of an image file, read from its header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return Geometry(reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(),
                    np.asarray(reader.GetDirection()).reshape(3, 3))


# --------------------------------------------------------------------------- small file helpers
def read_points_csv(path: str | Path) -> np.ndarray:
    """Read a CSV with header ``x,y,z`` (LPS mm) into (K, 3) float64."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"x", "y", "z"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a header with columns x,y,z (LPS mm), got {list(rows[0])}")
    return np.asarray([[float(r["x"]), float(r["y"]), float(r["z"])] for r in rows], dtype=np.float64).reshape(-1, 3)


def write_points_csv(path: str | Path, points: np.ndarray) -> None:
    """Write (K, 3) LPS mm points as CSV with header ``x,y,z``."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x", "y", "z"])
        for p in np.asarray(points, dtype=np.float64).reshape(-1, 3):
            w.writerow([f"{v:.6f}" for v in p])


def write_image(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    """Write a (Z, Y, X) array with its geometry (compressed NIfTI)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    geometry.apply_to_sitk(img)
    sitk.WriteImage(img, str(path), True)


def read_image(path: str | Path, dtype=np.float32) -> tuple[np.ndarray, Geometry]:
    """Read an image file: (Z, Y, X) array cast to ``dtype`` and its geometry."""
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img).astype(dtype, copy=False), Geometry.from_sitk(img)


def write_field(path: Path, disp_mm: np.ndarray, geometry: Geometry, dtype=np.float32) -> None:
    """Write a (3, Z, Y, X) LPS mm field as an ITK displacement (vector) image on ``geometry``."""
    arr = np.moveaxis(np.asarray(disp_mm, dtype=dtype), 0, -1)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=True)
    geometry.apply_to_sitk(img)
    sitk.WriteImage(img, str(path), True)


def read_field(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read an ITK displacement image: ((3, Z, Y, X) float32 LPS mm, its grid)."""
    img = sitk.ReadImage(str(path))
    if img.GetNumberOfComponentsPerPixel() != 3:
        raise ValueError(f"{path}: expected a 3-component displacement image, got "
                         f"{img.GetNumberOfComponentsPerPixel()} components")
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0)), Geometry.from_sitk(img)


# --------------------------------------------------------------------------- sampling
def _grid_points(geometry: Geometry) -> np.ndarray:
    """(Z*Y*X, 3) LPS mm centres of every voxel, in C order of a (Z, Y, X) array."""
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in geometry.shape), indexing="ij")
    idx = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1)
    return geometry.index_to_physical(idx)


def sample_at(array: np.ndarray, geometry: Geometry, points: np.ndarray, order: int = 1,
              cval: float = 0.0, mode: str = "constant") -> np.ndarray:
    """Sample a (Z, Y, X) image at (N, 3) LPS mm points (order 0 nearest, 1 trilinear)."""
    idx = geometry.physical_to_index(points)
    coords = idx[:, ::-1].T  # (z, y, x) rows for map_coordinates
    return ndimage.map_coordinates(array, coords, order=order, mode=mode, cval=cval, prefilter=False)


def interpolate_field(disp_mm: np.ndarray, geometry: Geometry, points: np.ndarray) -> np.ndarray:
    """Trilinear value of a field at points; outside the grid the edge value is used.

    Args:
        disp_mm: (3, Z, Y, X) LPS mm, (x, y, z) components, on ``geometry``.
        geometry: the field's grid.
        points: (N, 3) LPS mm.

    Returns:
        (N, 3) displacement at the points, LPS mm.
    """
    disp_mm = np.asarray(disp_mm)
    if disp_mm.ndim != 4 or disp_mm.shape[0] != 3 or tuple(disp_mm.shape[1:]) != geometry.shape:
        raise ValueError(f"disp_mm must be (3, Z, Y, X) = (3, {geometry.shape}), got {disp_mm.shape}")
    idx = geometry.physical_to_index(points)
    coords = idx[:, ::-1].T
    return np.stack([ndimage.map_coordinates(disp_mm[c].astype(np.float64, copy=False), coords, order=1,
                                             mode="nearest", prefilter=False) for c in range(3)], axis=1)


def invert_field_at(disp_mm: np.ndarray, geometry: Geometry, points: np.ndarray, iterations: int = 40,
                    tol_mm: float = 1e-4) -> tuple[np.ndarray, float]:
    """Inverse displacement ``w`` at moving points ``y``: ``y + w + u(y + w) = y``.

    Fixed-point iteration ``w <- -u(y + w)`` (converges where u is a contraction, which smooth fields
    with |grad u| < 1 are).

    Args:
        disp_mm: (3, Z, Y, X) forward field on ``geometry`` (fixed x -> moving x + u(x)), LPS mm.
        geometry: its grid.
        points: (N, 3) moving points, LPS mm.

    Returns:
        ((N, 3) w in LPS mm, the largest remaining residual |y + w + u(y + w) - y| in mm).
    """
    w = -interpolate_field(disp_mm, geometry, points)
    resid = np.inf
    for _ in range(iterations):
        new = -interpolate_field(disp_mm, geometry, points + w)
        resid = float(np.abs(new - w).max()) if len(w) else 0.0
        w = new
        if resid < tol_mm:
            break
    if resid >= tol_mm:
        # Where u expands by more than 2x along some direction (|grad u| > 1) the plain iteration
        # does not contract. The damped step w <- w - (w + u(y + w)) / 2 converges wherever the
        # eigenvalues of I + grad u lie in (0, 4), which a diffeomorphism this smooth satisfies.
        # Only the points still moving are iterated, so converged cases are unchanged.
        todo = np.ones(len(w), dtype=bool)
        for _ in range(8 * iterations):
            r = w[todo] + interpolate_field(disp_mm, geometry, points[todo] + w[todo])
            w[todo] -= 0.5 * r
            err = np.abs(r).max(axis=1)
            idx = np.flatnonzero(todo)
            todo[idx[err < tol_mm]] = False
            if not todo.any():
                break
        final = w + interpolate_field(disp_mm, geometry, points + w)
        resid = float(np.abs(final).max()) if len(w) else 0.0
    return w, resid


# --------------------------------------------------------------------------- deformations
def _smooth_noise(shape_zyx: Sequence[int], geometry: Geometry, control_spacing_mm: float,
                  rng: np.random.Generator, channels: int) -> np.ndarray:
    """(channels, Z, Y, X) smooth random field: N(0,1) on a coarse grid, cubic upsampling."""
    extent = geometry.spacing * (np.asarray(geometry.size) - 1)
    coarse_xyz = np.maximum(np.ceil(extent / control_spacing_mm).astype(int) + 1, 2)
    coarse_zyx = tuple(int(v) for v in coarse_xyz[::-1])
    out = np.empty((channels, *shape_zyx), dtype=np.float32)
    for c in range(channels):
        noise = rng.standard_normal(coarse_zyx)
        zoom = [s / n for s, n in zip(shape_zyx, coarse_zyx)]
        up = ndimage.zoom(noise, zoom, order=3, mode="nearest", grid_mode=False)
        # zoom can be off by one voxel from rounding; pad/crop to the exact shape.
        up = up[tuple(slice(0, s) for s in shape_zyx)]
        pad = [(0, s - u) for s, u in zip(shape_zyx, up.shape)]
        out[c] = np.pad(up, pad, mode="edge")
    return out


def integrate_svf(velocity_mm: np.ndarray, geometry: Geometry, steps: int = 7) -> np.ndarray:
    """Scaling and squaring of a (3, Z, Y, X) LPS mm velocity on ``geometry``; returns the displacement."""
    v = torch.from_numpy(np.ascontiguousarray(velocity_mm, dtype=np.float32))[None]
    flow = integrate_velocity(disp_mm_to_flow_norm(v, geometry), steps=steps)
    return flow_norm_to_disp_mm(flow, geometry)[0].numpy()


def _scaled_svf(velocity_mm: np.ndarray, geometry: Geometry, mask: np.ndarray, target_mean_mm: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Scale a velocity so the integrated field's mean magnitude in ``mask`` is ``target_mean_mm``."""
    v = velocity_mm
    u = integrate_svf(v, geometry)
    for _ in range(3):
        mean = float(np.linalg.norm(u[:, mask], axis=0).mean())
        if mean <= 0:
            raise ValueError("the random velocity is zero inside the mask; cannot scale it")
        if abs(mean - target_mean_mm) < 0.02 * target_mean_mm:
            break
        v = v * (target_mean_mm / mean)
        u = integrate_svf(v, geometry)
    return v, u


def random_smooth_svf(geometry: Geometry, rng: np.random.Generator, control_spacing_mm: float = 40.0
                      ) -> np.ndarray:
    """(3, Z, Y, X) random smooth velocity, LPS mm components, unit-ish scale (scaled later)."""
    return _smooth_noise(geometry.shape, geometry, control_spacing_mm, rng, 3)


def breathing_svf(geometry: Geometry, lung_mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(3, Z, Y, X) breathing-like velocity (inhale fixed -> exhale moving), unscaled.

    Mostly superior (+z in LPS) and growing from the apex (0) to the lung base (1) -- the diaphragm
    moves most -- plus a smaller anterior-posterior component (+y: the anterior wall moves back),
    a lateral contraction towards the midline, and a 15 % random smooth part. It decays outside
    the lungs (Gaussian-smoothed lung mask).
    """
    pts_idx = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in geometry.shape), indexing="ij"), 0)
    zc = pts_idx[0]
    # physical z, y, x of each voxel
    m = geometry.index_to_physical_matrix
    phys = [m[i, 0] * pts_idx[2] + m[i, 1] * pts_idx[1] + m[i, 2] * zc + geometry.origin[i] for i in range(3)]
    x, y, z = phys
    lz = z[lung_mask]
    z_apex, z_base = float(lz.max()), float(lz.min())
    t = np.clip((z_apex - z) / max(z_apex - z_base, 1e-3), 0.0, 1.0) ** 1.5
    sigma_vox = 15.0 / geometry.spacing[::-1]
    weight = ndimage.gaussian_filter(lung_mask.astype(np.float32), sigma=sigma_vox)
    weight /= max(float(weight.max()), 1e-6)
    weight = np.clip(weight * 1.6, 0, 1)
    lx = x[lung_mask]
    xc = float(lx.mean())
    half = max(float(np.abs(lx - xc).max()), 1.0)
    v = np.zeros((3, *geometry.shape), dtype=np.float32)
    v[2] = 1.0 * t * weight
    v[1] = 0.3 * t * weight
    v[0] = -0.15 * (x - xc) / half * t * weight
    v += 0.15 * _smooth_noise(geometry.shape, geometry, 50.0, rng, 3) * weight
    return v


# --------------------------------------------------------------------------- intensities
def _bias(shape, geometry, rng, amplitude):
    return amplitude * _smooth_noise(shape, geometry, 80.0, rng, 1)[0]


def intensity_change_mri(image: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """MRI-like change: random gamma, multiplicative smooth bias, Rician-like noise, random scale.

    Args:
        image: (Z, Y, X) non-negative intensities (about [0, 1]).
    """
    hi = float(np.percentile(image, 99.5)) or 1.0
    img = np.clip(image / hi, 0, None)
    gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
    img = img ** gamma
    img = img * np.exp(_bias(image.shape, geometry, rng, 0.2))
    sigma = rng.uniform(0.01, 0.03)
    n1 = rng.standard_normal(image.shape) * sigma
    n2 = rng.standard_normal(image.shape) * sigma
    img = np.sqrt((img + n1) ** 2 + n2 ** 2)
    return (img * rng.uniform(200.0, 1000.0)).astype(np.float32)


def intensity_change_ct(hu: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """CT-like change in HU: small scale and offset, smooth additive bias, noise (HU stay HU-like)."""
    out = hu * rng.uniform(0.96, 1.04) + rng.uniform(-20.0, 20.0)
    out = out + _bias(hu.shape, geometry, rng, 20.0)
    out = out + rng.standard_normal(hu.shape) * rng.uniform(10.0, 25.0)
    return out.astype(np.float32)


def synth_image_from_labels(labels: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """SynthMorph-style image from a label map: random mean per label, blur, bias field, gamma, noise.

    Args:
        labels: (Z, Y, X) integer labels.

    Returns:
        (Z, Y, X) float32 image in about [0, 1].
    """
    ids, inverse = np.unique(labels, return_inverse=True)
    means = rng.uniform(0.05, 1.0, size=len(ids))
    means[ids == 0] = rng.uniform(0.0, 0.1)
    stds = rng.uniform(0.0, 0.05, size=len(ids))
    inverse = inverse.reshape(labels.shape)
    img = means[inverse] + stds[inverse] * rng.standard_normal(labels.shape)
    blur_mm = rng.uniform(0.5, 1.5)
    img = ndimage.gaussian_filter(img, sigma=blur_mm / geometry.spacing[::-1])
    img = img * np.exp(_bias(labels.shape, geometry, rng, 0.25))
    img = np.clip(img, 0, None)
    img = img / max(float(img.max()), 1e-6)
    img = img ** float(np.exp(rng.normal(0.0, 0.25)))
    img = img + rng.standard_normal(labels.shape) * rng.uniform(0.005, 0.02)
    return img.astype(np.float32)


# --------------------------------------------------------------------------- sources
@dataclass
class _Source:
    image: Optional[np.ndarray]       # (Z, Y, X) float32 physical source intensities (pre-blurred) or None
    labels: np.ndarray                # (Z, Y, X) int labels on the source grid
    geometry: Geometry
    background: float                 # value outside the source
    mask_fn: Callable[[np.ndarray], np.ndarray]   # labels -> foreground mask


def _crop_geometry(g: Geometry, lo_xyz: Sequence[int], hi_xyz: Sequence[int]) -> Geometry:
    lo = np.asarray(lo_xyz)
    size = np.asarray(hi_xyz) - lo + 1
    origin = g.index_to_physical(lo[None].astype(float))[0]
    return Geometry(tuple(int(s) for s in size), g.spacing.copy(), origin, g.direction.copy())


def _bbox_geometry(g: Geometry, mask: np.ndarray, margin_vox: int) -> Geometry:
    nz = np.nonzero(mask)
    lo_zyx = [max(int(a.min()) - margin_vox, 0) for a in nz]
    hi_zyx = [min(int(a.max()) + margin_vox, n - 1) for a, n in zip(nz, mask.shape)]
    return _crop_geometry(g, lo_zyx[::-1], hi_zyx[::-1])


def _load_brain(data_dir: Path) -> _Source:
    path = data_dir / "brain-vxm-test-scan" / "test_scan.npz"
    if not path.is_file():
        raise FileNotFoundError(f"brain case needs {path} (the real T1 with labels); pass --data-dir to the shared data folder")
    d = np.load(path)
    vol = d["vol"].astype(np.float32)
    seg = d["seg"].astype(np.int16)
    geom = Geometry(vol.shape[::-1])  # 1 mm, identity direction, origin 0 (as the source documents)
    return _Source(vol, seg, geom, 0.0, lambda lab: lab > 0)


def _load_lung(data_dir: Path) -> _Source:
    folder = data_dir / "lung-ct-thorax"
    ct_path, mask_path = folder / "thorax_ct.nii.gz", folder / "lung_mask.nii.gz"
    for p in (ct_path, mask_path):
        if not p.is_file():
            raise FileNotFoundError(f"lung case needs {p}; pass --data-dir to the shared data folder")
    ct = sitk.ReadImage(str(ct_path))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))).astype(np.int16)
    return _Source(sitk.GetArrayFromImage(ct).astype(np.float32), mask, Geometry.from_sitk(ct), -1024.0,
                   lambda lab: lab > 0)


def _load_synthseg(data_dir: Path, subject: int = 1) -> _Source:
    path = data_dir / "brain-synthseg-labelmaps" / f"training_seg_{subject:02d}.nii.gz"
    if not path.is_file():
        raise FileNotFoundError(f"synthseg case needs {path}; pass --data-dir to the shared data folder")
    img = sitk.ReadImage(str(path))
    labels = np.rint(sitk.GetArrayFromImage(img)).astype(np.int16)
    return _Source(None, labels, Geometry.from_sitk(img), 0.0, lambda lab: (lab > 0) & (lab < 100))


def _prefilter(src: _Source, target_spacing: float) -> None:
    """Anti-alias the source intensities before sampling at a coarser spacing."""
    if src.image is None:
        return
    sigma = np.maximum(target_spacing / src.geometry.spacing - 1.0, 0.0) * 0.5
    if np.any(sigma > 0):
        src.image = ndimage.gaussian_filter(src.image, sigma=sigma[::-1]).astype(np.float32)


def _oblique_geometry(src_geom: Geometry, fg_mask: np.ndarray, angle_deg: float, spacing: Sequence[float],
                      margin_mm: float = 6.0) -> Geometry:
    """A rotated, anisotropic grid covering the foreground of ``fg_mask`` (on ``src_geom``)."""
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


# --------------------------------------------------------------------------- landmarks
def sample_landmarks(mask: np.ndarray, geometry: Geometry, rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 3) LPS mm points drawn uniformly inside ``mask`` (eroded by a voxel), jittered within the voxel."""
    core = ndimage.binary_erosion(mask, iterations=1)
    if core.sum() < count:
        core = mask
    nz = np.stack(np.nonzero(core), axis=1)  # (N, 3) z, y, x
    if len(nz) == 0:
        raise ValueError("the foreground mask is empty: cannot place landmarks")
    pick = rng.choice(len(nz), size=min(count, len(nz)), replace=False)
    idx_xyz = nz[np.sort(pick)][:, ::-1].astype(np.float64) + rng.uniform(-0.5, 0.5, size=(len(pick), 3))
    return geometry.index_to_physical(idx_xyz)


# --------------------------------------------------------------------------- recipes
@dataclass
class _Recipe:
    name: str
    preset: str
    description: str
    source: str                        # "brain" | "lung" | "synthseg"
    spacing: Optional[float]           # isotropic fixed spacing (mm) or None to keep the source's
    target_mean_mm: float
    control_spacing_mm: float = 40.0
    oblique: bool = False
    landmarks: int = 300
    label_ids: Optional[tuple] = None  # Dice labels (None: all foreground labels present)


_RECIPES = {
    "brain": _Recipe("brain", "brain-mri", "real T1 (vxm test scan) at 2 mm, random SVF, MRI intensity change",
                     "brain", 2.0, 4.0, 40.0, label_ids=VXM_DICE_LABELS),
    "brain-full": _Recipe("brain-full", "brain-mri", "real T1 (vxm test scan) at 1 mm, random SVF, MRI intensity change",
                          "brain", 1.0, 4.0, 40.0, label_ids=VXM_DICE_LABELS),
    "oblique": _Recipe("oblique", "brain-mri", "real T1: fixed on an oblique grid (15 deg about (1,1,1), "
                       "1.5x1.5x3 mm), moving on the axis-aligned 2 mm grid", "brain", 2.0, 4.0, 40.0,
                       oblique=True, label_ids=VXM_DICE_LABELS),
    "synthseg": _Recipe("synthseg", "brain-mri", "real label map (SynthSeg subject 01) at 2 mm, images synthesized "
                        "from labels with different random contrasts", "synthseg", 2.0, 4.0, 40.0),
    "lung": _Recipe("lung", "lung-ct", "real thorax CT (POPI phase 00) cropped to the lungs, breathing-like SVF "
                    "(mostly S-I, largest at the base), CT intensity change; Dice on the lung mask",
                    "lung", None, 5.0, label_ids=(1,)),
    "quick": _Recipe("quick", "brain-mri", "small test case: real T1 at 4 mm, random SVF", "brain", 4.0, 3.0, 40.0,
                     landmarks=100, label_ids=VXM_DICE_LABELS),
}


def _recipe_settings(recipe: _Recipe, seed: int, landmarks: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "name": recipe.name, "seed": seed, "landmarks": landmarks,
            "spacing": recipe.spacing, "target_mean_mm": recipe.target_mean_mm,
            "control_spacing_mm": recipe.control_spacing_mm, "oblique": recipe.oblique}


def _seed_for(name: str, seed: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, *[ord(c) for c in name]])


def build_case(name: str, out_dir: str | Path, data_dir: str | Path | None = None, seed: int = 0,
               landmarks: Optional[int] = None, force: bool = False) -> Case:
    """Build (or reuse) one case in ``out_dir/<name>``.

    Args:
        name: one of :data:`CASE_NAMES`.
        out_dir: folder that holds the case folders.
        data_dir: the shared real data (defaults to :func:`default_data_dir`).
        seed: random seed; the case name is mixed in, so cases differ from each other.
        landmarks: number of landmarks (default: the recipe's, 300; 100 for "quick").
        force: rebuild even when a case with the same settings is on disk.

    Returns:
        The :class:`Case`.

    Raises:
        ValueError: unknown name.
        FileNotFoundError: the real data is missing (the message names the file).
    """
    if name not in _RECIPES:
        raise ValueError(f"unknown benchmark case {name!r}; expected one of {', '.join(CASE_NAMES)}")
    recipe = _RECIPES[name]
    n_landmarks = int(landmarks if landmarks is not None else recipe.landmarks)
    settings = _recipe_settings(recipe, seed, n_landmarks)
    directory = Path(out_dir) / name
    meta_path = directory / "case.json"
    if meta_path.is_file() and not force:
        meta = json.loads(meta_path.read_text())
        if meta.get("settings") == settings:
            return Case.load(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    t0 = time.perf_counter()

    rngs = [np.random.default_rng(s) for s in _seed_for(name, seed).spawn(5)]
    rng_field, rng_fixed, rng_moving, rng_lm, _ = rngs

    if recipe.source == "brain":
        src = _load_brain(data_dir)
    elif recipe.source == "lung":
        src = _load_lung(data_dir)
    else:
        src = _load_synthseg(data_dir)

    # ---- grids
    src_fg = src.mask_fn(src.labels)
    if recipe.source == "lung":
        crop = _bbox_geometry(src.geometry, src_fg, margin_vox=10)
        moving_geom = fixed_geom = crop
    elif recipe.source == "synthseg":
        crop = _bbox_geometry(src.geometry, src.labels > 0, margin_vox=4)
        moving_geom = fixed_geom = crop.with_spacing(recipe.spacing)
    else:
        moving_geom = fixed_geom = src.geometry.with_spacing(recipe.spacing)
    if recipe.oblique:
        fixed_geom = _oblique_geometry(src.geometry, src_fg, 15.0, (1.5, 1.5, 3.0))
    _prefilter(src, float(np.min(fixed_geom.spacing)))

    # ---- fixed image and labels
    fixed_pts = _grid_points(fixed_geom)
    fixed_labels = sample_at(src.labels, src.geometry, fixed_pts, order=0).reshape(fixed_geom.shape).astype(np.int16)
    fixed_mask = src.mask_fn(fixed_labels)
    if fixed_mask.sum() < 10:
        raise ValueError(f"case {name}: the fixed foreground is (almost) empty; the source data looks wrong")

    # ---- known deformation
    if recipe.source == "lung":
        velocity = breathing_svf(fixed_geom, fixed_mask, rng_field)
    else:
        velocity = random_smooth_svf(fixed_geom, rng_field, recipe.control_spacing_mm)
    velocity, true_disp = _scaled_svf(velocity, fixed_geom, fixed_mask, recipe.target_mean_mm)
    jac = jacobian_determinant(torch.from_numpy(true_disp)[None], fixed_geom)[0].numpy()

    # ---- moving image and labels: S sampled at y + w(y)
    moving_pts = _grid_points(moving_geom)
    w, resid = invert_field_at(true_disp, fixed_geom, moving_pts)
    src_pts = moving_pts + w
    moving_labels = sample_at(src.labels, src.geometry, src_pts, order=0).reshape(moving_geom.shape).astype(np.int16)
    if src.image is not None:
        fixed_img = sample_at(src.image, src.geometry, fixed_pts, 1, src.background).reshape(fixed_geom.shape)
        moving_img = sample_at(src.image, src.geometry, src_pts, 1, src.background).reshape(moving_geom.shape)
        if recipe.source == "lung":
            fixed_img = intensity_change_ct(fixed_img, fixed_geom, rng_fixed)
            moving_img = intensity_change_ct(moving_img, moving_geom, rng_moving)
        else:
            fixed_img = intensity_change_mri(fixed_img, fixed_geom, rng_fixed)
            moving_img = intensity_change_mri(moving_img, moving_geom, rng_moving)
    else:
        fixed_img = synth_image_from_labels(fixed_labels, fixed_geom, rng_fixed)
        moving_img = synth_image_from_labels(moving_labels, moving_geom, rng_moving)

    # ---- landmarks
    fixed_lm = sample_landmarks(fixed_mask, fixed_geom, rng_lm, n_landmarks)
    moving_lm = fixed_lm + interpolate_field(true_disp, fixed_geom, fixed_lm)
    initial = np.linalg.norm(moving_lm - fixed_lm, axis=1)

    # ---- Dice labels
    present = set(np.unique(fixed_labels[fixed_mask]).tolist())
    if recipe.label_ids is not None:
        label_ids = [int(v) for v in recipe.label_ids if v in present]
    else:
        counts = np.bincount(fixed_labels[fixed_mask].astype(np.int64).ravel())
        label_ids = [int(v) for v in sorted(present) if v > 0 and counts[v] >= 20]

    # ---- write
    write_image(directory / "fixed.nii.gz", fixed_img.astype(np.float32), fixed_geom)
    write_image(directory / "moving.nii.gz", moving_img.astype(np.float32), moving_geom)
    write_image(directory / "fixed_labels.nii.gz", fixed_labels, fixed_geom)
    write_image(directory / "moving_labels.nii.gz", moving_labels, moving_geom)
    write_image(directory / "fixed_mask.nii.gz", fixed_mask.astype(np.uint8), fixed_geom)
    write_field(directory / "true_disp.nii.gz", true_disp, fixed_geom)
    write_points_csv(directory / "fixed_landmarks.csv", fixed_lm)
    write_points_csv(directory / "moving_landmarks.csv", moving_lm)
    mag = np.linalg.norm(true_disp[:, fixed_mask], axis=0)
    meta = {
        "name": name,
        "preset": recipe.preset,
        "description": recipe.description,
        "label_ids": label_ids,
        "settings": settings,
        "fixed_size_xyz": list(fixed_geom.size),
        "fixed_spacing_mm": [round(float(s), 4) for s in fixed_geom.spacing],
        "moving_size_xyz": list(moving_geom.size),
        "moving_spacing_mm": [round(float(s), 4) for s in moving_geom.spacing],
        "oblique": recipe.oblique,
        "initial_tre_mean_mm": float(initial.mean()),
        "initial_tre_p95_mm": float(np.percentile(initial, 95)),
        "true_field_mean_mm": float(mag.mean()),
        "true_field_max_mm": float(mag.max()),
        "true_jacobian_min": float(jac.min()),
        "true_jacobian_max": float(jac.max()),
        "inverse_residual_mm": resid,
        "landmarks": int(len(fixed_lm)),
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    return Case.load(directory)


def build_cases(names: Sequence[str], out_dir: str | Path, data_dir: str | Path | None = None, seed: int = 0,
                force: bool = False, log: Callable[[str], None] = print) -> list[Case]:
    """Build several cases (see :func:`build_case`); missing data gives a note and skips the case."""
    cases = []
    for name in names:
        try:
            case = build_case(name, out_dir, data_dir, seed, force=force)
        except FileNotFoundError as exc:
            log(f"[benchmark] skipping case {name}: {exc}")
            continue
        log(f"[benchmark] case {name}: fixed {case.info['fixed_size_xyz']} @ {case.info['fixed_spacing_mm']} mm, "
            f"initial TRE {case.info['initial_tre_mean_mm']:.2f} mm (p95 {case.info['initial_tre_p95_mm']:.2f}), "
            f"true det J in [{case.info['true_jacobian_min']:.2f}, {case.info['true_jacobian_max']:.2f}]")
        cases.append(case)
    return cases


# --------------------------------------------------------------------------- measuring a field
def evaluate_field(case: Case, disp_mm: np.ndarray, transform_points: Optional[Callable] = None) -> dict:
    """Measure a field against the case's truth.

    Args:
        case: the case.
        disp_mm: (3, Z, Y, X) estimated field on the fixed grid, LPS mm, fixed x -> moving x + u(x).
        transform_points: optional callable (K, 3) -> (K, 3) used for TRE instead of sampling
            ``disp_mm`` (for methods whose exact point transform is available).

    Returns:
        dict with ``tre_mean``, ``tre_p95``, ``tre_max`` (mm, continuous: landmarks mapped through the
        field with trilinear interpolation), ``dice`` (mean over the case's labels of the moving labels
        warped by nearest neighbour vs the fixed labels), ``folds_pct`` (% of fixed voxels with
        det J <= 0), ``sdlogj`` (std of log det J over the fixed grid, det J clipped to [1e-9, 1e9]),
        ``jac_min``.
    """
    fixed_geom = case.fixed_geometry()
    disp_mm = np.asarray(disp_mm, dtype=np.float32)
    if disp_mm.shape != (3, *fixed_geom.shape):
        raise ValueError(f"field must be (3, Z, Y, X) = (3, {fixed_geom.shape}) on the fixed grid, got {disp_mm.shape}")
    f_lm, m_lm = case.fixed_landmarks(), case.moving_landmarks()
    mapped = transform_points(f_lm) if transform_points is not None else f_lm + interpolate_field(disp_mm, fixed_geom, f_lm)
    t = tre(mapped, m_lm)

    fixed_labels, _ = read_image(case.fixed_labels_path, np.int16)
    moving_labels, moving_geom = read_image(case.moving_labels_path, np.int16)
    t_disp = torch.from_numpy(disp_mm)[None]
    warped = warp_image(torch.from_numpy(moving_labels.astype(np.int64))[None, None], t_disp, fixed_geom,
                        moving_geom, mode="nearest")[0, 0].numpy()
    d = dice(warped, fixed_labels, case.label_ids) if case.label_ids else {"mean": float("nan")}
    j = jacobian_stats(jacobian_determinant(t_disp, fixed_geom)[0].numpy())
    return {
        "tre_mean": t["mean"],
        "tre_p95": t["p95"],
        "tre_max": t["max"],
        "dice": d["mean"],
        "folds_pct": 100.0 * j["folding_fraction"],
        "sdlogj": j["std_log_det"],
        "jac_min": j["min"],
    }
