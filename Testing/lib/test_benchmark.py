"""Tests of ``ADRegNetLib.benchmark``: case generation, the truth through the metric code, the
SimpleITK peer's direction convention, the child-process runner and the tables."""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from ADRegNetLib.benchmark import cases as bc
from ADRegNetLib.benchmark import peers, report, runner
from ADRegNetLib.metrics import dice
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.warp import warp_image

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_brain = pytest.mark.skipif(not (DATA / "brain-vxm-test-scan" / "test_scan.npz").is_file(),
                                 reason="shared/data/brain-vxm-test-scan is not beside the repository")


@pytest.fixture(scope="module")
def quick_case(tmp_path_factory) -> bc.Case:
    return bc.build_case("quick", tmp_path_factory.mktemp("cases"), DATA, seed=0)


# ----------------------------------------------------------------------------- cases
@needs_brain
def test_case_files_and_determinism(quick_case, tmp_path):
    again = bc.build_case("quick", tmp_path, DATA, seed=0)
    for name in ("fixed.nii.gz", "moving.nii.gz", "moving_labels.nii.gz", "true_disp.nii.gz"):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(quick_case.directory / name)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(again.directory / name)))
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(quick_case.fixed_landmarks(), again.fixed_landmarks())
    other = bc.build_case("quick", tmp_path / "seed1", DATA, seed=1)
    assert not np.allclose(other.true_disp(), quick_case.true_disp())
    # Landmark CSVs use the project's x,y,z (LPS mm) header.
    with open(quick_case.fixed_landmarks_path) as fh:
        assert fh.readline().strip() == "x,y,z"
    assert len(quick_case.fixed_landmarks()) == 100


@needs_brain
def test_case_truth_is_consistent(quick_case):
    info = quick_case.info
    u = quick_case.true_disp()
    geom = quick_case.fixed_geometry()
    f_lm, m_lm = quick_case.fixed_landmarks(), quick_case.moving_landmarks()
    # moving landmarks are x + u(x), with u trilinear, checked against an independent sampler
    # (SimpleITK's DisplacementFieldTransform on the written field).
    field = sitk.ReadImage(str(quick_case.true_disp_path), sitk.sitkVectorFloat64)
    tx = sitk.DisplacementFieldTransform(field)
    mapped = np.asarray([tx.TransformPoint(tuple(p)) for p in f_lm])
    np.testing.assert_allclose(mapped, m_lm, atol=1e-3)
    # a known diffeomorphism of a few mm
    assert info["true_jacobian_min"] > 0.2
    assert 2.0 < info["initial_tre_mean_mm"] < 4.5
    assert info["inverse_residual_mm"] < 1e-2
    # the true field through the metric code: TRE 0, better Dice than no registration
    truth = bc.evaluate_field(quick_case, u)
    ident = bc.evaluate_field(quick_case, np.zeros_like(u))
    assert truth["tre_mean"] < 1e-4 and truth["folds_pct"] == 0.0
    assert ident["tre_mean"] == pytest.approx(info["initial_tre_mean_mm"], rel=1e-6)
    assert truth["dice"] > ident["dice"] + 0.05
    # Labels under the truth: away from label borders (3x3x3-constant neighbourhoods) the warped moving
    # labels equal the fixed labels exactly; at borders only nearest-neighbour resampling at 4 mm differs.
    fixed_labels, _ = bc.read_image(quick_case.fixed_labels_path, np.int16)
    moving_labels, mgeom = bc.read_image(quick_case.moving_labels_path, np.int16)
    warped = warp_image(torch.from_numpy(moving_labels.astype(np.int64))[None, None],
                        torch.from_numpy(u)[None], geom, mgeom, mode="nearest")[0, 0].numpy()
    interior = ndimage.maximum_filter(fixed_labels, 3) == ndimage.minimum_filter(fixed_labels, 3)
    assert interior.mean() > 0.5
    assert (warped == fixed_labels)[interior].mean() > 0.9995
    brain_truth = dice(warped > 0, fixed_labels > 0, [1])["mean"]
    brain_ident = dice(moving_labels > 0, fixed_labels > 0, [1])["mean"]
    assert brain_truth > 0.9 and brain_truth > brain_ident
    # the images match better under the truth than without registration (despite the intensity change)
    fixed, _ = bc.read_image(quick_case.fixed_path)
    moving, _ = bc.read_image(quick_case.moving_path)
    w = warp_image(torch.from_numpy(moving)[None, None], torch.from_numpy(u)[None], geom, mgeom)[0, 0].numpy()
    corr = lambda a, b: float(np.corrcoef(a.ravel(), b.ravel())[0, 1])  # noqa: E731
    assert corr(w, fixed) > corr(moving, fixed) + 0.02


