"""Label-aware warping (ADRegNetLib.spatial.labels) on the real brain labels, against SimpleITK and edge cases.

The brain test: the real 1 mm FreeSurfer segmentation L1 (brain-vxm-test-scan) is the continuous
anatomy. The moving label map at 2 mm is the majority label of each 2x2x2 block of L1. A known
smooth deformation u (4 mm mean in the brain) is defined on the 2 mm grid, and its trilinear
interpolant is the true deformation everywhere. The reference fixed labels at 2 mm are the
majority labels of the 2x2x2 blocks of L1 warped at 1 mm (nearest neighbour at twice the
resolution), so the reference uses information the 2 mm methods never see. Both methods warp
the 2 mm moving labels with u; each is scored by Dice against the reference.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from ADRegNetLib.spatial import (Geometry, disp_mm_to_flow_norm, flow_norm_to_disp_mm, integrate_velocity,
                                 sampling_grid, warp_image)
from ADRegNetLib.spatial.filters import gaussian_smooth
from ADRegNetLib.spatial.inverse import invert_displacement
from ADRegNetLib.spatial.labels import sample_labels, warp_labels
from brain_helpers import needs_t1, t1_labels

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "brain-vxm-test-scan"


def smooth_field(geometry: Geometry, mean_mm: float, seed: int, mask: np.ndarray | None = None) -> np.ndarray:
    """(3, Z, Y, X) LPS mm diffeomorphism exp(v), v smooth random (40 mm), scaled to ``mean_mm`` mean |u|."""
    coarse = geometry.with_spacing(6.0)
    gen = torch.Generator().manual_seed(seed)
    nodes = [max(int(np.ceil(e / 40.0)) + 1, 2) for e in (geometry.spacing * (np.asarray(geometry.size) - 1))[::-1]]
    velocity = F.interpolate(torch.randn((1, 3, *nodes), generator=gen), size=coarse.shape, mode="trilinear",
                             align_corners=True)
    velocity = gaussian_smooth(velocity, [10.0 / s for s in coarse.spacing[::-1]])

    def field(scale: float) -> torch.Tensor:
        flow = integrate_velocity(disp_mm_to_flow_norm(velocity * scale, coarse))
        return flow_norm_to_disp_mm(F.interpolate(flow, size=geometry.shape, mode="trilinear", align_corners=True),
                                    geometry)[0]

    scale = 1.0
    for _ in range(3):
        mag = field(scale).norm(dim=0)
        scale *= mean_mm / float(mag.mean() if mask is None else mag[torch.as_tensor(mask)].mean())
    return field(scale).numpy()


def block_majority(labels: np.ndarray, f: int) -> np.ndarray:
    """The most frequent label of each f x f x f block (ties: the smallest label)."""
    z, y, x = (s // f for s in labels.shape)
    blocks = labels[:z * f, :y * f, :x * f].reshape(z, f, y, f, x, f).transpose(0, 2, 4, 1, 3, 5).reshape(z, y, x, -1)
    blocks = torch.from_numpy(np.sort(blocks, axis=-1))
    counts = (blocks[..., :, None] == blocks[..., None, :]).sum(-1)
    return torch.gather(blocks, -1, counts.argmax(-1, keepdim=True))[..., 0].numpy()


def dice_per_label(a: np.ndarray, b: np.ndarray, ids) -> np.ndarray:
    return np.array([2.0 * np.sum((a == k) & (b == k)) / max(np.sum(a == k) + np.sum(b == k), 1) for k in ids])


def nearest(labels: np.ndarray, disp: np.ndarray, out_geometry: Geometry, in_geometry: Geometry) -> np.ndarray:
    return warp_image(torch.from_numpy(labels.astype(np.int64))[None, None], torch.from_numpy(disp)[None],
                      out_geometry, in_geometry, mode="nearest")[0, 0].numpy()


@pytest.fixture(scope="module")
def brain_case():
    fine = t1_labels().astype(np.int16)  # (160, 192, 224), 1 mm
    ids = np.load(DATA / "labels.npz")["labels"]
    g1 = Geometry(fine.shape[::-1])
    g2 = Geometry(tuple(s // 2 for s in fine.shape[::-1]), [2.0] * 3, [0.5] * 3)  # 2x2x2 blocks of g1
    moving = block_majority(fine, 2)
    u2 = smooth_field(g2, 4.0, seed=3, mask=moving > 0)
    u1 = F.grid_sample(torch.from_numpy(u2)[None], sampling_grid(None, g1, g2, like=torch.zeros(1)), mode="bilinear",
                       padding_mode="border", align_corners=True)
    reference = block_majority(nearest(fine, u1[0].numpy(), g1, g1), 2)
    return {"g2": g2, "moving": moving, "u": u2, "fixed": reference, "ids": ids}


@needs_t1
def test_brain_labels_label_aware_beats_nearest_on_every_structure(brain_case):
    c = brain_case
    near = nearest(c["moving"], c["u"], c["g2"], c["g2"])
    aware = warp_labels(c["moving"], c["u"], c["g2"], c["g2"])
    assert aware.dtype == c["moving"].dtype and aware.shape == c["moving"].shape
    assert set(np.unique(aware)) <= set(np.unique(c["moving"]))
    d_near = dice_per_label(near, c["fixed"], c["ids"])
    d_aware = dice_per_label(aware, c["fixed"], c["ids"])
    print(f"fixed <- moving, 30 structures: Dice nearest {d_near.mean():.4f}, label-aware {d_aware.mean():.4f}, "
          f"smallest gain {np.min(d_aware - d_near):.4f}")
    assert np.all(d_aware >= d_near), dict(zip(c["ids"][d_aware < d_near], (d_aware - d_near)[d_aware < d_near]))
    assert d_aware.mean() > d_near.mean() + 0.01


@needs_t1
def test_brain_labels_back_to_the_moving_grid_through_the_inverse(brain_case):
    c = brain_case
    v = invert_displacement(c["u"], c["g2"], c["g2"])
    near = nearest(c["fixed"], v, c["g2"], c["g2"])
    aware = warp_labels(c["fixed"], v, c["g2"], c["g2"])  # same function, roles swapped
    assert set(np.unique(aware)) <= set(np.unique(c["fixed"]))
    d_near = dice_per_label(near, c["moving"], c["ids"])
    d_aware = dice_per_label(aware, c["moving"], c["ids"])
    print(f"moving <- fixed (inverse), 30 structures: Dice nearest {d_near.mean():.4f}, label-aware "
          f"{d_aware.mean():.4f}, smallest gain {np.min(d_aware - d_near):.4f}")
    assert np.all(d_aware >= d_near)
    assert d_aware.mean() > d_near.mean() + 0.01


def test_identity_and_whole_voxel_shifts_are_exact(rng):
    g = Geometry((14, 12, 10), [1.5, 1.0, 2.0], [5.0, -3.0, 8.0])
    labels = rng.integers(0, 6, size=g.shape).astype(np.int32) * 7
    assert np.array_equal(warp_labels(labels, None, g, g), labels)
    assert np.array_equal(warp_labels(labels, np.zeros((3, *g.shape), np.float32), g, g), labels)
    shift = np.zeros((3, *g.shape), np.float32)
    shift[0] = 2 * 1.5  # two voxels along x
    out = warp_labels(labels, shift, g, g)
    assert np.array_equal(out[:, :, :-2], labels[:, :, 2:])
    assert np.all(out[:, :, -1] == 0)  # past the label map: background


def test_agrees_with_simpleitk_label_linear_on_oblique_grids(rng, oblique_geometry):
    moving_g = oblique_geometry  # 11 x 9 x 7, oblique, anisotropic
    fixed_g = Geometry((12, 10, 9), [1.0, 1.1, 1.6], oblique_geometry.center() - [5.0, 5.0, 6.0])
    coarse = rng.integers(0, 4, size=(3, 3, 4))
    labels = np.kron(coarse, np.ones((3, 3, 3), int))[:7, :9, :11].astype(np.int16) + 10  # blobs, values 10..13
    disp = rng.normal(0, 0.6, (3, *fixed_g.shape)).astype(np.float64)
    img = sitk.GetImageFromArray(labels)
    moving_g.apply_to_sitk(img)
    ref = sitk.Image([int(s) for s in fixed_g.size], sitk.sitkInt16)
    fixed_g.apply_to_sitk(ref)
    from ADRegNetLib.io import field_to_sitk

    theirs = sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.DisplacementFieldTransform(field_to_sitk(disp, fixed_g)),
                                                  sitk.sitkLabelLinear, 0))
    ours = warp_labels(labels, disp.astype(np.float32), fixed_g, moving_g)
    # compare where the mapped point lies well inside the moving grid (ITK and grid_sample differ
    # only in the outermost half voxel)
    grid = sampling_grid(torch.from_numpy(disp)[None], fixed_g, moving_g)[0].numpy()
    inner = np.all(np.abs(grid) < 1 - 2.0 / (np.asarray(moving_g.size) - 1), axis=-1)
    assert inner.sum() > 100
    assert np.mean(ours[inner] == theirs[inner]) > 0.99


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64])
def test_output_only_holds_input_values_in_the_input_dtype(dtype, rng):
    g = Geometry((16, 16, 16), [1.0] * 3)
    values = np.array([0, 3, 17, 120], dtype=dtype) if dtype == np.uint8 else np.array([-5, 0, 17, 1000], dtype=dtype)
    labels = values[rng.integers(0, 4, size=g.shape)]
    disp = rng.normal(0, 1.5, (3, *g.shape)).astype(np.float32)
    out = warp_labels(labels, disp, g, g, background=0)
    assert out.dtype == labels.dtype
    assert set(np.unique(out)) <= set(values.tolist())


def test_chunking_and_torch_inputs_do_not_change_the_result(rng):
    g = Geometry((18, 16, 14), [1.2, 1.0, 0.9])
    labels = rng.integers(0, 9, size=g.shape)
    disp = rng.normal(0, 1.0, (3, *g.shape)).astype(np.float32)
    one = warp_labels(labels, disp, g, g, chunk_labels=1)
    many = warp_labels(labels, disp, g, g, chunk_labels=64)
    tensor = warp_labels(torch.from_numpy(labels), torch.from_numpy(disp), g, g, chunk_labels=4)
    assert np.array_equal(one, many)
    assert isinstance(tensor, torch.Tensor) and np.array_equal(tensor.numpy(), one)


def test_smoothing_option_keeps_values_and_outside_gets_background():
    g = Geometry((20, 20, 20), [1.0] * 3)
    labels = np.full(g.shape, 4, np.int16)
    labels[5:15, 5:15, 5:15] = 9
    disp = np.zeros((3, *g.shape), np.float32)
    disp[2] = 30.0  # everything maps past the label map
    assert np.all(warp_labels(labels, disp, g, g, background=-1) == -1)
    out = warp_labels(labels, None, g, g, sigma_mm=1.0)
    assert set(np.unique(out)) == {4, 9}
    assert np.array_equal(out[7:13, 7:13, 7:13], np.full((6, 6, 6), 9))


def test_bad_inputs_are_named():
    g = Geometry((6, 6, 6))
    with pytest.raises(ValueError, match="whole numbers"):
        warp_labels(np.full(g.shape, 0.5), None, g, g)
    with pytest.raises(ValueError, match=r"labels shape \(5, 6, 6\)"):
        warp_labels(np.zeros((5, 6, 6), int), None, g, g)
    with pytest.raises(ValueError, match=r"disp_mm must be \(3, Z, Y, X\) = \(3, 6, 6, 6\)"):
        warp_labels(np.zeros(g.shape, int), np.zeros((3, 6, 6, 5), np.float32), g, g)
    with pytest.raises(ValueError, match=r"grid_norm must be \(1, Z, Y, X, 3\)"):
        sample_labels(np.zeros(g.shape, int), torch.zeros(6, 6, 6, 3))
