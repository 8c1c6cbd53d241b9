"""``spatial.transforms.upsampled_disp_mm``: slab-wise resize + mm conversion equals the whole-volume path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ADRegNetLib.spatial.flow import flow_norm_to_disp_mm
from ADRegNetLib.spatial.transforms import resize_flow, resized_by_slabs, upsampled_disp_mm


@pytest.mark.parametrize("slab_voxels", [1, 500, 1 << 22])
def test_slabwise_upsampling_matches_resize_then_convert(oblique_geometry, slab_voxels):
    fine = oblique_geometry.with_size((23, 19, 17))
    gen = torch.Generator().manual_seed(0)
    flow = torch.randn((1, 3, 7, 9, 11), generator=gen) * 0.05
    expected = flow_norm_to_disp_mm(resize_flow(flow, fine.shape), fine)[0].numpy()
    got = upsampled_disp_mm(flow, fine, slab_voxels=slab_voxels)
    assert got.dtype == np.float32 and got.shape == (3, *fine.shape)
    np.testing.assert_allclose(got, expected, atol=1e-5 * float(np.abs(expected).max()))


def test_one_field_only(oblique_geometry):
    with pytest.raises(ValueError, match="one field"):
        upsampled_disp_mm(torch.zeros((2, 3, 4, 4, 4)), oblique_geometry)


@pytest.mark.parametrize("source, target", [((7, 9, 11), (23, 19, 17)), ((23, 19, 17), (7, 9, 11)),
                                            ((5, 9, 11), (12, 9, 11)), ((1, 6, 4), (3, 10, 9)), ((6, 6, 6), (6, 6, 6))])
@pytest.mark.parametrize("slab_voxels", [1, 1 << 22])
def test_separable_slabs_equal_trilinear_resizing(source, target, slab_voxels):
    """The resize runs along z, then in-plane (it is separable); the result equals one trilinear resize, in either
    direction, with an in-plane size kept, and from a single plane."""
    gen = torch.Generator().manual_seed(1)
    field = torch.randn((1, 3, *source), generator=gen)
    matrix = torch.tensor([[1.0, 0.2, 0.0], [0.0, 2.0, 0.0], [0.3, 0.0, 1.5]])
    expected = torch.einsum("ij,njzyx->nizyx", matrix, F.interpolate(field, size=target, mode="trilinear",
                                                                     align_corners=True))[0].numpy()
    got = resized_by_slabs(field, target, matrix=matrix, slab_voxels=slab_voxels)
    assert got.dtype == np.float32 and got.shape == (3, *target)
    np.testing.assert_allclose(got, expected, atol=2e-6 * float(np.abs(expected).max()))
