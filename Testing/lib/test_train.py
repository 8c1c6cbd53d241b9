"""Tests of the training path: torch synthetic blocks, prepared volumes, sampler, loss, trainer, evaluation.

The legacy numpy pair API (``make_synthetic_pair``) is cross-checked with SimpleITK; the torch path is
checked against its own contract (conventions of ``ADRegNetLib.train.synthetic``).
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ADRegNetLib.io.image import Image, to_sitk
from ADRegNetLib.model import load_model
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.jacobian import jacobian_determinant
from ADRegNetLib.train import synthetic as S
from ADRegNetLib.train.cli import train_main
from ADRegNetLib.train.evaluate import evaluate_field, evaluate_model, heldout_pairs
from ADRegNetLib.train.prep import prepare, save_volume
from ADRegNetLib.train.sampler import PairSampler, load_prepared
from ADRegNetLib.train.trainer import TrainConfig, Trainer, batch_loss
from train_helpers import TINY_MODEL, make_prepared, tiny_config

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".." / "shared" / "data"


def _rotation(angle_deg: float) -> np.ndarray:
    t = np.deg2rad(angle_deg)
    return np.array([[np.cos(t), 0, -np.sin(t)], [0, 1, 0], [np.sin(t), 0, np.cos(t)]])


GEOMETRY = Geometry((28, 24, 20), spacing=(2.0, 2.5, 3.0), origin=(-30, 12, 80), direction=_rotation(25))


def _displacement_transform(disp: np.ndarray, geometry: Geometry) -> sitk.Transform:
    field = sitk.GetImageFromArray(np.moveaxis(disp, 0, -1).astype(np.float64), isVector=True)
    geometry.apply_to_sitk(field)
    return sitk.DisplacementFieldTransform(field)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prepared"))


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


def test_numpy_api_intensity_change_and_label_synthesis():
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


# ------------------------------------------------------------------------------- torch blocks
def test_random_svf_scale_smoothness_reproducibility_and_diffeomorphism():
    shape, spacing = (24, 28, 32), 2.0
    v1 = S.random_svf(shape, spacing, torch.tensor([3.0, 6.0]), 30.0, 2, torch.Generator().manual_seed(4))
    v2 = S.random_svf(shape, spacing, torch.tensor([3.0, 6.0]), 30.0, 2, torch.Generator().manual_seed(4))
    assert v1.shape == (2, 3, *shape) and torch.equal(v1, v2)
    mean = v1.norm(dim=1).flatten(1).mean(1)
    torch.testing.assert_close(mean, torch.tensor([3.0, 6.0]), rtol=0.1, atol=0)
    # smooth: neighbouring vectors differ by a small fraction of the field size
    assert float((v1[..., 1:] - v1[..., :-1]).norm(dim=1).mean()) < 0.1 * float(mean[1])
    disp = S.integrate_svf(v1 * 3, spacing)
    det = jacobian_determinant(disp.double(), Geometry(shape[::-1], spacing=(spacing,) * 3))
    assert float(det.min()) > 0
    with pytest.raises(ValueError, match="smoothness_mm must be > 0"):
        S.random_svf(shape, spacing, 1.0, 0.0)


def test_warp_follows_the_resampling_convention():
    img = torch.arange(10 * 12 * 14, dtype=torch.float32).reshape(1, 1, 10, 12, 14)
    disp = torch.zeros(1, 3, 10, 12, 14)
    disp[:, 0] = 2.0 * 1.5  # +1.5 voxel along x at 2 mm spacing
    out = S.warp(img, disp, 2.0)
    # warped(x) = image(x + u(x)): one and a half columns to the right
    torch.testing.assert_close(out[..., 2:10], 0.5 * (img[..., 3:11] + img[..., 4:12]))
    norm = S.mm_to_norm(disp, 2.0)
    torch.testing.assert_close(S.norm_to_mm(norm, 2.0), disp)


def test_torch_intensity_change_and_label_synthesis():
    gen = torch.Generator().manual_seed(0)
    base = torch.linspace(0, 1, 16 * 16 * 16).reshape(1, 1, 16, 16, 16)
    changed = S.random_intensity_change(base.repeat(2, 1, 1, 1, 1), gen)
    assert changed.shape == (2, 1, 16, 16, 16) and float(changed.min()) >= 0 and float(changed.max()) <= 1
    for b in range(2):
        assert np.corrcoef(base.ravel().numpy(), changed[b].ravel().numpy())[0, 1] > 0.8
    labels = torch.zeros(1, 1, 20, 20, 24, dtype=torch.int64)
    for i in range(6):
        labels[..., 4 * i:4 * i + 4] = i
    img = S.synth_image_from_labels(labels, gen, blur_range=(0.5, 0.5), noise_max=0.0)[0, 0]
    inner = torch.zeros(labels.shape[2:], dtype=torch.bool)
    for i in range(6):
        inner[:, :, 4 * i + 1:4 * i + 3] = True
    within = np.mean([float(img[(labels[0, 0] == i) & inner].var()) for i in range(6)])
    assert 1 - within / float(img[inner].var()) > 0.9
    with pytest.raises(ValueError, match=r"\(B, 1, Z, Y, X\)"):
        S.synth_image_from_labels(labels[0], gen)


# ------------------------------------------------------------------------ prepared + sampler
def test_prepared_volumes_round_trip_and_errors(prepared, tmp_path):
    vols = load_prepared(prepared, "train")
    assert [v.name for v in vols] == ["vol0", "vol1"] and vols[0].image is not None and vols[1].image is None
    assert load_prepared(prepared, "heldout")[0].split == "heldout"
    assert vols[0].spacing_mm == pytest.approx(3.0) and vols[0].labels.dtype == torch.int64
    with pytest.raises(FileNotFoundError, match="train.prep"):
        load_prepared(tmp_path)
    with pytest.raises(ValueError, match="share the"):
        save_volume(tmp_path / "x.npz", np.zeros((2, 2, 2)), np.zeros((3, 3, 3), int), Geometry((3, 3, 3)), "shapes",
                    "train")


def test_sampler_pairs_are_aligned_by_their_true_field(prepared):
    vols = load_prepared(prepared, "train", kinds=("brain_t1",))
    sampler = PairSampler(vols, (32, 32, 32), mean_disp_mm=(5.0, 5.0))
    pairs = sampler.sample(3, torch.Generator().manual_seed(1))
    assert pairs.fixed.shape == (3, 1, 32, 32, 32) and pairs.disp_mm.shape == (3, 3, 32, 32, 32)
    # labels: fixed labels are exactly the moving labels warped by the true field
    assert torch.equal(pairs.fixed_labels, S.warp(pairs.moving_labels, pairs.disp_mm, pairs.spacing_mm, mode="nearest"))
    # label overlap improves a lot with the true field (images get independent contrasts)
    fg = pairs.fixed_labels > 0
    before = float((pairs.fixed_labels == pairs.moving_labels)[fg].float().mean())
    after = float((pairs.fixed_labels == S.warp(pairs.moving_labels, pairs.disp_mm, pairs.spacing_mm,
                                                 mode="nearest"))[fg].float().mean())
    assert after == 1.0 and before < 0.95
    assert 2.5 < float(pairs.disp_mm.norm(dim=1).mean()) < 10
    other = sampler.sample(1, torch.Generator().manual_seed(1), crop_zyx=(24, 32, 40))
    assert other.fixed.shape == (1, 1, 24, 32, 40) and sampler.crop_zyx == (32, 32, 32)


def test_subject_augmentation_resamples_crops_through_the_map_it_draws(prepared, monkeypatch):
    import ADRegNetLib.train.sampler as SM

    vol = load_prepared(prepared, "train", kinds=("brain_t1",))[0]
    size, centre = (16, 16, 16), torch.tensor([20, 19, 21])
    start = [int(c) - n // 2 for c, n in zip(centre, size)]
    sampler = PairSampler([vol], size, flip=False, subject_augmentation=1.0)
    gen = torch.Generator().manual_seed(3)
    # no rotation, no deformation: scale 1 gives the plain crop, scale 2 every second voxel of a twice larger one
    monkeypatch.setattr(SM, "SUBJECT_ROTATION_DEG", 0.0)
    monkeypatch.setattr(SM, "SUBJECT_DEFORMATION_MM", (0.0, 0.0))
    monkeypatch.setattr(SM, "SUBJECT_SCALE", (1.0, 1.0))
    img, lab = sampler._new_subject_crop(vol, centre, gen)
    assert torch.equal(lab, SM._crop(vol.labels, start, size))
    assert torch.allclose(img, SM._crop(vol.image, start, size), atol=1e-5)
    monkeypatch.setattr(SM, "SUBJECT_SCALE", (2.0, 2.0))
    _, lab2 = sampler._new_subject_crop(vol, centre, gen)
    big = SM._crop(vol.labels, [int(c) - n for c, n in zip(centre, size)], [2 * n for n in size])
    assert torch.equal(lab2, big[:, :, ::2, ::2, ::2])
    # the defaults: a new shape (not the plain crop), still a pair aligned by its true field
    monkeypatch.undo()
    img3, lab3 = sampler._new_subject_crop(vol, centre, gen)
    assert not torch.equal(lab3, SM._crop(vol.labels, start, size)) and float((lab3 > 0).float().mean()) > 0.2
    pairs = PairSampler([vol], (24, 24, 24), subject_augmentation=1.0).sample(2, torch.Generator().manual_seed(4))
    assert torch.equal(pairs.fixed_labels, S.warp(pairs.moving_labels, pairs.disp_mm, pairs.spacing_mm, mode="nearest"))


@pytest.mark.skipif(not (DATA / "brain-vxm-test-scan" / "test_scan.npz").is_file(), reason="shared data missing")
def test_prep_of_the_real_brain_t1(tmp_path):
    files = prepare(DATA, tmp_path, spacing_mm=4.0, sources=("brain_t1",))
    vol = load_prepared(tmp_path)[0]
    assert files[0].name == "brain_t1.npz" and vol.kind == "brain_t1" and vol.spacing_mm == pytest.approx(4.0, rel=0.02)
    assert vol.image.shape[2:] == (41, 49, 57) and 0 <= float(vol.image.min()) and float(vol.image.max()) <= 1
    assert vol.n_labels > 20


def test_training_path_imports_without_simpleitk_or_scipy():
    code = ("import sys; sys.modules['SimpleITK'] = None; sys.modules['scipy'] = None; "
            "import ADRegNetLib.train.trainer, ADRegNetLib.train.evaluate, ADRegNetLib.train.ablations; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------------------------- evaluation + loss
def test_evaluate_field_true_field_is_perfect_identity_is_not(prepared):
    pair = heldout_pairs(prepared, 1, 3, (32, 32, 32))[0]
    good = evaluate_field(pair, pair.disp_mm)
    assert good["tre_mm"] == 0.0 and good["dice"] == pytest.approx(1.0) and good["folds_pct"] == 0.0
    ident = evaluate_field(pair, torch.zeros_like(pair.disp_mm))
    fg = pair.fixed_labels[0, 0] > 0
    assert ident["tre_mm"] == pytest.approx(float(pair.disp_mm[0].norm(dim=0)[fg].mean()), rel=1e-6)
    assert ident["dice"] < good["dice"]
    summary = evaluate_model(None, [pair])
    assert summary["identity_tre_mm"] == pytest.approx(ident["tre_mm"]) and "tre_mm" not in summary


def test_loss_is_zero_sup_for_the_true_field_and_has_gradients(prepared):
    sampler = PairSampler(load_prepared(prepared), (32, 32, 32))
    pairs = sampler.sample(2, torch.Generator().manual_seed(2))
    cfg = TrainConfig(lambda_sim=0.5, lambda_reg=0.1)

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, fixed, moving):
            flow = S.mm_to_norm(pairs.disp_mm, pairs.spacing_mm)
            net = torch.nn.functional.interpolate(flow, size=(16, 16, 16), mode="trilinear", align_corners=True)
            vel = torch.nn.functional.interpolate(S.mm_to_norm(pairs.velocity_mm, pairs.spacing_mm), size=(16, 16, 16),
                                                  mode="trilinear", align_corners=True)
            return {"flow_norm_network": net * self.scale, "levels": [vel * self.scale]}

    oracle = Oracle()
    loss, terms = batch_loss(oracle, pairs, cfg)
    assert terms["sup"] < 0.01 and terms["vel"] < 0.01 and terms["epe_mm"] < 0.01 < terms["identity_mm"]
    loss.backward()
    assert oracle.scale.grad is not None and torch.isfinite(oracle.scale.grad)


# ---------------------------------------------------------------------------------- trainer
def test_train_main_validates_and_exports_only_weights_that_beat_the_identity(tmp_path, prepared):
    cfg = {"out_dir": str(tmp_path / "run"), "prepared_dir": str(prepared), "steps": 2, "crop_zyx": [24, 24, 24],
           "export_every_min": 1e-6, "val_pairs": 2, "num_threads": 1, "model": TINY_MODEL,
           "export_path": str(tmp_path / "ship" / "w.pt")}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    train_main(["--config", str(path)])
    val = [json.loads(line) for line in (tmp_path / "run" / "val_log.jsonl").read_text().splitlines()]
    assert len(val) == 2 and {"tre_mm", "identity_tre_mm", "folds_pct", "improved"} <= set(val[0])
    shipped = (tmp_path / "ship" / "w.pt").is_file()
    assert shipped == any(v["improved"] for v in val)
    if shipped:
        assert (tmp_path / "ship" / "training_log.csv").is_file()
    train_main(["--config", str(path), "--steps", "3", "--lr", "1e-5"])  # resumed with a lower learning rate
    state = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)
    assert state["step"] == 3 and [g["lr"] for g in state["optimizer"]["param_groups"]] == [1e-5]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stepz": 3}))
    with pytest.raises(ValueError, match="unknown training config keys \\['stepz'\\]"):
        train_main(["--config", str(bad)])


def test_ablations_train_each_variant_and_evaluate_on_the_same_pairs(tmp_path, prepared):
    from ADRegNetLib.train.ablations import run_ablations

    base = tiny_config(tmp_path / "unused", prepared, 1)
    results = run_ablations(base, steps=1, out_dir=tmp_path / "abl", val_pairs=2)
    assert list(results) == ["full", "no_cross_attention", "no_regional_attention", "no_multires"]
    assert all(r["training_steps"] == 1 and r["pairs"] == 2 for r in results.values())
    # the same held-out pairs for every variant; fewer parameters without a part
    assert len({r["identity_tre_mm"] for r in results.values()}) == 1
    full = results["full"]["parameters"]
    assert all(results[n]["parameters"] < full for n in ("no_cross_attention", "no_regional_attention", "no_multires"))
    again = run_ablations(base, steps=1, out_dir=tmp_path / "abl", val_pairs=2)  # finished variants are reused
    assert again["full"]["tre_mm"] == pytest.approx(results["full"]["tre_mm"])


def test_ablations_command_trains_with_another_seed_when_asked(tmp_path, prepared):
    from dataclasses import asdict

    from ADRegNetLib.train.ablations import main as ablations_main

    config = tmp_path / "config.json"
    config.write_text(json.dumps(asdict(tiny_config(tmp_path / "unused", prepared, 1))))
    ablations_main(["--config", str(config), "--steps", "1", "--out", str(tmp_path / "abl"), "--pairs", "2",
                    "--variants", "full", "--train-seed", "7"])
    assert load_model(tmp_path / "abl" / "full.pt").metadata["training_config"]["seed"] == 7
    if not torch.cuda.is_available():  # asked for a GPU that is not there: said so, nothing trained
        with pytest.raises(SystemExit, match="no CUDA device"):
            ablations_main(["--config", str(config), "--steps", "1", "--out", str(tmp_path / "gpu"), "--device", "cuda"])
        assert not (tmp_path / "gpu").exists()


def test_warm_ablations_start_every_variant_from_the_trained_weights(tmp_path, prepared):
    from ADRegNetLib.model.checkpoint import load_checkpoint, save_model
    from ADRegNetLib.train.ablations import run_ablations

    base = tiny_config(tmp_path / "unused", prepared, 1)
    source = Trainer(tiny_config(tmp_path / "source", prepared, 2))
    source.train()
    init = save_model(source.model, tmp_path / "full.pt")
    start = load_checkpoint(init)["state_dict"]
    # a variant without cross-attention takes every tensor it shares with the full model, and only those
    no_cross = {**TINY_MODEL, "cross_attention": False}
    variant = Trainer(replace(tiny_config(tmp_path / "v", prepared, 1, init_weights=str(init), init_matching_only=True),
                              model=no_cross))
    report = variant.init_report
    assert report["fresh"] == [] and report["unused"] and all(k.startswith("cross.") for k in report["unused"])
    own = variant.model.state_dict()
    assert all(torch.equal(own[k], start[k]) for k in report["loaded"])
    with pytest.raises(RuntimeError, match="cross"):  # the plain (strict) start refuses another architecture
        Trainer(replace(tiny_config(tmp_path / "w", prepared, 1, init_weights=str(init)), model=no_cross))

    results = run_ablations(base, steps=1, out_dir=tmp_path / "abl", val_pairs=2, init_weights=init)
    pairs = heldout_pairs(str(prepared), 2, base.val_seed, base.crop_zyx)
    untouched = evaluate_model(source.model.eval(), pairs)
    # the full model "removed of nothing" is the starting weights themselves
    assert results["full"]["removed"]["tre_mm"] == pytest.approx(untouched["tre_mm"])
    assert results["full"]["dropped_tensors"] == [] and results["full"]["fresh_tensors"] == []
    assert all(k.startswith("heads.") for k in results["no_multires"]["dropped_tensors"])
    assert all(k.startswith("gates.") for k in results["no_regional_attention"]["dropped_tensors"])
    assert all(r["training_steps"] == 1 for r in results.values())
    # every variant is compared with the full model pair by pair, on the same pairs
    full_tre = results["full"]["tre_mm_per_pair"]
    for name in ("no_cross_attention", "no_regional_attention", "no_multires"):
        paired = results[name]["paired_vs_full"]
        diffs = np.subtract(results[name]["tre_mm_per_pair"], full_tre)
        assert paired["pairs"] == 2 and paired["mean_diff_mm"] == pytest.approx(diffs.mean())
        assert paired["worse_pairs"] == int((diffs > 0).sum())


def test_paired_difference_measures_a_variant_against_the_full_model_pair_by_pair():
    from ADRegNetLib.train.ablations import paired_difference

    full = [1.0, 2.0, 3.0, 4.0]
    same = paired_difference(full, full)
    assert same["mean_diff_mm"] == 0 and same["se_mm"] == 0 and same["worse_pairs"] == 0
    worse = paired_difference([1.5, 2.1, 3.3, 4.1], full)  # worse on every pair by 0.1-0.5 mm
    assert worse["mean_diff_mm"] == pytest.approx(0.25) and worse["worse_pairs"] == 4
    assert worse["se_mm"] == pytest.approx(np.std([0.5, 0.1, 0.3, 0.1], ddof=1) / 2)
