"""``spatial.transforms.upsampled_disp_mm``: slab-wise resize + mm conversion equals the whole-volume path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ADRegNetLib.spatial.flow import flow_norm_to_disp_mm
from ADRegNetLib.spatial.transforms import resize_flow, upsampled_disp_mm


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
