r"""Files in OUTDIR that runs and people share: exclusive locks, atomic replacement, ordinary permissions.

Two ``adregnet batch`` runs may write into one OUTDIR at once (two PAIRS.csv files, two terminals, two
cluster jobs). ``results.csv`` and the summary are read, merged and replaced under :class:`FileLock`, and
each is replaced atomically (written beside it, then ``os.replace``), so a reader never sees half a file
and no run's rows are lost.

Locks are the operating system's (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows): a run that
is killed releases them. On a file system without them (some Lustre mounts: ``ENOSYS``), a lock is a
file created exclusively (``O_EXCL``) holding ``host pid``; one left by a dead process of this host is
removed, one of another host is waited for and then named in the error.

Files and folders made here get the permissions the user's umask gives ordinary ones: tempfile's
``mkstemp``/``mkdtemp`` make them owner-only (0600/0700), which on shared storage hid a cohort's results
from the user's group.
"""
from __future__ import annotations

import errno
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

__all__ = ["FileLock", "LockTimeout", "atomic_write", "new_folder"]

#: errors of a file system that has no OS file locks
_NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
_POLL_S = 0.05


class LockTimeout(TimeoutError):
    """A lock was not free within the time allowed; the message names the lock file and what to do."""


def _os_lock(fd: int) -> bool:
    """Takes the OS lock of ``fd`` without waiting: True when taken, False when another holds it.

    Raises:
        OSError: with an errno in ``_NO_LOCKS`` when the file system has no locks.
    """
    try:
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _NO_LOCKS:
            raise
        return False  # EWOULDBLOCK / EACCES (POSIX) or EDEADLOCK / EACCES (Windows): held elsewhere
    return True


def _os_unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a holder may have removed it meanwhile)."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _marker_is_stale(marker: Path) -> bool:
    """A marker lock written by a process of this host that no longer runs."""
    try:
        host, pid = marker.read_text().split()
        pid = int(pid)
    except (OSError, ValueError):
        return False  # being written, or not ours to judge: wait for it
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


class FileLock:
    """An exclusive lock named by a file, between processes and between threads.

    Usage::

        with FileLock(out / ".results.lock", what="results.csv"):
            ...read, merge, replace...

    The lock file is removed when the lock is released (``remove=True``), so it leaves nothing behind;
    a waiter that then holds the lock of a removed file notices and tries again.

    Args:
        path: the lock file (created if missing).
        what: what the lock protects, for the error message.
        timeout_s: how long ``__enter__`` waits before :class:`LockTimeout` (None: for ever).
        remove: remove the lock file on release.
    """

    def __init__(self, path: str | Path, what: str = "", timeout_s: Optional[float] = 600.0,
                 remove: bool = True) -> None:
        self.path = Path(path)
        self.what = what or self.path.name
        self.timeout_s = timeout_s
        self.remove = remove
        self._fd: Optional[int] = None
        self._marker: Optional[Path] = None
        self._use_marker = False  # set once the file system refuses OS locks

    @property
    def marker_path(self) -> Path:
        """The ``O_EXCL`` lock file used where the file system has no OS locks."""
        return self.path.with_name(self.path.name + ".held")

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None or self._marker is not None

    def acquire(self, timeout_s: Optional[float] = None) -> bool:
        """Takes the lock, waiting up to ``timeout_s`` (0: one try; None: for ever); True when taken."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if self._try_once():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)

    def _try_once(self) -> bool:
        if not self._use_marker:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except PermissionError:  # another user's lock file in a shared folder: locking needs no write access
                fd = os.open(self.path, os.O_RDONLY)
            try:
                taken = _os_lock(fd)
            except OSError:  # this file system has no locks: fall back to an O_EXCL marker file
                os.close(fd)
                self._use_marker = True
                return self._try_marker()
            if taken and _same_file(fd, self.path):
                self._fd = fd
                return True
            if taken:
                _os_unlock(fd)
            os.close(fd)
            return False
        return self._try_marker()

    def _try_marker(self) -> bool:
        marker = self.marker_path
        for _ in range(2):  # a second try after removing a dead process's marker
            try:
                fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                if not _marker_is_stale(marker):
                    return False
                marker.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{socket.gethostname()} {os.getpid()}\n")
            self._marker = marker
            return True
        return False

    def release(self) -> None:
        """Releases the lock (removing its file when ``remove``); nothing when not held."""
        if not self.held:
            return
        removed = not self.remove
        if not removed:
            try:
                self.path.unlink()  # while still held: a waiter then finds it gone and tries again
                removed = True
            except OSError:
                pass  # Windows: an open file cannot be removed, not even by its holder
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                _os_unlock(fd)
            finally:
                os.close(fd)
        if not removed:
            try:
                self.path.unlink()  # Windows: fails while another process has it open (it then holds it)
            except OSError:
                pass
        if self._marker is not None:
            marker, self._marker = self._marker, None
            marker.unlink(missing_ok=True)

    def __enter__(self) -> "FileLock":
        if not self.acquire(self.timeout_s):
            waited = f"{self.what} stayed locked by another adregnet batch for {self.timeout_s:.0f} s"
            if not self._use_marker:  # an OS lock: its holder is alive (a killed process releases it)
                raise LockTimeout(f"{waited} (a process still running holds {self.path}); let it finish or stop it, "
                                  "then run again (every finished pair is kept and skipped)")
            try:
                holder = self.marker_path.read_text().strip()
            except OSError:
                holder = "?"
            raise LockTimeout(f"{waited} (held by host and process {holder}, per {self.marker_path}); if no other "
                              f"batch writes into this folder, delete {self.marker_path} and run again (every "
                              "finished pair is kept and skipped)")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _ordinary_file(path: Path) -> None:
    """Creates ``path`` as a new empty file with the mode the umask gives (no tempfile: it makes 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Replaces ``path`` atomically by what ``write(tmp)`` writes into a new file beside it.

    The new file has the permissions the user's umask gives any new file; on failure the temporary
    file is removed and ``path`` is unchanged.

    Args:
        path: the file to write or replace.
        write: writes the content into the (existing, empty) file it is given.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    _ordinary_file(tmp)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def new_folder(parent: str | Path, prefix: str) -> Path:
    """A new folder ``parent/<prefix><random>`` with the permissions the umask gives (mkdtemp gives 0700).

    Returns:
        the folder's path.
    """
    parent = Path(parent)
    while True:
        folder = parent / f"{prefix}{uuid.uuid4().hex[:10]}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
