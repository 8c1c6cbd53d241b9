"""Tests of the registration engine ``register()`` (ADRegNetLib.engine).

Every number is checked against an independent reference: the demo lung pair's known deformation
(landmarks mapped through the true field when the pair was made), SimpleITK's own
``DisplacementFieldTransform`` / resampler / Jacobian filter, or an analytic setup.

Speed: one registration of the demo pair (57x78x64, quality "fast", no network) is shared by the
module (``lung_run``); the other runs use a 40x40x32 crop of the same CT.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetLib.engine import RegistrationCancelled, RegistrationResult, register
from ADRegNetLib.engine.stages import estimate_memory_gb, working_geometry
from ADRegNetLib.engine.settings import QUALITY_SETTINGS
from ADRegNetLib.io import read_image, read_landmarks, to_sitk
from ADRegNetLib.io.image import Image
from ADRegNetLib.io.transforms import transform_points
from ADRegNetLib.metrics import tre
from ADRegNetLib.spatial.geometry import Geometry
from brain_helpers import needs_t1, t1_image

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "SampleData"

FAST = dict(quality="fast", use_network=False, device="cpu")


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def lung():
    """The demo pair: real lung CT (fixed) and a copy deformed by a known field (moving), 51 landmark pairs."""
    files = [SAMPLE / n for n in ("lung_fixed.nii.gz", "lung_moving.nii.gz", "lung_fixed_landmarks.csv",
                                   "lung_moving_landmarks.csv")]
    if not all(p.is_file() for p in files):
        pytest.skip("demo data Resources/SampleData/lung_* missing")
    fixed = read_image(files[0], name="lung_fixed")
    moving = read_image(files[1], name="lung_moving")
    return fixed, moving, read_landmarks(files[2]), read_landmarks(files[3])


def crop_image(image: Image, start_xyz, size_xyz) -> Image:
    """A sub-volume with its geometry (same spacing/direction, origin moved to the first voxel)."""
    (x0, y0, z0), (nx, ny, nz) = start_xyz, size_xyz
    array = np.ascontiguousarray(image.array[z0:z0 + nz, y0:y0 + ny, x0:x0 + nx])
    g = image.geometry
    origin = g.index_to_physical(np.array([[x0, y0, z0]], dtype=np.float64))[0]
    return Image(array, Geometry((nx, ny, nz), g.spacing, origin, g.direction), image.name + "_crop")


@pytest.fixture(scope="module")
def lung_crop(lung):
    """40x40x32 crop of the fixed CT and of the moving CT, plus the landmark pairs inside it."""
    fixed, moving, fp, mp = lung
    f = crop_image(fixed, (8, 20, 16), (40, 40, 32))
    m = crop_image(moving, (8, 20, 16), (40, 40, 32))
    inside = f.geometry.contains(fp, margin_voxels=-2.0) & m.geometry.contains(mp, margin_voxels=-2.0)
    assert inside.sum() >= 15, "the crop should hold enough landmarks for the tests"
    return f, m, fp[inside], mp[inside]


@pytest.fixture(scope="module")
def lung_run(lung):
    """ONE registration of the demo pair (default pre-alignment, auto preset), with everything recorded."""
    fixed, moving, fp, mp = lung
    copies = (fixed.array.copy(), moving.array.copy(), fixed.geometry, moving.geometry)
    calls: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    result = register(fixed, moving, progress=lambda f, t: calls.append((f, t)), seed=0, **FAST)
    return {"result": result, "progress": calls, "copies": copies, "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------- the shared demo run
def test_recovers_known_lung_deformation(lung, lung_run):
    """Landmarks (not given to the engine) are mapped close to their known partners."""
    fixed, _, fp, mp = lung
    result: RegistrationResult = lung_run["result"]
    before = tre(fp, mp)["mean"]
    after = tre(np.asarray(transform_points(result.disp_mm, fixed.geometry, fp)), mp)
    assert before == pytest.approx(3.45, abs=0.01)  # the demo pair as documented
    assert after["mean"] < 0.4 * before, f"TRE {before:.2f} -> {after['mean']:.2f} mm"
    assert after["mean"] < 1.2
    assert after["p95"] < 2.5
    # no landmarks were given, so the result carries no landmark numbers
    assert result.warped_fixed_landmarks is None and "tre_after" not in result.metrics


def test_no_folds_and_jacobian_matches_simpleitk(lung_run):
    result = lung_run["result"]
    det = result.jacobian.array
    assert det.shape == result.geometry.shape and det.dtype == np.float32
    assert det.min() > 0.0
    assert result.metrics["jacobian"]["folding_fraction"] == 0.0
    assert result.metrics["jacobian"]["min"] == pytest.approx(float(det.min()), abs=1e-6)
    # independent reference: ITK's displacement-field Jacobian determinant (central differences)
    field = sitk.GetImageFromArray(np.moveaxis(result.disp_mm, 0, -1).astype(np.float64), isVector=True)
    result.geometry.apply_to_sitk(field)
    ref = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field))
    inner = (slice(1, -1),) * 3
    np.testing.assert_allclose(det[inner], ref[inner], atol=2e-4)


def test_warped_matches_simpleitk_resampling(lung, lung_run):
    """result.warped == moving(x + u(x)) as SimpleITK resamples it with the same field."""
    fixed, moving, _, _ = lung
    result = lung_run["result"]
    field = sitk.GetImageFromArray(np.moveaxis(result.disp_mm, 0, -1).astype(np.float64), isVector=True)
    result.geometry.apply_to_sitk(field)
    transform = sitk.DisplacementFieldTransform(field)
    ref_img = to_sitk(fixed, np.float32)
    ref = sitk.GetArrayFromImage(sitk.Resample(to_sitk(moving, np.float32), ref_img, transform, sitk.sitkLinear, 0.0))
    warped = result.warped.array
    assert warped.shape == fixed.array.shape and result.warped.geometry == fixed.geometry
    inner = (slice(2, -2),) * 3
    diff = np.abs(warped[inner] - ref[inner])
    assert np.percentile(diff, 99) < 1.0  # HU; the CT spans ~2500 HU
    assert np.median(diff) < 0.05


def test_similarity_improves_and_metrics_contract(lung_run):
    m = lung_run["result"].metrics
    assert m["preset"] == "lung-ct"
    assert "lung-density voxels" in m["preset_reason"]
    assert m["quality"] == "fast" and m["device"] == "cpu" and m["network_used"] is False
    # global NCC is already ~0.98 before (same scan); the remaining dissimilarity must shrink by half
    assert 1.0 - m["similarity_after"]["ncc"] < 0.5 * (1.0 - m["similarity_before"]["ncc"])
    assert m["working_grid"]["size"] == [57, 78, 116]  # 2.7 x 2.7 x 5 mm voxels: isotropic at the finest 2.7 mm
    assert set(m["timings_s"]) >= {"validate", "prealign", "optimize", "outputs", "total"}
    assert m["timings_s"]["total"] <= lung_run["seconds"] + 0.01
    assert m["warnings"] == []
    assert m["prealignment"]["mode"] == "affine"
    assert np.asarray(m["prealignment"]["matrix"]).shape == (3, 3)


def test_result_arrays_follow_the_contract(lung, lung_run):
    fixed = lung[0]
    result = lung_run["result"]
    assert result.disp_mm.shape == (3, *fixed.array.shape)
    assert result.disp_mm.dtype == np.float32
    assert np.all(np.isfinite(result.disp_mm))
    assert result.geometry == fixed.geometry
    # the deformation is mostly superior-inferior (z), as the demo pair was made
    mean_abs = np.abs(result.disp_mm).reshape(3, -1).mean(axis=1)
    assert mean_abs[2] > mean_abs[0] and mean_abs[2] > mean_abs[1]


def test_progress_is_monotone_and_reaches_one(lung_run):
    calls = lung_run["progress"]
    fractions = [f for f, _ in calls]
    assert len(calls) >= 5
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(b >= a for a, b in zip(fractions, fractions[1:])), fractions
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert all(isinstance(t, str) and t for _, t in calls)
    assert calls[-1][1] == "done"
    assert any(t.startswith("optimising level") for _, t in calls)


def test_inputs_are_not_modified(lung, lung_run):
    fixed, moving, _, _ = lung
    f_arr, m_arr, f_geo, m_geo = lung_run["copies"]
    np.testing.assert_array_equal(fixed.array, f_arr)
    np.testing.assert_array_equal(moving.array, m_arr)
    assert fixed.geometry == f_geo and moving.geometry == m_geo
    assert fixed.array.dtype == np.float32 and moving.array.dtype == np.float32


@needs_t1
def test_recovers_synthetic_deformation_of_real_brain_t1():
    """The real T1 (VoxelMorph test scan) at 3 mm, warped by a known smooth diffeomorphism
    (ADRegNetLib.train.synthetic): TRE at 40 landmarks falls well below its start, no folds."""
    from ADRegNetLib.train.synthetic import make_synthetic_pair

    small = t1_image(3)
    geometry = small.geometry
    pair = make_synthetic_pair(small, np.random.default_rng(1), max_disp_mm=10.0,
                               smoothness_mm=40.0, n_landmarks=40, intensity_change=False)
    result = register(pair.fixed, pair.moving, seed=0, **FAST)
    before = tre(pair.fixed_points, pair.moving_points)["mean"]
    after = tre(np.asarray(transform_points(result.disp_mm, geometry, pair.fixed_points)), pair.moving_points)["mean"]
    assert before > 2.0
    assert after < 0.5 * before, f"TRE {before:.2f} -> {after:.2f} mm"
    assert result.jacobian.array.min() > 0
    assert result.metrics["preset"] == "brain-mri"
    # the recovered field is close to the true one inside the brain, not only at the landmarks
    brain = pair.fixed.array > 0.1
    err = np.linalg.norm(result.disp_mm - pair.disp_mm, axis=0)[brain].mean()
    assert err < 0.4 * np.linalg.norm(pair.disp_mm, axis=0)[brain].mean()


# ----------------------------------------------------------------------------- cheaper runs
def test_landmarks_pull_the_result(lung_crop):
    """Identical images and landmark pairs that say 'shifted 4 mm superior': only the landmark term
    can move the field, so TRE at the landmarks must drop well below the run without landmarks."""
    fixed, _, fp, _ = lung_crop
    target = fp + np.array([0.0, 0.0, 4.0])
    plain = register(fixed, fixed.copy(), prealignment="none", **FAST)
    pulled = register(fixed, fixed.copy(), prealignment="none", fixed_landmarks=fp, moving_landmarks=target, **FAST)
    without = tre(np.asarray(transform_points(plain.disp_mm, fixed.geometry, fp)), target)["mean"]
    with_ = pulled.metrics["tre_after"]["mean"]
    assert without == pytest.approx(4.0, abs=0.2)
    assert with_ < 0.5 * without, f"TRE with landmarks {with_:.2f} mm vs without {without:.2f} mm"
    assert pulled.metrics["tre_before"]["mean"] == pytest.approx(4.0, abs=1e-9)
    # warped_fixed_landmarks is x + u(x) at the fixed landmarks, consistent with tre_after
    d = np.linalg.norm(pulled.warped_fixed_landmarks - target, axis=1)
    np.testing.assert_allclose(d, pulled.metrics["tre_after"]["per_landmark"], atol=1e-9)
    assert pulled.jacobian.array.min() > 0


def test_landmarks_improve_tre_on_the_demo_pair(lung, lung_run):
    """Real use: the same demo registration with its 51 landmark pairs given must map them at least as
    close as the run without them (``lung_run``)."""
    fixed, moving, fp, mp = lung
    without = tre(np.asarray(transform_points(lung_run["result"].disp_mm, fixed.geometry, fp)), mp)["mean"]
    guided = register(fixed, moving, fixed_landmarks=fp, moving_landmarks=mp, seed=0, **FAST)
    assert guided.metrics["tre_after"]["mean"] < without


def test_landmarks_are_not_modified(lung_crop):
    fixed, moving, fp, mp = lung_crop
    fp_copy, mp_copy = fp.copy(), mp.copy()
    register(fixed, moving, fixed_landmarks=fp, moving_landmarks=mp, prealignment="none", instance_optimization=False,
             quality="fast", use_network=False, device="cpu")
    np.testing.assert_array_equal(fp, fp_copy)
    np.testing.assert_array_equal(mp, mp_copy)


def test_deterministic_on_cpu(lung_crop):
    """Same inputs and seed twice (pre-alignment included) -> bit-identical outputs."""
    fixed, moving, _, _ = lung_crop
    a = register(fixed, moving, seed=3, **FAST)
    b = register(fixed, moving, seed=3, **FAST)
    assert np.array_equal(a.disp_mm, b.disp_mm)
    assert np.array_equal(a.warped.array, b.warped.array)
    assert np.array_equal(a.jacobian.array, b.jacobian.array)
    assert a.metrics["prealignment"]["matrix"] == b.metrics["prealignment"]["matrix"]
    assert np.abs(a.disp_mm).max() > 0.5  # a real deformation, not a trivial zero field
    # a crop whose field of view ends inside the chest: updates and field smoothed without replicating its faces
    assert a.metrics["instance_optimization"]["smoothing_edges"] == "renormalise"
    assert a.metrics["refinement"]["smoothing_edges"] == "renormalise"


class _CancelAfter:
    """should_stop() that turns True after ``n`` progress calls; records when."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls: list[float] = []
        self.flipped_at: float | None = None

    def progress(self, fraction: float, text: str) -> None:
        self.calls.append(fraction)
        if len(self.calls) == self.n and self.flipped_at is None:
            self.flipped_at = time.perf_counter()

    def should_stop(self) -> bool:
        return self.flipped_at is not None


