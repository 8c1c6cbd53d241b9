r"""Slicer landmark files: point-list markups (``.mrk.json``) and fiducial CSV (``.fcsv``).

Both return (K, 3) float64 **LPS mm** points in file order; the coordinate system is read from the file
(RAS is converted on read: LPS = (-R, -A, S)) and can be chosen on write. See ``landmarks.py`` for the
format descriptions.
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

from .numbers import NUMBER_FIX, number_problem
from .points import (LandmarkError, LandmarkWarning, PathLike, _check_system, _float, _fmt, _nonempty,
                     _parse_coordinate_system, _read_text, as_points, ras_to_lps)

__all__ = ["MARKUPS_SCHEMA", "read_markups_json", "write_markups_json", "read_fcsv", "write_fcsv"]

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
        points.append([_coordinate(v, path, k, axis, position) for axis, v in zip("xyz", position)])
    arr = _nonempty(points, str(path))
    return ras_to_lps(arr) if system == "RAS" else arr


def _coordinate(value, path: Path, k: int, axis: str, position: list) -> float:
    """One coordinate of control point ``k``: a JSON number, or a string holding a plain decimal number
    (read strictly: ``"1_0"`` is refused, not read as 10)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):  # true/false is no coordinate
        raise LandmarkError(f"{path}: control point {k} position is not numeric: {position!r}")
    if isinstance(value, str):
        problem = number_problem(value)
        if problem is not None:
            raise LandmarkError(f"{path}: control point {k}, coordinate {axis}: {value.strip()!r} {problem}; "
                                f"{NUMBER_FIX}")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        number = math.inf
    if not math.isfinite(number):  # JSON's NaN / Infinity, or 1e400, which the JSON reader makes infinite
        raise LandmarkError(f"{path}: control point {k} position is not finite: {position!r}; every coordinate "
                            "must be a finite number of mm: place the point again in Slicer, or delete it and its "
                            "partner in the other file")
    return number


def _to_write(points, coordinate_system: str, labels: Optional[Sequence[str]]) -> tuple[str, np.ndarray, list[str]]:
    """(the file's coordinate system, the points in it, their labels: given or F-1, F-2, ...) of a writer."""
    pts = as_points(points)
    system = _check_system(coordinate_system)
    return (system, ras_to_lps(pts) if system == "RAS" else pts,
            list(labels) if labels is not None else [f"F-{k + 1}" for k in range(len(pts))])


def write_markups_json(points, path: PathLike, coordinate_system: str = "LPS",
                       labels: Optional[Sequence[str]] = None) -> None:
    """Write (K, 3) LPS mm points as a Slicer point-list ``.mrk.json`` in ``coordinate_system``."""
    system, out, labels = _to_write(points, coordinate_system, labels)
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
            "lastUsedControlPointNumber": len(out),
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
                for k in range(len(out))
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
        points.append([_float(row[i], str(path), lineno, f"column {i + 1} ({axis})")
                       for axis, i in zip("xyz", (ix, iy, iz))])
    arr = _nonempty(points, str(path))
    return ras_to_lps(arr) if system == "RAS" else arr


def write_fcsv(points, path: PathLike, coordinate_system: str = "LPS",
               labels: Optional[Sequence[str]] = None) -> None:
    """Write (K, 3) LPS mm points as a Slicer 4.11+ ``.fcsv`` in ``coordinate_system``."""
    system, out, labels = _to_write(points, coordinate_system, labels)
    buf = io.StringIO()
    buf.write("# Markups fiducial file version = 4.11\n")
    buf.write(f"# CoordinateSystem = {system}\n")
    buf.write("# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n")
    writer = csv.writer(buf, lineterminator="\n")
    for k, (x, y, z) in enumerate(out):
        writer.writerow([k + 1, _fmt(x), _fmt(y), _fmt(z), 0, 0, 0, 1, 1, 1, 0, labels[k], "", ""])
    Path(path).write_text(buf.getvalue(), encoding="utf-8")
