"""Motion along an axis the images do not change along (a 2-D image repeated over slices) is invisible to
any similarity: the network's prediction along it is left out unless the similarity needs it
(``engine.prediction.quiet_axes``, ``network_stage``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ADRegNetLib.engine import register
from ADRegNetLib.engine.prediction import quiet_axes
from ADRegNetLib.spatial.filters import gaussian_smooth
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image

TEMPLATE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "brain2d-oasis-trt20-slices" / "T_template0.nii.gz"


def test_quiet_axes_are_those_without_structure_in_every_image():
    g = torch.Generator().manual_seed(0)
    plane = gaussian_smooth(torch.rand(1, 1, 1, 40, 36, generator=g), 1.5)
    stack = plane.expand(1, 1, 12, 40, 36).contiguous()
    noisy = stack + 0.01 * torch.rand(stack.shape, generator=g)  # independent noise on every slice
    assert quiet_axes(stack, noisy) == [2]  # z (channel 2): array axis Z
    volume = gaussian_smooth(torch.rand(1, 1, 30, 40, 36, generator=g), 1.5)
    thick = gaussian_smooth(volume, (3.0, 0.0, 0.0))  # blurred along z, as thick slices: still structure
    assert quiet_axes(volume, volume) == [] and quiet_axes(thick, thick) == []
    assert quiet_axes(stack, volume) == []  # one image with structure along z: motion along it shows


@pytest.mark.skipif(not TEMPLATE.is_file(), reason="../shared/data/brain2d-oasis-trt20-slices is not available")
def test_a_repeated_slice_gets_no_invented_motion_along_the_repeat():
    import SimpleITK as sitk

    template = sitk.ReadImage(str(TEMPLATE))
    plane = sitk.GetArrayFromImage(template).astype(np.float32).reshape(template.GetSize()[1], template.GetSize()[0])
    fixed = np.repeat(plane[None], 20, axis=0)
    geometry = Geometry(fixed.shape[::-1], (*template.GetSpacing()[:2], 3.0))
    moving = np.roll(fixed, 2, axis=2).copy()  # 2 voxels along x on every slice, nothing along z
    result = register(Image(fixed, geometry, "fixed"), Image(moving, geometry, "moving"), quality="fast",
                      device="cpu", compute_inverse=False)
    tissue = fixed > np.percentile(fixed, 50)
    network = result.metrics["network"]
    assert network["kept"] and network["axes_left_out"] == ["z"]
    # the network's start had a uniform 0.6 mm shift along z (nineteenth session's code: mean |dz| 0.597 mm)
    assert np.abs(result.disp_mm[2][tissue]).mean() < 0.05
    assert abs(result.disp_mm[0][tissue].mean() - 2 * geometry.spacing[0]) < 0.1
