r"""Benchmark cases from real anatomy, each warped by a KNOWN smooth diffeomorphic deformation.

A case is a folder that every method reads (AD-RegNet and the peers read the SAME files):

============================  =====================================================================
``fixed.nii.gz``              fixed image (float32) on the fixed grid
``moving.nii.gz``             moving image (float32) on the moving grid (often the fixed grid)
``fixed_labels.nii.gz``       labels on the fixed grid (int16), for Dice
``moving_labels.nii.gz``      the same labels carried to the moving image by the true deformation
``fixed_mask.nii.gz``         foreground of the fixed image (uint8), where landmarks are drawn
``true_disp.nii.gz``          the true field u: 3-component vector image on the fixed grid,
                              LPS mm, (x, y, z) components; fixed x -> moving x + u(x)
``fixed_landmarks.csv``       header ``x,y,z``: K fixed points, LPS mm
``moving_landmarks.csv``      header ``x,y,z``: the K matching moving points x + u(x)
``case.json``                 name, preset, labels used for Dice, initial TRE, generator settings
============================  =====================================================================

How a case is made (``S`` is a real image and its labels, resampled physically):

1. the fixed image is ``S`` sampled on the fixed grid, then given its own intensity change;
2. a random smooth stationary velocity field ``v`` on the fixed grid is integrated by scaling and
   squaring: ``u = exp(v) - id`` is diffeomorphic (checked: min det J > 0, stored in case.json);
3. the moving image is ``S`` sampled at ``y + w(y)`` for every moving voxel ``y``, where ``w`` is
   the inverse of ``u`` found by fixed-point iteration ``w = -u(y + w)`` (``u`` trilinear); so
   ``moving(x + u(x)) = S(x)``: the true transform maps fixed x to moving x + u(x). The moving image
   then gets a *different* intensity change (gamma, bias field, noise; per-label contrasts for the
   label-map cases; scale/offset/bias/noise in HU for CT; for ``brain-t1t2`` the moving image is a
   T2-like rendering of the same T1, a cross-modality pair);
4. landmarks are drawn uniformly in the fixed foreground at continuous positions; the moving
   landmarks are ``x + u(x)`` with ``u`` interpolated trilinearly.

Everything is seeded: the same name, seed and data give the same files (bit for bit; checked
against the generator that lived in ``ADRegNetLib/benchmark`` before it moved here).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ADRegNetLib.io import read_displacement_field, read_landmarks
from ADRegNetLib.spatial.geometry import Geometry

from .build import build_case_files
from .recipes import CASE_NAMES, DEFAULT_CASES, RECIPES, recipe_settings
from .sources import default_data_dir

__all__ = ["CASE_NAMES", "DEFAULT_CASES", "Case", "build_case", "build_cases", "default_data_dir", "read_geometry"]


def read_geometry(path: str | Path) -> Geometry:
    """Geometry of an image file, read from its header only (no voxels)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return Geometry(reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(),
                    np.asarray(reader.GetDirection()).reshape(3, 3))


