#!/usr/bin/env python
r"""Render the README screenshots: the module's outputs as Slicer's slice views show them (headless).

The demo pair (Resources/SampleData/lung_*) is registered through the module's scene bridge
(ADRegNetMRML, the real engine in this process), the display is set up with the bridge's own
functions (moving volume under the result, fixed/registered comparison, Jacobian overlay, grid),
and each picture is drawn by Slicer's slice logic and displayable managers (transform grid,
markups) from the slicer-core wheel into an offscreen VTK window (EGL on llvmpipe; see
Testing/mrml/slice_view.py). Only the captions are added afterwards (Pillow).

Writes docs/slicer_comparison.png (fixed / moving before / registered), docs/slicer_jacobian.png
(Jacobian heatmap over the fixed CT with the landmark pairs) and docs/slicer_grid.png (the
deformation grid over the registered moving CT), and prints the run's TRE.

Usage (from the repository root):
    .venv/bin/python scripts/render_slicer_views.py [--quality fast] [--output docs]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "ADRegNet"), str(REPO / "Testing" / "mrml")]
SAMPLE = REPO / "Resources" / "SampleData"

from slice_view import SliceViewer, prepare_scene  # noqa: E402  (sets the EGL window before vtk loads)

import slicer  # noqa: E402


def _load(scene, name: str):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(SAMPLE / f"{name}.nii.gz"))
    if not storage.ReadData(node):
        raise RuntimeError(f"could not read {storage.GetFileName()}")
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().AutoWindowLevelOff()
    node.GetDisplayNode().SetWindowLevel(1400.0, -500.0)  # lung window
    return node


def _caption(pixels: np.ndarray, text: str):
    from PIL import Image, ImageDraw

    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, image.width, 18], fill=(0, 0, 0))
    draw.text((6, 3), text, fill=(255, 255, 255))
    return image


def _row(images, path: Path) -> None:
    from PIL import Image

    out = Image.new("RGB", (sum(i.width for i in images) + 4 * (len(images) - 1), images[0].height), (40, 40, 40))
    x = 0
    for image in images:
        out.paste(image, (x, 0))
        x += image.width + 4
    out.save(path)
    print(f"wrote {path} ({out.width}x{out.height})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quality", default="fast", help="engine quality (instant, fast, balanced, best)")
    parser.add_argument("--output", default=str(REPO / "docs"))
    parser.add_argument("--size", type=int, default=360, help="pixels per view")
    args = parser.parse_args(argv)

    from ADRegNetLib.io import read_landmarks
    from ADRegNetMRML import display
    from ADRegNetMRML.geometry import points_lps_to_ras
    from ADRegNetMRML.landmarks import markups_node_from_points
    from ADRegNetMRML.logic import ADRegNetMRMLLogic

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    app = prepare_scene(scene)
    fixed, moving = _load(scene, "lung_fixed"), _load(scene, "lung_moving")
    fixed_pts = read_landmarks(SAMPLE / "lung_fixed_landmarks.csv")
    moving_pts = read_landmarks(SAMPLE / "lung_moving_landmarks.csv")
    f_list = markups_node_from_points(scene, fixed_pts, "fixed landmarks")
    m_list = markups_node_from_points(scene, moving_pts, "moving landmarks")
    for node, color in ((f_list, (0.2, 0.6, 1.0)), (m_list, (1.0, 0.55, 0.1))):
        node.GetDisplayNode().SetSelectedColor(*color)
        node.GetDisplayNode().SetPointLabelsVisibility(False)
        node.GetDisplayNode().SetGlyphScale(2.0)

    # the pairs only measure (the panel's "Landmark pairs guide the registration" unchecked): the printed
    # TRE is then an independent check, not how well the pairs pulled themselves together
    out = ADRegNetMRMLLogic(scene).registerNodes(fixed, moving, f_list, m_list, quality=args.quality, device="cpu",
                                                 landmarksGuide=False)
    tre = out.metrics.get("tre_before", {}), out.metrics.get("tre_after", {})
    print(f"quality {args.quality}: TRE {tre[0].get('mean', float('nan')):.2f} -> {tre[1].get('mean', float('nan')):.2f} mm "
          f"(mean of {len(fixed_pts)} pairs), folding voxels {out.foldingCount()}, "
          f"engine time {out.metrics.get('timings_s', {}).get('total', float('nan')):.1f} s")

    view = SliceViewer(scene, app, "Green", size=(args.size, args.size))
    # the coronal slice through the lung base, where the breathing motion is largest
    centre = points_lps_to_ras(fixed_pts[np.argsort(fixed_pts[:, 2])[len(fixed_pts) // 4]][None])[0]

    def shot(caption: str) -> object:
        view.show("Coronal")
        view.slice_node.JumpSliceByCentering(*map(float, centre))
        return _caption(view.render(), caption)

    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    for node in (f_list, m_list):
        node.GetDisplayNode().SetVisibility(False)
    display.show_comparison(scene, fixed, moving, fade=1.0)  # moving as loaded: before registration
    before = shot("moving, before registration")
    display.show_comparison(scene, fixed, out.warpedNode, fade=0.0)
    fixed_view = shot("fixed")
    display.show_comparison(scene, fixed, out.warpedNode, fade=1.0)
    registered = shot("registered moving (fade 1)")
    display.show_comparison(scene, fixed, out.warpedNode, fade=0.5)
    faded = shot("fade 0.5: fixed / registered")
    _row([fixed_view, before, registered, faded], folder / "slicer_comparison.png")

    for node in (f_list, m_list):
        node.GetDisplayNode().SetVisibility(True)
    display.show_jacobian_overlay(scene, out.jacobianNode, fixed, opacity=0.6)
    jac = shot("Jacobian: blue <1, white 1, red >1, green folds")
    display.show_jacobian_overlay(scene, out.jacobianNode, fixed, opacity=0.0)
    plain = shot("fixed CT with landmark pairs (blue fixed, orange moving)")
    _row([plain, jac], folder / "slicer_jacobian.png")

    ADRegNetMRMLLogic.setMovingUnderTransform(moving, out.transformNode, True, m_list)
    display.set_transform_grid_visible(out.transformNode, True)
    out.transformNode.GetDisplayNode().SetGridSpacingMm(8.0)
    display.show_layers(scene, moving, None, 0.0)  # the moving volume itself, shown registered
    grid = shot("registered moving CT under the transform, with its grid")
    display.set_transform_grid_visible(out.transformNode, False)
    no_grid = shot("registered moving CT, landmarks follow it")
    _row([no_grid, grid], folder / "slicer_grid.png")
    view.window.Finalize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