def test_cancel_during_optimisation_stops_within_a_second(lung_crop):
    fixed, moving, _, _ = lung_crop
    c = _CancelAfter(6)  # 3 stage reports (no network), then optimisation reports every 5 steps
    out = "not assigned"
    with pytest.raises(RegistrationCancelled, match="cancelled by the user"):
        out = register(fixed, moving, prealignment="none", progress=c.progress, should_stop=c.should_stop, **FAST)
    latency = time.perf_counter() - c.flipped_at
    assert out == "not assigned"  # nothing returned
    assert latency < 1.0, f"cancel took {latency:.2f} s"
    assert len(c.calls) == 6 and 0.25 < c.calls[-1] < 0.9  # it stopped in the optimisation
    assert 1.0 not in c.calls


def test_cancel_before_start_does_no_work(lung_crop):
    fixed, moving, _, _ = lung_crop
    calls = []
    t0 = time.perf_counter()
    with pytest.raises(RegistrationCancelled):
        register(fixed, moving, progress=lambda f, t: calls.append(f), should_stop=lambda: True, **FAST)
    assert time.perf_counter() - t0 < 1.0
    assert calls == [0.0]


def test_cancel_during_prealignment_is_prompt(lung):
    """The pre-alignment of a displaced demo pair takes about a second; a cancel then must not wait for
    it to end. (Moved 15 mm so that the pre-alignment has something to do: an aligned pair's start
    leaves nothing to gain and is not optimised.)"""
    fixed, moving, _, _ = lung
    g = moving.geometry
    moving = Image(moving.array, Geometry(g.size, g.spacing, g.origin + np.array([15.0, 0.0, 0.0]), g.direction),
                   "displaced")
    flip = {}

    def should_stop() -> bool:
        now = time.perf_counter()
        if now >= flip["at"]:
            flip.setdefault("first_true", now)
            return True
        return False

    stages = []
    flip["at"] = time.perf_counter() + 0.4
    with pytest.raises(RegistrationCancelled):
        register(fixed, moving, progress=lambda f, t: stages.append(t), should_stop=should_stop, **FAST)
    end = time.perf_counter()
    assert end - flip["at"] < 1.0, f"cancel took {end - flip['at']:.2f} s; stages reported: {stages}"
    assert "pre-align" in stages[-1], stages  # it was cancelled during the pre-alignment


