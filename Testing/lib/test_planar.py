"""Two single slices (2-D images, or volumes one voxel thick) registered in their plane (``engine.planar``): real
brain slices of two people (OASIS-TRT-20, manual labels), slices in parallel planes apart and on an oblique plane,
the refusals, and the result's field against SimpleITK's own ``TransformPoint``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ADRegNetLib.engine import RegistrationError, register
from ADRegNetLib.engine.planar import Plane, slab, slice_axis
from ADRegNetLib.io import read_displacement_field, read_image, write_displacement_field, write_transform
from ADRegNetLib.spatial.affine import AffineMap
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image, ImageError

OASIS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "brain2d-oasis-trt20-slices"
needs_oasis = pytest.mark.skipif(not OASIS.is_dir(), reason="../shared/data/brain2d-oasis-trt20-slices is not available")
FAST = dict(quality="fast", device="cpu", compute_inverse=False)


def _slice(subject: int, kind: str = "Atlases") -> Image:
    name = (f"OASIS-TRT-20-{subject}_slice118.nii.gz" if kind == "Atlases" else
            f"OASIS-TRT-20-{subject}_DKT31_CMA_labels_slice118.nii.gz")
    return read_image(OASIS / kind / name, dtype=np.float32 if kind == "Atlases" else np.int32)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    labels = [v for v in np.unique(a) if v > 0 and np.count_nonzero(a == v) >= 20]
    return float(np.mean([2 * np.count_nonzero((a == v) & (b == v)) / (np.count_nonzero(a == v) +
                                                                         np.count_nonzero(b == v)) for v in labels]))


def _rotation(degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    about_x = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    about_z = np.array([[np.cos(t / 2), -np.sin(t / 2), 0], [np.sin(t / 2), np.cos(t / 2), 0], [0, 0, 1]])
    return about_z @ about_x


def test_a_2d_file_is_read_as_one_slice(tmp_path):
    flat = sitk.Image([30, 20], sitk.sitkFloat32)
    flat.SetSpacing((0.8, 1.2))
    flat.SetOrigin((4.0, -2.0))
    sitk.WriteImage(flat, str(tmp_path / "flat.nii.gz"))
    image = read_image(tmp_path / "flat.nii.gz")
    assert image.array.shape == (1, 20, 30) and image.geometry.size == (30, 20, 1)
    np.testing.assert_allclose(image.geometry.spacing, [0.8, 1.2, 1.0])
    np.testing.assert_allclose(image.geometry.origin, [4.0, -2.0, 0.0])
    assert slice_axis(image.geometry) == 2


def test_a_slab_repeats_the_slice_with_the_slice_in_the_middle():
    image = Image(np.arange(12, dtype=np.float32).reshape(3, 1, 4), Geometry((4, 1, 3), (1, 2, 1), (5, 6, 7),
                                                                            _rotation(30)), "s")
    thick = slab(image, 1, 2.5, count=5)
    assert thick.geometry.size == (4, 5, 3) and thick.array.shape == (3, 5, 4)
    np.testing.assert_array_equal(thick.array[:, 2], image.array[:, 0])
    np.testing.assert_array_equal(thick.array[:, 0], image.array[:, 0])
    middle = thick.geometry.index_to_physical(np.array([[1.0, 2.0, 2.0]]))
    np.testing.assert_allclose(middle, image.geometry.index_to_physical(np.array([[1.0, 0.0, 2.0]])), atol=1e-9)


def test_a_planar_field_is_the_middle_slice_in_plane():
    normal = np.array([0.0, 0.6, 0.8])
    plane = Plane(fixed_axis=2, moving_axis=2, normal=normal, offset_mm=3.0, slab_spacing_mm=2.0)
    disp = np.random.default_rng(0).normal(size=(3, 5, 4, 6)).astype(np.float32)
    flat = plane.project(disp)
    assert flat.shape == disp.shape and flat.dtype == np.float32
    np.testing.assert_allclose(np.tensordot(normal, flat, axes=(0, 0)), 0.0, atol=1e-5)
    np.testing.assert_array_equal(flat[:, 0], flat[:, 4])
    in_plane = disp[:, 2] - normal[:, None, None] * np.tensordot(normal, disp[:, 2], axes=(0, 0))
    np.testing.assert_allclose(flat[:, 2], in_plane, atol=1e-5)
    np.testing.assert_allclose(plane.shift_mm, [0.0, 1.8, 2.4])


def test_a_slice_against_a_volume_and_tilted_slices_are_refused():
    one = Image(np.ones((1, 32, 32), np.float32), Geometry((32, 32, 1)), "slice")
    volume = Image(np.ones((32, 32, 32), np.float32), Geometry((32, 32, 32)), "volume")
    with pytest.raises(RegistrationError, match=r"the fixed image is a single slice \(size \[32, 32, 1\]\) and the "
                                                r"moving image is not: slice-to-volume registration is not supported"):
        register(one, volume, **FAST)
    with pytest.raises(RegistrationError, match=r"the moving image is a single slice"):
        register(volume, one, **FAST)
    line = Image(np.ones((1, 1, 32), np.float32), Geometry((32, 1, 1)), "line")
    with pytest.raises(RegistrationError, match=r"the moving image is a line or a point \(size \[32, 1, 1\]\); "
                                                r"registration needs two volumes, or two single slices"):
        register(one, line, **FAST)
    with pytest.raises(RegistrationError, match=r"an initial transform is not taken with two single slices"):
        register(one, one, initial_transform=AffineMap.identity(), **FAST)
    tilted = Image(one.array, Geometry((32, 32, 1), direction=_rotation(5)), "tilted")
    with pytest.raises(RegistrationError, match=r"the two slices lie in planes 5.\d degrees apart \(at most 1 "
                                                r"accepted\).*resample the moving slice into the fixed slice's plane"):
        register(one, tilted, **FAST)


@needs_oasis
def test_two_people_slices_register_in_their_plane_and_labels_overlap_more(tmp_path):
    fixed, moving = _slice(1), _slice(2)
    result = register(fixed, moving, **FAST)
    assert result.disp_mm.shape == (3, 1, 291, 216) and result.geometry.allclose(fixed.geometry, atol=1e-9)
    assert result.warped.array.shape == result.jacobian.array.shape == (1, 291, 216)
    np.testing.assert_array_equal(result.disp_mm[2], 0.0)  # both slices lie in z = 0: nothing leaves the plane
    assert result.metrics["planar"]["plane_distance_mm"] == 0.0 and result.metrics["jacobian"]["folding_count"] == 0
    fixed_labels, moving_labels = _slice(1, "Labels"), _slice(2, "Labels")
    warped = result.transform.warp(Image(moving_labels.array, moving_labels.geometry), mode="nearest").array
    before, after = _dice(fixed_labels.array, moving_labels.array), _dice(fixed_labels.array, warped)
    assert before < 0.45 and after > before + 0.05  # measured: 0.419 -> 0.50-0.51 (fast and balanced)
    # the transform file says what the result says: SimpleITK's TransformPoint on points of the slice
    write_transform(result.disp_mm, result.geometry, tmp_path / "t.h5")
    itk = sitk.ReadTransform(str(tmp_path / "t.h5"))
    points = fixed.geometry.index_to_physical(np.array([[40.0, 60.0, 0], [108.3, 145.7, 0], [170.0, 250.0, 0]]))
    np.testing.assert_allclose([itk.TransformPoint(p.tolist()) for p in points], result.transform.map_points(points),
                               atol=1e-3)


@needs_oasis
@pytest.mark.parametrize("distance_mm", [12.0, 80.0])  # 80: the slabs (34 mm deep) would not overlap as they lie
def test_slices_in_parallel_planes_apart_map_into_the_moving_plane(distance_mm):
    template = _slice(1)
    direction = _rotation(20)  # an oblique plane, as a reformatted slice in 3D Slicer
    geometry = Geometry(template.geometry.size, template.geometry.spacing, (10.0, -20.0, 30.0), direction)
    fixed = Image(template.array, geometry, "fixed")
    normal = direction[:, 2]
    # the same slice further along the normal and shifted 3 mm along its own x axis: a pure translation
    moving = Image(template.array, Geometry(geometry.size, geometry.spacing, geometry.origin + distance_mm * normal
                                            + 3.0 * direction[:, 0], direction), "moving")
    corners = geometry.index_to_physical(np.array([[50.0, 80.0, 0.0], [150.0, 200.0, 0.0]]))
    result = register(fixed, moving, fixed_landmarks=corners,
                      moving_landmarks=corners + distance_mm * normal + 3.0 * direction[:, 0], landmarks_guide=False,
                      **dict(FAST, use_network=False, compute_inverse=True))
    disp = result.disp_mm.reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(normal @ disp, distance_mm, atol=1e-4)
    np.testing.assert_allclose(normal @ result.inverse_disp_mm.reshape(3, -1), -distance_mm, atol=1e-4)
    assert result.metrics["planar"]["plane_distance_mm"] == pytest.approx(distance_mm, abs=1e-3)
    assert result.metrics["tre_before"]["mean"] == pytest.approx(3.0, abs=1e-3)  # in the plane
    assert result.metrics["tre_after"]["mean"] < 0.3
    np.testing.assert_allclose(result.warped_fixed_landmarks, result.transform.map_points(corners), atol=1e-4)
    brain = template.array.reshape(-1) > 0.2 * template.array.max()
    shift = (direction[:, 0] @ disp)[brain]
    assert abs(float(np.mean(shift)) - 3.0) < 0.15 and float(np.percentile(np.abs(shift - 3.0), 95)) < 0.5


def test_a_one_slice_field_file_comes_back_where_it_was(tmp_path):
    """ITK reads a one-slice vector NIfTI as 2-D; the field is put back where the file's sform places it."""
    geometry = Geometry((12, 10, 1), (0.8, 1.5, 4.0), (1.0, 2.0, 37.0), _rotation(17))
    disp = np.random.default_rng(1).normal(size=(3, 1, 10, 12)).astype(np.float32)
    for name in ("f.nii.gz", "f.nrrd"):
        write_displacement_field(disp, geometry, tmp_path / name)
        back, where = read_displacement_field(tmp_path / name)
        np.testing.assert_array_equal(back, disp)
        assert where.size == geometry.size and where.allclose(geometry, atol=1e-5)


