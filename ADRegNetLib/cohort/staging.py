r"""Where a batch run stages its pairs: its own folder OUTDIR/.partial/run-<token>/, live while its lock is held,
and the clean-up of what dead runs left there (split from ``run.py``).
"""
from __future__ import annotations

import contextlib
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from .files import FileLock
from .worker import PARTIAL_DIR

__all__ = ["clean_partial", "staging"]

_RUN_PREFIX = "run-"
_LOCK_SUFFIX = ".lock"


def clean_partial(out: Path) -> None:
    """Removes what dead runs left in OUTDIR/.partial/ (never a published pair, never a live run's folder).

    A run's folder ``run-<token>`` is live while its ``run-<token>.lock`` is locked (by that run's
    client); anything else there (a dead run's folder, a pair folder of a direct ``run_pair`` call) is
    what a killed run left.
    """
    partial = out / PARTIAL_DIR
    if not partial.is_dir():
        return
    entries = {entry.name: entry for entry in partial.iterdir()}
    for name, entry in sorted(entries.items()):
        if name.startswith(_RUN_PREFIX) and name.endswith(_LOCK_SUFFIX + ".held"):
            continue  # a lock without OS locks (FileLock.marker_path): judged with its lock file
        if name.startswith(_RUN_PREFIX) and name.endswith(_LOCK_SUFFIX):
            lock = FileLock(entry)
            if lock.acquire(timeout_s=0):  # its run is gone
                folder = partial / name[: -len(_LOCK_SUFFIX)]
                shutil.rmtree(folder, ignore_errors=True)
                lock.release()
        elif (partial / (name + _LOCK_SUFFIX)).exists():
            continue  # a run's folder: judged by its lock above
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """This run's folder in OUTDIR/.partial/, marked live by its lock for as long as the run lasts."""
    partial = out / PARTIAL_DIR
    partial.mkdir(parents=True, exist_ok=True)
    while True:
        token = f"{_RUN_PREFIX}{uuid.uuid4().hex[:12]}"
        lock = FileLock(partial / (token + _LOCK_SUFFIX))
        if lock.acquire(timeout_s=0):
            break
    folder = partial / token
    try:
        folder.mkdir()
        yield folder
    finally:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: a cancelled pair may still be writing; a later run removes it
        if folder.exists():
            lock.remove = False  # keep the lock file: it names the folder for the next run's clean-up
        lock.release()
