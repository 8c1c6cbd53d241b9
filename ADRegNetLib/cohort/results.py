r"""One row per pair: built from the pair's metrics.json, kept in OUTDIR/results.csv.

Rows are plain dicts (``RESULT_COLUMNS``); numbers are floats or None (not measured: no landmarks,
no label maps, a failed pair). ``results.csv`` is always replaced atomically, so a reader (or a run
that is killed) never sees half a file, and runs update it through :func:`merge_results_csv`: read,
merge and replace under an exclusive lock, so two runs into one OUTDIR never lose each other's rows.

Columns: ``status`` ok/failed and ``error`` (the failure, or a note such as "Dice not computed");
``tre_*_mm`` mean (and p95) landmark error before/after, mm; ``landmarks_guided`` "yes" when the
landmarks pulled the registration (their TRE after is then not an independent check), "no" with
``--landmarks-check-only``; ``dice_*`` mean Dice over the labels of
the fixed label map; ``folds_pct`` share of voxels with det J <= 0, %; ``time_s`` the registration
(metrics.json ``timings_s.total``) and ``wall_s`` the whole task (reading, writing, Dice);
``memory_estimate_gb`` what the pair reserved of its worker's MEMORY; ``memory_peak_gb`` the peak
resident memory of the worker process while the pair ran (its baseline and any pair beside it
included); ``worker`` the Dask worker's address; ``started``/``finished`` local ISO times.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from .files import FileLock, atomic_write
from .pairs import Pair

__all__ = ["RESULT_COLUMNS", "RESULTS_LOCK", "CohortRows", "ResultsFileError", "row_from_metrics", "failed_row",
           "pair_dice", "read_results_csv", "write_results_csv", "merge_results_csv", "is_complete",
           "row_for_complete_pair", "read_metrics", "other_pairs_result"]

#: results.csv columns, in order
RESULT_COLUMNS = (
    "id", "status", "error",
    "tre_before_mm", "tre_after_mm", "tre_after_p95_mm", "landmarks_guided",
    "dice_before", "dice_after",
    "folds_pct", "std_log_jacobian",
    "time_s", "wall_s",
    "memory_estimate_gb", "memory_peak_gb",
    "preset", "quality", "device", "worker", "started", "finished",
)
#: the lock file beside results.csv while a run updates it (removed when released)
RESULTS_LOCK = ".results.lock"
_NUMERIC = {"tre_before_mm", "tre_after_mm", "tre_after_p95_mm", "dice_before", "dice_after", "folds_pct",
            "std_log_jacobian", "time_s", "wall_s", "memory_estimate_gb", "memory_peak_gb"}


class ResultsFileError(ValueError):
    """OUTDIR/results.csv exists but is not a results table of ``adregnet batch``: it is never replaced."""


def is_complete(pair_dir: str | Path) -> bool:
    """A pair is complete when its folder holds metrics.json (written last, published atomically)."""
    return (Path(pair_dir) / "metrics.json").is_file()


def _get(d: dict, *keys) -> Optional[float]:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    try:
        value = float(d)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _empty_row(pair_id: str) -> dict:
    return {c: None for c in RESULT_COLUMNS} | {"id": pair_id, "error": ""}


def _yes_no(value) -> str | None:
    return None if value is None else ("yes" if value else "no")


def row_from_metrics(pair_id: str, metrics: dict, **extra) -> dict:
    """The results row of a finished pair.

    Args:
        pair_id: the pair's id.
        metrics: the pair's metrics.json (as written by ``adregnet register``).
        **extra: other columns (wall_s, memory_estimate_gb, memory_peak_gb, worker, dice_*, ...).

    Returns:
        a dict over RESULT_COLUMNS with status "ok".
    """
    folds = _get(metrics, "jacobian", "folding_fraction")
    row = _empty_row(pair_id) | {
        "status": "ok",
        "tre_before_mm": _get(metrics, "tre_before", "mean"),
        "tre_after_mm": _get(metrics, "tre_after", "mean"),
        "tre_after_p95_mm": _get(metrics, "tre_after", "p95"),
        "landmarks_guided": _yes_no(_get(metrics, "landmarks", "guided_registration")),
        "folds_pct": None if folds is None else 100.0 * folds,
        "std_log_jacobian": _get(metrics, "jacobian", "std_log_det"),
        "time_s": _get(metrics, "timings_s", "total"),
        "preset": metrics.get("preset"),
        "quality": metrics.get("quality"),
        "device": metrics.get("device"),
    }
    row.update({k: v for k, v in extra.items() if k in RESULT_COLUMNS})
    return row


#: longest error message kept in a results row (its start names the problem; a message that quotes an input, e.g. a
#: landmark file of 50,000 numbers, reached 250 kB, beyond what Python's csv reader accepts in a cell, and results.csv
#: could then not be read again: the batch refused its own OUTDIR, review of the nineteenth session)
MAX_ERROR_CHARS = 1000


def failed_row(pair_id: str, error: str, **extra) -> dict:
    """The results row of a pair that failed, with its error message on one line (at most ``MAX_ERROR_CHARS``)."""
    message = " ".join(str(error).split())
    if len(message) > MAX_ERROR_CHARS:
        tail = f" ... ({len(message)} characters in all)"
        message = message[:MAX_ERROR_CHARS - len(tail)] + tail
    row = _empty_row(pair_id) | {"status": "failed", "error": message}
    row.update({k: v for k, v in extra.items() if k in RESULT_COLUMNS})
    return row


def pair_dice(pair: Pair, pair_dir: str | Path) -> dict:
    """Mean Dice of the pair's label maps before and after registration.

    Before: the moving labels resampled onto the fixed grid as they are (nearest neighbour); after:
    ``warped_labels.nii.gz`` of the pair's outputs. Scored over the labels present in the fixed map
    (background excluded).

    Returns:
        {"dice_before": float, "dice_after": float}, or {} when the pair has no fixed_labels.
    """
    if not (pair.fixed_labels and pair.labels):
        return {}
    from ..io import read_label_map, resample_image
    from ..metrics import dice

    fixed = read_label_map(pair.fixed_labels)
    warped = read_label_map(Path(pair_dir) / "warped_labels.nii.gz")
    if not fixed.geometry.allclose(warped.geometry):
        fixed = resample_image(fixed, warped.geometry, mode="nearest")
    moving = resample_image(read_label_map(pair.labels), warped.geometry, mode="nearest")
    ids = [int(v) for v in np.unique(fixed.array) if v != 0]
    if not ids:
        raise ValueError(f"{pair.fixed_labels} holds no label above 0; Dice needs a label map")
    before = dice(fixed.array, moving.array, label_ids=ids)["mean"]
    after = dice(fixed.array, warped.array, label_ids=ids)["mean"]
    return {"dice_before": float(before), "dice_after": float(after)}


def read_metrics(folder: Path) -> Optional[dict]:
    """The parsed ``folder/metrics.json``, or None when it cannot be read as a JSON object."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def other_pairs_result(pair: Pair, folder: Path, metrics: Optional[dict] = None) -> Optional[str]:
    """Why the complete result in ``folder`` is not this pair's, or None: its metrics.json names other fixed or
    moving images (a second PAIRS.csv into the same OUTDIR with an id the first used; before, the new pair was
    skipped as complete and its row showed the other pair's figures, review of the nineteenth session).
    A result without the names (an older version's), or whose files have the same names elsewhere (a study
    folder moved to another disk and run again), is taken as the pair's.

    Args:
        pair: the pair of this run.
        folder: OUTDIR/<id>, complete.
        metrics: its metrics.json already parsed (read from ``folder`` when None).
    """
    recorded = (metrics if metrics is not None else read_metrics(folder) or {}).get("inputs") or {}
    if not isinstance(recorded, dict):
        return None
    for role in ("fixed", "moving"):
        given, held = getattr(pair, role), recorded.get(role)
        if not held or not given or not isinstance(held, str):
            continue
        given_path, held_path = Path(given).expanduser().resolve(), Path(held).expanduser().resolve()
        if given_path != held_path and given_path.name != held_path.name:
            return f"{folder} holds the result of {role} {held}, not of this pair's {role} {given}"
    return None


