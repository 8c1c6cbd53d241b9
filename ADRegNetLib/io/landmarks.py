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
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..spatial.geometry import Geometry
from .landmark_text import (_is_elastix_text, parse_dirlab_text, read_dirlab_txt, read_elastix_points,
                            write_dirlab_txt, write_elastix_points)
from .points import (LandmarkError, LandmarkWarning, PathLike, _check_system, _float, _fmt, _nonempty,
                     _parse_coordinate_system, _read_text, as_points, check_landmark_pairs, ras_to_lps)

__all__ = [
    "LandmarkError",
    "LandmarkWarning",
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

MARKUPS_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)



# ------------------------------------------------------------------------------- Slicer .mrk.json
#: Slicer's positionStatus values of a control point that was never placed: its position is a placeholder.
_UNPLACED = ("undefined", "preview", "missing")

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
    kind = str(markup.get("type", "Fiducial"))
    if len(markups) > 1 or kind != "Fiducial":
        warnings.warn(f"{path.name}: " + (f"holds {len(markups)} markups; only the first ({kind}, "
                                          f"{len(markup.get('controlPoints') or [])} points) is read" if len(markups) > 1
                                          else f"is a {kind} markup, not a point list") +
                      ": landmark pairs are the control points of one point list (save each list in its own file)",
                      LandmarkWarning, stacklevel=3)
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
        status = str(cp.get("positionStatus", "defined")) if isinstance(cp, dict) else "defined"
        if position is not None and status.lower() in _UNPLACED:
            raise LandmarkError(
                f"{path}: control point {k} ({cp.get('label', '?')!r}) is not placed (positionStatus {status!r}); "
                "its position is a placeholder. Place it in Slicer, or delete it and its partner in the other file, "
                "since pairs are matched by order"
            )
        if position is None:
            status = cp.get("positionStatus", "?") if isinstance(cp, dict) else "?"
            raise LandmarkError(
                f"{path}: control point {k} has no position (positionStatus {status!r}); place it in Slicer "
                "or delete it, since pairs are matched by order"
            )
        if not isinstance(position, list) or len(position) != 3:
            raise LandmarkError(f"{path}: control point {k} position must be 3 numbers, got {position!r}")
        try:
            if any(isinstance(v, bool) for v in position):
                raise TypeError("true/false is not a coordinate")
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


def _header_hint(first_row: list[str]) -> str:
    """What to do about a first CSV row that names no x, y, z columns (a missing header, another delimiter)."""
    line = ",".join(first_row)
    for delimiter, word in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'")):
        names = [h.strip().strip('"').lower() for h in line.split(delimiter)]
        if delimiter in line and (_find_columns(names, _LPS_NAMES) or _find_columns(names, _RAS_NAMES)):
            return (f"its columns are separated by {word}: save it as comma-separated values (with '.' as the "
                    "decimal point), header 'x,y,z' (LPS mm)")
    try:
        [float(c) for c in first_row if c.strip()]
        numeric = any(c.strip() for c in first_row)
    except ValueError:
        numeric = False
    if numeric:
        return "it holds numbers, so the file has no header: add the line 'x,y,z' (LPS mm) at the top"
    return "the first line must be a header such as 'x,y,z' (LPS mm)"


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
        raise LandmarkError(f"{path}, line {rows[0][0]}: header {rows[0][1]!r} does not name x, y, z columns; "
                            + _header_hint(rows[0][1]))
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
