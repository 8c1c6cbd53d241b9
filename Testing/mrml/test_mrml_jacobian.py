"""Jacobian volume node and its color table (the overlay display is tested in test_mrml_display.py).

Colours are read from Slicer's own scalar display pipeline (window/level, threshold, color table).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetMRML.geometry import image_from_volume_node
from ADRegNetMRML.jacobian import (
    FOLD_RGB, JACOBIAN_BIN, JACOBIAN_COLOR_NAME, JACOBIAN_LEVEL, JACOBIAN_WINDOW, NUMBER_OF_COLORS, displayed_rgba,
    jacobian_color_node, jacobian_colors, jacobian_entry, jacobian_volume_node, no_value_threshold,
)
from mrml_helpers import oblique_geometry


def _displayed_rgba(scene, values):
    """RGBA (0..1) that Slicer's own scalar display pipeline gives each value."""
    values = np.asarray(values, np.float32)
    geometry = Geometry((len(values), 2, 2))
    node = jacobian_volume_node(scene, Image(np.tile(values, (2, 2, 1)), geometry, "J"))
    rgba = displayed_rgba(node)
    assert rgba.shape == (2, 2, len(values), 4)
    return rgba[0, 0] / 255.0


def _displayed_rgb(scene, values):
    return _displayed_rgba(scene, values)[:, :3]


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
    node = jacobian_volume_node(scene, Image(np.ones(geometry.shape, np.float32), geometry, "jacobian"))
    display = node.GetDisplayNode()
    color = scene.GetNodeByID(display.GetColorNodeID())
    assert color.GetName() == JACOBIAN_COLOR_NAME and color.GetNumberOfColors() == NUMBER_OF_COLORS
    assert not display.GetAutoWindowLevel() and not display.GetAutoThreshold()
    assert (display.GetWindow(), display.GetLevel()) == (JACOBIAN_WINDOW, JACOBIAN_LEVEL)
    values = [-3.0, -0.2, 0.0, 0.2, 0.4, 0.5, 0.7, 0.999, 1.0, 1.003, 1.3, 1.5, 1.6, 2.0, 9.0]
    rgb = dict(zip(values, _displayed_rgb(scene, values)))
    for fold in (-3.0, -0.2, 0.0):
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


def test_only_determinants_at_or_below_zero_look_like_folds(scene):
    """Before: the window [0, 2] mapped every det below 2/255 = 0.0078 (strong but positive compression) onto
    the fold colour; the engine's folding count (det <= 0) and the picture disagreed."""
    folds = [-1e6, -1.0, -1e-6, -1e-30, 0.0]
    positive = [1e-15, 1e-12, 1e-6, 1e-3, 0.005, 0.0078, JACOBIAN_BIN]
    rgb = _displayed_rgb(scene, folds + positive)
    np.testing.assert_allclose(rgb[:len(folds)], np.tile(FOLD_RGB, (len(folds), 1)))
    deepest_blue = jacobian_colors()[1, :3]
    for value, got in zip(positive, rgb[len(folds):]):
        assert np.abs(got - np.asarray(FOLD_RGB)).max() > 0.5, value
        assert np.abs(got - deepest_blue).max() <= 2 / 255 + 0.03, value  # the strongest compression, blue


def test_every_determinant_gets_the_colour_of_its_bin(scene):
    """jacobian_entry (what the docs and the color labels say) is what Slicer's pipeline does, bin edges included."""
    rng = np.random.default_rng(3)
    edges = np.arange(-2, NUMBER_OF_COLORS + 2) * JACOBIAN_BIN
    values = np.concatenate([rng.uniform(-1, 3, 400), edges * (1 + 1e-6) + 1e-6, edges * (1 - 1e-6) - 1e-6])
    values = values.astype(np.float32)
    expected = jacobian_colors()[jacobian_entry(values), :3]
    np.testing.assert_allclose(_displayed_rgb(scene, values), expected, atol=1 / 255 + 1e-9)
    assert set(jacobian_entry(values)) == set(range(NUMBER_OF_COLORS))  # every entry was checked


def test_voxels_with_no_determinant_are_transparent_not_folds(scene):
    """Before: NaN went through the window/level as byte 0 and was painted as a fold."""
    rgba = _displayed_rgba(scene, [np.nan, np.inf, -np.inf, -1.0, 0.0, 1.0, 1e20])
    np.testing.assert_array_equal(rgba[:3, 3], 0)  # the fixed volume shows through
    np.testing.assert_array_equal(rgba[3:, 3], 1)
    np.testing.assert_allclose(rgba[3:5, :3], np.tile(FOLD_RGB, (2, 1)))