@needs_oasis
def test_the_command_line_registers_two_2d_files_and_warps_their_labels(tmp_path, capsys):
    from ADRegNetLib.cli.main import main

    files = {k: OASIS / "Atlases" / f"OASIS-TRT-20-{k}_slice118.nii.gz" for k in (1, 2)}
    labels = {k: OASIS / "Labels" / f"OASIS-TRT-20-{k}_DKT31_CMA_labels_slice118.nii.gz" for k in (1, 2)}
    out = tmp_path / "out"
    assert main(["register", str(files[1]), str(files[2]), "-o", str(out), "--quality", "fast", "-q"]) == 0
    disp, geometry = read_displacement_field(out / "displacement.nii.gz")
    assert disp.shape == (3, 1, 291, 216) and geometry.allclose(read_image(files[1]).geometry, atol=1e-5)
    assert main(["warp", str(out), "--labels", str(labels[2]), "-o", str(out / "warped_labels.nii.gz"), "-q"]) == 0
    warped = read_image(out / "warped_labels.nii.gz", dtype=np.int32).array
    fixed = _slice(1, "Labels").array
    assert _dice(fixed, warped) > _dice(fixed, _slice(2, "Labels").array) + 0.05
    assert (out / "report.png").is_file() and (out / "transform.h5").is_file()


