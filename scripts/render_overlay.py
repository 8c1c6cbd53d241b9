#!/usr/bin/env python
r"""Render a fixed-volume slice with the Jacobian heatmap overlay and landmark pairs to a PNG (offscreen).

Everything goes through the same MRML nodes the Slicer module makes: the fixed CT is read by a
volume storage node, the field becomes a grid transform node, the Jacobian a volume node with the
module's color table, and the colours are produced by Slicer's own scalar display pipeline
(window/level + color node), then blended over the grey slice with the overlay opacity.

By default the field is a *synthetic* breathing motion (diaphragm moving up, ribs in) on the real
lung CT in ../shared/data/lung-ct-elastix-small, with one small injected fold so that the fold
colour appears; the moving landmarks are the fixed ones mapped through that field. Pass
``--field displacement.nii.gz`` (e.g. ``adregnet register`` output, on the fixed grid) to render a
real registration instead.

Usage:
    python scripts/render_overlay.py [--field F] [--output docs/jacobian_overlay.png] [--opacity 0.5]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "ADRegNet")]
DATA = REPO / ".." / "shared" / "data" / "lung-ct-elastix-small"


def synthetic_breathing_field(geometry, fold_centre_lps) -> np.ndarray:
    """(3, Z, Y, X) LPS mm: lung base moves up (S) by up to 22 mm, lateral wall moves in, plus a small folded spot."""
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in geometry.shape), indexing="ij")
    p = geometry.index_to_physical(np.stack([xx, yy, zz], -1).reshape(-1, 3)).reshape(*geometry.shape, 3)
    lo = geometry.origin
    hi = geometry.index_to_physical(np.asarray([np.asarray(geometry.size) - 1]))[0]
    s = (p - lo) / (hi - lo)  # 0..1 along x, y, z
    u = np.zeros((3,) + geometry.shape)
    u[2] = 22.0 * np.exp(-((s[..., 2] - 0.12) / 0.22) ** 2) * np.sin(np.pi * np.clip(s[..., 0], 0, 1))
    u[0] = 8.0 * np.exp(-((s[..., 0] - 0.1) / 0.25) ** 2) * np.sin(np.pi * s[..., 2])
    # a compact vortex-like push strong enough to fold (det <= 0) at its centre
    d = p - np.asarray(fold_centre_lps)
    g = np.exp(-np.sum(d ** 2, -1) / (2 * 7.0 ** 2))
    u[0] += -2.6 * d[..., 0] * g
    u[2] += -2.6 * d[..., 2] * g
    return u.astype(np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixed", default=str(DATA / "baseline_small.nii.gz"))
    parser.add_argument("--landmarks", default=str(DATA / "landmarks_baseline.csv"),
                        help="CSV with x_lps_mm,y_lps_mm,z_lps_mm columns (or x,y,z)")
    parser.add_argument("--field", help="ITK displacement field on the fixed grid (LPS mm); default: synthetic")
    parser.add_argument("--output", default=str(REPO / "docs" / "jacobian_overlay.png"))
    parser.add_argument("--opacity", type=float, default=0.6)
    parser.add_argument("--slice", type=int, help="coronal slice index (Y); default: the one with most landmarks")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk
    import slicer
    import torch
    from matplotlib.colors import ListedColormap
    from vtk.util import numpy_support

    from ADRegNetLib.io.image import Image
    from ADRegNetLib.spatial.geometry import Geometry
    from ADRegNetLib.spatial.jacobian import jacobian_determinant
    from ADRegNetMRML.geometry import image_from_volume_node
    from ADRegNetMRML.jacobian import (JACOBIAN_LEVEL, JACOBIAN_WINDOW, displayed_rgba, jacobian_colors,
                                       jacobian_volume_node)
    from ADRegNetMRML.landmarks import markups_node_from_points, points_lps_from_markups
    from ADRegNetMRML.transform import grid_transform_node_from_field

    if not Path(args.fixed).exists():
        print(f"fixed image not found: {args.fixed}", file=sys.stderr)
        return 1
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    fixed_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "fixed")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(Path(args.fixed).resolve()))
    if not storage.ReadData(fixed_node):
        raise RuntimeError(f"could not read {args.fixed}")
    fixed = image_from_volume_node(fixed_node, "fixed")
    geometry = fixed.geometry

    table = np.genfromtxt(args.landmarks, delimiter=",", names=True)
    cols = [c for c in ("x_lps_mm", "y_lps_mm", "z_lps_mm") if c in table.dtype.names] or ["x", "y", "z"]
    fixed_pts = np.stack([table[c] for c in cols], 1)
    fixed_pts = fixed_pts[geometry.contains(fixed_pts, margin_voxels=-2.0)]

    idx_f = geometry.physical_to_index(fixed_pts)
    j = args.slice if args.slice is not None else int(np.bincount(np.round(idx_f[:, 1]).astype(int)).argmax())
    if args.field:
        field_image = sitk.ReadImage(args.field)
        disp = np.moveaxis(sitk.GetArrayFromImage(field_image), -1, 0).astype(np.float32)
        if not Geometry.from_sitk(field_image).allclose(geometry, atol=1e-3):
            raise ValueError("the displacement field is not on the fixed image's grid")
        source = f"field: {Path(args.field).name}"
    else:
        fold_centre = geometry.index_to_physical(np.array([[36.0, float(j), 26.0]]))[0]
        disp = synthetic_breathing_field(geometry, fold_centre)
        source = "synthetic breathing field (one injected fold) on a real lung CT"

    transform_node = grid_transform_node_from_field(scene, disp, geometry)
    jac = jacobian_determinant(torch.from_numpy(disp)[None].double(), geometry)[0].float().numpy()
    jac_node = jacobian_volume_node(scene, Image(jac, geometry, "jacobian"), name="Jacobian")

    # moving landmarks = fixed landmarks through the transform node (RAS), read back as markups
    f_node = markups_node_from_points(scene, fixed_pts, "F", [f"P-{k + 1}" for k in range(len(fixed_pts))])
    ras = np.zeros((len(fixed_pts), 3))
    for k in range(len(fixed_pts)):
        p = [0.0, 0.0, 0.0]
        f_node.GetNthControlPointPosition(k, p)
        ras[k] = transform_node.GetTransformFromParent().TransformPoint(p)
    m_node = markups_node_from_points(scene, ras * np.array([-1, -1, 1]), "M")
    f_lps, m_lps = points_lps_from_markups(f_node), points_lps_from_markups(m_node)

    idx_f = geometry.physical_to_index(f_lps)
    near = np.abs(idx_f[:, 1] - j) <= 2.5

    ct = numpy_support.vtk_to_numpy(fixed_node.GetImageData().GetPointData().GetScalars()).reshape(geometry.shape)
    ct_slice = ct[:, j, :].astype(np.float32)  # (Z, X)
    rgba = displayed_rgba(jac_node)[:, j, :, :].astype(np.float32) / 255.0
    grey = np.clip((ct_slice + 1000.0) / 1400.0, 0, 1)[..., None].repeat(3, -1)
    blend = (1 - args.opacity) * grey + args.opacity * rgba[..., :3]

    x0, z0 = geometry.origin[0], geometry.origin[2]
    x1 = x0 + geometry.spacing[0] * (geometry.size[0] - 1)
    z1 = z0 + geometry.spacing[2] * (geometry.size[2] - 1)
    ext = [x0 - geometry.spacing[0] / 2, x1 + geometry.spacing[0] / 2,
           z0 - geometry.spacing[2] / 2, z1 + geometry.spacing[2] / 2]
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 6.6), gridspec_kw={"width_ratios": [1, 1]})
    axes[0].imshow(grey, origin="lower", extent=ext, interpolation="nearest")
    axes[0].set_title("fixed CT (coronal)")
    axes[1].imshow(blend, origin="lower", extent=ext, interpolation="nearest")
    axes[1].set_title(f"Jacobian overlay, opacity {args.opacity:.2f}")
    for ax in axes:
        ax.plot(f_lps[near, 0], f_lps[near, 2], "o", mfc="none", mec="#00e5ff", mew=1.6, ms=7, label="fixed landmark")
        ax.plot(m_lps[near, 0], m_lps[near, 2], "x", color="#ffd60a", mew=1.8, ms=7, label="moving partner")
        for a, b in zip(f_lps[near], m_lps[near]):
            ax.plot([a[0], b[0]], [a[2], b[2]], "-", color="#ffd60a", lw=0.9)
        ax.set_xlabel("x (LPS, mm; patient left \u2192)")
        ax.set_ylabel("z (LPS, mm; superior \u2191)")
    axes[0].legend(loc="lower left", fontsize=8, framealpha=0.8)
    cmap = ListedColormap(jacobian_colors()[:, :3])
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(JACOBIAN_LEVEL - JACOBIAN_WINDOW / 2,
                                                                   JACOBIAN_LEVEL + JACOBIAN_WINDOW / 2))
    bar = fig.colorbar(mappable, ax=axes[1], fraction=0.05, pad=0.03)
    bar.set_label("det J  (green: folding \u2264 0, blue: compression, red: expansion)")
    folds = int((jac <= 0).sum())
    fig.suptitle(f"AD-RegNet Jacobian heatmap \u2014 {source}\nslice y index {j}; folding voxels in volume: {folds}; "
                 f"det range {jac.min():.2f}..{jac.max():.2f}", fontsize=10)
    fig.tight_layout()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out} (slice {j}, {int(near.sum())} landmark pairs shown, {folds} folding voxels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
