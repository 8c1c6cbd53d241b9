r"""Checking a peer's direction convention on a pure translation (``python -m benchmarks --check-peers``)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ADRegNetLib.io import write_image
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image

from ..sampling import grid_points

__all__ = ["make_translation_pair", "check_peer"]


def make_translation_pair(out_dir, shift_mm=(3.0, -2.0, 4.0), size: int = 40, spacing: float = 2.0,
                          seed: int = 0) -> tuple[Path, Path, np.ndarray]:
    """A fixed/moving pair related by a pure translation, for checking a peer's direction convention.

    The moving image is the fixed one shifted so that the fixed point x matches the moving point
    x + shift (the contract's u(x) = shift). The grids are oblique (10 degrees about z) with
    anisotropic spacing so that frame mistakes show too.

    Returns:
        (fixed_path, moving_path, shift as (3,) LPS mm).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shift = np.asarray(shift_mm, dtype=np.float64)
    a = np.deg2rad(10.0)
    direction = np.asarray([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    spacing_xyz = np.asarray([spacing, spacing, spacing * 1.25])
    size_xyz = np.asarray([size, size, int(size * 0.8)])
    origin = -direction @ (spacing_xyz * (size_xyz - 1) / 2)
    # A smooth random "anatomy": blobs defined in physical space, so it can be sampled anywhere.
    centres = rng.uniform(-0.3, 0.3, size=(12, 3)) * spacing_xyz * size_xyz
    radii = rng.uniform(4.0, 9.0, size=12)
    weights = rng.uniform(0.3, 1.0, size=12)

    def anatomy(points: np.ndarray) -> np.ndarray:
        val = np.zeros(len(points))
        for c, r, w in zip(centres, radii, weights):
            val += w * np.exp(-np.sum((points - c) ** 2, axis=1) / (2 * r * r))
        return val

    paths = []
    for name, org, offset in (("fixed", origin, 0.0), ("moving", origin + 0.5 * shift, shift)):
        # moving(y) = anatomy(y - shift): then moving(x + shift) = anatomy(x) = fixed(x).
        geom = Geometry(tuple(int(v) for v in size_xyz), spacing_xyz, org, direction)
        vals = anatomy(grid_points(geom) - offset).reshape(geom.shape).astype(np.float32)
        path = out_dir / f"{name}.nii.gz"
        write_image(Image(vals, geom), path)
        paths.append(path)
    return paths[0], paths[1], shift


def check_peer(name: str, work_dir, threads: int = 2, shift_mm=(3.0, -2.0, 4.0), **settings) -> dict:
    """Run a peer on :func:`make_translation_pair` and compare its field with the true shift.

    Returns:
        dict with ``truth`` (3,), ``recovered`` (3,) = median of the field over the central half of
        the fixed grid, ``error_mm`` = |recovered - truth|, ``seconds``.
    """
    work_dir = Path(work_dir)
    fixed_path, moving_path, shift = make_translation_pair(work_dir / "pair", shift_mm)
    from . import run_peer  # noqa: PLC0415 - the registry imports this module

    res = run_peer(name, fixed_path, moving_path, work_dir / name, threads, **settings)
    z, y, x = res.disp_mm.shape[1:]
    core = res.disp_mm[:, z // 4: 3 * z // 4, y // 4: 3 * y // 4, x // 4: 3 * x // 4].reshape(3, -1)
    recovered = np.median(core, axis=1)
    shutil.rmtree(work_dir / name, ignore_errors=True)
    return {"peer": name, "truth": shift.tolist(), "recovered": recovered.tolist(),
            "error_mm": float(np.linalg.norm(recovered - shift)), "seconds": res.seconds}