def test_window_level_and_threshold_survive_a_scene_save(scene):
    """Slicer writes window and level with 6 significant digits: the saved values must be the same numbers, or
    the fold bin's edge would move off 0."""
    import slicer

    geometry = Geometry((3, 2, 2))
    jacobian_volume_node(scene, Image(np.ones(geometry.shape, np.float32), geometry, "J"))
    scene.SetSaveToXMLString(1)
    scene.Commit()
    xml = scene.GetSceneXMLString()
    assert re.search(r'window="([^"]+)"', xml).group(1) == format(JACOBIAN_WINDOW, ".6g")
    loaded = slicer.vtkMRMLScene()
    loaded.SetLoadFromXMLString(1)
    loaded.SetSceneXMLString(xml)
    loaded.Import()
    display = loaded.GetFirstNodeByClass("vtkMRMLScalarVolumeDisplayNode")
    assert (display.GetWindow(), display.GetLevel()) == (JACOBIAN_WINDOW, JACOBIAN_LEVEL)
    assert display.GetApplyThreshold()
    assert (display.GetLowerThreshold(), display.GetUpperThreshold()) == no_value_threshold([1.0]) == (0.999, 1.001)
    loaded.Clear(True)


@pytest.mark.parametrize("values", [
    [np.nan, np.inf, -np.inf, -0.7, 0.0, 0.3, 1.0, 2.6],
    [np.nan, 0.123456789, 0.12346, 1.98765432],  # 6 significant digits must not round the threshold inside
    [-1e6, 5e-7, 7e4, np.inf],
    [1.0, 1.0, 1.0],
])
def test_the_no_value_threshold_is_the_finite_range_of_the_data(scene, values):
    """Before: the threshold [-1e30, 1e30] made Slicer's threshold slider (qMRMLVolumeThresholdWidget widens its
    range to include the threshold) span +-1e30. Now it is the finite range with a small margin, which still leaves
    NaN and inf transparent and shows every finite det, also after a scene save (6 significant digits)."""
    values = np.asarray(values, np.float32)
    geometry = Geometry((len(values), 1, 1))
    node = jacobian_volume_node(scene, Image(values.reshape(1, 1, -1), geometry, "J"))
    display = node.GetDisplayNode()
    lower, upper = display.GetLowerThreshold(), display.GetUpperThreshold()
    finite = values[np.isfinite(values)].astype(np.float64)
    span = max(np.ptp(finite), np.abs(finite).max(), 1e-3)
    assert finite.min() - 0.002 * span <= lower < finite.min() and finite.max() < upper <= finite.max() + 0.002 * span
    assert (float(f"{lower:.6g}"), float(f"{upper:.6g}")) == (lower, upper)  # what a scene save writes
    alpha = displayed_rgba(node).reshape(-1, 4)[:, 3]
    np.testing.assert_array_equal(alpha, np.where(np.isfinite(values), 255, 0))


def test_color_node_is_shared_between_runs(scene):
    a = jacobian_color_node(scene)
    b = jacobian_color_node(scene)
    assert a is b
    assert scene.GetNodesByClassByName("vtkMRMLColorTableNode", JACOBIAN_COLOR_NAME).GetNumberOfItems() == 1


def test_an_earlier_versions_color_node_is_left_to_its_volumes(scene):
    """A scene saved with the window [0, 2] table: its volumes keep it; new results get this version's."""
    old = scene.AddNewNodeByClass("vtkMRMLColorTableNode", JACOBIAN_COLOR_NAME)
    old.SetTypeToUser()
    old.SetNumberOfColors(4)
    new = jacobian_color_node(scene)
    assert new is not old and old.GetNumberOfColors() == 4
    assert new.GetNumberOfColors() == NUMBER_OF_COLORS and new.GetColorName(0) == "folding (det <= 0)"


@pytest.mark.parametrize("values", [
    [np.inf, -np.inf, -0.7, 0.0, 1.0, 2.6],
    [np.nan, np.inf, 0.5, 1.5],
    [-np.inf, 1.0, 1.0],
])
def test_infinite_determinants_give_slicer_a_finite_scalar_range(scene, values):
    """Before: an infinite voxel was stored as it was; Slicer's display scalar range (the bounds of the window/level
    and threshold sliders, vtkMRMLScalarVolumeDisplayNode::GetDisplayScalarRange = the image data's range, which
    skips NaN but not inf) became [-inf, inf]. Now infinities are stored as NaN: the range is the finite values',
    the display settings are finite, those voxels stay transparent, the finite ones keep their values."""
    values = np.asarray(values, np.float32)
    finite = np.isfinite(values)
    node = jacobian_volume_node(scene, Image(values.reshape(1, 1, -1), Geometry((len(values), 1, 1)), "J"))
    display = node.GetDisplayNode()
    scalar_range = [0.0, 0.0]
    display.GetDisplayScalarRange(scalar_range)
    assert scalar_range == [float(values[finite].min()), float(values[finite].max())]
    assert node.GetImageData().GetScalarRange() == tuple(scalar_range)
    settings = (display.GetWindow(), display.GetLevel(), display.GetLowerThreshold(), display.GetUpperThreshold())
    assert np.all(np.isfinite(settings)), settings
    from vtk.util import numpy_support

    stored = numpy_support.vtk_to_numpy(node.GetImageData().GetPointData().GetScalars())
    np.testing.assert_array_equal(stored[finite], values[finite])
    assert np.isnan(stored[~finite]).all()
    alpha = displayed_rgba(node).reshape(-1, 4)[:, 3]
    np.testing.assert_array_equal(alpha, np.where(finite, 255, 0))
