r"""What a Dask worker runs for one pair: ``adregnet register`` in process, published atomically.

The pair is registered through the CLI's own code path (``ADRegNetLib.cli.main.main``), so its folder
holds exactly what ``adregnet register`` writes. It writes into OUTDIR/.partial/<run>/<id>.<random>/
(the run's staging folder) and only a finished folder is renamed to OUTDIR/<id>/ (one ``rename``,
atomic on one file system): a pair that fails or whose worker is killed never leaves a half-written
OUTDIR/<id>/. The folder is made with the permissions the user's umask gives (not tempfile's 0700), so
the published OUTDIR/<id>/ is as readable as any folder the user makes.

A worker may run several pairs at once in threads, so the CLI's stdout/stderr are captured per
thread (``sys.stderr`` is replaced once by a proxy that routes each thread's writes). ITK's
transform-file I/O is serialised by the io package itself (``io/transform_files.py``): the HDF5
library bundled with SimpleITK is not thread-safe (two pairs writing transform.h5 at once in one
worker made HDF5 report "can't create new skip list node").
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import socket
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

from .files import new_folder
from .pairs import Pair
from .results import failed_row, is_complete, pair_dice, row_from_metrics

__all__ = ["PairOptions", "run_pair", "PARTIAL_DIR", "not_a_result", "pair_inputs"]

#: folder inside OUTDIR holding the pairs being written
PARTIAL_DIR = ".partial"


@dataclass(frozen=True)
class PairOptions:
    """The ``adregnet register`` settings every pair of a cohort shares.

    Attributes:
        preset, quality, regularization, device: as for ``adregnet register``.
        threads: CPU threads for one pair (torch); at least 1 (Dask workers set OMP_NUM_THREADS=1, so
            "torch's choice" would mean one thread).
        landmarks_check_only: the landmarks only measure TRE (``--landmarks-check-only``).
        sliding: the lungs sliding along the chest wall (``--sliding``; "auto" adds no option).
        find_local_change: look for a local change in still pairs (False: ``--no-local-change``).
    """

    preset: str = "auto"
    quality: str = "balanced"
    regularization: float = 1.0
    device: str = "auto"
    threads: int = 1
    landmarks_check_only: bool = False
    sliding: str = "auto"
    find_local_change: bool = True

    def register_options(self) -> list[str]:
        """The shared options as ``adregnet register`` arguments."""
        return ["--preset", self.preset, "--quality", self.quality,
                "--regularization", repr(float(self.regularization)),
                "--device", self.device, "--threads", str(max(1, int(self.threads)))] + (
                    ["--sliding", self.sliding] if self.sliding != "auto" else []) + (
                    [] if self.find_local_change else ["--no-local-change"]) + (
                    ["--landmarks-check-only"] if self.landmarks_check_only else [])

    def to_dict(self) -> dict:
        return asdict(self)


class _ThreadStreams:
    """A stand-in for sys.stdout/sys.stderr that sends each thread's writes to that thread's buffer."""

    def __init__(self, original) -> None:
        self._original = original
        self._local = threading.local()

    def write(self, text: str) -> int:
        target = getattr(self._local, "buffer", None)
        return (target if target is not None else self._original).write(text)

    def flush(self) -> None:
        if getattr(self._local, "buffer", None) is None:
            self._original.flush()

    def isatty(self) -> bool:
        return False if getattr(self._local, "buffer", None) is not None else self._original.isatty()

    def __getattr__(self, name: str):
        return getattr(self._original, name)


_INSTALL_LOCK = threading.Lock()


@contextlib.contextmanager
def _captured() -> Iterator[list[str]]:
    """Captures this thread's writes to stdout and stderr; yields the list the text is appended to."""
    with _INSTALL_LOCK:
        for name in ("stdout", "stderr"):
            if not isinstance(getattr(sys, name), _ThreadStreams):
                setattr(sys, name, _ThreadStreams(getattr(sys, name)))
    chunks: list[str] = []

    class _Sink:
        def write(self, text: str) -> int:
            chunks.append(text)
            return len(text)

    sink = _Sink()
    streams = [s for s in (sys.stdout, sys.stderr) if isinstance(s, _ThreadStreams)]
    for stream in streams:
        stream._local.buffer = sink
    try:
        yield chunks
    finally:
        for stream in streams:
            stream._local.buffer = None


class _PeakMemory:
    """Samples the process's resident memory while a pair runs (GB; None without psutil)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak_gb: Optional[float] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "_PeakMemory":
        try:
            import psutil
        except ImportError:
            return self
        process = psutil.Process()

        def sample() -> None:
            peak = 0
            while True:
                peak = max(peak, process.memory_info().rss)
                self.peak_gb = peak / 1e9
                if self._stop.wait(self.interval_s):
                    return

        self._thread = threading.Thread(target=sample, name="adregnet-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _error_message(text: str, rc: int) -> str:
    """The CLI's one-line error (``adregnet register: error: ...``) from its captured output."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return lines[-1] if lines else f"adregnet register exited with code {rc} and printed nothing"


