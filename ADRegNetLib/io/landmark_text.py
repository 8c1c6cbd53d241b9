r"""Index- and text-based landmark files: DIR-Lab voxel indices (.txt) and elastix point files.

See ``landmarks.py`` for the format descriptions; every reader returns (K, 3) float64 LPS mm.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np

from ..spatial.geometry import Geometry

from .numbers import whole_number_problem
from .points import LandmarkError, PathLike, _float, _fmt, _nonempty, _read_text, as_points

__all__ = ["parse_dirlab_text", "read_dirlab_txt", "write_dirlab_txt", "read_elastix_points", "write_elastix_points"]


# ------------------------------------------------------------------------------------------ DIR-Lab
def parse_dirlab_text(text: str, source: str = "<text>", zero_based: bool = False) -> np.ndarray:
    """Parse DIR-Lab landmark text into (K, 3) **0-based** continuous (x, y, z) voxel indices.

    Args:
        text: file contents: one ``i j k`` line per landmark (whitespace separated).
        source: name used in error messages.
        zero_based: True when the file's indices start at 0 (DIR-Lab's own files start at 1).

    Raises:
        LandmarkError: a line without exactly three numbers, a non-finite number, an index below
            the first voxel (names the line), or no landmark at all.
    """
    indices = []
    offset = 0.0 if zero_based else 1.0
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        tokens = stripped.replace(",", " ").split()
        if len(tokens) != 3:
            raise LandmarkError(
                f"{source}, line {lineno}: expected 3 voxel indices 'i j k', got {len(tokens)} values: {stripped[:80]!r}"
            )
        values = [_float(t, source, lineno, f"column {c + 1} ({'ijk'[c]})") for c, t in enumerate(tokens)]
        if min(values) < offset - 0.5:
            raise LandmarkError(
                f"{source}, line {lineno}: index {min(values):g} is before the first voxel; DIR-Lab indices start "
                f"at {int(offset)}" + ("" if zero_based else " (if this file is 0-based, pass zero_based=True)")
            )
        indices.append([v - offset for v in values])
    return _nonempty(indices, source)


def read_dirlab_txt(path: PathLike, geometry: Geometry, zero_based: bool = False) -> np.ndarray:
    """Read a DIR-Lab landmark file (voxel indices, 1-based by default) as (K, 3) LPS mm points.

    Args:
        path: the ``.txt`` file.
        geometry: the geometry of the image the indices refer to (as loaded by
            :mod:`ADRegNetLib.io.dirlab`, voxel order as stored in the ``.img`` file).
        zero_based: see :func:`parse_dirlab_text`.
    """
    if geometry is None:
        raise LandmarkError(f"{path}: DIR-Lab landmarks are voxel indices; pass the image geometry to convert them to mm")
    path = Path(path)
    index = parse_dirlab_text(_read_text(path), str(path), zero_based)
    return geometry.index_to_physical(index)


def _fmt_index(value: float) -> str:
    r = round(value)
    return str(int(r)) if abs(value - r) < 1e-6 else _fmt(value)


def write_dirlab_txt(points, path: PathLike, geometry: Geometry, zero_based: bool = False) -> None:
    """Write (K, 3) LPS mm points as DIR-Lab voxel indices (1-based unless ``zero_based``).

    Indices within 1e-6 of a whole number are written as integers, as DIR-Lab does.
    """
    pts = as_points(points)
    index = geometry.physical_to_index(pts) + (0.0 if zero_based else 1.0)
    lines = ["\t".join(_fmt_index(v) for v in row) for row in index]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------ elastix
_OUTPUT_RE = re.compile(r"(\w+)\s*=\s*\[([^\]]*)\]")


def _is_elastix_text(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped:
            first = stripped.split()[0].lower()
            return first in ("point", "index")
    return False


def read_elastix_points(path: PathLike, geometry: Optional[Geometry] = None,
                        which: str = "OutputPoint") -> np.ndarray:
    """Read an elastix/transformix point file as (K, 3) LPS mm points.

    Args:
        path: an input point file (``point``/``index``, count, rows) or a transformix output file.
        geometry: needed for ``index`` files (0-based indices, elastix convention).
        which: for transformix output files, the field to read (``OutputPoint``, ``InputPoint``).

    Raises:
        LandmarkError: malformed header, count mismatch (gives both counts), malformed rows (line number).
    """
    path = Path(path)
    text = _read_text(path)
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if not lines:
        raise LandmarkError(f"{path}: is empty")
    if "=" in lines[0][1] and "[" in lines[0][1]:
        points = []
        for lineno, line in lines:
            fields = dict(_OUTPUT_RE.findall(line))
            if which not in fields:
                raise LandmarkError(f"{path}, line {lineno}: no '{which} = [...]' field in transformix output")
            values = fields[which].split()
            if len(values) != 3:
                raise LandmarkError(f"{path}, line {lineno}: {which} must hold 3 numbers, got {len(values)}")
            points.append([_float(v, str(path), lineno, f"{which} value {c + 1} ({'xyz'[c]})")
                           for c, v in enumerate(values)])
        return _nonempty(points, str(path))
    kind = lines[0][1].split()[0].lower()
    if kind not in ("point", "index"):
        raise LandmarkError(f"{path}, line {lines[0][0]}: first line must be 'point' or 'index', got {lines[0][1]!r}")
    if len(lines) < 2:
        raise LandmarkError(f"{path}: missing the point count after {kind!r}")
    problem = whole_number_problem(lines[1][1])
    if problem is not None:  # int() would read "1_0" as 10
        raise LandmarkError(f"{path}, line {lines[1][0]}: expected the number of points, got {lines[1][1]!r}: it "
                            f"{problem}; write the count as a whole number (e.g. 12)")
    count = int(lines[1][1])
    points = []
    for lineno, line in lines[2:]:
        tokens = line.split()
        if len(tokens) != 3:
            raise LandmarkError(f"{path}, line {lineno}: expected 3 numbers 'x y z', got {len(tokens)}: {line[:80]!r}")
        points.append([_float(t, str(path), lineno, f"column {c + 1} ({'xyz'[c]})") for c, t in enumerate(tokens)])
    if len(points) != count:
        raise LandmarkError(f"{path}: header says {count} points but the file holds {len(points)} rows")
    arr = _nonempty(points, str(path))
    if kind == "index":
        if geometry is None:
            raise LandmarkError(f"{path}: holds voxel indices ('index'); pass the image geometry to convert them to mm")
        arr = geometry.index_to_physical(arr)
    return arr


def write_elastix_points(points, path: PathLike) -> None:
    """Write (K, 3) LPS mm points as an elastix ``point`` file."""
    pts = as_points(points)
    lines = ["point", str(len(pts))] + [" ".join(_fmt(v) for v in row) for row in pts]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")

