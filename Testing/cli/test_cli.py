"""Tests of the ``adregnet`` command line (ADRegNetLib.cli).

One real ``adregnet register`` run of the demo lung pair (``--quality fast``, landmarks, a label map
to warp) is made by subprocess, through the installed console script, and shared by the module.
Its files are checked with SimpleITK alone: the displacement field and transform.h5 must map the
fixed landmarks exactly where metrics.json says; ``adregnet evaluate`` must reproduce the numbers.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetLib.cli.main import OUTPUT_FILES, main
from ADRegNetLib.io import read_image, read_landmarks, write_image
from ADRegNetLib.io.image import Image

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "SampleData"
FIXED = SAMPLE / "lung_fixed.nii.gz"
MOVING = SAMPLE / "lung_moving.nii.gz"
FIXED_LM = SAMPLE / "lung_fixed_landmarks.csv"
MOVING_LM = SAMPLE / "lung_moving_landmarks.csv"
#: the outputs DESIGN.md promises (contract), spelled out here independently of the code
DESIGN_FILES = {"displacement.nii.gz", "transform.h5", "warped.nii.gz", "jacobian.nii.gz", "metrics.json", "report.png"}
LABEL_VALUES = (0, 3, 7)


def adregnet_command() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("adregnet")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ADRegNetLib.cli.main"]


def run_cli(*args: str, timeout: float = 240.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([*adregnet_command(), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(REPO))


def digest(folder: Path) -> dict[str, tuple[float, str]]:
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.iterdir())}


def field_transform(path: Path) -> sitk.DisplacementFieldTransform:
    field = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkVectorFloat64)
    return sitk.DisplacementFieldTransform(field)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    if not all(p.is_file() for p in (FIXED, MOVING, FIXED_LM, MOVING_LM)):
        pytest.skip("demo data Resources/SampleData/lung_* missing")
    root = tmp_path_factory.mktemp("cli")
    moving = read_image(MOVING)
    labels = np.where(moving.array > -400, 7, np.where(moving.array > -900, 3, 0)).astype(np.int16)
    write_image(Image(labels, moving.geometry, "labels"), root / "moving_labels.nii.gz")
    fixed = read_image(FIXED)
    fixed_labels = np.where(fixed.array > -400, 7, np.where(fixed.array > -900, 3, 0)).astype(np.int16)
    write_image(Image(fixed_labels, fixed.geometry, "labels"), root / "fixed_labels.nii.gz")
    out = root / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"stale": true}')  # replaced thanks to --overwrite
    proc = run_cli("register", FIXED, MOVING, "-o", out, "--fixed-landmarks", FIXED_LM, "--moving-landmarks", MOVING_LM,
                   "--quality", "fast", "--warp-labels", root / "moving_labels.nii.gz", "--seed", "0",
                   "--device", "cpu",
                   "-q", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "out": out, "proc": proc, "metrics": json.loads((out / "metrics.json").read_text()),
            "fixed": fixed}


# ------------------------------------------------------------------------------- register
def test_register_summary_line(demo_run):
    proc = demo_run["proc"]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("preset lung-ct (CT intensities (HU) with ")
    assert "; TRE 3.45 -> " in lines[0] and "folds 0.000%" in lines[0]
    assert lines[1] == ("wrote displacement.nii.gz, transform.h5, warped.nii.gz, jacobian.nii.gz, "
                        "displacement_inverse.nii.gz, transform_inverse.h5, warped_labels.nii.gz, report.png, "
                        f"metrics.json to {demo_run['out']}/")
    assert "Traceback" not in proc.stderr
    m = demo_run["metrics"]
    assert f"TRE {m['tre_before']['mean']:.2f} -> {m['tre_after']['mean']:.2f} mm (pairs guided the registration)" \
        in lines[0]
    assert m["landmarks"] == {"pairs": 51, "guided_registration": True,
                              "role": "guided the registration: their TRE after is not an independent check"}


def test_writes_exactly_the_design_files(demo_run):
    assert set(OUTPUT_FILES) == DESIGN_FILES
    # the inverse (DESIGN: "displacement_inverse.nii.gz, transform_inverse.h5 ... from the capabilities issue on")
    inverse = {"displacement_inverse.nii.gz", "transform_inverse.h5"}
    assert {p.name for p in demo_run["out"].iterdir()} == DESIGN_FILES | inverse | {"warped_labels.nii.gz"}


def test_images_load_in_simpleitk_on_the_fixed_grid(demo_run):
    out, fixed = demo_run["out"], demo_run["fixed"]
    ref = sitk.ReadImage(str(FIXED))
    for name, components in (("displacement.nii.gz", 3), ("warped.nii.gz", 1), ("jacobian.nii.gz", 1),
                             ("warped_labels.nii.gz", 1)):
        img = sitk.ReadImage(str(out / name))
        assert img.GetDimension() == 3, name
        assert img.GetNumberOfComponentsPerPixel() == components, name
        assert img.GetSize() == ref.GetSize(), name
        np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-4, err_msg=name)
        np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing(), atol=1e-5, err_msg=name)
        np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6, err_msg=name)
    jac = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "jacobian.nii.gz")))
    m = demo_run["metrics"]["jacobian"]
    assert jac.min() > 0 and m["folding_fraction"] == 0.0
    assert float(jac.min()) == pytest.approx(m["min"], abs=1e-6)
    assert float(jac.mean()) == pytest.approx(m["mean"], abs=1e-5)
    warped = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "warped.nii.gz")))
    # the warped moving image is closer to the fixed image than the moving image was
    f = fixed.array
    mov = read_image(MOVING).array
    assert np.abs(warped - f)[4:-4, 4:-4, 4:-4].mean() < 0.7 * np.abs(mov - f)[4:-4, 4:-4, 4:-4].mean()


def test_report_png_is_a_real_picture(demo_run):
    png = sitk.ReadImage(str(demo_run["out"] / "report.png"))
    w, h = png.GetSize()
    assert w >= 600 and h >= 600
    assert png.GetNumberOfComponentsPerPixel() in (3, 4)
    arr = sitk.GetArrayFromImage(png)
    assert arr.std() > 10  # not blank


def test_metrics_json_contents(demo_run):
    m = demo_run["metrics"]
    assert "stale" not in m  # --overwrite replaced the old file
    assert m["preset"] == "lung-ct" and m["quality"] == "fast"
    given = {k: v for k, v in m["inputs"].items() if v is not None}
    assert given == {"fixed": str(FIXED), "moving": str(MOVING), "fixed_landmarks": str(FIXED_LM),
                     "moving_landmarks": str(MOVING_LM), "warp_labels": given.get("warp_labels")}
    assert m["tre_before"]["mean"] == pytest.approx(3.445, abs=0.005)
    assert m["tre_after"]["mean"] < 1.2
    assert len(m["tre_after"]["per_landmark"]) == 51
    assert m["similarity_after"]["ncc"] > m["similarity_before"]["ncc"]
    assert m["timings_s"]["total"] > 0


def test_displacement_field_maps_landmarks_where_metrics_say(demo_run):
    """SimpleITK's DisplacementFieldTransform from displacement.nii.gz (cast to float64 vectors)
    reproduces tre_after per landmark."""
    fp, mp = read_landmarks(FIXED_LM), read_landmarks(MOVING_LM)
    t = field_transform(demo_run["out"] / "displacement.nii.gz")
    mapped = np.array([t.TransformPoint(p.tolist()) for p in fp])
    d = np.linalg.norm(mapped - mp, axis=1)
    m = demo_run["metrics"]["tre_after"]
    np.testing.assert_allclose(d, m["per_landmark"], atol=1e-3)
    assert d.mean() == pytest.approx(m["mean"], abs=1e-3)
    assert d.mean() < 0.4 * np.linalg.norm(fp - mp, axis=1).mean()


def test_transform_h5_agrees_with_the_displacement_field(demo_run):
    out = demo_run["out"]
    h5 = sitk.ReadTransform(str(out / "transform.h5"))
    dft = field_transform(out / "displacement.nii.gz")
    fp = read_landmarks(FIXED_LM)
    rng = np.random.default_rng(0)
    g = demo_run["fixed"].geometry
    inside = g.index_to_physical(rng.uniform(0, 1, (200, 3)) * (np.asarray(g.size) - 1))
    for p in np.vstack([fp, inside]):
        np.testing.assert_allclose(h5.TransformPoint(p.tolist()), dft.TransformPoint(p.tolist()), atol=1e-4)


def test_warp_labels_keeps_only_the_input_labels(demo_run):
    out, root = demo_run["out"], demo_run["root"]
    warped = sitk.ReadImage(str(out / "warped_labels.nii.gz"))
    arr = sitk.GetArrayFromImage(warped)
    assert set(np.unique(arr).tolist()) == set(LABEL_VALUES)
    # independent reference: SimpleITK's label-aware (sitkLabelLinear) resampling through the same field;
    # nearest neighbour differs only along label borders
    labels = sitk.ReadImage(str(root / "moving_labels.nii.gz"))
    field = field_transform(out / "displacement.nii.gz")
    ref = sitk.GetArrayFromImage(sitk.Resample(labels, sitk.ReadImage(str(FIXED)), field, sitk.sitkLabelLinear, 0))
    nearest = sitk.GetArrayFromImage(sitk.Resample(labels, sitk.ReadImage(str(FIXED)), field, sitk.sitkNearestNeighbor, 0))
    assert np.mean(arr == ref) > 0.99
    # where label-aware and nearest-neighbour warping disagree, nearest neighbour has a label border
    # within one voxel (a 3x3x3 neighbourhood holding two labels)
    border = np.zeros(nearest.shape, bool)
    padded = np.pad(nearest, 1, mode="edge")
    for dz, dy, dx in np.ndindex(3, 3, 3):
        border |= padded[dz:dz + nearest.shape[0], dy:dy + nearest.shape[1], dx:dx + nearest.shape[2]] != nearest
    assert np.all(border[arr != nearest])


def test_evaluate_reproduces_tre_after(demo_run, tmp_path):
    out = demo_run["out"]
    proc = run_cli("evaluate", out, "--fixed-landmarks", FIXED_LM, "--moving-landmarks", MOVING_LM,
                   "-o", tmp_path / "eval.json")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed == json.loads((tmp_path / "eval.json").read_text())
    m = demo_run["metrics"]
    assert printed["field"] == str(out / "displacement.nii.gz")
    np.testing.assert_allclose(printed["tre_after"]["per_landmark"], m["tre_after"]["per_landmark"], atol=1e-4)
    assert printed["tre_after"]["mean"] == pytest.approx(m["tre_after"]["mean"], abs=1e-4)
    assert printed["tre_before"]["mean"] == pytest.approx(m["tre_before"]["mean"], abs=1e-9)
    assert printed["jacobian"]["folding_fraction"] == 0.0
    assert printed["jacobian"]["min"] == pytest.approx(m["jacobian"]["min"], abs=1e-4)


def test_evaluate_transform_h5_and_labels_in_process(demo_run, capsys):
    out, root = demo_run["out"], demo_run["root"]
    rc = main(["evaluate", str(out / "transform.h5"), "--fixed-landmarks", str(FIXED_LM), "--moving-landmarks",
               str(MOVING_LM), "--fixed-labels", str(root / "fixed_labels.nii.gz"), "--moving-labels",
               str(root / "moving_labels.nii.gz")])
    assert rc == 0
    captured = capsys.readouterr()
    res = json.loads(captured.out)
    assert res["tre_after"]["mean"] == pytest.approx(demo_run["metrics"]["tre_after"]["mean"], abs=1e-3)
    # the registration improves the overlap of the thresholded lung/vessel labels
    before, after = res["dice_before"], res["dice_after"]
    assert after["mean"] > before["mean"]
    # and a one-line summary of the same figures beside the JSON
    n = len(res["tre_after"]["per_landmark"])
    assert (f"TRE {res['tre_before']['mean']:.2f} -> {res['tre_after']['mean']:.2f} mm "
            f"(p95 {res['tre_after']['p95']:.2f}, {n} pairs); Dice {before['mean']:.3f} -> {after['mean']:.3f}") \
        in captured.err


def test_evaluate_quiet_writes_only_its_file(demo_run, capsys, tmp_path):
    out = demo_run["out"]
    target = tmp_path / "metrics.json"
    args = ["evaluate", str(out), "--fixed-landmarks", str(FIXED_LM), "--moving-landmarks", str(MOVING_LM)]
    assert main([*args, "-o", str(target), "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    written = json.loads(target.read_text())
    assert written["tre_after"]["mean"] == pytest.approx(demo_run["metrics"]["tre_after"]["mean"], abs=1e-3)
    # without -o the JSON on stdout is the result: -q keeps it and drops only the summary line
    assert main([*args, "-q"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == written and captured.err == ""


# ------------------------------------------------------------------------------- overwrite
def test_never_overwrites_without_flag(demo_run):
    out = demo_run["out"]
    state = digest(out)
    proc = run_cli("register", FIXED, MOVING, "-o", out, "--quality", "fast", "-q")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"adregnet register: error: {out} already holds displacement.nii.gz, transform.h5, warped.nii.gz, "
        "jacobian.nii.gz, metrics.json, report.png, displacement_inverse.nii.gz, transform_inverse.h5; "
        "choose another -o folder or add --overwrite")
    assert proc.stdout == ""
    assert digest(out) == state  # names, mtimes and contents unchanged


def test_refusal_names_only_the_files_that_exist(tmp_path, capsys):
    out = tmp_path / "partial"
    out.mkdir()
    (out / "report.png").write_bytes(b"keep me")
    (out / "notes.txt").write_text("unrelated")
    rc = main(["register", str(FIXED), str(MOVING), "-o", str(out), "-q"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"adregnet register: error: {out} already holds report.png; choose another -o folder or "
                           "add --overwrite")
    assert (out / "report.png").read_bytes() == b"keep me"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "report.png"]


def test_output_path_is_a_file(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("x")
    assert main(["register", str(FIXED), str(MOVING), "-o", str(target), "-q"]) == 2
    assert capsys.readouterr().err.strip() == (f"adregnet register: error: output path {target} exists and is not a "
                                               "folder; choose another -o")
    assert target.read_text() == "x"


def test_unwritable_output_folder_below_a_file(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    target = tmp_path / "a_file" / "out"
    assert main(["register", str(FIXED), str(MOVING), "-o", str(target), "-q"]) == 2
    assert capsys.readouterr().err.strip() == (f"adregnet register: error: cannot write to the output folder {target} "
                                               "(Not a directory); choose a writable -o folder")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_output_folder_by_permission(tmp_path, capsys):  # pragma: no cover - CI runs as a user
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["register", str(FIXED), str(MOVING), "-o", str(locked), "-q"]) == 2
        err = capsys.readouterr().err
        assert f"cannot write to the output folder {locked} (Permission denied); choose a writable -o folder" in err
    finally:
        locked.chmod(0o700)


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("register", "evaluate", "train", "warp", "batch"):
        assert word in text


def test_help_and_argument_errors_import_no_torch():
    """Every sub-command's options are defined without importing torch: `adregnet --help` and a mistyped
    option answer at once (about 0.2 s, against 2 s when building the parser imported torch)."""
    code = ("import sys\n"
            "from ADRegNetLib.cli.main import build_parser\n"
            "build_parser()\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
    bad = subprocess.run(adregnet_command() + ["register", "--quality", "fastest", "a.nii", "b.nii", "-o", "out"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice: 'fastest'" in bad.stderr


def test_an_empty_local_region_is_refused_before_registering(tmp_path, capsys):
    fixed = read_image(FIXED)
    empty = tmp_path / "region.nii.gz"
    write_image(Image(np.zeros(fixed.array.shape, np.uint8), fixed.geometry, "region"), empty)
    code = main(["register", str(FIXED), str(MOVING), "--local-region", str(empty), "-o", str(tmp_path / "out"), "-q"])
    assert code == 2
    assert "--local-region" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_no_local_change_turns_the_search_off(tmp_path):
    """The demo pair breathes: the search finds it not still enough for CT; with the option it does not look."""
    common = ["--quality", "fast", "--no-network", "--no-inverse", "-q"]
    assert main(["register", str(FIXED), str(MOVING), "-o", str(tmp_path / "on"), *common]) == 0
    assert main(["register", str(FIXED), str(MOVING), "-o", str(tmp_path / "off"), "--no-local-change", *common]) == 0
    on, off = (json.loads((tmp_path / name / "metrics.json").read_text())["refinement"] for name in ("on", "off"))
    assert on["local_change"]["found"] is False and on["local_change"]["still_share"] < 0.95  # CT: 95 % needed
    assert "local_change" not in off


def test_version_is_the_package_version(capsys):
    from ADRegNetLib import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"adregnet {__version__}"


def test_progress_off_a_terminal_is_one_line_per_stage(capsys, monkeypatch):
    """In a log file or a pipe the progress is a line per stage, not a bar redrawn into the file."""
    from ADRegNetLib.cli.register_cmd import _ProgressBar

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    bar = _ProgressBar(enabled=True)
    for step in range(1, 4):
        bar(0.3 + 0.01 * step, f"optimising level 1/3 (step {step}/12)")
    bar(0.9, "refining (step 1/20)")
    bar.close()
    assert capsys.readouterr().err.splitlines() == ["[ 31%] optimising level 1/3", "[ 90%] refining"]
    quiet = _ProgressBar(enabled=False)
    quiet(0.5, "refining")
    assert capsys.readouterr().err == ""
