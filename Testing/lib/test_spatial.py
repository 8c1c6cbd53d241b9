"""The spatial core (ADRegNetLib.spatial) against SimpleITK and analytic cases."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy import ndimage

from ADRegNetLib.io import field_to_sitk
from ADRegNetLib.spatial import (Geometry, compose_flows, disp_mm_to_flow_norm, flow_norm_to_disp_mm,
                                 identity_grid, integrate_velocity, jacobian_determinant, resize_flow, warp_image,
                                 warp_norm)


def _coords(geometry: Geometry) -> np.ndarray:
    """(3, Z, Y, X) LPS positions of the voxel centres."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij")
    pts = geometry.index_to_physical(np.stack([x.ravel(), y.ravel(), z.ravel()], 1))
    return pts.T.reshape(3, *geometry.shape)


def _smooth_field(geometry, rng, amplitude=2.0, sigma=2.0):
    raw = rng.normal(size=(3,) + geometry.shape)
    field = np.stack([ndimage.gaussian_filter(c, sigma) for c in raw])
    return field * amplitude / np.abs(field).max()


def _to_sitk(array, geometry):
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    geometry.apply_to_sitk(img)
    return img


def _moving_setup(geometry_factory, rng):
    fixed_g = geometry_factory((14, 12, 10))
    # a different, larger moving grid (other spacing, origin and direction) covering the fixed one
    moving_g = Geometry((24, 22, 20), [1.1, 1.0, 1.4], fixed_g.center() - np.array([12.0, 11.0, 13.0]),
                        np.eye(3))
    moving = ndimage.gaussian_filter(rng.random(moving_g.shape), 1.5)
    disp = _smooth_field(fixed_g, rng)
    return fixed_g, moving_g, moving, disp


def _interior_mask(disp, fixed_g, moving_g, margin=1.0):
    """Fixed voxels whose mapped point lies at least ``margin`` voxels inside the moving grid."""
    mapped = (_coords(fixed_g) + disp).reshape(3, -1).T
    idx = moving_g.physical_to_index(mapped)
    ok = np.all((idx >= margin) & (idx <= np.asarray(moving_g.size) - 1 - margin), axis=1)
    return ok.reshape(fixed_g.shape)


def test_warp_image_matches_sitk_resample(geometry_factory, rng):
    fixed_g, moving_g, moving, disp = _moving_setup(geometry_factory, rng)
    tx = sitk.DisplacementFieldTransform(field_to_sitk(disp, fixed_g))
    ref_img = _to_sitk(np.zeros(fixed_g.shape), fixed_g)
    ref = sitk.GetArrayFromImage(sitk.Resample(_to_sitk(moving, moving_g), ref_img, tx, sitk.sitkLinear, 0.0))
    ours = warp_image(torch.as_tensor(moving)[None, None], torch.as_tensor(disp)[None], fixed_g, moving_g)[0, 0]
    inside = _interior_mask(disp, fixed_g, moving_g)
    assert inside.mean() > 0.8
    np.testing.assert_allclose(ours.numpy()[inside], ref[inside], atol=1e-9)


def test_warp_image_nearest_labels_match_sitk(geometry_factory, rng):
    fixed_g, moving_g, _, disp = _moving_setup(geometry_factory, rng)
    labels = ndimage.zoom(rng.integers(0, 5, size=(6, 6, 6)), [s / 6 for s in moving_g.shape], order=0)
    labels = labels[: moving_g.shape[0], : moving_g.shape[1], : moving_g.shape[2]].astype(np.int64)
    tx = sitk.DisplacementFieldTransform(field_to_sitk(disp, fixed_g))
    ref = sitk.GetArrayFromImage(sitk.Resample(_to_sitk(labels.astype(np.int32), moving_g),
                                               _to_sitk(np.zeros(fixed_g.shape), fixed_g), tx,
                                               sitk.sitkNearestNeighbor, 0))
    ours = warp_image(torch.as_tensor(labels)[None, None], torch.as_tensor(disp)[None], fixed_g, moving_g,
                      mode="nearest")[0, 0].numpy()
    assert ours.dtype == np.int64
    inside = _interior_mask(disp, fixed_g, moving_g)
    assert set(np.unique(ours[inside])) <= set(np.unique(labels))
    # ties exactly half-way between voxels may round differently; none are expected here
    assert np.mean(ours[inside] != ref[inside]) < 1e-3


