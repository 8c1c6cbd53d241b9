"""Inverse displacement fields (ADRegNetLib.spatial.inverse): accuracy, grids, SimpleITK, errors."""
from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from geometry_helpers import rotation_matrix as rotation
from ADRegNetLib.io import field_to_sitk, sitk_to_field, transform_points
from ADRegNetLib.spatial import (Geometry, disp_mm_to_flow_norm, flow_norm_to_disp_mm, integrate_velocity,
                                 jacobian_determinant)
from ADRegNetLib.spatial.filters import gaussian_smooth
from ADRegNetLib.spatial.inverse import inverse_consistency_error, invert_displacement


def smooth_diffeomorphism(geometry: Geometry, mean_mm: float, seed: int, control_mm: float = 40.0,
                          mask: np.ndarray | None = None) -> np.ndarray:
    """(3, Z, Y, X) LPS mm field exp(v) of a random smooth velocity, scaled to ``mean_mm`` mean |u|.

    The velocity is Gaussian noise at ``control_mm`` spacing, smoothed, on a grid of about 6 mm;
    it is integrated there (scaling and squaring) and the displacement upsampled trilinearly.
    """
    coarse = geometry.with_spacing(6.0)
    gen = torch.Generator().manual_seed(seed)
    nodes = [max(int(np.ceil(e / control_mm)) + 1, 2) for e in (geometry.spacing * (np.asarray(geometry.size) - 1))[::-1]]
    noise = torch.randn((1, 3, *nodes), generator=gen, dtype=torch.float32)
    velocity = F.interpolate(noise, size=coarse.shape, mode="trilinear", align_corners=True)
    velocity = gaussian_smooth(velocity, [control_mm / 4 / s for s in coarse.spacing[::-1]])
    select = None if mask is None else torch.as_tensor(mask)

    def field(scale: float) -> torch.Tensor:
        flow = integrate_velocity(disp_mm_to_flow_norm(velocity * scale, coarse))
        return F.interpolate(flow, size=geometry.shape, mode="trilinear", align_corners=True)

    scale = 1.0
    for _ in range(3):
        u = flow_norm_to_disp_mm(field(scale), geometry)[0]
        mag = u.norm(dim=0)
        scale *= mean_mm / float(mag.mean() if select is None else mag[select].mean())
    return flow_norm_to_disp_mm(field(scale), geometry)[0].numpy()


def ellipsoid(geometry: Geometry, fraction: float = 0.8) -> np.ndarray:
    """(Z, Y, X) bool ellipsoid filling ``fraction`` of each axis (a brain-like foreground)."""
    axes = [np.linspace(-1, 1, n) / fraction for n in geometry.shape]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    return zz ** 2 + yy ** 2 + xx ** 2 <= 1.0


BRAIN_GRID = Geometry((80, 96, 112), [2.0, 2.0, 2.0], [-80.0, -110.0, -60.0])


@pytest.fixture(scope="module")
def brain_like():
    """The brain benchmark's setting: 2 mm grid, smooth diffeomorphism, 4 mm mean displacement."""
    mask = ellipsoid(BRAIN_GRID)
    u = smooth_diffeomorphism(BRAIN_GRID, 4.0, seed=7, mask=mask)
    start = time.perf_counter()
    v = invert_displacement(u, BRAIN_GRID, BRAIN_GRID)
    return u, mask, v, time.perf_counter() - start


def test_brain_like_field_inverse_consistency_within_a_tenth_of_a_mm(brain_like):
    u, mask, v, seconds = brain_like
    assert np.linalg.norm(u, axis=0)[mask].mean() == pytest.approx(4.0, rel=0.05)
    det = jacobian_determinant(torch.from_numpy(u)[None], BRAIN_GRID)
    assert float(det.min()) > 0.2  # a real deformation (not a near-identity), still diffeomorphic
    mean_mm, max_mm = inverse_consistency_error(u, BRAIN_GRID, v, BRAIN_GRID, mask=mask)
    print(f"brain-like 80x96x112 inverse: {seconds:.2f} s, IC error mean {mean_mm:.4f} mm max {max_mm:.4f} mm")
    assert v.shape == (3, *BRAIN_GRID.shape) and v.dtype == np.float32
    assert mean_mm <= 0.1
    assert max_mm <= 1.0


