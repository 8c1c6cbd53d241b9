"""Shared helpers for the ADRegNetMRML tests: oblique anisotropic grids, analytic fields, references,
and an analytic stand-in for the engine.

(Kept out of conftest.py so that `from mrml_helpers import ...` is unambiguous when other test
folders have their own conftest.py.)
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
for _p in (str(REPO), str(REPO / "ADRegNet")):  # the module folder: `import ADRegNetMRML` as Slicer does
    if _p not in sys.path:
        sys.path.insert(0, _p)

import SimpleITK as sitk  # noqa: E402

from ADRegNetLib.engine.api import RegistrationCancelled, RegistrationResult  # noqa: E402
from ADRegNetLib.io.image import from_sitk, to_sitk  # noqa: E402
from ADRegNetLib.spatial.image import Image  # noqa: E402
from ADRegNetLib.spatial.geometry import Geometry  # noqa: E402


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_geometry(size=(18, 15, 11), spacing=(1.3, 0.9, 2.4), origin=(-31.5, 12.25, 48.0),
                     angles=(0.25, -0.15, 0.4)) -> Geometry:
    """An anisotropic, oblique grid (LPS)."""
    return Geometry(size, spacing, origin, rotation(*angles))


def voxel_centres(geometry: Geometry) -> np.ndarray:
    """(Z, Y, X, 3) LPS mm centre of every voxel."""
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in geometry.shape), indexing="ij")
    idx = np.stack([xx, yy, zz], -1).reshape(-1, 3)
    return geometry.index_to_physical(idx).reshape(*geometry.shape, 3)


def analytic_field(geometry: Geometry, amplitude: float = 2.5) -> np.ndarray:
    """(3, Z, Y, X) float32 smooth LPS displacement (mm): sines of the physical position."""
    p = voxel_centres(geometry)
    c = geometry.center()
    q = p - c
    u = np.stack([
        amplitude * np.sin(q[..., 1] / 7.0 + 0.3),
        0.8 * amplitude * np.cos(q[..., 2] / 9.0),
        0.6 * amplitude * np.sin(q[..., 0] / 6.0 - 0.2),
    ])
    return u.astype(np.float32)


def sitk_displacement_transform(disp_mm: np.ndarray, geometry: Geometry):
    """Independent reference: SimpleITK's DisplacementFieldTransform of an LPS field."""
    field = sitk.GetImageFromArray(np.moveaxis(disp_mm, 0, -1).astype(np.float64), isVector=True)
    geometry.apply_to_sitk(field)
    return sitk.DisplacementFieldTransform(field)


def blob_image(geometry: Geometry, name: str = "image", shift=(0.0, 0.0, 0.0)) -> Image:
    """A smooth test image: two Gaussian blobs (float32)."""
    p = voxel_centres(geometry) - geometry.center() - np.asarray(shift)
    a = np.exp(-np.sum((p - np.array([3.0, 2.0, 0.0])) ** 2, -1) / 40.0)
    b = 0.6 * np.exp(-np.sum((p + np.array([4.0, 1.0, 2.0])) ** 2, -1) / 25.0)
    return Image((100 * (a + b)).astype(np.float32), geometry, name)


def node_ids(scene) -> list[str]:
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


