"""Hostile input through the Python API (``ADRegNetLib.engine.register``) that the command line
already refused but the engine let through or answered wrongly: masks of negative values, seeds
SimpleITK cannot repeat, regularization of the wrong type or size, a tiny physical overlap, an
initial transform that puts the images apart, and ``python -m ADRegNetLib.cohort`` settings.
Each case gets a clear error or warning naming the problem and the fix (text asserted).

Synthetic 24^3 volumes of 2 mm; runs that must reach the pipeline skip the network and the
instance optimisation (at most about a second each on 2 cores).
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetLib.cli import register_cmd
from ADRegNetLib.engine import RegistrationError, register, settings
from ADRegNetLib.engine.prealign import prealign
from ADRegNetLib.engine.masks import map_mask
from ADRegNetLib.io import normalize_intensity
from ADRegNetLib.spatial.affine import AffineMap
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.overlap import physical_overlap

REPO = Path(__file__).resolve().parents[2]
SIZE = (24, 24, 24)
GRID = Geometry(SIZE, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
#: no network, no optimisation, no pre-alignment: the checks and the stages around them only
CHEAP = dict(quality="fast", use_network=False, device="cpu", prealignment="none", instance_optimization=False,
             compute_inverse=False)


def _blobs(seed: int) -> np.ndarray:
    """(Z, Y, X) float32 smooth blobs on the 24^3 grid: structure to register, thousands of values."""
    rng = np.random.default_rng(seed)
    coarse = sitk.GetImageFromArray(rng.normal(0.0, 1.0, (6, 6, 6)).astype(np.float32))
    coarse.SetSpacing((8.0, 8.0, 8.0))
    fine = sitk.Resample(coarse, list(SIZE), sitk.Transform(), sitk.sitkBSpline, (0.0, 0.0, 0.0), (2.0, 2.0, 2.0))
    return (100.0 + 40.0 * sitk.GetArrayFromImage(fine)).astype(np.float32)


@pytest.fixture(scope="module")
def pair() -> tuple[Image, Image]:
    """Fixed blobs, and the moving image: the same shifted one voxel along x, with a little noise."""
    fixed = _blobs(0)
    moving = np.roll(fixed, 1, axis=2) + np.random.default_rng(1).normal(0, 1, fixed.shape).astype(np.float32)
    return Image(fixed, GRID, "fixed"), Image(moving, GRID, "moving")


def _quick_refusal(error, pattern: str, call) -> None:
    """``call()`` raises ``error`` matching ``pattern`` before any expensive work (< 1 s)."""
    t0 = time.perf_counter()
    with pytest.raises(error, match=pattern):
        call()
    assert time.perf_counter() - t0 < 1.0


# ------------------------------------------------------------------------------------- E1 masks
@pytest.mark.parametrize("values, shown", [(-1, "values from -1 to 0"), (0, "values from 0 to 0")])
@pytest.mark.parametrize("option", ["fixed_mask", "moving_mask", "rigid_regions"])
def test_mask_without_a_voxel_above_zero_says_so_and_names_its_values(pair, option, values, shown):
    """Before: a mask of -1 inside passed the emptiness check (any non-zero) and was then refused as 'does
    not overlap the fixed image in physical space', although it lies right on it."""
    fixed, moving = pair
    role = {"fixed_mask": "fixed mask", "moving_mask": "moving mask", "rigid_regions": "rigid-region map"}[option]
    mask = Image(values * (fixed.array > 100.0).astype(np.int64), GRID, "mask")
    pattern = (rf"^the {role} is empty: no voxel above 0 \({shown}\); a mask marks the region of interest with "
               r"values > 0: give a mask that marks it$")
    _quick_refusal(RegistrationError, pattern, lambda: register(fixed, moving, **{option: mask}, **CHEAP))


def test_mask_of_signed_values_keeps_its_positive_part(pair):
    fixed, _ = pair
    array = np.where(fixed.array > 100.0, 2, -3).astype(np.int64)
    np.testing.assert_array_equal(map_mask(Image(array, GRID, "m"), GRID, "fixed mask", "fixed image"), array > 0)


def test_float_mask_values_are_named_as_they_are():
    mask = Image(np.full((8, 8, 8), -0.25, np.float32), Geometry((8, 8, 8), (1, 1, 1), (0, 0, 0)), "m")
    with pytest.raises(RegistrationError, match=r"the fixed mask is empty: no voxel above 0 \(values from -0.25 to "
                                                r"-0.25\)"):
        map_mask(mask, GRID, "fixed mask", "fixed image")


# -------------------------------------------------------------------------------------- E2 seed
SEED_MESSAGE = (r"seed must be a whole number from 0 to 4294967294, got {}: the pre-alignment's random sampler "
                r"\(SimpleITK\) takes seed \+ 1 as an unsigned 32-bit number and reads 0 as 'seed from the clock', so "
                r"results are repeatable only in that range; give a seed in it \(0 = default\)$")