# ------------------------------------------------------------------ large inputs, no big run
def test_working_grid_is_capped_for_large_input():
    big = Geometry((512, 512, 300), (0.7, 0.7, 1.0), (-180.0, -180.0, -150.0))
    cap = 96 ** 3
    work, note = working_geometry(big, 2.0, cap)
    assert work.num_voxels <= cap * 1.05
    assert np.all(work.spacing > 2.0)
    np.testing.assert_allclose(work.extent_mm, big.extent_mm, rtol=0.02)  # same field of view
    np.testing.assert_allclose(work.origin, big.origin, atol=1e-9)
    assert note is not None and note.startswith("large input: working at")
    assert "to stay within this quality's" in note and "working voxels (time and memory" in note
    assert f"{work.size[0]}x{work.size[1]}x{work.size[2]}" in note
    # an input already small enough is left at the target spacing, without a note
    small = Geometry((100, 100, 80), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    work2, note2 = working_geometry(small, 2.0, cap)
    assert note2 is None
    np.testing.assert_allclose(work2.spacing, 2.0, rtol=0.03)
    # never finer than the fixed image's finest spacing; thick slices interpolated to isotropic voxels
    coarse = Geometry((40, 40, 20), (3.0, 3.0, 5.0), (0.0, 0.0, 0.0))
    work3, _ = working_geometry(coarse, 2.0, cap)
    np.testing.assert_allclose(work3.spacing, 3.0, rtol=0.03)
    assert work3.size[:2] == coarse.size[:2] and work3.size[2] == 33
    np.testing.assert_allclose(work3.extent_mm, coarse.extent_mm, rtol=0.03)
    thick = Geometry((200, 200, 30), (1.0, 1.0, 4.0), (0.0, 0.0, 0.0))
    work4, note4 = working_geometry(thick, 2.0, cap)
    assert note4 is None
    np.testing.assert_allclose(work4.spacing, 2.0, rtol=0.03)


def test_memory_estimate_for_256_cubed_is_under_6_gb():
    g = Geometry((256, 256, 256), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    q = QUALITY_SETTINGS["balanced"]
    work, _ = working_geometry(g, q.working_spacing_mm, q.max_working_voxels)
    gb = estimate_memory_gb(g, work)
    assert 0.1 < gb < 6.0
    # larger inputs cost more
    g2 = Geometry((512, 512, 300), (0.7, 0.7, 1.0), (0.0, 0.0, 0.0))
    work2, _ = working_geometry(g2, q.working_spacing_mm, q.max_working_voxels)
    assert estimate_memory_gb(g2, work2) > gb


def test_package_register_stays_the_function_after_importing_the_pipeline():
    """The pipeline module is named apart from its function, so importing it never shadows
    ``ADRegNetLib.engine.register`` (the second registration in one process got a module once)."""
    import importlib

    import ADRegNetLib.engine as engine

    importlib.import_module("ADRegNetLib.engine.pipeline")
    from ADRegNetLib.engine import register as again

    assert callable(again) and callable(engine.register)
