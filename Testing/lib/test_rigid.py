"""Rigid regions (ADRegNetLib.spatial.rigid): a rigid block inside a deforming body, blending, errors."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from geometry_helpers import rotation_matrix as rotation
from ADRegNetLib.spatial import Geometry, jacobian_determinant
from ADRegNetLib.spatial.filters import gaussian_smooth
from ADRegNetLib.spatial.rigid import RigidRegions, rigidify


def voxel_centres(g: Geometry) -> np.ndarray:
    """(3, Z, Y, X) LPS mm."""
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in g.shape], indexing="ij")
    return g.index_to_physical(np.stack([xx.ravel(), yy.ravel(), zz.ravel()], 1)).T.reshape(3, *g.shape)


def smooth_random(g: Geometry, amplitude_mm: float, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    noise = F.interpolate(torch.randn((1, 3, 4, 4, 4), generator=gen), size=g.shape, mode="trilinear", align_corners=True)
    field = gaussian_smooth(noise, 3.0)[0].numpy()
    return (field * amplitude_mm / np.linalg.norm(field, axis=0).mean()).astype(np.float32)


def rigid_field(points: np.ndarray, centre: np.ndarray, rot: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Displacement of x -> rot (x - centre) + centre + shift at (3, Z, Y, X) points."""
    rel = points - centre[:, None, None, None]
    return np.einsum("ij,jzyx->izyx", rot - np.eye(3), rel) + shift[:, None, None, None]


@pytest.fixture(scope="module")
def body_with_block():
    """An oblique 2-2-2.5 mm grid; a block moving rigidly (rotation + translation) inside a smooth,
    deforming body; the true field blends the two over ~8 mm, then 0.5 mm voxel noise is added."""
    g = Geometry((64, 60, 56), [2.0, 2.0, 2.5], [-60.0, -50.0, 20.0], rotation([5.0, 10.0, -8.0]))
    labels = np.zeros(g.shape, np.int16)
    labels[20:32, 22:40, 25:45] = 1  # z, y, x
    pts = voxel_centres(g)
    centre = pts[:, labels == 1].mean(axis=1)
    rot, shift = rotation([4.0, -3.0, 6.0]), np.array([2.5, -1.5, 3.0])
    dist = ndimage.distance_transform_edt(labels == 0, sampling=g.spacing[::-1])
    w = np.exp(-(dist / 8.0) ** 2)
    true = (w * rigid_field(pts, centre, rot, shift) + (1 - w) * smooth_random(g, 3.0, seed=1)).astype(np.float32)
    noisy = true + np.random.default_rng(0).normal(0, 0.5, true.shape).astype(np.float32)
    return {"g": g, "labels": labels, "pts": pts, "centre": centre, "rot": rot, "shift": shift, "noisy": noisy,
            "dist": dist}


def test_block_becomes_rigid_and_its_corners_are_recovered(body_with_block):
    c = body_with_block
    g, labels = c["g"], c["labels"]
    regions = RigidRegions(labels, g, blend_mm=10.0)
    start = time.perf_counter()
    out = regions.project(c["noisy"])
    seconds = time.perf_counter() - start
    det = jacobian_determinant(torch.from_numpy(out)[None], g)[0].numpy()
    det_before = jacobian_determinant(torch.from_numpy(c["noisy"])[None], g)[0].numpy()
    inside = labels == 1
    print(f"64x60x56 projection {seconds * 1000:.0f} ms; det J inside std {det[inside].std():.2e} "
          f"(before {det_before[inside].std():.3f})")
    assert det_before[inside].std() > 0.1  # the noise is visible in the Jacobian before
    assert det[inside].std() <= 0.01
    assert abs(det[inside].mean() - 1.0) <= 0.01
    corners_idx = np.array([[x, y, z] for x in (25, 44) for y in (22, 39) for z in (20, 31)])
    corners = g.index_to_physical(corners_idx.astype(float))
    mapped = corners + out[:, corners_idx[:, 2], corners_idx[:, 1], corners_idx[:, 0]].T
    truth = (corners - c["centre"]) @ c["rot"].T + c["centre"] + c["shift"]
    assert np.linalg.norm(mapped - truth, axis=1).max() <= 0.5
    (rot, trans), = regions.fit(c["noisy"])
    assert np.allclose(rot, c["rot"], atol=5e-3)
    assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-9) and np.linalg.det(rot) == pytest.approx(1.0)
    assert np.allclose(trans, c["centre"] + c["shift"] - c["rot"] @ c["centre"], atol=0.2)


def test_field_far_from_the_block_is_untouched_and_the_blend_is_smooth(body_with_block):
    c = body_with_block
    g = c["g"]
    out = rigidify(c["noisy"], g, c["labels"], blend_mm=10.0)
    far = c["dist"] > 10.0 + g.spacing.max() + 1e-6
    assert np.array_equal(out[:, far], c["noisy"][:, far])
    # The smooth body motion is far from rigid over the block, so the correction is large (several
    # mm); it must fade without folding and without steps steeper than the smoothstep's slope.
    smooth = smooth_random(g, 3.0, seed=1)
    clean = rigidify(smooth, g, c["labels"], blend_mm=10.0)
    correction = clean - smooth
    steepest = 1.5 * g.spacing.max() / 10.0  # smoothstep's largest slope per voxel
    steps = max(np.abs(np.diff(correction, axis=a)).max() for a in (1, 2, 3))
    assert np.abs(correction).max() > 2.0
    assert steps <= (steepest + 0.1) * np.abs(correction).max(), steps
    assert jacobian_determinant(torch.from_numpy(clean)[None], g).min() > 0.3


