"""report.png's panels: each plane named by the anatomical axis its normal lies along, and a single slice (two 2-D
images registered in their plane) shown in its own plane alone."""
from __future__ import annotations

import numpy as np
import pytest

from ADRegNetLib.cli.report import _plane_names, write_report
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image


@pytest.mark.parametrize("direction, names", [
    (np.eye(3), ["axial", "coronal", "sagittal"]),
    # a sagittally stored MRI: voxel x runs P-A, y S-I, z L-R (slices are sagittal)
    (np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), ["sagittal", "axial", "coronal"]),
])
def test_planes_are_named_by_their_normals(direction, names):
    assert _plane_names(Image(np.zeros((4, 5, 6), np.float32), Geometry((6, 5, 4), direction=direction))) == names


def test_a_single_slice_report_shows_its_plane(tmp_path):
    import matplotlib.image

    rng = np.random.default_rng(0)
    geometry = Geometry((40, 30, 1))
    image = Image(rng.random((1, 30, 40), dtype=np.float32), geometry)
    path = write_report(tmp_path / "report.png", image, image.array, image, Image(np.ones((1, 30, 40), np.float32),
                                                                                    geometry), {"preset": "generic"})
    height, width = matplotlib.image.imread(path).shape[:2]
    assert width < height  # one column of panels, not three
