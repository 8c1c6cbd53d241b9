r"""DIR-Lab 4DCT loader: raw ``.img`` volumes and the 300 expert landmarks of the extreme phases.

DIR-Lab (Castillo et al., Phys. Med. Biol. 54:1849-1870, 2009; Castillo et al., Phys. Med.
Biol. 55:305-327, 2010; https://med.emory.edu/departments/radiation-oncology/research-laboratories/
deformable-image-registration/) publishes ten thoracic 4DCT cases. The image sizes and voxel
spacings below are the figures of the DIR-Lab reference-data tables. The DIR-Lab pages could not
be opened while writing this; the table was checked against the copies of it in public DIR-Lab
loaders (the IDIR code of Wolterink et al., MIDL 2022, and others), which all agree:

=====  ===============  ================
case   size (x, y, z)   spacing (mm)
=====  ===============  ================
1      256 x 256 x 94   0.97 x 0.97 x 2.5
2      256 x 256 x 112  1.16 x 1.16 x 2.5
3      256 x 256 x 104  1.15 x 1.15 x 2.5
4      256 x 256 x 99   1.13 x 1.13 x 2.5
5      256 x 256 x 106  1.10 x 1.10 x 2.5
6      512 x 512 x 128  0.97 x 0.97 x 2.5
7      512 x 512 x 136  0.97 x 0.97 x 2.5
8      512 x 512 x 128  0.97 x 0.97 x 2.5
9      512 x 512 x 128  0.97 x 0.97 x 2.5
10     512 x 512 x 120  0.97 x 0.97 x 2.5
=====  ===============  ================

File format and the conventions this loader keeps
-------------------------------------------------
* Images: headerless 16-bit signed little-endian integers (``<i2``), x fastest, then y,
  then z: ``numpy.fromfile(path, "<i2").reshape(Z, Y, X)``. Names ``caseN_T00_s.img`` (cases
  1-5) or ``caseN_T00.img`` (cases 6-10), in ``CaseNPack/Images/``. Some copies store
  ``HU + 1024`` (air near 0): pass ``hu_offset=-1024`` for those.
* Landmarks: ``CaseNPack/ExtremePhases/CaseN_300_T00_xyz.txt`` and ``..._T50_xyz.txt`` (case
  8-10 variants such as ``case10_dirLab300_T00_xyz.txt`` are found too): one ``i j k`` line
  per landmark, **1-based** voxel indices (column, row, slice) of the array *as stored*
  (see :func:`ADRegNetLib.io.landmarks.parse_dirlab_text`).
* Orientation: the voxels are **never reordered**, so a landmark (i, j, k) is the array
  element ``[k - 1, j - 1, i - 1]`` of the file, exactly as published. The stored slices run
  head to foot (other loaders flip the slice axis to show the patient upright: the vroc
  DIR-Lab converter and the ANTsX DIR-Lab example both do ``np.flip`` along z), rows run
  anterior to posterior and columns right to left, as in an axial CT. Instead of flipping
  the data we put that in the geometry: direction ``diag(1, 1, -1)`` (LPS) with the origin
  at (0, 0, 0), so viewers show the patient upright while indices keep their published
  meaning. ``superior_first=False`` gives the identity direction instead. Distances (TRE)
  are the same either way.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..spatial.geometry import Geometry
from .image import Image, ImageError
from .landmarks import LandmarkError, read_dirlab_txt

__all__ = [
    "DIRLAB_CASES",
    "DirLabCase",
    "dirlab_geometry",
    "read_dirlab_image",
    "write_dirlab_image",
    "find_dirlab_files",
    "load_dirlab_case",
]

PathLike = Union[str, Path]

#: case -> (size (x, y, z), spacing (x, y, z) mm), the published DIR-Lab figures.
DIRLAB_CASES: dict[int, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    1: ((256, 256, 94), (0.97, 0.97, 2.5)),
    2: ((256, 256, 112), (1.16, 1.16, 2.5)),
    3: ((256, 256, 104), (1.15, 1.15, 2.5)),
    4: ((256, 256, 99), (1.13, 1.13, 2.5)),
    5: ((256, 256, 106), (1.10, 1.10, 2.5)),
    6: ((512, 512, 128), (0.97, 0.97, 2.5)),
    7: ((512, 512, 136), (0.97, 0.97, 2.5)),
    8: ((512, 512, 128), (0.97, 0.97, 2.5)),
    9: ((512, 512, 128), (0.97, 0.97, 2.5)),
    10: ((512, 512, 120), (0.97, 0.97, 2.5)),
}


def _case_entry(case: int):
    if case not in DIRLAB_CASES:
        raise ValueError(f"DIR-Lab case must be 1..10, got {case!r}")
    return DIRLAB_CASES[case]


def dirlab_geometry(case: Optional[int] = None, size: Optional[Sequence[int]] = None,
                    spacing: Optional[Sequence[float]] = None, superior_first: bool = True) -> Geometry:
    """Geometry of a DIR-Lab volume (see the module docstring for the orientation).

    Args:
        case: 1..10, gives size and spacing from :data:`DIRLAB_CASES`.
        size, spacing: (x, y, z) voxel counts and mm, overriding the case table (or instead of it).
        superior_first: slices are stored head first (DIR-Lab's order): direction diag(1, 1, -1).
    """
    if case is not None:
        case_size, case_spacing = _case_entry(case)
        size = size if size is not None else case_size
        spacing = spacing if spacing is not None else case_spacing
    if size is None or spacing is None:
        raise ValueError("give a DIR-Lab case number, or both size and spacing")
    direction = np.diag([1.0, 1.0, -1.0 if superior_first else 1.0])
    return Geometry(tuple(int(s) for s in size), np.asarray(spacing, dtype=np.float64), np.zeros(3), direction)


def read_dirlab_image(path: PathLike, case: Optional[int] = None, size: Optional[Sequence[int]] = None,
                      spacing: Optional[Sequence[float]] = None, superior_first: bool = True,
                      hu_offset: float = 0.0) -> Image:
    """Read a DIR-Lab raw ``.img`` volume (int16, little endian, no header).

    Args:
        path: the ``.img`` file.
        case: DIR-Lab case 1..10 (guessed from a ``caseN_`` file name when not given).
        size, spacing: (x, y, z) overrides of the case table.
        superior_first: see :func:`dirlab_geometry`.
        hu_offset: added to every voxel (``-1024`` for copies stored as HU + 1024).

    Returns:
        A float32 :class:`Image` with voxels as stored (no flip), geometry per :func:`dirlab_geometry`.

    Raises:
        ImageError: missing file, or a file size that does not match the expected volume (names
            both byte counts).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such DIR-Lab image file")
    if case is None and (size is None or spacing is None):
        match = re.search(r"case(\d+)", path.name, flags=re.IGNORECASE)
        if match is None:
            raise ImageError(f"{path}: cannot tell the DIR-Lab case from the name; pass case=1..10 (or size and spacing)")
        case = int(match.group(1))
    geometry = dirlab_geometry(case, size, spacing, superior_first)
    expected = geometry.num_voxels * 2
    actual = path.stat().st_size
    if actual != expected:
        raise ImageError(
            f"{path}: has {actual} bytes but a DIR-Lab case {case} volume of {list(geometry.size)} int16 voxels needs "
            f"{expected}; check the case number (or pass size=)"
        )
    data = np.fromfile(path, dtype="<i2").reshape(geometry.shape).astype(np.float32)
    if hu_offset:
        data += np.float32(hu_offset)
    return Image(data, geometry, path.name)


def write_dirlab_image(array_zyx: np.ndarray, path: PathLike) -> None:
    """Write a (Z, Y, X) volume as a DIR-Lab raw file (rounded, int16 little endian)."""
    array = np.asarray(array_zyx)
    if array.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) array, got shape {array.shape}")
    if np.any(array < -32768) or np.any(array > 32767):
        raise ValueError("values do not fit in int16")
    np.ascontiguousarray(np.round(array).astype("<i2")).tofile(str(path))