@pytest.mark.parametrize("seed, shown", [
    (-1, "-1"),  # before: SimpleITK got 0, "seed from the clock": a different result on every run
    (2 ** 32 - 1, "4294967295"),  # before: an OverflowError traceback from SimpleITK
    (np.int64(-5), "-5"),
    (1.5, "1.5"),
    (float("nan"), "nan"),
    ("3", r"'3' \(a str\)"),
    (True, r"True \(a bool\)"),
    (None, r"None \(a NoneType\)"),
])
def test_seed_outside_what_simpleitk_repeats_is_refused(pair, seed, shown):
    fixed, moving = pair
    _quick_refusal(RegistrationError, "^" + SEED_MESSAGE.format(shown),
                   lambda: register(fixed, moving, seed=seed, **CHEAP))


def test_seed_error_is_a_value_error(pair):
    """RegistrationError is a ValueError: callers that catch ValueError keep working."""
    with pytest.raises(ValueError):
        register(*pair, seed=-1, **CHEAP)


@pytest.mark.parametrize("seed", [0, 7, np.int64(7), 7.0, settings.MAX_SEED])
def test_seeds_in_range_are_accepted(pair, seed):
    result = register(*pair, seed=seed, **CHEAP)
    assert result.disp_mm.shape == (3, *GRID.shape)


def test_the_largest_seed_reaches_simpleitk_and_repeats(pair):
    """MAX_SEED + 1 is the largest unsigned 32-bit number: the pre-alignment's sampler takes it."""
    fixed, moving = (normalize_intensity(image, "generic") for image in pair)
    first, info = prealign(fixed, moving, mode="rigid", seed=settings.MAX_SEED, iterations=5)
    again, _ = prealign(fixed, moving, mode="rigid", seed=settings.MAX_SEED, iterations=5)
    assert "error" not in info
    np.testing.assert_array_equal(first.matrix, again.matrix)
    np.testing.assert_array_equal(first.offset, again.offset)


@pytest.mark.parametrize("seed", [-1, 2 ** 32 - 1, 1.5, True])
def test_prealign_called_directly_refuses_a_bad_seed(pair, seed):
    with pytest.raises(ValueError, match=r"pre-alignment seed must be a whole number from 0 to 4294967294"):
        prealign(*pair, mode="rigid", seed=seed)


# ---------------------------------------------------------------------------------- E3 regularization
REG_TYPE = r"regularization must be a positive number \(1 = default\), got {}; give a number such as 0.5 or 2$"
REG_SIGN = r"regularization must be a positive number \(1 = default\), got {}$"
REG_BOUND = (r"regularization {} is above 100: at 100 the smoothing is already wider than any scan \(the deformation "
             r"is then nearly a translation\), and larger values only cost time; give at most 100 \(1 = default\)$")

REG_FLOOR = (r"regularization {} is below 0.01: at 0.01 the field is already smoothed by nothing; give at least 0.01 "
             r"\(1 = default; 0.25 between two people\)$")


@pytest.mark.parametrize("value, pattern", [
    (True, REG_TYPE.format(r"True \(a bool\)")),  # before: accepted as 1
    (np.bool_(True), REG_TYPE.format(r"np.True_ \(a bool\)|True \(a bool_\)")),
    ("2", REG_TYPE.format(r"'2' \(a str\)")),
    (None, REG_TYPE.format(r"None \(a NoneType\)")),
    (Fraction(1, 2), REG_TYPE.format(r"Fraction\(1, 2\) \(a Fraction\)")),  # np.sqrt in the pipeline cannot take it
    (0, REG_SIGN.format("0")),
    (np.float32(-2.0), REG_SIGN.format("-2.0")),
    (float("inf"), REG_SIGN.format("inf")),
    (100.5, REG_BOUND.format("100.5")),
    (1e7, REG_BOUND.format(r"1e\+07")),  # before: ran for hours
    (np.float32(1e30), REG_BOUND.format(r"1e\+30")),  # before: a MemoryError traceback
    # before: numpy's 'overflow encountered in square' leaked out, and every value below 1e-20 gave one field
    (5e-324, REG_FLOOR.format("4.94066e-324")),
    (0.001, REG_FLOOR.format("0.001")),
])
def test_bad_regularization_is_refused(pair, value, pattern):
    _quick_refusal(RegistrationError, "^" + pattern, lambda: register(*pair, regularization=value, **CHEAP))


@pytest.mark.parametrize("name, value", [("landmarks_guide", "False"), ("compute_inverse", "no"),
                                         ("use_network", 0), ("instance_optimization", None)])