def test_warp_image_identity_resampling_same_point(geometry_factory, rng):
    """disp=None resamples by physical position: a linear function of position is kept exactly."""
    fixed_g = geometry_factory((9, 8, 7))
    moving_g = Geometry((30, 30, 30), [1.0, 1.0, 1.0], fixed_g.center() - 15.0)
    coef = np.array([0.5, -0.2, 0.3])
    moving = np.einsum("i,izyx->zyx", coef, _coords(moving_g))
    out = warp_image(torch.as_tensor(moving)[None, None], None, fixed_g, moving_g)[0, 0].numpy()
    expected = np.einsum("i,izyx->zyx", coef, _coords(fixed_g))
    np.testing.assert_allclose(out, expected, atol=1e-9)


def test_jacobian_matches_sitk_filter_identity_direction(rng):
    g = Geometry((12, 11, 10), [0.8, 1.3, 2.2], [5.0, -3.0, 20.0])
    disp = _smooth_field(g, rng, amplitude=1.5)
    ref_filter = sitk.DisplacementFieldJacobianDeterminantFilter()
    ref = sitk.GetArrayFromImage(ref_filter.Execute(field_to_sitk(disp, g)))
    ours = jacobian_determinant(torch.as_tensor(disp)[None], g)[0].numpy()
    np.testing.assert_allclose(ours[1:-1, 1:-1, 1:-1], ref[1:-1, 1:-1, 1:-1], atol=1e-6)


def test_jacobian_of_affine_field_is_det_a(oblique_geometry):
    a = np.array([[1.1, 0.05, -0.02], [0.03, 0.9, 0.04], [-0.01, 0.02, 1.05]])
    x = _coords(oblique_geometry)
    disp = np.einsum("ij,jzyx->izyx", a - np.eye(3), x) + np.array([1.0, -2.0, 3.0])[:, None, None, None]
    det = jacobian_determinant(torch.as_tensor(disp)[None], oblique_geometry)[0].numpy()
    np.testing.assert_allclose(det, np.linalg.det(a), atol=1e-10)  # everywhere, edges included


def test_jacobian_for_a_loss_equals_the_fast_path_and_has_a_gradient(oblique_geometry, rng):
    """With autograd on (the folding penalty) the determinant is computed out of place: the same values
    as the in-place path outputs use, on an oblique and an axis-aligned grid, and a gradient."""
    from ADRegNetLib.losses.functional import folding_penalty

    for g in (oblique_geometry, Geometry((9, 8, 7), [1.0, 1.5, 2.0], [2.0, 1.0, 0.0])):
        disp = torch.as_tensor(rng.normal(0.0, 2.0, (1, 3, *g.shape)))
        fast = jacobian_determinant(disp, g)
        tracked = disp.clone().requires_grad_(True)
        assert torch.allclose(jacobian_determinant(tracked, g), fast, atol=1e-12)
        folding_penalty(tracked, g).backward()
        assert tracked.grad is not None and float(tracked.grad.abs().sum()) > 0


