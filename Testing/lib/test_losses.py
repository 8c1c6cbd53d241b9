"""Tests of ADRegNetLib.losses: analytic values, invariances, references, gradcheck, shape errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from ADRegNetLib.losses import functional as LF
from ADRegNetLib.losses import modules as LM
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.jacobian import jacobian_determinant


def _smooth_image(shape=(16, 18, 20), seed=0, dtype=torch.float32) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random(shape), 1.5)
    img = (img - img.min()) / (img.max() - img.min())
    return torch.as_tensor(img, dtype=dtype)[None, None]


def _physical_coords(geometry: Geometry) -> np.ndarray:
    """(3, Z, Y, X) LPS coordinates of every voxel centre."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij")
    idx = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    return geometry.index_to_physical(idx).T.reshape(3, *geometry.shape)


def _rotation(angle_deg: float) -> np.ndarray:
    t = np.deg2rad(angle_deg)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])


# ------------------------------------------------------------------------------------ box filter
def test_box_filter_mean_matches_scipy_in_the_interior():
    x = torch.rand(1, 1, 12, 13, 14, dtype=torch.float64)
    out = LF.box_filter(x, 5).numpy()[0, 0]
    ref = ndimage.uniform_filter(x.numpy()[0, 0], size=5, mode="constant")
    np.testing.assert_allclose(out[2:-2, 2:-2, 2:-2], ref[2:-2, 2:-2, 2:-2], atol=1e-12)


def test_box_filter_sum_is_zero_padded_sum_and_mean_ignores_outside():
    x = torch.rand(1, 1, 7, 8, 9, dtype=torch.float64)
    sums = LF.box_filter(x, (3, 5, 3), mode="sum").numpy()[0, 0]
    ref = ndimage.correlate(x.numpy()[0, 0], np.ones((3, 5, 3)), mode="constant")
    np.testing.assert_allclose(sums, ref, atol=1e-12)
    # Mean at the corner is over the 2 x 3 x 2 voxels inside the volume.
    mean = LF.box_filter(x, (3, 5, 3)).numpy()[0, 0]
    assert mean[0, 0, 0] == pytest.approx(x.numpy()[0, 0, :2, :3, :2].mean())


def test_box_filter_equals_torch_average_pooling_with_gradients_and_windows_wider_than_the_volume():
    x = torch.rand(2, 3, 6, 9, 4, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    ours = LF.box_filter(x, (5, 3, 9))
    ref = x_ref
    for axis, w in enumerate((5, 3, 9)):  # avg_pool3d needs padding <= kernel / 2: pad by hand for w > 2 n
        pad = [0] * 6
        pad[4 - 2 * axis] = pad[5 - 2 * axis] = w // 2
        kernel = [1, 1, 1]
        kernel[axis] = w
        ones = F.pad(torch.ones_like(ref), pad)
        ref = F.avg_pool3d(F.pad(ref, pad), tuple(kernel), stride=1) / F.avg_pool3d(ones, tuple(kernel), stride=1)
    torch.testing.assert_close(ours, ref)
    weights = torch.rand_like(ours)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)


@pytest.mark.parametrize("window", [4, 0, (3, 3)])
def test_box_filter_rejects_bad_window(window):
    with pytest.raises(ValueError, match="window must be odd"):
        LF.box_filter(torch.rand(1, 1, 5, 5, 5), window)


# ------------------------------------------------------------------------------------ local NCC
def test_local_ncc_of_image_with_itself_is_perfect_and_affine_invariant():
    a = _smooth_image()
    perfect = float(LF.local_ncc(a, a, 5))
    assert perfect == pytest.approx(0.0, abs=5e-3)
    assert float(LF.local_ncc(a, a, 5, eps=1e-8)) == pytest.approx(0.0, abs=1e-5)
    for scale, shift in [(2.0, 1.0), (-3.0, 5.0), (0.5, -0.2)]:
        assert float(LF.local_ncc(a, scale * a + shift, 5)) == pytest.approx(perfect, abs=1e-5)
    b = _smooth_image(seed=1)
    assert float(LF.local_ncc(a, b, 5)) > 0.3


