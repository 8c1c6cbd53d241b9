"""``adregnet warp`` (ADRegNetLib.cli.warp) by subprocess, checked against SimpleITK.

A result folder is made in tmp_path from a known smooth field u on an oblique fixed grid and its
inverse v on another oblique moving grid (other spacing and direction). Every data kind and
direction is run through the command's entry point in this process (the quiet run as
``python -m ADRegNetLib.cli.warp``, a process of its own) and compared with SimpleITK's ``Resample`` /
``TransformPoint`` through a ``DisplacementFieldTransform`` of the same files. Refusals are
checked in process: exit code 2, one clear line, nothing written, inputs untouched.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from geometry_helpers import rotation_matrix as rotation
from ADRegNetLib.cli.warp import main as warp_cli
from ADRegNetLib.io import read_landmarks, write_displacement_field, write_image, write_landmarks
from ADRegNetLib.io.image import Image
from ADRegNetLib.spatial import Geometry
from ADRegNetLib.spatial.filters import gaussian_smooth
from ADRegNetLib.spatial.inverse import invert_displacement

REPO = Path(__file__).resolve().parents[2]


def smooth(shape, seed: int, channels: int = 1, sigma: float = 2.0) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, channels, *(max(s // 4, 2) for s in shape)), generator=gen)
    return gaussian_smooth(F.interpolate(noise, size=shape, mode="trilinear", align_corners=True), sigma)[0].numpy()


FIXED = Geometry((26, 22, 18), [2.0, 2.2, 2.5], [-20.0, 15.0, -300.0], rotation([8.0, -5.0, 12.0]))
_MOVING_DIR = rotation([-6.0, 10.0, 3.0])
_MOVING_SIZE, _MOVING_SPACING = np.array([30, 27, 20]), np.array([1.8, 1.9, 2.4])
MOVING = Geometry(tuple(int(s) for s in _MOVING_SIZE), _MOVING_SPACING,
                  FIXED.center() + [1.5, -1.0, 2.0] - _MOVING_DIR @ (_MOVING_SPACING * (_MOVING_SIZE - 1) / 2), _MOVING_DIR)
#: a finer grid inside the fixed one, shifted and rotated a little
REFERENCE = Geometry((30, 26, 20), [1.5, 1.6, 1.8], FIXED.center() - [20.0, 19.0, 16.0], rotation([3.0, 2.0, -4.0]))


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    geometry.apply_to_sitk(img)
    return img


def sitk_transform(path: Path) -> sitk.DisplacementFieldTransform:
    return sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkVectorFloat64))


def faces_median(image: sitk.Image) -> float:
    """The image's background as the CLI takes it: the median of its six faces."""
    a = sitk.GetArrayFromImage(image)
    return float(np.median(np.concatenate([f.reshape(-1) for f in (a[0], a[-1], a[:, 0], a[:, -1], a[:, :, 0],
                                                                   a[:, :, -1])])))


