r"""The Jacobian determinant as a scalar volume with its own diverging color table.

det(d(x + u)/dx) on the fixed grid: 1 keeps volume, < 1 compresses (blue), > 1 expands (red),
white around 1, and folding (det <= 0) in a colour that stands out (bright green).

How Slicer draws a scalar volume: the window/level step turns each voxel value v into a byte
b = int(255 (v - lower) / window) (0 at or below ``lower``, 255 at or above ``lower + window``), and
the color table's 256 entries are looked up by that byte (entry k = byte k). Slicer >= 5.12 computes
b that way (``vtkImageMapToWindowLevelAddon``), earlier versions as int((v + window/2 - level) * 255 /
window) (VTK's ``vtkImageMapToWindowLevelColors``). The window below puts ``lower`` one bin under 0,
with bins of ``JACOBIAN_BIN`` det each:

* entry 0 holds exactly det <= 0: the folds. The bin's upper edge is 0 to double precision in both
  formulas (a positive det from 1e-15 up is entry 1 or above), where a window [0, 2] had put every
  det below 2/255 = 0.0078 with the folds;
* entry k (1..254) holds det in [(k - 1), k) * JACOBIAN_BIN: its colour is that of the bin's centre,
  white within one bin of 1;
* entry 255 holds det >= 254 * JACOBIAN_BIN (about 2.0), the deepest red.

Window and level have at most 6 significant digits, so they survive a scene save unchanged (Slicer
writes them with a stream's default precision). A voxel with no determinant (NaN, infinite) would
byte to 0 and look like a fold: the display's threshold leaves those voxels transparent instead (NaN
compares false, infinities lie outside), so the fixed volume shows through them. The threshold is the
finite range of the data widened by a small margin (:func:`no_value_threshold`), not a fixed
[-1e30, 1e30]: Slicer's threshold slider (qMRMLVolumeThresholdWidget) widens its range to include the
threshold, and spanned +-1e30, useless for adjusting it.

Infinite determinants are stored as NaN in the volume node. Slicer's display scalar range (the window/level
and threshold sliders' bounds, ``vtkMRMLScalarVolumeDisplayNode::GetDisplayScalarRange``) is the image data's
scalar range, and VTK's range skips NaN but not infinities: one +inf voxel made it [.., inf].
"""
from __future__ import annotations

import numpy as np

from ADRegNetLib.spatial.image import Image

from .frames import ROLE_ATTRIBUTE
from .geometry import volume_node_from_image

__all__ = [
    "JACOBIAN_BIN", "JACOBIAN_WINDOW", "JACOBIAN_LEVEL", "JACOBIAN_COLOR_NAME", "JACOBIAN_COLORS_ATTRIBUTE", "FOLD_RGB",
    "NUMBER_OF_COLORS", "no_value_threshold", "jacobian_colors", "jacobian_entry", "jacobian_color_node",
    "configure_jacobian_display", "jacobian_volume_node", "displayed_rgba",
]

NUMBER_OF_COLORS = 256
#: det per color entry; with the window and level below, entry 0 holds exactly det <= 0 (module docstring)
JACOBIAN_BIN = 0.007872
JACOBIAN_WINDOW = 2.00736  # 255 * JACOBIAN_BIN
JACOBIAN_LEVEL = 0.995808  # JACOBIAN_WINDOW / 2 - JACOBIAN_BIN: lower edge of the window one bin below 0
JACOBIAN_COLOR_NAME = "ADRegNet Jacobian"
#: attribute of the color node naming its bins; a node from an earlier version (window [0, 2]) is not reused
JACOBIAN_COLORS_ATTRIBUTE = "ADRegNet.jacobianColors"
_COLORS_VERSION = f"folds det<=0, bins {JACOBIAN_BIN}"
FOLD_RGB = (0.0, 1.0, 0.0)
COMPRESSION_RGB = (0.02, 0.19, 0.75)  # deep blue at det -> 0
EXPANSION_RGB = (0.75, 0.05, 0.05)  # deep red at det -> 2


def jacobian_entry(det) -> np.ndarray:
    """The color entry Slicer's display gives each det (the window/level above; NaN and inf excluded).

    Args:
        det: array of finite determinants.

    Returns:
        int array of the same shape: 0 for det <= 0, then one entry per ``JACOBIAN_BIN``, 255 at the top.
    """
    d = np.asarray(det, dtype=np.float64)
    return np.where(d <= 0, 0, np.clip(np.floor(d / JACOBIAN_BIN) + 1, 1, NUMBER_OF_COLORS - 1)).astype(int)


def jacobian_colors() -> np.ndarray:
    """(256, 4) RGBA in [0, 1]: the fold colour, then the colour of each bin's centre det (blue -> white -> red)."""
    n = NUMBER_OF_COLORS
    colors = np.ones((n, 4))
    top = (n - 2) * JACOBIAN_BIN  # entry n - 1 holds det >= top
    white = np.ones(3)
    for k in range(1, n):
        centre = (k - 0.5) * JACOBIAN_BIN if k < n - 1 else top
        if abs(centre - 1.0) < JACOBIAN_BIN:
            continue  # white within one bin of 1
        if centre < 1.0:
            t, rgb = 1.0 - centre, COMPRESSION_RGB
        else:
            t, rgb = min((centre - 1.0) / (top - 1.0), 1.0), EXPANSION_RGB
        colors[k, :3] = white + t * (np.asarray(rgb) - white)
    colors[0, :3] = FOLD_RGB
    return colors


