"""Tests of the benchmark (``benchmarks/``, run with ``python -m benchmarks``): cases are deterministic and
their truth holds through the metric code, the runner runs methods in child processes, the tables
format, and the shipped engine holds no benchmark code."""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetLib.io import read_displacement_field
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.transform import map_points

# The benchmark lives outside the shipped package, at the repository root: make it importable
# however pytest was started (no conftest.py here: a second module named "conftest" would shadow
# Testing/conftest.py for tests that import helpers from it).
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import cases as bc  # noqa: E402
from benchmarks import peers, report, runner  # noqa: E402
from benchmarks.deformations import integrate_svf, random_smooth_svf  # noqa: E402
from benchmarks.evaluate import evaluate_field  # noqa: E402
from benchmarks.intensities import render_flair_like, render_t2_like  # noqa: E402
from benchmarks.methods import available_methods, register_settings  # noqa: E402
from benchmarks.sampling import interpolate_field, invert_field_at  # noqa: E402

DATA = REPO_ROOT / ".." / "shared" / "data"
needs_brain = pytest.mark.skipif(not (DATA / "brain-vxm-test-scan" / "test_scan.npz").is_file(),
                                 reason="shared/data/brain-vxm-test-scan is not beside the repository")
CASE_FILES = ("fixed.nii.gz", "moving.nii.gz", "fixed_labels.nii.gz", "moving_labels.nii.gz", "fixed_mask.nii.gz",
              "true_disp.nii.gz")


@pytest.fixture(scope="module")
def quick_case(tmp_path_factory) -> bc.Case:
    if not (DATA / "brain-vxm-test-scan" / "test_scan.npz").is_file():
        pytest.skip("shared/data/brain-vxm-test-scan is not beside the repository")
    return bc.build_case("quick", tmp_path_factory.mktemp("cases"), DATA, seed=0)


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


# ----------------------------------------------------------------------------- cases
@needs_brain
def test_case_is_deterministic(quick_case, tmp_path):
    again = bc.build_case("quick", tmp_path, DATA, seed=0)
    for name in CASE_FILES:
        np.testing.assert_array_equal(_array(quick_case.directory / name), _array(again.directory / name),
                                      err_msg=name)
    np.testing.assert_array_equal(quick_case.fixed_landmarks(), again.fixed_landmarks())
    np.testing.assert_array_equal(quick_case.moving_landmarks(), again.moving_landmarks())
    # Landmark CSVs use the project's x,y,z (LPS mm) header, one row per landmark.
    with open(quick_case.fixed_landmarks_path) as fh:
        assert fh.readline().strip() == "x,y,z"
    assert len(quick_case.fixed_landmarks()) == 100
    # A cached case with the same settings is reused, not rebuilt.
    mtime = (again.directory / "fixed.nii.gz").stat().st_mtime_ns
    bc.build_case("quick", tmp_path, DATA, seed=0)
    assert (again.directory / "fixed.nii.gz").stat().st_mtime_ns == mtime


def test_seed_changes_the_deformation():
    geom = Geometry((24, 20, 16), (2.0, 2.0, 2.5))
    a = random_smooth_svf(geom, np.random.default_rng(0), 20.0)
    b = random_smooth_svf(geom, np.random.default_rng(0), 20.0)
    c = random_smooth_svf(geom, np.random.default_rng(1), 20.0)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_invert_field_on_oblique_grid():
    a = np.deg2rad(15)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    geom = Geometry((20, 18, 12), (1.5, 1.5, 3.0), (10.0, -5.0, 3.0), rot)
    rng = np.random.default_rng(0)
    v = random_smooth_svf(geom, rng, 20.0)
    v *= 2.0 / np.abs(v).max()
    u = integrate_svf(v, geom)
    pts = geom.index_to_physical(rng.uniform(3, 8, size=(50, 3)))
    w, resid = invert_field_at(u, geom, pts)
    back = pts + w + interpolate_field(u, geom, pts + w)
    np.testing.assert_allclose(back, pts, atol=1e-3)
    assert resid < 1e-3
    # The generator's scipy sampler and the library's sampler used for TRE agree.
    np.testing.assert_allclose(map_points(u, geom, pts), pts + interpolate_field(u, geom, pts), atol=1e-9)