def test_local_ncc_matches_brute_force_reference():
    rng = np.random.default_rng(3)
    f = rng.random((6, 7, 8))
    w = rng.random((6, 7, 8))
    win, eps = 3, 1e-4
    cc2 = np.zeros_like(f)
    for z in range(6):
        for y in range(7):
            for x in range(8):
                sl = tuple(slice(max(c - 1, 0), c + 2) for c in (z, y, x))
                pf, pw = f[sl].ravel(), w[sl].ravel()
                cov = np.mean(pf * pw) - pf.mean() * pw.mean()
                cc2[z, y, x] = cov ** 2 / (pf.var() * pw.var() + eps * f.var(ddof=1) * w.var(ddof=1))
    expected = 1 - cc2.mean()
    got = LF.local_ncc(torch.as_tensor(f)[None, None], torch.as_tensor(w)[None, None], win, eps=eps)
    assert float(got) == pytest.approx(expected, rel=1e-9)


def test_local_ncc_mask_restricts_the_mean():
    a = _smooth_image()
    b = a.clone()
    b[..., 10:] = torch.rand_like(b[..., 10:])
    mask = torch.zeros_like(a, dtype=torch.bool)
    mask[..., 2:6] = True
    assert float(LF.local_ncc(a, b, 3, mask=mask, eps=1e-8)) == pytest.approx(0.0, abs=1e-4)
    assert float(LF.local_ncc(a, b, 3)) > 0.1
    with pytest.raises(ValueError, match="mask is empty"):
        LF.local_ncc(a, b, 3, mask=torch.zeros_like(mask))


# ------------------------------------------------------------------------------------------ MSE
def test_mse_known_value_and_mask():
    a = torch.zeros(1, 1, 2, 2, 2)
    b = torch.zeros(1, 1, 2, 2, 2)
    b[0, 0, 0, 0, 0] = 2.0
    assert float(LF.mse(a, b)) == pytest.approx(4.0 / 8)
    mask = torch.zeros_like(a)
    mask[0, 0, 0, 0, :] = 1
    assert float(LF.mse(a, b, mask)) == pytest.approx(2.0)
    assert float(LM.MSELoss()(a, b)) == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------- MIND
def test_mind_ssc_shape_range_and_affine_invariance():
    a = _smooth_image()
    feat = LF.mind_ssc(a)
    assert feat.shape == (1, 12, *a.shape[2:])
    assert float(feat.min()) > 0 and float(feat.max()) <= 1 + 1e-6
    np.testing.assert_allclose(feat.max(dim=1).values.numpy(), 1.0, atol=1e-6)
    feat2 = LF.mind_ssc(2 * a + 1)
    assert float((feat - feat2).abs().max()) < 1e-3
    assert float(LF.mind_loss(feat, feat2)) < 1e-6


def test_mind_ssc_is_nearly_unchanged_by_a_monotonic_intensity_change_but_sees_motion():
    a = _smooth_image((20, 20, 20))
    same_anatomy = LF.mind_loss(LF.mind_ssc(a), LF.mind_ssc(torch.sqrt(a) * 3 - 1))
    moved = LF.mind_loss(LF.mind_ssc(a), LF.mind_ssc(torch.roll(a, 3, dims=4)))
    assert float(same_anatomy) < 0.2 * float(moved)
    assert float(LM.MINDSSCLoss()(a, a)) == 0.0


def test_mind_ssc_has_12_pairs_at_sqrt2_distance():
    assert len(LF._SSC_PAIRS) == 12
    for i, j in LF._SSC_PAIRS:
        d = np.subtract(LF._SIX[i], LF._SIX[j])
        assert int((d ** 2).sum()) == 2


def test_mind_rejects_multichannel_input():
    with pytest.raises(ValueError, match=r"\(N, 1, Z, Y, X\)"):
        LF.mind_ssc(torch.rand(1, 2, 8, 8, 8))


