"""Tests of the fast instance optimiser (``engine.optimizer``), its features and its filter.

Small synthetic volumes (<= 32^3) only; every number is checked against an independent reference:
autograd through ``grid_sample`` (float64) for the analytic gradient, the explicit linearised
minimiser for the step length, ``conv3d`` for the Gaussian filter, ``losses.functional.mind_ssc``
for the fast MIND-SSC, known shifts and landmark positions for the optimiser.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ADRegNetLib.engine import register
from ADRegNetLib.engine.api import RegistrationCancelled
from ADRegNetLib.engine.optimizer import OptimizerSettings, optimize_field
from ADRegNetLib.losses.features import FeatureSSD, central_gradient, mind_ssc_fast
from ADRegNetLib.losses.functional import mind_ssc
from ADRegNetLib.spatial.filters import gaussian_kernel, gaussian_smooth, smoothing_edges
from ADRegNetLib.spatial.flow import flow_norm_to_disp_mm, identity_grid
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image

QUICK = OptimizerSettings(levels=((2, 15), (1, 10)), step_voxels=0.5)


def smooth_image(shape=(24, 28, 32), seed=0, sigma=2.0, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    img = gaussian_smooth(torch.rand((1, 1, *shape), generator=gen, dtype=torch.float64), sigma)
    img = (img - img.min()) / (img.max() - img.min())
    return img.to(dtype)


def shift_image(img: torch.Tensor, shift_xyz_vox) -> torch.Tensor:
    """img sampled at x + shift (voxels, x y z), edges replicated: fixed x maps to moving x + shift... inverted."""
    shape = img.shape[2:]
    scale = torch.tensor([2.0 / (shape[2] - 1), 2.0 / (shape[1] - 1), 2.0 / (shape[0] - 1)], dtype=img.dtype)
    grid = identity_grid(tuple(shape), img) + torch.as_tensor(shift_xyz_vox, dtype=img.dtype) * scale
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)


# ------------------------------------------------------------------------------ filter and features
def _conv_gaussian(volume: torch.Tensor, sigma: float, renormalise: bool = False) -> torch.Tensor:
    """Reference: 1-D conv3d passes on an edge-replicated axis (the filter's previous implementation), or with
    ``renormalise`` zero-padded passes divided by the same passes over ones (normalised convolution)."""
    k = torch.as_tensor(gaussian_kernel(sigma), dtype=volume.dtype)
    r = (k.numel() - 1) // 2
    n, c = volume.shape[:2]
    out = volume.reshape(n * c, 1, *volume.shape[2:])
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        if renormalise:
            pad = [0, 0, 0, 0, 0, 0]
            pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
            out = F.conv3d(F.pad(out, pad), k.view(shape)) / F.conv3d(F.pad(torch.ones_like(out[:1]), pad), k.view(shape))
            continue
        idx = torch.arange(-r, out.shape[2 + axis] + r).clamp(0, out.shape[2 + axis] - 1)
        out = F.conv3d(out.index_select(2 + axis, idx), k.view(shape))
    return out.reshape(volume.shape)


@pytest.mark.parametrize("shape, sigma", [((1, 3, 9, 10, 11), 1.0), ((2, 1, 3, 5, 2), 1.5), ((1, 2, 5, 300, 7), 1.2)])
def test_gaussian_smooth_equals_convolution_with_replicated_edges(shape, sigma):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(gaussian_smooth(x, sigma), _conv_gaussian(x, sigma), atol=1e-12)


def test_gaussian_smooth_keeps_constants_and_skips_zero_sigma():
    x = torch.full((1, 1, 4, 5, 6), 3.0)
    assert torch.allclose(gaussian_smooth(x, 2.0), x)
    y = torch.randn(1, 1, 4, 5, 6)
    out = gaussian_smooth(y, (0.0, 0.0, 0.0))
    assert torch.equal(out, y) and out is not y


@pytest.mark.parametrize("shape, sigma", [((1, 3, 9, 10, 11), 1.0), ((1, 2, 5, 300, 7), 2.0)])
def test_renormalised_edges_leave_out_what_lies_beyond_the_grid(shape, sigma):
    """At the grid's faces the renormalised filter is the mean of the neighbours inside (normalised convolution);
    inside it equals the replicating one, and it keeps constants."""
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = gaussian_smooth(x, sigma, edges="renormalise")
    assert torch.allclose(out, _conv_gaussian(x, sigma, renormalise=True), atol=1e-12)
    r = (len(gaussian_kernel(sigma)) - 1) // 2
    core = (slice(None), slice(None)) + tuple(slice(r, n - r) for n in shape[2:])
    assert torch.allclose(out[core], gaussian_smooth(x, sigma)[core], atol=1e-12)
    assert not torch.allclose(out, gaussian_smooth(x, sigma))
    assert torch.allclose(gaussian_smooth(torch.full(shape, 2.5, dtype=torch.float64), sigma, edges="renormalise"),
                          torch.full(shape, 2.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="edges"):
        gaussian_smooth(x, sigma, edges="mirror")


def test_smoothing_edges_renormalise_only_where_the_fixed_image_cuts_anatomy():
    """Faces in background keep the replicating filter (the benchmark's images, bit for bit as before); a face
    through tissue (a field of view that ends inside the anatomy) gets the renormalised one."""
    head = torch.zeros(1, 1, 20, 24, 28)
    head[:, :, 4:16, 5:19, 6:22] = 0.8
    assert smoothing_edges(head, 0.2, 0.2) == "replicate"
    noisy_background = head + 0.1  # a synthetic image's background below the anatomy threshold
    assert smoothing_edges(noisy_background, 0.2, 0.2) == "replicate"
    cut = head[:, :, :, :, 10:]  # the field of view now ends inside the anatomy on one face
    assert smoothing_edges(cut.contiguous(), 0.2, 0.2) == "renormalise"


@pytest.mark.parametrize("count", [1, 7, 64, 65, 200])  # separable sums up to 64 points, a smoothed splat above
@pytest.mark.parametrize("shape", [(23, 17, 12), (1, 15, 9)])
def test_smoothed_splats_equal_the_smoothed_adjoint_of_sampling(count, shape):
    from ADRegNetLib.spatial.filters import smoothed_splats

    g = torch.Generator().manual_seed(count)
    points = torch.rand(count, 3, generator=g, dtype=torch.float64) * 2.6 - 1.3  # some outside: splat on the edge
    points[0] = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)  # a corner voxel exactly
    values = torch.randn(count, 4, generator=g, dtype=torch.float64)
    volume = torch.zeros((1, 4, *shape), dtype=torch.float64, requires_grad=True)
    sampled = F.grid_sample(volume, points.view(1, 1, 1, -1, 3), mode="bilinear", padding_mode="border",
                            align_corners=True).view(4, -1).T
    splat, = torch.autograd.grad((sampled * values).sum(), [volume])  # the adjoint of sampling at the points
    for sigma in (1.3, 4.0):
        torch.testing.assert_close(smoothed_splats(points, values, shape, sigma), gaussian_smooth(splat, sigma),
                                   atol=1e-12, rtol=1e-10)


def test_subsampled_structure_tensor_equals_the_full_one():
    f = mind_ssc_fast(smooth_image((11, 12, 13), dtype=torch.float64))
    full, sub = FeatureSSD(f, stride=1).structure, FeatureSSD(f, stride=2).structure
    assert torch.allclose(full[:, :, ::2, ::2, ::2], sub, atol=1e-15)


def test_mind_ssc_fast_equals_reference():
    img = smooth_image((16, 18, 20), sigma=1.0)
    assert torch.allclose(mind_ssc_fast(img), mind_ssc(img), atol=1e-5)


# ------------------------------------------------------------------------------ gradient and step
@pytest.mark.parametrize("masked", [False, True])
def test_analytic_gradient_equals_autograd_float64(masked):
    """Central-difference gradient = mean of grid_sample autograd at u = +-delta (forward/backward)."""
    gen = torch.Generator().manual_seed(3)
    fixed = torch.rand((1, 4, 7, 8, 9), generator=gen, dtype=torch.float64)
    warped = torch.rand((1, 4, 7, 8, 9), generator=gen, dtype=torch.float64)
    weight = (torch.rand((1, 1, 7, 8, 9), generator=gen) > 0.3).double() if masked else None
    grad, loss = FeatureSSD(fixed, weight).gradient(warped)
    shape = fixed.shape[2:]
    per_vox = torch.tensor([2.0 / (shape[2] - 1), 2.0 / (shape[1] - 1), 2.0 / (shape[0] - 1)], dtype=torch.float64)
    count = float(weight.sum()) if masked else float(np.prod(shape))

    def autograd_at(delta: float) -> torch.Tensor:
        u = torch.full((1, 3, *shape), delta, dtype=torch.float64, requires_grad=True)  # voxels
        grid = identity_grid(tuple(shape), fixed) + (u * per_vox.view(1, 3, 1, 1, 1)).permute(0, 2, 3, 4, 1)
        w = F.grid_sample(warped, grid, mode="bilinear", padding_mode="border", align_corners=True)
        r = (w - fixed) if weight is None else (w - fixed) * weight
        (g,) = torch.autograd.grad((r ** 2).sum() / (count * fixed.shape[1]), u)
        return g

    reference = 0.5 * (autograd_at(1e-7) + autograd_at(-1e-7))
    err = float((grad - reference).abs().max()) / float(reference.abs().max())
    assert err < 1e-5, err
    r = warped - fixed if weight is None else (warped - fixed) * weight
    assert loss == pytest.approx(float((r ** 2).sum()) / (count * 4), rel=1e-12)


def test_gauss_newton_alpha_is_the_linearised_minimiser():
    fixed = mind_ssc_fast(smooth_image((12, 13, 14), dtype=torch.float64))
    warped = mind_ssc_fast(shift_image(smooth_image((12, 13, 14), dtype=torch.float64), (0.3, -0.2, 0.1)))
    ssd = FeatureSSD(fixed, stride=1)
    grad, _ = ssd.gradient(warped)
    direction = gaussian_smooth(-grad, 1.0)
    alpha = ssd.gauss_newton_alpha(grad, direction)
    gw, gf = central_gradient(warped), central_gradient(fixed)
    change_w = sum(g * direction[:, a:a + 1] for a, g in enumerate(gw))
    change_f = sum(g * direction[:, a:a + 1] for a, g in enumerate(gf))
    expected = -float(((warped - fixed) * change_w).sum()) / float((change_f ** 2).sum())
    assert alpha > 0 and alpha == pytest.approx(expected, rel=1e-9)
    assert FeatureSSD(fixed).gauss_newton_alpha(grad, direction) == pytest.approx(expected, rel=0.2)  # every 2nd voxel


# ------------------------------------------------------------------------------ the optimiser
def test_identical_images_stay_identity():
    img = smooth_image()
    geom = Geometry(tuple(img.shape[2:][::-1]), (2.0, 2.0, 2.0))
    for moving in (img.clone(), img * (1 + 1e-6)):  # identical, and rounding-level different
        flow, _ = optimize_field(img, moving, geom, QUICK)
        # the float32 identity grid alone makes 1e-7-level residuals: they must not become motion
        assert float(flow_norm_to_disp_mm(flow, geom).norm(dim=1).max()) < 1e-4


@pytest.mark.parametrize("features", ["mind", "intensity"])
def test_known_shift_is_recovered(features):
    fixed = smooth_image((28, 28, 28), seed=2)
    shift = (1.5, -1.0, 0.75)  # voxels, x y z: fixed x matches moving x + shift
    moving = shift_image(fixed, [-s for s in shift])
    geom = Geometry((28, 28, 28), (2.0, 2.0, 2.0))
    settings = OptimizerSettings(levels=((2, 30), (1, 20)), features=features)
    flow, _ = optimize_field(fixed, moving, geom, settings)
    disp_vox = flow_norm_to_disp_mm(flow, geom)[0, :, 8:20, 8:20, 8:20].mean(dim=(1, 2, 3)) / 2.0
    assert torch.allclose(disp_vox, torch.tensor(shift), atol=0.2), disp_vox


def test_intensity_change_alone_invents_little_motion():
    """Gamma, a smooth bias field and noise, no motion: MIND-SSC must not turn them into a field."""
    fixed = smooth_image((28, 28, 28), seed=7)
    zz = torch.linspace(-1, 1, 28).view(1, 1, -1, 1, 1)
    gen = torch.Generator().manual_seed(8)
    moving = fixed ** 1.3 * torch.exp(0.2 * zz) + 0.01 * torch.randn(fixed.shape, generator=gen)
    geom = Geometry((28, 28, 28), (2.0, 2.0, 2.0))
    flow, _ = optimize_field(fixed, moving, geom, OptimizerSettings())
    disp = flow_norm_to_disp_mm(flow, geom)[0].norm(dim=0)
    # measured 0.20 mm (2 mm voxels; the previous optimiser, engine.instance, invents 0.41 mm here)
    assert float(disp.mean()) < 0.25, float(disp.mean())


def test_progress_threads_and_stage_times():
    fixed, moving = smooth_image(seed=4), smooth_image(seed=5)
    geom = Geometry(tuple(fixed.shape[2:][::-1]), (2.0, 2.0, 2.0))
    calls = []
    threads = torch.get_num_threads()
    _, info = optimize_field(fixed, moving, geom, OptimizerSettings(levels=((2, 6), (1, 3)), small_level_voxels=10 ** 9,
                                                                    small_level_threads=1),
                             progress=lambda f, t: calls.append(f))
    assert torch.get_num_threads() == threads  # restored
    assert calls == sorted(calls) and calls[-1] == 1.0
    assert {"features", "warp", "gradient", "compose"} <= set(info["stage_seconds"])
    assert [level["factor"] for level in info["levels"]] == [2, 1]


def test_deterministic_and_cancellable():
    fixed, moving = smooth_image(seed=4), smooth_image(seed=5)
    geom = Geometry(tuple(fixed.shape[2:][::-1]), (2.0, 2.0, 2.0))
    a, _ = optimize_field(fixed, moving, geom, QUICK)
    b, _ = optimize_field(fixed, moving, geom, QUICK)
    assert torch.equal(a, b)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(RegistrationCancelled):
        optimize_field(fixed, moving, geom, QUICK, should_stop=stop)
    assert len(calls) == 4


def test_landmarks_pull_and_initial_flow_is_kept():
    img = smooth_image((24, 24, 24), seed=6)
    geom = Geometry((24, 24, 24), (2.0, 2.0, 2.0), origin=(-20.0, 5.0, 30.0))
    centre = geom.index_to_physical(np.array([[11.5, 11.5, 11.5]]))
    target = centre + np.array([[3.0, 0.0, 0.0]])
    flow, _ = optimize_field(img, img.clone(), geom, QUICK, fixed_points=centre, moving_points=target)
    moved = flow_norm_to_disp_mm(flow, geom)[0, 0, 11:13, 11:13, 11:13].mean()
    assert 1.0 < float(moved) < 3.5
    # a correct initial flow (a 1-voxel shift) on identical-after-warp images is returned unchanged
    init = torch.zeros((1, 3, 24, 24, 24))
    init[:, 0] = 2.0 / 23
    moving = shift_image(img, (-1.0, 0.0, 0.0))
    mask = torch.zeros((1, 1, 24, 24, 24), dtype=torch.bool)
    mask[..., 4:-4, 4:-4, 4:-4] = True  # the shifted copy repeats its last plane (and MIND sees 3 voxels)
    out, info = optimize_field(img, moving, geom, QUICK, init_flow_norm=init, mask=mask)
    inner = (slice(None), slice(None), slice(4, 20), slice(4, 20), slice(4, 20))
    assert float((out - init)[inner].abs().max()) < 0.1 * 2.0 / 23
    assert all(level["iterations"] <= 15 for level in info["levels"])


def test_bad_inputs_name_the_problem():
    img = smooth_image((8, 8, 8))
    geom = Geometry((8, 8, 8))
    with pytest.raises(ValueError, match="fixed must be"):
        optimize_field(img[0], img, geom, QUICK)
    with pytest.raises(ValueError, match="features must be"):
        optimize_field(img, img, geom, OptimizerSettings(features="ncc"))
    with pytest.raises(ValueError, match="mask must be"):
        optimize_field(img, img, geom, QUICK, mask=torch.ones((1, 1, 4, 4, 4), dtype=torch.bool))


def test_lung_preset_starts_with_a_quarter_resolution_level_kept_for_large_motion():
    """Breathing moves further than the brain deforms: the lung-ct preset runs a quarter-resolution level first,
    kept (as the brain's) only where it finds large motion, from 12 mm on (settings.LUNG_COARSE_KEEP_MM; the
    brain's 16 mm). Run always, it invented motion at a whole-body CT's border (nineteenth session)."""
    from ADRegNetLib.engine.settings import COARSE_KEEP_MM, LUNG_COARSE_KEEP_MM, PRESET_SETTINGS, PresetSettings

    geometry = Geometry((40, 40, 40), (2.0, 2.0, 2.0))
    noise = torch.rand((1, 1, 40, 40, 40), generator=torch.Generator().manual_seed(7))
    arr = gaussian_smooth(noise, 1.5)[0, 0].numpy() * 1400.0 - 1000.0  # HU-like: air at -1000
    kw = dict(quality="fast", use_network=False, device="cpu", compute_inverse=False)
    fixed, moving = Image(arr, geometry, "fixed"), Image(np.roll(arr, 2, axis=0).copy(), geometry, "moving")
    lung = register(fixed, moving, preset="lung-ct", **kw).metrics["instance_optimization"]
    assert [level["factor"] for level in lung["levels"]] == [4.0, 2.0, 1.0]
    assert lung["levels"][0]["kept"] is False and lung["levels"][0]["max_iterations"] == 12  # 4 mm: not kept
    assert lung["coarse_start"]["keep_from_mm"] == LUNG_COARSE_KEEP_MM < COARSE_KEEP_MM
    assert PRESET_SETTINGS["lung-ct"].coarse_levels == ()
    assert PresetSettings(modality="generic").coarse_keep_mm == COARSE_KEEP_MM  # the default is the brain's


def test_a_level_that_runs_out_of_steps_on_large_motion_goes_on():
    """``large_motion_more_steps``: a regular level coarser than the working grid that used all its steps
    while the motion it found reaches ``coarse_keep_mm`` is continued (breathing of 20 mm: 1.562 -> 1.367
    mm); small motion, a level that stopped on its own, and the full-resolution level are not."""
    fixed = smooth_image((40, 40, 40), seed=3, sigma=3.0)
    geom = Geometry((40, 40, 40), (2.0, 2.0, 2.0))
    moving = shift_image(fixed, [-5.0, 0.0, 0.0])  # 10 mm along x
    short = OptimizerSettings(levels=((2, 2), (1, 2)), step_voxels=1.0)
    more = OptimizerSettings(**{**short.__dict__, "coarse_keep_mm": 2.0, "large_motion_more_steps": 6})
    flow_short, info_short = optimize_field(fixed, moving, geom, short)
    flow_more, info_more = optimize_field(fixed, moving, geom, more)
    assert [(lv["factor"], lv["iterations"], lv.get("continued", False)) for lv in info_short["levels"]] == [
        (2.0, 2, False), (1.0, 2, False)]
    assert [(lv["factor"], lv.get("continued", False)) for lv in info_more["levels"]] == [
        (2.0, False), (2.0, True), (1.0, False)]
    centre = (slice(None), 0, slice(10, 30), slice(10, 30), slice(10, 30))
    error_short = float((flow_norm_to_disp_mm(flow_short, geom)[centre][0] - 10.0).abs().mean())
    error_more = float((flow_norm_to_disp_mm(flow_more, geom)[centre][0] - 10.0).abs().mean())
    assert error_more < 0.5 * error_short, (error_more, error_short)
    # below the threshold: exactly the run without the continuation
    far = OptimizerSettings(**{**more.__dict__, "coarse_keep_mm": 50.0})
    assert torch.equal(optimize_field(fixed, moving, geom, far)[0], flow_short)


def test_the_level_that_judges_a_coarse_start_goes_on_as_the_others():
    """The first regular level, run from a kept coarse start, is continued by ``large_motion_more_steps``
    like any level coarser than the working grid that used all its steps on large motion (it was not: lung
    20 mm family 1.498 -> 1.369 mm balanced once it is)."""
    fixed = smooth_image((48, 48, 48), seed=3, sigma=3.0)
    geom = Geometry((48, 48, 48), (2.0, 2.0, 2.0))
    moving = shift_image(fixed, [-8.0, 0.0, 0.0])  # 16 mm: the coarse start is kept
    settings = OptimizerSettings(levels=((2, 3), (1, 2)), coarse_start=((4, 12),), coarse_keep_mm=6.0,
                                 large_motion_more_steps=5)
    flow, info = optimize_field(fixed, moving, geom, settings)
    assert info["coarse_start"]["kept"] is True
    assert [(lv["factor"], lv.get("start"), lv["iterations"], lv.get("continued", False)) for lv in info["levels"]][1:] \
        == [(2.0, "coarse start", 3, False), (2.0, "initial field", 3, False), (2.0, None, 5, True), (1.0, None, 2, False)]
    stopped = OptimizerSettings(**{**settings.__dict__, "large_motion_more_steps": 0})
    centre = (slice(None), 0, slice(12, 36), slice(12, 36), slice(12, 36))
    error = float((flow_norm_to_disp_mm(flow, geom)[centre][0] - 16.0).abs().mean())
    error_stopped = float((flow_norm_to_disp_mm(optimize_field(fixed, moving, geom, stopped)[0], geom)[centre][0]
                           - 16.0).abs().mean())
    assert error < error_stopped, (error, error_stopped)


def test_coarse_start_is_kept_only_for_large_motion_it_matches_better():
    """``coarse_start`` levels run first; their result is a candidate when the motion they find reaches
    ``coarse_keep_mm`` (95th percentile where the fixed image shows tissue), and is kept when the first
    regular level, run from it and from the initial field, ends with a loss lower by ``coarse_min_gain``
    from it. Otherwise the result is exactly that of a run without the start."""
    fixed = smooth_image((48, 48, 48), seed=3, sigma=3.0)
    geom = Geometry((48, 48, 48), (2.0, 2.0, 2.0))
    base = OptimizerSettings(levels=((2, 12), (1, 4)))
    with_start = OptimizerSettings(**{**base.__dict__, "coarse_start": ((4, 12),), "coarse_keep_mm": 6.0,
                                      "coarse_min_gain": 0.04})

    def shifted(mm):
        return shift_image(fixed, [-mm / 2.0, 0.0, 0.0])

    small_flow, small_info = optimize_field(fixed, shifted(4.0), geom, with_start)  # below 6 mm: no candidate
    assert small_info["coarse_start"]["motion_p95_mm"] < 6.0 and small_info["coarse_start"]["kept"] is False
    assert torch.equal(small_flow, optimize_field(fixed, shifted(4.0), geom, base)[0])
    assert [level["factor"] for level in small_info["levels"]] == [4.0, 2.0, 1.0]  # it ran, and is reported

    # 8 mm: a candidate, but the half level catches it from the initial field as well
    flow, info = optimize_field(fixed, shifted(8.0), geom, with_start)
    assert info["coarse_start"]["motion_p95_mm"] >= 6.0 and info["coarse_start"]["loss_gain"] < 0.04
    assert info["coarse_start"]["kept"] is False
    assert [(level["factor"], level.get("start")) for level in info["levels"]] == [
        (4.0, None), (2.0, "coarse start"), (2.0, "initial field"), (1.0, None)]
    assert torch.equal(flow, optimize_field(fixed, shifted(8.0), geom, base)[0])

    # 16 mm: beyond the half level's reach from the identity, kept
    flow, info = optimize_field(fixed, shifted(16.0), geom, with_start)
    assert info["coarse_start"]["kept"] is True and info["coarse_start"]["loss_gain"] > 0.2
    centre = (slice(None), 0, slice(12, 36), slice(12, 36), slice(12, 36))
    error = float((flow_norm_to_disp_mm(flow, geom)[centre] - 16.0).abs().mean())
    without = flow_norm_to_disp_mm(optimize_field(fixed, shifted(16.0), geom, base)[0], geom)[centre]
    assert error < 0.5 and float((without - 16.0).abs().mean()) > 2 * error
