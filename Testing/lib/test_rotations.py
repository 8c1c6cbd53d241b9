"""Turns of the rotation search (engine/rotations.py): spread over all orientations, ranked like SimpleITK's metric."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetLib.engine.rotations import rank_turns, rotation_about, spread_rotations, turn_degrees
from ADRegNetLib.spatial.geometry import Geometry


def _angles_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) angles in degrees between rotations a (n, 3, 3) and b (m, 3, 3)."""
    trace = np.einsum("nji,mji->nm", a, b)
    return np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))


def _random_rotations(count: int, seed: int) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(count, 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
                     np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
                     np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], -2)


def test_spread_rotations_are_rotations_that_leave_no_orientation_far_from_one_of_them():
    turns = spread_rotations(256)
    assert turns.shape == (256, 3, 3)
    np.testing.assert_allclose(turns @ turns.transpose(0, 2, 1), np.broadcast_to(np.eye(3), turns.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(turns), 1.0, atol=1e-12)
    np.testing.assert_array_equal(turns, spread_rotations(256))
    # the short rigid fit reaches about 30 degrees: nearly every orientation must have a turn closer than that
    nearest = _angles_between(_random_rotations(4000, seed=3), turns).min(axis=1)
    assert nearest.max() < 36.0 and np.percentile(nearest, 99) < 31.0 and nearest.mean() < 20.0
    assert (_angles_between(turns, turns) + 360.0 * np.eye(256)).min() > 5.0  # no two alike
    with pytest.raises(ValueError, match="at least 1"):
        spread_rotations(0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_rotation_about_turns_by_the_angle_about_that_axis(axis):
    turn = rotation_about(axis, 45.0)
    np.testing.assert_allclose(turn @ np.eye(3)[axis], np.eye(3)[axis], atol=1e-12)
    np.testing.assert_allclose(_angles_between(turn[None], np.eye(3)[None]), 45.0, atol=1e-9)
    assert turn_degrees(turn) == pytest.approx(45.0) and turn_degrees(np.eye(3)) == 0.0
    np.testing.assert_allclose(rotation_about(axis, -45.0), turn.T, atol=1e-12)


def _blobs(size: tuple[int, int, int], spacing: float, origin, direction: np.ndarray | None = None,
           centre=(0.0, 0.0, 0.0)) -> sitk.Image:
    """A smooth asymmetric test volume (three Gaussian blobs of different sizes about the LPS point
    ``centre``) sampled on a grid."""
    geometry = Geometry(size, (spacing,) * 3, origin, np.eye(3) if direction is None else direction)
    zyx = np.stack(np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij"), -1).reshape(-1, 3)
    points = geometry.index_to_physical(zyx[:, ::-1].astype(float))
    values = np.zeros(len(points))
    for offset, width, height in (([30.0, 0.0, 0.0], 18.0, 1.0), ([-10.0, 25.0, 5.0], 12.0, 0.7),
                                  ([0.0, -5.0, 28.0], 8.0, 0.5)):
        values += height * np.exp(-np.sum((points - centre - offset) ** 2, 1) / (2 * width ** 2))
    image = sitk.GetImageFromArray(values.reshape(size[::-1]).astype(np.float32))
    geometry.apply_to_sitk(image)
    return image


def _arrays(image: sitk.Image) -> tuple[np.ndarray, Geometry]:
    return sitk.GetArrayFromImage(image), Geometry.from_sitk(image)


def test_rank_turns_scores_like_simpleitks_correlation_metric_on_oblique_grids():
    tilt = rotation_about(0, 20.0) @ rotation_about(2, -35.0)
    fixed = _blobs((16, 14, 12), 8.0, (-60.0, -50.0, -40.0))
    moving = _blobs((24, 24, 24), 7.0, tilt @ [-84.0, -84.0, -84.0], tilt, centre=(6.0, -4.0, 3.0))
    center, translation = Geometry.from_sitk(fixed).center(), np.array([4.0, -3.0, 2.0])
    turns = spread_rotations(64)[::8]
    scores = rank_turns(*_arrays(fixed), *_arrays(moving), turns, center, translation, same_modality=True)
    metric = sitk.ImageRegistrationMethod()
    metric.SetMetricAsCorrelation()
    metric.SetInterpolator(sitk.sitkLinear)
    expected = []
    for turn in turns:
        euler = sitk.Euler3DTransform()
        euler.SetCenter(center.tolist())
        euler.SetMatrix(turn.ravel().tolist(), 1e-6)
        euler.SetTranslation(translation.tolist())
        metric.SetInitialTransform(euler)
        expected.append(metric.MetricEvaluate(fixed, moving))
    # SimpleITK also counts samples up to half a voxel past the edge centres: close, not equal
    np.testing.assert_allclose(scores, expected, atol=0.03)
    assert np.argsort(scores)[0] == np.argsort(expected)[0] and np.ptp(expected) > 0.2


@pytest.mark.parametrize("same_modality", [True, False])
def test_the_true_turn_ranks_first_for_one_contrast_and_for_an_inverted_one(same_modality):
    fixed = _blobs((16, 16, 16), 8.0, (-60.0, -60.0, -60.0))
    true_turn = rotation_about(0, 50.0) @ rotation_about(1, 40.0)
    center = Geometry.from_sitk(fixed).center()
    euler = sitk.Euler3DTransform()
    euler.SetCenter(center.tolist())
    euler.SetMatrix(np.linalg.inv(true_turn).ravel().tolist(), 1e-6)
    # moving(y) = fixed(true_turn^-1 (y - c) + c): fixed point x sits at true_turn (x - c) + c in the moving image
    moving = sitk.Resample(fixed, fixed, euler, sitk.sitkLinear, 0.0)
    if not same_modality:
        moving = 1.0 - moving
    turns = np.concatenate([spread_rotations(128), true_turn[None]])
    scores = rank_turns(*_arrays(fixed), *_arrays(moving), turns, center, np.zeros(3), same_modality)
    assert np.argmin(scores) == len(turns) - 1
    assert np.all(np.isfinite(scores))


def test_a_turn_that_leaves_the_moving_image_is_not_ranked():
    fixed = _blobs((12, 12, 12), 8.0, (-44.0, -44.0, -44.0))
    far = np.array([500.0, 0.0, 0.0])
    scores = rank_turns(*_arrays(fixed), *_arrays(fixed), spread_rotations(4), Geometry.from_sitk(fixed).center(), far,
                        same_modality=True)
    assert np.all(np.isinf(scores))
