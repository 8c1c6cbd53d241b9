"""Metrics (ADRegNetLib.metrics) against hand-computed values, scikit-image and SciPy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity

from ADRegNetLib.metrics import dice, gaussian_kernel_1d, jacobian_stats, mse, ncc, ssim3d, tre


# ---------------------------------------------------------------------------------------------- TRE
def test_tre_values():
    a = np.zeros((4, 3))
    b = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    r = tre(a, b)
    np.testing.assert_allclose(r["per_landmark"], [5, 1, 0, 2])
    assert r["mean"] == 2.0 and r["max"] == 5.0 and r["median"] == 1.5
    assert r["std"] == pytest.approx(np.std([5, 1, 0, 2]))
    assert r["p95"] == pytest.approx(np.percentile([5, 1, 0, 2], 95))
    rt = tre(torch.as_tensor(a), torch.as_tensor(b))
    assert rt["mean"] == 2.0


def test_tre_errors():
    with pytest.raises(ValueError, match="4 mapped fixed vs 3 moving"):
        tre(np.zeros((4, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="at least one pair"):
        tre(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"must be \(K, 3\)"):
        tre(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        tre(np.full((1, 3), np.nan), np.zeros((1, 3)))


# --------------------------------------------------------------------------------------------- Dice
def test_dice_against_set_counts(rng):
    a = rng.integers(0, 4, size=(10, 11, 12))
    b = np.where(rng.random(a.shape) < 0.8, a, rng.integers(0, 4, size=a.shape))
    r = dice(a, b)
    assert set(r["per_label"]) == {1, 2, 3}
    for k in (1, 2, 3):
        inter = np.sum((a == k) & (b == k))
        assert r["per_label"][k] == pytest.approx(2 * inter / (np.sum(a == k) + np.sum(b == k)))
    assert r["mean"] == pytest.approx(np.mean(list(r["per_label"].values())))
    r0 = dice(torch.as_tensor(a), torch.as_tensor(b), include_background=True)
    assert 0 in r0["per_label"]


def test_dice_edge_cases():
    a = np.zeros((4, 4, 4), int)
    a[:2] = 5
    assert dice(a, a)["per_label"] == {5: 1.0}
    b = np.zeros_like(a)
    b[2:] = 5
    assert dice(a, b)["per_label"][5] == 0.0
    r = dice(a, a, label_ids=[5, 7])
    assert r["per_label"][5] == 1.0 and np.isnan(r["per_label"][7]) and r["mean"] == 1.0
    assert np.isnan(dice(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)))["mean"])
    neg = np.full((2, 2, 2), -3)
    assert dice(neg, neg)["per_label"] == {-3: 1.0}
    with pytest.raises(ValueError, match="same shape"):
        dice(a, a[:2])
    with pytest.raises(ValueError, match="whole numbers"):
        dice(a + 0.5, a)


# ------------------------------------------------------------------------------------ NCC and MSE
def test_ncc_and_mse(rng):
    a = rng.random((6, 7, 8))
    assert ncc(a, 3 * a + 2) == pytest.approx(1.0)
    assert ncc(a, -a) == pytest.approx(-1.0)
    b = rng.random(a.shape)
    assert ncc(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert np.isnan(ncc(a, np.ones_like(a)))
    mask = a > 0.5
    assert ncc(a, b, mask) == pytest.approx(np.corrcoef(a[mask], b[mask])[0, 1])
    assert mse(a, b) == pytest.approx(np.mean((a - b) ** 2))
    assert mse(torch.as_tensor(a), torch.as_tensor(b), torch.as_tensor(mask)) == pytest.approx(np.mean((a - b)[mask] ** 2))
    with pytest.raises(ValueError, match="mask is empty"):
        mse(a, b, np.zeros(a.shape, bool))
    with pytest.raises(ValueError, match="mask shape"):
        ncc(a, b, mask[:2])


# --------------------------------------------------------------------------------------------- SSIM
@pytest.mark.parametrize("sample_cov", [False, True])
def test_ssim3d_matches_skimage(rng, sample_cov):
    a = ndimage.gaussian_filter(rng.random((16, 18, 20)), 1.0)
    b = np.clip(a + rng.normal(0, 0.02, a.shape), 0, 1)
    ref = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=sample_cov)
    ours = ssim3d(a, b, data_range=1.0, use_sample_covariance=sample_cov)
    assert ours == pytest.approx(ref, abs=1e-10)
    assert ssim3d(a, a, data_range=1.0) == pytest.approx(1.0)


def test_ssim3d_map_mask_and_errors(rng):
    a = rng.random((14, 14, 14))
    b = rng.random((14, 14, 14))
    value, smap = ssim3d(a, b, 1.0, return_map=True)
    assert smap.shape == (4, 4, 4) and value == pytest.approx(smap.mean())
    mask = np.zeros(a.shape, bool)
    mask[5:9, 5:9, 5:7] = True
    assert ssim3d(a, b, 1.0, mask=mask) == pytest.approx(smap[:, :, :2].mean())
    with pytest.raises(ValueError, match="smaller than the 11-voxel SSIM window"):
        ssim3d(a[:8], b[:8], 1.0)
    with pytest.raises(ValueError, match="data_range must be positive"):
        ssim3d(a, b, 0.0)
    np.testing.assert_allclose(gaussian_kernel_1d(1.5).sum(), 1.0)
    assert gaussian_kernel_1d(1.5).size == 11


# ---------------------------------------------------------------------------------------- Jacobian
def test_jacobian_stats():
    det = np.ones((4, 5, 6))
    det[0, 0, 0] = -0.5
    det[0, 0, 1] = 0.0
    det[1, 1, 1] = 2.0
    r = jacobian_stats(torch.as_tensor(det)[None])
    assert r["folding_count"] == 2 and r["folding_fraction"] == pytest.approx(2 / det.size)
    assert r["min"] == -0.5 and r["max"] == 2.0 and r["mean"] == pytest.approx(det.mean())
    log = np.log(np.maximum(det, 1e-9))
    assert r["std_log_det"] == pytest.approx(log.std())
    mask = np.zeros(det.shape, bool)
    mask[2:] = True
    rm = jacobian_stats(det, mask)
    assert rm["folding_count"] == 0 and rm["std_log_det"] == 0.0 and rm["num_voxels"] == mask.sum()
    with pytest.raises(ValueError, match="NaN or infinite"):
        jacobian_stats(np.full((2, 2, 2), np.nan))
