r"""What a batch run makes in OUTDIR before its first pair, and takes away again when the run is refused.

A run that stops with an error before any pair's row or folder exists (no Dask worker fits, ``--workers 0``, the
scheduler cannot be reached) leaves nothing behind that it made: its results.csv without rows, its empty
.partial/ and, when it made them, OUTDIR and OUTDIR's missing parent folders. Only what is still empty goes (a
results.csv with a row in it, a pair published by another run into the same OUTDIR, a file of the user's keep
the folder), and never a folder or file that was there before the run. A run that cannot make OUTDIR at all
removes the parent folders it made on the way.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .files import FileLock, LockTimeout
from .results import RESULTS_LOCK, ResultsFileError, read_results_csv
from .worker import PARTIAL_DIR

__all__ = ["make_output_folder", "missing_folders", "remove_what_a_refused_run_made"]


def missing_folders(out: Path) -> list[Path]:
    """The folders that making ``out`` (with its parents) would create, ``out`` first."""
    missing = []
    for folder in (out, *out.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing


def make_output_folder(out: Path) -> list[Path]:
    """Makes ``out`` with its missing parents; returns the folders made (:func:`missing_folders`), ``out`` first.

    Raises:
        OSError: ``out`` cannot be made (a name too long, a file in the way, no permission); the parents made
            on the way are removed again (when still empty).
    """
    made = missing_folders(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError:
        _remove_empty(made)
        raise
    return made


def _remove_empty(made: list[Path]) -> None:
    """Removes the folders in ``made`` (innermost first) that exist, up to the first that is not empty."""
    for folder in made:
        if not os.path.isdir(folder):  # not made after all (making ``out`` failed part way): its parent may have been
            continue
        try:
            folder.rmdir()
        except OSError:
            break


def remove_what_a_refused_run_made(out: Path, made: list[Path], results_made: bool) -> None:
    """Removes what a run that stopped with an error made and left empty (see the module docstring).

    Args:
        out: OUTDIR.
        made: the folders the run made (:func:`missing_folders` before it made OUTDIR), ``out`` first.
        results_made: OUTDIR/results.csv did not exist before the run (it is removed only while it holds no row).
    """
    results = out / "results.csv"
    if results_made:
        with contextlib.suppress(OSError, LockTimeout, ResultsFileError):
            with FileLock(out / RESULTS_LOCK, what=str(results), timeout_s=5.0):
                if results.is_file() and not read_results_csv(results):
                    results.unlink()
    with contextlib.suppress(OSError):
        (out / PARTIAL_DIR).rmdir()  # only when empty: another run's staged pairs keep it
    _remove_empty(made)
