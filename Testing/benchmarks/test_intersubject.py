"""Tests of the inter-subject benchmark (``benchmarks/intersubject.py``): the pairs are rendered from two
real subjects' label maps, Dice is measured in physical space at 1 mm, and a registration beats the
identity through the command line."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.io import read_image, write_image
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import intersubject  # noqa: E402
from benchmarks.cases import Case  # noqa: E402

DATA = REPO_ROOT / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def command_line_run(tmp_path_factory) -> Path:
    """One run of the command line on subjects 2 -> 9 at 5 mm (the pair is built once for the tests below)."""
    if not (DATA / "brain-synthseg-labelmaps" / "training_seg_09.nii.gz").is_file():
        pytest.skip("shared/data/brain-synthseg-labelmaps is not beside the repository")
    out = tmp_path_factory.mktemp("intersubject") / "out"
    code = intersubject.main(["-o", str(out), "--pairs", "2:9", "--spacing", "5", "--methods",
                              "identity,adregnet-fast", "--threads", "2"])
    assert code == 0
    return out


def test_pair_is_two_skull_stripped_subjects_and_deterministic(command_line_run):
    case = Case.load(command_line_run / "pairs" / "s02-to-s09")
    fixed = read_image(case.fixed_path)
    labels = read_image(case.fixed_labels_path, dtype=np.int16)
    moving_labels = read_image(case.moving_labels_path, dtype=np.int16)
    assert np.allclose(fixed.geometry.spacing, 5.0, rtol=0.03) and np.allclose(labels.geometry.spacing, 1.0)
    assert labels.array.max() < intersubject.BRAIN_MAX_LABEL  # skull, scalp and eyes removed
    assert labels.array.shape != moving_labels.array.shape  # two people
    assert case.info["kind"] == "intersubject" and len(case.label_ids) >= 25
    # T1 look: white matter brighter than cortex, cortex brighter than the background
    from benchmarks.sampling import grid_points, sample_at  # noqa: PLC0415
    points = grid_points(labels.geometry)
    values = sample_at(fixed.array, fixed.geometry, points, order=1).reshape(labels.array.shape)
    wm, cortex = np.isin(labels.array, (2, 41)), np.isin(labels.array, (3, 42))
    assert values[wm].mean() > 1.2 * values[cortex].mean() > 2.0 * values[labels.array == 0].mean()
    # the same seed renders the same image (a 48 mm block through the middle of the brain, to keep it short);
    # "random": each image its own value per structure (two contrasts)
    z, y, x = (s // 2 - 24 for s in labels.array.shape)
    block = np.ascontiguousarray(labels.array[z:z + 48, y:y + 48, x:x + 48])
    g = labels.geometry
    geometry = Geometry((48, 48, 48), g.spacing, g.index_to_physical(np.array([[x, y, z]], float))[0], g.direction)
    t1 = intersubject.render_image(block, geometry, "t1", 5.0, np.random.default_rng(0)).array
    assert np.array_equal(t1, intersubject.render_image(block, geometry, "t1", 5.0, np.random.default_rng(0)).array)
    random = intersubject.render_image(block, geometry, "random", 5.0, np.random.default_rng(0)).array
    assert t1.shape == random.shape and abs(np.corrcoef(t1.ravel(), random.ravel())[0, 1]) < 0.99


def test_pair_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="two subjects"):
        intersubject.build_pair(3, 3, tmp_path, data_dir=DATA)
    with pytest.raises(FileNotFoundError, match="training_seg_02.nii.gz; pass --data-dir"):
        intersubject.build_pair(1, 2, tmp_path, data_dir=tmp_path / "nowhere")
    for argv in (["--pairs", "1:11"], ["--methods", "identity,truth"], ["--methods", "foo"],
                 ["--pairs", "1:2", "--data-dir", str(tmp_path / "nowhere")]):
        with pytest.raises(SystemExit) as stop:
            intersubject.main(["-o", str(tmp_path / "out"), *argv])
        assert stop.value.code == 2


def _synthetic_pair(tmp_path: Path, shift_mm: np.ndarray) -> Case:
    """Two label volumes of one block anatomy: the moving one on an oblique grid, its content at x + shift."""
    labels = np.zeros((20, 22, 24), np.int16)
    labels[4:14, 5:15, 6:18] = 2
    labels[8:12, 8:12, 9:14] = 17
    fixed_geom = Geometry((24, 22, 20), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    angle = np.deg2rad(30.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    moving_geom = Geometry((40, 40, 30), (0.8, 0.8, 1.0), (-5.0, -12.0, -4.0), rot)
    from benchmarks.sampling import grid_points, sample_at  # noqa: PLC0415
    moving = sample_at(labels, fixed_geom, grid_points(moving_geom) - shift_mm, order=0).reshape(moving_geom.shape)
    folder = tmp_path / "pair"
    folder.mkdir()
    write_image(Image(labels, fixed_geom), folder / "fixed_labels.nii.gz")
    write_image(Image(moving.astype(np.int16), moving_geom), folder / "moving_labels.nii.gz")
    (folder / "case.json").write_text(json.dumps({"name": "pair", "preset": "auto", "label_ids": [2, 17]}))
    return Case.load(folder)


def test_dice_maps_fixed_points_through_the_field_in_physical_space(tmp_path):
    shift = np.array([3.0, -2.0, 1.0])
    case = _synthetic_pair(tmp_path, shift)
    field_geom = Geometry((12, 11, 10), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    disp = np.broadcast_to(shift[:, None, None, None], (3, *field_geom.shape)).astype(np.float32)
    right = intersubject.pair_dice(case, disp, field_geom)
    wrong = intersubject.pair_dice(case, np.zeros_like(disp), field_geom)
    # nearest-neighbour labels resampled twice (onto the oblique 0.8 mm grid, then at the fixed points)
    assert right["dice_2"] > 0.93 and right["dice_17"] > 0.9, right
    assert wrong["dice_17"] < 0.5 and wrong["dice"] < right["dice"] - 0.2, wrong
    assert right["folds_pct"] == 0.0 and abs(right["jac_min"] - 1.0) < 1e-6


def test_command_line_registration_beats_the_identity(command_line_run):
    out = command_line_run
    rows = {r["method"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert set(rows) == {"identity", "adregnet-fast"} and all(r["status"] == "ok" for r in rows.values())
    assert float(rows["adregnet-fast"]["dice"]) > float(rows["identity"]["dice"]) + 0.3, rows
    assert float(rows["adregnet-fast"]["folds_pct"]) < 0.1
    assert rows["adregnet-fast"]["preset"] == "brain-mri"
    summary = (out / "summary.md").read_text()
    assert "| adregnet-fast |" in summary and "contrast t1" in summary