class CohortRows(list):
    """The rows :func:`~.run.register_cohort` returns (a list of dicts), and whether the run wrote the summary.

    Attributes:
        summary_written: True when this run wrote summary.png and summary.md; False when it kept a file of the
            user's placed there while the pairs ran (the note says which) and wrote neither.
    """

    def __init__(self, rows: Sequence[dict] = (), summary_written: bool = False) -> None:
        super().__init__(rows)
        self.summary_written = summary_written


def row_for_complete_pair(pair: Pair, pair_dir: str | Path, previous: Optional[dict] = None,
                          metrics: Optional[dict] = None) -> dict:
    """The row of a pair completed by an earlier run: its earlier row, or one rebuilt from metrics.json
    (``metrics``: that file already parsed; read from ``pair_dir`` when None, no figures when it cannot be read)."""
    if previous is not None and previous.get("status") == "ok":
        return dict(previous)
    if metrics is None:
        metrics = read_metrics(Path(pair_dir)) or {}
    row = row_from_metrics(pair.id, metrics)
    try:
        row.update(pair_dice(pair, pair_dir))
    except (OSError, ValueError) as exc:
        row["error"] = f"Dice not computed: {exc}"
    return row


def _parse(column: str, text: str):
    if column in _NUMERIC:
        try:
            return float(text) if text != "" else None
        except ValueError:
            return None
    return text if text != "" or column == "error" else None