def test_integrate_velocity_zero_and_constant():
    zero = torch.zeros(1, 3, 8, 9, 10, dtype=torch.float64)
    assert torch.equal(integrate_velocity(zero), zero)
    const = torch.zeros_like(zero)
    const[:, 0], const[:, 1], const[:, 2] = 0.05, -0.03, 0.02
    np.testing.assert_allclose(integrate_velocity(const, steps=7).numpy(), const.numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        integrate_velocity(zero, steps=-1)


def test_integrate_velocity_inverse_consistency(rng):
    g = Geometry((20, 20, 20))
    v_mm = _smooth_field(g, rng, amplitude=1.5, sigma=3.0)
    v = disp_mm_to_flow_norm(torch.as_tensor(v_mm)[None], g)
    fwd = integrate_velocity(v, steps=7)
    bwd = integrate_velocity(-v, steps=7)
    residual = flow_norm_to_disp_mm(compose_flows(fwd, bwd), g)[0].numpy()
    inner = (slice(4, -4),) * 3
    assert np.abs(flow_norm_to_disp_mm(fwd, g)[0].numpy()).max() > 0.5
    assert np.abs(residual[(slice(None),) + inner]).max() < 0.05


def _affine_flow(m, b, shape):
    """Normalised flow of x -> M x + b on a grid (flow = (M - I) x + b)."""
    grid = identity_grid(shape, torch.zeros(1, dtype=torch.float64))[0]  # (Z, Y, X, 3)
    mapped = grid @ torch.as_tensor(m).T + torch.as_tensor(b)
    return (mapped - grid).permute(3, 0, 1, 2)[None], grid


def test_compose_flows_matches_affine_composition():
    shape = (9, 10, 11)
    m1 = np.array([[0.9, 0.02, 0.0], [0.01, 0.92, 0.03], [0.0, -0.02, 0.9]])
    m2 = np.array([[0.95, -0.03, 0.01], [0.02, 0.93, 0.0], [0.01, 0.0, 0.94]])
    b1, b2 = np.array([0.02, -0.03, 0.01]), np.array([-0.01, 0.02, 0.03])
    first, grid = _affine_flow(m1, b1, shape)
    second, _ = _affine_flow(m2, b2, shape)
    composed = compose_flows(first, second)[0].permute(1, 2, 3, 0).numpy()
    x = grid.numpy()
    expected = (x @ m1.T + b1) @ m2.T + b2 - x
    np.testing.assert_allclose(composed, expected, atol=1e-12)  # x + first(x) stays inside the grid


def test_resize_flow_exact_for_linear_fields():
    m = np.array([[0.1, 0.2, -0.1], [0.05, -0.1, 0.2], [0.3, 0.0, 0.1]])
    b = np.array([0.1, -0.2, 0.05])
    grid_small = identity_grid((5, 6, 7), torch.zeros(1, dtype=torch.float64))[0]
    grid_big = identity_grid((9, 13, 8), torch.zeros(1, dtype=torch.float64))[0]
    lin = lambda g: (g @ torch.as_tensor(m).T + torch.as_tensor(b)).permute(3, 0, 1, 2)[None]  # noqa: E731
    out = resize_flow(lin(grid_small), (9, 13, 8))
    np.testing.assert_allclose(out.numpy(), lin(grid_big).numpy(), atol=1e-12)
    same = lin(grid_small)
    assert resize_flow(same, (5, 6, 7)) is same


def test_mm_norm_round_trip_and_meaning(oblique_geometry, rng):
    disp = torch.as_tensor(rng.normal(size=(1, 3) + oblique_geometry.shape))
    flow = disp_mm_to_flow_norm(disp, oblique_geometry)
    np.testing.assert_allclose(flow_norm_to_disp_mm(flow, oblique_geometry).numpy(), disp.numpy(), atol=1e-12)
    # meaning: moving a voxel centre by disp_mm moves its normalised coordinate by flow_norm
    a, b = oblique_geometry.physical_to_normalized_affine()
    x = _coords(oblique_geometry).reshape(3, -1).T
    d = disp[0].numpy().reshape(3, -1).T
    np.testing.assert_allclose((x + d) @ a.T - x @ a.T, flow[0].numpy().reshape(3, -1).T, atol=1e-12)
    # same-grid warps agree in both units
    img = torch.as_tensor(rng.random((1, 1) + oblique_geometry.shape))
    small = disp * 0.3
    np.testing.assert_allclose(
        warp_norm(img, disp_mm_to_flow_norm(small, oblique_geometry), padding_mode="zeros").numpy(),
        warp_image(img, small, oblique_geometry).numpy(), atol=1e-10)
    with pytest.raises(ValueError, match="does not match grid shape"):
        disp_mm_to_flow_norm(disp[..., :-1], oblique_geometry)


def test_warp_norm_gradcheck():
    torch.manual_seed(0)
    img = torch.rand(1, 1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    flow = (0.1 * torch.randn(1, 3, 4, 5, 6, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda i, f: warp_norm(i, f), (img, flow), eps=1e-6, atol=1e-5)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(N, 3, Z, Y, X\)"):
        warp_norm(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4))
    with pytest.raises(ValueError, match="must match the flow's grid"):
        warp_norm(torch.zeros(1, 1, 4, 4, 5), torch.zeros(1, 3, 4, 4, 4))
    with pytest.raises(ValueError, match="interpolation mode"):
        warp_norm(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 3, 4, 4, 4), mode="cubic")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_warp_and_jacobian_on_cuda(geometry_factory, rng):
    fixed_g, moving_g, moving, disp = _moving_setup(geometry_factory, rng)
    mov = torch.as_tensor(moving)[None, None]
    d = torch.as_tensor(disp)[None]
    cpu = warp_image(mov, d, fixed_g, moving_g)
    gpu = warp_image(mov.cuda(), d.cuda(), fixed_g, moving_g)
    assert gpu.device.type == "cuda"
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), atol=1e-9)
    np.testing.assert_allclose(jacobian_determinant(d.cuda(), fixed_g).cpu().numpy(),
                               jacobian_determinant(d, fixed_g).numpy(), atol=1e-9)
    v = disp_mm_to_flow_norm(d, fixed_g) * 0.1
    np.testing.assert_allclose(integrate_velocity(v.cuda()).cpu().numpy(), integrate_velocity(v).numpy(), atol=1e-9)


