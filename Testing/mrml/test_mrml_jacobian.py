"""Jacobian volume node and its color table (the overlay display is tested in test_mrml_display.py)."""
from __future__ import annotations

import numpy as np
import pytest

from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetMRML.geometry import image_from_volume_node
from ADRegNetMRML.jacobian import (
    FOLD_RGB, JACOBIAN_COLOR_NAME, NUMBER_OF_COLORS, displayed_rgba, jacobian_color_node, jacobian_colors, jacobian_volume_node,
)
from mrml_helpers import oblique_geometry


def _displayed_rgb(scene, values):
    """RGB (0..1) that Slicer's own scalar display pipeline (window/level + color table) gives each value."""
    values = np.asarray(values, np.float32)
    geometry = Geometry((len(values), 2, 2))
    node = jacobian_volume_node(scene, Image(np.tile(values, (2, 2, 1)), geometry, "J"))
    rgba = displayed_rgba(node)
    assert rgba.shape == (2, 2, len(values), 4)
    return rgba[0, 0, :, :3] / 255.0


def test_jacobian_node_is_on_the_fixed_grid(scene):
    geometry = oblique_geometry()
    det = np.linspace(-0.5, 2.5, int(np.prod(geometry.shape)), dtype=np.float32).reshape(geometry.shape)
    node = jacobian_volume_node(scene, Image(det, geometry, "jacobian"), name="J")
    back = image_from_volume_node(node, "jacobian")
    assert back.geometry.allclose(geometry, atol=1e-9)
    np.testing.assert_array_equal(back.array, det)
    assert node.GetAttribute("ADRegNet.role") == "jacobian"


def test_color_table_two_hues_white_at_one_fold_standout(scene):
    geometry = oblique_geometry()
    det = np.ones(geometry.shape, np.float32)
    node = jacobian_volume_node(scene, Image(det, geometry, "jacobian"))
    display = node.GetDisplayNode()
    color = scene.GetNodeByID(display.GetColorNodeID())
    assert color.GetName() == JACOBIAN_COLOR_NAME and color.GetNumberOfColors() == NUMBER_OF_COLORS
    assert not display.GetAutoWindowLevel()
    assert display.GetWindow() == pytest.approx(2.0) and display.GetLevel() == pytest.approx(1.0)
    assert not display.GetApplyThreshold() and not display.GetAutoThreshold()
    values = [-3.0, -0.2, 0.0, 0.005, 0.2, 0.4, 0.5, 0.7, 0.999, 1.0, 1.003, 1.3, 1.5, 1.6, 2.0, 9.0]
    rgb = dict(zip(values, _displayed_rgb(scene, values)))
    for fold in (-3.0, -0.2, 0.0, 0.005):
        np.testing.assert_allclose(rgb[fold], FOLD_RGB)
    for one in (0.999, 1.0, 1.003):
        np.testing.assert_allclose(rgb[one], [1, 1, 1], atol=1 / 255)
    assert rgb[0.4][2] > rgb[0.4][0] + 0.3  # compression: blue
    assert rgb[1.6][0] > rgb[1.6][2] + 0.3  # expansion: red
    # stronger deformation, stronger colour
    assert (1 - rgb[0.2]).sum() > (1 - rgb[0.4]).sum() > (1 - rgb[0.7]).sum() > 0
    assert (1 - rgb[2.0]).sum() > (1 - rgb[1.6]).sum() > (1 - rgb[1.3]).sum() > 0
    # above the window clamps to the deepest red, never to the fold colour
    np.testing.assert_allclose(rgb[9.0], rgb[2.0])
    assert rgb[9.0][0] > 0.7 and rgb[9.0][1] < 0.1


def test_color_node_is_shared_between_runs(scene):
    a = jacobian_color_node(scene)
    b = jacobian_color_node(scene)
    assert a is b
    assert scene.GetNodesByClassByName("vtkMRMLColorTableNode", JACOBIAN_COLOR_NAME).GetNumberOfItems() == 1


def test_colors_refuse_odd_counts():
    with pytest.raises(ValueError, match="even number >= 8, got 7"):
        jacobian_colors(7)