# ------------------------------------------------------------------------------------------ NGF
def test_ngf_self_and_inverted_contrast_are_perfect():
    a = _smooth_image()
    assert float(LF.ngf(a, a, eps=1e-4)) < 0.05
    assert float(LF.ngf(a, 1 - a, eps=1e-4)) < 0.05
    assert float(LM.NGFLoss(eps=1e-4)(a, _smooth_image(seed=5))) > 0.3


# ------------------------------------------------------------------------------ regularisers
def test_diffusion_constant_field_is_zero():
    disp = torch.ones(1, 3, 6, 7, 8) * torch.tensor([1.0, -2.0, 3.0]).view(1, 3, 1, 1, 1)
    assert float(LF.diffusion(disp, (1.0, 2.0, 0.5))) == 0.0


def test_diffusion_of_linear_field_is_the_frobenius_norm_of_its_matrix():
    geometry = Geometry((8, 7, 6), spacing=(1.5, 0.7, 2.0), origin=(10, -4, 3), direction=_rotation(30))
    a = np.array([[0.1, -0.2, 0.05], [0.0, 0.3, 0.1], [0.2, 0.0, -0.1]])
    coords = _physical_coords(geometry)
    disp = torch.as_tensor(np.einsum("ij,jzyx->izyx", a, coords))[None]
    # Only spacing is passed: the Frobenius norm of the gradient does not depend on the rotation.
    assert float(LF.diffusion(disp, geometry.spacing)) == pytest.approx(float((a ** 2).sum()), rel=1e-9)
    assert float(LM.DiffusionLoss(geometry.spacing)(disp)) == pytest.approx(float((a ** 2).sum()), rel=1e-9)


def test_bending_energy_affine_is_zero_and_quadratic_is_analytic():
    geometry = Geometry((9, 8, 7), spacing=(1.0, 2.0, 1.5))
    coords = _physical_coords(geometry)
    affine = np.stack([0.1 * coords[1], 0.2 * coords[0] + 1, -0.05 * coords[2]])
    assert float(LF.bending_energy(torch.as_tensor(affine)[None], geometry.spacing)) == pytest.approx(0, abs=1e-18)
    k = 0.03
    quad = np.zeros_like(coords)
    quad[0] = k * coords[0] ** 2
    assert float(LF.bending_energy(torch.as_tensor(quad)[None], geometry.spacing)) == pytest.approx(4 * k * k, rel=1e-9)
    # A mixed term u_y = k x y has d2u_y/dxdy = k, counted twice.
    mixed = np.zeros_like(coords)
    mixed[1] = k * coords[0] * coords[1]
    assert float(LM.BendingEnergyLoss(geometry.spacing)(torch.as_tensor(mixed)[None])) == pytest.approx(2 * k * k, rel=1e-9)


def test_folding_penalty_zero_for_identity_and_one_for_a_mirror():
    geometry = Geometry((6, 6, 6), spacing=(2.0, 1.0, 1.0))
    assert float(LF.folding_penalty(torch.zeros(1, 3, 6, 6, 6), geometry)) == 0.0
    coords = _physical_coords(geometry)
    mirror = np.zeros_like(coords)
    mirror[0] = -2 * coords[0]  # x -> -x: det J = -1 everywhere
    disp = torch.as_tensor(mirror)[None]
    assert float(jacobian_determinant(disp, geometry).mean()) == pytest.approx(-1.0)
    assert float(LM.FoldingLoss(geometry)(disp)) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------- landmarks
def test_landmark_loss_constant_field_equals_analytic_distance():
    geometry = Geometry((10, 9, 8), spacing=(1.2, 0.8, 2.0), origin=(-50, 20, 100), direction=_rotation(-20))
    shift = np.array([3.0, -1.0, 2.0])
    disp = torch.as_tensor(np.broadcast_to(shift[:, None, None, None], (3, *geometry.shape)).copy())[None]
    rng = np.random.default_rng(0)
    fixed = geometry.index_to_physical(rng.uniform(0, 7, (5, 3)))
    moving = fixed + rng.normal(size=(5, 3))
    expected = np.linalg.norm(fixed + shift - moving, axis=1).mean()
    assert float(LF.landmark_loss(disp, geometry, fixed, moving)) == pytest.approx(expected, rel=1e-9)
    assert float(LM.LandmarkLoss(geometry)(disp, torch.as_tensor(fixed), torch.as_tensor(fixed + shift))) < 1e-5


