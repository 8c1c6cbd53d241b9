"""Rigid regions through register(): a rigidly moving block inside a deforming body (issue 15)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ADRegNetLib.engine import register
from ADRegNetLib.spatial.filters import gaussian_smooth
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.inverse import invert_displacement
from ADRegNetLib.spatial.rigid import rigidify
from ADRegNetLib.spatial.transform import Transform


@pytest.mark.slow
def test_block_moves_rigidly_inside_a_deforming_body():
    rng = np.random.default_rng(0)
    g = Geometry((48, 48, 40), (2.0, 2.0, 2.0), (0, 0, 0))
    tex = gaussian_smooth(torch.from_numpy(rng.normal(size=g.shape).astype(np.float32))[None, None], 1.5)[0, 0].numpy()
    z, y, x = np.meshgrid(*(np.arange(n) for n in g.shape), indexing="ij")
    body = ((x - 24) ** 2 / 20 ** 2 + (y - 24) ** 2 / 20 ** 2 + (z - 20) ** 2 / 17 ** 2) < 1
    fixed = Image(np.where(body, 100 + 40 * tex / tex.std(), 0).astype(np.float32), g, "fixed")
    labels = np.zeros(g.shape, np.int64)
    labels[14:26, 18:30, 18:30] = 1
    u = np.stack([2.5 * np.sin(y / 9.0 + c) * np.cos(x / 11.0) * np.cos(z / 8.0 + c) for c in (0.0, 1.0, 2.0)])
    u = rigidify(u.astype(np.float32), g, labels, blend_mm=6.0)  # the truth: rigid inside, smooth outside
    moving = Transform(g, invert_displacement(u, g, g)).warp(fixed, default=0.0)
    result = register(fixed, moving, rigid_regions=Image(labels, g), quality="fast", use_network=False, device="cpu",
                      prealignment="none", compute_inverse=False)
    assert result.jacobian.array[labels == 1].std() <= 0.01
    corners = g.index_to_physical(np.array([[18, 18, 14], [29, 29, 25], [18, 29, 25], [29, 18, 14]], float))
    err = np.linalg.norm(result.transform.map_points(corners) - Transform(g, u).map_points(corners), axis=1)
    assert err.max() <= 0.5, err
