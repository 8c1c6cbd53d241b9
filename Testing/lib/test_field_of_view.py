"""A moving image that ends inside the fixed one (a shorter scan): the similarity is left out where the
moving image has no data (engine/stages.py ``moving_field_of_view``), so the padding beyond its edge
does not drag the field inside the overlap.
"""
from __future__ import annotations


import numpy as np
import pytest

from ADRegNetLib.engine import pipeline, register
from ADRegNetLib.engine.settings import FIELD_OF_VIEW_MARGIN_VOXELS
from ADRegNetLib.engine.stages import moving_field_of_view as _from_inside
from ADRegNetLib.spatial.affine import AffineMap
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.warp import resample
from brain_helpers import needs_t1, t1_array, t1_image



def moving_field_of_view(grid: Geometry, moving_geometry: Geometry, affine: AffineMap, fixed=None):
    """The engine's way: the inside map of the moving image resampled onto ``grid``, then the check."""
    ones = Image(np.ones(moving_geometry.shape, dtype=np.float32), moving_geometry, "moving")
    return _from_inside(resample(ones, grid, affine=affine, return_inside=True)[1], fixed)


def test_field_of_view_is_none_when_the_moving_image_covers_the_grid():
    grid = Geometry((20, 24, 28), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    assert moving_field_of_view(grid, grid, AffineMap.identity()) is None
    larger = Geometry((30, 34, 38), (2.0, 2.0, 2.0), (-10.0, -10.0, -10.0))
    assert moving_field_of_view(grid, larger, AffineMap.identity()) is None


def test_field_of_view_ends_a_margin_before_the_moving_edge_and_follows_the_alignment():
    grid = Geometry((20, 24, 28), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    upper = Geometry((20, 24, 14), (2.0, 2.0, 2.0), (0.0, 0.0, 28.0))  # slices 14-27 of the grid
    fov = moving_field_of_view(grid, upper, AffineMap.identity())
    m = FIELD_OF_VIEW_MARGIN_VOXELS
    assert fov.shape == grid.shape
    assert not fov[:14 + m].any() and fov[14 + m:].all()  # the grid's own edges are not eroded
    # fixed x -> moving x + 8 mm: slices 10-23 land inside the moving image, 24-27 beyond its far end
    shifted = moving_field_of_view(grid, upper, AffineMap(np.eye(3), np.array([0.0, 0.0, 8.0])))
    assert not shifted[:10 + m].any() and shifted[10 + m:24 - m].all() and not shifted[24 - m:].any()
    # where the fixed image shows nothing beyond the moving edge, padding matches it: nothing left out
    fixed = np.zeros(grid.shape, dtype=np.float32)
    fixed[17:] = 1.0
    fixed[:13] = np.random.default_rng(0).normal(0.0, 0.02, fixed[:13].shape)  # background noise is not tissue
    assert moving_field_of_view(grid, upper, AffineMap.identity(), fixed) is None
    fixed[10:13] = 1.0  # 3 of 14 tissue slices beyond the moving image: more than 1 %
    assert np.array_equal(moving_field_of_view(grid, upper, AffineMap.identity(), fixed), fov)


@needs_t1
def test_a_shorter_moving_scan_is_registered_inside_the_overlap(monkeypatch):
    """The real T1 at 4 mm against itself shifted 4 mm along x and cut to its upper 60 % of slices."""
    fixed = t1_image(4, "fixed")
    t1 = fixed.array
    k0 = int(0.4 * t1.shape[0])
    moving = Image(np.ascontiguousarray(np.roll(t1, 1, axis=2)[k0:]),
                   Geometry((t1.shape[2], t1.shape[1], t1.shape[0] - k0), (4.0, 4.0, 4.0), (0.0, 0.0, 4.0 * k0)), "moving")
    slices = np.arange(t1.shape[0])[:, None, None]
    overlap = (t1 > np.percentile(t1, 60)) & (slices >= k0 + FIELD_OF_VIEW_MARGIN_VOXELS)
    kw = dict(quality="fast", use_network=False, device="cpu", compute_inverse=False, prealignment="none")

    def error_mm(disp):  # the truth: fixed x -> moving x + (4, 0, 0) mm
        return float(np.sqrt((disp[0] - 4.0) ** 2 + disp[1] ** 2 + disp[2] ** 2)[overlap].mean())

    with_fov = error_mm(register(fixed, moving, **kw).disp_mm)
    monkeypatch.setattr(pipeline, "moving_field_of_view", lambda *args: None)  # as before: padding counted
    without = error_mm(register(fixed, moving, **kw).disp_mm)
    assert with_fov < 0.35, with_fov  # measured 0.20 mm
    assert without > 2 * with_fov, (without, with_fov)  # measured 0.99 mm


@needs_t1
def test_a_fixed_mask_where_the_moving_scan_has_no_data_is_refused():
    from ADRegNetLib.engine.api import RegistrationError

    vol = t1_array()[::4, ::4, ::4].copy()
    geometry = Geometry(vol.shape[::-1], (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    k0 = vol.shape[0] // 2
    moving = Image(vol[k0:].copy(), Geometry((vol.shape[2], vol.shape[1], vol.shape[0] - k0), (4.0, 4.0, 4.0),
                                             (0.0, 0.0, 4.0 * k0)), "upper half")
    mask = np.zeros(vol.shape, dtype=np.uint8)
    mask[: k0 - 4] = 1  # the lower half only, beyond the moving image
    with pytest.raises(RegistrationError, match="the fixed mask lies where the moving image has no data"):
        register(Image(vol, geometry, "fixed"), moving, fixed_mask=Image(mask, geometry, "mask"), quality="fast",
                 use_network=False, device="cpu", compute_inverse=False, prealignment="none")
