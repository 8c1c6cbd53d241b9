"""Local NCC with its analytic gradient (losses/lncc.py) and the refinement stage (engine/refine.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ADRegNetLib.engine import register
from ADRegNetLib.engine.refine import RefineSettings, refine_field
from ADRegNetLib.losses.features import central_gradient
from ADRegNetLib.losses.lncc import LocalNCC, interpolation_noise_factor
from ADRegNetLib.spatial.filters import gaussian_smooth, noise_std
from ADRegNetLib.spatial.flow import flow_norm_to_disp_mm
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image


def _smooth_random(shape=(20, 22, 24), seed=0, sigma=1.0, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return gaussian_smooth(torch.rand((1, 1, *shape), generator=gen, dtype=dtype), sigma)


@pytest.mark.parametrize("masked", [False, True])
def test_analytic_gradient_equals_autograd_everywhere(masked):
    fixed = _smooth_random(seed=0)
    moving = 0.7 * fixed + 0.3 * _smooth_random(seed=1)
    weight = (_smooth_random(seed=2) > 0.5).to(fixed.dtype) if masked else None
    similarity = LocalNCC(fixed, weight, radius=2)
    d_m, loss = similarity.intensity_gradient(moving.clone())
    m = moving.clone().requires_grad_(True)
    cov, _, denom, _ = similarity.loss_terms(m)
    cc = cov.square() / denom
    if weight is not None:
        cc = cc * weight
    reference = 1.0 - cc.sum() / similarity.total
    (expected,) = torch.autograd.grad(reference, m)
    assert loss == pytest.approx(float(reference.detach()), rel=1e-12)
    assert float((d_m - expected).abs().max()) < 1e-10 * float(expected.abs().max())  # borders included


@pytest.mark.parametrize("per_voxel", [False, True])
def test_interpolation_noise_term_and_its_gradient_equal_autograd(per_voxel):
    """k is 1 on voxels and 1/8 midway; the term's part of dL/du equals autograd by the positions,
    with one noise variance or a map of it (a gain-normalised moving image)."""
    points = torch.tensor([[2.0, 3.0, 4.0], [2.5, 3.5, 4.5]], dtype=torch.float64)
    k, _ = interpolation_noise_factor(points.T.reshape(1, 3, 1, 1, 2))
    assert k.flatten().tolist() == pytest.approx([1.0, 0.125])
    fixed = _smooth_random(seed=0)
    warped = 0.7 * fixed + 0.3 * _smooth_random(seed=1)
    gen = torch.Generator().manual_seed(3)
    positions = torch.rand((1, 3, *fixed.shape[2:]), generator=gen, dtype=fixed.dtype).mul_(0.9).add_(0.05)
    variance = 0.01 * (0.5 + _smooth_random(seed=4)) if per_voxel else 0.01
    similarity = LocalNCC(fixed, radius=2, noise_variance=variance)
    grad, loss = similarity.gradient(warped.clone(), positions)
    d_m, _, _ = similarity._derivatives(warped.clone(), interpolation_noise_factor(positions)[0])
    direct = grad - torch.cat([g * d_m for g in central_gradient(warped)], dim=1)
    p = positions.clone().requires_grad_(True)
    cov, _, denom, _ = similarity.loss_terms(warped, interpolation_noise_factor(p)[0])
    reference = 1.0 - (cov.square() / denom).sum() / similarity.total
    (expected,) = torch.autograd.grad(reference, p)
    assert loss == pytest.approx(float(reference.detach()), rel=1e-12)
    assert float((direct - expected).abs().max()) < 1e-9 * float(expected.abs().max())
    assert float(expected.abs().max()) > 0.1 * float(grad.abs().max())  # the term matters here


def test_noise_std_finds_white_noise_on_smooth_tissue_and_ignores_empty_background():
    clean = _smooth_random((40, 40, 40), seed=9, sigma=2.0, dtype=torch.float32)
    clean = 0.3 + 0.5 * (clean - clean.min()) / (clean.max() - clean.min())
    clean[..., :20] = 0.0  # empty half: not counted
    gen = torch.Generator().manual_seed(10)
    for sigma in (0.01, 0.04):
        noisy = clean + sigma * torch.randn(clean.shape, generator=gen) * (clean > 0)
        assert noise_std(noisy) == pytest.approx(sigma, rel=0.15)
    assert noise_std(clean) < 0.003
    assert noise_std(torch.zeros((1, 1, 8, 8, 8))) == 0.0
    with pytest.raises(ValueError, match=r"\(1, 1, Z, Y, X\)"):
        noise_std(torch.zeros((8, 8, 8)))


def test_noise_term_keeps_a_noisy_pair_without_motion_still():
    """Two noisy copies of one image: without the term the refinement moves to average the noise."""
    geometry = Geometry((40, 36, 32), (2.0, 2.0, 2.0))
    clean = _smooth_random((32, 36, 40), seed=7, sigma=1.2, dtype=torch.float32)
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    gen = torch.Generator().manual_seed(8)
    noisy = [clean + 0.03 * torch.randn(clean.shape, generator=gen) for _ in range(2)]
    zero = torch.zeros((1, 3, 32, 36, 40))
    moved = {}
    for share in (0.0, 0.5):
        flow, info = refine_field(noisy[0], noisy[1], geometry, zero, RefineSettings(steps=8, noise_share=share))
        moved[share] = float(flow_norm_to_disp_mm(flow, geometry).norm(dim=1).mean())
        assert (info["noise_std"] > 0.02) == (share > 0), info
    assert moved[0.5] < 0.7 * moved[0.0], moved


def test_loss_ignores_gain_and_offset_and_is_zero_for_identical_images():
    fixed = _smooth_random(seed=3)
    similarity = LocalNCC(fixed, radius=2)
    assert similarity.loss(fixed) == pytest.approx(similarity.loss(3.0 * fixed + 10.0), abs=1e-9)
    assert similarity.loss(fixed) < 0.01
    assert similarity.loss(_smooth_random(seed=4)) > 0.5
    same, _ = similarity.gradient(fixed.clone())
    other, _ = similarity.gradient(_smooth_random(seed=4))
    assert float(same.abs().max()) < 1e-2 * float(other.abs().max())  # only the stabiliser's trace


def test_a_noise_variance_map_must_fit_and_be_non_negative():
    fixed = _smooth_random(seed=0)
    with pytest.raises(ValueError, match="noise_variance map must be"):
        LocalNCC(fixed, noise_variance=torch.zeros((1, 1, 4, 4, 4), dtype=fixed.dtype))
    with pytest.raises(ValueError, match=">= 0 everywhere"):
        LocalNCC(fixed, noise_variance=torch.full_like(fixed, -1.0))
    # a map of zeros is no term at all, as the number 0
    warped = 0.7 * fixed + 0.3 * _smooth_random(seed=1)
    positions = torch.full((1, 3, *fixed.shape[2:]), 0.5, dtype=fixed.dtype)
    zero_map = LocalNCC(fixed, radius=2, noise_variance=torch.zeros_like(fixed)).gradient(warped, positions)[0]
    assert torch.equal(zero_map, LocalNCC(fixed, radius=2).gradient(warped, positions)[0])


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(1, 1, Z, Y, X\)"):
        LocalNCC(torch.zeros((2, 1, 4, 4, 4)))
    geometry = Geometry((8, 8, 8), (2.0, 2.0, 2.0))
    img = torch.zeros((1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="flow must be"):
        refine_field(img, img, geometry, torch.zeros((1, 2, 8, 8, 8)), RefineSettings())


def _shifted(image: torch.Tensor, shift_vox: float) -> torch.Tensor:
    """``image`` sampled at x + shift along the X axis (voxels), trilinear, edges replicated."""
    n = image.shape[-1]
    x = (torch.arange(n, dtype=image.dtype) + shift_vox).clamp(0, n - 1)
    lo = x.floor().long()
    hi = (lo + 1).clamp_max(n - 1)
    t = x - lo.to(image.dtype)
    return image[..., lo] * (1 - t) + image[..., hi] * t


def test_refinement_recovers_a_subvoxel_shift_and_keeps_identical_images():
    geometry = Geometry((40, 36, 32), (2.0, 2.0, 2.0))
    fixed = _smooth_random((32, 36, 40), seed=5, sigma=1.5, dtype=torch.float32)
    moving = _shifted(fixed, -0.4)
    zero = torch.zeros((1, 3, 32, 36, 40))
    settings = RefineSettings(steps=12)
    flow, info = refine_field(fixed, _shifted(fixed, 0.0), geometry, zero, settings)
    assert float(flow.abs().max()) == 0.0 or info["steps_accepted"] == 0  # identical: nothing moves
    flow, info = refine_field(fixed, moving, geometry, zero, settings)
    disp = flow_norm_to_disp_mm(flow, geometry)[0, 0, 8:-8, 8:-8, 8:-8]  # x component, interior, mm
    assert info["loss_last"] < info["loss_first"]
    # moving(x) = fixed(x - 0.4 voxel): fixed x is found at moving x + 0.4 voxel = + 0.8 mm
    assert float(disp.mean()) == pytest.approx(0.8, abs=0.2), float(disp.mean())


def test_a_step_past_the_minimum_shortens_the_next_steps():
    """A 0.1-voxel shift with 0.25-voxel steps: the first step passes the minimum along itself,
    the following steps are shortened, and the result lands closer than the step length."""
    geometry = Geometry((40, 36, 32), (2.0, 2.0, 2.0))
    fixed = _smooth_random((32, 36, 40), seed=6, sigma=1.5, dtype=torch.float32)
    zero = torch.zeros((1, 3, 32, 36, 40))
    flow, info = refine_field(fixed, _shifted(fixed, -0.1), geometry, zero,
                              RefineSettings(steps=8, step_voxels=0.25, sigma_update=8.0, sigma_field=0.0))
    assert info["steps_shortened"] >= 1 and info["last_step_voxels"] < 0.25
    disp = flow_norm_to_disp_mm(flow, geometry)[0, 0, 8:-8, 8:-8, 8:-8]
    assert float(disp.mean()) == pytest.approx(0.2, abs=0.06), float(disp.mean())


def test_steps_lengthen_while_the_loss_still_falls_at_their_end():
    """A 1.5-voxel shift (3 mm), six steps starting at 0.25 voxel: steps of fixed length stop at
    about 2 mm; lengthened steps (the loss still fell at their end) reach the shift and then
    shorten when they pass it."""
    geometry = Geometry((40, 36, 32), (2.0, 2.0, 2.0))
    fixed = _smooth_random((32, 36, 40), seed=5, sigma=2.0, dtype=torch.float32)
    zero = torch.zeros((1, 3, 32, 36, 40))
    found = {}
    for grow in (1.0, 1.5):
        # a texture filling the grid, faces included: smoothed as replicated there, as the step rule was measured
        settings = RefineSettings(steps=6, step_voxels=0.25, grow=grow, sigma_update=8.0, sigma_field=0.0,
                                  edges="replicate")
        flow, info = refine_field(fixed, _shifted(fixed, -1.5), geometry, zero, settings)
        found[grow] = (float(flow_norm_to_disp_mm(flow, geometry)[0, 0, 8:-8, 8:-8, 8:-8].mean()), info)
    fixed_length, info = found[1.0]
    assert info["steps_lengthened"] == 0 and info["last_step_voxels"] == 0.25
    assert fixed_length < 2.3, fixed_length
    lengthened, info = found[1.5]
    assert info["steps_lengthened"] >= 2 and info["steps_shortened"] >= 1
    assert lengthened == pytest.approx(3.0, abs=0.25), lengthened


def test_engine_refines_with_landmarks_and_across_contrasts():
    geometry = Geometry((32, 32, 32), (2.0, 2.0, 2.0))
    arr = _smooth_random((32, 32, 32), seed=6, sigma=1.5, dtype=torch.float32)[0, 0].numpy() * 1000.0
    fixed = Image(arr, geometry, "fixed")
    moving = Image(np.roll(arr, 1, axis=2).copy(), geometry, "moving")
    kw = dict(quality="balanced", use_network=False, device="cpu", preset="generic", compute_inverse=False)
    result = register(fixed, moving, **kw)
    assert result.metrics["refinement"]["steps_accepted"] >= 1
    assert "refine" in result.metrics["timings_s"]
    two_contrasts = register(fixed, Image(1000.0 - moving.array, geometry, "inverted"), multimodal=True, **kw)
    refined = two_contrasts.metrics["refinement"]
    assert "normalised gradient fields" in refined["similarity"] and refined["steps_accepted"] >= 1
    points = geometry.index_to_physical(np.array([[10.0, 12.0, 14.0], [20.0, 18.0, 16.0]]))
    with_points = register(fixed, moving, fixed_landmarks=points, moving_landmarks=points + [2.0, 0, 0], **kw)
    first, last = with_points.metrics["refinement"]["landmark_mm"]
    assert last <= first + 0.05  # the refinement keeps the landmark pairs matched


def test_ngf_gradient_matches_finite_differences_and_ignores_contrast_inversion():
    from ADRegNetLib.losses.ngf import NormalizedGradientFields

    fixed = _smooth_random(seed=8)
    moving = 0.6 * fixed + 0.4 * _smooth_random(seed=9)
    similarity = NormalizedGradientFields(fixed, spacing_xyz=(2.0, 2.0, 2.0), eps=0.005)
    # edges of an inverted copy agree as well as the image's own
    assert similarity.loss(1.0 - fixed) == pytest.approx(similarity.loss(fixed), abs=1e-9)
    assert similarity.loss(fixed) < similarity.loss(moving)
    # the gradient by a displacement: a uniform shift along x changes the loss at the predicted rate
    grad, loss = similarity.gradient(moving)
    h = 1e-3
    plus, minus = _shifted(moving, h), _shifted(moving, -h)
    numeric = (similarity.loss(plus) - similarity.loss(minus)) / (2 * h)
    analytic = float(grad[:, 0].sum())
    assert analytic == pytest.approx(numeric, rel=0.05, abs=1e-6)


@pytest.mark.parametrize("shape, spacing, masked", [((9, 11, 13), (1.0, 2.0, 3.0), False),
                                                     ((12, 10, 8), (2.3, 2.3, 2.5), True),
                                                     ((1, 12, 10), (1.0, 1.0, 1.0), True)])
def test_ngf_written_out_gradient_matches_autograd_through_the_loss(shape, spacing, masked):
    """The written-out derivative (and the loss) equal autograd through ``functional.ngf``, edges,
    anisotropic voxels, a region and a one-voxel axis included."""
    from ADRegNetLib.losses.features import central_gradient
    from ADRegNetLib.losses.functional import ngf
    from ADRegNetLib.losses.ngf import NormalizedGradientFields

    generator = torch.Generator().manual_seed(3)
    fixed, moving = (torch.rand((1, 1) + shape, generator=generator) for _ in range(2))
    weight = (torch.rand((1, 1) + shape, generator=generator) > 0.3).float() if masked else None
    grad, loss = NormalizedGradientFields(fixed, weight, spacing_xyz=spacing, eps=0.01).gradient(moving)
    m = moving.clone().requires_grad_(True)
    value = ngf(fixed, m, eps=0.01, spacing_xyz=spacing, mask=weight)
    (d_m,) = torch.autograd.grad(value, m)
    expected = torch.cat([g * d_m for g in central_gradient(moving)], dim=1)
    assert loss == pytest.approx(float(value.detach()), abs=1e-6)
    assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_ngf_refuses_an_empty_region():
    from ADRegNetLib.losses.ngf import NormalizedGradientFields

    volume = torch.rand((1, 1, 6, 6, 6))
    with pytest.raises(ValueError, match="weight is empty"):
        NormalizedGradientFields(volume, torch.zeros_like(volume))


def test_unknown_refinement_similarity_is_refused():
    geometry = Geometry((8, 8, 8), (2.0, 2.0, 2.0))
    img = torch.zeros((1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="'lncc' or 'ngf'"):
        refine_field(img, img, geometry, torch.zeros((1, 3, 8, 8, 8)), RefineSettings(similarity="mi"))


def test_regularization_smooths_the_refinement_too(monkeypatch):
    """--regularization scales the refinement's smoothing like the optimisation's (sqrt for the
    update, linear for the field)."""
    from ADRegNetLib.engine import refinement_stage

    seen = []

    def record(fixed, moving, geometry, flow, settings, **kwargs):
        seen.append(settings)
        return flow, {"steps_accepted": 0, "loss_first": 0.5, "loss_last": 0.5}

    monkeypatch.setattr(refinement_stage, "refine_field", record)
    geometry = Geometry((32, 32, 32), (2.0, 2.0, 2.0))
    arr = _smooth_random((32, 32, 32), seed=6, sigma=1.5, dtype=torch.float32)[0, 0].numpy() * 1000.0
    img = Image(arr, geometry, "x")
    for reg in (1.0, 4.0):
        register(img, Image(np.roll(arr, 1, axis=2).copy(), geometry, "y"), quality="fast", use_network=False,
                 device="cpu", preset="generic", compute_inverse=False, regularization=reg)
    base = RefineSettings()
    assert seen[0].sigma_update == pytest.approx(base.sigma_update) and seen[0].sigma_field == pytest.approx(base.sigma_field)
    assert seen[1].sigma_update == pytest.approx(2.0 * base.sigma_update)
    assert seen[1].sigma_field == pytest.approx(4.0 * base.sigma_field)


def _bias_ramp(shape, strength: float) -> torch.Tensor:
    """exp(strength * a smooth ramp in [-1, 1] along z, y and x): a multiplicative bias field."""
    zz, yy, xx = torch.meshgrid(*(torch.linspace(-1.0, 1.0, n) for n in shape), indexing="ij")
    return torch.exp(strength * (0.5 * xx - 0.4 * yy + 0.6 * zz))[None, None]


def test_local_gain_normalised_divides_out_a_smooth_bias_and_keeps_a_constant_gain():
    from ADRegNetLib.spatial.filters import local_gain_normalised

    shape = (32, 36, 40)
    tissue = 0.5 + _smooth_random(shape, seed=11, sigma=1.5, dtype=torch.float32)
    sigma = (3.0, 3.0, 3.0)
    plain = local_gain_normalised(tissue, sigma, 0.3)
    biased = local_gain_normalised(tissue * _bias_ramp(shape, 0.5), sigma, 0.3)
    inner = (..., slice(8, -8), slice(8, -8), slice(8, -8))
    log_bias = torch.log(_bias_ramp(shape, 0.5))[inner]
    log_left = torch.log(biased / plain)[inner]
    # the bias spans a factor exp(+-0.75); what is left of it varies less than half as much (measured: 0.35)
    assert float(log_left.std()) < 0.5 * float(log_bias.std()), (float(log_left.std()), float(log_bias.std()))
    # a constant gain only scales the result (the floor follows the image's own 99th percentile)
    assert torch.allclose(local_gain_normalised(3.0 * tissue, sigma, 0.3), 3.0 * plain, rtol=1e-5)
    with pytest.raises(ValueError, match="floor"):
        local_gain_normalised(tissue, sigma, 0.0)
    with pytest.raises(ValueError, match=r"\(1, 1, Z, Y, X\)"):
        local_gain_normalised(tissue[0], sigma, 0.3)


def test_gain_normalisation_keeps_a_bias_field_from_shifting_the_refined_match():
    """A subvoxel shift under a strong bias ramp: local NCC alone matches edges displaced by the
    ramp; on the gain-normalised pair the shift comes out closer to the truth."""
    from ADRegNetLib.spatial.filters import local_gain_normalised

    geometry = Geometry((40, 36, 32), (2.0, 2.0, 2.0))
    shape = (32, 36, 40)
    fixed = _smooth_random(shape, seed=5, sigma=1.5, dtype=torch.float32)
    moving = _shifted(fixed, -0.4) * _bias_ramp(shape, 0.5)  # gain x0.6 .. x1.6 across the volume
    zero = torch.zeros((1, 3, *shape))
    settings = RefineSettings(steps=12)
    errors = {}
    for name, (f, m) in {"raw": (fixed, moving),
                         "normalised": tuple(local_gain_normalised(t, 3.0, 0.3) for t in (fixed, moving))}.items():
        flow, _ = refine_field(f, m, geometry, zero, settings)
        disp = flow_norm_to_disp_mm(flow, geometry)[0, :, 8:-8, 8:-8, 8:-8]
        truth = torch.tensor([0.8, 0.0, 0.0]).view(3, 1, 1, 1)
        errors[name] = float((disp - truth).norm(dim=0).mean())
    # measured: 0.34 mm raw (the x shift found as 0.47 of 0.8 mm), 0.045 mm normalised
    assert errors["normalised"] < 0.15 and errors["normalised"] < 0.3 * errors["raw"], errors


def test_engine_gain_normalises_one_mri_contrast_only():
    geometry = Geometry((32, 32, 32), (2.0, 2.0, 2.0))
    arr = _smooth_random((32, 32, 32), seed=6, sigma=1.5, dtype=torch.float32)[0, 0].numpy() * 1000.0
    kw = dict(quality="fast", use_network=False, device="cpu", preset="generic", compute_inverse=False)
    mri = register(Image(arr, geometry, "fixed"), Image(np.roll(arr, 1, axis=2).copy(), geometry, "moving"), **kw)
    assert mri.metrics["refinement"]["gain_normalised_sigma_mm"] == pytest.approx(6.0)
    ct = arr - 1300.0  # HU about -900 .. -700: air-like, so recognised as CT
    as_ct = register(Image(ct, geometry, "fixed"), Image(np.roll(ct, 1, axis=2).copy(), geometry, "moving"), **kw)
    assert as_ct.metrics["refinement"]["gain_normalised_sigma_mm"] is None
    two = register(Image(arr, geometry, "fixed"), Image(1000.0 - np.roll(arr, 1, axis=2), geometry, "inverted"),
                   multimodal=True, **kw)
    assert two.metrics["refinement"]["gain_normalised_sigma_mm"] is None


def test_noise_term_follows_the_gain_normalisation_of_a_noisy_pair_without_motion():
    """Two noisy copies, the moving one under a bias ramp, both gain-normalised: told the moving image
    before the normalisation and its gain (``noise_source``, ``noise_scale``), the noise term measures
    the noise before the normalisation (which amplifies it where the image is dark) and still keeps
    the pair still."""
    from ADRegNetLib.spatial.filters import local_gain_factor

    geometry = Geometry((40, 36, 32), (2.0, 2.0, 2.0))
    shape = (32, 36, 40)
    clean = _smooth_random(shape, seed=7, sigma=1.2, dtype=torch.float32)
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    gen = torch.Generator().manual_seed(8)
    fixed = clean + 0.03 * torch.randn(clean.shape, generator=gen)
    moving = (clean + 0.03 * torch.randn(clean.shape, generator=gen)) * _bias_ramp(shape, 1.0)
    gains = [local_gain_factor(t, 3.0, 0.3) for t in (fixed, moving)]
    zero = torch.zeros((1, 3, *shape))
    moved, noise = {}, {}
    for told, share in ((False, 0.1), (True, 0.1), (True, 0.0)):
        flow, info = refine_field(fixed * gains[0], moving * gains[1], geometry, zero,
                                  RefineSettings(steps=8, noise_share=share), noise_source=moving if told else None,
                                  noise_scale=gains[1] if told else None)
        moved[told, share] = float(flow_norm_to_disp_mm(flow, geometry).norm(dim=1).mean())
        noise[told, share] = info["noise_std"]
    # measured: 0.033 told, 0.073 on the normalised image
    assert noise[True, 0.1] == pytest.approx(0.03, rel=0.2) and noise[False, 0.1] > 0.05, noise
    # measured: 0.066 mm with the term, 0.222 mm without it
    assert moved[True, 0.1] < 0.4 * moved[True, 0.0], moved


def test_sampling_the_refined_moving_image_finds_a_half_voxel_shift_closer():
    """Linear lookups between voxels blur the moving image most halfway between them, where a
    half-voxel shift puts every sample: the refinement on the refined image (by default from the
    middle of its steps) ends closer to the true 1 mm than on the image itself."""
    from ADRegNetLib.spatial.bspline import bspline_coefficients, bspline_sample
    from ADRegNetLib.spatial.flow import identity_grid

    geometry = Geometry((40, 36, 32), (2.0, 2.0, 2.0))
    fixed = _smooth_random((32, 36, 40), seed=5, sigma=1.0, dtype=torch.float32)
    # the same smooth image half a voxel along x (its cubic B-spline there, not a linear blend)
    grid = identity_grid((32, 36, 40), fixed).clone()
    grid[..., 0] -= 0.5 * 2.0 / 39
    moving = bspline_sample(bspline_coefficients(fixed), grid)
    zero = torch.zeros((1, 3, 32, 36, 40))
    errors = {}
    for share in (1.0, 0.5, 0.0):  # never, from the middle (the default), from the first step
        flow, info = refine_field(fixed, moving, geometry, zero, RefineSettings(steps=16, sample_refined_from=share,
                                                                                edges="replicate"))
        assert info["refined_sampling_from_step"] == {1.0: None, 0.5: 8, 0.0: 0}[share]
        disp = flow_norm_to_disp_mm(flow, geometry)[0, 0, 8:-8, 8:-8, 8:-8]
        errors[share] = float((disp - 1.0).abs().mean())
    assert errors[0.5] < 0.7 * errors[1.0] and errors[0.0] < 0.7 * errors[1.0], errors
