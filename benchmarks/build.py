r"""Making one case's files (the steps of :mod:`.cases`' docstring), given its recipe and random streams."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ADRegNetLib.io import write_displacement_field, write_image, write_landmarks
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.jacobian import jacobian_determinant

from .deformations import breathing_svf, random_smooth_svf, scale_svf
from .intensities import (intensity_change_ct, intensity_change_mri, render_flair_like, render_t2_like,
                          synth_image_from_labels)
from .landmarks import sample_landmarks, true_moving_landmarks
from .recipes import WHITE_MATTER_LABELS, Recipe
from .sampling import grid_points, invert_field_at, sample_at
from .sources import Source, bbox_geometry, load_source, oblique_geometry, prefilter

__all__ = ["build_case_files"]


def _grids(recipe: Recipe, src: Source) -> tuple[Geometry, Geometry]:
    """(fixed grid, moving grid) of a case."""
    if recipe.source == "lung":
        moving_geom = fixed_geom = bbox_geometry(src.geometry, src.mask_fn(src.labels), margin_vox=10)
    elif recipe.source == "synthseg":
        crop = bbox_geometry(src.geometry, src.labels > 0, margin_vox=4)
        moving_geom = fixed_geom = crop.with_spacing(recipe.spacing)
    else:
        moving_geom = fixed_geom = src.geometry.with_spacing(recipe.spacing)
    if recipe.oblique:
        fixed_geom = oblique_geometry(src.geometry, src.mask_fn(src.labels), 15.0, (1.5, 1.5, 3.0))
    return fixed_geom, moving_geom


def _source_images(recipe: Recipe, src: Source, target_spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """(fixed, moving) source intensities on the source grid, anti-aliased for ``target_spacing`` mm."""
    moving = src.image
    renderers = {"t2": render_t2_like, "flair": render_flair_like}
    if recipe.moving_contrast in renderers:
        moving = renderers[recipe.moving_contrast](src.image, np.isin(src.labels, WHITE_MATTER_LABELS))
    elif recipe.moving_contrast is not None:
        raise ValueError(f"unknown moving contrast {recipe.moving_contrast!r}; expected None, 't2' or 'flair'")
    fixed = prefilter(src.image, src.geometry, target_spacing)
    return fixed, (fixed if moving is src.image else prefilter(moving, src.geometry, target_spacing))


def _label_ids(recipe: Recipe, fixed_labels: np.ndarray, fixed_mask: np.ndarray) -> list[int]:
    present = set(np.unique(fixed_labels[fixed_mask]).tolist())
    if recipe.label_ids is not None:
        return [int(v) for v in recipe.label_ids if v in present]
    counts = np.bincount(fixed_labels[fixed_mask].astype(np.int64).ravel())
    return [int(v) for v in sorted(present) if v > 0 and counts[v] >= 20]


def build_case_files(recipe: Recipe, directory: Path, data_dir: Path, rngs: Sequence[np.random.Generator],
                     n_landmarks: int) -> dict:
    """Write the files of one case into ``directory``.

    Args:
        recipe: what to make.
        directory: the case folder (exists).
        data_dir: the shared real data.
        rngs: four generators: (deformation, fixed intensities, moving intensities, landmarks).
        n_landmarks: number of landmarks.

    Returns:
        The case.json content except ``settings`` and ``build_seconds``.

    Raises:
        FileNotFoundError: the real data is missing.
        ValueError: the source data looks wrong (empty foreground).
    """
    rng_field, rng_fixed, rng_moving, rng_lm = rngs
    src = load_source(recipe.source, data_dir)
    fixed_geom, moving_geom = _grids(recipe, src)
    src_fixed = src_moving = None
    if src.image is not None:
        src_fixed, src_moving = _source_images(recipe, src, float(np.min(fixed_geom.spacing)))

    # fixed labels and foreground
    fixed_pts = grid_points(fixed_geom)
    fixed_labels = sample_at(src.labels, src.geometry, fixed_pts, order=0).reshape(fixed_geom.shape).astype(np.int16)
    fixed_mask = src.mask_fn(fixed_labels)
    if fixed_mask.sum() < 10:
        raise ValueError(f"case {recipe.name}: the fixed foreground is (almost) empty; the source data looks wrong")

    # the known deformation
    if recipe.source == "lung":
        velocity = breathing_svf(fixed_geom, fixed_mask, rng_field, recipe.lung_boundary_sigma_mm)
    else:
        velocity = random_smooth_svf(fixed_geom, rng_field, recipe.control_spacing_mm)
    velocity, true_disp = scale_svf(velocity, fixed_geom, fixed_mask, recipe.target_mean_mm)
    jac = jacobian_determinant(torch.from_numpy(true_disp)[None], fixed_geom)[0].numpy()

    # moving labels and images: S sampled at y + w(y)
    moving_pts = grid_points(moving_geom)
    w, resid = invert_field_at(true_disp, fixed_geom, moving_pts)
    src_pts = moving_pts + w
    moving_labels = sample_at(src.labels, src.geometry, src_pts, order=0).reshape(moving_geom.shape).astype(np.int16)
    if src.image is not None:
        fixed_img = sample_at(src_fixed, src.geometry, fixed_pts, 1, src.background).reshape(fixed_geom.shape)
        moving_img = sample_at(src_moving, src.geometry, src_pts, 1, src.background).reshape(moving_geom.shape)
        change = intensity_change_ct if recipe.source == "lung" else intensity_change_mri
        fixed_img = change(fixed_img, fixed_geom, rng_fixed)
        moving_img = change(moving_img, moving_geom, rng_moving)
    else:
        fixed_img = synth_image_from_labels(fixed_labels, fixed_geom, rng_fixed)
        moving_img = synth_image_from_labels(moving_labels, moving_geom, rng_moving)

    # landmarks
    fixed_lm = sample_landmarks(fixed_mask, fixed_geom, rng_lm, n_landmarks)
    moving_lm = true_moving_landmarks(fixed_lm, true_disp, fixed_geom)
    initial = np.linalg.norm(moving_lm - fixed_lm, axis=1)

    write_image(Image(fixed_img.astype(np.float32), fixed_geom), directory / "fixed.nii.gz")
    write_image(Image(moving_img.astype(np.float32), moving_geom), directory / "moving.nii.gz")
    write_image(Image(fixed_labels, fixed_geom), directory / "fixed_labels.nii.gz")
    write_image(Image(moving_labels, moving_geom), directory / "moving_labels.nii.gz")
    write_image(Image(fixed_mask.astype(np.uint8), fixed_geom), directory / "fixed_mask.nii.gz")
    write_displacement_field(true_disp, fixed_geom, directory / "true_disp.nii.gz", dtype=np.float32)
    write_landmarks(fixed_lm, directory / "fixed_landmarks.csv")
    write_landmarks(moving_lm, directory / "moving_landmarks.csv")
    mag = np.linalg.norm(true_disp[:, fixed_mask], axis=0)
    meta = {
        "name": recipe.name,
        "preset": recipe.preset,
        "description": recipe.description,
        "label_ids": _label_ids(recipe, fixed_labels, fixed_mask),
        "fixed_size_xyz": list(fixed_geom.size),
        "fixed_spacing_mm": [round(float(s), 4) for s in fixed_geom.spacing],
        "moving_size_xyz": list(moving_geom.size),
        "moving_spacing_mm": [round(float(s), 4) for s in moving_geom.spacing],
        "oblique": recipe.oblique,
        "initial_tre_mean_mm": float(initial.mean()),
        "initial_tre_p95_mm": float(np.percentile(initial, 95)),
        "true_field_mean_mm": float(mag.mean()),
        "true_field_max_mm": float(mag.max()),
        "true_jacobian_min": float(jac.min()),
        "true_jacobian_max": float(jac.max()),
        "inverse_residual_mm": resid,
        "landmarks": int(len(fixed_lm)),
    }
    if recipe.moving_contrast is not None:
        meta["moving_contrast"] = recipe.moving_contrast
    return meta