def test_t2_rendering_inverts_tissue_contrast():
    """brain-t1t2's moving image: CSF brightest, white matter darkest inside the brain, background dark."""
    t1 = np.array([0.0, 0.07, 0.16, 0.25, 0.40, 0.42], dtype=np.float32).reshape(1, 1, 6)  # bg, vent, CSF, GM, WM
    wm = np.array([False, False, False, False, True, True]).reshape(1, 1, 6)
    t2 = render_t2_like(t1, wm)[0, 0]
    assert t2[0] == 0.0 and t2.dtype == np.float32
    assert t2[2] > t2[3] > t2[4] and t2[1] > t2[3]  # CSF > GM > WM, ventricles > GM
    with pytest.raises(ValueError, match="white-matter"):
        render_t2_like(t1, np.zeros_like(wm))


def test_flair_rendering_swaps_grey_and_white_but_keeps_csf_dark():
    """brain-flair's moving image: grey matter brighter than white, CSF and background dark."""
    t1 = np.array([0.0, 0.07, 0.16, 0.25, 0.40, 0.42], dtype=np.float32).reshape(1, 1, 6)  # bg, vent, CSF, GM, WM
    wm = np.array([False, False, False, False, True, True]).reshape(1, 1, 6)
    flair = render_flair_like(t1, wm)[0, 0]
    assert flair[0] == 0.0 and flair.dtype == np.float32
    assert flair[3] > flair[4] > flair[2] > 0  # GM > WM > CSF: only the grey/white edge is inverted
    with pytest.raises(ValueError, match="render_flair_like needs white-matter"):
        render_flair_like(t1, np.zeros_like(wm))
    from benchmarks.recipes import DEFAULT_CASES, RECIPES
    assert "brain-flair" in bc.CASE_NAMES and "brain-flair" not in DEFAULT_CASES
    assert RECIPES["brain-flair"].moving_contrast == "flair"