# above the split threshold; 80: slabs that are views of the grid; 81, 9: overlapping slabs
@pytest.mark.parametrize("shape", [(80, 37, 29), (81, 37, 29), (9, 90, 90)])
@pytest.mark.parametrize("channels", [1, 3])
def test_grid_sample_on_all_threads_equals_torch_bit_for_bit_with_gradients(shape, channels):
    from ADRegNetLib.spatial.warp import grid_sample

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the split runs with two threads or more; 2 divides the depth 80 (views)
    try:
        g = torch.Generator().manual_seed(0)
        volume = torch.rand(1, channels, *shape, generator=g, dtype=torch.float64, requires_grad=True)
        grid = (torch.rand(1, *shape, 3, generator=g, dtype=torch.float64) * 2.4 - 1.2).requires_grad_(True)
        volume_ref, grid_ref = volume.detach().clone().requires_grad_(True), grid.detach().clone().requires_grad_(True)
        ours = grid_sample(volume, grid)
        ref = F.grid_sample(volume_ref, grid_ref, mode="bilinear", padding_mode="border", align_corners=True)
        assert torch.equal(ours, ref)
        weights = torch.rand(ours.shape, generator=g, dtype=torch.float64)
        (ours * weights).sum().backward()
        (ref * weights).sum().backward()
        torch.testing.assert_close(volume.grad, volume_ref.grad)
        torch.testing.assert_close(grid.grad, grid_ref.grad)
    finally:
        torch.set_num_threads(threads)


def test_vector_length_is_the_norm_over_the_components():
    from ADRegNetLib.spatial.flow import vector_length

    field = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    assert torch.allclose(vector_length(field), field.norm(dim=1), atol=1e-12)
    assert torch.allclose(vector_length(field[0], dim=0), field[0].norm(dim=0), atol=1e-12)
    with pytest.raises(ValueError, match="3 components along dim 1"):
        vector_length(torch.zeros(1, 2, 4, 4, 4))