def _exception_message(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="milliseconds")


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def pair_inputs(pair: Pair) -> list[str]:
    """Every file a pair reads (images, landmarks, mask, label maps)."""
    return [value for key, value in pair.to_dict().items() if key != "id" and value]


def not_a_result(final: Path, inputs=()) -> Optional[str]:
    """Why OUTDIR/<id> must not be replaced, or None: it is absent, empty, or complete (skipped anyway).

    A folder with files but no metrics.json is refused too, even when they carry AD-RegNet's output names:
    a batch publishes a pair whole, so they are another tool's or the user's (review, nineteenth session:
    warped.nii.gz, transform.h5 and report.png of the user's were replaced without a word).

    A data folder used as OUTDIR has folders named like the pairs' ids; replacing them deleted the scans in
    them (hostile-input sweep, eighteenth session).
    """
    from ..cli.outputs import ALL_OUTPUT_FILES

    if not final.exists() and not final.is_symlink() or is_complete(final):
        return None
    if not final.is_dir() or final.is_symlink():
        return f"{final} exists and is not a folder of AD-RegNet results"
    inside = final.resolve()
    held = [f for f in (Path(i).expanduser().resolve() for i in inputs if i) if inside in f.parents or f == inside]
    if held:
        return f"{final} holds the pair's input {held[0]}"
    named = sorted(n.name for n in final.iterdir())
    others = [name for name in named if name not in ALL_OUTPUT_FILES]
    if others:
        return f"{final} holds files that are not AD-RegNet results ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
    # only output names, but no metrics.json: a batch publishes a pair whole (metrics.json with it), so this is no
    # result of a batch: another tool's or the user's files under the same names (warped.nii.gz, transform.h5)
    if named:
        return (f"{final} holds {', '.join(named[:3])}{', ...' if len(named) > 3 else ''} but no metrics.json: not a "
                "complete AD-RegNet result")
    return None


def _publish(tmp: Path, final: Path, inputs=()) -> None:
    """Renames the finished folder ``tmp`` to ``final``; an empty folder ``final`` is replaced, anything else
    there is refused (``not_a_result``: only an absent, empty or complete ``final`` passes)."""
    reason = not_a_result(final, inputs)
    if reason:
        raise FileExistsError(f"{reason}: nothing is replaced; choose another output folder (-o) or move it")
    if final.is_dir() and not is_complete(final):
        final.rmdir()
    try:
        os.rename(tmp, final)
    except OSError:
        if not is_complete(final):  # another attempt of the same pair published first: keep that one
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def run_pair(pair: Pair, out_dir: str, options: PairOptions, memory_estimate_gb: Optional[float] = None,
             staging: Optional[str] = None) -> dict:
    """Registers one pair into OUTDIR/<id>/ and returns its results row.

    Never raises for a bad pair: every failure (unreadable image, registration error, a bug) becomes
    a row with status "failed" and the error message, and leaves no OUTDIR/<id>/ behind.

    Args:
        pair: the pair (absolute paths).
        out_dir: the cohort's output folder (must be reachable from this worker).
        options: the shared register settings.
        memory_estimate_gb: the memory reserved for the pair (copied into the row).
        staging: the folder the pair is written in before it is published (the run's folder in
            OUTDIR/.partial/, on the same file system as OUTDIR); default OUTDIR/.partial.

    Returns:
        the results row (see ``results.RESULT_COLUMNS``).
    """
    from ..cli.main import main

    start = time.perf_counter()
    started = _now()
    out = Path(out_dir)
    final = out / pair.id
    extra = {"memory_estimate_gb": memory_estimate_gb, "worker": _worker_name(), "started": started}
    partial = Path(staging) if staging else out / PARTIAL_DIR
    partial.mkdir(parents=True, exist_ok=True)
    tmp = new_folder(partial, f"{pair.id}.")
    argv = ["register", *pair.register_arguments(), "-o", str(tmp), "--overwrite", "-q", *options.register_options()]
    error = None
    with _captured() as chunks, _PeakMemory() as memory:
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse rejected an option
            rc = exc.code if isinstance(exc.code, int) else 2
        except Exception as exc:  # noqa: BLE001 - a bug in one pair must not stop the cohort
            rc, error = 1, _exception_message(exc)
    extra |= {"memory_peak_gb": memory.peak_gb, "finished": _now()}
    if rc != 0 or not is_complete(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
        message = error or _error_message("".join(chunks), rc)
        return failed_row(pair.id, message, wall_s=time.perf_counter() - start, **extra)
    try:
        metrics = json.loads((tmp / "metrics.json").read_text())
        _publish(tmp, final, pair_inputs(pair))
    except (OSError, ValueError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        return failed_row(pair.id, f"could not publish {final}: {exc}", wall_s=time.perf_counter() - start, **extra)
    row = row_from_metrics(pair.id, metrics, **extra)
    try:
        row.update(pair_dice(pair, final))
    except Exception as exc:  # noqa: BLE001 - the registration itself succeeded
        row["error"] = f"Dice not computed: {exc}"
    row["wall_s"] = time.perf_counter() - start
    return row