def test_unknown_case_and_missing_data(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark case 'liver'; expected one of brain"):
        bc.build_case("liver", tmp_path)
    with pytest.raises(FileNotFoundError, match="test_scan.npz"):
        bc.build_case("quick", tmp_path, data_dir=tmp_path / "nothing")
    assert "brain-t1t2" in bc.CASE_NAMES


def test_the_other_deformation_cases_differ_from_theirs_only_in_the_deformation():
    from benchmarks.recipes import DEFAULT_CASES, RECIPES
    for name, base, changed in (("brain-local", "brain", {"control_spacing_mm": 20.0}),
                                ("lung-large", "lung", {"target_mean_mm": 10.0}),
                                ("lung-sliding", "lung", {"lung_boundary_sigma_mm": 1.5})):
        assert name in bc.CASE_NAMES and name not in DEFAULT_CASES  # default runs unchanged
        recipe, reference = RECIPES[name], RECIPES[base]
        for field in ("source", "preset", "spacing", "label_ids", "oblique", "moving_contrast", "landmarks"):
            assert getattr(recipe, field) == getattr(reference, field), (name, field)
        for field, value in changed.items():
            assert getattr(recipe, field) == value != getattr(reference, field), (name, field)


@needs_brain
def test_truth_through_the_metrics(quick_case):
    info = quick_case.info
    u = quick_case.true_disp()
    f_lm, m_lm = quick_case.fixed_landmarks(), quick_case.moving_landmarks()
    # Moving landmarks are x + u(x), checked with an independent sampler: SimpleITK's
    # DisplacementFieldTransform on the written field.
    tx = sitk.DisplacementFieldTransform(sitk.ReadImage(str(quick_case.true_disp_path), sitk.sitkVectorFloat64))
    np.testing.assert_allclose(np.asarray([tx.TransformPoint(tuple(p)) for p in f_lm]), m_lm, atol=1e-3)
    assert info["true_jacobian_min"] > 0.2 and info["inverse_residual_mm"] < 1e-2
    assert 2.0 < info["initial_tre_mean_mm"] < 4.5
    truth = evaluate_field(quick_case, u)
    ident = evaluate_field(quick_case, np.zeros_like(u))
    assert truth["tre_mean"] < 1e-4 and truth["folds_pct"] == 0.0
    assert ident["tre_mean"] == pytest.approx(info["initial_tre_mean_mm"], rel=1e-6)
    assert truth["dice"] > ident["dice"] + 0.05
    assert ident["sdlogj"] == 0.0 and truth["sdlogj"] > 0.0
    # The field must be on the fixed grid.
    with pytest.raises(ValueError, match="on the fixed grid"):
        evaluate_field(quick_case, u[:, :-1])


# ----------------------------------------------------------------------------- methods and peers
def test_method_names():
    assert register_settings("adregnet-instant") == {"quality": "instant"}
    assert register_settings("adregnet-net-fast") == {"quality": "fast", "instance_optimization": False}
    assert register_settings("adregnet-best") == {"quality": "best"}
    assert register_settings("adregnet-balanced-reg0.25") == {"quality": "balanced", "regularization": 0.25}
    assert register_settings("adregnet-net-fast-reg2") == {"quality": "fast", "instance_optimization": False,
                                                           "regularization": 2.0}
    for bad in ("adregnet-balanced-reg", "adregnet-balanced-reg0", "adregnet-foo-reg0.5", "greedy-reg0.5"):
        with pytest.raises(ValueError):
            register_settings(bad)
    assert "adregnet-fast-reg0.5" in available_methods(["adregnet-fast-reg0.5"])[0] + list(available_methods(
        ["adregnet-fast-reg0.5"])[1])
    usable, skipped = available_methods(["identity", "truth", "sitk", "adregnet-instant"])
    assert {"identity", "truth", "sitk"} <= set(usable)
    assert set(usable) | set(skipped) == {"identity", "truth", "sitk", "adregnet-instant"}
    with pytest.raises(ValueError, match="unknown method"):
        available_methods(["identity", "foo"])
    with pytest.raises(ValueError, match="unknown peer 'foo'; expected one of sitk"):
        peers.run_peer("foo", "a", "b", "c")


def test_sitk_peer_direction_on_translation(tmp_path):
    r = peers.check_peer("sitk", tmp_path, threads=2, shift_mm=(3.0, -2.0, 4.0), levels=2, iterations=(40, 20))
    truth, rec = np.asarray(r["truth"]), np.asarray(r["recovered"])
    # A flipped convention would give about -truth (error ~2 |truth| = 10.8 mm).
    assert r["error_mm"] < 1.0, r
    assert float(rec @ truth) > 0.8 * float(truth @ truth)


@pytest.mark.skipif(peers.available_peers().get("greedy-rigid") is not None, reason="picsl-greedy is not installed")
def test_greedy_with_a_rigid_start_keeps_the_direction_convention(tmp_path):
    r = peers.check_peer("greedy-rigid", tmp_path, threads=2, shift_mm=(3.0, -2.0, 4.0))
    assert r["error_mm"] < 1.5, r  # a flipped convention: about 10.8 mm
    assert peers.PEERS["greedy-rigid"][0].keywords == {"rigid_first": True}


def test_translation_pair_is_a_translation(tmp_path):
    fixed_path, moving_path, shift = peers.make_translation_pair(tmp_path, (2.0, 1.0, -3.0))
    fixed, moving = sitk.ReadImage(str(fixed_path)), sitk.ReadImage(str(moving_path))
    # moving(x + shift) == fixed(x): resample moving with the translation onto the fixed grid
    out = sitk.Resample(moving, fixed, sitk.TranslationTransform(3, tuple(shift)), sitk.sitkLinear, 0.0)
    a, b = sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(fixed)
    core = (slice(6, -6),) * 3
    assert np.abs(a[core] - b[core]).max() < 0.05 * b.max()


# ----------------------------------------------------------------------------- runner
@needs_brain
def test_cli_runs_identity_and_truth_in_a_child_process(quick_case, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(quick_case.directory, out / "cases" / "quick")  # same settings: reused, not rebuilt
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "-o", str(out), "--quick", "--methods",
                           "identity,truth", "--data-dir", str(DATA)], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["identity", "truth"]
    assert float(rows[0]["tre_mean"]) == pytest.approx(quick_case.info["initial_tre_mean_mm"], rel=1e-6)
    assert float(rows[1]["tre_mean"]) < 1e-4
    assert "### quick" in (out / "results.md").read_text()


@needs_brain
def test_runner_child_process_measures_a_peer(quick_case, tmp_path):
    row = runner.run_method(quick_case, "sitk", tmp_path / "runs", threads=2, timeout=120)
    assert row["status"] == "ok", row
    assert row["peak_rss_mb"] > 50 and row["seconds"] > 0 and math.isfinite(row["tre_mean"])
    assert row["tre_mean"] < quick_case.info["initial_tre_mean_mm"]
    work = tmp_path / "runs" / "quick" / "sitk"
    assert json.loads((work / "run.json").read_text())["method"] == "sitk"
    # The child wrote its field on the fixed grid (read back through the library's io).
    disp, geom = read_displacement_field(work / "disp.nii.gz")
    assert geom.allclose(quick_case.fixed_geometry()) and disp.shape == (3, *geom.shape)
    cmd = runner.child_command(quick_case, "sitk", work, 2)
    assert cmd[1:4] == ["-m", "benchmarks", "--run-one"]


def test_dirlab_mode_on_generated_files(tmp_path):
    """--dirlab wiring: files in DIR-Lab's format (raw int16 + 1-based index landmarks) -> case folder -> table."""
    from ADRegNetLib.io import dirlab_geometry, write_dirlab_image, write_dirlab_txt

    from benchmarks.cli import add_benchmark_arguments
    from benchmarks.dirlab import run_dirlab

    root = tmp_path / "dirlab"
    (root / "Case1Pack" / "Images").mkdir(parents=True)
    (root / "Case1Pack" / "ExtremePhases").mkdir(parents=True)
    geom = dirlab_geometry(1)
    for phase in ("T00", "T50"):
        write_dirlab_image(np.zeros(geom.shape, np.int16), root / "Case1Pack" / "Images" / f"case1_{phase}_s.img")
    idx = np.random.default_rng(0).integers(10, 80, size=(300, 3)).astype(float)
    pts00, pts50 = geom.index_to_physical(idx), geom.index_to_physical(idx + [1, 0, 2])
    write_dirlab_txt(pts00, root / "Case1Pack" / "ExtremePhases" / "Case1_300_T00_xyz.txt", geom)
    write_dirlab_txt(pts50, root / "Case1Pack" / "ExtremePhases" / "Case1_300_T50_xyz.txt", geom)
    args = add_benchmark_arguments(argparse.ArgumentParser()).parse_args(
        ["-o", str(tmp_path / "out"), "--dirlab", str(root)])
    rows = run_dirlab(args, ["identity", "truth"], log=lambda s: None)
    assert [r["method"] for r in rows] == ["identity"]  # no true field for real 4DCT pairs
    step = np.linalg.norm(geom.index_to_physical_matrix @ np.array([1.0, 0, 2]))
    assert rows[0]["before_mean"] == pytest.approx(step, rel=1e-6)
    case = bc.Case.load(tmp_path / "out" / "dirlab" / "dirlab01")
    np.testing.assert_allclose(case.fixed_landmarks(), pts00, atol=1e-5)
    assert case.preset == "lung-ct" and case.fixed_geometry().allclose(geom)
    assert "1 | " in report.format_dirlab_table(rows)


# ----------------------------------------------------------------------------- tables
def test_tables():
    rows = [{"case": "quick", "method": "identity", "tre_mean": 3.1234, "tre_p95": 6.0, "dice": 0.5, "folds_pct": 0.0,
             "sdlogj": 0.0, "seconds": 0.0, "status": "ok"},
            {"case": "quick", "method": "adregnet-balanced", "preset": "brain-mri", "tre_mean": 0.61, "tre_p95": 1.4,
             "dice": 0.81, "folds_pct": 0.0, "sdlogj": 0.17, "seconds": 44.91, "peak_rss_mb": 1010.4,
             "status": "ok"},
            {"case": "lung", "method": "sitk", "tre_mean": float("nan"), "status": "failed (exit 1): boom"}]
    text = report.format_table(rows, {"quick": "small case"})
    lines = text.splitlines()
    assert lines[0] == "== quick: small case"
    assert lines[1].split()[:4] == ["method", "preset", "TRE", "mean"]
    assert "identity" in lines[3] and "3.12" in lines[3] and " - " in lines[3]
    assert "brain-mri" in lines[4] and "44.9" in lines[4] and "1010" in lines[4]
    assert "== lung" in text and "failed (exit 1): boom" in text


def test_markdown_csv_and_dirlab_tables(tmp_path):
    rows = [{"case": "quick", "method": "truth", "tre_mean": 0.0, "status": "ok"},
            {"case": "quick", "method": "sitk", "tre_mean": 1.5, "status": "ok", "tool": "SimpleITK"}]
    report.write_markdown(tmp_path / "r.md", rows, {"quick": "desc"}, ["# title"])
    md = (tmp_path / "r.md").read_text().splitlines()
    assert md[0] == "# title" and "### quick" in md and "desc" in md
    assert "| method | preset | TRE mean (mm) |" in "\n".join(md)
    assert "| sitk | - | 1.50 |" in "\n".join(md)
    report.write_csv(tmp_path / "r.csv", rows)
    with open(tmp_path / "r.csv") as fh:
        got = list(csv.DictReader(fh))
    assert [g["method"] for g in got] == ["truth", "sitk"] and got[1]["tool"] == "SimpleITK" and got[0]["tool"] == ""
    dl = [{"case": 1, "method": "a", "before_mean": 3.89, "before_std": 2.78, "after_mean": 1.0, "after_std": 0.5},
          {"case": 2, "method": "a", "before_mean": 4.34, "before_std": 3.90, "after_mean": 1.2, "after_std": 0.7}]
    t = report.format_dirlab_table(dl, continuous=True)
    assert "continuous" in t and "1 | 3.89 (2.78) | 1.00 (0.50)" in t and "mean | 4.12 | 1.10" in t


# ----------------------------------------------------------------------------- the shipped engine
def test_engine_holds_no_benchmark_code(tmp_path):
    """Every ADRegNetLib module imports without pulling in benchmark code (or scipy)."""
    assert not (REPO_ROOT / "ADRegNetLib" / "benchmark").exists()
    code = ("import importlib, pkgutil, sys\n"
            "import ADRegNetLib\n"
            "failed = []\n"
            "for m in pkgutil.walk_packages(ADRegNetLib.__path__, 'ADRegNetLib.'):\n"
            "    if m.name.endswith('__main__'):\n"
            "        continue\n"
            "    try:\n"
            "        importlib.import_module(m.name)\n"
            "    except Exception as exc:\n"
            "        failed.append(f'{m.name}: {exc}')\n"
            "bench = sorted(n for n in sys.modules if n.split('.')[0] == 'benchmarks' or\n"
            "               (n.startswith('ADRegNetLib') and 'benchmark' in n))\n"
            "print('BENCH', bench, 'FAILED', failed, 'SCIPY', 'scipy' in sys.modules)\n"
            "print('SPEC', importlib.util.find_spec('ADRegNetLib.benchmark'))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "BENCH [] " in proc.stdout and "SPEC None" in proc.stdout, proc.stdout
    # scipy was the benchmark's dependency; the engine (pyproject.toml) does not declare it.
    assert "SCIPY False" in proc.stdout, proc.stdout


def test_the_sliding_breathing_field_stops_at_the_lungs_boundary():
    from benchmarks.deformations import breathing_svf
    from ADRegNetLib.spatial.geometry import Geometry

    geometry = Geometry((30, 30, 40), spacing=(2.0, 2.0, 2.0))  # x, y, z: shape (40, 30, 30)
    lungs = np.zeros(geometry.shape, bool)
    lungs[5:35, 5:25, 5:14] = True  # one lung box
    outside = (slice(5, 35), slice(5, 25), slice(17, 19))  # 6-8 mm beyond its side wall
    rng = np.random.default_rng(0)
    smooth = breathing_svf(geometry, lungs, rng)
    sliding = breathing_svf(geometry, lungs, np.random.default_rng(0), boundary_sigma_mm=1.5)
    inside = np.abs(sliding[2][lungs]).mean()
    assert np.abs(sliding[2][outside]).mean() < 0.01 * inside  # the chest wall stays
    assert np.abs(smooth[2][outside]).mean() > 0.3 * np.abs(smooth[2][lungs]).mean()  # dragged along before
