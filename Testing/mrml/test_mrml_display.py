"""What the slice views show after a run, rendered by Slicer's own slice logic and displayable managers.

Defect 4 (grid shown only with Visibility2D) and defect 6 (registered image shown nowhere; the
opacity slider changed any foreground) of issue 14, checked on real pixels and composite nodes.
"""
from __future__ import annotations

import numpy as np
import pytest

from ADRegNetLib.spatial.image import Image
from ADRegNetMRML.display import (
    COMPARISON_ROLE, JACOBIAN_ROLE, flicker, set_foreground_opacity, set_transform_grid_visible, show_comparison,
    show_jacobian_overlay, transform_grid_visible,
)
from ADRegNetMRML.frames import ROLE_ATTRIBUTE
from ADRegNetMRML.geometry import volume_node_from_image
from ADRegNetMRML.jacobian import jacobian_volume_node
from ADRegNetMRML.transform import grid_transform_node_from_field
from mrml_helpers import analytic_field, blob_image, oblique_geometry
from slice_view import SliceViewer, prepare_scene


@pytest.fixture
def viewer(scene):
    app = prepare_scene(scene)
    view = SliceViewer(scene, app, "Red", size=(160, 160))
    yield view
    view.window.Finalize()


def _volume(scene, name="fixed", geometry=None, **kw):
    node = volume_node_from_image(scene, blob_image(geometry or oblique_geometry(size=(30, 28, 20)), name, **kw),
                                  name=name)
    node.GetDisplayNode().AutoWindowLevelOff()
    node.GetDisplayNode().SetWindowLevel(100.0, 50.0)
    return node


def test_grid_is_drawn_only_when_visibility_and_visibility2d_are_both_on(scene, viewer):
    fixed = _volume(scene)
    geometry = oblique_geometry(size=(30, 28, 20))
    transform = grid_transform_node_from_field(scene, analytic_field(geometry, 3.0), geometry)
    viewer.composite.SetBackgroundVolumeID(fixed.GetID())
    viewer.show("Axial")
    plain = viewer.render().astype(int)
    assert plain.std() > 5  # the volume itself is drawn

    display = transform.GetDisplayNode()
    display.SetVisualizationMode(display.VIS_MODE_GRID)
    display.SetVisibility(False)
    display.SetVisibility2D(True)  # what the module did before: the displayable manager draws nothing
    assert np.abs(viewer.render().astype(int) - plain).max() == 0
    assert not transform_grid_visible(transform)

    set_transform_grid_visible(transform, True)
    assert transform_grid_visible(transform)
    with_grid = viewer.render().astype(int)
    changed = np.any(np.abs(with_grid - plain) > 30, axis=-1).mean()
    assert changed > 0.02, f"the grid changed only {changed:.1%} of the pixels"

    set_transform_grid_visible(transform, False)
    assert not transform_grid_visible(transform)
    assert np.abs(viewer.render().astype(int) - plain).max() == 0


def test_comparison_shows_fixed_and_registered_and_fade_changes_pixels(scene, viewer):
    fixed = _volume(scene, "fixed")
    registered = _volume(scene, "registered", shift=(4.0, -3.0, 0.0))
    registered.SetAttribute(ROLE_ATTRIBUTE, COMPARISON_ROLE)
    assert show_comparison(scene, fixed, registered, fade=0.0) == 1
    assert viewer.composite.GetBackgroundVolumeID() == fixed.GetID()
    assert viewer.composite.GetForegroundVolumeID() == registered.GetID()
    viewer.show("Axial")
    fixed_only = viewer.render().astype(int)
    assert set_foreground_opacity(scene, 1.0, COMPARISON_ROLE) == 1
    registered_only = viewer.render().astype(int)
    assert np.abs(registered_only - fixed_only).max() > 30
    assert flicker(scene) == 1 and viewer.composite.GetForegroundOpacity() == 0.0
    assert np.abs(viewer.render().astype(int) - fixed_only).max() <= 1
    assert flicker(scene) == 1 and viewer.composite.GetForegroundOpacity() == 1.0


def test_opacity_controls_touch_only_their_own_display(scene):
    geometry = oblique_geometry()
    fixed = volume_node_from_image(scene, blob_image(geometry), name="fixed")
    users_own = volume_node_from_image(scene, blob_image(geometry), name="user's PET")
    registered = volume_node_from_image(scene, blob_image(geometry), name="registered")
    registered.SetAttribute(ROLE_ATTRIBUTE, COMPARISON_ROLE)
    jacobian = jacobian_volume_node(scene, Image(np.ones(geometry.shape, np.float32), geometry, "J"))
    red, green = (scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(2))
    for composite in (red, green):
        composite.SetForegroundVolumeID(users_own.GetID())
        composite.SetForegroundOpacity(0.3)
    # before a run: the sliders change nothing the user set up
    assert set_foreground_opacity(scene, 0.9, COMPARISON_ROLE) == 0
    assert set_foreground_opacity(scene, 0.9, JACOBIAN_ROLE) == 0
    assert flicker(scene) == 0
    assert red.GetForegroundOpacity() == pytest.approx(0.3)
    # the Jacobian overlay and the comparison are separate displays with separate opacities
    assert show_jacobian_overlay(scene, jacobian, fixed, 0.4) == 2
    green.SetForegroundVolumeID(registered.GetID())
    assert set_foreground_opacity(scene, 0.7, COMPARISON_ROLE) == 1
    assert (red.GetForegroundOpacity(), green.GetForegroundOpacity()) == pytest.approx((0.4, 0.7))
    assert set_foreground_opacity(scene, 0.2, JACOBIAN_ROLE) == 1
    assert (red.GetForegroundOpacity(), green.GetForegroundOpacity()) == pytest.approx((0.2, 0.7))
    with pytest.raises(ValueError, match=r"opacity must be in \[0, 1\], got 1.5"):
        set_foreground_opacity(scene, 1.5, JACOBIAN_ROLE)