def test_invert_field_on_oblique_grid():
    a = np.deg2rad(15)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    geom = Geometry((20, 18, 12), (1.5, 1.5, 3.0), (10.0, -5.0, 3.0), rot)
    rng = np.random.default_rng(0)
    v = bc.random_smooth_svf(geom, rng, 20.0)
    v *= 2.0 / np.abs(v).max()
    u = bc.integrate_svf(v, geom)
    pts = geom.index_to_physical(rng.uniform(3, 8, size=(50, 3)))
    w, resid = bc.invert_field_at(u, geom, pts)
    back = pts + w + bc.interpolate_field(u, geom, pts + w)
    np.testing.assert_allclose(back, pts, atol=1e-3)
    assert resid < 1e-3


def test_unknown_case_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark case 'liver'; expected one of brain"):
        bc.build_case("liver", tmp_path)


def test_missing_data_says_which_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="test_scan.npz"):
        bc.build_case("quick", tmp_path, data_dir=tmp_path / "nothing")


# ----------------------------------------------------------------------------- peers
def test_sitk_peer_direction_on_translation(tmp_path):
    r = peers.check_peer("sitk", tmp_path, threads=2, shift_mm=(3.0, -2.0, 4.0), levels=2, iterations=(40, 20))
    truth, rec = np.asarray(r["truth"]), np.asarray(r["recovered"])
    # A flipped convention would give about -truth (error ~2 |truth| = 10.8 mm).
    assert r["error_mm"] < 1.0, r
    assert float(rec @ truth) > 0.8 * float(truth @ truth)


def test_sitk_bspline_peer_direction_on_translation(tmp_path):
    r = peers.check_peer("sitk-bspline", tmp_path, threads=2, shift_mm=(3.0, -2.0, 4.0),
                         levels=2, affine_iterations=60, bspline_iterations=20)
    truth, rec = np.asarray(r["truth"]), np.asarray(r["recovered"])
    assert r["error_mm"] < 1.0, r
    assert float(rec @ truth) > 0.8 * float(truth @ truth)


def test_translation_pair_is_a_translation(tmp_path):
    fixed_path, moving_path, shift = peers.make_translation_pair(tmp_path, (2.0, 1.0, -3.0))
    fixed, moving = sitk.ReadImage(str(fixed_path)), sitk.ReadImage(str(moving_path))
    # moving(x + shift) == fixed(x): resample moving with the translation onto the fixed grid
    out = sitk.Resample(moving, fixed, sitk.TranslationTransform(3, tuple(shift)), sitk.sitkLinear, 0.0)
    a, b = sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(fixed)
    core = (slice(6, -6),) * 3
    assert np.abs(a[core] - b[core]).max() < 0.05 * b.max()


def test_unknown_peer_and_method():
    with pytest.raises(ValueError, match="unknown peer 'foo'; expected one of sitk"):
        peers.run_peer("foo", "a", "b", "c")
    with pytest.raises(ValueError, match="unknown method"):
        runner.available_methods(["identity", "foo"])


