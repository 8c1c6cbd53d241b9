r"""Where a batch run stages its pairs: its own folder OUTDIR/.partial/run-<token>/, live while its lock is held,
and the clean-up of what dead runs left there (split from ``run.py``).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Iterator

from .files import FileLock
from .worker import PARTIAL_DIR

__all__ = ["clean_partial", "staging"]

_RUN_PREFIX = "run-"
_LOCK_SUFFIX = ".lock"
#: a run folder whose lock file names another machine is left alone until it has not changed for this long: where
#: the file system's locks hold per machine only (NFS mounted with nolock or local_lock, Lustre with localflock) a
#: live run on another machine looks dead from here (review of the nineteenth session)
OTHER_HOST_GRACE_S = 24 * 3600


def _mark_owner(lock_path: Path) -> None:
    """Writes this machine's name and the process id into a run's lock file (read by :func:`_other_hosts`)."""
    with contextlib.suppress(OSError):
        lock_path.write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")


def _other_hosts(lock_path: Path, folder: Path) -> bool:
    """Whether the run of ``lock_path`` ran on another machine and its folder changed within the grace period."""
    try:
        host = lock_path.read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return False
    if host == socket.gethostname():
        return False
    try:
        changed = folder.stat().st_mtime
    except OSError:
        return False
    return time.time() - changed < OTHER_HOST_GRACE_S


def clean_partial(out: Path) -> None:
    """Removes what dead runs left in OUTDIR/.partial/ (never a published pair, never a live run's folder).

    A run's folder ``run-<token>`` is live while its ``run-<token>.lock`` is locked (by that run's
    client), or while it changed in the last ``OTHER_HOST_GRACE_S`` when the lock names another machine;
    anything else there (a dead run's folder, a pair folder of a direct ``run_pair`` call) is
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
            folder = partial / name[: -len(_LOCK_SUFFIX)]
            if _other_hosts(entry, folder):
                continue  # its lock may not reach here: judged by its age
            lock = FileLock(entry)
            if lock.acquire(timeout_s=0):  # its run is gone
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
    _mark_owner(lock.path)
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
