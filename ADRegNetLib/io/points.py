r"""Landmark point arrays: validation (``as_points``), RAS <-> LPS, pair checks, and the small parsing
helpers every landmark file format shares (see ``landmarks.py`` for the formats)."""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..spatial.geometry import Geometry
from .numbers import NUMBER_FIX, number_problem

__all__ = ["LandmarkError", "LandmarkWarning", "as_points", "check_landmark_pairs", "points_outside", "ras_to_lps",
           "PathLike"]

PathLike = Union[str, Path]
_FLIP = np.array([-1.0, -1.0, 1.0])


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


def _float(token: str, source: str, lineno: int, column: str = "") -> float:
    """One coordinate of a landmark file, read strictly (:mod:`ADRegNetLib.io.numbers`: ``1_0``, ``nan``,
    ``inf`` and ``1e400`` are refused, not read as 10 or infinity).

    Args:
        token: the text of the value.
        source: the file, for messages.
        lineno: its line (1-based).
        column: where on the line, for messages ("column 2 (y)"); empty to leave it out.

    Raises:
        LandmarkError: file, line, column, the value, why, and what to write instead.
    """
    problem = number_problem(token)
    if problem is not None:
        where = f"{source}, line {lineno}" + (f", {column}" if column else "")
        raise LandmarkError(f"{where}: {token.strip()!r} {problem}; {NUMBER_FIX}")
    return float(token)


def _nonempty(points: list, source: str) -> np.ndarray:
    if not points:
        raise LandmarkError(f"{source}: holds no landmark points")
    return np.asarray(points, dtype=np.float64).reshape(-1, 3)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise LandmarkError(f"{path}: no such landmark file")
    if path.is_dir():
        raise LandmarkError(f"{path}: is a folder, not a landmark file; give the .mrk.json, .fcsv, .csv or .txt file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LandmarkError(f"{path}: cannot be read as UTF-8 text (byte {exc.start}): a binary file, or text saved in "
                            "another encoding (Latin-1, UTF-16): save it as UTF-8 and give it again") from None



# ------------------------------------------------------------------------------------------ checks
def points_outside(points: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, float]:
    """Which of (K, 3) LPS mm ``points`` lie outside ``geometry``'s grid (beyond half a voxel past its outer
    voxel centres), and how far the first of them is from the grid, mm (0.0 when none is outside)."""
    bad = np.flatnonzero(~geometry.contains(points, margin_voxels=0.5))
    if not bad.size:
        return bad, 0.0
    index = geometry.physical_to_index(points[bad[0]:bad[0] + 1])[0]
    clamped = np.clip(index, -0.5, np.asarray(geometry.size) - 0.5)
    return bad, float(np.linalg.norm(geometry.index_to_physical(clamped[None])[0] - points[bad[0]]))


def _outside(points: np.ndarray, geometry: Geometry, role: str) -> None:
    bad, distance = points_outside(points, geometry)
    if not bad.size:
        return
    first = int(bad[0])
    index = geometry.physical_to_index(points[first:first + 1])[0]
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