def test_switches_must_be_true_or_false(pair, name, value):
    """Before: landmarks_guide="False" (a string) counted as True and the pairs guided a run meant to check it."""
    _quick_refusal(RegistrationError, rf"^{name} must be True or False, got {value!r} \(a {type(value).__name__}\)$",
                   lambda: register(*pair, **{**CHEAP, name: value}))


@pytest.mark.parametrize("value", [np.float32(2.0), np.float64(2.0), np.int64(2), 2, 100.0, 0.01])
def test_regularization_as_any_real_number_is_accepted(pair, value):
    """Before: np.float32(2.0) was refused as 'must be a positive number ..., got 2.0'."""
    result = register(*pair, regularization=value, **CHEAP)
    assert result.metrics["regularization"] == value


def test_numpy_regularization_runs_the_whole_optimisation(pair):
    """np.float32 reaches the optimisation and the refinement and finds the 1-voxel (2 mm) shift along x
    (its float32 arithmetic moves the field by about 1e-5 mm against the Python float 2.0)."""
    result = register(*pair, regularization=np.float32(2.0), **dict(CHEAP, instance_optimization=True))
    inner = result.disp_mm[:, 4:-4, 4:-4, 4:-4].reshape(3, -1)
    np.testing.assert_allclose(np.median(inner, axis=1), [2.0, 0.0, 0.0], atol=0.3)
    assert result.metrics["refinement"] is not None


def test_the_bounds_live_in_the_engine_settings_and_the_cli_uses_them():
    assert settings.MAX_REGULARIZATION == 100.0 and settings.MAX_SEED == 2 ** 32 - 2
    assert {"MAX_REGULARIZATION", "MAX_SEED", "SMALL_PHYSICAL_OVERLAP"} <= set(settings.__all__)
    assert register_cmd.MAX_REGULARIZATION is settings.MAX_REGULARIZATION
    assert register_cmd.MAX_SEED is settings.MAX_SEED


# ------------------------------------------------------------------------------ E5 tiny overlap
SMALL_OVERLAP = (r"the fixed and moving images share only {}% of the smaller one's volume in physical space: the "
                 r"result will be unreliable; check the image headers \(origin and direction: an axis direction "
                 r"flipped in one image, with the same origin, gives such an overlap\), or give an initial transform")


def _moved(image: Image, geometry: Geometry) -> Image:
    return Image(image.array, geometry, "moving")


def test_flipped_axis_with_the_same_origin_warns_of_the_tiny_overlap(pair):
    """A header whose x direction is flipped (same origin): the boxes share one voxel layer, 1/24."""
    fixed, moving = pair
    flipped = Geometry(SIZE, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), np.diag([-1.0, 1.0, 1.0]))
    assert physical_overlap(GRID, flipped) == pytest.approx(1 / 24)
    result = register(fixed, _moved(moving, flipped), **dict(CHEAP, prealignment="rigid"))
    warnings_ = [w for w in result.metrics["warnings"] if "share only" in w]
    assert len(warnings_) == 1 and re.fullmatch(SMALL_OVERLAP.format("4.2"), warnings_[0])
    assert result.metrics["prealignment"]["physical_overlap"] == pytest.approx(1 / 24, abs=1e-3)


@pytest.mark.parametrize("shift_voxels, warned", [
    (22, True),  # 2 of 24 voxels shared: 8.3 %
    (19, False),  # 5 of 24: 20.8 %, headers plausibly of one scan region
    (0, False),  # the same grid
    (40, False),  # apart: the "do not overlap" warning instead, not both
])
def test_small_overlap_warning_only_below_its_threshold(pair, shift_voxels, warned):
    fixed, moving = pair
    shifted = Geometry(SIZE, (2.0, 2.0, 2.0), (2.0 * shift_voxels, 0.0, 0.0))
    result = register(fixed, _moved(moving, shifted), **dict(CHEAP, prealignment="rigid"))
    small = [w for w in result.metrics["warnings"] if "share only" in w]
    assert bool(small) == warned
    if warned:
        assert small[0].startswith("the fixed and moving images share only 8.3% of the smaller one's volume")
    apart = any("do not overlap in physical space" in w for w in result.metrics["warnings"])
    assert apart == (shift_voxels >= 24)


def test_no_small_overlap_warning_with_an_initial_transform(pair):
    """The user's transform, not the headers, places the images: nothing to warn about."""
    fixed, moving = pair
    shifted = Geometry(SIZE, (2.0, 2.0, 2.0), (44.0, 0.0, 0.0))
    result = register(fixed, _moved(moving, shifted), initial_transform=AffineMap(np.eye(3), [44.0, 0.0, 0.0]),
                      **CHEAP)
    assert not any("share only" in w for w in result.metrics["warnings"])


