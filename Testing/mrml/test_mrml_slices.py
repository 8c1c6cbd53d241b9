"""Two single-slice volumes in 3D Slicer (a 2-D image loaded, or a reformatted slice saved) registered in their
plane through the bridge, with the real engine in this process: real brain slices of two people (OASIS-TRT-20),
the slices on an oblique plane 6 mm apart, as two slices of one oblique acquisition."""
from __future__ import annotations

import numpy as np
import pytest

from ADRegNetLib.io import read_image
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.transform import Transform
from ADRegNetMRML.geometry import image_from_volume_node, points_lps_to_ras, points_ras_to_lps, volume_node_from_image
from ADRegNetMRML.landmarks import markups_node_from_points
from ADRegNetMRML.logic import ADRegNetMRMLLogic
from ADRegNetMRML.transform import field_from_grid_transform_node
from mrml_helpers import REPO, rotation

OASIS = REPO / ".." / "shared" / "data" / "brain2d-oasis-trt20-slices" / "Atlases"
DISTANCE_MM = 6.0


@pytest.mark.skipif(not OASIS.is_dir(), reason="../shared/data/brain2d-oasis-trt20-slices is not available")
def test_two_single_slice_volumes_register_in_their_plane(scene):
    direction = rotation(*np.radians([25.0, -10.0, 5.0]))
    normal = direction[:, 2]
    slices = [read_image(OASIS / f"OASIS-TRT-20-{k}_slice118.nii.gz") for k in (1, 2)]
    origins = (np.array([-100.0, 40.0, 12.0]), np.array([-100.0, 40.0, 12.0]) + DISTANCE_MM * normal)
    images = [Image(s.array, Geometry(s.geometry.size, s.geometry.spacing, o, direction), f"slice {k}")
              for k, (s, o) in enumerate(zip(slices, origins), start=1)]
    fixed, moving = (volume_node_from_image(scene, image, name=image.name) for image in images)
    corners = images[0].geometry.index_to_physical(np.array([[60.0, 90.0, 0.0], [150.0, 210.0, 0.0]]))
    fixed_list = markups_node_from_points(scene, corners, "F", ["a", "b"])
    moving_list = markups_node_from_points(scene, corners + DISTANCE_MM * normal, "M", ["a", "b"])

    out = ADRegNetMRMLLogic(scene).registerNodes(fixed, moving, fixed_list, moving_list, quality="fast", device="cpu",
                                                 landmarksGuide=False)
    disp, geometry = field_from_grid_transform_node(out.transformNode)
    assert geometry.allclose(images[0].geometry, atol=1e-6) and disp.shape == (3, 1, 291, 216)
    for node in (out.warpedNode, out.jacobianNode):
        assert node.GetImageData().GetDimensions() == (216, 291, 1)
    # the transform node, as Slicer applies it, takes each point of the fixed slice into the moving slice's plane
    points = images[0].geometry.index_to_physical(np.array([[30.0, 40.0, 0.0], [108.0, 145.0, 0.0], [190.0, 260.0, 0]]))
    to_moving = out.transformNode.GetTransformFromParent()
    mapped = points_ras_to_lps(np.array([to_moving.TransformPoint(*map(float, p)) for p in points_lps_to_ras(points)]))
    np.testing.assert_allclose(mapped, Transform(geometry, disp).map_points(points), atol=1e-3)
    np.testing.assert_allclose((mapped - origins[1]) @ normal, 0.0, atol=1e-3)
    # inputs untouched
    np.testing.assert_array_equal(image_from_volume_node(moving).array, images[1].array)