# ----------------------------------------------------------------------------- runner and tables
@needs_brain
def test_runner_child_process_and_tables(quick_case, tmp_path):
    rows = [runner.run_method(quick_case, m, tmp_path / "runs", threads=2) for m in ("identity", "truth")]
    row = runner.run_method(quick_case, "sitk", tmp_path / "runs", threads=2, timeout=300)
    assert row["status"] == "ok", row
    assert row["peak_rss_mb"] > 50 and row["seconds"] > 0 and math.isfinite(row["tre_mean"])
    assert (tmp_path / "runs" / "quick" / "sitk" / "disp.nii.gz").is_file()
    rows.append(row)
    assert rows[1]["tre_mean"] < 1e-4 and rows[0]["tre_mean"] > 2.0
    text = report.format_table(rows)
    assert "quick" in text and "sitk" in text and "TRE mean (mm)" in text
    report.write_csv(tmp_path / "r.csv", rows)
    with open(tmp_path / "r.csv") as fh:
        got = list(csv.DictReader(fh))
    assert [g["method"] for g in got] == ["identity", "truth", "sitk"]
    report.write_markdown(tmp_path / "r.md", rows, {"quick": "desc"}, ["# title"])
    md = (tmp_path / "r.md").read_text()
    assert "| method | TRE mean (mm)" in md and "### quick" in md


def test_arguments_and_dirlab_table():
    parser = runner.add_benchmark_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["-o", "out", "--quick", "--threads", "1"])
    assert args.quick and args.threads == 1 and args.output == Path("out")
    rows = [{"case": 1, "method": "a", "before_mean": 3.89, "before_std": 2.78, "after_mean": 1.0, "after_std": 0.5},
            {"case": 2, "method": "a", "before_mean": 4.34, "before_std": 3.90, "after_mean": 1.2, "after_std": 0.7}]
    t = report.format_dirlab_table(rows, continuous=True)
    assert "continuous" in t and "1 | 3.89 (2.78) | 1.00 (0.50)" in t and "mean | 4.12 | 1.10" in t


def test_dirlab_mode_on_generated_files(tmp_path):
    """--dirlab wiring: files in DIR-Lab's format (raw int16 + 1-based index landmarks) -> table."""
    from ADRegNetLib.io.dirlab import dirlab_geometry, write_dirlab_image
    from ADRegNetLib.io.landmarks import write_dirlab_txt

    root = tmp_path / "dirlab"
    (root / "Case1Pack" / "Images").mkdir(parents=True)
    (root / "Case1Pack" / "ExtremePhases").mkdir(parents=True)
    geom = dirlab_geometry(1)
    rng = np.random.default_rng(0)
    for phase in ("T00", "T50"):
        write_dirlab_image(np.zeros(geom.shape, np.int16), root / "Case1Pack" / "Images" / f"case1_{phase}_s.img")
    idx = rng.integers(10, 80, size=(300, 3)).astype(float)
    pts00 = geom.index_to_physical(idx)
    pts50 = geom.index_to_physical(idx + [1, 0, 2])
    write_dirlab_txt(pts00, root / "Case1Pack" / "ExtremePhases" / "Case1_300_T00_xyz.txt", geom)
    write_dirlab_txt(pts50, root / "Case1Pack" / "ExtremePhases" / "Case1_300_T50_xyz.txt", geom)
    args = runner.add_benchmark_arguments(argparse.ArgumentParser()).parse_args(
        ["-o", str(tmp_path / "out"), "--dirlab", str(root)])
    rows = runner._run_dirlab(args, ["identity", "truth"], log=lambda s: None)
    assert [r["method"] for r in rows] == ["identity"]
    step = np.linalg.norm(geom.index_to_physical_matrix @ np.array([1.0, 0, 2]))
    assert rows[0]["before_mean"] == pytest.approx(step, rel=1e-6)
    case = bc.Case.load(tmp_path / "out" / "dirlab" / "dirlab01")
    np.testing.assert_allclose(case.fixed_landmarks(), pts00, atol=1e-5)
    assert case.preset == "lung-ct"
    assert "1 | " in report.format_dirlab_table(rows)