def test_projection_is_idempotent_and_keeps_a_rigid_field():
    g = Geometry((30, 28, 26), [1.5, 1.5, 2.0], [10.0, -20.0, 5.0], rotation([0.0, 15.0, 10.0]))
    labels = np.zeros(g.shape, np.int16)
    labels[8:18, 6:20, 9:21] = 3
    pts = voxel_centres(g)
    rigid = rigid_field(pts, pts[:, labels == 3].mean(axis=1), rotation([8.0, 2.0, -5.0]), np.array([1.0, 2.0, -3.0]))
    assert np.allclose(rigidify(rigid.astype(np.float32), g, labels), rigid, atol=1e-4)
    bumpy = rigid.astype(np.float32) + smooth_random(g, 2.0, seed=3)
    once = rigidify(bumpy, g, labels, blend_mm=6.0)
    twice = rigidify(once, g, labels, blend_mm=6.0)
    inside = labels == 3
    assert np.allclose(once[:, inside], twice[:, inside], atol=1e-4)


def test_two_regions_keep_their_own_motions():
    g = Geometry((40, 30, 30), [2.0, 2.0, 2.0])
    labels = np.zeros(g.shape, np.int16)
    labels[10:20, 8:22, 4:14] = 1
    labels[10:20, 8:22, 17:27] = 2  # 3 voxels apart: their blend zones overlap
    pts = voxel_centres(g)
    moves = {1: (rotation([0, 0, 5.0]), np.array([2.0, 0, 0])), 2: (rotation([3.0, 0, 0]), np.array([0, -2.0, 1.0]))}
    field = smooth_random(g, 2.0, seed=5)
    for k, (rot, shift) in moves.items():
        inside = labels == k
        field[:, inside] = rigid_field(pts, pts[:, inside].mean(axis=1), rot, shift)[:, inside]
    regions = RigidRegions(labels, g, blend_mm=8.0)
    fits = regions.fit(field)
    assert regions.region_ids == [1, 2]
    out = regions.project(field)
    for k, (rot_fit, _) in zip((1, 2), fits):
        inside = labels == k
        assert np.allclose(rot_fit, moves[k][0], atol=1e-4)
        assert np.allclose(out[:, inside], field[:, inside], atol=1e-3)
    det = jacobian_determinant(torch.from_numpy(out)[None], g)[0].numpy()
    assert det[labels > 0].std() < 1e-3


def test_reflection_is_never_returned():
    g = Geometry((16, 16, 16), [1.0] * 3)
    labels = np.zeros(g.shape, np.int16)
    labels[4:12, 4:12, 4:12] = 1
    pts = voxel_centres(g)
    centre = pts[:, labels == 1].mean(axis=1)
    mirror = np.diag([-1.0, 1.0, 1.0])
    field = np.einsum("ij,jzyx->izyx", mirror - np.eye(3), pts - centre[:, None, None, None]).astype(np.float32)
    (rot, _), = RigidRegions(labels, g).fit(field)
    assert np.linalg.det(rot) == pytest.approx(1.0)


def test_torch_batch_input_and_empty_labels():
    g = Geometry((12, 12, 12), [2.0] * 3)
    field = torch.randn(1, 3, *g.shape, dtype=torch.float64)
    assert rigidify(field, g, np.zeros(g.shape, int)) is field  # nothing to do
    labels = np.zeros(g.shape, int)
    labels[3:8, 3:8, 3:8] = 1
    out = rigidify(field, g, labels)
    assert isinstance(out, torch.Tensor) and out.shape == field.shape and out.dtype == torch.float64


def test_bad_inputs_are_named():
    g = Geometry((8, 8, 8))
    with pytest.raises(ValueError, match=r"region_labels must be \(Z, Y, X\) = \(8, 8, 8\)"):
        RigidRegions(np.zeros((8, 8, 7), int), g)
    with pytest.raises(ValueError, match="whole numbers"):
        RigidRegions(np.full(g.shape, 0.5), g)
    with pytest.raises(ValueError, match="blend_mm must be >= 0"):
        RigidRegions(np.zeros(g.shape, int), g, blend_mm=-1.0)
    labels = np.zeros(g.shape, int)
    labels[2:5, 2:5, 2:5] = 1
    with pytest.raises(ValueError, match=r"disp_mm must be \(3, Z, Y, X\) = \(3, 8, 8, 8\)"):
        RigidRegions(labels, g).project(np.zeros((3, 8, 8, 9), np.float32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(body_with_block):
    c = body_with_block
    cpu = rigidify(c["noisy"], c["g"], c["labels"])
    gpu = rigidify(torch.from_numpy(c["noisy"]).cuda(), c["g"], c["labels"])
    assert gpu.is_cuda and np.abs(gpu.cpu().numpy() - cpu).max() < 1e-4