def test_landmark_loss_linear_field_is_sampled_exactly():
    geometry = Geometry((10, 9, 8), spacing=(1.2, 0.8, 2.0), origin=(-50, 20, 100), direction=_rotation(40))
    a = np.array([[0.05, 0.0, 0.02], [0.01, -0.03, 0.0], [0.0, 0.02, 0.04]])
    disp = torch.as_tensor(np.einsum("ij,jzyx->izyx", a, _physical_coords(geometry)))[None]
    fixed = geometry.index_to_physical(np.random.default_rng(1).uniform(0, 7, (6, 3)))
    moving = fixed + fixed @ a.T
    assert float(LF.landmark_loss(disp, geometry, fixed, moving)) < 1e-5
    values = LF.sample_field_at_points(disp, geometry, fixed)[0].numpy()
    np.testing.assert_allclose(values, fixed @ a.T, atol=1e-9)


def test_landmark_loss_shape_errors_name_the_expected_shape():
    geometry = Geometry((4, 4, 4))
    disp = torch.zeros(1, 3, 4, 4, 4)
    with pytest.raises(ValueError, match=r"\(K, 3\) or \(N=1, K, 3\)"):
        LF.landmark_loss(disp, geometry, np.zeros((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="must pair up"):
        LF.landmark_loss(disp, geometry, np.zeros((5, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"does not match geometry"):
        LF.landmark_loss(torch.zeros(1, 3, 5, 4, 4), geometry, np.zeros((1, 3)), np.zeros((1, 3)))


# ------------------------------------------------------------------------------- shape errors
@pytest.mark.parametrize("fn,args,message", [
    (LF.local_ncc, (torch.rand(8, 8, 8), torch.rand(8, 8, 8)), r"\(N, C, Z, Y, X\)"),
    (LF.local_ncc, (torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 7)), "same shape"),
    (LF.mse, (torch.rand(1, 1, 8, 8, 8), torch.rand(1, 2, 8, 8, 8)), "same shape"),
    (LF.diffusion, (torch.rand(1, 2, 8, 8, 8),), r"\(N, 3, Z, Y, X\)"),
    (LF.bending_energy, (torch.rand(3, 8, 8, 8),), r"\(N, 3, Z, Y, X\)"),
    (LF.diffusion, (torch.rand(1, 3, 8, 8, 8), (1.0, 0.0, 1.0)), "3 positive values"),
])
def test_shape_and_value_errors(fn, args, message):
    with pytest.raises(ValueError, match=message):
        fn(*args)


# ------------------------------------------------------------------------------------ gradcheck
def test_gradcheck_local_ncc():
    torch.manual_seed(0)
    f = torch.rand(1, 1, 5, 5, 5, dtype=torch.float64)
    w = torch.rand(1, 1, 5, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: LF.local_ncc(f, x, 3), (w,))


def test_gradcheck_mind_ssc():
    torch.manual_seed(1)
    img = torch.rand(1, 1, 5, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: LF.mind_ssc(x, 1, 1).sum(), (img,))


def test_gradcheck_landmark_and_diffusion():
    torch.manual_seed(2)
    geometry = Geometry((5, 4, 6), spacing=(1.0, 2.0, 1.5), origin=(3, 1, -2))
    disp = torch.rand(1, 3, 6, 4, 5, dtype=torch.float64, requires_grad=True)
    fixed = torch.as_tensor(geometry.index_to_physical(np.array([[1.3, 1.7, 2.2], [3.1, 0.4, 4.5]])))
    moving = fixed + 5.0
    assert torch.autograd.gradcheck(lambda d: LF.landmark_loss(d, geometry, fixed, moving), (disp,))
    assert torch.autograd.gradcheck(lambda d: LF.diffusion(d, geometry.spacing), (disp,))
    assert torch.autograd.gradcheck(lambda d: LF.bending_energy(d, geometry.spacing), (disp,))
