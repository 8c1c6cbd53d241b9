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

Writing uses the shortest decimal text that reads back to the same float (``repr``), so a
write/read round trip in LPS is exact; RAS files are exact too (negation is exact).
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..spatial.geometry import Geometry

__all__ = [
    "LandmarkError",
    "LandmarkWarning",
    "landmark_format",
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

PathLike = Union[str, Path]
_FLIP = np.array([-1.0, -1.0, 1.0])
MARKUPS_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)


class LandmarkError(ValueError):
    """A landmark file or landmark set is unusable; the message says where and why."""


class LandmarkWarning(UserWarning):
    """A landmark set is usable but suspicious (e.g. duplicated points)."""


def ras_to_lps(points: np.ndarray) -> np.ndarray:
    """Flip x and y: RAS <-> LPS (its own inverse). (K, 3) -> (K, 3)."""
    return np.asarray(points, dtype=np.float64) * _FLIP


def _fmt(value: float) -> str:
    """Shortest text that reads back to the same float ('-0.0' kept exact, ints without '.0')."""
    v = float(value)
    if v == 0.0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    return repr(v)


def as_points(points, name: str = "points", allow_empty: bool = False) -> np.ndarray:
    """Validate and convert points to a (K, 3) float64 numpy array (accepts numpy, torch, lists).

    Nothing is reshaped: a (6, 2) array is refused, not read as (4, 3).

    Args:
        points: (K, 3) points, (x, y, z) per row, LPS mm.
        name: what the points are, for messages ("fixed landmarks").
        allow_empty: accept K = 0.

    Raises:
        LandmarkError: not numbers, a shape other than (K, 3) (the message says which shape was
            given and what is expected), empty (unless ``allow_empty``), or NaN/inf coordinates
            (the message gives the first bad row).
    """
    expected = "an array of shape (K, 3): one (x, y, z) point per row, in LPS mm"
    if points is None:
        raise LandmarkError(f"{name} are missing (None); give {expected}")
    if hasattr(points, "detach"):
        points = points.detach().cpu().numpy()
    try:
        arr = np.asarray(points)
        if arr.dtype.kind not in "iuf":
            if arr.dtype.kind != "O":
                raise TypeError(f"values of type {arr.dtype}")
            arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LandmarkError(f"{name} must be numbers in {expected}; got {type(points).__name__} ({reason})") from None
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        hint = ""
        if arr.shape == (3,):
            hint = " (for a single point, give [[x, y, z]])"
        elif arr.ndim == 2 and arr.shape[0] == 3:
            hint = " (points in columns? give the transpose)"
        raise LandmarkError(f"{name} must be {expected}; got shape {arr.shape}{hint}")
    if arr.shape[0] == 0 and not allow_empty:
        raise LandmarkError(f"{name} is empty: no landmark points were given")
    bad = ~np.all(np.isfinite(arr), axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise LandmarkError(
            f"{name}: {int(bad.sum())} point(s) have NaN or infinite coordinates, first at index {first}: "
            f"{arr[first].tolist()}; every point needs three finite coordinates (LPS mm)"
        )
    return arr


def _parse_coordinate_system(value, source: str) -> str:
    text = str(value).strip().upper()
    mapping = {"RAS": "RAS", "LPS": "LPS", "0": "RAS", "1": "LPS"}
    if text not in mapping:
        raise LandmarkError(
            f"{source}: unknown coordinate system {value!r}; expected 'LPS' or 'RAS' (or 0 = RAS, 1 = LPS "
            "in old .fcsv files)"
        )
    return mapping[text]


def _check_system(coordinate_system: str) -> str:
    system = str(coordinate_system).upper()
    if system not in ("LPS", "RAS"):
        raise ValueError(f"coordinate_system must be 'LPS' or 'RAS', got {coordinate_system!r}")
    return system


def _float(token: str, source: str, lineno: int) -> float:
    try:
        value = float(token)
    except ValueError:
        raise LandmarkError(f"{source}, line {lineno}: {token!r} is not a number") from None
    if not math.isfinite(value):
        raise LandmarkError(f"{source}, line {lineno}: coordinate {token!r} is not finite")
    return value


def _nonempty(points: list, source: str) -> np.ndarray:
    if not points:
        raise LandmarkError(f"{source}: holds no landmark points")
    return np.asarray(points, dtype=np.float64).reshape(-1, 3)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise LandmarkError(f"{path}: no such landmark file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise LandmarkError(f"{path}: is not a text file (cannot decode as UTF-8)") from None


# ------------------------------------------------------------------------------- Slicer .mrk.json
def read_markups_json(path: PathLike) -> np.ndarray:
    """Read the control points of the first markup of a Slicer ``.mrk.json`` file (LPS mm)."""
    path = Path(path)
    try:
        doc = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise LandmarkError(f"{path}: is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    markups = doc.get("markups") if isinstance(doc, dict) else None
    if not isinstance(markups, list) or not markups:
        raise LandmarkError(f"{path}: has no 'markups' list; is it a Slicer markups file?")
    markup = markups[0]
    if not isinstance(markup, dict):
        raise LandmarkError(f"{path}: markups[0] is not an object")
    system = _parse_coordinate_system(markup.get("coordinateSystem", "LPS"), str(path))
    units = str(markup.get("coordinateUnits", "mm"))
    if units != "mm":
        raise LandmarkError(f"{path}: coordinateUnits is {units!r}; only 'mm' is supported")
    control_points = markup.get("controlPoints", [])
    if not isinstance(control_points, list):
        raise LandmarkError(f"{path}: 'controlPoints' is not a list")
    points = []
    for k, cp in enumerate(control_points):
        position = cp.get("position") if isinstance(cp, dict) else None
        if position is None:
            status = cp.get("positionStatus", "?") if isinstance(cp, dict) else "?"
            raise LandmarkError(
                f"{path}: control point {k} has no position (positionStatus {status!r}); place it in Slicer "
                "or delete it, since pairs are matched by order"
            )
        if not isinstance(position, list) or len(position) != 3:
            raise LandmarkError(f"{path}: control point {k} position must be 3 numbers, got {position!r}")
        try:
            xyz = [float(v) for v in position]
        except (TypeError, ValueError, OverflowError):
            raise LandmarkError(f"{path}: control point {k} position is not numeric: {position!r}") from None
        if not all(math.isfinite(v) for v in xyz):
            raise LandmarkError(f"{path}: control point {k} position is not finite: {position!r}")
        points.append(xyz)
    arr = _nonempty(points, str(path))
    return ras_to_lps(arr) if system == "RAS" else arr


def write_markups_json(points, path: PathLike, coordinate_system: str = "LPS",
                       labels: Optional[Sequence[str]] = None) -> None:
    """Write (K, 3) LPS mm points as a Slicer point-list ``.mrk.json`` in ``coordinate_system``."""
    pts = as_points(points)
    system = _check_system(coordinate_system)
    out = ras_to_lps(pts) if system == "RAS" else pts
    labels = list(labels) if labels is not None else [f"F-{k + 1}" for k in range(len(pts))]
    # Orientation of an identity RAS frame, written in the file's own frame.
    orientation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0] if system == "RAS" else \
        [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]
    doc = {
        "@schema": MARKUPS_SCHEMA,
        "markups": [{
            "type": "Fiducial",
            "coordinateSystem": system,
            "coordinateUnits": "mm",
            "locked": False,
            "fixedNumberOfControlPoints": False,
            "labelFormat": "%N-%d",
            "lastUsedControlPointNumber": len(pts),
            "controlPoints": [
                {
                    "id": str(k + 1),
                    "label": str(labels[k]),
                    "description": "",
                    "associatedNodeID": "",
                    "position": [float(v) for v in out[k]],
                    "orientation": orientation,
                    "selected": True,
                    "locked": False,
                    "visibility": True,
                    "positionStatus": "defined",
                }
                for k in range(len(pts))
            ],
            "measurements": [],
        }],
    }
    Path(path).write_text(json.dumps(doc, indent=2), encoding="utf-8")


# ------------------------------------------------------------------------------------ Slicer .fcsv
def read_fcsv(path: PathLike) -> np.ndarray:
    """Read a Slicer ``.fcsv`` fiducial file (coordinate system from its header) as LPS mm."""
    path = Path(path)
    text = _read_text(path)
    system = "RAS"  # files without the line come from Slicer < 4.11, which wrote RAS
    columns: Optional[list[str]] = None
    points = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            key, sep, value = body.partition("=")
            if sep and key.strip().lower() == "coordinatesystem":
                system = _parse_coordinate_system(value.strip(), f"{path}, line {lineno}")
            elif sep and key.strip().lower() == "columns":
                columns = [c.strip().lower() for c in value.split(",")]
            continue
        row = next(csv.reader([line]))
        if columns is not None and all(c in columns for c in ("x", "y", "z")):
            ix, iy, iz = columns.index("x"), columns.index("y"), columns.index("z")
        else:
            ix, iy, iz = 1, 2, 3
        if len(row) <= max(ix, iy, iz):
            raise LandmarkError(
                f"{path}, line {lineno}: expected 'id,x,y,z,...' with at least {max(ix, iy, iz) + 1} columns, "
                f"got {len(row)}: {line.strip()[:80]!r}"
            )
        points.append([_float(row[i].strip(), str(path), lineno) for i in (ix, iy, iz)])
    arr = _nonempty(points, str(path))
    return ras_to_lps(arr) if system == "RAS" else arr


def write_fcsv(points, path: PathLike, coordinate_system: str = "LPS",
               labels: Optional[Sequence[str]] = None) -> None:
    """Write (K, 3) LPS mm points as a Slicer 4.11+ ``.fcsv`` in ``coordinate_system``."""
    pts = as_points(points)
    system = _check_system(coordinate_system)
    out = ras_to_lps(pts) if system == "RAS" else pts
    labels = list(labels) if labels is not None else [f"F-{k + 1}" for k in range(len(pts))]
    buf = io.StringIO()
    buf.write("# Markups fiducial file version = 4.11\n")
    buf.write(f"# CoordinateSystem = {system}\n")
    buf.write("# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n")
    writer = csv.writer(buf, lineterminator="\n")
    for k, (x, y, z) in enumerate(out):
        writer.writerow([k + 1, _fmt(x), _fmt(y), _fmt(z), 0, 0, 0, 1, 1, 1, 0, labels[k], "", ""])
    Path(path).write_text(buf.getvalue(), encoding="utf-8")


# --------------------------------------------------------------------------------------------- CSV
_LPS_NAMES = {
    "x": ("x", "x_lps", "x_mm", "x_lps_mm", "l"),
    "y": ("y", "y_lps", "y_mm", "y_lps_mm", "p"),
    "z": ("z", "z_lps", "z_mm", "z_lps_mm", "s"),
}
_RAS_NAMES = {"x": ("x_ras", "x_ras_mm", "r"), "y": ("y_ras", "y_ras_mm", "a"), "z": ("z_ras", "z_ras_mm", "s")}


def _find_columns(header: list[str], names: dict) -> Optional[list[int]]:
    found = []
    for axis in ("x", "y", "z"):
        idx = [i for i, h in enumerate(header) if h in names[axis]]
        if not idx:
            return None
        found.append(idx[0])
    return found


def read_landmark_csv(path: PathLike) -> np.ndarray:
    """Read a CSV with a header naming x, y, z columns (LPS mm; RAS columns are converted)."""
    path = Path(path)
    rows = [(n, r) for n, r in enumerate(csv.reader(io.StringIO(_read_text(path))), start=1)
            if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        raise LandmarkError(f"{path}: is empty; expected a header 'x,y,z' and one row per point")
    header = [h.strip().lower() for h in rows[0][1]]
    cols = _find_columns(header, _LPS_NAMES)
    ras = False
    if cols is None:
        cols = _find_columns(header, _RAS_NAMES)
        ras = cols is not None
    if cols is None:
        raise LandmarkError(
            f"{path}, line {rows[0][0]}: header {rows[0][1]!r} does not name x, y, z columns; the first line must "
            "be a header such as 'x,y,z' (LPS mm)"
        )
    points = []
    for lineno, row in rows[1:]:
        if len(row) <= max(cols):
            raise LandmarkError(f"{path}, line {lineno}: expected {len(header)} columns, got {len(row)}: {row!r}")
        points.append([_float(row[i].strip(), str(path), lineno) for i in cols])
    arr = _nonempty(points, str(path))
    return ras_to_lps(arr) if ras else arr


def write_landmark_csv(points, path: PathLike) -> None:
    """Write (K, 3) LPS mm points as CSV with header ``x,y,z``."""
    pts = as_points(points)
    lines = ["x,y,z"] + [",".join(_fmt(v) for v in row) for row in pts]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


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
        values = [_float(t, source, lineno) for t in tokens]
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
            points.append([_float(v, str(path), lineno) for v in values])
        return _nonempty(points, str(path))
    kind = lines[0][1].split()[0].lower()
    if kind not in ("point", "index"):
        raise LandmarkError(f"{path}, line {lines[0][0]}: first line must be 'point' or 'index', got {lines[0][1]!r}")
    if len(lines) < 2:
        raise LandmarkError(f"{path}: missing the point count after {kind!r}")
    try:
        count = int(lines[1][1])
    except ValueError:
        raise LandmarkError(f"{path}, line {lines[1][0]}: expected the number of points, got {lines[1][1]!r}") from None
    points = []
    for lineno, line in lines[2:]:
        tokens = line.split()
        if len(tokens) != 3:
            raise LandmarkError(f"{path}, line {lineno}: expected 3 numbers 'x y z', got {len(tokens)}: {line[:80]!r}")
        points.append([_float(t, str(path), lineno) for t in tokens])
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


# ------------------------------------------------------------------------------------------ checks
def _outside(points: np.ndarray, geometry: Geometry, role: str) -> None:
    inside = geometry.contains(points, margin_voxels=0.5)
    if inside.all():
        return
    bad = np.flatnonzero(~inside)
    first = int(bad[0])
    index = geometry.physical_to_index(points[first:first + 1])[0]
    clamped = np.clip(index, -0.5, np.asarray(geometry.size) - 0.5)
    distance = float(np.linalg.norm(geometry.index_to_physical(clamped[None])[0] - points[first]))
    hint = ""
    if geometry.contains(ras_to_lps(points), margin_voxels=0.5).all():
        hint = " All points fit once x and y are negated: the file was probably read as LPS but written in RAS."
    raise LandmarkError(
        f"{role} landmark {first} at {np.round(points[first], 3).tolist()} mm (LPS) lies {distance:.2f} mm outside "
        f"the {role} image (voxel index {np.round(index, 2).tolist()}, size {list(geometry.size)}); "
        f"{len(bad)} of {len(points)} points are outside. Check that the landmarks belong to this image.{hint}"
    )


def check_landmark_pairs(fixed, moving, fixed_geometry: Optional[Geometry] = None,
                         moving_geometry: Optional[Geometry] = None) -> dict:
    """Check that two landmark sets can be used as pairs (matched by order).

    Errors (:class:`LandmarkError`): either set empty, counts differ (both counts named), NaN or
    infinite coordinates, a point outside its image when the geometry is given (names the
    index and how far outside, in mm).

    Duplicated points are a **warning** (:class:`LandmarkWarning`), not an error: a repeated
    pair is legal for TRE (it only weights that location twice), but a point repeated within
    one set with a different partner usually means a copy/paste slip, so it is reported.

    Args:
        fixed, moving: (K, 3) LPS mm points (numpy, torch or nested lists; never reshaped).
        fixed_geometry, moving_geometry: images' grids for the inside check (optional).

    Returns:
        {"count": K, "warnings": [messages], "fixed": (K, 3), "moving": (K, 3)}: the checked
        points as float64 LPS mm arrays.
    """
    f = as_points(fixed, "fixed landmarks")
    m = as_points(moving, "moving landmarks")
    if len(f) != len(m):
        raise LandmarkError(
            f"fixed and moving landmark counts differ: {len(f)} fixed vs {len(m)} moving; pairs are matched by "
            "order, so both files must list the same landmarks"
        )
    if fixed_geometry is not None:
        _outside(f, fixed_geometry, "fixed")
    if moving_geometry is not None:
        _outside(m, moving_geometry, "moving")
    messages = []
    for role, pts in (("fixed", f), ("moving", m)):
        _, first, counts = np.unique(np.round(pts, 6), axis=0, return_index=True, return_counts=True)
        dup = first[counts > 1]
        if dup.size:
            message = (f"{role} landmarks: {int((counts[counts > 1] - 1).sum())} duplicated point(s), e.g. index "
                       f"{int(dup[0])} at {np.round(pts[dup[0]], 3).tolist()} mm (LPS); check the landmark list for "
                       "a copy/paste slip, since pairs are matched by order")
            warnings.warn(message, LandmarkWarning, stacklevel=2)
            messages.append(message)
    return {"count": len(f), "warnings": messages, "fixed": f, "moving": m}