def _entry_label(k: int) -> str:
    if k == 0:
        return "folding (det <= 0)"
    if k == NUMBER_OF_COLORS - 1:
        return f"det >= {(k - 1) * JACOBIAN_BIN:.3f}"
    return f"det {(k - 1) * JACOBIAN_BIN:.3f}-{k * JACOBIAN_BIN:.3f}"


def jacobian_color_node(scene, name: str = JACOBIAN_COLOR_NAME):
    """The module's Jacobian color table node: this version's is reused if already in the scene, else created."""
    nodes = scene.GetNodesByClass("vtkMRMLColorTableNode")
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if node.GetAttribute(JACOBIAN_COLORS_ATTRIBUTE) == _COLORS_VERSION:
            return node
    taken = scene.GetNodesByClassByName("vtkMRMLColorTableNode", name).GetNumberOfItems()
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", scene.GenerateUniqueName(name) if taken else name)
    node.SetTypeToUser()
    node.SetNumberOfColors(NUMBER_OF_COLORS)
    for k, rgba in enumerate(jacobian_colors()):
        node.SetColor(k, _entry_label(k), *[float(v) for v in rgba])
    node.GetLookupTable().SetRange(JACOBIAN_LEVEL - JACOBIAN_WINDOW / 2, JACOBIAN_LEVEL + JACOBIAN_WINDOW / 2)
    node.SetAttribute(ROLE_ATTRIBUTE, "jacobian-colors")
    node.SetAttribute(JACOBIAN_COLORS_ATTRIBUTE, _COLORS_VERSION)
    return node


def no_value_threshold(det) -> tuple[float, float]:
    """The display threshold: the finite range of det, so NaN and infinite voxels are left transparent.

    Args:
        det: array of determinants (any shape; NaN and inf allowed).

    Returns:
        (lower, upper): the finite minimum and maximum, each moved out by a margin of 0.1 % of the larger of
        the range and the values' magnitude (at least 1e-6), written with 6 significant digits (as Slicer saves
        them: the margin keeps the rounded values outside the data); (0, 0) when no value is finite.
    """
    d = np.asarray(det, dtype=np.float64)
    finite = d[np.isfinite(d)]
    if finite.size == 0:
        return 0.0, 0.0
    lo, hi = float(finite.min()), float(finite.max())
    margin = 1e-3 * max(hi - lo, abs(lo), abs(hi), 1e-3)
    return float(f"{lo - margin:.6g}"), float(f"{hi + margin:.6g}")


def configure_jacobian_display(volume_node, color_node) -> None:
    """Set the Jacobian volume's display: its color table, the fixed window, NaN/inf transparent (a threshold
    at the data's finite range)."""
    from vtk.util import numpy_support

    display = volume_node.GetDisplayNode()
    if display is None:
        volume_node.CreateDefaultDisplayNodes()
        display = volume_node.GetDisplayNode()
    display.SetAndObserveColorNodeID(color_node.GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevel(JACOBIAN_WINDOW, JACOBIAN_LEVEL)
    display.AutoThresholdOff()
    scalars = volume_node.GetImageData().GetPointData().GetScalars() if volume_node.GetImageData() else None
    display.SetThreshold(*no_value_threshold(numpy_support.vtk_to_numpy(scalars) if scalars is not None else []))
    display.ApplyThresholdOn()
    display.SetInterpolate(False)  # show the values per voxel, as computed


def jacobian_volume_node(scene, jacobian: Image, name: str = "ADRegNet Jacobian", node=None):
    """Put the Jacobian determinant (on the fixed grid) in the scene with the Jacobian colors.

    Args:
        scene: vtkMRMLScene.
        jacobian: det(d(x + u)/dx), (Z, Y, X) float32 on the fixed geometry (LPS); NaN and infinite
            voxels (no determinant) are stored as NaN and shown transparent.
        name: name of a new node (made unique).
        node: existing scalar volume node to overwrite (chosen by the user as output).

    Returns:
        The scalar volume node.
    """
    array = jacobian.array.astype(np.float32, copy=False)
    if np.isinf(array).any():  # stored as NaN: Slicer's display scalar range is the data's, and VTK's skips NaN only
        array = np.where(np.isinf(array), np.float32(np.nan), array)
    image = Image(array, jacobian.geometry, jacobian.name)
    node = volume_node_from_image(scene, image, name=name, node=node)
    node.SetAttribute(ROLE_ATTRIBUTE, "jacobian")
    configure_jacobian_display(node, jacobian_color_node(scene))
    return node


def displayed_rgba(volume_node) -> np.ndarray:
    """(Z, Y, X, 4) uint8 colours that Slicer's scalar display pipeline (window/level + color node) gives a volume.

    Runs the display node's own pipeline, so images made from it (docs, reports) use exactly the
    colours a slice view shows; alpha 0 where the display's threshold hides a voxel.
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