def sitk_resample(data: Path, reference: Geometry, field: Path, interpolator, default: float | None = None) -> np.ndarray:
    """SimpleITK's resampling of ``data``; outside it the image's background (``default``: that value)."""
    image = sitk.ReadImage(str(data))
    ref = sitk.Image([int(s) for s in reference.size], image.GetPixelID())
    reference.apply_to_sitk(ref)
    outside = faces_median(image) if default is None else default
    return sitk.GetArrayFromImage(sitk.Resample(image, ref, sitk_transform(field), interpolator, outside))


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("warp")
    result = root / "result"
    u = smooth(FIXED.shape, seed=1, channels=3, sigma=2.5)
    u = (u * 3.0 / np.linalg.norm(u, axis=0).mean()).astype(np.float32)  # 3 mm mean
    v = invert_displacement(u, FIXED, MOVING)
    write_displacement_field(u, FIXED, result / "displacement.nii.gz")
    write_displacement_field(v, MOVING, result / "displacement_inverse.nii.gz")
    files = {"result": result}
    write_image(Image(smooth(MOVING.shape, 2)[0] * 100 + 50, MOVING), root / "moving.nii.gz")
    write_image(Image(smooth(FIXED.shape, 3)[0] * 100 + 50, FIXED), root / "fixed.nrrd")
    for name, geom, seed in (("moving_labels.nii.gz", MOVING, 4), ("fixed_labels.nii.gz", FIXED, 5)):
        lab = np.digitize(smooth(geom.shape, seed, sigma=1.5)[0], [-0.3, 0.0, 0.3]).astype(np.int16) * 5  # 0,5,10,15
        write_image(Image(lab, geom), root / name)
    write_image(Image(np.zeros(REFERENCE.shape, np.float32), REFERENCE), root / "reference.nii.gz")
    rng = np.random.default_rng(0)
    write_landmarks(FIXED.index_to_physical(rng.uniform(2, 15, (12, 3))), root / "fixed_points.fcsv")
    write_landmarks(MOVING.index_to_physical(rng.uniform(4, 16, (12, 3))), root / "moving_points.mrk.json",
                    coordinate_system="RAS")
    write_landmarks(FIXED.origin + 500.0 + rng.uniform(0, 10, (4, 3)), root / "far_points.csv")
    runs = {
        "image_m2f": ["--image", "moving.nii.gz", "-o", "out/image_m2f.nii.gz"],
        "image_quiet": ["--image", "moving.nii.gz", "-o", "out/image_quiet.nii.gz", "-q"],
        "image_bspline": ["--image", "moving.nii.gz", "--interpolation", "bspline", "-o", "out/image_bspline.nrrd"],
        "image_f2m": ["--image", "fixed.nrrd", "--direction", "fixed-to-moving", "-o", "out/image_f2m.nii.gz"],
        "image_reference": ["--image", "moving.nii.gz", "--reference", "reference.nii.gz", "-o", "out/image_ref.mha"],
        "labels_m2f": ["--labels", "moving_labels.nii.gz", "-o", "out/labels_m2f.nii.gz"],
        "labels_f2m": ["--labels", "fixed_labels.nii.gz", "--direction", "fixed-to-moving", "-o", "out/labels_f2m.nii.gz"],
        "points_f2m": ["--points", "fixed_points.fcsv", "--direction", "fixed-to-moving", "-o", "out/points_f2m.csv"],
        "points_m2f": ["--points", "moving_points.mrk.json", "-o", "out/points_m2f.mrk.json"],
    }
    (root / "out").mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    quiet = subprocess.Popen([sys.executable, "-m", "ADRegNetLib.cli.warp", str(result), *runs.pop("image_quiet")],
                             cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    files["runs"] = {k: _in_process(root, [str(result), *a]) for k, a in runs.items()}
    out, err = quiet.communicate(timeout=300)
    files["runs"]["image_quiet"] = (quiet.returncode, out, err)
    files["root"] = root
    return files


def _in_process(folder: Path, argv: list[str]) -> tuple[int, str, str]:
    """``adregnet warp ARGV`` run in ``folder`` in this process: (exit code, stdout, stderr)."""
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(folder)
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("ignore")
            code = warp_cli(argv)
    finally:
        os.chdir(here)
    return code, out.getvalue(), err.getvalue()


def check_run(case, key: str) -> None:
    rc, out, err = case["runs"][key]
    assert rc == 0, err
    assert "error" not in err


def test_image_moving_to_fixed_linear_matches_simpleitk(case):
    check_run(case, "image_m2f")
    root = case["root"]
    ours = sitk.ReadImage(str(root / "out/image_m2f.nii.gz"))
    assert np.allclose(ours.GetDirection(), FIXED.direction.reshape(-1)) and ours.GetSize() == FIXED.size
    theirs = sitk_resample(root / "moving.nii.gz", FIXED, case["result"] / "displacement.nii.gz", sitk.sitkLinear)
    diff = np.abs(sitk.GetArrayFromImage(ours) - theirs)
    sentinel = sitk_resample(root / "moving.nii.gz", FIXED, case["result"] / "displacement.nii.gz", sitk.sitkLinear,
                             default=-1e6)
    inside = sentinel != -1e6
    assert 0.7 < inside.mean() < 1.0  # most of the fixed grid maps inside the moving image, not all of it
    assert diff.max() < 1e-3 * np.abs(theirs).max(), diff.max()
    # outside it the moving image's background, as register's warped.nii.gz (air for CT, not 0)
    background = faces_median(sitk.ReadImage(str(root / "moving.nii.gz")))
    assert abs(background) > 1.0 and np.allclose(sitk.GetArrayFromImage(ours)[~inside], background)
    assert not list(root.glob("**/.adregnet-tmp*"))  # the temporary file was renamed


def test_quiet_warp_prints_nothing_and_writes_the_same_image(case):
    check_run(case, "image_quiet")
    rc, out, err = case["runs"]["image_quiet"]
    assert out == "" and err == ""
    assert "warped moving.nii.gz" in case["runs"]["image_m2f"][1]
    root = case["root"]
    quiet, loud = (sitk.GetArrayFromImage(sitk.ReadImage(str(root / f"out/image_{k}.nii.gz"))) for k in ("quiet", "m2f"))
    np.testing.assert_array_equal(quiet, loud)


def test_image_bspline_matches_simpleitk(case):
    check_run(case, "image_bspline")
    root = case["root"]
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "out/image_bspline.nrrd")))
    theirs = sitk_resample(root / "moving.nii.gz", FIXED, case["result"] / "displacement.nii.gz", sitk.sitkBSpline)
    linear = sitk_resample(root / "moving.nii.gz", FIXED, case["result"] / "displacement.nii.gz", sitk.sitkLinear)
    assert np.abs(ours - theirs).max() < 1e-3 * np.abs(theirs).max()
    assert np.abs(theirs - linear).max() > 0.05  # B-spline really is another interpolation here