def test_moving_landmarks_mapped_back_through_the_inverse(brain_like):
    u, mask, v, _ = brain_like
    rng = np.random.default_rng(0)
    idx = np.argwhere(mask)[rng.choice(int(mask.sum()), 200, replace=False)][:, ::-1] + rng.uniform(-0.5, 0.5, (200, 3))
    fixed_pts = BRAIN_GRID.index_to_physical(idx)
    moving_pts = transform_points(u, BRAIN_GRID, fixed_pts)
    back = transform_points(v, BRAIN_GRID, moving_pts)
    err = np.linalg.norm(back - fixed_pts, axis=1)
    assert np.linalg.norm(moving_pts - fixed_pts, axis=1).mean() > 2.0
    assert err.mean() < 0.05 and err.max() < 0.5


def test_inverse_on_an_oblique_moving_grid_of_other_spacing():
    fixed = Geometry((48, 56, 40), [2.0, 2.0, 2.5], [-50.0, -60.0, -45.0])
    u = smooth_diffeomorphism(fixed, 4.0, seed=3)
    centre = fixed.center()
    direction = rotation([12.0, -20.0, 25.0])
    size = np.array([36, 44, 52])
    spacing = np.array([2.6, 1.9, 1.5])
    origin = centre - direction @ (spacing * (size - 1) / 2)
    moving = Geometry(tuple(int(s) for s in size), spacing, origin, direction)
    v = invert_displacement(u, fixed, moving)
    assert v.shape == (3, *moving.shape)
    mean_mm, max_mm = inverse_consistency_error(u, fixed, v, moving, mask=ellipsoid(moving, 0.7))
    assert mean_mm <= 0.1, (mean_mm, max_mm)
    # the definition itself, checked at random moving points with the ITK-convention point mapper
    rng = np.random.default_rng(1)
    y = moving.index_to_physical(rng.uniform(5, 30, (100, 3)))
    x = transform_points(v, moving, y)
    assert np.abs(transform_points(u, fixed, x) - y).max() < 0.2


def test_translation_inverts_exactly_and_identity_stays_zero():
    g = Geometry((20, 18, 16), [1.5, 1.0, 2.0], [3.0, -4.0, 5.0])
    shift = np.array([2.5, -1.25, 3.0], dtype=np.float32)
    u = np.broadcast_to(shift[:, None, None, None], (3, *g.shape)).copy()
    v = invert_displacement(u, g, g)
    assert np.allclose(v, -shift[:, None, None, None], atol=1e-5)
    assert np.array_equal(invert_displacement(np.zeros((3, *g.shape), np.float32), g, g), np.zeros((3, *g.shape)))


def test_matches_simpleitk_invert_displacement_field_inside():
    g = Geometry((40, 40, 40), [2.0, 2.0, 2.0], [-40.0, -40.0, -40.0])
    u = smooth_diffeomorphism(g, 4.0, seed=11)
    ours = invert_displacement(u, g, g)
    theirs, _ = sitk_to_field(sitk.InvertDisplacementField(
        field_to_sitk(u, g), maximumNumberOfIterations=50, maxErrorToleranceThreshold=0.01,
        meanErrorToleranceThreshold=0.0001, enforceBoundaryCondition=False))
    inner = (slice(None),) + (slice(8, -8),) * 3
    diff = np.linalg.norm(ours[inner] - theirs[inner], axis=0)
    assert diff.max() < 0.01, diff.max()


def test_strong_expansion_needs_and_gets_the_newton_phase():
    g = Geometry((48, 48, 48), [2.0, 2.0, 2.0], [-48.0, -48.0, -48.0])
    u = smooth_diffeomorphism(g, 12.0, seed=5)
    det = jacobian_determinant(torch.from_numpy(u)[None], g)
    assert float(det.min()) > 0.1 and float(det.max()) > 3.0  # strong expansion, still diffeomorphic
    mask = ellipsoid(g, 0.6)
    zz, yy, xx = np.nonzero(mask)
    y = g.index_to_physical(np.stack([xx, yy, zz], 1).astype(float))

    def residual(v: np.ndarray) -> np.ndarray:
        """|u(y + v(y)) + y + v(y) - y| at the masked moving voxels, mm (ITK-convention point mapping)."""
        w = v[:, zz, yy, xx].T
        return np.linalg.norm(transform_points(u, g, y + w) - y, axis=1)

    plain = residual(invert_displacement(u, g, g, newton_iterations=0))
    full_v = invert_displacement(u, g, g)
    full = residual(full_v)
    assert np.sum(plain > 0.1) > 100  # the fixed-point iteration alone does not converge everywhere
    assert full.max() < 0.01
    assert inverse_consistency_error(u, g, full_v, g, mask=mask)[0] <= 0.1