def test_bad_slices_are_refused_with_the_slices_own_figures():
    """The checks judge the slice, not its slab of copies: counts, size and spacing are the user's."""
    rng = np.random.default_rng(0)
    good = Image(rng.random((1, 40, 40), dtype=np.float32), Geometry((40, 40, 1)), "good")
    holes = good.array.copy()
    holes[0, 3, 4], holes[0, 5, 5] = np.nan, np.inf
    with pytest.raises(ImageError, match=r"moving image 'holes' has 2 NaN or infinite voxels \(of 1600\)"):
        register(good, Image(holes, good.geometry, "holes"), **FAST)
    narrow = Image(rng.random((1, 10, 40), dtype=np.float32), Geometry((40, 10, 1)), "narrow")
    with pytest.raises(ImageError, match=r"fixed image 'narrow' has only 10 voxels along y \(size \[40, 10, 1\] x, y, "
                                         r"z\); at least 16"):
        register(narrow, narrow, **FAST)
    # 0.02 mm pixels (a micrograph) against the slab's 2 mm slice distance would be an anisotropy of 100: not theirs
    fine = Image(good.array, Geometry((40, 40, 1), (0.02, 0.02, 0.02)), "fine")
    assert register(fine, fine, **FAST).disp_mm.shape == (3, 1, 40, 40)
