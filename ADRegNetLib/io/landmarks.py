r"""Landmark files: Slicer markups (.mrk.json, .fcsv), DIR-Lab (.txt), CSV and elastix point files.

Everything returned is a (K, 3) float64 array of **LPS mm** points, (x, y, z) per row, in file
order (pairs of fixed and moving landmarks match by order). Files in RAS are converted on read:
LPS = (-R, -A, S).

Formats
-------
* ``.mrk.json`` (Slicer markups): ``markups[0].controlPoints[].position`` in the frame named
  by ``markups[0].coordinateSystem`` ("LPS" or "RAS"; missing means LPS, Slicer's default
  since 4.11). Only the first markup of the file is read; units must be mm.
* ``.fcsv`` (Slicer fiducial CSV): ``# CoordinateSystem = RAS|LPS|0|1`` (in old files 0 means
  RAS and 1 LPS; a file without the line is RAS, as Slicer < 4.11 wrote it). Rows are
  ``id,x,y,z,...``; a ``# columns =`` line, when present, says where x, y, z are.
* ``.csv``: a header naming the columns ``x,y,z`` (LPS mm; ``x_lps_mm``-style names are also
  read, and ``x_ras``/``x_ras_mm`` columns are converted from RAS). Other columns are ignored.
* ``.txt`` holding an **elastix point file**: first line ``point`` (LPS mm) or ``index``
  (0-based continuous voxel indices, needs the image geometry), then the count, then one
  ``x y z`` row per point. An elastix *output* file (``outputpoints.txt``, rows
  ``Point 0 ; InputIndex = [...] ; ... OutputPoint = [...]``) is read too (``OutputPoint``).
* ``.txt`` holding **DIR-Lab voxel indices** (any other .txt): one landmark per line, three
  whitespace-separated numbers ``i j k`` = column (x), row (y), slice (z) indices of the
  image as stored. DIR-Lab numbers voxels **from 1** (MATLAB convention: the first voxel is
  (1, 1, 1)), so the reader subtracts 1 and maps the 0-based index through the image
  geometry: ``LPS = origin + D @ (spacing * (ijk - 1))``. Pass ``zero_based=True`` for
  files written with 0-based indices. An index below 0.5 in a 1-based file raises, because
  it means the file is 0-based (or corrupt). Empty lines and lines starting with ``#`` are
  skipped.

Numbers are read strictly (:mod:`ADRegNetLib.io.numbers`): ``1_0`` (which Python reads as 10), ``nan``,
``inf`` and values beyond float64 (``1e400``) are refused with the file, line, column and value.

The readers live by family: :mod:`.markups` (Slicer ``.mrk.json``, ``.fcsv``), :mod:`.landmark_csv`
(CSV), :mod:`.landmark_text` (DIR-Lab and elastix ``.txt``); this module picks one by the file's name.

Writing uses the shortest decimal text that reads back to the same float (``repr``), so a
write/read round trip in LPS is exact; RAS files are exact too (negation is exact).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..spatial.geometry import Geometry
from .landmark_csv import read_landmark_csv, write_landmark_csv
from .landmark_text import (_is_elastix_text, parse_dirlab_text, read_dirlab_txt, read_elastix_points,
                            write_dirlab_txt, write_elastix_points)
from .markups import MARKUPS_SCHEMA, read_fcsv, read_markups_json, write_fcsv, write_markups_json
from .points import LandmarkError, LandmarkWarning, PathLike, _read_text, as_points, check_landmark_pairs, ras_to_lps

__all__ = [
    "LandmarkError",
    "LandmarkWarning",
    "MARKUPS_SCHEMA",
    "landmark_format",
    "holds_voxel_indices",
    "read_landmarks",
    "write_landmarks",
    "read_markups_json",
    "write_markups_json",
    "read_fcsv",
    "write_fcsv",
    "read_landmark_csv",
    "write_landmark_csv",
    "read_dirlab_txt",
    "parse_dirlab_text",
    "write_dirlab_txt",
    "read_elastix_points",
    "write_elastix_points",
    "check_landmark_pairs",
    "as_points",
    "ras_to_lps",
]


# ----------------------------------------------------------------------------------- entry points
_FORMATS = ("markups", "fcsv", "csv", "dirlab", "elastix")


def landmark_format(path: PathLike) -> str:
    """The landmark format of a file from its name (and, for .txt, its first line).

    Returns:
        One of "markups", "fcsv", "csv", "dirlab", "elastix".
    """
    name = str(path).lower()
    if name.endswith(".json"):
        return "markups"
    if name.endswith(".fcsv"):
        return "fcsv"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".txt", ".pts")):
        p = Path(path)
        if p.exists() and _is_elastix_text(_read_text(p)):
            return "elastix"
        if p.exists() and "OutputPoint" in _read_text(p)[:2000]:
            return "elastix"
        return "dirlab"
    raise LandmarkError(
        f"{path}: unknown landmark file type; use .mrk.json or .fcsv (Slicer), .csv (header x,y,z, LPS mm), "
        ".txt (DIR-Lab indices or elastix point file)"
    )


def holds_voxel_indices(path: PathLike) -> bool:
    """True for landmark files of voxel indices (DIR-Lab ``.txt``, elastix ``index`` files): reading
    them needs the grid of the image they were placed on."""
    fmt = landmark_format(path)
    if fmt == "elastix":
        words = (line.split()[0].lower() for line in _read_text(Path(path)).splitlines() if line.strip())
        return next(words, "") == "index"
    return fmt == "dirlab"


def read_landmarks(path: PathLike, geometry: Optional[Geometry] = None, zero_based: bool = False,
                   fmt: Optional[str] = None) -> np.ndarray:
    """Read landmarks from any supported file as (K, 3) float64 LPS mm (format from the extension).

    Args:
        path: the file (see the module docstring for the formats).
        geometry: image geometry, required for voxel-index files (DIR-Lab, elastix ``index``).
        zero_based: DIR-Lab files only: indices start at 0 instead of 1.
        fmt: force a format ("markups", "fcsv", "csv", "dirlab", "elastix").

    Raises:
        LandmarkError: missing/malformed/empty file; the message names the file and line.
    """
    path = Path(path)
    if not path.exists():
        raise LandmarkError(f"{path}: no such landmark file")
    if path.is_dir():
        raise LandmarkError(f"{path}: is a folder, not a landmark file; give the .mrk.json, .fcsv, .csv or .txt file")
    kind = fmt or landmark_format(path)
    if kind == "markups":
        return read_markups_json(path)
    if kind == "fcsv":
        return read_fcsv(path)
    if kind == "csv":
        return read_landmark_csv(path)
    if kind == "elastix":
        return read_elastix_points(path, geometry)
    if kind == "dirlab":
        return read_dirlab_txt(path, geometry, zero_based)
    raise ValueError(f"fmt must be one of {_FORMATS}, got {fmt!r}")


def write_landmarks(points, path: PathLike, coordinate_system: str = "LPS", geometry: Optional[Geometry] = None,
                    fmt: Optional[str] = None, zero_based: bool = False,
                    labels: Optional[Sequence[str]] = None) -> None:
    """Write (K, 3) LPS mm points; the format follows the extension.

    ``.txt`` files are written as elastix ``point`` files unless ``fmt="dirlab"`` (which needs
    ``geometry``). ``coordinate_system`` applies to Slicer files (.mrk.json, .fcsv); CSV and
    elastix files are always LPS.
    """
    path = Path(path)
    if fmt is None:
        name = str(path).lower()
        fmt = "markups" if name.endswith(".json") else "fcsv" if name.endswith(".fcsv") else \
            "csv" if name.endswith(".csv") else "elastix" if name.endswith((".txt", ".pts")) else None
        if fmt is None:
            landmark_format(path)  # raises with the list of supported types
    if fmt == "markups":
        write_markups_json(points, path, coordinate_system, labels)
    elif fmt == "fcsv":
        write_fcsv(points, path, coordinate_system, labels)
    elif fmt == "csv":
        write_landmark_csv(points, path)
    elif fmt == "elastix":
        write_elastix_points(points, path)
    elif fmt == "dirlab":
        if geometry is None:
            raise LandmarkError(f"{path}: DIR-Lab files hold voxel indices; pass the image geometry")
        write_dirlab_txt(points, path, geometry, zero_based)
    else:
        raise ValueError(f"fmt must be one of {_FORMATS}, got {fmt!r}")