def read_results_csv(path: str | Path) -> dict[str, dict]:
    """The rows of an existing results.csv by id ({} when there is none, or it is empty).

    Raises:
        ResultsFileError: the file is not a results table of ``adregnet batch`` (not UTF-8 CSV text, or
            no ``id`` and ``status`` columns): a file of the user's, which must not be replaced.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ResultsFileError(f"{path} is not a results table of adregnet batch (it is a folder or special file)")
    if not path.is_file():
        return {}
    rows = {}
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: saved again by a spreadsheet
        if not text.strip():
            return {}
        csv.field_size_limit(max(csv.field_size_limit(), len(text)))  # rows of earlier versions held longer errors
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [name.strip() for name in reader.fieldnames or []]
        if "id" not in header or "status" not in header:
            raise ResultsFileError(f"{path} is not a results table of adregnet batch (its first row is "
                                   f"{','.join(header)[:80]!r}, not id,status,...)")
        for raw in reader:
            if raw.get("id"):
                rows[raw["id"]] = {c: _parse(c, raw.get(c) or "") for c in RESULT_COLUMNS}
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"{path} is not a results table of adregnet batch ({exc})") from None
    return rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def write_results_csv(path: str | Path, rows: Iterable[dict]) -> None:
    """Writes the rows to ``path`` atomically (a new file in the same folder, then a rename).

    The file gets the permissions the user's umask gives new files. To update the results.csv of an
    OUTDIR that other runs may write too, use :func:`merge_results_csv`.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in RESULT_COLUMNS])
    atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue(), encoding="utf-8", newline=""))


def merge_results_csv(path: str | Path, rows: Mapping[str, dict], order: Sequence[str],
                      then: Optional[Callable[[list[dict]], None]] = None, timeout_s: float = 600.0) -> list[dict]:
    """Merges a run's rows into results.csv under an exclusive lock; returns the table written.

    Read, merge and replace happen while ``RESULTS_LOCK`` beside the file is held, so runs writing
    into one OUTDIR at the same time (each with its own PAIRS.csv) never lose each other's rows: the
    last to write no longer wins.

    Args:
        path: OUTDIR/results.csv.
        rows: this run's rows by id; each replaces the file's row of that id.
        order: this run's pair ids, in order: the table lists them first (the row given, else the
            file's row of that id, else none yet), then the file's other rows in their order.
        then: called with the merged table while the lock is still held (the summary, so that it
            matches results.csv).
        timeout_s: how long to wait for another run's update.

    Returns:
        every row now in results.csv.

    Raises:
        ResultsFileError: the existing file is not a results table (it is left as it is).
        LockTimeout: another run held the lock longer than ``timeout_s``.
    """
    path = Path(path)
    with FileLock(path.with_name(RESULTS_LOCK), what=str(path), timeout_s=timeout_s):
        current = read_results_csv(path)
        ids = list(dict.fromkeys(order))
        ours = set(ids)
        table = [rows.get(i) or current.get(i) for i in ids]
        table = [r for r in table if r is not None]
        table += [row for i, row in current.items() if i not in ours]
        write_results_csv(path, table)
        if then is not None:
            then(table)
    return table
