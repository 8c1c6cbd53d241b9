r"""Landmark CSV files: a header naming the x, y, z columns (LPS mm, or RAS columns converted), one row per point.

See ``landmarks.py`` for the format description; reading returns (K, 3) float64 LPS mm in file order.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

import numpy as np

from .points import LandmarkError, PathLike, _float, _fmt, _nonempty, _read_text, as_points, ras_to_lps

__all__ = ["read_landmark_csv", "write_landmark_csv"]


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
        extra = [c for c in row[len(header):] if c.strip()]
        if extra:  # "1,5,2,3" under "x,y,z": decimal commas (1.5, 2.3) would be read as (1, 5, 2), silently
            raise LandmarkError(f"{path}, line {lineno}: {len(header)} columns in the header, {len(row)} values in "
                                f"this row ({','.join(row)!r}): decimal commas? Save it with '.' as the decimal "
                                "point (or quote each value), or name every column in the header")
        points.append([_float(row[i], str(path), lineno, f"column {i + 1} ({rows[0][1][i].strip()})") for i in cols])
    arr = _nonempty(points, str(path))
    return ras_to_lps(arr) if ras else arr


def write_landmark_csv(points, path: PathLike) -> None:
    """Write (K, 3) LPS mm points as CSV with header ``x,y,z``."""
    pts = as_points(points)
    lines = ["x,y,z"] + [",".join(_fmt(v) for v in row) for row in pts]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