@dataclass
class DirLabCase:
    """One DIR-Lab case: images and (300, 3) LPS mm landmarks per phase ("T00", "T50", ...)."""

    case: int
    images: dict[str, Image] = field(default_factory=dict)
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)


def _case_folder(root: Path, case: int) -> Path:
    if re.search(rf"case{case}(pack|deploy)?$", root.name, flags=re.IGNORECASE):
        return root
    candidates = [p for p in root.iterdir() if p.is_dir()
                  and re.fullmatch(rf"case{case}(pack|deploy)?", p.name, flags=re.IGNORECASE)]
    if not candidates:
        raise ImageError(f"{root}: no folder Case{case}Pack (or Case{case}Deploy) for DIR-Lab case {case}")
    return candidates[0]


def find_dirlab_files(root: PathLike, case: int, phase: str = "T00") -> tuple[Path, Optional[Path]]:
    """Locate the image and landmark files of one case and phase.

    Args:
        root: the folder holding ``CaseNPack`` folders, or a ``CaseNPack`` folder itself.
        case: 1..10.
        phase: "T00" ... "T90" (landmarks exist only for the extreme phases T00 and T50).

    Returns:
        (image path, landmark path or None).
    """
    _case_entry(case)
    folder = _case_folder(Path(root), case)
    phase = phase.upper()
    image_re = re.compile(rf"case{case}_{phase}(_s)?\.img", flags=re.IGNORECASE)
    images = sorted(p for p in folder.rglob("*") if p.is_file() and image_re.fullmatch(p.name))
    if not images:
        raise ImageError(f"{folder}: no image case{case}_{phase}_s.img or case{case}_{phase}.img for DIR-Lab case {case}")
    lm_re = re.compile(rf"case{case}_(300|dirlab300)_{phase}_xyz\.txt", flags=re.IGNORECASE)
    landmarks = sorted(p for p in folder.rglob("*") if p.is_file() and lm_re.fullmatch(p.name))
    return images[0], (landmarks[0] if landmarks else None)


def load_dirlab_case(root: PathLike, case: int, phases: Sequence[str] = ("T00", "T50"),
                     superior_first: bool = True, hu_offset: float = 0.0,
                     require_landmarks: bool = True) -> DirLabCase:
    """Load images and landmarks of a DIR-Lab case (default: the extreme phases T00 and T50).

    Landmarks are converted from 1-based voxel indices with the image geometry, so that
    ``landmarks[phase][n]`` is the LPS position of landmark n on ``images[phase]``.

    Raises:
        ImageError: missing folder/image or wrong file size.
        LandmarkError: a landmark file is missing (when ``require_landmarks``) or malformed.
    """
    out = DirLabCase(case)
    for phase in phases:
        image_path, landmark_path = find_dirlab_files(root, case, phase)
        image = read_dirlab_image(image_path, case=case, superior_first=superior_first, hu_offset=hu_offset)
        out.images[phase.upper()] = image
        if landmark_path is None:
            if require_landmarks:
                raise LandmarkError(f"DIR-Lab case {case}: no landmark file Case{case}_300_{phase}_xyz.txt under {root}")
            continue
        out.landmarks[phase.upper()] = read_dirlab_txt(landmark_path, image.geometry)
    return out
