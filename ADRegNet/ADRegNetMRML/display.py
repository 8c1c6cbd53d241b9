r"""What the slice views show after a run: fixed/registered comparison, Jacobian overlay, grid.

Two displays, kept apart, each with its own opacity:

* **comparison**: the fixed volume in the background, the registered moving volume (the warped
  output) in the foreground; fade = foreground opacity (0 fixed only, 1 registered only), flicker
  switches it between 0 and 1;
* **Jacobian overlay**: the Jacobian heatmap in the foreground over the fixed volume.

Opacity changes only touch views whose foreground is the module's output of that kind, never a
foreground layer the user set up. The transform grid needs both the display node's Visibility and
Visibility2D (Slicer's 2-D transform displayable manager tests both).
"""
from __future__ import annotations

from .frames import ROLE_ATTRIBUTE

__all__ = ["COMPARISON_ROLE", "JACOBIAN_ROLE", "slice_composite_nodes", "show_layers", "show_comparison",
           "show_jacobian_overlay", "set_foreground_opacity", "flicker", "set_transform_grid_visible",
           "transform_grid_visible"]

COMPARISON_ROLE = "warped"
JACOBIAN_ROLE = "jacobian"


def _check_opacity(opacity: float) -> float:
    if not 0.0 <= float(opacity) <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    return float(opacity)


def slice_composite_nodes(scene) -> list:
    """Every slice composite node of the scene (one per slice view; none headless)."""
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]


def show_layers(scene, background_node, foreground_node, opacity: float) -> int:
    """Background + foreground with ``opacity`` in every slice view; returns the number of views set."""
    opacity = _check_opacity(opacity)
    composites = slice_composite_nodes(scene)
    for composite in composites:
        if background_node is not None:
            composite.SetBackgroundVolumeID(background_node.GetID())
        composite.SetForegroundVolumeID(foreground_node.GetID() if foreground_node is not None else None)
        composite.SetForegroundOpacity(opacity)
    return len(composites)


def show_comparison(scene, fixed_node, registered_node, fade: float = 0.5) -> int:
    """Fixed in the background, registered moving (warped output) in the foreground at opacity ``fade``."""
    return show_layers(scene, fixed_node, registered_node, fade)


def show_jacobian_overlay(scene, jacobian_node, background_node=None, opacity: float = 0.5) -> int:
    """The Jacobian heatmap over ``background_node`` (usually the fixed volume) in every slice view."""
    return show_layers(scene, background_node, jacobian_node, opacity)


def _foreground_role(scene, composite) -> str:
    node = scene.GetNodeByID(composite.GetForegroundVolumeID()) if composite.GetForegroundVolumeID() else None
    return (node.GetAttribute(ROLE_ATTRIBUTE) or "") if node is not None else ""


def set_foreground_opacity(scene, opacity: float, role: str) -> int:
    """Set the foreground opacity of the views whose foreground is a module output of ``role``.

    Args:
        scene: vtkMRMLScene.
        opacity: in [0, 1].
        role: COMPARISON_ROLE (fade) or JACOBIAN_ROLE (heatmap opacity).

    Returns:
        How many views were changed (0 before a run, or when the user shows something else).
    """
    opacity = _check_opacity(opacity)
    changed = 0
    for composite in slice_composite_nodes(scene):
        if _foreground_role(scene, composite) == role:
            composite.SetForegroundOpacity(opacity)
            changed += 1
    return changed


def flicker(scene) -> int:
    """One flicker step: comparison views at opacity < 0.5 go to 1, the others to 0; returns views changed."""
    changed = 0
    for composite in slice_composite_nodes(scene):
        if _foreground_role(scene, composite) == COMPARISON_ROLE:
            composite.SetForegroundOpacity(1.0 if composite.GetForegroundOpacity() < 0.5 else 0.0)
            changed += 1
    return changed


def set_transform_grid_visible(transform_node, visible: bool, region_node=None) -> None:
    """Show the transform as a deformed grid in the slice views (or hide it)."""
    if transform_node.GetDisplayNode() is None:
        transform_node.CreateDefaultDisplayNodes()
    display = transform_node.GetDisplayNode()
    was_modifying = display.StartModify()
    try:
        display.SetVisualizationMode(display.VIS_MODE_GRID)
        if region_node is not None:
            display.SetAndObserveRegionNode(region_node)
        display.SetVisibility2D(bool(visible))
        if visible:
            display.SetVisibility(True)  # the 2-D displayable manager draws only when both are on
    finally:
        display.EndModify(was_modifying)


def transform_grid_visible(transform_node) -> bool:
    """What Slicer's 2-D transform displayable manager tests: Visibility and Visibility2D both on."""
    display = transform_node.GetDisplayNode() if transform_node is not None else None
    return bool(display is not None and display.GetVisibility() and display.GetVisibility2D())
