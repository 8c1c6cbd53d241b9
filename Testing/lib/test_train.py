"""Tests of synthetic pairs (cross-checked with SimpleITK), data sources, evaluation and the trainer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ADRegNetLib.io.image import Image, to_sitk
from ADRegNetLib.model import load_model
from ADRegNetLib.spatial.flow import disp_mm_to_flow_norm
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.jacobian import jacobian_determinant
from ADRegNetLib.train import data as D
from ADRegNetLib.train import synthetic as S
from ADRegNetLib.train.cli import train_main
from ADRegNetLib.train.evaluate import ablated_model, evaluate_field, evaluate_model
from ADRegNetLib.train.export import export_run
from ADRegNetLib.train.trainer import TrainConfig, Trainer

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _rotation(angle_deg: float) -> np.ndarray:
    t = np.deg2rad(angle_deg)
    return np.array([[np.cos(t), 0, -np.sin(t)], [0, 1, 0], [np.sin(t), 0, np.cos(t)]])


GEOMETRY = Geometry((28, 24, 20), spacing=(2.0, 2.5, 3.0), origin=(-30, 12, 80), direction=_rotation(25))


def _displacement_transform(disp: np.ndarray, geometry: Geometry) -> sitk.Transform:
    field = sitk.GetImageFromArray(np.moveaxis(disp, 0, -1).astype(np.float64), isVector=True)
    geometry.apply_to_sitk(field)
    return sitk.DisplacementFieldTransform(field)


# ---------------------------------------------------------------------------------- synthetic
def test_random_displacement_is_smooth_diffeomorphic_and_reproducible():
    d1 = S.random_smooth_displacement(GEOMETRY, 12.0, 20.0, np.random.default_rng(7))
    d2 = S.random_smooth_displacement(GEOMETRY, 12.0, 20.0, np.random.default_rng(7))
    assert d1.shape == (3, *GEOMETRY.shape) and d1.dtype == np.float32
    np.testing.assert_array_equal(d1, d2)
    mag = np.linalg.norm(d1, axis=0).max()
    assert 4.0 < mag < 20.0
    det = jacobian_determinant(torch.as_tensor(d1)[None], GEOMETRY)
    assert float(det.min()) > 0
    v = S.random_smooth_velocity(GEOMETRY, 5.0, 20.0, np.random.default_rng(1))
    assert np.linalg.norm(v, axis=0).max() == pytest.approx(5.0, rel=1e-5)
    with pytest.raises(ValueError, match="smoothness_mm > 0"):
        S.random_smooth_velocity(GEOMETRY, 5.0, 0.0, np.random.default_rng(1))


def test_synthetic_pair_matches_simpleitk_resampling_and_landmarks():
    rng = np.random.default_rng(3)
    labels = Image(S.random_label_map(GEOMETRY.shape, rng, n_labels=5), GEOMETRY, "labels")
    image = Image(S.synth_image_from_labels(labels.array, rng), GEOMETRY, "img")
    pair = S.make_synthetic_pair(image, rng, labels=labels, max_disp_mm=8.0, smoothness_mm=25.0, n_landmarks=20,
                                 intensity_change=False)
    assert pair.disp_mm.shape == (3, *GEOMETRY.shape)
    tx = _displacement_transform(pair.disp_mm, GEOMETRY)
    # fixed(x) = moving(x + u(x)): ITK's resampling convention, checked with SimpleITK.
    ref = sitk.GetArrayFromImage(sitk.Resample(to_sitk(pair.moving), to_sitk(pair.fixed), tx, sitk.sitkLinear, 0.0))
    inner = (slice(3, -3),) * 3
    np.testing.assert_allclose(pair.fixed.array[inner], ref[inner], atol=2e-3)
    ref_lab = sitk.GetArrayFromImage(sitk.Resample(to_sitk(pair.moving_labels, np.int32), to_sitk(pair.fixed),
                                                   tx, sitk.sitkNearestNeighbor, 0))
    assert (pair.fixed_labels.array[inner] == ref_lab[inner]).mean() > 0.99
    mapped = np.array([tx.TransformPoint(p.tolist()) for p in pair.fixed_points])
    np.testing.assert_allclose(mapped, pair.moving_points, atol=1e-3)
    assert np.all(pair.fixed_labels.array[tuple(np.rint(GEOMETRY.physical_to_index(pair.fixed_points)[:, ::-1])
                                                .astype(int).T)] >= 0)


def test_evaluate_field_true_field_is_perfect_identity_is_not():
    rng = np.random.default_rng(4)
    labels = Image(S.random_label_map(GEOMETRY.shape, rng, n_labels=4), GEOMETRY, "labels")
    pair = S.make_synthetic_pair(Image(labels.array.astype(np.float32), GEOMETRY), rng, labels=labels,
                                 max_disp_mm=10.0, synthesize_from_labels=True)
    true = disp_mm_to_flow_norm(torch.as_tensor(pair.disp_mm)[None], GEOMETRY)
    good = evaluate_field(pair, true)
    assert good["tre_mm"] < 1e-3 and good["dice"] == pytest.approx(1.0) and good["folds_pct"] == 0.0
    ident = evaluate_field(pair, torch.zeros_like(true))
    expected = np.linalg.norm(pair.moving_points - pair.fixed_points, axis=1).mean()
    assert ident["tre_mm"] == pytest.approx(expected, rel=1e-6)
    assert ident["dice"] < good["dice"]


def test_intensity_change_and_label_synthesis():
    rng = np.random.default_rng(0)
    base = np.linspace(0, 1, 16 * 16 * 16).reshape(16, 16, 16).astype(np.float32)
    changed = S.random_intensity_change(base, rng)
    assert changed.dtype == np.float32 and changed.min() >= 0 and changed.max() <= 1
    assert np.corrcoef(base.ravel(), changed.ravel())[0, 1] > 0.8
    labels = np.zeros((20, 20, 24), dtype=np.int64)
    for i in range(6):
        labels[:, :, 4 * i:4 * i + 4] = i
    img = S.synth_image_from_labels(labels, rng, blur_range=(0.5, 0.5), noise_max=0.0)
    inner = np.zeros(labels.shape, dtype=bool)
    for i in range(6):
        inner[:, :, 4 * i + 1:4 * i + 3] = True
    # Labels explain nearly all the variance away from label borders (one intensity per label).
    within = np.mean([img[(labels == i) & inner].var() for i in range(6)])
    assert 1 - within / img[inner].var() > 0.9
    with pytest.raises(ValueError, match=r"\(Z, Y, X\)"):
        S.random_intensity_change(np.zeros((4, 4)), rng)


def test_make_pair_errors():
    img = Image(np.zeros(GEOMETRY.shape, np.float32), GEOMETRY)
    with pytest.raises(ValueError, match="needs a label map"):
        S.make_synthetic_pair(img, np.random.default_rng(0), synthesize_from_labels=True)


# --------------------------------------------------------------------------------------- data
def test_crop_keeps_physical_positions_and_pads():
    img = Image(np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8), GEOMETRY.with_size((8, 7, 6)))
    c = D.crop(img, (2, -1, 3), (3, 4, 4))
    assert c.array.shape == (3, 4, 4)
    assert c.array[0, 0].sum() == 0  # row y = -1 lies outside
    np.testing.assert_array_equal(c.array[:, 1:, :], img.array[2:5, 0:3, 3:7])
    p = c.geometry.index_to_physical(np.array([[0, 1, 0]]))
    np.testing.assert_allclose(p, img.geometry.index_to_physical(np.array([[3, 0, 2]])))


def test_resample_changes_spacing_over_the_same_span():
    g = Geometry((41, 31, 21), spacing=(1.0, 1.0, 1.0))
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in g.shape], indexing="ij")
    img = Image((0.5 * xx + 0.2 * yy - 0.1 * zz).astype(np.float32), g)
    r = D.resample(img, 2.5)
    assert r.geometry.size == (17, 13, 9)
    idx = g.physical_to_index(r.geometry.index_to_physical(np.array([[3, 4, 5]])))[0]
    assert r.array[5, 4, 3] == pytest.approx(0.5 * idx[0] + 0.2 * idx[1] - 0.1 * idx[2], abs=1e-4)


@pytest.mark.skipif(not (DATA / "brain-vxm-test-scan" / "test_scan.npz").is_file(), reason="shared data missing")
def test_brain_source_and_sampler_give_pairs_of_the_crop_size():
    vol = D.brain_t1_volume(DATA, spacing_mm=4.0)
    assert vol.image.geometry.shape == (41, 49, 57) and vol.labels.array.max() > 40
    sampler = D.PairSampler([vol], crop_zyx=(24, 24, 24), n_landmarks=8)
    pair = sampler.sample(np.random.default_rng(0))
    assert pair.fixed.array.shape == (24, 24, 24) and pair.fixed_points.shape == (8, 3)
    assert pair.fixed_labels is not None


def test_unknown_source_is_an_error():
    with pytest.raises(ValueError, match="unknown data source 'mri'"):
        D.load_sources(["mri"], None, 2.5, np.random.default_rng(0), (8, 8, 8))


# -------------------------------------------------------------------------------------- trainer
def _tiny_config(out_dir: Path, steps: int) -> TrainConfig:
    return TrainConfig(out_dir=str(out_dir), steps=steps, sources=["shapes"], crop_zyx=[24, 24, 24],
                       spacing_mm=3.0, n_landmarks=16, checkpoint_every=1, validate_every=0, progress=False,
                       num_threads=1, model={"channels": [8, 16, 16, 32], "decoder_channels": [16, 16, 8]})


def test_trainer_runs_resumes_and_matches_an_uninterrupted_run(tmp_path):
    straight = Trainer(_tiny_config(tmp_path / "a", 3))
    final_a = straight.train()
    interrupted = Trainer(_tiny_config(tmp_path / "b", 2))
    interrupted.train()
    resumed = Trainer(_tiny_config(tmp_path / "b", 3))
    assert resumed.step == 2
    final_b = resumed.train()
    assert resumed.step == 3
    a, b = load_model(final_a), load_model(final_b)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    rows = (tmp_path / "b" / "train_log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,loss,sim,reg,landmark_mm") and len(rows) == 4
    assert a.metadata["training_steps"] == 3
    shipped = load_model(export_run(tmp_path / "b", tmp_path / "ship" / "w.pt", hardware="test CPU"))
    assert shipped.metadata["training_steps"] == 3 and shipped.metadata["training_hardware"] == "test CPU"
    for (name, pa), (_, pb) in zip(a.state_dict().items(), shipped.state_dict().items()):
        assert torch.equal(pa, pb), name
    with pytest.raises(FileNotFoundError, match="no training checkpoint"):
        export_run(tmp_path / "nothing", tmp_path / "x.pt")


def test_train_main_from_json_with_validation(tmp_path):
    cfg = {"out_dir": str(tmp_path / "run"), "steps": 2, "sources": ["shapes"], "crop_zyx": [24, 24, 24],
           "spacing_mm": 3.0, "validate_every": 2, "val_pairs": 1, "progress": False, "num_threads": 1,
           "model": {"channels": [8, 16], "decoder_channels": [8], "cross_attention_levels": 1}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    weights = train_main(["--config", str(path), "--no-progress"])
    val = [json.loads(line) for line in (tmp_path / "run" / "val_log.jsonl").read_text().splitlines()]
    assert len(val) == 1 and val[0]["step"] == 2 and {"tre_mm", "folds_pct"} <= set(val[0])
    model = ablated_model(weights, "cross_attention")
    assert not any(n.startswith("cross.") for n, _ in model.named_parameters())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stepz": 3}))
    with pytest.raises(ValueError, match="unknown training config keys \\['stepz'\\]"):
        train_main(["--config", str(bad)])


def test_evaluate_model_identity_summary():
    rng = np.random.default_rng(5)
    labels = Image(S.random_label_map(GEOMETRY.shape, rng, n_labels=4), GEOMETRY, "labels")
    pairs = [S.make_synthetic_pair(Image(labels.array.astype(np.float32), GEOMETRY), rng, labels=labels)
             for _ in range(2)]
    summary = evaluate_model(None, pairs)
    assert summary["pairs"] == 2 and summary["folds_pct"] == 0.0 and summary["tre_mm"] > 0
