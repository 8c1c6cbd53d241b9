"""DIR-Lab and IXI loaders, tested on files generated here in those formats (no real data exists)."""
from __future__ import annotations

import numpy as np
import pytest

from ADRegNetLib.io import (DIRLAB_CASES, Image, ImageError, LandmarkError, dirlab_geometry, find_dirlab_files,
                            list_ixi_subjects, load_dirlab_case, load_ixi_subject, read_dirlab_image,
                            write_dirlab_image, write_image)
from ADRegNetLib.spatial.geometry import Geometry


def test_case_table_matches_published_figures():
    assert DIRLAB_CASES[1] == ((256, 256, 94), (0.97, 0.97, 2.5))
    assert [DIRLAB_CASES[c][0][2] for c in range(1, 11)] == [94, 112, 104, 99, 106, 128, 136, 128, 128, 120]
    assert [DIRLAB_CASES[c][1][0] for c in range(1, 6)] == [0.97, 1.16, 1.15, 1.13, 1.10]
    assert all(DIRLAB_CASES[c][0][:2] == (512, 512) and DIRLAB_CASES[c][1] == (0.97, 0.97, 2.5) for c in range(6, 11))
    with pytest.raises(ValueError, match="1..10"):
        dirlab_geometry(11)


def _make_case1(root, rng, n_landmarks=30):
    """A Case1Pack with T00/T50 raw images holding a marker value at every landmark voxel."""
    size, _ = DIRLAB_CASES[1]
    pack = root / "Case1Pack"
    (pack / "Images").mkdir(parents=True)
    (pack / "ExtremePhases").mkdir()
    landmarks = {}
    for phase, shift in (("T00", 0), ("T50", 3)):
        vol = np.full(size[::-1], -1000, dtype=np.int16)  # (Z, Y, X)
        ijk = np.stack([rng.integers(1, size[0] + 1 - shift, n_landmarks),  # 1-based, as DIR-Lab
                        rng.integers(1, size[1] + 1, n_landmarks),
                        rng.integers(1, size[2] + 1, n_landmarks)], 1)
        ijk = np.unique(ijk, axis=0)
        for n, (i, j, k) in enumerate(ijk):
            vol[k - 1, j - 1, i - 1] = 1000 + n
        write_dirlab_image(vol, pack / "Images" / f"case1_{phase}_s.img")
        (pack / "ExtremePhases" / f"Case1_300_{phase}_xyz.txt").write_text(
            "".join(f"{i}\t{j}\t{k}\t\n" for i, j, k in ijk))
        landmarks[phase] = ijk
    return landmarks


def test_dirlab_case_landmarks_hit_their_voxels(tmp_path, rng):
    ijk = _make_case1(tmp_path, rng)
    case = load_dirlab_case(tmp_path, 1)
    for phase in ("T00", "T50"):
        img = case.images[phase]
        pts = case.landmarks[phase]
        assert img.array.shape == (94, 256, 256) and img.array.dtype == np.float32
        assert pts.shape == (len(ijk[phase]), 3)
        idx = np.round(img.geometry.physical_to_index(pts)).astype(int)
        values = img.array[idx[:, 2], idx[:, 1], idx[:, 0]]
        np.testing.assert_array_equal(values, 1000 + np.arange(len(pts)))
        # mm: (i - 1) * spacing along each axis, slices going towards -z (feet) in LPS
        expected = (ijk[phase] - 1) * np.array([0.97, 0.97, -2.5])
        np.testing.assert_allclose(pts, expected, atol=1e-9)


def test_dirlab_orientation_and_offset(tmp_path, rng):
    vol = rng.integers(0, 2000, size=(6, 5, 4)).astype(np.int16)
    write_dirlab_image(vol, tmp_path / "x.img")
    img = read_dirlab_image(tmp_path / "x.img", size=(4, 5, 6), spacing=(1.0, 1.5, 2.5), hu_offset=-1024)
    np.testing.assert_array_equal(img.array, vol.astype(np.float32) - 1024)  # voxels never reordered
    np.testing.assert_array_equal(img.geometry.direction, np.diag([1.0, 1.0, -1.0]))
    first, last = img.geometry.index_to_physical(np.array([[0, 0, 0], [0, 0, 5]]))
    assert first[2] > last[2]  # slice 0 is the most superior (LPS +z = superior)
    flat = read_dirlab_image(tmp_path / "x.img", size=(4, 5, 6), spacing=(1.0, 1.5, 2.5), superior_first=False)
    np.testing.assert_array_equal(flat.geometry.direction, np.eye(3))


