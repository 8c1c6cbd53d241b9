r"""``report.png``: what a person wants to see of one registration."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..spatial.image import Image

__all__ = ["write_report", "jacobian_colormap"]


def jacobian_colormap():
    """Blue for compression (< 1), white at 1, red for expansion (> 1), over [0, 2]; folds drawn apart."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("adregnet_jacobian", [(0.0, "#1f4e9c"), (0.5, "#ffffff"), (1.0, "#b2182b")])


#: imshow origin per plane: axial with anterior up, coronal/sagittal with superior up (LPS-aligned grids; other
#: grids keep these voxel-order origins and are named by their planes' normals: _plane_names)
_ORIGIN = ["upper", "lower", "lower"]


def _planes(array: np.ndarray) -> list[np.ndarray]:
    z, y, x = (s // 2 for s in array.shape)
    return [array[z], array[:, y], array[:, :, x]]  # axial, coronal, sagittal (voxel order)


def _plane_names(image: Image) -> list[str]:
    """The anatomical name of each of :func:`_planes`' planes, from the LPS axis its normal (the voxel axis held
    fixed: z, y, x) lies closest to: L-R sagittal, P-A coronal, S-I axial (a brain stored sagittally shows its
    sagittal plane first)."""
    anatomical = ("sagittal", "coronal", "axial")  # normal along L, P, S
    return [anatomical[int(np.argmax(np.abs(image.geometry.direction[:, axis])))] for axis in (2, 1, 0)]


def _aspect(image: Image) -> list[float]:
    sx, sy, sz = image.geometry.spacing
    return [sy / sx, sz / sx, sz / sy]


def _window(a: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(a[:: max(1, a.shape[0] // 32)], [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def _checker(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    yy, xx = np.indices(a.shape)
    mask = ((yy * tiles // a.shape[0]) + (xx * tiles // a.shape[1])) % 2 == 0
    return np.where(mask, a, b)


def write_report(path: str | Path, fixed: Image, moving_on_fixed: np.ndarray, warped: Image, jacobian: Image,
                 metrics: dict, tre_before: Optional[np.ndarray] = None, tre_after: Optional[np.ndarray] = None) -> Path:
    """Write a PNG with fixed/moving/warped in three planes (a single slice: its own plane), checkerboards
    before/after, the Jacobian heatmap, and TRE per landmark before/after when landmarks were given.

    Args:
        path: output PNG.
        fixed: the fixed image.
        moving_on_fixed: (Z, Y, X) the moving image resampled on the fixed grid without the registration.
        warped: the registered moving image.
        jacobian: det J on the fixed grid.
        metrics: the metrics dictionary (numbers shown in the title).
        tre_before, tre_after: (K,) per-landmark distances, mm.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_tre = tre_before is not None and tre_after is not None
    rows = 5 if has_tre else 4
    fixed_p, before_p, warped_p, jac_p = (_planes(a) for a in (fixed.array, moving_on_fixed, warped.array, jacobian.array))
    shown = [c for c in range(3) if min(fixed_p[c].shape) > 1] or [0, 1, 2]  # a single slice: its own plane alone
    fig = plt.figure(figsize=(12 if len(shown) == 3 else 7, 3.0 * rows + 0.8))
    grid = fig.add_gridspec(rows, len(shown))
    lo, hi = _window(fixed.array)
    mlo, mhi = _window(warped.array)
    aspects = _aspect(fixed)
    names = _plane_names(fixed)
    norm_f = lambda a: np.clip((a - lo) / (hi - lo), 0, 1)  # noqa: E731
    norm_m = lambda a: np.clip((a - mlo) / (mhi - mlo), 0, 1)  # noqa: E731
    for place, col in enumerate(shown):
        ax = fig.add_subplot(grid[0, place])
        ax.imshow(norm_f(fixed_p[col]), cmap="gray", origin=_ORIGIN[col], aspect=aspects[col])
        ax.set_title(f"fixed ({names[col]})", fontsize=9)
        ax.axis("off")
    for place, col in enumerate(shown):
        ax = fig.add_subplot(grid[1, place])
        ax.imshow(_checker(norm_f(fixed_p[col]), norm_m(before_p[col])), cmap="gray", origin=_ORIGIN[col], aspect=aspects[col])
        ax.set_title(f"before: fixed/moving ({names[col]})", fontsize=9)
        ax.axis("off")
    for place, col in enumerate(shown):
        ax = fig.add_subplot(grid[2, place])
        ax.imshow(_checker(norm_f(fixed_p[col]), norm_m(warped_p[col])), cmap="gray", origin=_ORIGIN[col], aspect=aspects[col])
        ax.set_title(f"after: fixed/warped ({names[col]})", fontsize=9)
        ax.axis("off")
    for place, col in enumerate(shown):
        ax = fig.add_subplot(grid[3, place])
        ax.imshow(norm_f(fixed_p[col]), cmap="gray", origin=_ORIGIN[col], aspect=aspects[col])
        im = ax.imshow(jac_p[col], cmap=jacobian_colormap(), vmin=0, vmax=2, alpha=0.6, origin=_ORIGIN[col], aspect=aspects[col])
        folds = np.ma.masked_where(jac_p[col] > 0, np.ones_like(jac_p[col]))
        ax.imshow(folds, cmap="spring", vmin=0, vmax=1, origin=_ORIGIN[col], aspect=aspects[col])
        ax.set_title(f"det J ({names[col]}; folds magenta)", fontsize=9)
        ax.axis("off")
    fig.colorbar(im, ax=fig.axes[-len(shown):], fraction=0.02, label="det J (1 = volume kept)")
    if has_tre:
        ax = fig.add_subplot(grid[4, :])
        k = np.arange(len(tre_before))
        ax.bar(k - 0.2, tre_before, width=0.4, label=f"before (mean {np.mean(tre_before):.2f} mm)", color="#999999")
        ax.bar(k + 0.2, tre_after, width=0.4, label=f"after (mean {np.mean(tre_after):.2f} mm)", color="#1f77b4")
        ax.set_xlabel("landmark pair")
        ax.set_ylabel("TRE (mm)")
        ax.legend(fontsize=8)
        guided = (metrics.get("landmarks") or {}).get("guided_registration", True)
        ax.set_title("target registration error per landmark" + (
            " (the pairs guided the registration: not an independent check)" if guided else
            " (pairs measured only: an independent check)"), fontsize=9)
    jac = metrics.get("jacobian", {})
    title = (f"AD-RegNet  preset {metrics.get('preset')}  quality {metrics.get('quality')}"
             f"{chr(10) if len(shown) < 3 else '  '}NCC {metrics.get('similarity_before', {}).get('ncc') or float('nan'):.3f} -> "
             f"{metrics.get('similarity_after', {}).get('ncc') or float('nan'):.3f}  "
             f"folds {jac.get('folding_fraction', 0) * 100:.3f}%  time {metrics.get('timings_s', {}).get('total', 0):.1f} s")
    fig.suptitle(title, fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