# ------------------------------------------------------------------- E7 the given initial transform
GIVEN = (r"; check its direction: it must map fixed to moving points \(ITK's convention, as ANTs, elastix and 3D "
         r"Slicer write it; invert a moving -> fixed one\) and belong to these two images$")


@pytest.mark.parametrize("offset_x", [1000.0, -200.0])
def test_initial_transform_that_leaves_no_overlap_is_named(pair, offset_x):
    """Before: '... give landmark pairs / an initial alignment', although one was given. -200: the moving
    image lies 200 mm along +x and the transform holds moving -> fixed (the wrong direction)."""
    fixed, moving = pair
    far = _moved(moving, Geometry(SIZE, (2.0, 2.0, 2.0), (200.0, 0.0, 0.0)))
    with pytest.raises(RegistrationError, match=r"^the given initial transform leaves the images without overlap "
                                                r"\(seen through it, the moving image covers less than 1% of the "
                                                r"fixed image\)" + GIVEN):
        register(fixed, far, initial_transform=AffineMap(np.eye(3), [offset_x, 0.0, 0.0]), **CHEAP)


def test_initial_transform_that_leaves_only_an_edge_is_named(pair):
    """44 mm: 2 voxel layers of the fixed grid land inside the moving image, within the edge margin."""
    fixed, moving = pair
    with pytest.raises(RegistrationError, match=r"^the given initial transform leaves the images without overlap "
                                                r"beyond the moving image's edges" + GIVEN):
        register(fixed, moving, initial_transform=AffineMap(np.eye(3), [44.0, 0.0, 0.0]), **CHEAP)


def test_the_right_initial_transform_registers(pair):
    fixed, moving = pair
    far = _moved(moving, Geometry(SIZE, (2.0, 2.0, 2.0), (200.0, 0.0, 0.0)))
    result = register(fixed, far, initial_transform=AffineMap(np.eye(3), [200.0, 0.0, 0.0]), **CHEAP)
    np.testing.assert_allclose(result.disp_mm[0].mean(), 200.0, atol=1e-3)


def test_without_an_initial_transform_the_advice_is_still_to_give_one(pair):
    fixed, moving = pair
    far = _moved(moving, Geometry(SIZE, (2.0, 2.0, 2.0), (500.0, 0.0, 0.0)))
    with pytest.raises(RegistrationError, match=r"^the moving image does not overlap the fixed image after "
                                                r"pre-alignment; check that both scans show the same anatomy, or give "
                                                r"landmark pairs / an initial alignment$"):
        register(fixed, far, **CHEAP)


# ------------------------------------------------------------------ E6 python -m ADRegNetLib.cohort
@pytest.mark.parametrize("extra, pattern", [
    (("--regularization", "1e9"), r"--regularization 1e\+09 is above 100: at 100 the smoothing"),
    (("--regularization", "-1"), r"regularization must be a positive number \(1 = default\), got -1.0$"),
    (("--threads", "99999"), r"--threads 99999 is more than 1024; .*\(0 = automatic\)$"),
    (("--threads", "-1"), r"--threads must be a positive number of CPU threads \(0 = automatic\), got -1$"),
])
def test_cohort_module_refuses_bad_settings_before_any_pair(tmp_path, capsys, extra, pattern):
    """Before: ``python -m ADRegNetLib.cohort`` skipped the checks of ``adregnet batch`` (1e9 started the
    cohort and every pair failed, or ran for hours)."""
    from ADRegNetLib.cohort.cli import main

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("id,fixed,moving\np1,f.nii.gz,m.nii.gz\n")
    assert main([str(pairs), "-o", str(tmp_path / "cohort"), "-q", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adregnet batch: error: ") and len(err.splitlines()) == 1
    assert re.search(pattern, err), err
    assert not (tmp_path / "cohort").exists()


def test_cohort_module_reads_numbers_strictly(tmp_path, capsys):
    """``nan`` (and ``1_0``, which ``float`` reads as 10) are refused while the arguments are read."""
    from ADRegNetLib.cohort.cli import main

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("id,fixed,moving\np1,f.nii.gz,m.nii.gz\n")
    with pytest.raises(SystemExit) as info:
        main([str(pairs), "-o", str(tmp_path / "cohort"), "-q", "--regularization", "nan"])
    assert info.value.code == 2
    assert "argument --regularization: 'nan' is not a finite number" in capsys.readouterr().err
    assert not (tmp_path / "cohort").exists()


def test_python_dash_m_cohort_refuses_bad_regularization(tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("id,fixed,moving\np1,f.nii.gz,m.nii.gz\n")
    proc = subprocess.run([sys.executable, "-m", "ADRegNetLib.cohort", str(pairs), "-o", str(tmp_path / "out"),
                           "--regularization", "1e7"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("adregnet batch: error: --regularization 1e+07 is above 100")
    assert not (tmp_path / "out").exists()
