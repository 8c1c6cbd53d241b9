r"""CPU threads that give way to other programs: fewer while other work keeps the CPUs busy.

Torch splits each operation across its threads and waits for the slowest. When another program keeps
a CPU busy, one of those threads waits for its turn on every operation, and the registration slows to
a crawl instead of sharing the machine. So between stages (at most every 0.15 s) ``register()`` counts
the runnable threads of other processes (Linux: ``/proc/loadavg``'s fourth field less this process's own,
the least of a few readings so that a passing spike does not count; then those of much lower priority,
nice 6 or more above this process's and, with the scheduler's autogroups, in its own, or in an autogroup
niced so, left out) and runs the next stage with ``min(threads at the start, CPUs - others)`` threads, at least one; ``engine.register``
restores the caller's count at the end. The count is machine-wide, so the rule applies only where this process may run on every CPU of the machine (a
container limited to some CPUs of a larger host sees the host's load: the threads are left as they are),
only on the CPU, and never when the environment variable ``ADREGNET_FIXED_THREADS`` is set (to anything
but "" or "0").

Measured (twentieth session, 2 cores, the demo pair, balanced, ``register()`` in one process, fixed 2
threads and this rule alternately, 3 runs each): idle 2.27-2.41 / 2.39-2.49 s; beside a busy Python loop
5.6-6.5 / 3.69-3.72 s (every stage with 1 thread); beside the same loop at ``nice 19`` 2.29-2.35 / 2.37-2.41 s
(it is left out). With 1 thread throughout the idle machine takes 3.5 s.
"""
from __future__ import annotations

import glob
import os
import threading
import time
from contextlib import contextmanager
from typing import Optional

import torch

__all__ = ["ThreadBudget", "registration_threads", "other_runnable_threads", "threads_for_load"]

#: readings of the runnable count per decision, this many seconds apart (the least counts)
_READINGS = 3
_READING_GAP_S = 0.0005
#: other processes' threads count as competing up to this many nice levels above this process's (CFS
#: weights: nice +5 gets a third of the CPU time of nice 0, nice +19 one seventieth)
_NICE_MARGIN = 5
#: the load is read again between stages once this many seconds have passed since the last reading
_RECHECK_S = 0.15
#: the list of lower-priority processes is read again when it is this many seconds old (a background job
#: started during a long registration is then seen as one; a scan of ``/proc`` costs about 2-3 ms)
_LOW_PRIORITY_RESCAN_S = 5.0


def _runnable(stat_text: str) -> tuple[bool, int]:
    """(state R, nice value) of a ``/proc/.../stat`` line (the fields after the command name)."""
    fields = stat_text[stat_text.rindex(")") + 2:].split()
    return fields[0] == "R", int(fields[16])


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as handle:
        return handle.read()


def _own_runnable() -> int:
    """Runnable threads of this process (``/proc/self/task/*/stat``: state R), the caller's included."""
    count = 0
    for stat in glob.glob("/proc/self/task/*/stat"):
        try:
            count += _runnable(_read(stat))[0]
        except (OSError, ValueError, IndexError):  # the thread ended meanwhile
            continue
    return count


def _low_priority_pids() -> list[int]:
    """Other processes of much lower priority than this one: niced more than ``_NICE_MARGIN`` above it (a
    ``nice 19`` background job gets a few percent of a CPU beside a ``nice 0`` one, so torch's threads hardly
    wait for it). With the scheduler's autogroups nice ranks only within a session, and sessions share the CPUs
    by their autogroup's nice (``/proc/[pid]/autogroup``): a process counts as lower priority when it is niced
    so within this one's autogroup, or when its whole autogroup is."""
    own_pid, limit, pids = os.getpid(), os.nice(0) + _NICE_MARGIN, []
    try:
        grouped = _read("/proc/sys/kernel/sched_autogroup_enabled").strip() == "1"
    except OSError:
        grouped = False
    own_group = _autogroup("self") if grouped else None
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            pid, (_, nice) = int(stat.split("/")[2]), _runnable(_read(stat))
        except (OSError, ValueError, IndexError):  # ended meanwhile
            continue
        if pid == own_pid:
            continue
        if not grouped:
            low = nice > limit
        else:
            group = _autogroup(pid)
            low = (nice > limit if group is None or own_group is None or group[0] == own_group[0]
                   else group[1] > own_group[1] + _NICE_MARGIN)
        if low:
            pids.append(pid)
    return pids


def _autogroup(pid) -> Optional[tuple[str, int]]:
    """The scheduler autogroup of a process and its nice ("/autogroup-N nice K"), None where unreadable."""
    try:
        fields = _read(f"/proc/{pid}/autogroup").split()
        return fields[0], int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def _runnable_threads_of(pids: list[int]) -> int:
    """Runnable threads (state R) of these processes, now."""
    count = 0
    for pid in pids:
        for stat in glob.glob(f"/proc/{pid}/task/[0-9]*/stat"):
            try:
                count += _runnable(_read(stat))[0]
            except (OSError, ValueError, IndexError):
                continue
    return count