class AnalyticEngine:
    """Stands in for register(): returns a known field; records what it was given."""

    def __init__(self, fail_with: Exception | None = None, inverse: bool = False):
        self.fail_with = fail_with
        self.inverse = inverse  # also return an "inverse" field on the moving grid, as the engine does
        self.calls: list[dict] = []

    def __call__(self, fixed, moving, **kw):
        self.calls.append(dict(fixed=fixed, moving=moving, **kw))
        if kw.get("progress"):
            kw["progress"](0.5, "analytic")
        if kw.get("should_stop") and kw["should_stop"]():
            raise RegistrationCancelled("registration cancelled by the user")
        if self.fail_with is not None:
            raise self.fail_with
        disp = analytic_field(fixed.geometry, amplitude=3.0)
        transform = sitk_displacement_transform(disp, fixed.geometry)
        warped = sitk.Resample(to_sitk(moving), to_sitk(fixed), transform, sitk.sitkLinear, 0.0)
        field = sitk.GetImageFromArray(np.moveaxis(disp, 0, -1).astype(np.float64), isVector=True)
        fixed.geometry.apply_to_sitk(field)
        jac = sitk.DisplacementFieldJacobianDeterminant(field)
        warped_pts = None
        if kw.get("fixed_landmarks") is not None:
            warped_pts = np.array([transform.TransformPoint(p.tolist()) for p in kw["fixed_landmarks"]])
        result = RegistrationResult(disp, fixed.geometry, from_sitk(warped, "warped"), from_sitk(jac, "jacobian"),
                                    {"similarity_before": 0.2, "similarity_after": 0.9,
                                     "jacobian": {"folding_count": 0}}, warped_pts)
        if self.inverse:
            result.inverse_disp_mm = -analytic_field(moving.geometry, amplitude=3.0)
            result.moving_geometry = moving.geometry
        return result


class EventLoop:
    """Stands in for qt.QTimer.singleShot(0, f): callables run when the loop turns."""

    def __init__(self):
        self.queue = []

    def defer(self, function):
        self.queue.append(function)

    def turn(self):
        pending, self.queue = self.queue, []
        for function in pending:
            function()


def click(scene, ras):
    """What PlacePoint does: add a defined point to the active place list, then leave place mode."""
    interaction = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    if interaction.GetCurrentInteractionMode() != interaction.Place:
        return False  # in view mode a click places nothing
    node = scene.GetNodeByID(selection.GetActivePlaceNodeID())
    position = np.zeros(3)
    node.TransformPointFromWorld(np.asarray(ras, float), position)
    node.AddControlPoint(*map(float, position))  # fires PointPositionDefinedEvent
    if not interaction.GetPlaceModePersistence():
        interaction.SetCurrentInteractionMode(interaction.ViewTransform)
    return True


def registration_inputs(scene) -> dict:
    """Two oblique volumes and six landmark pairs about 2 mm apart: the scene the registerNodes tests start from."""
    from ADRegNetMRML.geometry import volume_node_from_image
    from ADRegNetMRML.landmarks import markups_node_from_points

    fixed_geometry = oblique_geometry()
    moving_geometry = oblique_geometry(size=(16, 14, 12), spacing=(1.4, 1.0, 2.2), origin=(-30.0, 13.0, 47.0),
                                       angles=(0.2, -0.1, 0.35))
    fixed = volume_node_from_image(scene, blob_image(fixed_geometry, "fixed"), name="fixed")
    moving = volume_node_from_image(scene, blob_image(moving_geometry, "moving", shift=(1.5, -1.0, 0.5)),
                                    name="moving")
    rng = np.random.default_rng(7)
    fixed_pts = fixed_geometry.index_to_physical(rng.uniform(2, np.asarray(fixed_geometry.size) - 3, (6, 3)))
    moving_pts = fixed_pts + rng.normal(0, 2.0, fixed_pts.shape)
    labels = [f"P-{k + 1}" for k in range(6)]
    f_pts = markups_node_from_points(scene, fixed_pts, "F", labels)
    m_pts = markups_node_from_points(scene, moving_pts, "M", labels)
    return dict(fixed=fixed, moving=moving, fixed_pts=f_pts, moving_pts=m_pts)


def snapshot(node):
    """What a node holds (voxels, geometry, name, parent; or points, name), to check it was not changed."""
    from ADRegNetMRML.geometry import image_from_volume_node
    from ADRegNetMRML.landmarks import points_lps_from_markups

    if node.IsA("vtkMRMLVolumeNode"):
        image = image_from_volume_node(node, dtype=None)
        return image.array.copy(), image.geometry.to_dict(), node.GetName(), node.GetParentTransformNode()
    return points_lps_from_markups(node), node.GetName()


def assert_same(a, b):
    """Two ``snapshot`` results are equal."""
    for x, y in zip(a, b):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y