def test_image_fixed_to_moving_uses_the_inverse(case):
    check_run(case, "image_f2m")
    root = case["root"]
    ours = sitk.ReadImage(str(root / "out/image_f2m.nii.gz"))
    assert ours.GetSize() == MOVING.size and np.allclose(ours.GetSpacing(), MOVING.spacing)
    theirs = sitk_resample(root / "fixed.nrrd", MOVING, case["result"] / "displacement_inverse.nii.gz", sitk.sitkLinear)
    assert np.abs(sitk.GetArrayFromImage(ours) - theirs).max() < 1e-3 * np.abs(theirs).max()


def test_image_onto_a_reference_grid(case):
    check_run(case, "image_reference")
    root = case["root"]
    ours = sitk.ReadImage(str(root / "out/image_ref.mha"))
    assert ours.GetSize() == REFERENCE.size and np.allclose(ours.GetOrigin(), REFERENCE.origin)
    theirs = sitk_resample(root / "moving.nii.gz", REFERENCE, case["result"] / "displacement.nii.gz", sitk.sitkLinear)
    assert np.abs(sitk.GetArrayFromImage(ours) - theirs).max() < 1e-3 * np.abs(theirs).max()


@pytest.mark.parametrize("key, data, field, grid", [
    ("labels_m2f", "moving_labels.nii.gz", "displacement.nii.gz", FIXED),
    ("labels_f2m", "fixed_labels.nii.gz", "displacement_inverse.nii.gz", MOVING),
])
def test_labels_are_warped_label_aware_like_simpleitk_label_linear(case, key, data, field, grid):
    check_run(case, key)
    root = case["root"]
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(root / f"out/{key}.nii.gz")))
    theirs = sitk_resample(root / data, grid, case["result"] / field, sitk.sitkLabelLinear, default=0.0)  # label 0
    nearest = sitk_resample(root / data, grid, case["result"] / field, sitk.sitkNearestNeighbor, default=0.0)
    assert set(np.unique(ours)) <= {0, 5, 10, 15}
    agree = np.mean(ours == theirs)
    assert agree > 0.99, agree
    assert np.mean(ours == nearest) < agree  # not a nearest-neighbour resampling in disguise


def test_points_fixed_to_moving_use_the_forward_field(case):
    check_run(case, "points_f2m")
    root = case["root"]
    tx = sitk_transform(case["result"] / "displacement.nii.gz")
    fixed = read_landmarks(root / "fixed_points.fcsv")
    expected = np.array([tx.TransformPoint(p.tolist()) for p in fixed])
    ours = read_landmarks(root / "out/points_f2m.csv")
    assert np.abs(ours - expected).max() < 1e-3
    assert np.linalg.norm(ours - fixed, axis=1).mean() > 1.0


def test_points_moving_to_fixed_use_the_inverse(case):
    check_run(case, "points_m2f")
    root = case["root"]
    moving = read_landmarks(root / "moving_points.mrk.json")  # RAS on disk: read back as LPS
    tx = sitk_transform(case["result"] / "displacement_inverse.nii.gz")
    expected = np.array([tx.TransformPoint(p.tolist()) for p in moving])
    ours = read_landmarks(root / "out/points_m2f.mrk.json")
    assert np.abs(ours - expected).max() < 1e-3
    # and the forward field takes them back where they came from (where they land inside its grid)
    forward = sitk_transform(case["result"] / "displacement.nii.gz")
    inside = FIXED.contains(ours, margin_voxels=-1.0)
    assert inside.sum() >= 8
    back = np.array([forward.TransformPoint(p.tolist()) for p in ours[inside]])
    assert np.abs(back - moving[inside]).max() < 0.05