def other_runnable_threads(cache: Optional[dict] = None) -> Optional[int]:
    """Runnable threads of other processes that compete with this one for the CPUs, now; None where it
    cannot be read.

    ``/proc/loadavg``'s fourth field is "runnable/total", this process's threads included (torch's
    workers stay runnable for a while after each operation): counted between two readings of this
    process's own (the larger taken), the least over a few readings. Only when that leaves any are the
    runnable threads of processes of much lower priority (:func:`_low_priority_pids`, looked up once per
    ``cache`` and again when that list is ``_LOW_PRIORITY_RESCAN_S`` old) taken off.
    """
    counts = []
    for i in range(_READINGS):
        try:
            own = _own_runnable()
            machine = int(_read("/proc/loadavg").split()[3].split("/")[0])
            if machine > max(own, 1):  # read own again: a worker may have gone to sleep in between
                own = max(own, _own_runnable())
            counts.append(machine - max(own, 1))
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < _READINGS:
            time.sleep(_READING_GAP_S)
    others = max(0, min(counts))
    if not others:
        return 0
    cache = {} if cache is None else cache
    now = time.monotonic()
    if "low_priority" not in cache or now - cache.get("read_at", float("-inf")) > _LOW_PRIORITY_RESCAN_S:
        cache["low_priority"], cache["read_at"] = _low_priority_pids(), now
    return max(0, others - _runnable_threads_of(cache["low_priority"]))


def threads_for_load(start: int, cpus: int, others: Optional[int]) -> int:
    """Threads for the next stage: ``start`` less the CPUs the ``others`` runnable threads take, at least 1."""
    if others is None:
        return start
    return max(1, min(start, cpus - others))


class _Active:
    """Registrations running in this process, and the thread count found when the first of them began: torch's
    count is per process (OpenMP: the count last set is what a new thread starts with), so while two run in
    threads of one process the rule stays off and each starts from the count before either changed it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.start = 1

    def enter(self) -> int:
        """Count one more registration; returns the thread count to restore when it ends."""
        with self.lock:
            if self.count == 0:
                self.start = torch.get_num_threads()
            self.count += 1
            return self.start

    def leave(self, threads: int) -> None:
        """Count one registration less and put back ``threads`` (OpenMP keeps the count per thread: each
        registration's own thread gets it back)."""
        with self.lock:
            self.count -= 1
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)


_ACTIVE = _Active()


class ThreadBudget:
    """The torch thread count of one registration, set again between its stages.

    ``engine.register`` puts back the count it found when the registration ends, however it ends.

    Args:
        device: the registration's device (only the CPU is adjusted).
    """

    def __init__(self, device: torch.device) -> None:
        self.start = _ACTIVE.start if _ACTIVE.count else torch.get_num_threads()  # pipeline called directly: its own
        alone = _ACTIVE.count <= 1
        self.cpus = os.cpu_count() or 1
        readable = os.path.isfile("/proc/loadavg") and hasattr(os, "sched_getaffinity")  # Linux
        whole_machine = readable and len(os.sched_getaffinity(0)) == self.cpus
        fixed = os.environ.get("ADREGNET_FIXED_THREADS", "").strip() not in ("", "0")
        self.enabled = device.type == "cpu" and self.start > 1 and whole_machine and not fixed and alone
        self.reason = ("fewer while other programs keep the CPUs busy" if self.enabled else
                       "fixed: ADREGNET_FIXED_THREADS is set" if fixed else
                       "fixed: another registration runs in this process" if not alone else
                       "fixed: one thread" if self.start <= 1 else
                       "fixed: not on the CPU" if device.type != "cpu" else
                       "fixed: the machine's load is read on Linux only" if not readable else
                       "fixed: this process may not run on every CPU of the machine, whose load it would read")
        self.fewer: dict[str, int] = {}
        self._checked = float("-inf")
        self._processes: dict = {}  # the lower-priority processes, looked up again every few seconds
        self.adjust()

    def adjust(self) -> None:
        """Set the thread count for the next stage from the load now (nothing when not enabled, or when the
        last look is less than ``_RECHECK_S`` old: a reading costs 1-5 ms, short stages follow each other)."""
        if self.enabled and time.perf_counter() - self._checked >= _RECHECK_S:
            threads = threads_for_load(self.start, self.cpus, other_runnable_threads(self._processes))
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
            self._checked = time.perf_counter()

    def finished(self, stage: str) -> None:
        """Note the threads ``stage`` ran with (when fewer than at the start), then adjust for the next."""
        if self.enabled:
            if torch.get_num_threads() < self.start:
                self.fewer[stage] = torch.get_num_threads()
            self.adjust()

    def info(self) -> dict:
        """For ``metrics.json``: the threads at the start, the rule, the stages run with fewer (how many)."""
        return {"threads": self.start, "rule": self.reason, "stages_with_fewer": dict(self.fewer)}


@contextmanager
def registration_threads():
    """Around one registration (``engine.register``): counts it as running, and when it ends puts back the
    thread count found when the first running one began, however it ends."""
    threads = _ACTIVE.enter()
    try:
        yield
    finally:
        _ACTIVE.leave(threads)