@dataclass
class Case:
    """A benchmark case written to ``directory`` (see the module docstring for the files).

    Attributes:
        name: case name ("brain", "lung", ...).
        directory: the folder holding the files.
        preset: the AD-RegNet preset the case is run with ("brain-mri", "lung-ct", "auto", ...).
        label_ids: labels scored by Dice (those present in the fixed labels).
        info: everything else from case.json (initial TRE, field statistics, seed, sizes).
    """

    name: str
    directory: Path
    preset: str
    label_ids: list[int]
    info: dict = field(default_factory=dict)

    fixed_path = property(lambda self: self.directory / "fixed.nii.gz")
    moving_path = property(lambda self: self.directory / "moving.nii.gz")
    fixed_labels_path = property(lambda self: self.directory / "fixed_labels.nii.gz")
    moving_labels_path = property(lambda self: self.directory / "moving_labels.nii.gz")
    fixed_mask_path = property(lambda self: self.directory / "fixed_mask.nii.gz")
    true_disp_path = property(lambda self: self.directory / "true_disp.nii.gz")
    fixed_landmarks_path = property(lambda self: self.directory / "fixed_landmarks.csv")
    moving_landmarks_path = property(lambda self: self.directory / "moving_landmarks.csv")

    def fixed_landmarks(self) -> np.ndarray:
        """(K, 3) float64 fixed landmarks, LPS mm."""
        return read_landmarks(self.fixed_landmarks_path)

    def moving_landmarks(self) -> np.ndarray:
        """(K, 3) float64 moving landmarks (x + u(x) under the true field), LPS mm."""
        return read_landmarks(self.moving_landmarks_path)

    def fixed_geometry(self) -> Geometry:
        return read_geometry(self.fixed_path)

    def moving_geometry(self) -> Geometry:
        return read_geometry(self.moving_path)

    def true_disp(self) -> np.ndarray:
        """(3, Z, Y, X) float32 true field on the fixed grid, LPS mm, (x, y, z) components."""
        return read_displacement_field(self.true_disp_path)[0].astype(np.float32)

    @classmethod
    def load(cls, directory: str | Path) -> "Case":
        """Read ``case.json`` from a case folder.

        Raises:
            FileNotFoundError: the folder holds no case (build it with ``build_case``).
        """
        directory = Path(directory)
        meta_path = directory / "case.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory} is not a benchmark case folder (no case.json); "
                                    "build it with benchmarks.cases.build_case")
        meta = json.loads(meta_path.read_text())
        return cls(meta["name"], directory, meta["preset"], [int(v) for v in meta["label_ids"]], meta)


def _seed_for(name: str, seed: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, *[ord(c) for c in name]])


def build_case(name: str, out_dir: str | Path, data_dir: str | Path | None = None, seed: int = 0,
               landmarks: Optional[int] = None, force: bool = False) -> Case:
    """Build (or reuse) one case in ``out_dir/<name>``.

    Args:
        name: one of :data:`CASE_NAMES`.
        out_dir: folder that holds the case folders.
        data_dir: the shared real data (defaults to :func:`default_data_dir`).
        seed: random seed; the case name is mixed in, so cases differ from each other.
        landmarks: number of landmarks (default: the recipe's, 300; 100 for "quick").
        force: rebuild even when a case with the same settings is on disk.

    Returns:
        The :class:`Case`.

    Raises:
        ValueError: unknown name.
        FileNotFoundError: the real data is missing (the message names the file).
    """
    if name not in RECIPES:
        raise ValueError(f"unknown benchmark case {name!r}; expected one of {', '.join(CASE_NAMES)}")
    recipe = RECIPES[name]
    n_landmarks = int(landmarks if landmarks is not None else recipe.landmarks)
    settings = recipe_settings(recipe, seed, n_landmarks)
    directory = Path(out_dir) / name
    meta_path = directory / "case.json"
    if meta_path.is_file() and not force:
        meta = json.loads(meta_path.read_text())
        if meta.get("settings") == settings:
            return Case.load(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    t0 = time.perf_counter()
    rngs = [np.random.default_rng(s) for s in _seed_for(name, seed).spawn(5)]
    meta = build_case_files(recipe, directory, data_dir, rngs[:4], n_landmarks)
    meta.update({"settings": settings, "build_seconds": round(time.perf_counter() - t0, 1)})
    meta_path.write_text(json.dumps(meta, indent=1))
    return Case.load(directory)


def build_cases(names: Sequence[str], out_dir: str | Path, data_dir: str | Path | None = None, seed: int = 0,
                force: bool = False, log: Callable[[str], None] = print) -> list[Case]:
    """Build several cases (see :func:`build_case`); missing data gives a note and skips the case."""
    cases = []
    for name in names:
        try:
            case = build_case(name, out_dir, data_dir, seed, force=force)
        except FileNotFoundError as exc:
            log(f"[benchmark] skipping case {name}: {exc}")
            continue
        log(f"[benchmark] case {name}: fixed {case.info['fixed_size_xyz']} @ {case.info['fixed_spacing_mm']} mm, "
            f"initial TRE {case.info['initial_tre_mean_mm']:.2f} mm (p95 {case.info['initial_tre_p95_mm']:.2f}), "
            f"true det J in [{case.info['true_jacobian_min']:.2f}, {case.info['true_jacobian_max']:.2f}]")
        cases.append(case)
    return cases
