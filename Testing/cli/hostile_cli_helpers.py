"""Shared inputs of the hostile command-line tests (test_hostile_*.py): 24^3 synthetic volumes, masks,
landmarks and transforms written once per module, a result folder of zero fields, the ``register`` argument
list of a tiny run, and the check that no test leaves outputs behind.

Import the fixtures into a test module (``from hostile_cli_helpers import files, nothing_written``): pytest
finds them there.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetLib.io import write_displacement_field, write_image, write_landmarks
from ADRegNetLib.io.image import Image
from ADRegNetLib.spatial.geometry import Geometry
from cli_helpers import assert_no_outputs

__all__ = ["REPO", "SIZE", "FIXED_GEOMETRY", "MOVING_GEOMETRY", "smooth", "files", "register_argv", "nothing_written",
           "result"]

REPO = Path(__file__).resolve().parents[2]
SIZE = (24, 24, 24)
FIXED_GEOMETRY = Geometry(SIZE, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
MOVING_GEOMETRY = Geometry(SIZE, (2.0, 2.0, 2.0), (200.0, 0.0, 0.0))  # 200 mm away along x: no overlap


def smooth(seed: int) -> np.ndarray:
    """(Z, Y, X) float32 blobs on a 24^3 grid: structure to register, thousands of distinct values."""
    rng = np.random.default_rng(seed)
    coarse = sitk.GetImageFromArray(rng.normal(0.0, 1.0, (6, 6, 6)).astype(np.float32))
    coarse.SetSpacing((8.0, 8.0, 8.0))
    fine = sitk.Resample(coarse, list(SIZE), sitk.Transform(), sitk.sitkBSpline, (-0.0, 0.0, 0.0), (2.0, 2.0, 2.0))
    return (100.0 + 40.0 * sitk.GetArrayFromImage(fine)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    f: dict[str, Path] = {"dir": d}
    fixed = smooth(0)
    moving = np.roll(fixed, 1, axis=2) + np.random.default_rng(1).normal(0, 1, fixed.shape).astype(np.float32)
    for name, array, geometry in (("fixed", fixed, FIXED_GEOMETRY), ("moving", moving, FIXED_GEOMETRY),
                                  ("moving_far", moving, MOVING_GEOMETRY)):
        f[name] = d / f"{name}.nii.gz"
        write_image(Image(array, geometry, name), f[name])
    # whole numbers with few values: the engine warns that it looks like a label map (and goes on)
    f["moving_steps"] = d / "moving_steps.nii.gz"
    write_image(Image(np.round(moving / 20.0) * 20.0, FIXED_GEOMETRY, "steps"), f["moving_steps"])
    f["ct_like"] = d / "ct_like.nii.gz"  # a scan in HU given where a mask or label map belongs
    write_image(Image(np.round(fixed * 10.0 - 1000.0).astype(np.int64), FIXED_GEOMETRY, "ct"), f["ct_like"])
    f["mask_negative"] = d / "mask_negative.nii.gz"
    write_image(Image(-(fixed > 100.0).astype(np.int64), FIXED_GEOMETRY, "m"), f["mask_negative"])
    f["mask"] = d / "mask.nii.gz"
    write_image(Image((fixed > 100.0).astype(np.int64), FIXED_GEOMETRY, "m"), f["mask"])
    f["lm_fixed"], f["lm_moving"] = d / "lm_fixed.csv", d / "lm_moving.csv"
    points = FIXED_GEOMETRY.index_to_physical(np.array([[4.0, 5.0, 6.0], [12.0, 12.0, 12.0], [18.0, 9.0, 15.0]]))
    write_landmarks(points, f["lm_fixed"])
    write_landmarks(points + [1.0, 0.0, 0.0], f["lm_moving"])
    for name, offset in (("to_moving", 200.0), ("to_moving_reversed", -200.0), ("far", 1e6)):
        t = sitk.TranslationTransform(3, (offset, 0.0, 0.0))
        f[name] = d / f"{name}.tfm"
        sitk.WriteTransform(t, str(f[name]))
    return f


def register_argv(files, *extra, fixed=None, moving=None, out=None) -> list[str]:
    return ["register", str(fixed or files["fixed"]), str(moving or files["moving"]), "-o",
            str(out or files["dir"] / "out"), "-q", "--quality", "fast", "--no-network", "--device", "cpu",
            "--threads", "1", *map(str, extra)]


@pytest.fixture(autouse=True)
def nothing_written(files):
    """No test leaves register's outputs in the shared output folder."""
    yield
    assert_no_outputs(files["dir"] / "out")


@pytest.fixture(scope="module")
def result(files) -> Path:
    """A result folder of zero fields: forward on the fixed grid, inverse on another (moving) grid."""
    folder = files["dir"] / "result"
    folder.mkdir()
    write_displacement_field(np.zeros((3, *FIXED_GEOMETRY.shape), np.float32), FIXED_GEOMETRY,
                             folder / "displacement.nii.gz")
    moving_grid = Geometry((20, 20, 20), (3.0, 3.0, 3.0), (-5.0, -5.0, -5.0))
    write_displacement_field(np.zeros((3, *moving_grid.shape), np.float32), moving_grid,
                             folder / "displacement_inverse.nii.gz")
    return folder