def test_torch_input_gives_a_tensor_on_its_device():
    g = Geometry((12, 10, 8))
    u = torch.zeros(1, 3, *g.shape)
    u[:, 0] = 1.0
    v = invert_displacement(u, g, g)
    assert isinstance(v, torch.Tensor) and v.shape == (3, *g.shape)
    assert torch.allclose(v[0], torch.full(g.shape, -1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    g = Geometry((32, 32, 32), [2.0] * 3)
    u = smooth_diffeomorphism(g, 4.0, seed=2)
    cpu = invert_displacement(u, g, g)
    gpu = invert_displacement(torch.from_numpy(u).cuda(), g, g)
    assert gpu.is_cuda
    assert np.abs(gpu.cpu().numpy() - cpu).max() < 1e-3


@pytest.mark.parametrize("shape, message", [
    ((3, 5, 5), r"\(3, Z, Y, X\)"),
    ((2, 6, 6, 6), r"\(3, Z, Y, X\)"),
    ((3, 6, 6, 5), r"does not match the geometry \(6, 6, 6\)"),
])
def test_bad_field_shapes_are_named(shape, message):
    g = Geometry((6, 6, 6))
    with pytest.raises(ValueError, match=message):
        invert_displacement(np.zeros(shape, np.float32), g, g)


def test_nan_field_and_bad_iterations_are_refused():
    g = Geometry((6, 6, 6))
    u = np.zeros((3, 6, 6, 6), np.float32)
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        invert_displacement(u, g, g, iterations=0)
    u[0, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        invert_displacement(u, g, g)


def test_consistency_error_sees_a_wrong_inverse_and_refuses_an_empty_mask():
    g = Geometry((16, 16, 16), [2.0] * 3)
    u = smooth_diffeomorphism(g, 3.0, seed=4)
    good = invert_displacement(u, g, g)
    assert inverse_consistency_error(u, g, good, g)[0] < 0.05
    # -u is the usual first guess; it is visibly not the inverse of a 3 mm field
    assert inverse_consistency_error(u, g, -u, g)[0] > 0.1
    with pytest.raises(ValueError, match="mask is empty"):
        inverse_consistency_error(u, g, good, g, mask=np.zeros(g.shape, bool))
    with pytest.raises(ValueError, match=r"mask must be \(Zm, Ym, Xm\)"):
        inverse_consistency_error(u, g, good, g, mask=np.ones((4, 4, 4), bool))


def test_consistency_on_every_second_voxel_agrees_with_every_voxel(brain_like):
    """``stride=2`` measures an eighth of the points of both compositions: on a smooth field the mean
    is the same to a few thousandths of a mm and the largest error no larger; a wrong inverse is still
    seen, and a stride that is not a whole number >= 1 is refused."""
    u, mask, v, _ = brain_like
    full = inverse_consistency_error(u, BRAIN_GRID, v, BRAIN_GRID, mask=mask)
    every2 = inverse_consistency_error(u, BRAIN_GRID, v, BRAIN_GRID, mask=mask, stride=2)
    assert every2[0] == pytest.approx(full[0], abs=0.003) and every2[1] <= full[1] + 1e-6
    assert inverse_consistency_error(u, BRAIN_GRID, -u, BRAIN_GRID, mask=mask, stride=2)[0] > 0.5
    odd = Geometry((15, 13, 11), [2.0] * 3, [1.0, 2.0, 3.0])  # sizes that stride 2 does not divide
    w = smooth_diffeomorphism(odd, 2.0, seed=5)
    assert inverse_consistency_error(w, odd, invert_displacement(w, odd, odd), odd, stride=2)[0] < 0.05
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="stride must be a whole number >= 1"):
            inverse_consistency_error(u, BRAIN_GRID, v, BRAIN_GRID, stride=bad)


def test_slabs_give_the_same_inverse():
    g = Geometry((20, 18, 16), [2.0] * 3, [1.0, 2.0, 3.0])
    u = smooth_diffeomorphism(g, 3.0, seed=8)
    whole = invert_displacement(u, g, g)
    slabs = invert_displacement(u, g, g, max_block_voxels=20 * 18 * 3)  # 3 slices per slab, the last one 1
    assert np.abs(whole - slabs).max() < 2e-3  # both converged to the 1e-3 mm tolerance