def test_dirlab_wrong_size_names_bytes(tmp_path):
    (tmp_path / "case2_T00_s.img").write_bytes(b"\0" * 1000)
    with pytest.raises(ImageError, match=r"has 1000 bytes but a DIR-Lab case 2 volume of \[256, 256, 112\].*needs 14680064"):
        read_dirlab_image(tmp_path / "case2_T00_s.img")
    (tmp_path / "scan.img").write_bytes(b"\0" * 10)
    with pytest.raises(ImageError, match="cannot tell the DIR-Lab case"):
        read_dirlab_image(tmp_path / "scan.img")
    with pytest.raises(ImageError, match="no such DIR-Lab image"):
        read_dirlab_image(tmp_path / "case1_T00_s.img")


def test_dirlab_file_discovery_variants(tmp_path):
    for rel in ["Case8Deploy/Images/case8_T00.img", "Case8Deploy/extremePhases/case8_dirLab300_T00_xyz.txt",
                "Case10Pack/Images/case10_T50.img", "Case10Pack/ExtremePhases/Case10_300_T50_xyz.txt",
                "Case3Pack/Images/case3_T00_s.img"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    img, lm = find_dirlab_files(tmp_path, 8, "T00")
    assert img.name == "case8_T00.img" and lm.name == "case8_dirLab300_T00_xyz.txt"
    img, lm = find_dirlab_files(tmp_path / "Case10Pack", 10, "t50")
    assert img.name == "case10_T50.img" and lm.name == "Case10_300_T50_xyz.txt"
    img, lm = find_dirlab_files(tmp_path, 3, "T00")
    assert lm is None
    with pytest.raises(ImageError, match="no folder Case4Pack"):
        find_dirlab_files(tmp_path, 4)
    with pytest.raises(ImageError, match="no image case3_T50"):
        find_dirlab_files(tmp_path, 3, "T50")


def test_dirlab_missing_landmarks(tmp_path, rng):
    _make_case1(tmp_path, rng, n_landmarks=3)
    (tmp_path / "Case1Pack" / "ExtremePhases" / "Case1_300_T50_xyz.txt").unlink()
    with pytest.raises(LandmarkError, match="no landmark file Case1_300_T50_xyz.txt"):
        load_dirlab_case(tmp_path, 1)
    case = load_dirlab_case(tmp_path, 1, require_landmarks=False)
    assert set(case.landmarks) == {"T00"} and set(case.images) == {"T00", "T50"}


# ---------------------------------------------------------------------------------------------- IXI
def _ixi(root, rng, ids=("IXI002-Guys-0828", "IXI012-HH-1211"), label_dir=None):
    g = Geometry((8, 9, 10), [1.2, 0.9, 1.0], [-5.0, 3.0, 1.0])
    out = {}
    for sid in ids:
        img = Image(rng.random(g.shape).astype(np.float32), g, sid)
        lab = Image(rng.integers(0, 4, g.shape).astype(np.int64), g, sid)
        write_image(img, root / f"{sid}-T1.nii.gz")
        folder = root if label_dir is None else root / label_dir
        folder.mkdir(exist_ok=True)
        write_image(lab, folder / f"{sid}-seg.nii.gz")
        out[sid] = (img, lab)
    return out


def test_ixi_lists_and_loads(tmp_path, rng):
    truth = _ixi(tmp_path, rng)
    write_image(Image(np.zeros((10, 9, 8), np.float32), Geometry((8, 9, 10))), tmp_path / "IXI099-IOP-0001-T1.nii.gz")
    (tmp_path / "README.txt").write_text("not an image")
    subjects = list_ixi_subjects(tmp_path)
    assert [s.subject_id for s in subjects] == ["IXI002-Guys-0828", "IXI012-HH-1211", "IXI099-IOP-0001"]
    assert subjects[2].label_path is None
    assert [s.subject_id for s in list_ixi_subjects(tmp_path, require_labels=True)] == list(truth)
    image, labels = load_ixi_subject(subjects[0])
    np.testing.assert_array_equal(image.array, truth["IXI002-Guys-0828"][0].array)
    np.testing.assert_array_equal(labels.array, truth["IXI002-Guys-0828"][1].array)
    assert labels.array.dtype == np.int64
    assert load_ixi_subject(subjects[2])[1] is None


def test_ixi_labels_subfolder_and_errors(tmp_path, rng):
    _ixi(tmp_path, rng, ids=("S1",), label_dir="labels")
    [subject] = list_ixi_subjects(tmp_path)
    assert subject.label_path.parent.name == "labels"
    with pytest.raises(ImageError, match="holds no '<subject>-T2.nii.gz' image"):
        list_ixi_subjects(tmp_path, modality="T2")
    with pytest.raises(ImageError, match="no such folder"):
        list_ixi_subjects(tmp_path / "nope")
    write_image(Image(np.zeros((5, 5, 5), np.int64), Geometry((5, 5, 5))), tmp_path / "labels" / "S1-seg.nii.gz")
    with pytest.raises(ImageError, match="label map grid .* differs from the image grid"):
        load_ixi_subject(subject)
