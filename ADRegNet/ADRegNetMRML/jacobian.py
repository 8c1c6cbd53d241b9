r"""The Jacobian determinant as a scalar volume with its own diverging color table.

det(d(x + u)/dx) on the fixed grid: 1 keeps volume, < 1 compresses (blue), > 1 expands (red),
white at exactly 1, and folding (det <= 0) in a colour that stands out (bright green).

Scalar volume display maps ``[level - window/2, level + window/2]`` linearly onto the color
table's entries and clamps outside. With the window [0, 2] and 256 entries each entry spans
about 1/128: entry 0 holds every value below about 1/128 (all folds, det <= 0, and the
near-singular compressions just above 0) and gets the fold colour; the two entries around
det = 1 are white.
"""
from __future__ import annotations

import numpy as np

from ADRegNetLib.spatial.image import Image

from .frames import ROLE_ATTRIBUTE
from .geometry import volume_node_from_image

__all__ = [
    "JACOBIAN_WINDOW", "JACOBIAN_LEVEL", "JACOBIAN_COLOR_NAME", "FOLD_RGB", "NUMBER_OF_COLORS",
    "jacobian_colors", "jacobian_color_node", "configure_jacobian_display", "jacobian_volume_node", "displayed_rgba",
]

NUMBER_OF_COLORS = 256
JACOBIAN_WINDOW = 2.0
JACOBIAN_LEVEL = 1.0
JACOBIAN_COLOR_NAME = "ADRegNet Jacobian"
FOLD_RGB = (0.0, 1.0, 0.0)
COMPRESSION_RGB = (0.02, 0.19, 0.75)  # deep blue at det -> 0
EXPANSION_RGB = (0.75, 0.05, 0.05)  # deep red at det -> 2


def jacobian_colors(number_of_colors: int = NUMBER_OF_COLORS) -> np.ndarray:
    """(N, 4) RGBA in [0, 1]: fold colour, blue -> white ramp, white at entries N/2 - 1 and N/2, white -> red.

    Entry k covers det in about [k, k + 1) * 2 / N for the display window [0, 2].
    """
    n = int(number_of_colors)
    if n < 8 or n % 2:
        raise ValueError(f"number_of_colors must be an even number >= 8, got {n}")
    colors = np.ones((n, 4))
    # Slicer scales [level - window/2, level + window/2] to 0..255 before the table lookup, so
    # det = 1 lands on the boundary of entries n/2 - 1 and n/2: both are white.
    low_white, high_white = n // 2 - 1, n // 2
    white = np.ones(3)
    for k in range(1, low_white):
        t = (low_white - k) / (low_white - 1)  # 1 at entry 1, 0 next to the white entries
        colors[k, :3] = white + t * (np.asarray(COMPRESSION_RGB) - white)
    for k in range(high_white + 1, n):
        t = (k - high_white) / (n - 1 - high_white)
        colors[k, :3] = white + t * (np.asarray(EXPANSION_RGB) - white)
    colors[0, :3] = FOLD_RGB
    return colors


def jacobian_color_node(scene, name: str = JACOBIAN_COLOR_NAME):
    """The module's Jacobian color table node: reused if already in the scene, else created."""
    nodes = scene.GetNodesByClassByName("vtkMRMLColorTableNode", name)
    if nodes.GetNumberOfItems() > 0:
        return nodes.GetItemAsObject(0)
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(NUMBER_OF_COLORS)
    colors = jacobian_colors(NUMBER_OF_COLORS)
    for k in range(NUMBER_OF_COLORS):
        det_low = k * JACOBIAN_WINDOW / NUMBER_OF_COLORS
        label = "folding" if k == 0 else f"det {det_low:.3f}"
        node.SetColor(k, label, *[float(v) for v in colors[k]])
    node.GetLookupTable().SetRange(JACOBIAN_LEVEL - JACOBIAN_WINDOW / 2, JACOBIAN_LEVEL + JACOBIAN_WINDOW / 2)
    node.SetAttribute(ROLE_ATTRIBUTE, "jacobian-colors")
    return node


def configure_jacobian_display(volume_node, color_node) -> None:
    """Set the Jacobian volume's display: its color table, fixed window [0, 2], no threshold."""
    display = volume_node.GetDisplayNode()
    if display is None:
        volume_node.CreateDefaultDisplayNodes()
        display = volume_node.GetDisplayNode()
    display.SetAndObserveColorNodeID(color_node.GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevel(JACOBIAN_WINDOW, JACOBIAN_LEVEL)
    display.AutoThresholdOff()
    display.ApplyThresholdOff()
    display.SetInterpolate(False)  # show the values per voxel, as computed


def jacobian_volume_node(scene, jacobian: Image, name: str = "ADRegNet Jacobian", node=None):
    """Put the Jacobian determinant (on the fixed grid) in the scene with the Jacobian colors.

    Args:
        scene: vtkMRMLScene.
        jacobian: det(d(x + u)/dx), (Z, Y, X) float32 on the fixed geometry (LPS).
        name: name of a new node (made unique).
        node: existing scalar volume node to overwrite (chosen by the user as output).

    Returns:
        The scalar volume node.
    """
    image = Image(jacobian.array.astype(np.float32, copy=False), jacobian.geometry, jacobian.name)
    node = volume_node_from_image(scene, image, name=name, node=node)
    node.SetAttribute(ROLE_ATTRIBUTE, "jacobian")
    configure_jacobian_display(node, jacobian_color_node(scene))
    return node


def displayed_rgba(volume_node) -> np.ndarray:
    """(Z, Y, X, 4) uint8 colours that Slicer's scalar display pipeline (window/level + color node) gives a volume.

    Runs the display node's own pipeline, so images made from it (docs, reports) use exactly the
    colours a slice view shows.
    """
    from vtk.util import numpy_support

    display = volume_node.GetDisplayNode()
    if display is None:
        raise ValueError(f"volume '{volume_node.GetName()}' has no display node")
    display.SetInputImageDataConnection(volume_node.GetImageDataConnection())
    producer = display.GetOutputImageDataConnection().GetProducer()
    producer.Update()
    output = producer.GetOutputDataObject(0)
    nx, ny, nz = output.GetDimensions()
    rgba = numpy_support.vtk_to_numpy(output.GetPointData().GetScalars())
    return rgba.reshape(nz, ny, nx, -1).copy()