# ------------------------------------------------------------------------------------------ refusals
def refuse(case, capsys, tmp_path, argv, message, result=None) -> None:
    before = digest(case["root"]), digest(tmp_path)
    rc = warp_cli([str(result or case["result"]), *argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("adregnet warp: error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert (digest(case["root"]), digest(tmp_path)) == before  # nothing written, nothing changed


def test_an_image_with_nan_voxels_is_refused(case, capsys, tmp_path):
    """Before: the NaN voxels of an .mha disappeared from the warped image without a word."""
    array = smooth(MOVING.shape, 2)[0] * 100 + 50
    array[3, 4, 5], array[6, 6, 6] = np.nan, np.inf
    image = tmp_path / "nan.mha"
    sitk.WriteImage(to_sitk(array, MOVING), str(image))
    refuse(case, capsys, tmp_path, ["--image", str(image), "-o", str(tmp_path / "out.nii.gz")],
           f"nan.mha has 2 NaN or infinite voxels (of {array.size}); replace them (e.g. numpy.nan_to_num")


def test_reference_grid_outside_the_transform_is_refused(case, capsys, tmp_path):
    far = Geometry((10, 10, 10), [2.0] * 3, FIXED.origin + [500.0, 0, 0])
    write_image(Image(np.zeros(far.shape, np.float32), far), tmp_path / "far.nii.gz")
    before = digest(tmp_path)
    rc = warp_cli([str(case["result"]), "--image", str(case["root"] / "moving.nii.gz"), "--reference",
                   str(tmp_path / "far.nii.gz"), "-o", str(tmp_path / "x.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 2 and "does not match the transform's grid" in err and "0% of it lies inside" in err
    assert digest(tmp_path) == before


def test_missing_inverse_is_refused(case, capsys, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "displacement.nii.gz").write_bytes((case["result"] / "displacement.nii.gz").read_bytes())
    refuse(case, capsys, tmp_path, ["--points", str(case["root"] / "moving_points.mrk.json"), "-o", str(tmp_path / "p.csv")],
           "needs the inverse transform", result=partial)


@pytest.mark.parametrize("argv, message", [
    (["--image", "{root}/broken.nii.gz", "-o", "{tmp}/a.nii.gz"], "cannot be read as an image"),
    (["--image", "{root}/moving.nii.gz", "-o", "{root}/moving.nii.gz"], "is the input"),
    (["--image", "{root}/moving.nii.gz", "-o", "{tmp}/link.nii.gz"], "is the input"),
    (["--image", "{root}/moving.nii.gz", "-o", "{root}/fixed.nrrd"], "already exists"),
    (["--image", "{root}/moving.nii.gz", "-o", "{tmp}/a.png"], "an image output needs"),
    (["--labels", "{root}/moving_labels.nii.gz", "--interpolation", "bspline", "-o", "{tmp}/a.nii.gz"],
     "--interpolation applies to --image only"),
    (["--labels", "{root}/moving.nii.gz", "-o", "{tmp}/a.nii.gz"], "expected a label map"),
    (["--points", "{root}/fixed_points.fcsv", "--reference", "{root}/fixed.nrrd", "-o", "{tmp}/a.csv"],
     "--reference applies to images"),
    (["--points", "{root}/far_points.csv", "-o", "{tmp}/a.csv"], "none of the 4 points lies inside"),
    (["--points", "{root}/fixed_points.fcsv", "--direction", "fixed-to-moving", "-o", "{tmp}/a.xyz"],
     "unknown landmark file type"),
    (["--image", "{root}/fixed.nrrd", "--direction", "fixed-to-moving", "--reference", "{root}/missing.nii.gz",
      "-o", "{tmp}/a.nii.gz"], "no such file"),
])
def test_bad_inputs_are_refused_and_nothing_is_written(case, capsys, tmp_path, argv, message):
    root = case["root"]
    if not (root / "broken.nii.gz").exists():
        (root / "broken.nii.gz").write_bytes(b"not an image at all")
    (tmp_path / "link.nii.gz").symlink_to(root / "moving.nii.gz")
    argv = [a.format(root=root, tmp=tmp_path) for a in argv]
    refuse(case, capsys, tmp_path, argv, message)


def test_result_dir_must_be_a_folder(case, capsys, tmp_path):
    refuse(case, capsys, tmp_path, ["--image", str(case["root"] / "moving.nii.gz"), "-o", str(tmp_path / "a.nii.gz")],
           "is not a folder", result=case["result"] / "displacement.nii.gz")


def test_overwrite_replaces_an_output_but_never_an_input(case, capsys, tmp_path):
    out = tmp_path / "again.csv"
    out.write_text("old")
    args = [str(case["result"]), "--points", str(case["root"] / "fixed_points.fcsv"), "--direction", "fixed-to-moving",
            "-o", str(out)]
    assert warp_cli(args) == 2 and "already exists" in capsys.readouterr().err
    assert warp_cli(args + ["--overwrite"]) == 0
    assert read_landmarks(out).shape == (12, 3)
    source = case["root"] / "fixed_points.fcsv"
    before = source.read_bytes()
    assert warp_cli([str(case["result"]), "--points", str(source), "--direction", "fixed-to-moving", "-o", str(source),
                     "--overwrite"]) == 2
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.csv"]
